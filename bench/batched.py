"""Batched gradients: one workload per process, tapegrad's vmap(grad) against its peers.

    python bench/batched.py --workload NAME [--quick] [--json PATH] [--threads N]

`bench/run.py` runs every workload, each in a fresh process, and prints the table; this script
measures one (NAME: see WORKLOADS, plus "scaling" and "single").

Batched workloads (ns per point; every result checked against the hand-written gradient first):
* rosenbrock: Rosenbrock n=10, B=100,000 points.
* mlp: tanh MLP 8-16-1 (weights closed over), gradient w.r.t. its input, B=100,000.
* lj16: Lennard-Jones energy of 16 atoms, pairs i<j by integer-array indexing, B=10,000.
Columns: tapegrad `vmap(grad(f), fuse=True)` (the fused tier, which the default fuse="auto"
reaches once the interpreter has run as long as the compile takes: compiled by the warm-up, as
JAX's `jit` is); tapegrad interp, `vmap(grad(f), fuse=False)` (the column-layout interpreter,
no per-function compile); JAX `jit(vmap(grad(f)))` (x64, device-array input,
`.block_until_ready()`); PyTorch `torch.func.vmap(torch.func.grad(f))`; HIPS autograd
(a Python loop of `grad(f)` over a sample of points, per point); hand-written
`@numba.njit(parallel=True)` gradient (prange over points).

"scaling": tapegrad's vmap(grad(rosenbrock n=10), fuse=True) at B = 1e3 ... 1e6 (1e7 in full mode).
"single": the single-call workloads of bench/transforms.py (one gradient per call, µs), when
that module provides its case functions; skipped with a note otherwise.
"""
import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

import _common as C  # noqa: E402  (first: it applies --threads before numpy loads)
import numpy as np  # noqa: E402

N_ROSENBROCK = 10
N_ATOMS = 16
MLP_SIZES = (8, 16, 1)
WORKLOADS = {
    "rosenbrock": ("Rosenbrock n=10", 100_000),
    "mlp": ("tanh MLP 8-16-1, grad wrt input", 100_000),
    "lj16": ("Lennard-Jones 16 atoms (pair indexing)", 10_000),
}
HIPS_SAMPLE = {"rosenbrock": 300, "mlp": 200, "lj16": 50}
SCALING_SIZES = [1_000, 10_000, 100_000, 1_000_000, 10_000_000]
COLUMNS = ["tapegrad", "tapegrad interp", "JAX", "PyTorch", "HIPS autograd", "hand numba"]


# ---- data -------------------------------------------------------------------------------------

def rosenbrock_points(B, rng):
    return rng.uniform(-1.5, 1.5, (B, N_ROSENBROCK))


def mlp_weights(rng):
    n_in, n_hidden, n_out = MLP_SIZES
    return (rng.standard_normal((n_in, n_hidden)) / np.sqrt(n_in),
            0.1 * rng.standard_normal(n_hidden),
            rng.standard_normal((n_hidden, n_out)) / np.sqrt(n_hidden),
            0.1 * rng.standard_normal(n_out))


def mlp_points(B, rng):
    return rng.standard_normal((B, MLP_SIZES[0]))


PAIR_I, PAIR_J = np.triu_indices(N_ATOMS, 1)       # 120 pairs


def lj_points(B, rng):
    """Configurations around a 2x2x4 lattice at the pair-potential minimum distance."""
    grid = np.array([[i, j, k] for i in range(2) for j in range(2) for k in range(4)], float)
    lattice = grid * 2 ** (1 / 6)
    return (lattice[None] + 0.05 * rng.standard_normal((B, N_ATOMS, 3))).reshape(B, 3 * N_ATOMS)


# ---- the function once per library ------------------------------------------------------------

def rosenbrock(m):
    def f(x):
        return m.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)
    return f


def mlp(m, weights):
    W1, b1, W2, b2 = weights

    def f(x):
        return m.sum(m.tanh(x @ W1 + b1) @ W2 + b2)
    return f


def lj(m, I, J, reshape):
    def f(p):
        P = reshape(p, (N_ATOMS, 3))
        d = P[I] - P[J]
        r2 = m.sum(d * d, 1)
        inv6 = 1.0 / r2 ** 3
        return m.sum(4.0 * (inv6 * inv6 - inv6))
    return f


# ---- hand-written gradients: @njit(parallel=True), prange over points ------------------------

