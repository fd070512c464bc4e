"""Eager autograd overhead: the PyTorch autograd tutorial programs in a loop.

    python bench/eager.py [--quick] [--json PATH]

Programs (each iteration builds its leaves, runs the ops and the backward pass, reads .grad):
  tutorial-1  x = ones(2,2, requires_grad=True); y = x + 2; z = y*y*3; out = z.mean();
              out.backward()
  tutorial-2  a, b, c = tensor([...], requires_grad=True); y = 3*a + 2*b*b + log(c);
              y.backward(v)
  tutorial-3  one step of "Learning PyTorch with Examples"' polynomial fit (x, y of 2000 points):
              loss = (a + b*x + c*x**2 + d*x**3 - y).pow(2).sum(); loss.backward(); then, under
              no_grad, p -= lr * p.grad and p.grad = None for the four parameters
  tutorial-4  one step of the same tutorial's two-layer network (x 64x1000, w1 1000x100,
              w2 100x10): loss = ((x @ w1).clamp(min=0) @ w2 - y).pow(2).sum(), backward, update

Columns: tapegrad eager Tensors, PyTorch eager, HIPS autograd's `grad` / `make_vjp` of the same
function (reference), and tapegrad's `grad` transform of the same function (a traced tape
replayed, for reference). Goals: tapegrad / PyTorch <= 0.5 for tutorials 1 and 2, <= 1 for 3
and 4. Tutorial-4's matrix products are BLAS calls: numpy's and numba's (scipy's) OpenBLAS keep
thread pools of their own, so run with --threads 1 on a small machine (see bench/README.md).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as C  # noqa: E402  (first: it applies --threads before numpy loads)
import numpy as np  # noqa: E402

# The goal for the tutorial programs (autograd overhead); the training steps are mostly
# numpy arithmetic and BLAS, where the goal is to be no slower than PyTorch.
GOALS_VS_TORCH = (0.5, 0.5, 1.0, 1.0)
A, B, CC = [1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [0.5, 1.5, 2.5]
V = [0.1, 1.0, 0.0001]
FIT_X = np.linspace(-np.pi, np.pi, 2000)
FIT_START, FIT_LR = (0.1, -0.2, 0.3, 0.05), 1e-6


MLP_SIZES, MLP_LR = (64, 1000, 100, 10), 1e-6


def _sgd(params, lr, no_grad):
    """The tutorials' update, the same for tapegrad and PyTorch."""
    with no_grad():
        for p in params:
            p -= lr * p.grad
            p.grad = None


def _mlp_data():
    rng = np.random.default_rng(0)
    n, d_in, h, d_out = MLP_SIZES
    return (rng.standard_normal((n, d_in)), rng.standard_normal((n, d_out)),
            rng.standard_normal((d_in, h)), rng.standard_normal((h, d_out)))


def mlp_step(tensor, no_grad, **dtype):
    """One training step of the two-layer network on weights kept between calls (the same
    source for tapegrad and PyTorch); returns the step's loss."""
    X, Y, W1, W2 = _mlp_data()
    x, y = tensor(X, **dtype), tensor(Y, **dtype)
    params = [tensor(W1, requires_grad=True, **dtype), tensor(W2, requires_grad=True, **dtype)]

    def step():
        w1, w2 = params
        loss = ((x @ w1).clamp(min=0) @ w2 - y).pow(2).sum()
        loss.backward()
        _sgd(params, MLP_LR, no_grad)
        return loss.detach()

    return step


def _functional_mlp(value_and_grad, maximum, total):
    X, Y, W1, W2 = _mlp_data()

    def loss(w1, w2):
        return total((maximum(X @ w1, 0.0) @ w2 - Y) ** 2)

    step_grad = value_and_grad(loss, argnums=(0, 1))
    params = [W1.copy(), W2.copy()]

    def step():
        value, grads = step_grad(*params)
        params[:] = [p - MLP_LR * g for p, g in zip(params, grads)]
        return value

    return step


