"""Gradient checks of the public operations, their edge cases, float32, and PyTorch parity.

Every case of the table `CASES` is one function written against a namespace `m`, which is either
`tapegrad` or `torch`, so the same line is
  * gradchecked (reverse mode, forward mode and second order) by `tapegrad.testing.gradcheck`,
  * re-run in float32 (dtypes kept, gradients close to float64),
  * compared with PyTorch in float64 (values, gradients and `grad_fn` names) when torch imports.
Inputs are drawn away from kinks, ties and bounds; those points have exact-value tests below.
"""
import functools
import math
import warnings
from dataclasses import dataclass

import numpy as np
import pytest

import tapegrad as tg
from tapegrad import autograd
from tapegrad.testing import GradcheckError, gradcheck

from conftest import rng_for

inf, nan = math.inf, math.nan


# ---- input generators: each takes a numpy Generator and returns an array -------------------

def N(*shape):
    """Standard normal."""
    return lambda r: r.standard_normal(shape)


def U(lo, hi, *shape):
    return lambda r: r.uniform(lo, hi, shape)


def P(*shape):
    """Positive, away from 0."""
    return U(0.5, 2.0, *shape)


def A(*shape):
    """Away from 0, either sign (abs, relu, denominators)."""
    return lambda r: r.choice([-1.0, 1.0], shape) * r.uniform(0.3, 2.0, shape)


def D(*shape):
    """Distinct values at least 0.3 apart (max, min, argmax: no ties)."""
    n = math.prod(shape)
    return lambda r: ((r.permutation(n) - n / 2) * 0.3 + r.uniform(0, 0.05)).reshape(shape)


def I(*values):
    """A constant integer index array."""
    return lambda r: np.array(values, np.int64)


def M(*shape):
    """A constant boolean mask with both values present."""
    def make(r):
        mask = r.random(shape) < 0.5
        mask.flat[0], mask.flat[-1] = True, False
        return mask
    return make


def apart(shape_a, shape_b, gap=0.2):
    """Two operands that broadcast together and are never within `gap` of each other."""
    def make(r):
        shape = np.broadcast_shapes(shape_a, shape_b)
        small_first = math.prod(shape_a) <= math.prod(shape_b)
        base = r.standard_normal(shape_a if small_first else shape_b)
        other = np.broadcast_to(base, shape) + r.choice([-1, 1], shape) * r.uniform(gap, 1, shape)
        other = other.reshape(shape_b if small_first else shape_a)
        return [base, other] if small_first else [other, base]
    return make


def bounded(shape, bound_shape):
    """x, lo, hi with hi = lo + 1.5 and x clearly below, inside or above [lo, hi]."""
    def make(r):
        lo = r.standard_normal(bound_shape)
        where = r.choice([-0.5, 0.4, 1.1, 2.0], shape) + r.uniform(-0.05, 0.05, shape)
        return [np.broadcast_to(lo, shape) + where, lo, lo + 1.5]
    return make


def clip_input(*shape):
    """Away from the bounds -0.5 and 0.5."""
    return lambda r: r.choice([-1.0, -0.2, 0.1, 0.3, 1.2], shape) + r.uniform(-0.1, 0.1, shape)


@dataclass
class Case:
    id: str
    fn: object           # fn(m, *inputs) with m the tapegrad or torch namespace
    inputs: object       # list of generators, or one generator returning all inputs
    torch: bool = True   # also compare values and gradients with PyTorch
    name: bool = True    # and the grad_fn name
    second_order: bool = True

    def draw(self, rng):
        if callable(self.inputs):
            return [np.asarray(a) for a in self.inputs(rng)]
        return [np.asarray(g(rng)) for g in self.inputs]


def C(id, fn, inputs, **kw):
    return Case(id, fn, inputs, **kw)


