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

Then the scaling model for more workers, fitted to the 1-worker cluster and checked against the
2-worker measurement; the 4, 8 and 16 worker figures it prints are a MODEL, not measurements:

    throughput(W) = N / T(W) = W x r x efficiency(W)          (B blocks of P points, N = B P)
    T(W) = F + (W - 1) t_ship + ceil(B / W) (P / r + o)     per-block overhead on the workers
    T(W) = F + (W - 1) t_ship + ceil(B / W) P / r + B o     ... on the one scheduler, in series

with o the per-block overhead (the slope of the 1-worker time from B to 4B blocks; a block is 2
tasks: compare the measured scheduling latency c_task of a trivial task), t_ship the tape
shipping cost (the Shipment scattered to the workers, measured once; each worker beyond the
first fetches it), F the fixed cost of a computation (the graph build plus t_ship) and r the
per-worker rate: the 1-worker time less F and B o (cross-checked by a block timed alone on the
worker). Both forms give the measured 1-worker time; where the per-block overhead is spent
(workers in parallel, or the scheduler in series, not overlapping the compute) cannot be told
apart on one machine: the model gives both, a range.
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


def _noop(i):
    return i


def _time_block(shipment, block, repeat):
    """On a worker: the best time of the replay of one block and its output leaves."""
    from tapegrad.batch import dask as _dask
    times = []
    for _ in range(repeat + 1):             # the first run loads the interpreters
        t0 = time.perf_counter()
        Y = _dask.replay_block(shipment, block)
        for j in range(len(shipment.out_maps)):
            _dask.take_leaf(Y, shipment, j)
        times.append(time.perf_counter() - t0)
    return min(times[1:])


def _shipment_of(arr):
    from tapegrad.batch import dask as _dask
    for task in dict(arr.__dask_graph__()).values():
        value = getattr(task, "value", None)
        if isinstance(value, _dask.Shipment):
            return value
    raise RuntimeError("no Shipment in the graph")


