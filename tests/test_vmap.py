"""vmap: batched replay of functions and of every transform, against a Python loop.

Every case compares `tg.vmap(fn, in_axes)(*args)` with the loop `[fn(*point) for point in batch]`
of the unbatched function (results stacked along a new first axis): same pytree structure, same
shapes and dtypes, values equal to rounding (and exactly equal where the branches of a piecewise
function alternate point by point). Then: matmul, integer-array indexing, reductions, where /
maximum, cat / stack; float32; the per-point guard fallback; errors; bounded memory for a large
chunked batch; progress bars with and without tqdm.
"""
import functools
import os
import subprocess
import sys
import tracemalloc
import warnings

import numpy as np
import pytest

import tapegrad as tg
from tapegrad.core import pytree as _pytree

from conftest import rng_for

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---- helpers ------------------------------------------------------------------------------------

def _numpy(x):
    return np.asarray(x.data if isinstance(x, tg.Tensor) else x)


def _points(args, in_axes, size):
    if isinstance(in_axes, int):
        in_axes = (in_axes,) * len(args)
    for q in range(size):
        yield tuple(arg if axis is None else _pytree.unflatten(
            _pytree.flatten(arg)[1], [np.take(leaf, q, axis=axis)
                                      for leaf in _pytree.flatten(arg)[0]])
            for arg, axis in zip(args, in_axes))


def _batch_size(args, in_axes):
    if isinstance(in_axes, int):
        in_axes = (in_axes,) * len(args)
    for arg, axis in zip(args, in_axes):
        if axis is not None:
            return np.shape(_pytree.flatten(arg)[0][0])[axis]
    raise AssertionError("no batched argument")


def loop(fn, args, in_axes=0):
    """The unbatched `fn` at every point, results stacked along a new first axis."""
    results = [fn(*point) for point in _points(args, in_axes, _batch_size(args, in_axes))]
    structure = _pytree.flatten(results[0])[1]
    for r in results:
        assert _pytree.flatten(r)[1] == structure
    columns = zip(*[_pytree.flatten(r)[0] for r in results])
    return _pytree.unflatten(structure, [np.stack([_numpy(x) for x in c]) for c in columns])


def assert_same(actual, expected, rtol=1e-12, atol=1e-12, exact=False):
    a, sa = _pytree.flatten(actual)
    e, se = _pytree.flatten(expected)
    assert sa == se, f"structure {_pytree.describe(sa)} != {_pytree.describe(se)}"
    for x, y in zip(a, e):
        assert isinstance(x, np.ndarray), type(x)
        assert x.shape == y.shape, (x.shape, y.shape)
        assert x.dtype == y.dtype, (x.dtype, y.dtype)
        if exact:
            np.testing.assert_array_equal(x, y)
        else:
            np.testing.assert_allclose(x, y, rtol=rtol, atol=atol)


def check(fn, *args, in_axes=0, exact=False, rtol=1e-12, atol=1e-12, **options):
    got = tg.vmap(fn, in_axes=in_axes, **options)(*args)
    want = loop(fn, args, in_axes)
    assert_same(got, want, rtol=rtol, atol=atol, exact=exact)
    return got


# ---- functions ----------------------------------------------------------------------------------

def smooth(x):
    return tg.sum(tg.sin(x) * x ** 2) + tg.exp(x[0]) * x[-1]


def two_args(x, y):
    return tg.sum(x * y ** 2) + tg.sum(tg.tanh(x)) * y[0]


def vector(x):
    return tg.sin(x) * x[0] + x ** 3


def tree_arg(p):
    return tg.sum(p["w"] * p["b"][0] ** 2) + p["b"][1] * tg.sum(p["w"])


# ---- plain functions ----------------------------------------------------------------------------

def test_plain_function_scalar_output():
    X = rng_for("plain scalar").standard_normal((53, 4))
    out = check(smooth, X)
    assert out.shape == (53,)


def test_plain_function_array_output():
    X = rng_for("plain array").standard_normal((40, 3))
    assert check(vector, X).shape == (40, 3)
    assert check(lambda x: tg.reshape(x, (3, 1)) * x, X).shape == (40, 3, 3)


def test_plain_function_pytree_output():
    X = rng_for("plain tree").standard_normal((31, 3))
    out = check(lambda x: {"sum": tg.sum(x), "pair": (x * 2.0, tg.exp(x[1])), "list": [x[0]]}, X)
    assert out["pair"][0].shape == (31, 3) and out["sum"].shape == (31,)


def test_per_point_scalars():
    s = rng_for("per point scalars").standard_normal(37)
    check(lambda x: tg.sin(x) * x, s)
    check(tg.grad(lambda x: tg.sin(x) * x), s)
    check(tg.hessian(lambda x: tg.sin(x) * x ** 3), s)


def test_tensor_arguments():
    X = rng_for("tensor arguments").standard_normal((20, 3))
    assert_same(tg.vmap(tg.grad(smooth))(tg.tensor(X)), loop(tg.grad(smooth), (X,)))


# ---- grad, value_and_grad ------------------------------------------------------------------------

def test_grad():
    X = rng_for("grad").standard_normal((64, 5))
    check(tg.grad(smooth), X)


@pytest.mark.parametrize("argnums", [0, 1, -1, (0, 1), (1,), (1, 0)])
def test_grad_argnums(argnums):
    rng = rng_for(f"grad argnums {argnums}")
    X, Y = rng.standard_normal((33, 4)), rng.standard_normal((33, 4))
    out = check(tg.grad(two_args, argnums=argnums), X, Y)
    assert isinstance(out, tuple) == isinstance(argnums, tuple)


def test_grad_of_pytree_arguments():
    rng = rng_for("grad pytree")
    P = {"w": rng.standard_normal((25, 3)), "b": (rng.standard_normal((25, 3)),
                                                 rng.standard_normal(25))}
    out = check(tg.grad(tree_arg), P)
    assert set(out) == {"w", "b"} and isinstance(out["b"], tuple)
    # a pytree argument next to a plain one, both differentiated
    f = lambda p, x: tree_arg(p) * tg.sum(x)  # noqa: E731
    check(tg.grad(f, argnums=(0, 1)), P, rng.standard_normal((25, 2)))