def hand_kernels():
    import numba
    from numba import prange

    jit = numba.njit(parallel=True, fastmath=True, cache=True)

    @jit
    def rosenbrock_grad(X):
        B, n = X.shape
        G = np.zeros((B, n))
        for q in prange(B):
            x = X[q]
            g = G[q]
            for i in range(n - 1):
                d = x[i + 1] - x[i] * x[i]
                g[i] += -400.0 * x[i] * d - 2.0 * (1.0 - x[i])
                g[i + 1] += 200.0 * d
        return G

    @jit
    def mlp_grad(X, W1, b1, W2):
        B, n_in = X.shape
        n_hidden = W1.shape[1]
        G = np.zeros((B, n_in))
        for q in prange(B):
            for j in range(n_hidden):
                a = b1[j]
                for i in range(n_in):
                    a += X[q, i] * W1[i, j]
                h = np.tanh(a)
                s = (1.0 - h * h) * W2[j, 0]
                for i in range(n_in):
                    G[q, i] += s * W1[i, j]
        return G

    @jit
    def lj_grad(X, I, J):
        B = X.shape[0]
        G = np.zeros_like(X)
        for q in prange(B):
            p = X[q]
            g = G[q]
            for k in range(I.shape[0]):
                a, b = 3 * I[k], 3 * J[k]
                d0, d1, d2 = p[a] - p[b], p[a + 1] - p[b + 1], p[a + 2] - p[b + 2]
                r2 = d0 * d0 + d1 * d1 + d2 * d2
                inv6 = 1.0 / (r2 * r2 * r2)
                c = 2.0 * 4.0 * (-6.0 * inv6 * inv6 + 3.0 * inv6) / r2
                g[a] += c * d0
                g[a + 1] += c * d1
                g[a + 2] += c * d2
                g[b] -= c * d0
                g[b + 1] -= c * d1
                g[b + 2] -= c * d2
        return G

    return {"rosenbrock": rosenbrock_grad, "mlp": mlp_grad, "lj16": lj_grad}


# ---- one workload -----------------------------------------------------------------------------

def _sample_loop(grad_fn, points):
    def run():
        return np.stack([np.asarray(grad_fn(x)) for x in points])
    return run


