"""Every batched benchmark in one command: tapegrad against JAX, PyTorch, HIPS autograd and
hand-written numba, one fresh process per workload.

    python bench/run.py [--quick] [--json PATH] [--plot PATH] [--threads N] [--isolate]

Workloads (bench/batched.py measures each one in its own process, so that libraries loaded by
one do not share a process, thread pools or caches with another's):
* batched gradients, ns per point: Rosenbrock n=10 (B=100k), tanh MLP 8-16-1 w.r.t. its input
  (B=100k), Lennard-Jones 16 atoms with integer-array pair indexing (B=10k);
* single-call gradients from bench/transforms.py (µs per call), if its functions exist;
* scaling of tapegrad's vmap(grad(Rosenbrock n=10)) from B=1e3 to 1e7 (1e6 with --quick), with
  the log-log slope of time against B.
Prints the table with ratios tapegrad/JAX and tapegrad/hand, saves JSON (default
bench/results/run.json) and a plot (default bench/results/run.png). A missing or failing peer
is a blank cell. Quick mode: few repetitions (noisy numbers), for smoke tests.

Within a workload's process the libraries are timed interleaved (bench/_common.measure_all), so
that load from other processes hits every column alike; but a library's thread pool still
spinning after its turn slows the next column (measured: tapegrad's logistic regression 0.55 ms
alone, 1.5-12 ms interleaved; JAX's MLP 19 vs 41 ns per point). `--isolate` runs each library of
each workload in its own process instead: prefer it on a quiet machine, and for quoted numbers.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import _common as C  # noqa: E402

BATCHED = ["rosenbrock", "mlp", "lj16"]
COLUMNS = ["tapegrad", "tapegrad interp", "JAX", "PyTorch", "HIPS autograd", "hand numba"]
RESULTS = os.path.join(HERE, "results")


def options():
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("--quick", action="store_true", help="few repetitions (smoke test)")
    parser.add_argument("--json", metavar="PATH", default=os.path.join(RESULTS, "run.json"),
                        help="where to save the results (default: %(default)s)")
    parser.add_argument("--plot", metavar="PATH", default=os.path.join(RESULTS, "run.png"),
                        help="where to save the plot (default: %(default)s; 'none' to skip)")
    parser.add_argument("--threads", type=int, metavar="N",
                        help="cap every library's thread pool at N (default: library defaults)")
    parser.add_argument("--isolate", action="store_true",
                        help="one process per library as well as per workload (no interleaving: "
                             "columns are timed one after the other, each library alone in its "
                             "process, so no other library's thread pool spins beside it)")
    parser.add_argument("--only", nargs="+", metavar="WORKLOAD",
                        choices=BATCHED + ["single", "scaling"],
                        help="run only these workloads")
    return parser.parse_args()


def run_one(workload, args, timeout=600, columns=None):
    """Run bench/batched.py for one workload in a fresh process; its JSON result or None."""
    label = workload if not columns else f"{workload}: {', '.join(columns)}"
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "result.json")
        cmd = [sys.executable, os.path.join(HERE, "batched.py"), "--workload", workload,
               "--json", out]
        if args.quick:
            cmd.append("--quick")
        if args.threads is not None:
            cmd += ["--threads", str(args.threads)]
        if columns:
            cmd += ["--columns"] + list(columns)
        start = time.perf_counter()
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
        except subprocess.TimeoutExpired:
            print(f"[{label}] timed out after {timeout} s", flush=True)
            return None
        for line in proc.stdout.splitlines():          # notes from the workload (blank cells)
            print(f"  [{label}] {line.strip()}", flush=True)
        if proc.returncode != 0 or not os.path.exists(out):
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            print(f"[{label}] failed ({proc.returncode}): " + " | ".join(tail), flush=True)
            return None
        with open(out) as fh:
            result = json.load(fh)
        print(f"[{label}] done in {time.perf_counter() - start:.1f} s", flush=True)
        return result


def run_isolated(workload, args):
    """One process per column; the results merged as if measured in one process."""
    merged = None
    for column in COLUMNS:
        r = run_one(workload, args, columns=[column])
        if r is None:
            continue
        if merged is None:
            merged = r
            continue
        if workload == "single":
            for label, values in r.get("us_per_call", {}).items():
                merged["us_per_call"][label][column] = values.get(column)
        else:
            for key in ("ns_per_point", "us_per_call"):
                merged[key][column] = r[key][column]
    if merged is not None:
        merged["isolated"] = True
    return merged


def fmt_ns(ns):
    if ns is None:
        return ""
    if ns >= 1e6:
        return f"{ns / 1e3:,.0f} µs"
    if ns >= 100:
        return f"{ns:,.0f}"
    if ns >= 10:
        return f"{ns:.1f}"
    return f"{ns:.2f}"


def ratio_cells(values):
    tg = values.get("tapegrad")
    return {"tg/JAX": C.fmt_ratio(C.ratio(tg, values.get("JAX"))),
            "tg/hand": C.fmt_ratio(C.ratio(tg, values.get("hand numba")))}


def print_batched(results):
    rows = []
    for r in results:
        values = dict(r["ns_per_point"])
        values.update(ratio_cells(r["ns_per_point"]))
        rows.append((f"{r['title']}, B={r['B']:,}", values))
    C.table("batched gradient", COLUMNS + ["tg/JAX", "tg/hand"], rows,
            unit="ns per point", fmt=fmt_ns)
    sample = ", ".join(f"{r['workload']}: {r['hips_sample']}" for r in results)
    print(f"JAX: jit(vmap(grad(f))), x64; PyTorch: torch.func.vmap(torch.func.grad(f)); HIPS "
          f"autograd: a Python loop of grad(f) over a sample of points ({sample}), per point; "
          "hand numba: @njit(parallel=True, fastmath=True), prange over points.\n", flush=True)


def print_single(single):
    if single is None:
        print("single-call workloads: failed (see above)\n")
        return
    if "skipped" in single:
        print(f"single-call workloads skipped: {single['skipped']}\n")
        return
    rows = []
    for label, values in single["us_per_call"].items():
        cells = dict(values)
        cells.update(ratio_cells(values))
        rows.append((label, cells))
    C.table("one gradient (bench/transforms.py workloads)", COLUMNS + ["tg/JAX", "tg/hand"],
            rows, unit="µs per call")
    print(single.get("note", ""), "\n", flush=True)


def print_scaling(scaling):
    if scaling is None:
        print("scaling: failed (see above)\n")
        return
    print(scaling["title"])
    print(f"  {'B':>12}  {'ms per call':>12}  {'ns per point':>12}")
    for p in scaling["points"]:
        print(f"  {p['B']:>12,}  {p['seconds'] * 1e3:>12.3f}  {p['ns_per_point']:>12.2f}")
    slope_big = scaling.get("slope_from_1e5")
    print(f"  log-log slope of time against B: {scaling['slope']:.3f} over all sizes"
          + (f", {slope_big:.3f} from B=1e5 on" if slope_big is not None else "")
          + " (1 = linear; below 1 at small B: per-call overhead)\n", flush=True)


def plot(path, batched, scaling):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, 2, figsize=(13, 5), gridspec_kw={"width_ratios": [3, 2]})
    ax = axes[0]
    width = 0.8 / len(COLUMNS)
    for k, column in enumerate(COLUMNS):
        xs, ys = [], []
        for i, r in enumerate(batched):
            v = r["ns_per_point"].get(column)
            if v is not None:
                xs.append(i + (k - (len(COLUMNS) - 1) / 2) * width)
                ys.append(v)
        ax.bar(xs, ys, width, label=column)
    ax.set_yscale("log")
    ax.set_xticks(range(len(batched)))
    ax.set_xticklabels([f"{r['title']}\nB={r['B']:,}" for r in batched], fontsize=8)
    ax.set_ylabel("ns per point (log)")
    ax.set_title("batched gradient: time per point (lower is better)")
    ax.legend(fontsize=8)
    ax = axes[1]
    if scaling:
        B = np.array([p["B"] for p in scaling["points"]])
        ax.loglog(B, [p["seconds"] * 1e3 for p in scaling["points"]], "o-",
                  label=f"ms per call (slope {scaling['slope']:.2f})")
        ax.loglog(B, [p["ns_per_point"] for p in scaling["points"]], "s--",
                  label="ns per point")
        ax.set_xlabel("batch size B")
        ax.set_title("tapegrad vmap(grad(Rosenbrock n=10))")
        ax.legend(fontsize=8)
        ax.grid(True, which="both", alpha=0.3)
    else:
        ax.set_axis_off()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"plot saved to {path}")


def main():
    args = options()
    wanted = args.only or (BATCHED + ["single", "scaling"])
    start = time.perf_counter()
    print(f"batched benchmarks ({'quick' if args.quick else 'full'} run), threads: "
          f"{args.threads or 'library defaults'}, processes: one per workload"
          f"{' and library' if args.isolate else ' (libraries interleaved)'}, {C.load_note()}",
          flush=True)
    print("versions:", C.versions("numpy", "numba", "jax", "jaxlib", "torch", "autograd"),
          flush=True)
    results = {w: (run_isolated(w, args) if args.isolate and w != "scaling" else run_one(w, args))
               for w in wanted}
    print()
    batched = [results[w] for w in BATCHED if results.get(w) is not None]
    if batched:
        print_batched(batched)
    if "single" in wanted:
        print_single(results.get("single"))
    if "scaling" in wanted:
        print_scaling(results.get("scaling"))
    loads = {w: r.get("load") for w, r in results.items() if r}
    print(f"load at the end: {C.load_note()}; total {time.perf_counter() - start:.0f} s")
    payload = {"benchmark": "batched", "quick": args.quick, "threads": args.threads,
               "isolate": args.isolate,
               "machine": C.machine(), "load": C.load_note(), "load_per_workload": loads,
               "versions": C.versions("numpy", "numba", "jax", "jaxlib", "torch", "autograd"),
               "units": {"batched": "ns per point", "single": "us per call",
                         "scaling": "seconds per call"},
               "results": results}
    for path in (args.json, args.plot):
        if path and path != "none":
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    C.save_json(args.json, payload)
    if args.plot and args.plot != "none":
        try:
            plot(args.plot, batched, results.get("scaling"))
        except ImportError as err:
            print(f"no plot: {err}")
    return 0 if all(results.get(w) is not None for w in wanted) else 1


if __name__ == "__main__":
    sys.exit(main())