def measure_overheads(client, v_fresh, Xp, Xp4, X, n, block, t_one, repeat):
    """The parameters of the scaling model, on a 1-worker (1 thread) cluster; `t_one`: the
    measured time of the computation on B blocks (Xp), `Xp4`: X persisted in 4B blocks."""
    import pickle

    import dask
    import distributed
    n_blocks = -(-n // block)
    # scheduling latency of a trivial task: a graph of independent ones, submitted at once (as
    # the blocks of a computation are), end to end
    k_tasks = 200

    def trivial():
        tasks = [dask.delayed(_noop, pure=False)(i) for i in range(k_tasks)]
        distributed.wait(client.compute(tasks))
    c_task = best_of(trivial, repeat) / k_tasks
    # graph build on the client (traced function: nothing is computed)
    f = next(v_fresh)
    t_graph = best_of(lambda: f(Xp), repeat)
    # tape shipping, once: the Shipment scattered to the workers
    shipment = _shipment_of(f(Xp))
    ship_bytes = len(pickle.dumps(shipment, protocol=pickle.HIGHEST_PROTOCOL))

    def ship():
        distributed.wait(client.scatter(shipment, broadcast=True, hash=False))
    t_ship = best_of(ship, repeat)
    # the rate of one worker replaying a block
    one_block = client.scatter(X[:block])
    t_block = client.submit(_time_block, shipment, one_block, repeat, pure=False).result()
    del one_block
    r = block / t_block
    # per-block overhead: the slope of the 1-worker time from B to 4B blocks (same points)

    def run4():
        G = client.persist(next(v_fresh)(Xp4))
        distributed.wait(G)
        del G
    t_four = best_of(run4, repeat)
    n_four = len(Xp4.chunks[0])
    o = (t_four - t_one) / (n_four - n_blocks)
    o_note = ""
    if o <= 0:                               # noise: fall back to the scheduling latency
        o, o_note = 2 * c_task, " (slope not positive: noisy machine; 2 x c_task used)"
    F = t_graph + t_ship
    busy = t_one - F - n_blocks * o
    r_note = ""
    if busy > 0:
        r = n / busy
    else:                                    # noise: the block timed alone on the worker
        r_note = " (the 1-worker time is below F + B o: noisy machine; the block rate used)"
    return dict(c_task=c_task, t_graph=t_graph, t_ship=t_ship, ship_bytes=ship_bytes,
                t_block=t_block, r_block=block / t_block, r=r, r_note=r_note, t_four=t_four,
                blocks_four=n_four, o=o, o_note=o_note, F=F, t_one=t_one, blocks=n_blocks)


def model_time(m, workers, n, n_blocks, serial):
    """The model's time for N points in n_blocks blocks on `workers` single-threaded workers;
    `serial`: the per-block overhead is the scheduler's (serial), else the workers'."""
    fixed = m["F"] + (workers - 1) * m["t_ship"]
    rounds = -(-n_blocks // workers)
    if serial:
        return fixed + rounds * n / n_blocks / m["r"] + n_blocks * m["o"]
    return fixed + rounds * (n / n_blocks / m["r"] + m["o"])


def print_model(m, n, measured, cpus, load):
    """The model's parameters, its check against the 1- and 2-worker measurements, and its
    extrapolation (labelled as such)."""
    B = m["blocks"]
    print("scaling model (fitted to the 1-worker cluster; figures for more than 2 workers are "
          "a MODEL, not measurements):")
    print("  throughput(W) = N/T(W) = W x r x efficiency(W);  T(W) = F + (W-1) t_ship + "
          "ceil(B/W) (P/r + o)  [overhead parallel, on the workers]")
    print("  or T(W) = F + (W-1) t_ship + ceil(B/W) P/r + B o  [overhead serial, on the "
          "scheduler]: the range below spans both")
    print(f"  r      = {m['r'] / 1e6:8.2f} M points/s  per worker: the 1-worker time less F and "
          f"B o{m['r_note']} (a block of {n // B:,} points timed alone on the worker: "
          f"{m['r_block'] / 1e6:.2f} M points/s)")
    print(f"  o      = {m['o'] * 1e3:8.2f} ms per block  (1 worker: {B} blocks "
          f"{m['t_one'] * 1e3:.1f} ms, {m['blocks_four']} blocks {m['t_four'] * 1e3:.1f} ms)"
          f"{m['o_note']}")
    print(f"  c_task = {m['c_task'] * 1e3:8.2f} ms per task  scheduling latency of a trivial "
          f"task, end to end (a block is 2 tasks)")
    print(f"  t_ship = {m['t_ship'] * 1e3:8.2f} ms a worker  the tape shipment, "
          f"{m['ship_bytes'] / 1e3:.1f} kB pickled, scattered to the workers once")
    print(f"  F      = {m['F'] * 1e3:8.2f} ms once     fixed cost of a computation: graph build "
          f"{m['t_graph'] * 1e3:.2f} ms + t_ship")
    rows = []
    head = f"{'blocks':>6}  {'M points/s':^15}  {'efficiency':^9}"
    print(f"  {'workers':>7} | {head} | {head}")
    for W in (1, 2, 4, 8, 16):
        cells, row = [], dict(workers=W)
        for label, nb in (("", B), ("_rechunked", max(B, 4 * W))):
            rates = sorted(n / model_time(m, W, n, nb, serial) for serial in (True, False))
            effs = [rate / (W * m["r"]) for rate in rates]
            row.update({f"blocks{label}": nb, f"points_per_s{label}": rates,
                        f"efficiency{label}": effs})
            cells.append(f"{nb:>6}  {rates[0] / 1e6:7.2f}-{rates[1] / 1e6:<7.2f}  "
                         f"{effs[0]:4.2f}-{effs[1]:<4.2f}")
        tag = "model"
        if W in measured:
            row["measured_points_per_s"] = measured[W]
            tag = f"model; measured {measured[W] / 1e6:.2f} M pt/s"
        rows.append(row)
        print(f"  {W:>7} | {cells[0]} | {cells[1]}  ({tag})")
    two = next(r for r in rows if r["workers"] == 2)
    low, high = (measured[2] / rate for rate in reversed(two["points_per_s"]))
    print(f"  check at 2 workers: measured / model = {low:.2f} to {high:.2f}"
          + (f" -- below the model: likely no free core for each worker (load "
             f"{load:.2f} on {cpus} CPUs, with the scheduler and this client)"
             if high < 0.8 else ""))
    print(f"  left: the measured layout ({B} blocks: beyond {B} workers some idle); right: "
          "rechunked to at least 4 blocks a worker. Assumes a free core per worker, the data "
          "already on the workers, one scheduler; loopback here (a network adds transfers).")
    return rows


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
    # a LocalCluster's scheduler serves HTTP on port 8787 even without a dashboard: another
    # cluster on the machine holding it only moves it elsewhere
    warnings.filterwarnings("ignore", "Port .* is already in use", UserWarning)
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

            seconds = best_of(run, args.repeat)
            report("distributed (persist)", seconds, workers, threads)
            if (workers, threads) == (1, 1):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", UserWarning)
                    Xp4 = client.persist(da.from_array(X, chunks=(-(-block // 4), 10)))
                distributed.wait(Xp4)
                more = [tg.vmap(tg.grad(rosenbrock), chunk_size=block + args.repeat + i)
                        for i in range(args.repeat + 1)]
                for f in more:
                    f(X[:4])
                model = measure_overheads(client, iter(more), Xp, Xp4, X, n, block, seconds,
                                          args.repeat)
                del Xp4
    if saved is None:
        os.environ.pop("NUMBA_NUM_THREADS", None)
    else:
        os.environ["NUMBA_NUM_THREADS"] = saved

    base = next(r for r in rows if r["name"] == "numpy vmap, 1 thread")["points_per_s"]
    one = next(r for r in rows if r["workers"] == 1 and r["threads"] == 1)["points_per_s"]
    two = next(r for r in rows if r["workers"] == 2)["points_per_s"]
    print(f"scaling 1 -> 2 single-threaded workers: x{two / one:.2f}; 1 worker / numpy vmap on "
          f"1 thread: {one / base:.2f}")
    model_rows = print_model(model, n, {1: one, 2: two}, cpus, load)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(dict(points=n, block=block, cpus=cpus, load=load,
                           python=platform.python_version(), rows=rows,
                           model=dict(parameters=model, predictions=model_rows,
                                      note="a model fitted to the 1-worker runs, not a "
                                           "measurement")), fh, indent=1)


if __name__ == "__main__":
    main()
