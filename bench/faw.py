""""Fastest Autograd in the West": a graph of N scalar operations replayed forward and backward.

    python bench/faw.py [--n 1000 10000] [--batch 1000] [--isolate] [--quick] [--json PATH]
    python bench/faw.py --load [--quick]

The workload of A. Rogozhnikov's blog post "Fastest Autograd in the West" (December 2023): 100
scalar inputs, then N operations cycling through
    softplus(nodes[-10]);  sum(nodes[-30:-10:5]) (4 nodes);  nodes[-20] * nodes[-10];
    softmax of the last 4 nodes (all 4 appended),
the last node the output. The graph is recorded once; forward + backward are replayed many times.

Every column's value and gradient equal the hand-written interpreter's to rtol 1e-10, at each N
from the post's inputs and first at N=60 from normal inputs (the graph contracts: from the post's
inputs the gradient is below 1e-70 at N=1000, 0 at N=10000). Columns:
* hand numba (the reference): the post's C design in numba, a flat op table (opcode and operand
  indices arrays) swept by a forward loop and a backward loop with a switch on the opcode;
* tapegrad: `value_and_grad(f)`, f written as a user would (elements `x[i]` of a 100-vector,
  softplus as `np.logaddexp(0, v)`, softmax as `e = np.exp(v - np.max(v)); e / np.sum(e)` of
  `np.stack` of 4 nodes), traced once and replayed; its tracing time (`tapegrad.trace`) and the
  time of its first call (trace included, the library warm) are printed, not timed;
* tapegrad vmap: `vmap(value_and_grad(f), fuse=False)` over B points, time per point (the
  column-layout interpreter: the fused tier is not meant for tapes of this size);
* JAX: `jit(value_and_grad(f))` (x64; N <= --jax-max, 1000 by default: its compile time grows
  fast with N and is printed);
* PyTorch eager: the graph built and `torch.autograd.grad` run at every call (as in the post;
  N <= --torch-max, 1000 by default). softplus with threshold=40 (its default of 20 returns x
  above 20, off by exp(-20) relative, more than the check's tolerance in float64).
The ratio of each column to the hand-written interpreter is printed. Within one process the
columns are timed interleaved (bench/_common.measure_all); `--isolate` runs each column in its
own process (as bench/run.py --isolate), which is what to quote.

`--load`: the batched replay with a competing process. `vmap(grad(rosenbrock n=10))` (the fused
tier and the interpreter) at B = 1e3, 1e4, 1e5, timed alone, then while one busy Python process
(`while True: pass`) runs beside it, then alone again; prints the slowdown (busy / alone).
"""
import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)

import _common as C  # noqa: E402  (first: it applies --threads before numpy loads)
import numpy as np  # noqa: E402

N_INPUTS = 100
COLUMNS = ["hand numba", "tapegrad", "tapegrad vmap", "JAX", "PyTorch"]
REFERENCE = "hand numba"
RTOL = 1e-10
N_VERIFY = 60
LOAD_SIZES = [1_000, 10_000, 100_000]


# ---- the graph, once for every library --------------------------------------------------------

def faw_graph(x, n_ops, softplus, softmax4):
    """The post's `run_graph`: the output node of n_ops operations over x's 100 elements;
    `softmax4(four nodes)` returns the four softmax nodes."""
    nodes = [x[i] for i in range(N_INPUTS)]
    for op in range(n_ops):
        kind = op % 4
        if kind == 0:
            nodes.append(softplus(nodes[-10]))
        elif kind == 1:
            nodes.append(sum(nodes[-30:-10:5]))
        elif kind == 2:
            nodes.append(nodes[-20] * nodes[-10])
        else:
            nodes.extend(softmax4(nodes[-4:]))
    return nodes[-1]


def numpy_function(n_ops):
    """The graph as a user of tapegrad writes it: numpy functions on traced elements."""
    def softmax4(four):
        v = np.stack(four)
        e = np.exp(v - np.max(v))
        s = e / np.sum(e)
        return [s[i] for i in range(4)]
    return lambda x: faw_graph(x, n_ops, lambda v: np.logaddexp(0.0, v), softmax4)


def jax_function(jax, n_ops):
    jnp = jax.numpy

    def softmax4(four):
        s = jax.nn.softmax(jnp.stack(four))
        return [s[i] for i in range(4)]
    return lambda x: faw_graph(x, n_ops, jax.nn.softplus, softmax4)


def torch_function(torch, n_ops):
    F = torch.nn.functional

    def softmax4(four):
        return list(F.softmax(torch.stack(four), dim=0))
    return lambda x: faw_graph(x, n_ops, lambda v: F.softplus(v, threshold=40.0), softmax4)