def test_value_and_grad():
    rng = rng_for("value_and_grad")
    X, Y = rng.standard_normal((29, 4)), rng.standard_normal((29, 4))
    check(tg.value_and_grad(smooth), X)
    value, grads = check(tg.value_and_grad(two_args, argnums=(0, 1)), X, Y)
    assert value.shape == (29,) and len(grads) == 2


# ---- jacobians, hessian, jvp ---------------------------------------------------------------------

@pytest.mark.parametrize("jac", [tg.jacrev, tg.jacfwd])
def test_jacobians(jac):
    rng = rng_for(f"jacobians {jac.__name__}")
    X, Y = rng.standard_normal((30, 3)), rng.standard_normal((30, 2))
    assert check(jac(vector), X).shape == (30, 3, 3)
    check(jac(lambda x, y: x * tg.sum(y ** 2), argnums=(0, 1)), X, Y)
    check(jac(lambda x, y: x * tg.sum(y ** 2), argnums=1), X, Y)
    # tree output, tree argument
    check(jac(lambda p: (tg.sum(p["w"]) * p["b"][1], p["w"] * p["b"][0])),
          {"w": X, "b": (Y[:, :1] * 1.0, Y[:, 1])})
    check(jac(lambda x: tg.sum(x ** 2)), X)        # scalar output: one row


def test_hessian():
    X = rng_for("hessian").standard_normal((27, 4))
    assert check(tg.hessian(smooth), X).shape == (27, 4, 4)


def test_hessian_of_a_second_argument():
    rng = rng_for("hessian argnums")
    X, Y = rng.standard_normal((21, 3)), rng.standard_normal((21, 3))
    check(tg.hessian(two_args, argnums=1), X, Y)


def test_hessian_of_pytree_and_tuple_arguments():
    rng = rng_for("hessian trees")
    X, Y = rng.standard_normal((17, 3)), rng.standard_normal((17, 2))
    out = check(tg.hessian(lambda p: tg.sum(p["a"] ** 3) * tg.sum(p["b"])), {"a": X, "b": Y})
    assert out["a"]["b"].shape == (17, 3, 2)
    out = check(tg.hessian(lambda x, y: tg.sum(x ** 2 * y[0]) + tg.sum(tg.sin(y)),
                           argnums=(0, 1)), X, Y)
    assert out[0][1].shape == (17, 3, 2)
    check(tg.hessian(smooth, argnums=(0,)), X)


def test_jvp():
    rng = rng_for("jvp")
    X, T = rng.standard_normal((35, 4)), rng.standard_normal((35, 4))
    f = lambda x: tg.sin(x) * x[0]  # noqa: E731
    got = tg.vmap(functools.partial(tg.jvp, f))((X,), (T,))
    want = loop(lambda x, t: tg.jvp(f, (x,), (t,)), (X, T))
    assert_same(got, want)


def test_jvp_of_two_arguments_and_broadcast_tangents():
    rng = rng_for("jvp two")
    X, Y = rng.standard_normal((22, 3)), rng.standard_normal((22, 3))
    t = rng.standard_normal(3)
    f = lambda x, y: (tg.sum(x * y), tg.exp(x) * y)  # noqa: E731
    got = tg.vmap(functools.partial(tg.jvp, f))((X, Y), (Y, X))
    want = loop(lambda x, y: tg.jvp(f, (x, y), (y, x)), (X, Y))
    assert_same(got, want)
    # the tangents shared by every point (in_axes None), the primals batched
    got = tg.vmap(functools.partial(tg.jvp, lambda x: tg.sin(x) * x), in_axes=(0, None))((X,), (t,))
    want = loop(lambda x: tg.jvp(lambda x: tg.sin(x) * x, (x,), (t,)), (X,))
    assert_same(got, want)


def test_nested_transforms():
    """A tape with nested-transform entries is not replayed in the batched interpreters: vmap
    loops over the points; the results are the same."""
    X = rng_for("nested").standard_normal((12, 3))
    check(tg.jacfwd(tg.grad(smooth)), X, rtol=1e-10)
    check(tg.grad(lambda x: tg.sum(tg.grad(smooth)(x) ** 2)), X, rtol=1e-10)
    check(lambda x: tg.grad(smooth)(x) * 2.0, X, rtol=1e-10)


# ---- in_axes -------------------------------------------------------------------------------------

def test_in_axes_none_broadcasts_an_argument():
    rng = rng_for("in_axes none")
    X, w = rng.standard_normal((26, 4)), rng.standard_normal(4)
    check(tg.grad(two_args), X, w, in_axes=(0, None))
    check(tg.grad(two_args, argnums=1), X, w, in_axes=(0, None))   # per-point grad w.r.t. w
    check(tg.grad(two_args, argnums=(0, 1)), w, X, in_axes=(None, 0))
    check(lambda x, a: tg.sum(x) * a, X, 2.5, in_axes=(0, None))
    check(tg.grad(lambda x, a: tg.sum(x ** 2) * a, argnums=1), X, 2.5, in_axes=(0, None))


def test_in_axes_one():
    rng = rng_for("in_axes one")
    XT = rng.standard_normal((4, 19))                 # points along axis 1
    assert check(tg.grad(smooth), XT, in_axes=1).shape == (19, 4)
    check(tg.grad(two_args, argnums=(0, 1)), XT, rng.standard_normal((19, 4)), in_axes=(1, 0))
    A = rng.standard_normal((3, 11, 2))
    check(lambda a: tg.sum(a * a, 1), A, in_axes=1)
    check(tg.grad(lambda a: tg.sum(a ** 3)), A, in_axes=-1)


