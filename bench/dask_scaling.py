"""Throughput of `vmap(grad(rosenbrock n=10))` on dask against the numpy vmap, in points/s.

    python bench/dask_scaling.py [--quick] [--points N] [--block B] [--json PATH]   # < 1 min

Rows (the same X, every result checked bit for bit against the numpy vmap first):
* numpy vmap, the driver on all cores (numba's default threads), and on 1 thread;
* dask, threaded scheduler, in this process (the result computed to a numpy array);
* dask.distributed, a LocalCluster of worker processes (1 thread each, loopback tcp), with 1 and
  2 workers each replaying on 1 numba thread, and 1 worker on all cores. X is persisted on the
  workers first (untimed: that is data loading, not evaluation); the timed part is building the
  graph on the client plus evaluating every block on the workers, results kept there (persist).

Each timing is the best of `--repeat` runs (default 3). Scaling from 1 to 2 single-threaded
workers is the figure to read; on a machine with few cores, the all-cores rows set the ceiling.
"""
import argparse
import json
import os
import platform
import sys
import time
import warnings

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import tapegrad as tg  # noqa: E402


def rosenbrock(x):
    return tg.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


def _numba_threads(_):
    import numba
    return numba.get_num_threads()


def best_of(fn, repeat):
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small batch (smoke test)")
    parser.add_argument("--points", type=int, help="batch size (default 1,000,000; quick 100,000)")
    parser.add_argument("--block", type=int, help="dask block size along the batch "
                        "(default: points / 8)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args()
    n = args.points or (100_000 if args.quick else 1_000_000)
    block = args.block or -(-n // 8)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()

    import dask
    import dask.array as da
    import distributed
    import numba

    X = np.random.default_rng(0).standard_normal((n, 10))
    print(f"vmap(grad(rosenbrock n=10)) over {n:,} points; dask blocks of {block:,} "
          f"({-(-n // block)} blocks); {cpus} CPUs, numba {numba.__version__}, dask "
          f"{dask.__version__}, distributed {distributed.__version__}", flush=True)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"load average {load:.2f} on {cpus} CPUs"
          + (" -- busy: the figures are noisy" if load > 0.5 * cpus else ""), flush=True)
    rows = []

    def report(name, seconds, workers="", threads=""):
        rate = n / seconds
        rows.append(dict(name=name, workers=workers, threads=threads, seconds=seconds,
                         points_per_s=rate))
        print(f"  {name:<34} {str(workers):>7} {str(threads):>7} {seconds * 1e3:9.1f} ms "
              f"{rate / 1e6:8.2f} M points/s", flush=True)

    print(f"  {'':<34} {'workers':>7} {'threads':>7} {'time':>12} {'throughput':>17}")
    v = tg.vmap(tg.grad(rosenbrock))
    expected = v(X)
    report("numpy vmap", best_of(lambda: v(X), args.repeat), "-", numba.get_num_threads())
    default_threads = numba.get_num_threads()
    numba.set_num_threads(1)
    report("numpy vmap, 1 thread", best_of(lambda: v(X), args.repeat), "-", 1)
    numba.set_num_threads(default_threads)

    Xd = da.from_array(X, chunks=(block, 10))
    assert np.array_equal(v(Xd).compute(scheduler="threads"), expected)
    report("dask threaded scheduler", best_of(
        lambda: v(Xd).compute(scheduler="threads"), args.repeat), "-", f"{cpus}x{default_threads}")

    saved = os.environ.get("NUMBA_NUM_THREADS")
    for workers, threads in ((1, 1), (2, 1), (1, cpus)):
        # numba reads NUMBA_NUM_THREADS when imported: spawned workers inherit it from here
        os.environ["NUMBA_NUM_THREADS"] = str(threads)
        with distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                      host="127.0.0.1", dashboard_address=None,
                                      silence_logs=40) as cluster, \
                distributed.Client(cluster) as client:
            with warnings.catch_warnings():     # X travels in the graph once: untimed loading
                warnings.simplefilter("ignore", UserWarning)
                Xp = client.persist(Xd)
            distributed.wait(Xp)
            assert np.array_equal(client.compute(v(Xp), sync=True), expected)   # warms workers
            got = {client.submit(_numba_threads, i, pure=False).result() for i in range(workers)}
            assert got == {threads}, got
            # every timed run builds a graph of its own keys (results of a previous run still
            # held would be reused): a vmap with another chunk_size (above the block size, so
            # the same work), traced beforehand on a few points
            fresh = [tg.vmap(tg.grad(rosenbrock), chunk_size=block + i)
                     for i in range(args.repeat)]
            for f in fresh:
                f(X[:4])
            fresh = iter(fresh)

            def run():
                G = client.persist(next(fresh)(Xp))
                distributed.wait(G)
                del G

            report("distributed (persist)", best_of(run, args.repeat), workers, threads)
    if saved is None:
        os.environ.pop("NUMBA_NUM_THREADS", None)
    else:
        os.environ["NUMBA_NUM_THREADS"] = saved

    base = next(r for r in rows if r["name"] == "numpy vmap, 1 thread")["points_per_s"]
    one = next(r for r in rows if r["workers"] == 1 and r["threads"] == 1)["points_per_s"]
    two = next(r for r in rows if r["workers"] == 2)["points_per_s"]
    print(f"scaling 1 -> 2 single-threaded workers: x{two / one:.2f}; 1 worker / numpy vmap on "
          f"1 thread: {one / base:.2f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(dict(points=n, block=block, cpus=cpus, load=load,
                           python=platform.python_version(), rows=rows), fh, indent=1)


if __name__ == "__main__":
    main()