CASES = [
    # ---- arithmetic, broadcasting, Python scalars on either side ----------------------------
    C("add", lambda m, x, y: x + y, [N(3, 4), N(3, 4)]),
    C("add-bcast-row", lambda m, x, y: x + y, [N(3, 4), N(4)]),
    C("add-bcast-both", lambda m, x, y: x + y, [N(2, 1, 4), N(3, 1)]),
    C("add-bcast-size1", lambda m, x, y: x + y, [N(3, 4), N(1)]),
    C("add-bcast-0d", lambda m, x, y: y + x, [N(3, 4), N()]),
    C("add-scalar-right", lambda m, x: x + 2.5, [N(3, 4)]),
    C("add-scalar-left", lambda m, x: 2.5 + x, [N(3, 4)]),
    C("add-int-scalar", lambda m, x: 3 + x + 2, [N(5)]),
    C("add-numpy-scalar", lambda m, x: x + np.float64(1.5), [N(5)]),
    C("add-fn", lambda m, x, y: m.add(x, y), [N(2, 3), N(3)]),
    C("sub", lambda m, x, y: x - y, [N(3, 4), N(3, 4)]),
    C("sub-bcast-left", lambda m, x, y: y - x, [N(3, 4), N(4)]),
    C("sub-scalar-right", lambda m, x: x - 1.5, [N(3, 4)]),
    C("sub-scalar-left", lambda m, x: 1.5 - x, [N(3, 4)]),
    C("mul", lambda m, x, y: x * y, [N(3, 4), N(3, 4)]),
    C("mul-bcast", lambda m, x, y: x * y, [N(2, 3, 1), N(4)]),
    C("mul-self", lambda m, x: x * x * x, [N(5)]),
    C("mul-scalar-right", lambda m, x: x * 3.0, [N(3, 4)]),
    C("mul-scalar-left", lambda m, x: -2 * x, [N(3, 4)]),
    C("div", lambda m, x, y: x / y, [N(3, 4), A(3, 4)]),
    C("div-bcast-num", lambda m, x, y: x / y, [N(4), A(3, 4)]),
    C("div-bcast-den", lambda m, x, y: x / y, [N(3, 4), A(3, 1)]),
    C("div-scalar-right", lambda m, x: x / 4.0, [N(3, 4)]),
    C("div-scalar-left", lambda m, x: 4.0 / x, [A(3, 4)]),
    C("pow", lambda m, x, y: x ** y, [P(3, 4), N(3, 4)]),
    C("pow-bcast", lambda m, x, y: x ** y, [P(3, 1), N(4)]),
    C("pow-square", lambda m, x: x ** 2, [N(3, 4)]),
    C("pow-cube", lambda m, x: x ** 3, [N(3, 4)]),
    C("pow-neg-int", lambda m, x: x ** -2, [A(3, 4)]),
    C("pow-half", lambda m, x: x ** 0.5, [P(3, 4)]),
    C("pow-frac", lambda m, x: x ** -1.5, [P(3, 4)]),
    C("pow-reciprocal", lambda m, x: x ** -1, [A(3, 4)]),
    C("pow-zero", lambda m, x: x ** 0 + x, [N(3, 4)]),
    C("pow-one", lambda m, x: x ** 1.0, [N(3, 4)]),
    C("rpow", lambda m, x: 2.0 ** x, [N(3, 4)]),
    C("rpow-small-base", lambda m, x: 0.5 ** x, [N(3, 4)]),
    C("pow-fn", lambda m, x, y: m.pow(x, y), [P(4), N(4)]),
    C("neg", lambda m, x: -x, [N(3, 4)]),
    C("neg-fn", lambda m, x: m.neg(x), [N(3, 4)]),
    # ---- elementwise functions ---------------------------------------------------------------
    C("abs", lambda m, x: m.abs(x), [A(3, 4)]),
    C("abs-builtin", lambda m, x: abs(x), [A(3, 4)]),
    C("exp", lambda m, x: m.exp(x), [N(3, 4)]),
    C("log", lambda m, x: m.log(x), [P(3, 4)]),
    C("log1p", lambda m, x: m.log1p(x), [U(-0.5, 2.0, 3, 4)]),
    C("expm1", lambda m, x: m.expm1(x), [N(3, 4)]),
    C("sqrt", lambda m, x: m.sqrt(x), [P(3, 4)]),
    C("sin", lambda m, x: m.sin(x), [N(3, 4)]),
    C("cos", lambda m, x: m.cos(x), [N(3, 4)]),
    C("tan", lambda m, x: m.tan(x), [U(-1.2, 1.2, 3, 4)]),
    C("tanh", lambda m, x: m.tanh(x), [N(3, 4)]),
    C("sigmoid", lambda m, x: m.sigmoid(x), [U(-5, 5, 3, 4)]),
    C("relu", lambda m, x: m.relu(x), [A(3, 4)]),
    C("methods", lambda m, x: x.exp().sin().tanh() + x.abs().sqrt().log1p(), [A(3, 4)]),
    # ---- maximum, minimum, where, clip -------------------------------------------------------
    C("maximum", lambda m, x, y: m.maximum(x, y), apart((3, 4), (3, 4))),
    C("maximum-bcast", lambda m, x, y: m.maximum(x, y), apart((3, 4), (4,))),
    C("maximum-bcast-left", lambda m, x, y: m.maximum(x, y), apart((3, 1), (3, 4))),
    C("maximum-scalar", lambda m, x: m.maximum(x, 0.3), [lambda r: 0.3 + A(3, 4)(r)],
      torch=False),
    C("minimum", lambda m, x, y: m.minimum(x, y), apart((3, 4), (3, 4))),
    C("minimum-bcast", lambda m, x, y: m.minimum(x, y), apart((2, 3, 4), (3, 1))),
    C("where", lambda m, c, x, y: m.where(c, x, y), [M(3, 4), N(3, 4), N(3, 4)]),
    C("where-bcast", lambda m, c, x, y: m.where(c, x, y), [M(3, 1), N(3, 4), N(4)]),
    C("where-scalar", lambda m, c, x: m.where(c, x, 2.0), [M(3, 4), N(3, 4)]),
    C("where-scalar-left", lambda m, c, x: m.where(c, 0.0, x), [M(3, 4), N(3, 4)]),
    C("where-compare", lambda m, x: m.where(x > 0, x * 2, -x), [A(3, 4)]),
    C("clip", lambda m, x: m.clip(x, -0.5, 0.5), [clip_input(3, 4)]),
    C("clamp", lambda m, x: m.clamp(x, -0.5, 0.5), [clip_input(3, 4)]),
    C("clamp-min", lambda m, x: m.clamp(x, min=-0.5), [clip_input(3, 4)]),
    C("clamp-max", lambda m, x: x.clamp(max=0.5), [clip_input(3, 4)]),
    C("clamp-tensor", lambda m, x, lo, hi: m.clamp(x, lo, hi), bounded((3, 4), (4,))),
    # ---- reductions --------------------------------------------------------------------------
    C("sum", lambda m, x: m.sum(x), [N(2, 3, 4)]),
    C("sum-dim", lambda m, x: m.sum(x, 1), [N(2, 3, 4)]),
    C("sum-neg-dim", lambda m, x: x.sum(-1), [N(2, 3, 4)]),
    C("sum-dims-keepdim", lambda m, x: m.sum(x, (0, 2), keepdim=True), [N(2, 3, 4)]),
    C("sum-all-dims", lambda m, x: m.sum(x, (0, 1, 2)), [N(2, 3, 4)]),
    C("sum-of-squares-dim", lambda m, x: m.sum(x * x, 1), [N(2, 3, 4)]),       # segsumsq
    C("mean-of-squares-dims", lambda m, x: m.mean(x ** 2, (0, 2), keepdim=True), [N(2, 3, 4)]),
    C("sum-axis-kw", lambda m, x: m.sum(x, axis=(0, 2), keepdims=True), [N(2, 3, 4)],
      torch=False),
    C("sum-0d", lambda m, x: m.sum(x), [N()]),
    C("mean", lambda m, x: m.mean(x), [N(2, 3, 4)]),
    C("mean-dim", lambda m, x: x.mean(0), [N(2, 3, 4)]),
    C("mean-dims-keepdim", lambda m, x: m.mean(x, (-1, 0), keepdim=True), [N(2, 3, 4)]),
    C("prod", lambda m, x: m.prod(x), [A(3, 4)]),
    C("prod-dim", lambda m, x: m.prod(x, 1), [A(2, 3, 4)]),
    C("prod-dim-keepdim", lambda m, x: x.prod(-1, keepdim=True), [A(2, 3, 4)]),
    C("prod-dims", lambda m, x: m.prod(x, axis=(0, 2)), [A(2, 3, 4)], torch=False),
    C("max", lambda m, x: m.max(x), [D(2, 3, 4)]),
    C("min", lambda m, x: x.min(), [D(2, 3, 4)]),
    C("amax", lambda m, x: m.amax(x), [D(2, 3, 4)]),
    C("amax-dim", lambda m, x: m.amax(x, 1), [D(2, 3, 4)]),
    C("amax-dims-keepdim", lambda m, x: m.amax(x, (0, 2), keepdim=True), [D(2, 3, 4)]),
    C("amin-dims", lambda m, x: m.amin(x, (-1, 0)), [D(2, 3, 4)]),
    C("amin", lambda m, x: x.amin(), [D(2, 3, 4)]),
    C("max-dim-values", lambda m, x: m.max(x, 1).values, [D(2, 3, 4)]),
    C("max-dim-keepdim", lambda m, x: m.max(x, -1, keepdim=True)[0], [D(2, 3, 4)]),
    C("min-dim-values", lambda m, x: x.min(0).values, [D(3, 4)]),
    C("max-axis-kw", lambda m, x: m.max(x, axis=(0, 1)), [D(2, 3, 4)], torch=False),
    # ---- matmul ------------------------------------------------------------------------------
    C("matmul-vv", lambda m, a, b: a @ b, [N(4), N(4)]),
    C("matmul-mv", lambda m, a, b: a @ b, [N(3, 4), N(4)]),
    C("matmul-vm", lambda m, a, b: a @ b, [N(3), N(3, 4)]),
    C("matmul-mm", lambda m, a, b: m.matmul(a, b), [N(3, 4), N(4, 2)]),
    C("matmul-bmm", lambda m, a, b: a @ b, [N(2, 3, 4), N(2, 4, 2)]),
    C("matmul-batch-mat", lambda m, a, b: a @ b, [N(2, 3, 4), N(4, 2)]),
    C("matmul-mat-batch", lambda m, a, b: a @ b, [N(3, 4), N(2, 4, 2)], name=False),
    C("matmul-batch-vec", lambda m, a, b: a @ b, [N(2, 3, 4), N(4)]),
    C("matmul-vec-batch", lambda m, a, b: a @ b, [N(4), N(2, 4, 3)]),
    C("matmul-batch-bcast", lambda m, a, b: a @ b, [N(2, 1, 3, 4), N(3, 4, 2)]),
    C("matmul-batch-bcast1", lambda m, a, b: a @ b, [N(1, 3, 4), N(2, 4, 2)], name=False),
    C("matmul-same", lambda m, a: a @ a, [N(3, 3)]),
    C("matmul-mlp", lambda m, x, w, b: m.tanh(x @ w + b).sum(-1), [N(5, 3), N(3, 4), N(4)]),
    # ---- shapes ------------------------------------------------------------------------------
    C("T", lambda m, x: x.T, [N(3, 4)]),
    C("mT", lambda m, x: x.mT, [N(2, 3, 4)]),
    C("t", lambda m, x: x.t(), [N(3, 4)]),
    C("transpose", lambda m, x: m.transpose(x, 0, 2), [N(2, 3, 4)]),
    C("transpose-method", lambda m, x: x.transpose(-1, 1), [N(2, 3, 4)]),
    C("permute", lambda m, x: x.permute(2, 0, 1), [N(2, 3, 4)]),
    C("permute-fn", lambda m, x: m.permute(x, (1, 2, 0)), [N(2, 3, 4)]),
    C("reshape", lambda m, x: x.reshape(4, 6), [N(2, 3, 4)]),
    C("reshape-tuple", lambda m, x: m.reshape(x, (6, -1)), [N(2, 3, 4)]),
    C("view", lambda m, x: x.view(-1), [N(2, 3, 4)]),
    C("squeeze", lambda m, x: x.squeeze(), [N(1, 3, 1, 4)]),
    C("squeeze-dim", lambda m, x: m.squeeze(x, 2), [N(1, 3, 1, 4)]),
    C("unsqueeze", lambda m, x: m.unsqueeze(x, 1), [N(3, 4)]),
    C("unsqueeze-neg", lambda m, x: x.unsqueeze(-1), [N(3, 4)]),
    C("flatten", lambda m, x: x.flatten(), [N(2, 3, 4)]),
    C("flatten-start", lambda m, x: m.flatten(x, 1), [N(2, 3, 4)]),
    C("flatten-range", lambda m, x: m.flatten(x, 0, 1), [N(2, 3, 4)]),
    # ---- indexing ----------------------------------------------------------------------------
    C("index-int", lambda m, x: x[1], [N(3, 4)]),
    C("index-int-int", lambda m, x: x[1, 2], [N(3, 4)]),
    C("index-slice", lambda m, x: x[:, 1:3], [N(3, 4)]),
    C("index-step", lambda m, x: x[::2, 1:], [N(3, 4)]),
    C("index-negative-step", lambda m, x: x[::-1, ::2], [N(3, 4)], torch=False),
    C("index-none-ellipsis", lambda m, x: x[None, ..., 1], [N(2, 3, 4)]),
    C("index-0d-tensor", lambda m, x, i: x[i], [N(3, 4), lambda r: np.array(2)]),
    C("index-list-repeated", lambda m, x: x[[0, 2, 0, 0]], [N(3, 4)]),
    C("index-array-repeated", lambda m, x, i: x[i], [N(5), I(1, 1, 3, 1, 0)]),
    C("index-array-2d", lambda m, x, i: x[i], [N(4, 3), I([0, 0], [3, 0])]),
    C("index-pair", lambda m, x: x[[0, 0, 1], [2, 2, 3]], [N(3, 4)]),
    C("pair-differences", lambda m, x, i, j: x[i] - x[j], [N(5, 3), I(0, 0, 1, 4), I(1, 2, 1, 0)]),
    C("pair-differences-2d", lambda m, x, i, j: m.sum((x[i] - x[j]) ** 2, 1),
      [N(4, 3), I(0, 0, 1, 2, 3), I(1, 2, 3, 3, 3)]),
    C("index-column-repeated", lambda m, x: x[:, [3, 3, 0]], [N(3, 4)]),
    C("index-mask", lambda m, x, mask: x[mask], [N(3, 4), M(3, 4)]),
    C("index-mask-rows", lambda m, x, mask: x[mask], [N(4, 3), M(4)]),
    C("index-computed-mask", lambda m, x: x[x > 0], [A(3, 4)]),
    # ---- cat and stack -----------------------------------------------------------------------
    C("cat", lambda m, x, y: m.cat([x, y]), [N(2, 3), N(4, 3)]),
    C("cat-dim1", lambda m, x, y, z: m.cat([x, y, z], 1), [N(3, 2), N(3, 1), N(3, 4)]),
    C("cat-neg-dim", lambda m, x, y: m.cat([y, x, y], -1), [N(2, 3), N(2, 2)]),
    C("cat-const", lambda m, x, c: m.cat([x, c.to(x.dtype), x]), [N(2), I(3, -1, 4)]),
    C("stack", lambda m, x, y: m.stack([x, y]), [N(3, 4), N(3, 4)]),
    C("stack-dim1", lambda m, x, y: m.stack([x, y, x], 1), [N(3, 4), N(3, 4)]),
    C("stack-dim2", lambda m, x, y: m.stack([x, y], 2), [N(3, 4), N(3, 4)]),
    C("stack-neg-dim", lambda m, x, y: m.stack([y, x], -2), [N(3, 4), N(3, 4)]),
    # ---- logsumexp, softmax, log_softmax -----------------------------------------------------
    C("logsumexp", lambda m, x: m.logsumexp(x, 1), [N(3, 4)]),
    C("logsumexp-dims-keepdim", lambda m, x: m.logsumexp(x, (0, 2), keepdim=True),
      [N(2, 3, 4)]),
    C("logsumexp-large", lambda m, x: x.logsumexp(-1), [U(995, 1000, 3, 4)]),
    C("softmax", lambda m, x: m.softmax(x, 1), [N(3, 4)]),
    C("softmax-dim0", lambda m, x: m.softmax(x, 0), [N(3, 4)]),
    C("softmax-3d", lambda m, x: x.softmax(-1), [N(2, 3, 4)]),
    C("log_softmax", lambda m, x: m.log_softmax(x, 1), [N(3, 4)]),
    C("log_softmax-dim0", lambda m, x: x.log_softmax(0), [N(2, 3, 4)]),
    # ---- compositions ------------------------------------------------------------------------
    C("composite-loss", lambda m, x, w, t: m.mean((m.softmax(x @ w, 1) - t) ** 2),
      [N(4, 3), N(3, 5), U(0, 1, 4, 5)]),
    C("composite-unused", lambda m, x, y: x * 2.0, [N(3), N(3)], torch=False),
]