def test_an_int_in_axes_applies_to_every_argument():
    rng = rng_for("in_axes int")
    X, Y = rng.standard_normal((3, 12)), rng.standard_normal((4, 12))
    check(tg.grad(lambda x, y: tg.sum(x) * tg.sum(y ** 2), argnums=(0, 1)), X, Y, in_axes=1)


# ---- branches: exact, whatever the mix -----------------------------------------------------------

def piecewise(x):
    if x[0] > 0:
        return x[0] ** 2 * x[1] + 3.0 * x[1]
    return x[1] * x[1] * x[0] - x[0] / (x[1] * x[1] + 1.0)


def three_branches(x):
    if x[0] > 1.0:
        return x[0] * x[1] * x[1]
    elif x[0] > -1.0:
        return x[1] ** 2 * 0.5 + x[0] * x[0] * x[0]
    return (x[0] - x[1]) * (x[0] + 2.0) * x[1]


def alternating(B, rng):
    X = rng.standard_normal((B, 2))
    X[0::2, 0] = np.abs(X[0::2, 0]) + 0.1
    X[1::2, 0] = -np.abs(X[1::2, 0]) - 0.1
    return X


@pytest.mark.parametrize("transform", ["value", "grad", "value_and_grad", "jacfwd", "hessian"])
def test_alternating_branches_are_exact(transform):
    fn = piecewise if transform == "value" else getattr(tg, transform)(piecewise)
    X = alternating(301, rng_for(f"alternating {transform}"))
    check(fn, X, exact=True)
    check(fn, X, exact=True, chunk_size=7)          # branches across chunk boundaries


@pytest.mark.parametrize("transform", ["value", "grad", "jacrev", "hessian"])
def test_three_branches_are_exact(transform):
    fn = three_branches if transform == "value" else getattr(tg, transform)(three_branches)
    X = np.repeat(np.array([[1.5, 0.3], [0.2, -0.7], [-1.6, 1.1]]), 40, axis=0)
    X = X + 0.01 * rng_for(f"three {transform}").standard_normal(X.shape)
    X = X[np.argsort(np.arange(len(X)) % 3, kind="stable")][::-1].copy()  # grouped, then mixed
    X = X[np.arange(len(X)).reshape(3, -1).T.ravel()]                     # round robin
    check(fn, X, exact=True)
    check(fn, X, exact=True, chunk_size=5)


def test_branches_taken_by_no_traced_point_are_traced_on_demand():
    """The first point takes the first branch; later chunks bring the others."""
    X = np.concatenate([np.full((50, 2), 2.0), np.full((50, 2), 0.5), np.full((50, 2), -3.0)])
    X += 0.01 * rng_for("on demand").standard_normal(X.shape)
    check(tg.grad(three_branches), X, exact=True, chunk_size=16)


def _rounding_point():
    """An x whose exp rounds differently in numpy and in the interpreters, or None."""
    xs = np.linspace(0.5, 3.5, 4001)
    interp = tg.vmap(lambda x: tg.exp(x))(xs)
    lower = np.nonzero(interp < np.exp(xs))[0]
    return (xs[lower[0]], interp[lower[0]]) if lower.size else None


@pytest.mark.parametrize("transform", ["value", "grad", "value_and_grad", "jacrev", "jacfwd",
                                       "hessian"])
def test_a_point_whose_guard_rounds_differently_is_evaluated_alone(transform):
    """numpy's exp(x0) > c at trace time, the interpreter's exp(x0) == c at replay: the point
    fails the guards of the very tape traced at it, and vmap falls back to `fn` at that point."""
    found = _rounding_point()
    if found is None:
        pytest.skip("numpy's exp and the interpreter's agree on this machine")
    x0, c = found

    def f(x, y):
        if tg.exp(x[0]) > c:
            return x ** 2 * y[0] + tg.sum(x) * y[1]
        return tg.sin(x) * y[1]

    def scalar(x, y):
        return tg.sum(f(x, y))

    fn = {"value": f, "grad": tg.grad(scalar, argnums=(0, 1)),
          "value_and_grad": tg.value_and_grad(scalar, argnums=(0, 1)),
          "jacrev": tg.jacrev(lambda x, y: (f(x, y), scalar(x, y)), argnums=(0, 1)),
          "jacfwd": tg.jacfwd(lambda x, y: (f(x, y), scalar(x, y)), argnums=(0, 1)),
          "hessian": tg.hessian(scalar)}[transform]
    X = np.array([[x0, 0.5, 0.25], [1.0, 2.0, 3.0], [x0, -1.0, 2.0], [4.0, 1.0, 1.0]])
    Y = np.array([[1.5, 2.0], [0.5, 3.0], [2.0, 1.0], [1.0, 1.0]])
    check(fn, X, Y)


# ---- dtypes --------------------------------------------------------------------------------------

@pytest.mark.parametrize("transform", ["value", "grad", "value_and_grad", "jacrev", "jacfwd",
                                       "hessian"])