def fit_step(lib, tensor, no_grad, **dtype):
    """One training step of the polynomial fit on parameters kept between calls; returns the
    step's loss (the first call's is checked). The same source for tapegrad and PyTorch."""
    x = tensor(FIT_X, **dtype)
    y = lib.sin(x)
    a, b, c, d = params = [tensor(p, requires_grad=True, **dtype) for p in FIT_START]

    def step():
        y_pred = a + b * x + c * x ** 2 + d * x ** 3
        loss = (y_pred - y).pow(2).sum()
        loss.backward()
        _sgd(params, FIT_LR, no_grad)
        return loss.detach()

    return step


# ---- the programs, once per library ---------------------------------------------------------

def tapegrad_programs(tg):
    v = tg.tensor(V)

    def tutorial1():
        x = tg.ones(2, 2, requires_grad=True)
        y = x + 2
        z = y * y * 3
        out = z.mean()
        out.backward()
        return x.grad

    def tutorial2():
        a = tg.tensor(A, requires_grad=True)
        b = tg.tensor(B, requires_grad=True)
        c = tg.tensor(CC, requires_grad=True)
        y = 3 * a + 2 * b * b + tg.log(c)
        y.backward(v)
        return a.grad, b.grad, c.grad

    return (tutorial1, tutorial2, fit_step(tg, tg.tensor, tg.no_grad),
            mlp_step(tg.tensor, tg.no_grad))


def tapegrad_transform_programs(tg):
    """The same functions through `tg.grad` / `tg.vjp` (trace once, replay the tape)."""
    g1 = tg.grad(lambda x: ((x + 2) * (x + 2) * 3).mean())
    ones = np.ones((2, 2))
    v = np.array(V)

    def f2(a, b, c):
        return tg.sum((3 * a + 2 * b * b + tg.log(c)) * v)

    g2 = tg.grad(f2, argnums=(0, 1, 2))
    a, b, c = np.array(A), np.array(B), np.array(CC)
    return ((lambda: g1(ones)), (lambda: g2(a, b, c)), _functional_fit(tg.value_and_grad, tg),
            _functional_mlp(tg.value_and_grad, tg.maximum, tg.sum))


def _functional_fit(value_and_grad, lib):
    """The fit step as a function of the parameters (tapegrad's grad transform, HIPS autograd)."""
    x, y = FIT_X, np.sin(FIT_X)

    def loss(a, b, c, d):
        return lib.sum((a + b * x + c * x ** 2 + d * x ** 3 - y) ** 2)

    step_grad = value_and_grad(loss, argnums=(0, 1, 2, 3))
    params = [np.array(p) for p in FIT_START]

    def step():
        value, grads = step_grad(*params)
        params[:] = [p - FIT_LR * g for p, g in zip(params, grads)]
        return value

    return step


def torch_programs(torch):
    v = torch.tensor(V, dtype=torch.float64)

    def tutorial1():
        x = torch.ones(2, 2, requires_grad=True)
        y = x + 2
        z = y * y * 3
        out = z.mean()
        out.backward()
        return x.grad

    def tutorial2():
        a = torch.tensor(A, dtype=torch.float64, requires_grad=True)
        b = torch.tensor(B, dtype=torch.float64, requires_grad=True)
        c = torch.tensor(CC, dtype=torch.float64, requires_grad=True)
        y = 3 * a + 2 * b * b + torch.log(c)
        y.backward(v)
        return a.grad, b.grad, c.grad

    return (tutorial1, tutorial2, fit_step(torch, torch.tensor, torch.no_grad, dtype=torch.float64),
            mlp_step(torch.tensor, torch.no_grad, dtype=torch.float64))


