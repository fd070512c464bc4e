"""numpy's reductions, scans and statistics on tensors.

* Values: numpy's, bit for bit, eagerly; a traced tape replayed at other inputs gives numpy's
  value there.
* Derivatives: `gradcheck` (VJP, JVP, second order) of every function at random inputs, and
  against HIPS autograd (first and second order) where it has the function, JAX where useful
  (cumprod at zeros).
* Edge cases: empty and size-1 axes, zero factors.
* vmap: the interpreter tier and the fused tier.
"""
import warnings

import numpy as np
import pytest

import tapegrad as tg
from tapegrad.eager.numpy_api.registry import SUPPORT
from tapegrad.testing import gradcheck

from conftest import rng_for
from test_fuse import fused, tiers

autograd = pytest.importorskip("autograd")
anp = pytest.importorskip("autograd.numpy")
jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")


@pytest.fixture(scope="module", autouse=True)
def _jax_x64():
    jax.config.update("jax_enable_x64", True)


def _distinct(name, shape):
    """Random values far from ties."""
    rng = rng_for(name)
    values = rng.permutation(np.arange(int(np.prod(shape)), dtype=np.float64))
    return (values + rng.uniform(0.1, 0.4, values.shape)).reshape(shape) / 3.0


# name -> f(x) on a (3, 4) array; written once, run on numpy arrays and on tensors
CASES = {
    "cumsum-axis1": lambda x: np.cumsum(x, axis=1),
    "cumsum-flat": lambda x: np.cumsum(x),
    "cumprod-axis0": lambda x: np.cumprod(x, axis=0),
    "cumprod-flat": lambda x: np.cumprod(x),
}


def _input(name):
    return _distinct(name, (3, 4))


# ---- values -------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(CASES))
def test_value_is_numpys_bit_for_bit(name):
    x = _input(name)
    expected = CASES[name](x)
    got = CASES[name](tg.tensor(x, requires_grad=True))
    assert got.requires_grad
    assert got.data.dtype == np.asarray(expected).dtype
    np.testing.assert_array_equal(got.data, expected)


@pytest.mark.parametrize("dtype", [np.float32, np.int64])
def test_dtypes_are_numpys(dtype):
    x = (_distinct("dtypes", (3, 4)) * 3).astype(dtype)
    for f in (np.cumsum, np.cumprod):
        got, expected = f(tg.tensor(x)), f(x)
        assert got.data.dtype == expected.dtype, f
        np.testing.assert_array_equal(got.data, expected)


@pytest.mark.parametrize("name", ["cumsum-axis1", "cumprod-flat"])
def test_a_traced_tape_replays_numpys_value_at_other_inputs(name):
    f = CASES[name]
    x0, x1 = _distinct(f"{name} 0", (3, 4)), _distinct(f"{name} 1", (3, 4))
    tape = tg.trace(f, x0)
    np.testing.assert_array_equal(tape(x1), f(x1))


# ---- derivatives --------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(CASES))
def test_gradcheck(name):
    assert gradcheck(CASES[name], [_input(name)])


def test_gradcheck_cumprod_at_zeros():
    """Exact at zero factors in every mode: one zero, two zeros, a zero first and last."""
    x = _distinct("cumprod zeros", (3, 5))
    x[0, 1] = x[1, 1] = x[1, 3] = x[2, 0] = x[2, 4] = 0.0
    assert gradcheck(lambda a: np.cumprod(a, axis=1), [x])


def _scalar(f, u):
    return lambda x: (f(x) * u).sum()


@pytest.mark.parametrize("name", ["cumsum-axis1"])
def test_first_and_second_order_match_autograd(name):
    x = _input(name)
    theirs = lambda a: anp.cumsum(a, axis=1)
    u = rng_for(f"autograd {name}").standard_normal(x.shape)
    ours, theirs = _scalar(CASES[name], u), _scalar(theirs, u)
    np.testing.assert_allclose(tg.grad(ours)(x), autograd.grad(theirs)(x), rtol=1e-10,
                               atol=1e-12)
    np.testing.assert_allclose(tg.hessian(ours)(x), autograd.hessian(theirs)(x), rtol=1e-9,
                               atol=1e-12)


def test_cumprod_derivatives_match_jax_at_zeros():
    x = np.array([2.0, 0.0, 1.0, 2.0, 0.0, 1.0, -0.0])
    np.testing.assert_array_equal(tg.jacfwd(np.cumprod)(x), jax.jacfwd(jnp.cumprod)(x))
    np.testing.assert_array_equal(tg.jacrev(np.cumprod)(x), jax.jacrev(jnp.cumprod)(x))
    np.testing.assert_allclose(tg.hessian(lambda a: np.cumprod(a)[-2])(x),
                               jax.hessian(lambda a: jnp.cumprod(a)[-2])(x))


# ---- edge cases ---------------------------------------------------------------------------------

@pytest.mark.parametrize("f", [lambda a: np.cumsum(a, axis=0), lambda a: np.cumprod(a, axis=1)],
                         ids=["cumsum", "cumprod"])
@pytest.mark.parametrize("shape", [(0, 3), (1, 3), (3, 1)], ids=str)
def test_empty_and_size_one_axes(f, shape):
    x = _distinct(f"empty {shape}", shape)
    expected = f(x)
    t = tg.tensor(x, requires_grad=True)
    out = f(t)
    np.testing.assert_array_equal(out.data, expected)
    np.testing.assert_array_equal(tg.trace(f, x)(x), expected)
    if out.data.size:
        out.backward(tg.ones_like(out))
        assert t.grad.shape == t.shape and np.isfinite(t.grad.data).all()


def test_refused_arguments():
    with pytest.raises(TypeError) as info:
        np.cumsum(tg.ones(2, 3, requires_grad=True), out=np.empty(6))
    assert str(info.value) == "numpy.cumsum: the argument out= is not supported on Tensors"


# ---- vmap ---------------------------------------------------------------------------------------

FUSABLE = ["cumsum-axis1", "cumprod-axis0"]


def _batch(name, n=7):
    rng = rng_for(f"vmap {name}")
    return np.stack([rng.permutation(_distinct(f"{name} {k}", (3, 4)).ravel()).reshape(3, 4)
                     for k in range(n)])


def _loss(f, name):
    u = rng_for(f"vmap u {name}").standard_normal(np.shape(f(_input(name))))
    return lambda x: (f(x) * u).sum()


@pytest.mark.parametrize("name", FUSABLE)
def test_vmap_interpreter_matches_one_gradient_per_point(name):
    loss = _loss(CASES[name], name)
    X = _batch(name)
    got = tg.vmap(tg.value_and_grad(loss), fuse=False)(X)
    grad = tg.value_and_grad(loss)
    for k in range(len(X)):
        value, g = grad(X[k])
        np.testing.assert_allclose(got[0][k], value, rtol=1e-12)
        np.testing.assert_allclose(got[1][k], g, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("name", FUSABLE)
def test_vmap_fused_tier_matches_the_interpreter(name):
    loss = _loss(CASES[name], name)
    X = _batch(name)
    vmapped = tg.vmap(tg.grad(loss), fuse=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")        # the fused tier did not fail on the tape
        got = vmapped(X)
    assert fused(vmapped), tiers(vmapped)
    np.testing.assert_allclose(got, tg.vmap(tg.grad(loss), fuse=False)(X), rtol=1e-12,
                               atol=1e-13)


def test_registry_support_metadata():
    for f in (np.cumsum, np.cumprod):
        assert SUPPORT[f].fused and SUPPORT[f].differentiable and SUPPORT[f].notes