def test_float32_stays_float32(transform):
    fn = vector if transform in ("value", "jacrev", "jacfwd") else smooth
    fn = fn if transform == "value" else getattr(tg, transform)(fn)
    X = rng_for(f"float32 {transform}").standard_normal((45, 3))
    got32 = tg.vmap(fn)(X.astype(np.float32))
    got64 = tg.vmap(fn)(X)
    for a, b in zip(_pytree.flatten(got32)[0], _pytree.flatten(got64)[0]):
        assert a.dtype == np.float32 and b.dtype == np.float64
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-5)
    check(fn, X.astype(np.float32), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("transform", ["value", "grad", "value_and_grad", "jacrev", "jacfwd",
                                       "hessian"])
def test_promoted_float32_arguments_get_the_unbatched_dtypes(transform):
    """float64 constants promote a float32 argument's tape to float64: the value is float64 (numpy's
    promotion), a gradient and a Hessian's rows are in the argument's dtype, as the unbatched
    transform gives them (JAX's rule), point by point."""
    weights = np.array([1.0, -2.0, 0.5])

    def f(x, y):
        return np.tanh(x * weights) * y[0] + np.sum(y * y)

    def scalar(x, y):
        return np.sum(f(x, y) ** 2)
    fn = {"value": f, "grad": tg.grad(scalar, argnums=(0, 1)),
          "value_and_grad": tg.value_and_grad(scalar, argnums=(0, 1)),
          "jacrev": tg.jacrev(f, argnums=(0, 1)), "jacfwd": tg.jacfwd(f, argnums=(0, 1)),
          "hessian": tg.hessian(scalar, argnums=(0, 1))}[transform]
    rng = rng_for(f"promoted {transform}")
    X = rng.standard_normal((5, 3)).astype(np.float32)
    Y = rng.standard_normal((5, 2))                      # float64
    got = _pytree.flatten(tg.vmap(fn)(X, Y))[0]
    for q in range(len(X)):
        want = _pytree.flatten(fn(X[q], Y[q]))[0]
        assert [a.dtype for a in got] == [np.asarray(b).dtype for b in want]
        for a, b in zip(got, want):
            np.testing.assert_allclose(a[q], b, rtol=1e-6 if a.dtype == np.float32 else 1e-12)
    assert any(a.dtype == np.float32 for a in got) or transform in ("value", "jacrev", "jacfwd")


# ---- array programs ------------------------------------------------------------------------------

def mlp_weights(rng):
    return (rng.standard_normal((8, 16)) / np.sqrt(8), 0.1 * rng.standard_normal(16),
            rng.standard_normal((16, 1)) / 4.0, 0.1 * rng.standard_normal(1))


def mlp(x, W1, b1, W2, b2):
    return tg.sum(tg.tanh(x @ W1 + b1) @ W2 + b2)


def mlp_input_grad_by_hand(X, W1, b1, W2, b2):
    h = np.tanh(X @ W1 + b1)
    return ((1.0 - h ** 2) * W2[:, 0]) @ W1.T


def test_mlp_with_closed_over_weights():
    rng = rng_for("mlp closed")
    weights = mlp_weights(rng)
    X = rng.standard_normal((300, 8))
    f = lambda x: mlp(x, *weights)  # noqa: E731
    check(f, X)
    g = check(tg.grad(f), X)
    np.testing.assert_allclose(g, mlp_input_grad_by_hand(X, *weights), rtol=1e-12, atol=1e-12)
    check(tg.jacfwd(lambda x: tg.tanh(x @ weights[0])), X[:40])
    check(tg.hessian(f), X[:40], rtol=1e-10, atol=1e-12)


def test_mlp_with_weights_as_unmapped_arguments():
    rng = rng_for("mlp unmapped")
    weights = mlp_weights(rng)
    X = rng.standard_normal((200, 8))
    axes = (0, None, None, None, None)
    g = check(tg.grad(mlp), X, *weights, in_axes=axes)
    np.testing.assert_allclose(g, mlp_input_grad_by_hand(X, *weights), rtol=1e-12, atol=1e-12)
    # per-point gradients with respect to the (shared) weights
    gw = check(tg.grad(mlp, argnums=(1, 2, 3, 4)), X, *weights, in_axes=axes)
    assert [a.shape for a in gw] == [(200, 8, 16), (200, 16), (200, 16, 1), (200, 1)]
    # weights batched too: one network per point
    Ws = [np.stack([w] * 20) + 0.01 * rng.standard_normal((20,) + w.shape) for w in weights]
    check(tg.value_and_grad(mlp, argnums=(0, 1)), X[:20], *Ws)


N_ATOMS = 5
PAIR_I, PAIR_J = np.triu_indices(N_ATOMS, 1)


def lj_energy(p):
    P = tg.reshape(p, (N_ATOMS, 3))
    d = P[PAIR_I] - P[PAIR_J]
    r2 = tg.sum(d * d, 1)
    inv6 = 1.0 / r2 ** 3
    return tg.sum(4.0 * (inv6 * inv6 - inv6))


def lj_forces_by_hand(p):
    P = p.reshape(N_ATOMS, 3)
    d = P[PAIR_I] - P[PAIR_J]
    r2 = (d * d).sum(1)
    inv6 = 1.0 / r2 ** 3
    pair = 2.0 * (4.0 * (-6.0 * inv6 * inv6 + 3.0 * inv6) / r2)[:, None] * d
    F = np.zeros((N_ATOMS, 3))
    np.add.at(F, PAIR_I, -pair)
    np.add.at(F, PAIR_J, pair)
    return F.ravel()


def lj_configurations(rng, B):
    lattice = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1]], float) * 1.12
    return (lattice[None] + 0.05 * rng.standard_normal((B, N_ATOMS, 3))).reshape(B, -1)


def test_lennard_jones_with_integer_pair_indices():
    rng = rng_for("lennard-jones")
    X = lj_configurations(rng, 120)
    check(lj_energy, X, rtol=1e-11)
    forces = -check(tg.grad(lj_energy), X, rtol=1e-11, atol=1e-9)
    want = np.stack([lj_forces_by_hand(x) for x in X])
    np.testing.assert_allclose(forces, want, rtol=1e-9, atol=1e-9)
    check(tg.hessian(lj_energy), X[:10], rtol=1e-9, atol=1e-8)


def test_pair_indices_passed_as_static_arguments():
    rng = rng_for("lj static")
    X = lj_configurations(rng, 40)

    def energy(p, i, j):
        P = tg.reshape(p, (N_ATOMS, 3))
        d = P[i] - P[j]
        return tg.sum(1.0 / tg.sum(d * d, 1) ** 3)

    check(tg.grad(energy), X, PAIR_I, PAIR_J, in_axes=(0, None, None), rtol=1e-11)


