"""softmax: numpy's softmax (`e = np.exp(v - np.max(v)); e / np.sum(e)`) traced as one entry.

References: the five entries it replaces (recorded when the pattern is broken on purpose, the
values the same to the bit in float64), the closed forms J = diag(y) - y y^T and
d2 y_k / dx_i dx_j, finite differences (`gradcheck`), HIPS autograd."""
import autograd
import autograd.numpy as anp
import numpy as np
import pytest

import tapegrad as tg
from tapegrad.core.registry import BY_NAME
from tapegrad.testing import gradcheck

RNG = np.random.default_rng(11)
W4 = np.array([0.3, -1.2, 2.0, 0.7])


def softmax(v):
    e = np.exp(v - np.max(v))
    return e / np.sum(e)


def softmax_unfused(v):
    """The same operations, the sum scaled by 1.0 (a `mul_const` between `total` and `div`):
    the five entries stay."""
    e = np.exp(v - np.max(v))
    return e / (np.sum(e) * 1.0)


def _prims(f, *args):
    return [p.name for p in tg.trace(f, *args).prims]


def _closed_form_hessian(x, w):
    """The Hessian of sum(w * softmax(x)): d2 y_k / dx_i dx_j = y_k ((d_ki - y_i)(d_kj - y_j)
    - y_i (d_ij - y_j))."""
    y = np.exp(x - x.max())
    y /= y.sum()
    n = x.size
    d = np.eye(n)
    H = np.zeros((n, n))
    for k in range(n):
        H += w[k] * y[k] * (np.outer(d[k] - y, d[k] - y) - y[:, None] * (d - y[None, :]))
    return H


# ---- the record-time rule ------------------------------------------------------------------

@pytest.mark.parametrize("form", [
    lambda v: softmax(v),
    lambda v: (lambda e: e / e.sum())(np.exp(v - v.max())),
    lambda v: (lambda e: e / np.sum(e, keepdims=True))(np.exp(v - np.amax(v, keepdims=True))),
], ids=["functions", "methods", "keepdims"])
def test_numpy_softmax_is_one_entry(form):
    names = _prims(lambda v: np.dot(W4, form(v)), np.zeros(4))
    assert names.count("softmax") == 1
    for gone in ("segmax", "sub", "exp", "total", "div"):
        assert gone not in names, names


def test_other_forms_stay_as_written():
    """A different maximum, a mean, a scaled sum, exp without the shift: not softmax."""
    v = np.zeros(4)
    assert "softmax" not in _prims(lambda v: np.sum(softmax_unfused(v)), v)
    assert "softmax" not in _prims(
        lambda v: np.sum((lambda e: e / np.mean(e))(np.exp(v - np.max(v)))), v)
    assert "softmax" not in _prims(
        lambda v: np.sum((lambda e: e / np.sum(e))(np.exp(v - np.max(2.0 * v)))), v)
    assert "softmax" not in _prims(lambda v: np.sum(np.exp(v) / np.sum(np.exp(v))), v)


def test_intermediates_used_elsewhere_stay():
    """log-sum-exp and the softmax of the same values: the five nodes stay for the other use,
    the softmax is one entry beside them, and both derivatives are right."""
    def f(v):
        m = np.max(v)
        e = np.exp(v - m)
        s = np.sum(e)
        return np.dot(W4, e / s) + m + np.log(s)

    names = _prims(f, np.zeros(4))
    assert names.count("softmax") == 1 and "div" not in names and "total" in names
    x = RNG.standard_normal(4)
    autograd_f = lambda v: anp.dot(W4, anp.exp(v - anp.max(v)) / anp.sum(anp.exp(v - anp.max(v)))) \
        + anp.log(anp.sum(anp.exp(v)))
    np.testing.assert_allclose(tg.grad(f)(x), autograd.grad(autograd_f)(x), rtol=1e-12)