def hips_programs(autograd):
    anp = autograd.numpy

    def f1(x):
        y = x + 2
        z = y * y * 3
        return anp.mean(z)

    g1 = autograd.grad(f1)

    def f2(abc):
        a, b, c = abc
        return 3 * a + 2 * b * b + anp.log(c)

    make_vjp = autograd.make_vjp(f2)
    v = np.array(V)

    def tutorial1():
        return g1(np.ones((2, 2)))

    def tutorial2():
        vjp, _ = make_vjp((np.array(A), np.array(B), np.array(CC)))
        return vjp(v)

    def value_and_grad(f, argnums):
        vg = autograd.value_and_grad(lambda p: f(*p))
        return lambda *p: vg(p)

    return (tutorial1, tutorial2, _functional_fit(value_and_grad, anp),
            _functional_mlp(value_and_grad, anp.maximum, anp.sum))


# ---- expected gradients ---------------------------------------------------------------------

def expected():
    a, b, c, v = (np.array(u) for u in (A, B, CC, V))
    a0, b0, c0, d0 = FIT_START
    x = FIT_X
    fit_loss = np.sum((a0 + b0 * x + c0 * x ** 2 + d0 * x ** 3 - np.sin(x)) ** 2)
    X, Y, W1, W2 = _mlp_data()
    mlp_loss = np.sum((np.maximum(X @ W1, 0) @ W2 - Y) ** 2)
    return np.full((2, 2), 4.5), (3 * v, 4 * b * v, v / c), fit_loss, mlp_loss


def main():
    args = C.options(__doc__.splitlines()[0])
    import tapegrad as tg
    torch = C.optional("torch")
    autograd = C.optional("autograd")
    if autograd is not None:
        import autograd.numpy  # noqa: F401  (the submodule autograd.numpy)
    if torch is not None:
        torch.set_num_threads(1)       # tiny tensors: threads only add overhead
    print(f"eager autograd overhead ({'quick' if args.quick else 'full'} run), "
          f"{C.load_note()}")
    print("versions:", C.versions("numpy", "numba", "torch", "autograd"))
    print()

    want = expected()
    impls = {
        "tapegrad": tapegrad_programs(tg),
        "PyTorch": torch_programs(torch) if torch is not None else (None,) * 4,
        "HIPS autograd": hips_programs(autograd) if autograd is not None else (None,) * 4,
        "tapegrad grad()": tapegrad_transform_programs(tg),
    }
    names = ["tutorial-1 (7 ops + backward)", "tutorial-2 (3 leaves, backward(v))",
             "tutorial-3 (polynomial fit step, 2000 points)",
             "tutorial-4 (two-layer network step, 64x1000x100x10)"]
    results = {n: {} for n in names}
    for k, name in enumerate(names):
        results[name] = C.measure_all(
            {impl: (programs[k], C.close(want[k])) for impl, programs in impls.items()}, args)

    columns = list(impls) + ["tapegrad/PyTorch", "tapegrad/HIPS"]
    rows = []
    for name in names:
        r = dict(results[name])
        r["tapegrad/PyTorch"] = C.fmt_ratio(C.ratio(r["tapegrad"], r["PyTorch"]))
        r["tapegrad/HIPS"] = C.fmt_ratio(C.ratio(r["tapegrad"], r["HIPS autograd"]))
        rows.append((name, r))
    C.table("per iteration", columns, rows, unit="µs per iteration")

    ratios = [C.ratio_line(f"tapegrad/PyTorch {name.split()[0]}",
                           C.ratio(results[name]["tapegrad"], results[name]["PyTorch"]), goal)
              for name, goal in zip(names, GOALS_VS_TORCH)]
    C.save_json(args.json, {"benchmark": "eager", "quick": args.quick, "machine": C.machine(),
                            "load": C.load_note(),
                            "versions": C.versions("numpy", "numba", "torch", "autograd"),
                            "unit": "us per iteration", "results": results, "ratios": ratios})
    return 1 if results[names[0]]["tapegrad"] is None else 0


if __name__ == "__main__":
    sys.exit(main())