IDS = [c.id for c in CASES]
assert len(set(IDS)) == len(IDS), "case ids must be unique"


def _tg_inputs(case, dtype=np.float64):
    arrays = case.draw(rng_for(case.id))
    return [a.astype(dtype) if a.dtype.kind == "f" else a for a in arrays]


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_gradcheck(case):
    """VJP, JVP and second order of every op against central differences."""
    assert gradcheck(functools.partial(case.fn, tg), _tg_inputs(case),
                     check_second_order=case.second_order)


# ---- gradcheck itself ---------------------------------------------------------------------

def test_gradcheck_reports_a_wrong_gradient():
    """A derivative that is off is caught, and the report says which check and input."""
    def bad(x):
        # sin(x) + (0.1 x - 0.1 x): the same value, but the detached term's partner adds 0.1
        # to the derivative, which finite differences (of sin alone) do not see.
        return tg.sin(x) + (x * 0.1 - (x * 0.1).detach())

    x = np.array([0.1, 0.2, 0.3])
    with pytest.raises(GradcheckError) as info:
        gradcheck(bad, [x])
    message = str(info.value)
    assert "VJP" in message and "input 0" in message and "max abs error" in message
    assert info.value.check.startswith("VJP") and info.value.input == 0
    assert info.value.analytic.shape == info.value.numeric.shape == (3,)
    assert not gradcheck(bad, [x], raise_exception=False)