def test_tapegrad_softmax_of_everything_is_one_entry():
    """`tapegrad.softmax` over every axis, traced: one entry with PyTorch's semantics (a
    maximum that is not finite replaced by 0), the values of the eager function; over one
    axis of several it stays as recorded."""
    assert _prims(lambda v: tg.sum(tg.softmax(v) * W4), np.zeros(4)).count("softmax") == 1
    assert "softmax" not in _prims(lambda v: tg.sum(tg.softmax(v, axis=1)), np.zeros((2, 3)))
    with np.errstate(all="ignore"):
        for x in (RNG.standard_normal(4), np.array([np.inf, 1.0, 2.0, -np.inf]),
                  np.array([-np.inf] * 4), np.array([3.0, np.nan, 1.0, 0.0])):
            eager = tg.softmax(tg.tensor(x)).numpy()
            traced = tg.trace(lambda v: tg.softmax(v), x)(x)
            np.testing.assert_array_equal(traced, eager)
    x = RNG.standard_normal(4)
    y = np.exp(x - x.max()) / np.exp(x - x.max()).sum()
    np.testing.assert_allclose(tg.grad(lambda v: tg.sum(tg.softmax(v) * W4))(x),
                               y * (W4 - np.dot(W4, y)), rtol=1e-12)


def test_eager_graphs_keep_their_nodes():
    """Outside a trace the graph is PyTorch's: grad_fn and retain_grad see every node."""
    v = tg.tensor(RNG.standard_normal(4), requires_grad=True)
    e = tg.exp(v - tg.amax(v))
    e.retain_grad()
    y = e / tg.sum(e)
    assert y.grad_fn.name() == "DivBackward0"
    assert y.grad_fn.next_functions[0][0].name() == "ExpBackward0"
    (y * tg.tensor(W4)).sum().backward()
    yv = y.detach().numpy()
    np.testing.assert_allclose(v.grad.numpy(), yv * (W4 - np.dot(W4, yv)), rtol=1e-12)
    assert e.grad is not None


# ---- values and derivatives -------------------------------------------------------------------

@pytest.mark.parametrize("n", [1, 4, 7, 8, 45, 300])
def test_values_are_the_five_entries_bits(n):
    """float64: the replay gives the bits the five entries' replay gives (the same operations
    in the same order, numpy's pairwise sum from 8 values), and numpy's value to rounding."""
    x = 3.0 * RNG.standard_normal(n)
    fused = tg.value_and_grad(lambda v: np.sum(softmax(v) ** 2))
    unfused = tg.value_and_grad(lambda v: np.sum(softmax_unfused(v) ** 2))
    val, g = fused(x)
    val_u, g_u = unfused(x)
    assert val == val_u
    y = softmax(x)
    np.testing.assert_allclose(val, np.sum(y ** 2), rtol=1e-14)
    np.testing.assert_allclose(g, g_u, rtol=1e-12, atol=1e-300)
    np.testing.assert_array_equal(tg.trace(softmax, x)(x), tg.trace(softmax_unfused, x)(x))


@pytest.mark.parametrize("n", [1, 3, 8, 20])
def test_gradcheck(n):
    w = RNG.standard_normal(n)
    gradcheck(lambda v: tg.sum(softmax(v) * w), [RNG.standard_normal(n)])
    gradcheck(lambda v: softmax(v), [RNG.standard_normal(n)])