def start_point():
    """The post's inputs, arange(100), here in float64."""
    return np.arange(N_INPUTS, dtype=np.float64)


def verification_point():
    """Inputs at which a short graph (N_VERIFY) has a gradient far from zero in every input it
    reads: the graph contracts (its value tends to a fixed point), so from the post's inputs
    the gradient is below 1e-70 at N=1000 and underflows to 0 at N=10000, and checking it
    there proves little."""
    return np.random.default_rng(0).standard_normal(N_INPUTS)


def batch_points(B, x0):
    """B points around x0 (per-point inputs of the batched replay)."""
    rng = np.random.default_rng(0)
    return x0[None, :] * rng.uniform(0.5, 1.5, (B, N_INPUTS))


# ---- the hand-written reference: the post's C design --------------------------------------------

SOFTPLUS, SUM4, MUL, SOFTMAX4 = range(4)


def op_table(n_ops):
    """(OP, ARG, OUT): each operation's opcode, operand node indices (4 columns, -1 unused) and
    first output node; nodes are numbered in creation order, the inputs first."""
    OP = np.empty(n_ops, np.int64)
    ARG = np.full((n_ops, 4), -1, np.int64)
    OUT = np.empty(n_ops, np.int64)
    n = N_INPUTS
    for op in range(n_ops):
        kind = op % 4
        OP[op], OUT[op] = kind, n
        if kind == 0:
            ARG[op, 0] = n - 10
            n += 1
        elif kind == 1:
            ARG[op] = range(n - 30, n - 10, 5)
            n += 1
        elif kind == 2:
            ARG[op, :2] = (n - 20, n - 10)
            n += 1
        else:
            ARG[op] = range(n - 4, n)
            n += 4
    return OP, ARG, OUT, n


def hand_kernels():
    import numba

    @numba.njit(cache=True)
    def forward(OP, ARG, OUT, V):
        for e in range(OP.size):
            op, o = OP[e], OUT[e]
            if op == 0:
                x = V[ARG[e, 0]]
                V[o] = max(x, 0.0) + np.log1p(np.exp(-abs(x)))
            elif op == 1:
                V[o] = V[ARG[e, 0]] + V[ARG[e, 1]] + V[ARG[e, 2]] + V[ARG[e, 3]]
            elif op == 2:
                V[o] = V[ARG[e, 0]] * V[ARG[e, 1]]
            else:
                m = V[ARG[e, 0]]
                for j in range(1, 4):
                    m = max(m, V[ARG[e, j]])
                s = 0.0
                for j in range(4):
                    V[o + j] = np.exp(V[ARG[e, j]] - m)
                    s += V[o + j]
                for j in range(4):
                    V[o + j] /= s

    @numba.njit(cache=True)
    def backward(OP, ARG, OUT, V, G):
        G[:] = 0.0
        G[V.size - 1] = 1.0
        for e in range(OP.size - 1, -1, -1):
            op, o = OP[e], OUT[e]
            g = G[o]
            if op == 0:
                x = V[ARG[e, 0]]
                G[ARG[e, 0]] += g / (1.0 + np.exp(-x)) if x >= 0 else \
                    g * np.exp(x) / (1.0 + np.exp(x))
            elif op == 1:
                for j in range(4):
                    G[ARG[e, j]] += g
            elif op == 2:
                a, b = ARG[e, 0], ARG[e, 1]
                G[a] += g * V[b]
                G[b] += g * V[a]
            else:
                dot = 0.0
                for j in range(4):
                    dot += V[o + j] * G[o + j]
                for j in range(4):
                    G[ARG[e, j]] += V[o + j] * (G[o + j] - dot)

    @numba.njit(cache=True)
    def value_and_grad(OP, ARG, OUT, V, G, x):
        V[:x.size] = x
        forward(OP, ARG, OUT, V)
        backward(OP, ARG, OUT, V, G)
        return V[V.size - 1], G[:x.size].copy()

    return value_and_grad


def hand_case(n_ops):
    """`vg(x)` -> (value, gradient) by the hand-written interpreter of the op table."""
    OP, ARG, OUT, n_nodes = op_table(n_ops)
    V, G = np.empty(n_nodes), np.empty(n_nodes)
    kernel = hand_kernels()
    return lambda x: kernel(OP, ARG, OUT, V, G, x)