@pytest.mark.parametrize("name,f", [
    ("sum axis", lambda x: tg.sum(tg.reshape(x, (2, 3)) ** 2, 1)),
    ("mean", lambda x: tg.mean(x * x)),
    ("prod", lambda x: tg.prod(x)),
    ("amax", lambda x: tg.amax(tg.reshape(x, (3, 2)), 0)),
    ("max", lambda x: tg.max(x) * x[0]),
    ("logsumexp", lambda x: tg.logsumexp(x)),
    ("softmax", lambda x: tg.softmax(x)),
    ("where", lambda x: tg.where(x > 0.0, x ** 2, -x)),
    ("maximum", lambda x: tg.maximum(x, 0.1 * x)),
    ("clip", lambda x: tg.clip(x, -0.5, 0.5) * x),
    ("cat", lambda x: tg.cat([x[:2] * 2.0, tg.sin(x), x[3:]])),
    ("stack", lambda x: tg.stack([x, x ** 2, tg.exp(x)], 1)),
    ("transpose", lambda x: tg.transpose(tg.reshape(x, (2, 3))) @ tg.reshape(x, (2, 3))),
])
def test_array_operations(name, f):
    X = rng_for(f"ops {name}").standard_normal((37, 6))
    check(f, X, rtol=1e-11)
    check(tg.jacrev(f), X, rtol=1e-11, atol=1e-12)
    check(tg.jacfwd(f), X, rtol=1e-11, atol=1e-12)
    check(tg.grad(lambda x: tg.sum(f(x) * x[0])), X, rtol=1e-11, atol=1e-12)


# ---- batch sizes, chunks, reuse ------------------------------------------------------------------

@pytest.mark.parametrize("B", [1, 2, 1023, 1025, 4099])
def test_batch_sizes_around_tiles(B):
    X = rng_for(f"sizes {B}").standard_normal((B, 3))
    check(tg.grad(smooth), X)


@pytest.mark.parametrize("chunk_size", [1, 3, 64, 10_000])
def test_chunk_sizes(chunk_size):
    X = rng_for(f"chunks {chunk_size}").standard_normal((130, 3))
    check(tg.value_and_grad(smooth), X, chunk_size=chunk_size)


def test_a_vmapped_function_is_reusable():
    rng = rng_for("reuse")
    batched = tg.vmap(tg.grad(smooth))
    for B in (10, 100, 10):
        X = rng.standard_normal((B, 3))
        assert_same(batched(X), loop(tg.grad(smooth), (X,)))
    X = rng.standard_normal((10, 5))                  # another point shape: another tape
    assert_same(batched(X), loop(tg.grad(smooth), (X,)))


@pytest.mark.parametrize("transform", [None, tg.grad, tg.value_and_grad, tg.hessian, tg.jacrev,
                                       tg.jacfwd])
def test_an_empty_batch_gives_empty_results_of_the_point_shapes(transform):
    """As JAX: no point, results of shape (0,) + the per-point shape; the function is traced
    at zeros of a point's shape (log(0) there warns nothing)."""
    f = (lambda x: tg.sum(tg.log(x) ** 2)) if transform in (None, tg.grad, tg.value_and_grad,
                                                             tg.hessian) else vector
    fn = f if transform is None else transform(f)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        empty = tg.vmap(fn)(np.zeros((0, 3)))
    one = fn(np.full(3, 0.5))
    for e, o in zip(*(r if isinstance(r, tuple) else (r,) for r in (empty, one))):
        assert np.shape(e) == (0,) + np.shape(o)
    assert tg.vmap(two_args, in_axes=(0, None))(np.zeros((0, 3)), np.ones(3)).shape == (0,)


ZERO_SIZE_POINTS = {
    # each maps points of shape (0,): the results are empty of the per-point shapes, as jax's
    "value": (lambda x: x * 2.0, [(5, 0)]),
    "sum": (lambda x: tg.sum(x * x), [(5,)]),
    "grad": (tg.grad(lambda x: tg.sum(x * x)), [(5, 0)]),
    "value_and_grad": (tg.value_and_grad(lambda x: tg.sum(x * x)), [(5,), (5, 0)]),
    "jacrev": (tg.jacrev(lambda x: x * x), [(5, 0, 0)]),
    "jacfwd": (tg.jacfwd(lambda x: x * x), [(5, 0, 0)]),
    "hessian": (tg.hessian(lambda x: tg.sum(x * x)), [(5, 0, 0)]),
    "jvp": (functools.partial(tg.jvp, lambda x: x * x), [(5, 0), (5, 0)]),
    "nested": (lambda x: tg.grad(lambda y: tg.sum(y * y))(x) * 2.0, [(5, 0)]),
}


@pytest.mark.parametrize("fuse", [False, True])
@pytest.mark.parametrize("name", ZERO_SIZE_POINTS)
def test_points_of_size_zero_give_empty_results(name, fuse):
    fn, shapes = ZERO_SIZE_POINTS[name]
    X = np.zeros((5, 0))
    args = ((X,), (X,)) if name == "jvp" else (X,)
    got = _pytree.flatten(tg.vmap(fn, fuse=fuse)(*args))[0]
    assert [np.shape(g) for g in got] == shapes
    if name in ("jvp", "nested"):
        return
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    jfn = {"value": lambda x: x * 2.0, "sum": lambda x: jnp.sum(x * x),
           "grad": jax.grad(lambda x: jnp.sum(x * x)),
           "value_and_grad": jax.value_and_grad(lambda x: jnp.sum(x * x)),
           "jacrev": jax.jacrev(lambda x: x * x), "jacfwd": jax.jacfwd(lambda x: x * x),
           "hessian": jax.hessian(lambda x: jnp.sum(x * x))}[name]
    expected = jax.tree_util.tree_leaves(jax.vmap(jfn)(X))
    assert [np.shape(g) for g in got] == [np.shape(e) for e in expected]


def test_an_empty_batch_of_a_nested_transform():
    fn = lambda x: tg.grad(lambda y: tg.sum(y ** 3))(x) * 2.0
    assert tg.vmap(fn)(np.zeros((0, 3))).shape == (0, 3)


