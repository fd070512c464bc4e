"""tanh of tapegrad.core.vecmath: ns per element in a vectorised loop and max ulp error per range.

    PYTHONPATH=$PWD python bench/vecmath_tanh.py [--baseline REV] [--points N]

--baseline REV also times `_vecmath.tanh` as of git revision REV (loaded from `git show` into a
temporary package), in the same process, interleaved with the current one. Timing: the loop
`for i in range(n): y[i] = tanh(x[i])` repeated over an array that fits in L1/L2, thread CPU
time (`time.thread_time`), median of 15 rounds of 2*10^7 elements. Accuracy: against numpy's
80-bit long double, as tests/test_vecmath.py measures it.
"""
import argparse
import importlib
import math
import os
import subprocess
import sys
import tempfile
import time

import numba
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))

from tapegrad.core import vecmath as _vecmath  # noqa: E402
import test_vecmath as T       # noqa: E402


def _baseline(rev):
    tmp = tempfile.mkdtemp(prefix="tanh-baseline-")
    pkg = os.path.join(tmp, "tg_baseline")
    os.makedirs(pkg)
    open(os.path.join(pkg, "__init__.py"), "w").close()
    for name in ("_vecmath.py", "_jit.py"):
        src = subprocess.run(["git", "-C", ROOT, "show", f"{rev}:tapegrad/{name}"],
                             check=True, capture_output=True, text=True).stdout
        with open(os.path.join(pkg, name), "w") as f:
            f.write(src)
    sys.path.insert(0, tmp)
    return importlib.import_module("tg_baseline.core.vecmath")


def _timed_loop(fn):
    @numba.njit(error_model="numpy")
    def run(x, y, reps):
        for _ in range(reps):
            for i in range(x.size):
                y[i] = fn(x[i])
    return run


def ns_per_element(run, n, lo, hi, total=20_000_000, rounds=15):
    x = np.random.default_rng(0).uniform(lo, hi, n)
    y = np.empty(n)
    reps = total // n
    run(x, y, 1)
    ts = []
    for _ in range(rounds):
        t = time.thread_time()
        run(x, y, reps)
        ts.append(time.thread_time() - t)
    return float(np.median(ts)) / (reps * n) * 1e9


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--baseline", help="git revision to compare with")
    ap.add_argument("--points", type=int, default=2_000_000, help="points per range unit")
    args = ap.parse_args()
    fns = {"current": _vecmath.tanh}
    if args.baseline:
        fns = {f"baseline {args.baseline}": _baseline(args.baseline).tanh, **fns}
    runs = {k: _timed_loop(f) for k, f in fns.items()}

    print("ns per element (median of 15 x 2e7 elements, thread time), two passes:")
    for n, (lo, hi) in [(128, (-3, 3)), (1024, (-3, 3)), (4096, (-3, 3)), (1024, (-25, 25))]:
        for _ in range(2):
            res = {k: ns_per_element(r, n, lo, hi) for k, r in runs.items()}
            cols = "  ".join(f"{k} {v:.3f}" for k, v in res.items())
            ratio = (f"  speedup {res[next(iter(res))] / res['current']:.2f}x"
                     if args.baseline else "")
            print(f"  n={n:5d} x in [{lo},{hi}]: {cols}{ratio}")

    rng = np.random.default_rng(1)
    n = args.points
    seams = (np.arange(56) + 0.5) * (math.log(2) / 2)
    ranges = {
        "uniform [-25, 25]": rng.uniform(-25, 25, 5 * n),
        "uniform [-1, 1]": rng.uniform(-1, 1, 2 * n),
        "+-10^[-310, 0]": T._signed(rng, 10.0 ** rng.uniform(-310, 0, 2 * n)),
        "[0.15, 0.25] (k = 0/1 seam)": rng.uniform(0.15, 0.25, 2 * n),
        "[0.30, 0.40] (old 0.35 seam)": rng.uniform(0.30, 0.40, n),
        "[0.50, 0.60]": rng.uniform(0.50, 0.60, n),
        "[0.95, 1.05]": rng.uniform(0.95, 1.05, n),
        "(j+1/2) ln2/2 +- 1e-6 (k seams)": rng.choice(seams, n) + rng.uniform(-1e-6, 1e-6, n),
        "[18, 20]": rng.uniform(18, 20, n),
        "[19.0, 19.2]": rng.uniform(19.0, 19.2, n),
        "any finite double": rng.integers(1, 0x7FF0000000000000, n, dtype=np.int64)
                             .view(np.float64),
    }
    total = sum(x.size for x in ranges.values())
    print(f"max ulp error vs long double, {total / 1e6:.0f}M points:")
    for name, fn in fns.items():
        T._LOOPS.clear()
        T._vecmath = type("m", (), {"tanh": staticmethod(fn)})
        worst = 0.0
        for label, x in ranges.items():
            err = T.ulp_error(T.evaluate("tanh", x), T._reference("tanh", x))
            i = int(np.argmax(err))
            worst = max(worst, err[i])
            print(f"  {name:18s} {label:32s} {x.size:9d} pts  max {err[i]:.4f} ulp"
                  f"  at {x[i]!r}")
        print(f"  {name:18s} overall max {worst:.4f} ulp")


if __name__ == "__main__":
    main()