def closeness(want):
    """A measure_all check: (value, gradient) equal to `want` at rtol RTOL (gradient entries
    compared with an absolute floor of RTOL times the largest)."""
    value, grad = want
    floor = RTOL * max(np.max(np.abs(grad)), 1e-300)

    def check(result):
        v, g = (np.asarray(a, np.float64) for a in C._as_numpy(result))
        if not np.allclose(v, value, rtol=RTOL, atol=0):
            return f"value {float(v)!r}, expected {value!r}"
        if g.shape != grad.shape or not np.allclose(g, grad, rtol=RTOL, atol=floor):
            return f"gradient off by {np.max(np.abs(g - grad)):.3g} (largest {np.max(np.abs(grad)):.3g})"
        return None
    return check


def batched_closeness(want_points):
    """A check of a vmapped (values, gradients) at its first points."""
    checks = [closeness(w) for w in want_points]

    def check(result):
        values, grads = (np.asarray(a) for a in result)
        for q, chk in enumerate(checks):
            problem = chk((values[q], grads[q]))
            if problem:
                return f"point {q}: {problem}"
        return None
    return check


# ---- the columns ---------------------------------------------------------------------------------

def tapegrad_cases(n_ops, x0, B, want, want_points, notes):
    import tapegrad as tg
    from tapegrad.core.registry import PRIMS
    tg.grad(lambda v: np.sum(v * v))(np.ones(3))        # the library warm: interpreters loaded
    f = numpy_function(n_ops)
    start = time.perf_counter()
    tape = tg.trace(f, x0)
    notes["tapegrad trace s"] = time.perf_counter() - start
    kinds = collections.Counter(PRIMS[op].name for op in tape.E[:, 0].tolist())
    notes["tape entries"] = len(tape.E)
    notes["entries per graph op"] = len(tape.E) / n_ops
    notes["entries by primitive"] = dict(kinds.most_common())
    vg = tg.value_and_grad(f)
    start = time.perf_counter()
    result = vg(x0)
    notes["tapegrad first call s"] = time.perf_counter() - start
    check = closeness(want)
    problem = check(result)
    if problem:
        print(f"  [tapegrad] first call wrong: {problem}", flush=True)
    cases = {"tapegrad": (lambda: vg(x0), check)}
    if B:
        X = batch_points(B, x0)
        bvg = tg.vmap(tg.value_and_grad(f), fuse=False)
        start = time.perf_counter()
        bvg(X[:2])
        notes["tapegrad vmap first call s"] = time.perf_counter() - start
        cases["tapegrad vmap"] = (lambda: bvg(X), batched_closeness(want_points))
    return cases


def jax_case(n_ops, x, want, notes):
    jax = C.optional("jax")
    if jax is None:
        return None
    jax.config.update("jax_enable_x64", True)
    vg = jax.jit(jax.value_and_grad(jax_function(jax, n_ops)))
    x0 = jax.numpy.asarray(x)
    start = time.perf_counter()
    jax.block_until_ready(vg(x0))
    notes["JAX compile s"] = time.perf_counter() - start
    return (lambda: jax.block_until_ready(vg(x0)), closeness(want))


def torch_case(n_ops, x0, want, threads):
    torch = C.optional("torch")
    if torch is None:
        return None
    if threads is not None:
        torch.set_num_threads(threads)
    f = torch_function(torch, n_ops)
    x = torch.tensor(x0, requires_grad=True)

    def run():
        out = f(x)
        (g,) = torch.autograd.grad(out, x)
        return out.detach(), g
    return (run, closeness(want))


def build_cases(n_ops, x0, args, columns, notes):
    """{column: (fn, check)} at one N and point x0 (None where not measured)."""
    hand = hand_case(n_ops)
    want = hand(x0)
    if not (np.isfinite(want[0]) and np.all(np.isfinite(want[1]))):
        raise RuntimeError(f"N={n_ops}: the reference value or gradient is not finite")
    B = args.batch if "tapegrad vmap" in columns else 0
    want_points = [hand(x) for x in batch_points(B, x0)[:3]] if B else []
    cases = {c: None for c in COLUMNS}
    if "hand numba" in columns:
        cases["hand numba"] = (lambda: hand(x0), closeness(want))
    if "tapegrad" in columns or "tapegrad vmap" in columns:
        for name, case in tapegrad_cases(n_ops, x0, B, want, want_points, notes).items():
            if name in columns:
                cases[name] = case
    if "JAX" in columns and n_ops <= args.jax_max:
        cases["JAX"] = jax_case(n_ops, x0, want, notes)
    if "PyTorch" in columns and n_ops <= args.torch_max:
        cases["PyTorch"] = torch_case(n_ops, x0, want, args.threads)
    return cases