@pytest.mark.parametrize("fuse", [False, True])
def test_a_jvp_whose_tangents_have_no_values(fuse, monkeypatch):
    """Primals of size 0 carry no tangent values: the output's tangent is zero at every point
    (the driver, seeing no tangent columns, runs no tangent sweep: nothing wrote them). Fresh
    float buffers are filled with NaN here, so that a result nobody wrote cannot pass as 0."""
    empty = np.empty

    def poisoned(*args, **kwargs):
        a = empty(*args, **kwargs)
        if a.dtype.kind == "f":
            a.fill(np.nan)
        return a
    monkeypatch.setattr(np, "empty", poisoned)
    f = functools.partial(tg.jvp, lambda x, y: tg.sum(x) + 2.0 * y[0])
    X, T = np.zeros((5, 0)), np.zeros((5, 0))
    Y = rng_for("jvp no tangents").standard_normal((5, 1))
    value, tangent = tg.vmap(f, fuse=fuse)((X, Y), (T, np.zeros((5, 1))))
    np.testing.assert_array_equal(value, 2.0 * Y[:, 0])
    np.testing.assert_array_equal(tangent, np.zeros(5))
    g = functools.partial(tg.jvp, lambda x: tg.sum(x) + 1.0)
    np.testing.assert_array_equal(tg.vmap(g, fuse=fuse)((X,), (T,))[1], np.zeros(5))


def test_vmap_of_a_vmapped_function():
    """The outer vmap calls the inner one at each of its points; the inner replays its own
    batch. (Taking the inner function's transform, or tracing through the inner replay, gave
    wrong values without an error.)"""
    X = rng_for("nested vmap").standard_normal((3, 4, 5))
    g = tg.grad(smooth)
    want = np.stack([np.stack([g(x) for x in row]) for row in X])
    assert_same(tg.vmap(tg.vmap(g))(X), want, rtol=1e-12)
    assert_same(tg.vmap(tg.vmap(lambda x: tg.sum(x * x)))(X), np.sum(X * X, axis=-1))
    assert_same(tg.vmap(tg.vmap(g), in_axes=1)(X), np.swapaxes(want, 0, 1))


def test_a_branch_whose_outputs_have_another_size_is_refused():
    """The drivers write as many results per point as the plan of the tape they replay says,
    unchecked: a branch whose outputs have another size than the first tape's must be refused
    before it writes past the buffer made for the first (run apart: it wrote out of bounds)."""
    code = ("import numpy as np, tapegrad as tg\n"
            "def f(x):\n"
            "    if x[0] > 0:\n"
            "        return x[:2] * 1.0\n"
            "    return x[:3] * 1.0\n"
            "X = np.array([[1.0, 2, 3, 4], [-1.0, 5, 6, 7]] * 50)\n"
            "for fuse in (False, True):\n"
            "    try:\n"
            "        tg.vmap(f, fuse=fuse)(X)\n"
            "    except RuntimeError as err:\n"
            "        print(err)\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=ROOT), cwd=ROOT, timeout=1800)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.splitlines() == [
        "vmap: a branch changed the output's size (2 result values per point on the first "
        "tape traced, 3 on this branch's)"] * 2, run.stdout + run.stderr[-3000:]


@pytest.mark.parametrize("text, size", [("2048K\n", 2 << 20), ("1M", 1 << 20), ("512K", 512 << 10),
                                        ("garbage", 1 << 20), ("0K", 1 << 20), (None, 1 << 20)])
def test_the_tile_budget_is_the_l2_size(tmp_path, text, size):
    from tapegrad.batch import cpu
    path = tmp_path / "size"
    if text is not None:
        path.write_text(text)
    assert cpu.l2_bytes(str(path)) == size
    assert cpu.tile_for(1537, 0, 8) <= cpu.MAX_TILE


def test_tapes_of_small_entries_get_wide_tiles(monkeypatch):
    """A tape of scalar entries (a few rows per entry) replays on wide tiles whatever its
    size, so each entry's dispatch is shared by many points; a tape of large entries keeps
    the tile its buffers fit in the cache; no tile exceeds a worker's share of the points."""
    from tapegrad.batch import cpu
    monkeypatch.setattr(cpu, "L2_BYTES", 1 << 20)
    assert cpu.tile_for(45_000, 0, 8) == cpu.MIN_TILE                  # too big for the cache
    assert cpu.tile_for(45_000, 0, 8, 20_000) == cpu.MAX_TILE          # 2.3 rows per entry
    assert cpu.tile_for(1_200, 0, 8, 7) == cpu.tile_for(1_200, 0, 8) == 32   # 170 per entry
    assert cpu.tile_for(45_000, 0, 8, 20_000, n_points=100, workers=2) == 32
    assert cpu.tile_for(45_000, 0, 8, 20_000, n_points=10, workers=2) == cpu.MIN_TILE


# ---- errors --------------------------------------------------------------------------------------

def test_keyword_arguments_are_refused_clearly():
    with pytest.raises(TypeError, match="positional arguments only .*'scale'"):
        tg.vmap(lambda x, scale=1.0: tg.sum(x) * scale)(np.ones((4, 3)), scale=2.0)


def test_inconsistent_batch_sizes():
    X = np.ones((10, 3))
    with pytest.raises(ValueError, match="inconsistent batch sizes"):
        tg.vmap(two_args)(X, np.ones((9, 3)))
    with pytest.raises(ValueError, match="inconsistent batch sizes"):
        tg.vmap(two_args, in_axes=(0, 1))(X, np.ones((3, 9)))


def test_non_float_batched_input():
    with pytest.raises(TypeError, match="floating-point"):
        tg.vmap(smooth)(np.arange(12).reshape(4, 3))
    with pytest.raises(TypeError, match="floating-point"):
        tg.vmap(two_args)(np.ones((4, 3)), np.ones((4, 3), np.int32))