@pytest.mark.parametrize("fn, inputs", [
    (lambda x: x, [np.ones(3)]),                                  # the output is the input
    (lambda x: tg.tensor(3.0), [np.ones(3)]),                     # does not depend on x
    (lambda x, y: x * 2.0, [np.ones(3), np.ones(2)]),             # y unused
    (lambda x: x.sum(), [np.array(1.5)]),                         # 0-d in, 0-d out
], ids=["identity", "constant", "unused", "0d"])
def test_gradcheck_degenerate_functions(fn, inputs):
    assert gradcheck(fn, inputs)


def test_gradcheck_constants_and_float32_inputs():
    """Integer inputs are passed through unchanged; float32 inputs are checked in float64."""
    seen = []

    def f(x, i):
        seen.append((x.dtype, i.dtype))
        return x[i] ** 2

    assert gradcheck(f, [np.arange(4, dtype=np.float32) + 1, np.array([0, 2, 2])])
    assert set(seen) == {(np.dtype(np.float64), np.dtype(np.int64))}


# ---- edge cases: exact values (and PyTorch's, when it imports) -----------------------------

def _grad(fn, *values, seed=None):
    xs = [tg.tensor(v, requires_grad=True) for v in values]
    y = fn(*xs)
    gs = autograd.grad((y,), xs, grad_outputs=None if seed is None else (seed,))
    return y, [g.data for g in gs]


def _torch_grad(fn, *values):
    torch = pytest.importorskip("torch")
    xs = [torch.tensor(np.asarray(v, np.float64), requires_grad=True) for v in values]
    y = fn(*xs)
    gs = torch.autograd.grad(y, xs, allow_unused=True)
    return y.detach().numpy(), [None if g is None else g.numpy() for g in gs]


def _hessian(fn, x):
    """Full Hessian of a scalar fn at x from hvp_of_graph along the basis vectors."""
    x = np.asarray(x, np.float64)
    rows = []
    for j in range(x.size):
        e = np.zeros(x.size)
        e[j] = 1.0
        t = tg.tensor(x, requires_grad=True)
        (h,) = autograd.hvp_of_graph(fn(t), (t,), (e.reshape(x.shape),))
        rows.append(h.data.ravel())
    return np.array(rows)


def _maybe_torch():
    try:
        import torch
    except ImportError:
        return None
    return torch


EDGE_GRADS = [
    # id, fn(m, x), x, expected gradient of sum(fn(x))
    ("abs-at-0", lambda m, x: m.abs(x), [-2.0, 0.0, 3.0], [-1.0, 0.0, 1.0]),
    ("relu-at-0", lambda m, x: m.relu(x), [-2.0, 0.0, 3.0], [0.0, 0.0, 1.0]),
    ("clamp-bounds-inclusive", lambda m, x: m.clamp(x, -0.5, 0.5),
     [-1.0, -0.5, 0.0, 0.5, 1.0], [0.0, 1.0, 1.0, 1.0, 0.0]),
    ("clamp-min-bound", lambda m, x: m.clamp(x, min=0.0), [-1.0, 0.0, 1.0], [0.0, 1.0, 1.0]),
    ("clamp-max-bound", lambda m, x: m.clamp(x, max=0.0), [-1.0, 0.0, 1.0], [1.0, 1.0, 0.0]),
    ("pow0-at-0", lambda m, x: x ** 0, [0.0, 2.0, -1.0], [0.0, 0.0, 0.0]),
    ("pow0.0-at-0", lambda m, x: x ** 0.0, [0.0], [0.0]),
    ("square-negative", lambda m, x: x ** 2, [-3.0, -0.5, 0.0], [-6.0, -1.0, 0.0]),
    ("square-float-negative", lambda m, x: x ** 2.0, [-3.0], [-6.0]),
    ("cube-negative", lambda m, x: x ** 3, [-2.0, -0.5, 0.0], [12.0, 0.75, 0.0]),
    ("pow4-negative", lambda m, x: x ** 4, [-2.0], [-32.0]),
    ("pow-neg1-negative", lambda m, x: x ** -1, [-2.0], [-0.25]),
    ("pow-neg1-at-0", lambda m, x: x ** -1, [0.0, -0.0, inf], [-inf, -inf, -0.0]),
    ("pow-neg2-negative", lambda m, x: x ** -2, [-2.0], [0.25]),
    ("pow-one-at-0", lambda m, x: x ** 1, [0.0], [1.0]),
    ("sqrt-at-0", lambda m, x: m.sqrt(x), [0.0, 4.0], [inf, 0.25]),
    ("pow-half-at-0", lambda m, x: x ** 0.5, [0.0], [inf]),
    ("rpow-zero-base", lambda m, x: 0.0 ** x, [0.0, 1.0, 2.5], [0.0, 0.0, 0.0]),
    ("rpow-zero-base-negative", lambda m, x: 0.0 ** x, [-1.0], [-inf]),
    ("rpow-one-base", lambda m, x: 1.0 ** x, [-1.0, 2.0], [0.0, 0.0]),
    ("max-ties", lambda m, x: m.max(x), [1.0, 3.0, 3.0, 2.0], [0.0, 0.5, 0.5, 0.0]),
    ("min-ties", lambda m, x: m.min(x), [1.0, 3.0, 1.0, 1.0], [1 / 3, 0.0, 1 / 3, 1 / 3]),
    ("amax-ties", lambda m, x: m.amax(x), [3.0, 3.0, 3.0, 3.0], [0.25] * 4),
    ("amax-dim-ties", lambda m, x: m.amax(x, 1), [[1.0, 2.0, 2.0], [5.0, 4.0, 5.0]],
     [[0.0, 0.5, 0.5], [0.5, 0.0, 0.5]]),
    ("amin-dims-ties", lambda m, x: m.amin(x, (0, 1)), [[1.0, 2.0], [1.0, 1.0]],
     [[1 / 3, 0.0], [1 / 3, 1 / 3]]),
    ("prod-one-zero", lambda m, x: m.prod(x), [2.0, 0.0, 3.0], [0.0, 6.0, 0.0]),
    ("prod-two-zeros", lambda m, x: m.prod(x), [2.0, 0.0, 0.0, 3.0], [0.0, 0.0, 0.0, 0.0]),
    ("prod-dim-zeros", lambda m, x: m.prod(x, 1), [[2.0, 0.0, 3.0], [0.0, 0.0, 1.0]],
     [[0.0, 6.0, 0.0], [0.0, 0.0, 0.0]]),
    ("sigmoid-large", lambda m, x: m.sigmoid(x), [-1000.0, -50.0, 0.0, 50.0, 1000.0],
     [0.0, 1.928749847963918e-22, 0.25, 0.0, 0.0]),
    ("logsumexp-large", lambda m, x: m.logsumexp(x, 0), [1000.0, 1000.0], [0.5, 0.5]),
    ("logsumexp-neg-inf-entry", lambda m, x: m.logsumexp(x, 0), [-inf, 0.0], [0.0, 1.0]),
    ("softmax-sum-constant", lambda m, x: m.softmax(x, 0), [1.0, 2.0, 3.0], [0.0, 0.0, 0.0]),
]


