"""Shared helpers of the benchmarks: options, peers, timing, tables, fresh-process timing, JSON.

Timing rule (every script): warm up, calibrate a batch of `number` calls to last about
`batch_s`, time `repeat` batches with `time.perf_counter`, report the median per-call time in
microseconds. A peer that is not installed (or fails) is a blank cell, never a failure.
"""
import argparse
import importlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


# ---- options -------------------------------------------------------------------------------

_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                     "NUMBA_NUM_THREADS")


def _threads_from_argv(argv):
    for i, a in enumerate(argv):
        if a == "--threads" and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith("--threads="):
            return a.split("=", 1)[1]
    return None


def _limit_threads(n):
    """Cap every library's thread pool at `n` (must run before numpy, torch or jax load)."""
    for var in _THREAD_VARIABLES:
        os.environ[var] = str(n)
    flags = os.environ.get("XLA_FLAGS", "")
    if n == 1 and "xla_cpu_multi_thread_eigen" not in flags:
        os.environ["XLA_FLAGS"] = (flags + " --xla_cpu_multi_thread_eigen=false").strip()


# Importing this module (which the scripts do before numpy) applies --threads N.
if _threads_from_argv(sys.argv) is not None:
    _limit_threads(int(_threads_from_argv(sys.argv)))

def options(description):
    """Parse the common command line: --quick (small repetition counts) and --json PATH."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true",
                        help="small repetition counts (smoke test): numbers are noisy")
    parser.add_argument("--json", metavar="PATH", help="also save the results as JSON")
    parser.add_argument("--threads", type=int, metavar="N",
                        help="cap the thread pools of BLAS, numba, torch and XLA at N (default: "
                             "each library's own default); fresh processes inherit it")
    args = parser.parse_args()
    args.batch_s = 0.002 if args.quick else 0.02     # target duration of one timed batch
    args.repeat = 3 if args.quick else 15             # timed batches; the median is reported
    args.warmup_s = 0.005 if args.quick else 0.1
    return args


def optional(name):
    """The module `name`, or None when it is not installed (the peer's column stays blank)."""
    try:
        return importlib.import_module(name)
    except Exception:          # ImportError, or a broken install raising something else
        return None


def optional_spec(name):
    """Whether `name` is importable, without importing it."""
    import importlib.util
    try:
        return importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None


def versions(*names):
    """Installed versions of the distributions `names` (None where not installed)."""
    from importlib import metadata
    out = {"python": platform.python_version()}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            module = sys.modules.get(name)
            out[name] = getattr(module, "__version__", None) if module is not None else None
    return out


def machine():
    info = {"platform": platform.platform(), "processor": platform.processor() or "?",
            "cpus": os.cpu_count()}
    try:
        info["affinity"] = len(os.sched_getaffinity(0))
    except AttributeError:
        pass
    return info


# ---- timing --------------------------------------------------------------------------------

def _calibrate(fn, args):
    """Warm `fn` up; the number of calls that makes one batch last about `args.batch_s`."""
    perf = time.perf_counter
    start = perf()
    n_warm = 0
    while perf() - start < args.warmup_s or n_warm < 2:
        fn()
        n_warm += 1
    per_call = (perf() - start) / n_warm
    return max(1, int(args.batch_s / max(per_call, 1e-9)))


def _batch(fn, number):
    perf = time.perf_counter
    t0 = perf()
    for _ in range(number):
        fn()
    return (perf() - t0) / number


def measure_all(cases, args):
    """Per-call µs of several implementations of one workload, measured interleaved.

    `cases` maps a column name to `fn` or `(fn, check)` (fn None: not available). Every fn is
    called once (compile, trace, allocate) and its result checked with `check(result)` (a
    message when wrong: that cell is left blank and the message printed; a raising peer likewise),
    then warmed up and calibrated; then `args.repeat` rounds time one batch of each in turn, so
    that load from other processes hits all columns alike. Returns {name: median µs or None}."""
    ready, out = {}, {}
    for name, case in cases.items():
        fn, check = case if isinstance(case, tuple) else (case, None)
        out[name] = None
        if fn is None:
            continue
        try:
            result = fn()
            problem = check(result) if check is not None else None
            if problem:
                print(f"  [{name}] wrong result: {problem}; cell left blank", flush=True)
                continue
            ready[name] = (fn, _calibrate(fn, args))
        except Exception as err:                             # noqa: BLE001 - a peer's failure
            print(f"  [{name}] failed: {type(err).__name__}: {err}; cell left blank", flush=True)
    samples = {name: [] for name in ready}
    for _ in range(args.repeat):
        for name, (fn, number) in ready.items():
            samples[name].append(_batch(fn, number))
    for name, s in samples.items():
        out[name] = statistics.median(s) * 1e6
    return out


def load_note():
    """A warning line when other processes load the machine (timings are then noisy)."""
    try:
        load = os.getloadavg()[0]
    except OSError:
        return ""
    cpus = os.cpu_count() or 1
    note = f"load average {load:.2f} on {cpus} CPUs"
    if load > 0.5 * cpus:
        note += " -- the machine is busy: absolute times are noisy, the interleaved ratios less so"
    return note


def close(expected, atol=1e-8, rtol=1e-6):
    """A `check` for `measure_all`: the result (any array-like or tuple of them) equals `expected`."""
    import numpy as np

    def check(result):
        got = _as_numpy(result)
        want = _as_numpy(expected)
        if len(got) != len(want):
            return f"{len(got)} arrays, expected {len(want)}"
        for g, w in zip(got, want):
            if g.shape != w.shape:
                return f"shape {g.shape}, expected {w.shape}"
            if not np.allclose(g, w, atol=atol, rtol=rtol):
                return f"max abs difference {np.max(np.abs(g - w)):.3g}"
        return None
    return check


def _as_numpy(x):
    import numpy as np
    if isinstance(x, (tuple, list)):
        return [a for item in x for a in _as_numpy(item)]
    if type(x).__module__.startswith("tapegrad"):
        x = x.data
    elif type(x).__module__.startswith("torch"):
        x = x.detach().cpu().numpy()
    return [np.asarray(x, dtype=np.float64)]


def run_fresh(code, runs, timeout=300):
    """Run `code` in `runs` fresh interpreters (`python -c`); each prints one float (seconds) as
    its last output line. Returns the list of floats, or None when a run fails."""
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    out = []
    for _ in range(runs):
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              env=env, timeout=timeout, cwd=ROOT)
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["?"]
            print(f"  fresh process failed: {tail[0]}", flush=True)
            return None
        out.append(float(proc.stdout.strip().splitlines()[-1]))
    return out