def verify(args, columns):
    """Every column against the reference at N_VERIFY operations and verification_point(),
    where the gradient is far from zero; raises naming the columns that differ."""
    cases = build_cases(N_VERIFY, verification_point(), args, columns, {})
    wrong = []
    for name, case in cases.items():
        if case is not None:
            fn, check = case
            problem = check(fn())
            if problem:
                wrong.append(f"{name}: {problem}")
    if wrong:
        raise RuntimeError(f"N={N_VERIFY}: " + "; ".join(wrong))


def measure_n(n_ops, args, columns):
    """{column: µs per call (per point for the vmap column)} and notes for one N."""
    notes = {}
    cases = build_cases(n_ops, start_point(), args, columns, notes)
    us = C.measure_all(cases, args)
    if us.get("tapegrad vmap") is not None:
        us["tapegrad vmap"] /= args.batch
    return us, notes


# ---- the load case ---------------------------------------------------------------------------------

def run_load(args):
    """vmap(grad(rosenbrock n=10)) alone, beside one busy process, alone again."""
    import tapegrad as tg
    from batched import hand_kernels as batched_hand, rosenbrock, rosenbrock_points
    f = rosenbrock(tg)
    variants = {"fused": tg.vmap(tg.grad(f), fuse=True),
                "interp": tg.vmap(tg.grad(f), fuse=False)}
    rng = np.random.default_rng(1)
    batches = {B: rosenbrock_points(B, rng) for B in LOAD_SIZES}
    for B, X in batches.items():
        want = batched_hand()["rosenbrock"](X)
        for name, g in variants.items():
            got = g(X)
            if not np.allclose(got, want, rtol=1e-9, atol=1e-10):
                raise RuntimeError(f"load case: vmap ({name}) at B={B} differs from the "
                                   "hand-written gradient")
    threads = _numba_threads()
    cases = {}
    for name, g in variants.items():
        for B, X in batches.items():
            cases[f"{name} B={B:,}"] = (lambda g=g, X=X: g(X))
            cases[f"{name} B={B:,}, 1 thread"] = (lambda g=g, X=X: _one_thread(g, X, threads))

    def timed():
        return C.measure_all(cases, args)
    alone = timed()
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.2)
        busy = timed()
    finally:
        spinner.kill()
        spinner.wait()
    again = timed()
    rows = []
    for label in cases:
        base = min(alone[label], again[label])
        single = label if label.endswith("1 thread") else label + ", 1 thread"
        single_alone = min(alone[single], again[single])
        rows.append((label, {"alone": alone[label], "busy": busy[label],
                             "alone again": again[label],
                             "busy/alone": C.fmt_ratio(C.ratio(busy[label], base)),
                             "busy/alone 1 thread": C.fmt_ratio(C.ratio(busy[label],
                                                                        single_alone))}))
    C.table("vmap(grad(rosenbrock n=10)) with one busy process beside it",
            ["alone", "busy", "alone again", "busy/alone", "busy/alone 1 thread"], rows)
    print(f"alone: library default threads (numba: {threads}); '1 thread': numba.set_num_threads(1)"
          " around the call. Ratios against the faster of the two alone runs. Goal: busy <= 1.5x"
          " the single-threaded time alone.", flush=True)
    return {"alone_us": alone, "busy_us": busy, "alone_again_us": again}


def _one_thread(g, X, threads):
    import numba
    numba.set_num_threads(1)
    try:
        return g(X)
    finally:
        numba.set_num_threads(threads)


def _numba_threads():
    import numba
    return numba.config.NUMBA_NUM_THREADS


# ---- main --------------------------------------------------------------------------------------

def options():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[1000, 10000], metavar="N",
                        help="graph sizes (default: %(default)s)")
    parser.add_argument("--batch", type=int, default=1000, metavar="B",
                        help="points of the vmap column (default: %(default)s; 0 skips it)")
    parser.add_argument("--jax-max", type=int, default=1000, metavar="N",
                        help="largest N for JAX (its compile time grows fast with N)")
    parser.add_argument("--torch-max", type=int, default=1000, metavar="N",
                        help="largest N for PyTorch eager (slow)")
    parser.add_argument("--repeat", type=int, help="timed rounds (default 15, 3 with --quick)")
    parser.add_argument("--columns", nargs="+", choices=COLUMNS, metavar="COLUMN",
                        help="measure only these columns (--isolate runs each one this way)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--isolate", action="store_true",
                        help="each column in its own process (no other library beside it)")
    parser.add_argument("--load", action="store_true",
                        help="the load case instead: batched replay beside a busy process")
    parser.add_argument("--quick", action="store_true", help="few repetitions (smoke test)")
    parser.add_argument("--json", metavar="PATH", help="also save the results as JSON")
    parser.add_argument("--threads", type=int, metavar="N", help="cap every thread pool at N")
    args = parser.parse_args()
    args.batch_s = 0.002 if args.quick else 0.02
    args.repeat = args.repeat or (3 if args.quick else 15)
    args.warmup_s = 0.005 if args.quick else 0.1
    if args.quick:
        args.n = [n for n in args.n if n <= 1000] or [min(args.n)]
        args.batch = min(args.batch, 100)
    return args