def _edge_params():
    for e in EDGE_GRADS:
        values, marks = (e.values, e.marks) if hasattr(e, "marks") else (e, ())
        yield pytest.param(*values[1:], id=values[0], marks=marks)


@pytest.mark.parametrize("fn, x, expected", list(_edge_params()))
def test_edge_gradient(fn, x, expected):
    """Exact gradients at the documented special points; PyTorch agrees (to rounding)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        y, (g,) = _grad(lambda t: tg.sum(fn(tg, t)), np.array(x, np.float64))
    np.testing.assert_allclose(g, expected, rtol=1e-15, atol=0)
    torch = _maybe_torch()
    if torch is not None:
        ty, (tgrad,) = _torch_grad(lambda t: torch.sum(fn(torch, t)), np.array(x, np.float64))
        np.testing.assert_allclose(y.data, ty, rtol=1e-13)
        np.testing.assert_allclose(g, tgrad, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("fn, x, expected", [
    (tg.sqrt, [0.0, 4.0], [inf, 0.25]),
    (tg.log, [0.0, 2.0], [inf, 0.5]),
    (lambda t: 2.0 / t, [0.0, 2.0], [-inf, -0.5]),
    (lambda t: t / tg.tensor([0.0, 2.0]), [1.0, 1.0], [inf, 0.5]),
], ids=["sqrt", "log", "rdiv", "div"])
def test_division_by_zero_gives_inf(fn, x, expected):
    with np.errstate(divide="ignore"):
        _, (g,) = _grad(lambda t: tg.sum(fn(t)), np.array(x))
    np.testing.assert_array_equal(g, expected)


def test_abs_relu_kinks_second_order():
    for fn in (tg.abs, tg.relu):
        h = _hessian(lambda t: tg.sum(fn(t) * t), [-1.0, 0.0, 2.0])
        expected = {tg.abs: [-2.0, 0.0, 2.0], tg.relu: [0.0, 0.0, 2.0]}[fn]
        np.testing.assert_array_equal(h, np.diag(expected))


@pytest.mark.parametrize("op", [tg.maximum, tg.minimum], ids=["maximum", "minimum"])
def test_maximum_minimum_ties_split_gradient(op):
    """A tie gives half the gradient to each side (first element); the others go one way."""
    a = tg.tensor([1.0, 2.0, 3.0], requires_grad=True)
    b = tg.tensor([1.0, 5.0, -1.0], requires_grad=True)
    op(a, b).sum().backward()
    bigger = op is tg.maximum
    np.testing.assert_array_equal(a.grad.data, [0.5, 0.0, 1.0] if bigger else [0.5, 1.0, 0.0])
    np.testing.assert_array_equal(b.grad.data, [0.5, 1.0, 0.0] if bigger else [0.5, 0.0, 1.0])
    # Forward mode agrees: the tangent at a tie is the mean of both tangents.
    (jt,) = autograd.jvp_of_graph(op(a, b), (a, b), (np.ones(3), np.full(3, 3.0)))
    np.testing.assert_array_equal(jt.data, [2.0, 3.0, 1.0] if bigger else [2.0, 1.0, 3.0])
    torch = _maybe_torch()
    if torch is not None:
        fn = torch.maximum if bigger else torch.minimum
        _, (ga, gb) = _torch_grad(lambda x, y: fn(x, y).sum(), a.data, b.data)
        np.testing.assert_array_equal(a.grad.data, ga)
        np.testing.assert_array_equal(b.grad.data, gb)


def test_clamp_min_above_max():
    """PyTorch: clamp(x, lo, hi) = min(max(x, lo), hi): hi everywhere when lo > hi, NaN kept."""
    x = np.array([-1.0, 0.0, 0.5, 1.0, 2.0, nan])
    y, (g,) = _grad(lambda t: tg.clamp(t, 1.0, 0.0).sum() * 0 + tg.clamp(t, 1.0, 0.0)[:5].sum(), x)
    np.testing.assert_array_equal(tg.clamp(tg.tensor(x), 1.0, 0.0).data, [0, 0, 0, 0, 0, nan])
    np.testing.assert_array_equal(g[:5], 0.0)
    np.testing.assert_array_equal(tg.clamp(tg.tensor(x), min=-0.5).data,
                                  [-0.5, 0.0, 0.5, 1.0, 2.0, nan])


def test_clamp_tensor_bounds():
    """Tensor bounds: x keeps the whole gradient at a bound (inclusive), the bound gets it
    where it is active, hi wins over lo > hi; as PyTorch (ClampBackward0)."""
    x = tg.tensor([-1.0, 0.0, 0.5, 1.0, 2.0], requires_grad=True)
    lo = tg.tensor([0.0, 0.0, 0.0, 0.0, 3.0], requires_grad=True)
    hi = tg.tensor([1.0, 1.0, 1.0, 1.0, 1.0], requires_grad=True)
    y = tg.clamp(x, lo, hi)
    assert y.grad_fn.name() == "ClampBackward0"
    np.testing.assert_array_equal(y.data, [0.0, 0.0, 0.5, 1.0, 1.0])
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.data, [0, 1, 1, 1, 0])
    np.testing.assert_array_equal(lo.grad.data, [1, 0, 0, 0, 0])
    np.testing.assert_array_equal(hi.grad.data, [0, 0, 0, 0, 1])
    torch = _maybe_torch()
    if torch is not None:
        _, grads = _torch_grad(lambda a, b, c: torch.clamp(a, b, c).sum(),
                               x.data, lo.data, hi.data)
        for ours, theirs in zip((x, lo, hi), grads):
            np.testing.assert_array_equal(ours.grad.data, theirs)


def test_maximum_scalar_tie():
    _, (g,) = _grad(lambda t: tg.maximum(t, 0.0).sum(), np.array([-1.0, 0.0, 1.0]))
    np.testing.assert_array_equal(g, [0.0, 0.5, 1.0])


@pytest.mark.parametrize("fn_name, keepdim", [("max", False), ("max", True), ("min", False)])
def test_max_dim_returns_values_and_indices(fn_name, keepdim):
    x = np.array([[1.0, 7.0, 7.0, 2.0], [4.0, 4.0, -1.0, 0.0], [3.0, 0.0, 9.0, 9.0]])
    t = tg.tensor(x, requires_grad=True)
    out = getattr(tg, fn_name)(t, 1, keepdim=keepdim)
    values, indices = out
    assert out.values is values and out.indices is indices
    npfn = np.max if fn_name == "max" else np.min
    argfn = np.argmax if fn_name == "max" else np.argmin
    np.testing.assert_array_equal(values.data, npfn(x, 1, keepdims=keepdim))
    np.testing.assert_array_equal(indices.data, argfn(x, 1, keepdims=keepdim))
    assert indices.dtype == np.int64 and not indices.requires_grad
    assert values.grad_fn.name() == ("MaxBackward0" if fn_name == "max" else "MinBackward0")
    seed = np.arange(1.0, 4.0).reshape(values.shape)
    (g,) = autograd.grad(values, t, grad_outputs=seed)
    expected = np.zeros_like(x)
    expected[np.arange(3), argfn(x, 1)] = np.arange(1.0, 4.0)
    np.testing.assert_array_equal(g.data, expected)   # only the selected index, ties or not
    torch = _maybe_torch()
    if torch is not None:
        tt = torch.tensor(x, requires_grad=True)
        tv, ti = getattr(torch, fn_name)(tt, 1, keepdim=keepdim)
        np.testing.assert_array_equal(ti.numpy(), indices.data)
        (tgrad,) = torch.autograd.grad(tv, tt, torch.tensor(seed))
        np.testing.assert_array_equal(tgrad.numpy(), g.data)


def test_pow_zero_base_exponent_gradient():
    """d/dy 0**y is 0 where y >= 0 (PyTorch), for a tensor base too; d/dx 0**y follows."""
    a = tg.tensor([0.0, 0.0, 0.0, 2.0], requires_grad=True)
    b = tg.tensor([0.0, 1.0, 2.5, 3.0], requires_grad=True)
    (a ** b).sum().backward()
    np.testing.assert_array_equal(b.grad.data, [0.0, 0.0, 0.0, 8.0 * math.log(2.0)])
    np.testing.assert_array_equal(a.grad.data, [0.0, 1.0, 0.0, 12.0])
    torch = _maybe_torch()
    if torch is not None:
        _, (ga, gb) = _torch_grad(lambda x, y: (x ** y).sum(), a.data, b.data)
        np.testing.assert_array_equal(a.grad.data, ga)
        np.testing.assert_array_equal(b.grad.data, gb)


def test_pow_tensor_exponent_zero_at_zero_base():
    a = tg.tensor([0.0, -2.0], requires_grad=True)
    b = tg.tensor([0.0, 0.0], requires_grad=True)
    (a ** b).sum().backward()
    np.testing.assert_array_equal(a.grad.data, [0.0, 0.0])


def test_integer_powers_second_order_at_negative_x():
    x = np.array([-2.0, -0.5])
    for k in (2, 3, 4, -1):
        h = _hessian(lambda t: tg.sum(t ** k), x)
        np.testing.assert_allclose(h, np.diag(k * (k - 1) * x ** (k - 2)), rtol=1e-14)


@pytest.mark.parametrize("x, hessian", [
    ([2.0, 0.0, 3.0], [[0.0, 3.0, 0.0], [3.0, 0.0, 2.0], [0.0, 2.0, 0.0]]),
    ([2.0, 0.0, 0.0, 3.0], [[0, 0, 0, 0], [0, 0, 6.0, 0], [0, 6.0, 0, 0], [0, 0, 0, 0]]),
    ([0.0, 0.0, 0.0], np.zeros((3, 3))),
    ([2.0, 5.0, 3.0], [[0.0, 3.0, 5.0], [3.0, 0.0, 2.0], [5.0, 2.0, 0.0]]),
], ids=["one-zero", "two-zeros", "three-zeros", "no-zero"])
def test_prod_second_order_with_zeros(x, hessian):
    h = _hessian(lambda t: tg.prod(t), x)
    np.testing.assert_allclose(h, hessian, rtol=1e-15, atol=0)
    torch = _maybe_torch()
    if torch is not None:
        th = torch.autograd.functional.hessian(torch.prod, torch.tensor(x, dtype=torch.float64))
        np.testing.assert_allclose(h, th.numpy(), rtol=1e-13, atol=1e-14)


def test_prod_segments_second_order_with_zeros():
    """prod over a dim, a zero in one row and two in another: Hessian blocks per row."""
    x = np.array([[2.0, 0.0, 3.0], [0.0, 0.0, 4.0]])
    w = np.array([1.0, -2.0])
    h = _hessian(lambda t: tg.sum(tg.prod(t, 1) * tg.tensor(w)), x)
    expected = np.zeros((6, 6))
    expected[0:3, 0:3] = [[0, 3, 0], [3, 0, 2], [0, 2, 0]]
    expected[3:6, 3:6] = -2.0 * np.array([[0, 4, 0], [4, 0, 0], [0, 0, 0]])
    np.testing.assert_array_equal(h, expected)


def test_sigmoid_large_values_no_overflow():
    x = np.array([-1000.0, -750.0, -40.0, 0.0, 40.0, 750.0, 1000.0])
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        y, (g,) = _grad(lambda t: tg.sigmoid(t).sum(), x)
        assert np.isfinite(g).all()
    e = np.exp(-np.abs(x))   # sigmoid(x) = 1/(1 + e) for x >= 0, e/(1 + e) below
    expected = np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
    np.testing.assert_allclose(tg.sigmoid(tg.tensor(x)).data, expected, rtol=1e-15, atol=0)
    xs = tg.tensor(x.astype(np.float32), requires_grad=True)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        y32 = tg.sigmoid(xs)
    assert y32.dtype == np.float32 and np.isfinite(y32.data).all()


def test_sigmoid_accuracy():
    """Within 2 ulp of e/(1 + e) for negative x (the eager forward once lost |x| ulp there)."""
    x = np.array([-700.0, -300.0, -40.0, -20.5, -5.0, -0.5, 0.5, 5.0, 20.5])
    e = np.exp(-np.abs(x))
    exact = np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
    np.testing.assert_array_max_ulp(tg.sigmoid(tg.tensor(x)).data, exact, maxulp=2)
    torch = _maybe_torch()
    if torch is not None:
        np.testing.assert_array_max_ulp(tg.sigmoid(tg.tensor(x)).data,
                                        torch.sigmoid(torch.tensor(x)).numpy(), maxulp=2)


def test_logsumexp_large_values():
    x = np.array([[1000.0, 1000.0, 999.0], [-1000.0, -1001.0, -1000.0]])
    t = tg.tensor(x, requires_grad=True)
    y = tg.logsumexp(t, 1)
    expected = np.array([1000.0 + math.log(2 + math.exp(-1)), -1000.0 + math.log(2 + math.exp(-1))])
    np.testing.assert_allclose(y.data, expected, rtol=1e-15)
    y.sum().backward()
    p = np.exp(x - expected[:, None])
    np.testing.assert_allclose(t.grad.data, p, rtol=1e-13)
    np.testing.assert_allclose(t.grad.data.sum(1), [1.0, 1.0], rtol=1e-15)


def test_logsumexp_of_neg_inf_rows_forward():
    """-inf rows give -inf without numpy warnings (PyTorch warns about nothing either)."""
    x = tg.tensor([[-inf, -inf], [0.0, -inf], [inf, 1.0]], requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = tg.logsumexp(x, 1)
        ls = tg.log_softmax(x[:2], 1)
    np.testing.assert_array_equal(y.data, [-inf, 0.0, inf])
    np.testing.assert_array_equal(ls.data, [[nan, nan], [0.0, -inf]])   # as PyTorch
    assert y.grad_fn.name() == "LogsumexpBackward0"


def test_logsumexp_of_neg_inf_rows():
    """A row of -inf has logsumexp -inf and, as in PyTorch, a NaN gradient (exp(-inf - -inf));
    a -inf entry next to finite ones gets gradient 0, the finite ones their softmax."""
    x = np.array([[-inf, -inf], [0.0, -inf], [inf, 1.0]])
    t = tg.tensor(x, requires_grad=True)
    y = tg.logsumexp(t, 1)
    np.testing.assert_array_equal(y.data, [-inf, 0.0, inf])
    with np.errstate(invalid="ignore"):
        (g,) = autograd.grad(y[:2].sum(), t)
    np.testing.assert_array_equal(g.data[0], [nan, nan])
    np.testing.assert_array_equal(g.data[1], [1.0, 0.0])
    torch = _maybe_torch()
    if torch is not None:
        tt = torch.tensor(x, requires_grad=True)
        ty = torch.logsumexp(tt, 1)
        np.testing.assert_array_equal(ty.detach().numpy(), y.data)
        (tgrad,) = torch.autograd.grad(ty[:2].sum(), tt)
        np.testing.assert_array_equal(g.data, tgrad.numpy())   # NaN where PyTorch has NaN


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_softmax_sums_to_one(dtype):
    x = np.array([[1.0, 2.0, 3.0], [1000.0, 1000.0, -1000.0], [-inf, 0.0, 5.0]], dtype)
    t = tg.tensor(x, requires_grad=True)
    s = tg.softmax(t, 1)
    assert s.dtype == dtype
    np.testing.assert_allclose(s.data.sum(1), 1.0, rtol=4 * np.finfo(dtype).eps)
    np.testing.assert_allclose(s.data[1], [0.5, 0.5, 0.0])
    assert s.data[2, 0] == 0.0
    ls = tg.log_softmax(t, 1)
    np.testing.assert_allclose(np.exp(ls.data).sum(1), 1.0, rtol=4 * np.finfo(dtype).eps)
    # The gradient of the sum of a softmax is zero.
    (g,) = autograd.grad(s.sum(), t)
    np.testing.assert_allclose(g.data, 0.0, atol=10 * np.finfo(dtype).eps)


def test_max_and_amax_names():
    x = tg.tensor([1.0, 2.0], requires_grad=True)
    assert tg.max(x).grad_fn.name() == "MaxBackward1"
    assert tg.min(x).grad_fn.name() == "MinBackward1"
    assert tg.amax(x).grad_fn.name() == "AmaxBackward0"
    assert tg.amin(x).grad_fn.name() == "AminBackward0"
    assert x.amax(0).grad_fn.name() == "AmaxBackward0"


# ---- float32: dtypes kept, gradients close to float64 -------------------------------------

F32_CASES = [c for c in CASES if not c.id.startswith(("logsumexp-large",))]


@pytest.mark.parametrize("case", F32_CASES, ids=[c.id for c in F32_CASES])
def test_float32(case):
    results = {}
    for dtype in (np.float32, np.float64):
        arrays = _tg_inputs(case, dtype)
        xs = [tg.tensor(a, requires_grad=a.dtype.kind == "f") if a.dtype.kind == "f"
              else tg.tensor(a) for a in arrays]
        y = case.fn(tg, *xs)
        assert y.dtype == dtype, f"{case.id}: output is {y.dtype} for {dtype.__name__} inputs"
        w = rng_for(case.id + "w").standard_normal(y.shape).astype(dtype)
        (y * tg.tensor(w)).sum().backward()
        grads = [x.grad for x in xs if x.requires_grad]
        for g in grads:
            assert g is None or g.dtype == dtype
        results[dtype] = (y.data, [None if g is None else g.data for g in grads])
    (y32, g32), (y64, g64) = results[np.float32], results[np.float64]
    scale = max(1.0, float(np.abs(y64).max(initial=0.0)))
    np.testing.assert_allclose(y32, y64, rtol=1e-5, atol=1e-5 * scale)
    for a, b in zip(g32, g64):
        if b is not None:
            scale = max(1.0, float(np.abs(b).max(initial=0.0)))
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * scale)


def test_float32_large_logsumexp():
    x = tg.tensor(np.array([[1000.0, 999.0], [88.0, 89.0]], np.float32), requires_grad=True)
    y = tg.logsumexp(x, 1)
    assert y.dtype == np.float32 and np.isfinite(y.data).all()
    y.sum().backward()
    assert x.grad.dtype == np.float32
    np.testing.assert_allclose(x.grad.data.sum(1), 1.0, rtol=1e-6)


# ---- PyTorch parity ------------------------------------------------------------------------

TORCH_CASES = [c for c in CASES if c.torch]


def _to_torch(torch, a):
    if a.dtype.kind == "f":
        return torch.tensor(a, dtype=torch.float64, requires_grad=True)
    return torch.from_numpy(a.copy())


@pytest.mark.parametrize("case", TORCH_CASES, ids=[c.id for c in TORCH_CASES])
def test_matches_torch(case):
    """Values and gradients agree with PyTorch in float64, and so do grad_fn names."""
    torch = pytest.importorskip("torch")
    arrays = _tg_inputs(case)
    xs = [tg.tensor(a, requires_grad=a.dtype.kind == "f") for a in arrays]
    txs = [_to_torch(torch, a) for a in arrays]
    y = case.fn(tg, *xs)
    ty = case.fn(torch, *txs)
    np.testing.assert_allclose(y.data, ty.detach().numpy(), rtol=1e-13, atol=1e-14)
    assert y.shape == tuple(ty.shape)
    if case.name:
        assert y.grad_fn.name() == ty.grad_fn.name()
    w = rng_for(case.id + "w").standard_normal(y.shape)
    diff = [i for i, a in enumerate(arrays) if a.dtype.kind == "f"]
    gs = autograd.grad((y * tg.tensor(w)).sum(), [xs[i] for i in diff], allow_unused=True)
    tgs = torch.autograd.grad((ty * torch.tensor(w)).sum(), [txs[i] for i in diff],
                              allow_unused=True, create_graph=case.second_order)
    for g, tgrad in zip(gs, tgs):
        expected = np.zeros(g.shape) if tgrad is None else tgrad.detach().numpy()
        np.testing.assert_allclose(g.data, expected, rtol=1e-12, atol=1e-13)
    if case.second_order:
        # Hessian-vector product of sum(w * f) along random directions, against torch's.
        r = rng_for(case.id + "t")
        ts = [r.standard_normal(arrays[i].shape) for i in diff]
        xs2 = [tg.tensor(a, requires_grad=a.dtype.kind == "f") for a in arrays]
        L = tg.sum(case.fn(tg, *xs2) * tg.tensor(w))
        hv = autograd.hvp_of_graph(L, [xs2[i] for i in diff], ts)
        live = [(i, g) for i, g in zip(diff, tgs) if g is not None and g.requires_grad]
        dot = sum(((g * torch.tensor(ts[diff.index(i)])).sum() for i, g in live),
                  torch.tensor(0.0, dtype=torch.float64))
        if live and dot.requires_grad:
            thv = torch.autograd.grad(dot, [txs[i] for i in diff], allow_unused=True)
        else:
            thv = [None] * len(diff)
        for h, th in zip(hv, thv):
            expected = np.zeros(h.shape) if th is None else th.numpy(force=True)
            np.testing.assert_allclose(h.data, expected, rtol=1e-11, atol=1e-12)


# ---- broadcasting, property-based -----------------------------------------------------------

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings, strategies as st  # noqa: E402
from hypothesis.extra.numpy import mutually_broadcastable_shapes  # noqa: E402

BINARY = {
    "add": (lambda a, b: a + b, N, N),
    "sub": (lambda a, b: a - b, N, N),
    "mul": (lambda a, b: a * b, N, N),
    "div": (lambda a, b: a / b, N, A),
    "pow": (lambda a, b: a ** b, P, N),
    "where": (lambda a, b: tg.where(a > 0, a, b), A, N),
}


@settings(max_examples=30, deadline=None, derandomize=True)
@given(shapes=mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=3, max_side=3),
       op=st.sampled_from(sorted(BINARY) + ["maximum", "minimum"]),
       seed=st.integers(0, 2 ** 16))
def test_binary_broadcasting(shapes, op, seed):
    """Any two broadcastable shapes (0-d, size 1, either side larger): all three checks."""
    sa, sb = shapes.input_shapes
    r = np.random.default_rng(seed)
    if op in BINARY:
        fn, ga, gb = BINARY[op]
        inputs = [ga(*sa)(r), gb(*sb)(r)]
    else:
        fn = getattr(tg, op)
        inputs = apart(sa, sb)(r)
    assert gradcheck(fn, inputs)


def test_sums_of_squares_are_one_entry_while_tracing():
    """sum(x * x, axis) and mean(x ** 2, axis) trace as one segsumsq (the square drops out of
    the tape unless something else reads it); eager graphs keep PyTorch's structure."""
    names = [p.name for p in tg.trace(lambda x: tg.sum(tg.sum(x * x, 1)), np.ones((3, 2))).prims]
    assert names == ["segsumsq", "total"]
    names = [p.name for p in tg.trace(lambda x: tg.sum(tg.mean(x ** 2, 0) + x[0] ** 2),
                                      np.ones((3, 2))).prims]
    assert names.count("segsumsq") == 1 and names.count("square") == 1
    names = [p.name for p in tg.trace(lambda x: tg.sum(tg.sum(x * x, 1) * tg.sum(x * x)),
                                      np.ones((3, 2))).prims]
    assert names.count("segsumsq") == 1 and names.count("mul") == 2     # x * x read twice
    x = tg.tensor(np.arange(6.0).reshape(3, 2), requires_grad=True)
    s = (x * x).sum(1)
    assert s.grad_fn.name() == "SumBackward1"
    assert s.grad_fn.next_functions[0][0].name() == "MulBackward0"
    s.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), 2 * x.detach().numpy())