# ---- tables --------------------------------------------------------------------------------

def fmt_us(us):
    if us is None:
        return ""
    if us >= 1e5:
        return f"{us / 1e3:,.0f} ms"
    if us >= 100:
        return f"{us:,.0f}"
    if us >= 10:
        return f"{us:.1f}"
    return f"{us:.2f}"


def fmt_ratio(r):
    return "" if r is None else f"{r:.2f}x"


def ratio(a, b):
    return None if a is None or b is None or b == 0 else a / b


def fmt_ms(seconds):
    if seconds is None:
        return ""
    ms = seconds * 1e3
    return f"{ms:,.0f}" if ms >= 100 else f"{ms:.1f}" if ms >= 1 else f"{ms:.3f}"


def table(title, columns, rows, unit="µs per call", fmt=fmt_us):
    """Print a table: `rows` is [(row label, {column: value})], values are numbers formatted by
    `fmt` (µs by default), None (a blank cell) or strings (printed as they are)."""
    cells = [[label] + [v if isinstance(v, str) else fmt(v) for v in
                        (values.get(c) for c in columns)] for label, values in rows]
    header = [f"{title} [{unit}]"] + list(columns)
    widths = [max(len(str(r[i])) for r in [header] + cells) for i in range(len(header))]
    line = lambda r: "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w)  # noqa: E731
                               for i, (c, w) in enumerate(zip(r, widths)))
    print(line(header))
    print("  ".join("-" * w for w in widths))
    for r in cells:
        print(line(r))
    print(flush=True)


def ratio_line(label, value, goal=None):
    """Print `ratio <label>: 0.42x (goal <= 0.5x: met)`; returns a JSON-able record."""
    if value is None:
        print(f"ratio {label}: n/a (a column is blank)", flush=True)
        return {"label": label, "ratio": None, "goal": goal, "met": None}
    verdict = ""
    met = None
    if goal is not None:
        met = value <= goal
        verdict = f"  (goal <= {goal:g}x: {'met' if met else 'MISSED'})"
    print(f"ratio {label}: {value:.3g}x{verdict}", flush=True)
    return {"label": label, "ratio": value, "goal": goal, "met": met}


def save_json(path, payload):
    if not path:
        return
    with open(path, "w") as fh:
        json.dump(payload, fh, indent=2, default=str)
    print(f"results saved to {path}")