def test_in_axes_length_mismatch():
    with pytest.raises(ValueError, match="in_axes"):
        tg.vmap(two_args, in_axes=(0,))(np.ones((4, 3)), np.ones((4, 3)))
    with pytest.raises(ValueError, match="in_axes"):
        tg.vmap(two_args, in_axes=(0, None, 0))(np.ones((4, 3)), np.ones(3))


def test_nothing_to_map():
    with pytest.raises(ValueError, match="batch axis"):
        tg.vmap(smooth, in_axes=None)(np.ones((4, 3)))
    with pytest.raises(ValueError, match="scalar"):
        tg.vmap(lambda x: x * 2.0)(3.0)


@pytest.mark.parametrize("transform", [tg.grad, tg.value_and_grad, tg.hessian])
def test_grad_of_a_non_scalar_output(transform):
    with pytest.raises(TypeError, match="scalar output"):
        tg.vmap(transform(vector))(np.ones((4, 3)))


def test_unsupported_options():
    with pytest.raises(NotImplementedError):
        tg.vmap(smooth, out_axes=1)
    with pytest.raises(NotImplementedError, match="has_aux"):
        tg.vmap(tg.grad(lambda x: (tg.sum(x), x), has_aux=True))
    with pytest.raises(TypeError, match="primals, tangents"):
        tg.vmap(functools.partial(tg.jvp, smooth))((np.ones((4, 3)),))


@pytest.mark.parametrize("chunk_size, error, message", [
    (0, ValueError, "chunk_size must be a positive int or None .* got 0"),
    (-5, ValueError, "chunk_size must be a positive int or None .* got -5"),
    (2.5, TypeError, "chunk_size must be a positive int or None, got 2.5 \\(float\\)"),
    ("64", TypeError, "chunk_size must be a positive int or None, got '64'"),
    (True, TypeError, "chunk_size must be a positive int or None, got True")])
def test_chunk_size_is_validated(chunk_size, error, message):
    """A chunk size of 0 or below once returned uninitialised memory (or failed in range())."""
    with pytest.raises(error, match=message):
        tg.vmap(tg.grad(smooth), chunk_size=chunk_size)
    assert tg.vmap(tg.grad(smooth), chunk_size=np.int64(2))(np.ones((5, 3))).shape == (5, 3)


@pytest.mark.parametrize("option, value, error, message", [
    ("out_axes", 1.5, TypeError, "vmap out_axes must be an int, got 1.5"),
    ("out_axes", 1, NotImplementedError, "vmap supports out_axes=0 .* got out_axes=1"),
    ("progress", "yes", TypeError, "vmap progress must be True or False, got 'yes'"),
    ("fuse", 1, ValueError, "vmap fuse must be 'auto', True or False, got 1"),
    ("fuse", "always", ValueError, "vmap fuse must be 'auto', True or False, got 'always'"),
    ("device", "gpu", ValueError, "device must be 'cpu', 'cuda' or 'auto', got 'gpu'")])
def test_options_are_validated_when_vmap_is_called(option, value, error, message):
    with pytest.raises(error, match=message):
        tg.vmap(smooth, **{option: value})


@pytest.mark.parametrize("in_axes, error, message", [
    ((0, 1.5), TypeError, r"in_axes must be .* got \(0, 1\.5\): in_axes\[1\] is 1\.5 \(float\)"),
    (1.5, TypeError, r"in_axes must be an int, None, or a tuple .* got 1\.5 \(float\)"),
    ("0", TypeError, r"in_axes must be an int, None, or a tuple .* got '0' \(str\)"),
    ((0, True), TypeError, r"in_axes\[1\] is True \(bool\)"),
    ((0, (None, "a")), TypeError, r"in_axes\[1\]\[1\] is 'a' \(str\)")])
def test_in_axes_of_the_wrong_type(in_axes, error, message):
    with pytest.raises(error, match=message):
        tg.vmap(two_args, in_axes=in_axes)


def test_in_axes_out_of_range_or_not_matching_the_arguments():
    X = np.ones((4, 3))
    with pytest.raises(ValueError, match=r"in_axes=2 for an argument of shape \(4, 3\) \(2 axes: "
                       r"in_axes must be in \[-2, 1\] or None\)"):
        tg.vmap(two_args, in_axes=(0, 2))(X, X)
    with pytest.raises(ValueError, match=r"in_axes=-3"):
        tg.vmap(two_args, in_axes=-3)(X, X)
    with pytest.raises(ValueError, match=r"vmap in_axes\[0\] is \(0, None\), which does not "
                       r"match the structure of its argument, \*"):
        tg.vmap(two_args, in_axes=((0, None), 0))(X, X)
    with pytest.raises(ValueError, match=r"in_axes\[0\] is \{'a': 0\}, which does not match .* "
                       r"\{'a': \*, 'b': \*\}"):
        tg.vmap(lambda p: tg.sum(p["a"] * p["b"]), in_axes=({"a": 0},))({"a": X, "b": X})


def test_in_axes_trees_map_parts_of_an_argument():
    """As JAX: an in_axes entry may be a tree that is a prefix of its argument's tree."""
    rng = rng_for("in_axes tree")
    X, w = rng.standard_normal((6, 3)), rng.standard_normal(3)
    f = lambda p: tg.sum(tg.sin(p["x"]) * p["w"])
    got = tg.vmap(tg.grad(f), in_axes=({"x": 0, "w": None},))({"x": X, "w": w})
    np.testing.assert_allclose(got["x"], np.cos(X) * w, rtol=1e-14)
    np.testing.assert_allclose(got["w"], np.sin(X), rtol=1e-14)
    g = lambda pair: tg.sum(pair[0] * pair[1])
    got = tg.vmap(tg.grad(g), in_axes=([None, 1],))([w, X.T])
    np.testing.assert_allclose(got[0], X, rtol=1e-14)
    tangents = tg.vmap(functools.partial(tg.jvp, lambda x, y: x * y),
                       in_axes=((0, None), 0))((X, w), (X, np.ones((6, 3))))[1]
    np.testing.assert_allclose(tangents, X * w + X, rtol=1e-14)