def test_pair_differences_are_one_entry():
    """x[I] - x[J] of one tensor is recorded as one gather_diff (the gathers drop out of the
    tape); gathers of two tensors, or used elsewhere too, stay as recorded."""
    I, J = np.array([0, 0, 1]), np.array([1, 2, 2])
    names = [p.name for p in tg.trace(lambda x: tg.sum((x[I] - x[J]) ** 2), np.ones((3, 2))).prims]
    assert names.count("gather_diff") == 1 and "gather" not in names and "sub" not in names
    names = [p.name for p in tg.trace(lambda x, y: tg.sum(x[I] - y[J]), np.ones(3), np.ones(3)).prims]
    assert "gather_diff" not in names
    names = [p.name for p in tg.trace(lambda x: tg.sum((x[I] - x[J]) * x[I]), np.ones(3)).prims]
    assert names.count("gather_diff") == 1 and names.count("gather") == 1
    x = tg.tensor(np.array([1.0, 4.0, 9.0]), requires_grad=True)
    d = x[I] - x[J]
    assert d.grad_fn.name() == "SubBackward0"
    (d * d).sum().backward()
    d0, d1, d2 = -3.0, -8.0, -5.0                  # x0 - x1, x0 - x2, x1 - x2
    np.testing.assert_allclose(x.grad.data, [2 * (d0 + d1), 2 * (d2 - d0), -2 * (d1 + d2)])


