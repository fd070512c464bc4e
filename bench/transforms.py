"""Function transforms: one gradient per call, and the time to the first gradient.

    python bench/transforms.py [--quick] [--json PATH]

(a) Rosenbrock, n = 1000:  f(x) = sum(100 (x[1:] - x[:-1]**2)**2 + (1 - x[:-1])**2)
(b) Logistic regression:   L(w) = mean(log1p(exp(-y * (X @ w)))), X 10000 x 100 and y = +-1
    closed over (constants of the traced function, as in `jax.jit`).
Columns: `tapegrad.grad`, `jax.jit(jax.grad(f))` (x64, `.block_until_ready()`, a device array
input), PyTorch eager (`torch.autograd.grad`), HIPS `autograd.grad`, hand-written `@numba.njit`
gradient, and for (b) hand-written numpy (`X @ w`, `X.T @ r`). Every result is checked against
the hand-written gradient before it is timed.
Goals: (a) tapegrad <= 0.6x JAX; (b) tapegrad <= 1.1x hand-written numpy.

(c) Time to the first gradient of a never-seen function, each measured in fresh processes
(median of 3): "library warm" = the library imported and one gradient of another function taken
first (tapegrad's interpreters loaded from numba's cache, JAX's backend initialised), then only
the first call of `grad(f)` / `jit(grad(f))(x).block_until_ready()` of a freshly defined lambda is
timed; "in a fresh process" = the first gradient right after the import; "import + first
gradient" = from before `import numpy` to the first gradient (Rosenbrock). Goals: tapegrad <= 1/20
of JAX's (library warm); import + first gradient <= 0.4 s. Also the cold `import` times.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as C  # noqa: E402  (first: it applies --threads before numpy loads)
import numpy as np  # noqa: E402

GOAL_ROSENBROCK_VS_JAX = 0.6
GOAL_LOGREG_VS_NUMPY = 1.1
GOAL_FIRST_GRAD_VS_JAX = 1 / 20
GOAL_IMPORT_AND_FIRST_S = 0.4        # a fresh process: import + first gradient, warm cache
IMPORT_AND_FIRST = "import + first gradient"
N_ROSENBROCK = 1000
N_SAMPLES, N_FEATURES = 10_000, 100


# ---- data -----------------------------------------------------------------------------------

def rosenbrock_point():
    return np.linspace(-1.2, 1.3, N_ROSENBROCK)


def logreg_data():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((N_SAMPLES, N_FEATURES))
    w_true = rng.standard_normal(N_FEATURES) / np.sqrt(N_FEATURES)
    y = np.where(X @ w_true + 0.5 * rng.standard_normal(N_SAMPLES) > 0, 1.0, -1.0)
    w = 0.1 * rng.standard_normal(N_FEATURES)
    return X, y, w


# ---- hand-written references ------------------------------------------------------------------

def hand_numba():
    import numba

    @numba.njit(fastmath=True)
    def rosenbrock_grad(x):
        n = x.shape[0]
        g = np.zeros(n)
        for i in range(n - 1):
            d = x[i + 1] - x[i] * x[i]
            g[i] += -400.0 * x[i] * d - 2.0 * (1.0 - x[i])
            g[i + 1] += 200.0 * d
        return g

    @numba.njit(fastmath=True)
    def logreg_grad(X, y, w):
        n, d = X.shape
        g = np.zeros(d)
        for i in range(n):
            m = 0.0
            for j in range(d):
                m += X[i, j] * w[j]
            m *= y[i]
            s = np.exp(-m)
            r = -y[i] * s / (1.0 + s) / n
            for j in range(d):
                g[j] += r * X[i, j]
        return g

    return rosenbrock_grad, logreg_grad


def logreg_grad_numpy(X, y, w):
    m = y * (X @ w)
    s = np.exp(-m)
    r = (-1.0 / len(y)) * y * s / (1.0 + s)
    return X.T @ r


# ---- the gradient functions of every peer ------------------------------------------------------

def tapegrad_cases(tg, x, X, y):
    def rosenbrock(x):
        return tg.sum(100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)

    def loss(w):
        m = y * (X @ w)
        return tg.mean(tg.log1p(tg.exp(-m)))

    return tg.grad(rosenbrock), tg.grad(loss)


def jax_cases(jax, X, y):
    import jax.numpy as jnp

    def rosenbrock(x):
        return jnp.sum(100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)

    Xj, yj = jnp.asarray(X), jnp.asarray(y)

    def loss(w):
        m = yj * (Xj @ w)
        return jnp.mean(jnp.log1p(jnp.exp(-m)))

    return jax.jit(jax.grad(rosenbrock)), jax.jit(jax.grad(loss))


def torch_cases(torch, X, y):
    def rosenbrock(x):
        return torch.sum(100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)

    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)

    def loss(w):
        m = yt * (Xt @ w)
        return torch.mean(torch.log1p(torch.exp(-m)))

    def grad_of(f):
        def g(x):
            return torch.autograd.grad(f(x), x)[0]
        return g

    return grad_of(rosenbrock), grad_of(loss)


def hips_cases(autograd, X, y):
    import autograd.numpy as anp

    def rosenbrock(x):
        return anp.sum(100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)

    def loss(w):
        m = y * anp.dot(X, w)
        return anp.mean(anp.log1p(anp.exp(-m)))

    return autograd.grad(rosenbrock), autograd.grad(loss)


# ---- (c) first gradient and import times, in fresh processes ---------------------------------

_FIRST_TAPEGRAD = """
import time
t0 = time.perf_counter()
import numpy as np
import tapegrad as tg
{warm}
{setup}
f = lambda x: {body}
t = time.perf_counter()
g = tg.grad(f)(x)
dt = time.perf_counter() - {start}
assert np.all(np.isfinite(g))
print(dt)
"""
_FIRST_JAX = """
import time
t0 = time.perf_counter()
import numpy as np
import jax
jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp
tg = jnp
{warm}
{setup}
x = jnp.asarray(x)
f = lambda x: {body}
t = time.perf_counter()
g = jax.jit(jax.grad(f))(x).block_until_ready()
dt = time.perf_counter() - {start}
assert np.all(np.isfinite(g))
print(dt)
"""
_WARM_TAPEGRAD = "tg.grad(lambda v: tg.sum(v * v))(np.ones(3))"
_WARM_JAX = "jax.jit(jax.grad(lambda v: jnp.sum(v * v)))(jnp.ones(3)).block_until_ready()"
# The same source serves both libraries: `tg` is `jax.numpy` in the JAX script.
_FRESH_FUNCTIONS = {
    "Rosenbrock n=1000": (
        f"x = np.linspace(-1.2, 1.3, {N_ROSENBROCK})",
        "tg.sum(100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)"),
    "logistic regression 10000x100": (
        "rng = np.random.default_rng(0)\n"
        f"X = rng.standard_normal(({N_SAMPLES}, {N_FEATURES}))\n"
        f"y = np.where(rng.standard_normal({N_SAMPLES}) > 0, 1.0, -1.0)\n"
        f"x = 0.1 * rng.standard_normal({N_FEATURES})",
        "tg.mean(tg.log1p(tg.exp(-(y * (X @ x)))))"),
}
_IMPORT = "import time\nt = time.perf_counter()\nimport {module}\nprint(time.perf_counter() - t)"


def first_gradient(args, have_jax):
    """{row: {column: seconds or None}} for the first-gradient table, and the import table."""
    runs = 1 if args.quick else 3
    # an untimed run first, so that numba's on-disk cache of the interpreters is populated
    C.run_fresh(_FIRST_TAPEGRAD.format(warm="", setup=_FRESH_FUNCTIONS["Rosenbrock n=1000"][0],
                                       body="tg.sum(x * x)", start="t"), 1)
    functions = dict(list(_FRESH_FUNCTIONS.items())[:1]) if args.quick else _FRESH_FUNCTIONS
    # (label, warm, timed from): "import + first gradient" times the import of numpy and the
    # library too (Rosenbrock only: the logistic regression's setup draws its data first)
    variants = [("library warm", True, "t")] + ([] if args.quick else [
        ("in a fresh process", False, "t"), (IMPORT_AND_FIRST, False, "t0")])
    rows = {}
    for name, (setup, body) in functions.items():
        for label, warm, start in variants:
            if label == IMPORT_AND_FIRST and name != "Rosenbrock n=1000":
                continue
            row = rows[f"{name}, {label}"] = {}
            code = _FIRST_TAPEGRAD.format(warm=_WARM_TAPEGRAD if warm else "", setup=setup,
                                          body=body, start=start)
            row["tapegrad"] = _median(C.run_fresh(code, runs))
            row["JAX jit(grad)"] = None
            if have_jax:
                code = _FIRST_JAX.format(warm=_WARM_JAX if warm else "", setup=setup, body=body,
                                         start=start)
                row["JAX jit(grad)"] = _median(C.run_fresh(code, runs))
    imports = {}
    for module in ["tapegrad", "numba", "jax", "torch", "autograd"]:
        if module != "tapegrad" and C.optional_spec(module) is None:
            imports[module] = None
            continue
        if not args.quick:
            C.run_fresh(_IMPORT.format(module=module), 1)  # untimed: fills the OS file cache
        imports[module] = _median(C.run_fresh(_IMPORT.format(module=module), runs))
    return rows, imports


def _median(xs):
    return None if not xs else float(np.median(xs))


# ---- main -----------------------------------------------------------------------------------

def main():
    args = C.options(__doc__.splitlines()[0])
    import tapegrad as tg
    jax = C.optional("jax")
    if jax is not None:
        jax.config.update("jax_enable_x64", True)
    torch = C.optional("torch")
    if torch is not None and args.threads is not None:
        torch.set_num_threads(args.threads)
    autograd = C.optional("autograd")
    numba = C.optional("numba")
    print(f"function transforms ({'quick' if args.quick else 'full'} run), "
          f"threads: {args.threads or 'library defaults'}, {C.load_note()}")
    print("versions:", C.versions("numpy", "numba", "jax", "jaxlib", "torch", "autograd"))
    print()

    x = rosenbrock_point()
    X, y, w = logreg_data()
    hand_rosen, hand_logreg = hand_numba() if numba is not None else (None, None)
    want_rosen = hand_rosen(x) if hand_rosen else _rosenbrock_grad_numpy(x)
    want_logreg = logreg_grad_numpy(X, y, w)
    ok_rosen, ok_logreg = C.close(want_rosen, rtol=1e-9), C.close(want_logreg, rtol=1e-9)

    tg_rosen, tg_logreg = tapegrad_cases(tg, x, X, y)
    cases_rosen = {"tapegrad": (lambda: tg_rosen(x), ok_rosen)}
    cases_logreg = {"tapegrad": (lambda: tg_logreg(w), ok_logreg)}
    if jax is not None:
        j_rosen, j_logreg = jax_cases(jax, X, y)
        xj, wj = jax.numpy.asarray(x), jax.numpy.asarray(w)
        cases_rosen["JAX jit(grad)"] = (lambda: j_rosen(xj).block_until_ready(), ok_rosen)
        cases_logreg["JAX jit(grad)"] = (lambda: j_logreg(wj).block_until_ready(), ok_logreg)
    if torch is not None:
        t_rosen, t_logreg = torch_cases(torch, X, y)
        xt = torch.from_numpy(x.copy()).requires_grad_()
        wt = torch.from_numpy(w.copy()).requires_grad_()
        cases_rosen["PyTorch eager"] = (lambda: t_rosen(xt), ok_rosen)
        cases_logreg["PyTorch eager"] = (lambda: t_logreg(wt), ok_logreg)
    if autograd is not None:
        h_rosen, h_logreg = hips_cases(autograd, X, y)
        cases_rosen["HIPS autograd"] = (lambda: h_rosen(x), ok_rosen)
        cases_logreg["HIPS autograd"] = (lambda: h_logreg(w), ok_logreg)
    if hand_rosen is not None:
        cases_rosen["hand numba"] = (lambda: hand_rosen(x), ok_rosen)
        cases_logreg["hand numba"] = (lambda: hand_logreg(X, y, w), ok_logreg)
    cases_logreg["hand numpy"] = (lambda: logreg_grad_numpy(X, y, w), ok_logreg)

    results = {"Rosenbrock n=1000": C.measure_all(cases_rosen, args),
               "logistic regression 10000x100": C.measure_all(cases_logreg, args)}

    columns = ["tapegrad", "JAX jit(grad)", "PyTorch eager", "HIPS autograd", "hand numba",
               "hand numpy", "tg/JAX", "tg/hand"]
    rows = []
    for name, r in results.items():
        hand = r.get("hand numpy") or r.get("hand numba")
        cells = dict(r)
        cells["tg/JAX"] = C.fmt_ratio(C.ratio(r["tapegrad"], r.get("JAX jit(grad)")))
        cells["tg/hand"] = C.fmt_ratio(C.ratio(r["tapegrad"], hand))
        rows.append((name, cells))
    C.table("one gradient", columns, rows)
    print("tg/hand: against hand numpy where there is one, else hand numba")
    rr, rl = results["Rosenbrock n=1000"], results["logistic regression 10000x100"]
    ratios = [
        C.ratio_line("tapegrad/JAX Rosenbrock", C.ratio(rr["tapegrad"], rr.get("JAX jit(grad)")),
                     GOAL_ROSENBROCK_VS_JAX),
        C.ratio_line("tapegrad/hand-numba Rosenbrock",
                     C.ratio(rr["tapegrad"], rr.get("hand numba"))),
        C.ratio_line("tapegrad/JAX logistic", C.ratio(rl["tapegrad"], rl.get("JAX jit(grad)"))),
        C.ratio_line("tapegrad/hand-numpy logistic",
                     C.ratio(rl["tapegrad"], rl.get("hand numpy")), GOAL_LOGREG_VS_NUMPY),
        C.ratio_line("tapegrad/hand-numba logistic",
                     C.ratio(rl["tapegrad"], rl.get("hand numba"))),
    ]
    print(flush=True)

    first, imports = first_gradient(args, jax is not None)
    rows = []
    for name, r in first.items():
        cells = dict(r)
        cells["tg/JAX"] = C.fmt_ratio(C.ratio(r["tapegrad"], r["JAX jit(grad)"]))
        rows.append((name, cells))
    C.table("first gradient of a fresh function", ["tapegrad", "JAX jit(grad)", "tg/JAX"],
            rows, unit=f"ms, median of {1 if args.quick else 3} fresh processes", fmt=C.fmt_ms)
    key = "Rosenbrock n=1000, library warm"
    ratios.append(C.ratio_line("tapegrad/JAX first gradient (Rosenbrock, library warm)",
                               C.ratio(first[key]["tapegrad"], first[key]["JAX jit(grad)"]),
                               GOAL_FIRST_GRAD_VS_JAX))
    total = first.get(f"Rosenbrock n=1000, {IMPORT_AND_FIRST}", {}).get("tapegrad")
    if total is not None:
        met = "met" if total <= GOAL_IMPORT_AND_FIRST_S else "MISSED"
        print(f"tapegrad {IMPORT_AND_FIRST} (Rosenbrock, fresh process, warm cache): "
              f"{total * 1e3:.0f} ms (goal <= {GOAL_IMPORT_AND_FIRST_S * 1e3:.0f} ms: {met})")
    print()
    C.table("cold import", list(imports), [("import", imports)],
            unit=f"ms, median of {1 if args.quick else 3} fresh processes", fmt=C.fmt_ms)

    C.save_json(args.json, {
        "benchmark": "transforms", "quick": args.quick, "threads": args.threads,
        "machine": C.machine(),
        "load": C.load_note(),
        "versions": C.versions("numpy", "numba", "jax", "jaxlib", "torch", "autograd"),
        "unit": "us per call; first_gradient and imports in seconds",
        "results": results, "first_gradient": first, "imports": imports, "ratios": ratios})
    return 0 if rr["tapegrad"] is not None and rl["tapegrad"] is not None else 1


def _rosenbrock_grad_numpy(x):
    d = x[1:] - x[:-1] ** 2
    g = np.zeros_like(x)
    g[:-1] = -400 * x[:-1] * d - 2 * (1 - x[:-1])
    g[1:] += 200 * d
    return g


if __name__ == "__main__":
    sys.exit(main())