@pytest.mark.parametrize("fuse", [False, True])
@pytest.mark.parametrize("primal, tangent", [((4, 5), (4, 3)), ((2, 300), (2, 1)),
                                             ((4, 3), (4, 3, 1)), ((4, 3), (4,))])
def test_jvp_tangents_must_have_the_primal_shape_at_each_point(primal, tangent, fuse):
    """Tangents of another shape per point were read past their rows (numbers from elsewhere,
    or NaN) by the batched replay."""
    f = functools.partial(tg.jvp, lambda x: tg.sin(x) * x)
    in_axes = (0, None) if len(tangent) == 1 else 0
    with pytest.raises(ValueError, match=r"tangent of shape .* for a primal of shape "
                       rf"\({primal[1]},\) at each point"):
        tg.vmap(f, in_axes=in_axes, fuse=fuse)((np.ones(primal),), (np.ones(tangent),))


CUDA_CHECKS = """
import functools, numpy as np, tapegrad as tg
f = functools.partial(tg.jvp, lambda x: tg.sin(x) * x)
try:
    tg.vmap(f, device="cuda")((np.ones((4, 5)),), (np.ones((4, 3)),))
    raise SystemExit("no error for tangents of the wrong shape")
except ValueError as err:
    assert "tangent of shape (3,) for a primal of shape (5,)" in str(err), err
shapes = [np.shape(a) for a in tg.vmap(f, device="cuda")((np.zeros((4, 0)),), (np.zeros((4, 0)),))]
assert shapes == [(4, 0), (4, 0)], shapes
assert tg.vmap(tg.hessian(lambda x: tg.sum(x * x)), device="cuda")(np.zeros((3, 0))).shape == (3, 0, 0)
print("ok")
"""


def test_cuda_backend_checks_tangents_and_maps_points_of_size_zero():
    """The same argument checks on the CUDA path (numba's simulator, in a subprocess)."""
    pytest.importorskip("numba.cuda")
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1",
               PYTHONPATH=os.pathsep.join([ROOT] + [p for p in os.environ.get(
                   "PYTHONPATH", "").split(os.pathsep) if p]))
    run = subprocess.run([sys.executable, "-c", CUDA_CHECKS], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stdout + run.stderr[-3000:]


def test_jvp_primals_and_tangents_of_different_structures():
    f = functools.partial(tg.jvp, lambda x, y: x * y)
    with pytest.raises(ValueError, match="primals and tangents must have the same structure"):
        tg.vmap(f)((np.ones((4, 3)), np.ones((4, 3))), (np.ones((4, 3)),))


def test_the_driver_refuses_columns_that_do_not_match_the_plan():
    """The boundary check before the compiled driver (whatever built the batch)."""
    from tapegrad.batch.plan import Plan
    from tapegrad.transforms.spec import Schedule
    plan = Plan(Schedule.VALUE, in_pos=np.arange(3), tin_pos=np.arange(0))
    plan.check_rows(3, 0)
    with pytest.raises(ValueError, match="give 2 input and 0 tangent values per point; the "
                       "traced function takes 3 and 0"):
        plan.check_rows(2, 0)


# ---- memory and progress -------------------------------------------------------------------------

@pytest.mark.parametrize("fuse", [False, True])
def test_memory_is_bounded_by_the_chunk_not_the_batch(fuse):
    """2e6 points in chunks of 4096: beyond the inputs and the result, the peak of traced memory
    is a few chunks' worth. (The tape's buffer for every point at once would be ~1 GB: the
    function has ~60 values per point.) The compiled driver's per-tile scratch is allocated by
    numba, not traced; it is bounded by the tile size, not by the batch. Both tiers: the
    interpreter, and the fused kernel (compiled by the first, small call: a compile allocates
    Python objects, which tracemalloc would count)."""
    B, chunk = 2_000_000, 4096
    W = rng_for("memory").standard_normal((2, 8))

    def f(x):
        return tg.sum(tg.tanh(x @ W) ** 2)

    X = rng_for("memory points").standard_normal((B, 2))
    small = X[:5000]
    vmapped = tg.vmap(tg.grad(f), chunk_size=chunk, fuse=fuse)
    np.testing.assert_allclose(vmapped(small)[:50], loop(tg.grad(f), (small[:50],)),
                               rtol=1e-12, atol=1e-15)
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        G = vmapped(X)
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    out_bytes = G.nbytes
    assert G.shape == (B, 2)
    per_chunk = chunk * 8 * (2 + 2 + 1)                 # inputs, outputs, guard flags
    extra = peak - base - out_bytes                     # measured: about 0.7 MB
    # a few chunks' worth; one float64 per point of the batch would already be 16 MB
    assert extra < 16 * per_chunk + (2 << 20), (extra, out_bytes, per_chunk)
    assert current - base < out_bytes + (2 << 20)
    np.testing.assert_allclose(G[-50:], loop(tg.grad(f), (X[-50:],)), rtol=1e-12, atol=1e-15)


def test_progress_bar_with_tqdm(capsys):
    pytest.importorskip("tqdm")
    X = rng_for("progress").standard_normal((1000, 3))
    got = tg.vmap(tg.grad(smooth), chunk_size=100, progress=True)(X)
    assert_same(got, loop(tg.grad(smooth), (X,)))
    err = capsys.readouterr().err
    assert "10/10" in err, err


def test_progress_without_tqdm(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tqdm", None)      # `import tqdm...` raises ImportError
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    X = rng_for("progress without").standard_normal((500, 3))
    got = tg.vmap(tg.grad(smooth), chunk_size=64, progress=True)(X)
    assert_same(got, loop(tg.grad(smooth), (X,)))
    assert "chunk" not in capsys.readouterr().err