def batched_cases(name, B, args, libs):
    """{column: (fn, check)} and the per-call divisors {column: points per call}."""
    tg, jax, torch, autograd, numba = libs
    rng = np.random.default_rng(0)
    if name == "rosenbrock":
        X = rosenbrock_points(B, rng)
    elif name == "mlp":
        weights = mlp_weights(rng)
        X = mlp_points(B, rng)
    else:
        X = lj_points(B, rng)
    if numba is None:
        raise RuntimeError("numba is needed for the reference gradient")
    hand = hand_kernels()
    hand_args = {"rosenbrock": lambda: (X,),
                 "mlp": lambda: (X, weights[0], weights[1], weights[2]),
                 "lj16": lambda: (X, PAIR_I.astype(np.int64), PAIR_J.astype(np.int64))}[name]()
    want = hand[name](*hand_args)
    check = C.close(want, rtol=1e-8, atol=1e-10)
    n_sample = max(5, HIPS_SAMPLE[name] // (10 if args.quick else 1))
    sample = X[:n_sample]
    check_sample = C.close(want[:n_sample], rtol=1e-8, atol=1e-10)
    cases, per_call = {}, {c: B for c in COLUMNS}
    per_call["HIPS autograd"] = n_sample

    def of(m, reshape=None, convert=None, index=None):
        if name == "rosenbrock":
            return rosenbrock(m)
        if name == "mlp":
            return mlp(m, tuple(map(convert, weights)) if convert else weights)
        I, J = index if index is not None else (PAIR_I, PAIR_J)
        return lj(m, I, J, reshape)

    # tapegrad: the fused tier (its compile is in the warm-up, timed below) and the interpreter
    f = of(tg, reshape=tg.reshape)
    g = tg.vmap(tg.grad(f), fuse=True)
    start = time.perf_counter()
    g(X[:1])
    print(f"[{name}] tapegrad first call (trace + fused compile, or its cache): "
          f"{time.perf_counter() - start:.2f} s", flush=True)
    cases["tapegrad"] = (lambda: g(X), check)
    g_interp = tg.vmap(tg.grad(f), fuse=False)
    cases["tapegrad interp"] = (lambda: g_interp(X), check)
    # JAX
    if jax is not None:
        import jax.numpy as jnp
        jf = of(jnp, reshape=jnp.reshape, convert=jnp.asarray,
                index=(jnp.asarray(PAIR_I), jnp.asarray(PAIR_J)))
        jg = jax.jit(jax.vmap(jax.grad(jf)))
        Xj = jnp.asarray(X)
        cases["JAX"] = (lambda: jg(Xj).block_until_ready(), check)
    else:
        cases["JAX"] = None
    # PyTorch
    if torch is not None and hasattr(torch, "func"):
        tf = of(torch, reshape=torch.reshape, convert=torch.from_numpy,
                index=(torch.from_numpy(PAIR_I.astype(np.int64)),
                       torch.from_numpy(PAIR_J.astype(np.int64))))
        tgf = torch.func.vmap(torch.func.grad(tf))
        Xt = torch.from_numpy(X)

        def torch_run():
            with torch.no_grad():
                return tgf(Xt)
        cases["PyTorch"] = (torch_run, check)
    else:
        cases["PyTorch"] = None
    # HIPS autograd: a Python loop over a sample
    if autograd is not None:
        import autograd.numpy as anp
        af = of(anp, reshape=anp.reshape)
        cases["HIPS autograd"] = (_sample_loop(autograd.grad(af), sample), check_sample)
    else:
        cases["HIPS autograd"] = None
    cases["hand numba"] = (lambda: hand[name](*hand_args), check)
    return cases, per_call


def libraries(args):
    """The libraries of the columns measured (None: not installed or not asked for); numba
    always, for the hand-written reference gradients."""
    def wanted(column, module):
        return C.optional(module) if not args.columns or column in args.columns else None

    import tapegrad as tg
    jax = wanted("JAX", "jax")
    if jax is not None:
        jax.config.update("jax_enable_x64", True)
    torch = wanted("PyTorch", "torch")
    if torch is not None and args.threads is not None:
        torch.set_num_threads(args.threads)
    return tg, jax, torch, wanted("HIPS autograd", "autograd"), C.optional("numba")


def _select(cases, args):
    """Only the columns asked for (the others stay blank and their libraries unused)."""
    if not args.columns:
        return cases
    return {c: (case if c in args.columns else None) for c, case in cases.items()}


def run_workload(name, args):
    title, B = WORKLOADS[name]
    libs = libraries(args)
    cases, per_call = batched_cases(name, B, args, libs)
    cases = _select(cases, args)
    us = C.measure_all(cases, args)
    ns = {c: (None if us.get(c) is None else us[c] * 1e3 / per_call[c]) for c in COLUMNS}
    return {"workload": name, "title": title, "B": B, "unit": "ns per point",
            "ns_per_point": ns, "us_per_call": us, "points_per_call": per_call,
            "hips_sample": per_call["HIPS autograd"]}


def run_scaling(args):
    import tapegrad as tg
    f = rosenbrock(tg)
    g = tg.vmap(tg.grad(f), fuse=True)
    sizes = SCALING_SIZES if not args.quick else SCALING_SIZES[:-1]
    rng = np.random.default_rng(1)
    g(rosenbrock_points(10, rng))          # trace and load the interpreters first
    out = []
    for B in sizes:
        X = rosenbrock_points(B, rng)
        want = hand_kernels()["rosenbrock"](X[:1000])
        got = g(X)
        assert np.allclose(got[:1000], want, rtol=1e-9, atol=1e-10)
        del got
        us = C.measure_all({"tapegrad": lambda: g(X)}, _scaled(args, B))["tapegrad"]
        out.append({"B": B, "seconds": us * 1e-6, "ns_per_point": us * 1e3 / B})
        print(f"  B={B:>10,}: {us * 1e-3:9.3f} ms per call, {us * 1e3 / B:7.2f} ns per point",
              flush=True)
        X = None                           # free the batch before the next, larger one
    logB = np.log10([r["B"] for r in out])
    logT = np.log10([r["seconds"] for r in out])
    slope_all = float(np.polyfit(logB, logT, 1)[0])
    big = [i for i, r in enumerate(out) if r["B"] >= 100_000]
    slope_big = float(np.polyfit(logB[big], logT[big], 1)[0]) if len(big) >= 2 else None
    return {"workload": "scaling", "title": "tapegrad vmap(grad(Rosenbrock n=10)) vs batch size",
            "points": out, "slope": slope_all, "slope_from_1e5": slope_big}


def _scaled(args, B):
    """Fewer rounds for the big batches (one call of 1e7 points takes a while)."""
    a = argparse.Namespace(**vars(args))
    if B >= 1_000_000:
        a.repeat = 3 if not args.quick else 2
        a.warmup_s = 0.0
    return a


# ---- single-call workloads, from bench/transforms.py --------------------------------------------

_TRANSFORM_FUNCTIONS = ("rosenbrock_point", "logreg_data", "tapegrad_cases", "jax_cases",
                        "torch_cases", "hips_cases", "hand_numba", "logreg_grad_numpy")


def run_single(args):
    try:
        import transforms as T
    except Exception as err:                                 # noqa: BLE001
        return {"workload": "single", "skipped": f"bench/transforms.py not importable: {err}"}
    missing = [n for n in _TRANSFORM_FUNCTIONS if not hasattr(T, n)]
    if missing:
        return {"workload": "single",
                "skipped": f"bench/transforms.py lacks {', '.join(missing)}"}
    tg, jax, torch, autograd, numba = libraries(args)
    x = T.rosenbrock_point()
    X, y, w = T.logreg_data()
    hand_rosen, hand_logreg = T.hand_numba() if numba is not None else (None, None)
    want_rosen = hand_rosen(x)
    want_logreg = T.logreg_grad_numpy(X, y, w)
    ok_r, ok_l = C.close(want_rosen, rtol=1e-9), C.close(want_logreg, rtol=1e-9)
    tg_r, tg_l = T.tapegrad_cases(tg, x, X, y)
    rows = {"Rosenbrock n=1000": {"tapegrad": (lambda: tg_r(x), ok_r)},
            "logistic regression 10000x100": {"tapegrad": (lambda: tg_l(w), ok_l)}}
    r, lg = rows["Rosenbrock n=1000"], rows["logistic regression 10000x100"]
    if jax is not None:
        jr, jl = T.jax_cases(jax, X, y)
        xj, wj = jax.numpy.asarray(x), jax.numpy.asarray(w)
        r["JAX"] = (lambda: jr(xj).block_until_ready(), ok_r)
        lg["JAX"] = (lambda: jl(wj).block_until_ready(), ok_l)
    if torch is not None:
        tr, tl = T.torch_cases(torch, X, y)
        xt = torch.from_numpy(x.copy()).requires_grad_()
        wt = torch.from_numpy(w.copy()).requires_grad_()
        r["PyTorch"] = (lambda: tr(xt), ok_r)
        lg["PyTorch"] = (lambda: tl(wt), ok_l)
    if autograd is not None:
        hr, hl = T.hips_cases(autograd, X, y)
        r["HIPS autograd"] = (lambda: hr(x), ok_r)
        lg["HIPS autograd"] = (lambda: hl(w), ok_l)
    r["hand numba"] = (lambda: hand_rosen(x), ok_r)
    lg["hand numba"] = (lambda: hand_logreg(X, y, w), ok_l)
    results = {label: C.measure_all(_select(cases, args), args) for label, cases in rows.items()}
    return {"workload": "single", "unit": "us per call", "us_per_call": results,
            "note": "PyTorch column: eager torch.autograd.grad (one call); hand numba: "
                    "single-threaded @njit from bench/transforms.py"}


# ---- main ---------------------------------------------------------------------------------------

def options():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", required=True,
                        choices=list(WORKLOADS) + ["scaling", "single"])
    parser.add_argument("--quick", action="store_true", help="few repetitions (smoke test)")
    parser.add_argument("--json", metavar="PATH", help="write the result as JSON")
    parser.add_argument("--threads", type=int, metavar="N", help="cap every thread pool at N")
    parser.add_argument("--columns", nargs="+", choices=COLUMNS, metavar="COLUMN",
                        help="measure only these columns (default: all); run.py --isolate runs "
                             "each column in its own process this way")
    args = parser.parse_args()
    args.batch_s = 0.002 if args.quick else 0.02
    args.repeat = 3 if args.quick else 9
    args.warmup_s = 0.005 if args.quick else 0.05
    return args


def main():
    args = options()
    start = time.perf_counter()
    if args.workload == "scaling":
        result = run_scaling(args)
    elif args.workload == "single":
        result = run_single(args)
    else:
        result = run_workload(args.workload, args)
    result.update(quick=args.quick, threads=args.threads, load=C.load_note(),
                  wall_s=time.perf_counter() - start)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2, default=str)
    else:
        print(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
