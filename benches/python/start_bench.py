"""CPython baseline for shmproc's start-method bench.

Prints one JSON object: nanoseconds per Process start+join of a trivial
target with each start method ("fork", "spawn", "forkserver"), each the
median of a few repetitions. Methods this Python lacks are left out.
"""
import json
import multiprocessing as mp
import statistics
import sys
import time


def nothing():
    pass


def per(ctx, n, reps=3):
    out = []
    for _ in range(reps):
        t = time.perf_counter_ns()
        for _ in range(n):
            p = ctx.Process(target=nothing)
            p.start()
            p.join()
        out.append((time.perf_counter_ns() - t) / n)
    return statistics.median(out)


def main():
    res = {}
    for method, n in (("fork", 100), ("forkserver", 50), ("spawn", 10)):
        if method not in mp.get_all_start_methods():
            continue
        ctx = mp.get_context(method)
        per(ctx, 2, reps=1)  # warm up (starts the fork server)
        res[method + "_ns"] = per(ctx, n)
    print(json.dumps(res))


if __name__ == "__main__":
    sys.exit(main())