def test_pair_differences_keep_the_gathers_of_an_eager_graph():
    """Eagerly the gathers stay on the way to the output, as in PyTorch: retain_grad on x[I],
    called after the difference, gets its gradient (PyTorch: [-6, -16, -10])."""
    I, J = np.array([0, 0, 1]), np.array([1, 2, 2])
    x = tg.tensor(np.array([1.0, 4.0, 9.0]), requires_grad=True)
    a = x[I]
    d = a - x[J]
    a.retain_grad()
    assert d.grad_fn.next_functions[0][0].name() == "IndexBackward0"
    (d * d).sum().backward()
    np.testing.assert_allclose(a.grad.data, [-6.0, -16.0, -10.0])
    np.testing.assert_allclose(x.grad.data, [-22.0, -4.0, 26.0])


@pytest.mark.parametrize("dtype", ["float64", "float32", "int64", "int32", "bool"])
def test_cube_value_and_dtype_follow_numpy(dtype):
    """x ** 3 is computed as x * x * x (the interpreters' value) in numpy's result dtype."""
    x = np.array([-2, 0, 1, 3], dtype=dtype)
    got = tg.tensor(x) ** 3
    assert got.dtype == (x ** 3).dtype
    np.testing.assert_array_equal(got.numpy(), x ** 3)
    if dtype.startswith("float"):
        v = np.array([0.1, -1.7, 3.3], dtype)
        np.testing.assert_array_equal((tg.tensor(v) ** 3).numpy(), v * v * v)