def test_jacobian_and_hessian_closed_forms():
    x = RNG.standard_normal(5)
    y = np.exp(x - x.max()) / np.exp(x - x.max()).sum()
    J = np.diag(y) - np.outer(y, y)
    np.testing.assert_allclose(tg.jacrev(softmax)(x), J, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(tg.jacfwd(softmax)(x), J, rtol=1e-12, atol=1e-15)
    w = RNG.standard_normal(5)
    loss = lambda v: np.dot(w, softmax(v))
    H = _closed_form_hessian(x, w)
    np.testing.assert_allclose(tg.hessian(loss)(x), H, rtol=1e-10, atol=1e-14)
    t = RNG.standard_normal(5)
    np.testing.assert_allclose(tg.hvp(loss, x, t), H @ t, rtol=1e-10, atol=1e-14)
    sparse = tg.hessian(loss, sparsity="auto")(x)
    assert sparse.nnz == 25          # every pair couples
    np.testing.assert_allclose(sparse.toarray(), H, rtol=1e-10, atol=1e-14)


def test_large_values_ties_and_nan():
    """The maximum subtracted: values of 1000 do not overflow; ties at the maximum share
    nothing (the gradient does not depend on the maximum's position); NaN propagates."""
    g = tg.grad(lambda v: np.dot(W4, softmax(v)))
    x = np.array([1000.0, 999.0, 1000.0, -1000.0])
    y = np.exp(x - 1000.0) / np.exp(x - 1000.0).sum()
    np.testing.assert_allclose(g(x), y * (W4 - np.dot(W4, y)), rtol=1e-13, atol=1e-300)
    np.testing.assert_allclose(g(x), autograd.grad(
        lambda v: anp.dot(W4, anp.exp(v - anp.max(v)) / anp.sum(anp.exp(v - anp.max(v)))))(x),
        rtol=1e-12, atol=1e-300)
    with np.errstate(invalid="ignore"):
        out = tg.value_and_grad(lambda v: np.dot(W4, softmax(v)))(
            np.array([0.0, np.nan, 1.0, 2.0]))
    assert np.isnan(out[0]) and np.all(np.isnan(out[1]))


def test_float32_and_whole_arrays():
    """A 2-D array's softmax over every value; float32 values to float32 rounding."""
    x = RNG.standard_normal((3, 4))
    W = RNG.standard_normal((3, 4))
    f = lambda v: np.sum(W * softmax(v))
    assert "softmax" in _prims(f, x)
    np.testing.assert_allclose(tg.grad(f)(x), autograd.grad(
        lambda v: anp.sum(W * anp.exp(v - anp.max(v)) / anp.sum(anp.exp(v - anp.max(v)))))(x),
        rtol=1e-12)
    x32 = x.astype(np.float32)
    val, g = tg.value_and_grad(f)(x32)
    assert g.dtype == np.float32
    np.testing.assert_allclose(val, f(x), rtol=1e-5)
    np.testing.assert_allclose(g, tg.grad(f)(x), rtol=1e-4, atol=1e-6)


def test_batched_replay_agrees_with_one_point():
    w = RNG.standard_normal(6)
    f = tg.grad(lambda v: np.dot(w, softmax(v)) + np.sum(v ** 2) * 0.1)
    X = RNG.standard_normal((50, 6)) * 4.0
    expected = np.stack([f(x) for x in X])
    np.testing.assert_allclose(tg.vmap(f)(X), expected, rtol=1e-12, atol=1e-15)


def test_faw_softmax_of_four_nodes():
    """The benchmark's form: np.stack of four scalars, softmax, the four values read back."""
    def f(x):
        nodes = [x[i] for i in range(6)]
        for _ in range(3):
            nodes.extend(softmax(np.stack(nodes[-4:])))
            nodes.append(np.logaddexp(0.0, nodes[-1]) * nodes[-6])
        return nodes[-1]

    x = RNG.standard_normal(6)
    assert _prims(f, x).count("softmax") == 3
    ref = autograd.grad(lambda x: _autograd_faw(x))(x)
    np.testing.assert_allclose(tg.grad(f)(x), ref, rtol=1e-12)


def _autograd_faw(x):
    nodes = [x[i] for i in range(6)]
    for _ in range(3):
        v = anp.stack(nodes[-4:])
        e = anp.exp(v - anp.max(v))
        y = e / anp.sum(e)
        nodes.extend([y[i] for i in range(4)])
        nodes.append(anp.logaddexp(0.0, nodes[-1]) * nodes[-6])
    return nodes[-1]


def test_sparse_jacobian_pattern():
    """Each softmax value reads every operand value; the rest stays diagonal."""
    f = lambda v: np.concatenate([softmax(v[:3]), v[3:] ** 2])
    J = tg.jacobian(f, sparsity="auto")(RNG.standard_normal(5))
    pattern = np.zeros((5, 5), bool)
    pattern[:3, :3] = pattern[3, 3] = pattern[4, 4] = True
    np.testing.assert_array_equal(J.toarray() != 0, pattern)


# ---- a tape from outside -----------------------------------------------------------------------

def test_saved_tape_round_trips_and_bad_entries_are_refused(tmp_path):
    f = lambda v: np.dot(W4, softmax(v))
    tape = tg.trace(f, np.zeros(4))
    path = tmp_path / "softmax.npz"
    tape.save(str(path))
    loaded = tg.load(str(path))
    x = RNG.standard_normal(4)
    np.testing.assert_allclose(loaded(x), f(x), rtol=1e-14)
    softmax_prim = BY_NAME["softmax"]
    assert softmax_prim.check(np.zeros(1, np.int64), 4, [4]) is not None
    assert softmax_prim.check(np.zeros(0, np.int64), 4, [3]) is not None
    assert softmax_prim.check(np.zeros(0, np.int64), 0, [0]) is not None
    assert softmax_prim.check(np.zeros(0, np.int64), 4, [4]) is None
