"""Finite-difference checks of tapegrad's derivatives: `gradcheck` and its error.

    from tapegrad.testing import gradcheck
    gradcheck(lambda x, y: (x * y).sin(), [tapegrad.randn(3, 4), tapegrad.randn(4)])

`gradcheck` compares every derivative rule tapegrad runs (reverse mode, forward mode and the
forward-over-reverse second-order sweep) with central differences of the eager forward values,
in float64. It is how a new primitive proves its rules right (see docs/design.md, "Adding a
primitive").
"""
import numpy as np

from . import autograd
from .eager import ops
from .eager.graph import no_grad
from .eager.tensor import Tensor

__all__ = ["GradcheckError", "gradcheck"]


class GradcheckError(AssertionError):
    """A derivative that disagrees with finite differences; the message says which and by how
    much. `check`, `input`, `analytic` and `numeric` hold the details."""

    def __init__(self, message, check=None, input=None, analytic=None, numeric=None):
        super().__init__(message)
        self.check = check
        self.input = input
        self.analytic = analytic
        self.numeric = numeric


def _value(x):
    return np.asarray(x.data if isinstance(x, Tensor) else x)


def _describe(a):
    a = np.asarray(a)
    with np.printoptions(precision=6, threshold=60, edgeitems=4, linewidth=96):
        text = np.array2string(a, separator=", ")
    return text.replace("\n", "\n" + " " * 14)


def _compare(analytic, numeric, atol, rtol, check, what, input_index, shape_note=""):
    """Raise GradcheckError unless |analytic - numeric| <= atol + rtol * |numeric| everywhere."""
    analytic = np.asarray(analytic, np.float64)
    numeric = np.asarray(numeric, np.float64)
    if analytic.shape != numeric.shape:
        raise GradcheckError(
            f"gradcheck failed: {check} for {what}: the analytic result has shape "
            f"{analytic.shape}, expected {numeric.shape}", check, input_index, analytic, numeric)
    # Infinities and NaNs must agree exactly; the finite entries within tolerance.
    same_nonfinite = (analytic == numeric) | (np.isnan(analytic) & np.isnan(numeric))
    with np.errstate(invalid="ignore"):
        err = np.abs(analytic - numeric)
        bad = ~((err <= atol + rtol * np.abs(numeric)) | same_nonfinite)
    if not bad.any():
        return
    err = np.where(bad, np.nan_to_num(err, nan=np.inf), 0.0)
    worst = np.unravel_index(int(np.argmax(err)), err.shape) if err.ndim else ()
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(bad, err / np.abs(numeric), 0.0)
    lines = [
        f"gradcheck failed: {check} for {what}{shape_note}",
        f"  {int(bad.sum())} of {bad.size} entries outside "
        f"atol={atol:g} + rtol={rtol:g} * |numeric|",
        f"  max abs error {float(err.max()):.6g} at index {tuple(int(i) for i in worst)}: "
        f"analytic {float(analytic[worst]):.10g}, numeric {float(numeric[worst]):.10g}",
        f"  max rel error {float(np.nanmax(rel)):.6g}",
        f"  analytic:   {_describe(analytic)}",
        f"  numeric:    {_describe(numeric)}",
    ]
    raise GradcheckError("\n".join(lines), check, input_index, analytic, numeric)


def gradcheck(f, inputs, *, eps=1e-6, atol=1e-5, rtol=1e-4, check_forward=True,
              check_second_order=True, seed=0, raise_exception=True):
    """Check tapegrad's derivatives of `f` at `inputs` against central finite differences.

    `f(*tensors)` returns a floating Tensor of any shape. `inputs` are Tensors, arrays or numbers;
    floating ones are differentiated, the others (integer indices, boolean masks) are passed to
    `f` unchanged as constants. Everything runs in float64: a float32 input is checked at its
    value converted to float64, since float32 differences with a useful step carry no digits.
    Random directions come from `numpy.random.default_rng(seed)`, so a run is reproducible.

    Checks, each of which exercises a different interpreter of the generated tape:

    * value: `f` gives the same value whether or not it records (the recorded graph is what the
      derivatives below are taken of, the unrecorded one is what the differences see).
    * VJP (reverse mode, `autograd.grad`, the `backward` interpreter): for a random cotangent
      `u`, the gradient of `sum(u * f(x))` with respect to every element of every input against
      the central difference of `sum(u * f(x))` in that element. This is what `.backward()`
      computes; a random `u` (not ones) catches rules that are only right for a uniform seed
      and transposed index maps.
    * JVP (forward mode, `autograd.jvp_of_graph`, the `tangent` interpreter): for a random
      tangent `t` of each input, the tangent of `f` against `(f(x + eps t) - f(x - eps t)) /
      (2 eps)`. Forward rules are written separately from the reverse ones (and kernels have
      their own `_jvp`), so they can be wrong independently; `jvp`, `jacfwd` and the
      second-order sweep build on them.
    * second order (`autograd.hvp_of_graph`, the `backward_tangent` interpreter): for fixed
      random weights `w` and a random direction `t` of each input, the Hessian-vector product
      of `L = sum(w * f(x))` against the central difference of tapegrad's own gradient of `L`
      along `t`. This checks the `d2`/`_vjp_jvp` rules, used by `hessian` and `hvp`, against
      the (already checked) first derivatives; a zero second derivative that should not be zero
      (or a missing cross term, such as `prod`'s) shows up only here.

    Returns True when every check passes. On the first mismatch raises `GradcheckError` naming
    the check, the input and the worst entry, with both arrays; with `raise_exception=False` it
    returns False instead. Keep inputs away from points where `f` is not differentiable (kinks,
    ties, bounds): differences straddling a kink measure neither side.
    """
    try:
        _gradcheck(f, inputs, eps, atol, rtol, check_forward, check_second_order, seed)
    except GradcheckError:
        if raise_exception:
            raise
        return False
    return True