def measure(args, columns):
    verify(args, columns)
    results = {}
    for n_ops in args.n:
        us, notes = measure_n(n_ops, args, columns)
        results[str(n_ops)] = {"us": us, "notes": notes}
    return results


def measure_isolated(args):
    """Each column in a fresh process (this script with --columns), results merged."""
    merged = {str(n): {"us": {c: None for c in COLUMNS}, "notes": {}} for n in args.n}
    for column in args.columns or COLUMNS:
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "result.json")
            cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--columns", column,
                   "--json", out,
                   "--n", *map(str, args.n), "--batch", str(args.batch), "--repeat",
                   str(args.repeat), "--jax-max", str(args.jax_max), "--torch-max",
                   str(args.torch_max)] + (["--quick"] if args.quick else []) + \
                (["--threads", str(args.threads)] if args.threads is not None else [])
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
            for line in proc.stdout.splitlines():
                if line.startswith("  ["):
                    print(line, flush=True)
            if proc.returncode != 0 or not os.path.exists(out):
                tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
                print(f"[{column}] failed ({proc.returncode}): " + " | ".join(tail), flush=True)
                continue
            with open(out) as fh:
                result = json.load(fh)["results"]
        for n, r in result.items():
            merged[n]["us"][column] = r["us"][column]
            merged[n]["notes"].update(r["notes"])
        print(f"[{column}] done", flush=True)
    return merged


def report(results, args):
    rows, ratios = [], {}
    for n, r in results.items():
        us = r["us"]
        cells = dict(us)
        for c in COLUMNS[1:]:
            cells[f"{c}/hand"] = C.fmt_ratio(C.ratio(us.get(c), us.get(REFERENCE)))
            ratios[f"N={n} {c}/hand"] = C.ratio(us.get(c), us.get(REFERENCE))
        rows.append((f"N={int(n):,}", cells))
    C.table("FAW forward + backward", COLUMNS + [f"{c}/hand" for c in COLUMNS[1:]], rows)
    print(f"tapegrad vmap: per point, B={args.batch:,}. JAX for N <= {args.jax_max}, PyTorch "
          f"for N <= {args.torch_max}.")
    for n, r in results.items():
        notes = r["notes"]
        parts = [f"{k} {v:.3g}" for k, v in notes.items()
                 if isinstance(v, float) and k != "entries per graph op"]
        if "tape entries" in notes:
            parts.append(f"tape entries {notes['tape entries']:,} "
                         f"({notes['entries per graph op']:.2f} per graph op)")
        print(f"N={int(n):,}: " + ", ".join(parts))
        if "entries by primitive" in notes:
            print("   entries by primitive: " + ", ".join(
                f"{k} {v:,}" for k, v in notes["entries by primitive"].items()))
    print(flush=True)
    for label, value in ratios.items():
        if value is not None:
            C.ratio_line(label, value)


def main():
    args = options()
    start = time.perf_counter()
    worker = args.worker          # one column of --isolate: results to --json only
    if not worker:
        print(f"FAW benchmark ({'quick' if args.quick else 'full'} run), "
              f"{'one process per column' if args.isolate else 'columns interleaved'}, "
              f"threads: {args.threads or 'library defaults'}; {C.load_note()}", flush=True)
    if args.load:
        results = run_load(args)
    elif args.isolate:
        results = measure_isolated(args)
    else:
        results = measure(args, args.columns or COLUMNS)
    if not worker and not args.load:
        report(results, args)
    if not worker:
        print(f"load at the end: {C.load_note()}; total {time.perf_counter() - start:.0f} s")
    payload = {"benchmark": "faw", "load_case": args.load, "quick": args.quick,
               "isolate": args.isolate, "n": args.n, "batch": args.batch, "units": "us per call",
               "machine": C.machine(), "load": C.load_note(),
               "versions": C.versions("numpy", "numba", "jax", "jaxlib", "torch"),
               "results": results}
    C.save_json(args.json, payload) if not worker else _write(args.json, payload)
    return 0


def _write(path, payload):
    if path:
        with open(path, "w") as fh:
            json.dump(payload, fh, default=str)


if __name__ == "__main__":
    sys.exit(main())
