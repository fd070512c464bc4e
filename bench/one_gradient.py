"""One gradient of Rosenbrock (n = 1000) per call, each library in processes of its own.

    python bench/one_gradient.py [--processes 6] [--rounds 7] [--number 2000]

The case of `bench/transforms.py` (a), timed the way to quote it: in one process JAX's thread
pool slows down beside the other libraries and flatters tapegrad (the same gradient read 0.15x
JAX interleaved, about 1x isolated). Each process builds one library's gradient, checks it
against the hand-written one, calls it 200 times, then reports the minimum over `rounds` rounds
of `number` calls; the processes of the libraries alternate. Printed: per library the minimum
over its processes and their range, and the ratios of the minima.
"""
import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

import _common as C  # noqa: E402  (first: it applies --threads before numpy loads)
import numpy as np  # noqa: E402

import transforms as T  # noqa: E402

LIBRARIES = ("tapegrad", "jax", "hand numba")


def gradient(library):
    """(gradient function, its input) of `library`."""
    x = T.rosenbrock_point()
    if library == "tapegrad":
        import tapegrad as tg
        return T.tapegrad_cases(tg, x, None, None)[0], x
    if library == "jax":
        import jax
        jax.config.update("jax_enable_x64", True)
        g = T.jax_cases(jax, np.ones((1, 1)), np.ones(1))[0]
        return (lambda v: g(v).block_until_ready()), jax.numpy.asarray(x)
    return T.hand_numba()[0], x


def worker(library, rounds, number):
    g, x = gradient(library)
    want = T.hand_numba()[0](T.rosenbrock_point())
    np.testing.assert_allclose(np.asarray(g(x)), want, rtol=1e-12, atol=1e-9)
    for _ in range(200):
        g(x)
    best = np.inf
    for _ in range(rounds):
        t = time.perf_counter()
        for _ in range(number):
            g(x)
        best = min(best, (time.perf_counter() - t) / number)
    print(json.dumps({"library": library, "us": best * 1e6}))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--processes", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--number", type=int, default=2000)
    parser.add_argument("--worker", choices=LIBRARIES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker, args.rounds, args.number)
    print(f"one gradient of Rosenbrock n={T.N_ROSENBROCK}, one process per measurement; "
          f"{C.load_note()}", flush=True)
    times, failed = {lib: [] for lib in LIBRARIES}, {}
    for _ in range(args.processes):
        for lib in LIBRARIES:
            out = subprocess.run([sys.executable, __file__, "--worker", lib, "--rounds",
                                  str(args.rounds), "--number", str(args.number)],
                                 capture_output=True, text=True)
            if out.returncode:      # a peer missing or failing: a note, not a failure
                failed.setdefault(lib, (out.stderr.strip().splitlines() or ["no output"])[-1])
                continue
            times[lib].append(json.loads(out.stdout.strip().splitlines()[-1])["us"])
    best = {lib: min(ts) for lib, ts in times.items() if ts}
    for lib, ts in times.items():
        if ts:
            print(f"  {lib:10s} {best[lib]:7.2f} us  (processes: {min(ts):.2f}-{max(ts):.2f})")
        else:
            print(f"  {lib:10s} not measured: {failed[lib]}")
    if "tapegrad" in best:
        print("  " + ", ".join(f"tapegrad / {lib} {best['tapegrad'] / best[lib]:.2f}x"
                               for lib in LIBRARIES[1:] if lib in best))
    print(f"load at the end: {C.load_note()}")


if __name__ == "__main__":
    main()