def _gradcheck(f, inputs, eps, atol, rtol, check_forward, check_second_order, seed):
    rng = np.random.default_rng(seed)
    inputs = list(inputs)
    values = [_value(x) for x in inputs]
    diff = [i for i, v in enumerate(values) if v.dtype.kind == "f"]
    base = [v.astype(np.float64) if i in diff else v for i, v in enumerate(values)]

    def name(i):
        return f"input {i} (shape {tuple(values[i].shape)}, {values[i].dtype})"

    def make(arrays, requires_grad):
        return [Tensor(a.copy(), requires_grad=requires_grad and i in diff)
                if i in diff else (inputs[i] if isinstance(inputs[i], Tensor) else Tensor(a))
                for i, a in enumerate(arrays)]

    def evaluate(arrays):
        with no_grad():
            out = f(*make(arrays, False))
        return _output(out).data.astype(np.float64)

    def shifted(i, direction, h):
        arrays = list(base)
        arrays[i] = base[i] + h * direction
        return arrays

    # ---- value: recording does not change the result ----------------------------------------
    leaves = make(base, True)
    y = _output(f(*leaves))
    y0 = evaluate(base)
    _compare(y.data, y0, 1e-13, 1e-13, "value (recorded vs not recorded)", "the output", None)
    if y.data.dtype != np.float64:
        raise GradcheckError(f"gradcheck: f returned {y.data.dtype} for float64 inputs; the "
                             "differences need a float64 result", "value", None)
    if not diff:
        return
    active = [leaves[i] for i in diff]

    # ---- VJP: reverse mode against differences of sum(u * f) per element ---------------------
    u = rng.standard_normal(y.data.shape)
    analytic = _gradients(y, active, u)
    for i, g in zip(diff, analytic):
        numeric = np.zeros(base[i].shape)
        flat = numeric.reshape(-1)
        for j in range(base[i].size):
            e = np.zeros(base[i].size)
            e[j] = 1.0
            e = e.reshape(base[i].shape)
            hi = evaluate(shifted(i, e, eps))
            lo = evaluate(shifted(i, e, -eps))
            flat[j] = np.sum(u * (hi - lo)) / (2 * eps)
        _compare(g, numeric, atol, rtol, "VJP (reverse mode, autograd.grad)", name(i), i)

    # ---- JVP: forward mode against differences of f along a tangent --------------------------
    if check_forward:
        for i in diff:
            t = rng.standard_normal(base[i].shape)
            tangents = [t if k == i else np.zeros(base[k].shape) for k in diff]
            if not y._requires_grad:
                analytic = np.zeros(y.data.shape)
            else:
                (jt,) = autograd.jvp_of_graph((y,), active, tangents)
                analytic = jt.data
            numeric = (evaluate(shifted(i, t, eps)) - evaluate(shifted(i, t, -eps))) / (2 * eps)
            _compare(analytic, numeric, atol, rtol, "JVP (forward mode, jvp_of_graph)",
                     name(i), i, " along a random tangent")

    # ---- second order: forward-over-reverse against differences of the gradient -------------
    if check_second_order:
        w = rng.standard_normal(y.data.shape)

        def loss(tensors):
            return ops.sum(ops.mul(_output(f(*tensors)), Tensor(w)))

        leaves2 = make(base, True)
        L = loss(leaves2)
        active2 = [leaves2[i] for i in diff]

        def gradient(arrays):
            ts = make(arrays, True)
            return _gradients(loss(ts), [ts[k] for k in diff], None)

        for i in diff:
            t = rng.standard_normal(base[i].shape)
            tangents = [t if k == i else np.zeros(base[k].shape) for k in diff]
            if L._requires_grad:
                hv = [h.data for h in autograd.hvp_of_graph(L, active2, tangents)]
            else:
                hv = [np.zeros(base[k].shape) for k in diff]
            g_hi = gradient(shifted(i, t, eps))
            g_lo = gradient(shifted(i, t, -eps))
            for k, h, a, b in zip(diff, hv, g_hi, g_lo):
                _compare(h, (a - b) / (2 * eps), atol, rtol,
                         "second order (forward-over-reverse, hvp_of_graph)",
                         name(k), k, f" along a random direction of input {i}")


def _output(out):
    if not isinstance(out, Tensor):
        raise TypeError(f"gradcheck: f must return a Tensor, got {type(out).__name__}")
    if out.data.dtype.kind != "f":
        raise TypeError(f"gradcheck: f must return a floating Tensor, got {out.data.dtype}")
    return out


def _gradients(y, inputs, cotangent):
    """d(sum(cotangent * y))/d(inputs) as float64 arrays (zeros where y does not depend)."""
    if not y._requires_grad:
        return [np.zeros(t.data.shape) for t in inputs]
    grads = autograd.grad((y,), inputs, grad_outputs=None if cotangent is None else (cotangent,),
                          retain_graph=True, allow_unused=True)
    return [np.zeros(t.data.shape) if g is None else g.data.astype(np.float64)
            for t, g in zip(inputs, grads)]
