"""CPython multiprocessing baseline for shmproc's pool bench.

Prints one JSON object: nanoseconds per apply_async round trip, per map item
(trivial function), and per Process start+join (fork), each the median of a
few repetitions.
"""
import json
import multiprocessing as mp
import statistics
import sys
import time


def square(x):
    return x * x


def nothing():
    pass


def per(fn, n, reps=3):
    out = []
    for _ in range(reps):
        t = time.perf_counter_ns()
        fn(n)
        out.append((time.perf_counter_ns() - t) / n)
    return statistics.median(out)


def main():
    procs = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    ctx = mp.get_context("fork")
    with ctx.Pool(procs) as pool:
        pool.map(square, range(1000))  # warm up

        def apply_async(n):
            rs = [pool.apply_async(square, (i,)) for i in range(n)]
            for r in rs:
                r.get()

        def map_(n):
            pool.map(square, range(n))

        res = {
            "apply_async_ns": per(apply_async, 5000),
            "map_item_ns": per(map_, 100000),
        }

    def start_join(n):
        for _ in range(n):
            p = ctx.Process(target=nothing)
            p.start()
            p.join()

    res["process_start_join_ns"] = per(start_join, 100)
    print(json.dumps(res))


if __name__ == "__main__":
    main()
