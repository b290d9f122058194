#!/usr/bin/env bash
# Runs the already-built `mpmc_scaling` bench binary on its own (no cargo, no
# network) with the full message count and prints its tables: P producers x P
# consumers on one Queue<u64> (default layout, slot ring, lanes; P = 1, 2, 4, 8
# up to the cores) beside the 2 x 2 pipe queue, 2 producers x 1 consumer
# (the three layouts against ipmpsc 0.5), then Pool::map with 1..N workers.
#
# Build it (on a machine with cargo) with
#   cargo bench -p shmproc-benches --bench mpmc_scaling --no-run
# and pass the executable it names, e.g.
#   benches/device_scaling.sh "$(ls target/release/deps/mpmc_scaling-* | grep -v '\.d$')"
# ($1 may also be a directory to look for mpmc_scaling-* in.)
#
# Environment (optional): SHMPROC_SCALING_MESSAGES (default 4000000),
# SHMPROC_SCALING_REPS (runs per cell, default 3), SHMPROC_SCALING_MAX_P
# (cap on P, default the core count), SCALING_TIMEOUT_S (whole-run limit,
# default 360).
set -euo pipefail

bin=${1:?usage: $0 path/to/mpmc_scaling-<hash> (or a directory holding it)}
if [ -d "$bin" ]; then
    found=$(find "$bin" -maxdepth 1 -type f -name 'mpmc_scaling-*' ! -name '*.d' -perm -u+x | head -n 1)
    [ -n "$found" ] || { echo "no mpmc_scaling-* executable in $bin" >&2; exit 2; }
    bin=$found
fi
[ -f "$bin" ] && [ -x "$bin" ] || { echo "not an executable file: $bin" >&2; exit 2; }

export SHMPROC_SCALING_MESSAGES=${SHMPROC_SCALING_MESSAGES:-4000000}
unset SHMPROC_BENCH_QUICK
# Where the bench writes its copy of the tables (mpmc_scaling.txt).
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/shmproc-scaling.XXXXXX")}

echo "== machine: $(uname -srm), $(getconf _NPROCESSORS_ONLN) cores online, binary $bin"
if [ -r /proc/cpuinfo ]; then
    grep -m1 'model name' /proc/cpuinfo || true
fi
start=$(date +%s)
status=0
if command -v timeout > /dev/null; then
    timeout "${SCALING_TIMEOUT_S:-360}" "$bin" --bench || status=$?
else
    "$bin" --bench || status=$?
fi
echo "== device_scaling.sh: exit $status after $(( $(date +%s) - start )) s; tables also in $CARGO_TARGET_DIR/shmproc-bench/mpmc_scaling.txt"
exit "$status"
