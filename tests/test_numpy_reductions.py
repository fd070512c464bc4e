"""numpy's reductions, scans and statistics on tensors, and PyTorch's cumsum, cumprod, sort, var,
std, median, diff and quantile.

* Values: numpy's, bit for bit, eagerly; a traced tape replayed at other inputs (another order
  of the values) gives numpy's value there.
* Derivatives: `gradcheck` (VJP, JVP, second order) of every function at random inputs, and
  against HIPS autograd (first and second order) where it has the function, JAX where useful
  (cumprod at zeros, order statistics at ties, NaN), PyTorch for the tg.* functions.
* Edge cases: empty and size-1 axes, zero factors, ties, NaN, the std of constant values.
* vmap: the interpreter tier for everything, the fused tier where the tape is fusable (and the
  refusal, not a failure, where it is not: sorts branch on values).
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
torch = pytest.importorskip("torch")


@pytest.fixture(scope="module", autouse=True)
def _jax_x64():
    jax.config.update("jax_enable_x64", True)


def _distinct(name, shape):
    """Random values far from ties (order statistics are smooth there)."""
    rng = rng_for(name)
    values = rng.permutation(np.arange(int(np.prod(shape)), dtype=np.float64))
    return (values + rng.uniform(0.1, 0.4, values.shape)).reshape(shape) / 3.0


W4 = np.array([0.5, 1.5, 2.0, 0.25])
COORDS = np.array([0.0, 0.5, 1.25, 1.5])

# name -> f(x) on a (3, 4) array; written once, run on numpy arrays and on tensors
CASES = {
    "cumsum-axis1": lambda x: np.cumsum(x, axis=1),
    "cumsum-flat": lambda x: np.cumsum(x),
    "cumprod-axis0": lambda x: np.cumprod(x, axis=0),
    "cumprod-flat": lambda x: np.cumprod(x),
    "diff": lambda x: np.diff(x, axis=0),
    "diff-n2-edges": lambda x: np.diff(x, n=2, axis=1, prepend=0.5, append=x[:, :1]),
    "gradient": lambda x: np.gradient(x, axis=1),
    "gradient-edge2": lambda x: np.gradient(x, 0.5, axis=0, edge_order=2),
    "gradient-coords": lambda x: np.gradient(x, COORDS, axis=1),
    "gradient-coords-edge2": lambda x: np.gradient(x, COORDS, axis=-1, edge_order=2),
    "var": lambda x: np.var(x, axis=1),
    "var-ddof": lambda x: np.var(x, ddof=1),
    "std": lambda x: np.std(x, axis=0, keepdims=True),
    "std-ddof": lambda x: np.std(x, axis=(0, 1), ddof=2),
    "average-weights": lambda x: np.average(x, axis=1, weights=W4),
    "average": lambda x: np.average(x, axis=0),
    "ptp": lambda x: np.ptp(x, axis=1),
    "amax-keepdims": lambda x: np.max(x, axis=(0, 1), keepdims=True),
    "amin-axis": lambda x: np.amin(x, axis=-1),
    "nansum": lambda x: np.nansum(x, axis=0),
    "nanmean": lambda x: np.nanmean(x, axis=1, keepdims=True),
    "sort": lambda x: np.sort(x, axis=0),
    "sort-flat": lambda x: np.sort(x, axis=None),
    "partition": lambda x: np.partition(x, 1, axis=1),
    "median": lambda x: np.median(x, axis=1),
    "median-all": lambda x: np.median(x),
    "median-axes": lambda x: np.median(x, axis=(1, 0), keepdims=True),
    "percentile": lambda x: np.percentile(x, [10, 55], axis=0),
    "quantile": lambda x: np.quantile(x, 0.3),
}
METHODS = ["linear", "lower", "higher", "midpoint", "nearest", "hazen", "weibull",
           "inverted_cdf", "averaged_inverted_cdf", "closest_observation",
           "interpolated_inverted_cdf", "median_unbiased", "normal_unbiased"]


def _input(name):
    x = _distinct(name, (3, 4))
    if name.startswith("nan"):
        x[1, 2] = x[0, 3] = np.nan
    return x


def _tensor_out(out):
    """One tensor of a function's output (np.gradient along several axes gives a tuple)."""
    return tg.stack(list(out)) if isinstance(out, tuple) else out


# ---- values -------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(CASES))
def test_value_is_numpys_bit_for_bit(name):
    x = _input(name)
    expected = CASES[name](x)
    got = CASES[name](tg.tensor(x, requires_grad=True))
    assert got.requires_grad
    assert got.data.dtype == np.asarray(expected).dtype
    np.testing.assert_array_equal(got.data, expected)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("q", [0.0, 0.3, [0.05, 0.5, 0.96, 1.0]], ids=["0", "0.3", "list"])
def test_quantile_methods_are_numpys(method, q):
    x = _distinct(f"methods {method}", (5, 7))
    for axis in (None, 1, (0, 1)):
        np.testing.assert_array_equal(
            np.quantile(tg.tensor(x), q, axis=axis, method=method).data,
            np.quantile(x, q, axis=axis, method=method))
    np.testing.assert_array_equal(np.percentile(tg.tensor(x), 37.5, method=method).data,
                                  np.percentile(x, 37.5, method=method))


@pytest.mark.parametrize("dtype", [np.float32, np.int64])
def test_dtypes_are_numpys(dtype):
    x = (_distinct("dtypes", (3, 4)) * 3).astype(dtype)
    for f in (np.cumsum, np.cumprod, np.median, np.var, np.std, np.sort, np.ptp, np.diff,
              lambda a: np.quantile(a, 0.3), lambda a: np.percentile(a, [20, 80]),
              lambda a: np.average(a, weights=np.ones((3, 4))), np.gradient):
        got, expected = _tensor_out(f(tg.tensor(x))), f(x)
        expected = np.stack(expected) if isinstance(expected, tuple) else np.asarray(expected)
        assert got.data.dtype == expected.dtype, f
        np.testing.assert_array_equal(got.data, expected)


@pytest.mark.parametrize("name", ["cumsum-axis1", "cumprod-flat", "diff-n2-edges", "sort",
                                  "median", "percentile", "partition", "gradient-coords-edge2"])
def test_a_traced_tape_replays_numpys_value_at_other_inputs(name):
    """Traced at x0, replayed at x1 whose values are in another order: numpy's value at x1."""
    f = CASES[name]
    x0, x1 = _distinct(f"{name} 0", (3, 4)), _distinct(f"{name} 1", (3, 4))
    tape = tg.trace(lambda x: _tensor_out(f(x)), x0)
    np.testing.assert_array_equal(tape(x1), f(x1))


@pytest.mark.parametrize("n", [0, 1, 7, 8, 9, 127, 128, 129, 136, 1000, 4097, 100_003])
def test_a_replayed_sum_adds_in_numpys_order(n):
    """np.sum of a vector, replayed by the interpreter and by vmap's tiers, is numpy's sum bit
    for bit (numpy adds pairwise: eight partial sums per run of at most 128 values, runs
    halved above that), so a replay gives what the traced call gave. Values spread over
    twelve orders of magnitude, where another order of additions rounds differently."""
    r = rng_for(f"numpy's sum {n}")

    def spread(shape):
        return r.standard_normal(shape) * 10.0 ** r.uniform(-6, 6, shape)

    def f(x):
        return np.sum(x)

    x0, x1 = spread(n), spread(n)
    tape = tg.trace(f, x0)
    assert tape(x1) == np.sum(x1)
    value, _ = tg.value_and_grad(lambda x: np.sum(x ** 2))(x1)
    assert value == np.sum(x1 ** 2)
    if n in (9, 136):                 # a run of eight partial sums; two halves
        X = spread((3, n))
        for fuse in (False, True):
            values = tg.vmap(tg.value_and_grad(f), fuse=fuse)(X)[0]
            np.testing.assert_array_equal(values, np.sum(X, axis=1), err_msg=f"fuse={fuse}")


def test_median_and_quantile_propagate_nan_at_replay():
    x0 = _distinct("nan replay", (3, 5))
    x1 = x0.copy()
    x1[1, 4] = np.nan
    for f in (lambda x: np.median(x, axis=1), lambda x: np.percentile(x, [30, 70], axis=1),
              lambda x: tg.median(x, 1).values, lambda x: tg.quantile(x, 0.4, 1)):
        tape = tg.trace(f, x0)
        expected = f(tg.tensor(x1))
        np.testing.assert_array_equal(tape(x1), expected.data)
        assert np.isnan(tape(x1)[..., 1]).all() and not np.isnan(tape(x1)[..., 0]).any()


# ---- derivatives --------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(CASES))
def test_gradcheck(name):
    f = CASES[name]
    assert gradcheck(lambda x: _tensor_out(f(x)), [_input(name)])


@pytest.mark.parametrize("method", ["linear", "midpoint", "nearest", "hazen", "inverted_cdf"])
def test_gradcheck_quantile_methods(method):
    x = _distinct(f"gradcheck {method}", (4, 5))
    assert gradcheck(lambda a: np.quantile(a, [0.2, 0.55, 0.9], axis=1, method=method), [x])


def test_gradcheck_cumprod_at_zeros():
    """Exact at zero factors in every mode: one zero, two zeros, a zero first and last."""
    x = _distinct("cumprod zeros", (3, 5))
    x[0, 1] = x[1, 1] = x[1, 3] = x[2, 0] = x[2, 4] = 0.0
    assert gradcheck(lambda a: np.cumprod(a, axis=1), [x])
    assert gradcheck(lambda a: tg.cumprod(a, 0), [x])


def _scalar(f, u):
    return lambda x: (f(x) * u).sum()


AUTOGRAD = {   # name -> the same function written with autograd.numpy
    "cumsum-axis1": lambda x: anp.cumsum(x, axis=1),
    "diff": lambda x: anp.diff(x, axis=0),
    "gradient": lambda x: anp.gradient(x, axis=1),
    "var": lambda x: anp.var(x, axis=1),
    "var-ddof": lambda x: anp.var(x, ddof=1),
    "std": lambda x: anp.std(x, axis=0, keepdims=True),
    "std-ddof": lambda x: anp.std(x, axis=(0, 1), ddof=2),
    "amax-keepdims": lambda x: anp.max(x, axis=(0, 1), keepdims=True),
    "amin-axis": lambda x: anp.amin(x, axis=-1),
    "sort-flat": lambda x: anp.sort(x.ravel()),
    # partition's order within each side is implementation-defined: compare what it fixes
    "partition": lambda x: anp.stack([anp.sum(anp.partition(r, 1)[:1]) + 3 * anp.partition(r, 1)[1]
                                      for r in x]),
}
TAPEGRAD = dict(CASES, **{
    "sort-flat": lambda x: np.sort(np.reshape(x, -1)),
    "partition": lambda x: np.sum(np.partition(x, 1, axis=1)[:, :1], axis=1)
    + 3 * np.partition(x, 1, axis=1)[:, 1],
})


@pytest.mark.parametrize("name", list(AUTOGRAD))
def test_first_and_second_order_match_autograd(name):
    x = _input(name)
    u = rng_for(f"autograd {name}").standard_normal(np.shape(AUTOGRAD[name](x)))
    ours, theirs = _scalar(TAPEGRAD[name], u), _scalar(AUTOGRAD[name], u)
    np.testing.assert_allclose(tg.grad(ours)(x), autograd.grad(theirs)(x), rtol=1e-10,
                               atol=1e-12)
    np.testing.assert_allclose(tg.hessian(ours)(x), autograd.hessian(theirs)(x), rtol=1e-9,
                               atol=1e-12)


JAX = {   # name -> (tapegrad's function, JAX's)
    "cumprod": (lambda x: np.cumprod(x, axis=1), lambda x: jnp.cumprod(x, axis=1)),
    "median": (lambda x: np.median(x, axis=1), lambda x: jnp.median(x, axis=1)),
    "median-all": (np.median, jnp.median),
    "quantile": (lambda x: np.quantile(x, [0.1, 0.45, 1.0], axis=0),
                 lambda x: jnp.quantile(x, jnp.array([0.1, 0.45, 1.0]), axis=0)),
    "percentile-nearest": (lambda x: np.percentile(x, 35, axis=1, method="nearest"),
                           lambda x: jnp.percentile(x, 35, axis=1, method="nearest")),
    "sort": (lambda x: np.sort(x, axis=0), lambda x: jnp.sort(x, axis=0)),
    "ptp": (lambda x: np.ptp(x, axis=1), lambda x: jnp.ptp(x, axis=1)),
    "average": (lambda x: np.average(x, axis=1, weights=W4),
                lambda x: jnp.average(x, axis=1, weights=W4)),
}


def _ties(name):
    """Small integers: ties in every row, zero factors for cumprod."""
    return rng_for(f"ties {name}").integers(-2, 3, (3, 4)).astype(np.float64)


@pytest.mark.parametrize("values", ["distinct", "ties"])
@pytest.mark.parametrize("name", list(JAX))
def test_derivatives_match_jax(name, values):
    """At ties the order statistics follow the stable order, as JAX's sort does; cumprod at
    zeros is exact."""
    ours, theirs = JAX[name]
    x = _distinct(name, (3, 4)) if values == "distinct" else _ties(name)
    u = rng_for(f"jax {name}").standard_normal(np.shape(theirs(x)))
    np.testing.assert_allclose(tg.grad(_scalar(ours, u))(x),
                               jax.grad(_scalar(theirs, u))(x), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(tg.hessian(_scalar(ours, u))(x),
                               jax.hessian(_scalar(theirs, u))(x), rtol=1e-9, atol=1e-12)


def test_sort_and_cumprod_jacobians_match_jax_at_ties_and_zeros():
    x = np.array([2.0, 0.0, 1.0, 2.0, 0.0, 1.0, -0.0])
    np.testing.assert_array_equal(tg.jacrev(np.sort)(x), jax.jacrev(jnp.sort)(x))
    np.testing.assert_array_equal(tg.jacfwd(np.cumprod)(x), jax.jacfwd(jnp.cumprod)(x))
    np.testing.assert_allclose(tg.hessian(lambda a: np.cumprod(a)[-2])(x),
                               jax.hessian(lambda a: jnp.cumprod(a)[-2])(x))


def test_std_at_zero_variance_as_autograd_and_jax():
    """NaN (0/0) where the values are all equal; zero over an axis of one value (the std is
    the constant 0 there: autograd's rule; JAX gives NaN)."""
    x = np.full((2, 3), 1.5)
    ours = tg.grad(lambda a: np.std(a))(x)
    assert np.isnan(ours).all() and np.isnan(autograd.grad(anp.std)(x)).all()
    assert np.isnan(jax.grad(jnp.std)(x)).all()
    one = np.array([[2.0], [3.0]])
    g = tg.grad(lambda a: np.std(a, axis=1).sum())(one)
    np.testing.assert_array_equal(g, autograd.grad(lambda a: anp.std(a, axis=1).sum())(one))
    np.testing.assert_array_equal(g, 0.0)
    value = tg.trace(lambda a: np.std(a, axis=1, ddof=1), one)(one)
    assert np.isnan(value).all()


def test_nan_ignoring_sums_give_nan_entries_no_gradient():
    x = _distinct("nan sums", (3, 4))
    x[0, 1] = x[2, 1] = x[1, 3] = np.nan
    x[:, 2] = np.nan
    for ours, theirs in ((np.nansum, jnp.nansum), (lambda a: np.nanmean(a, axis=0).sum(),
                                                   lambda a: jnp.nanmean(a, axis=0).sum())):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)     # numpy: a slice of NaN
            g = tg.grad(lambda a: ours(a * a))(x)
            direct = tg.grad(ours)(x)
        np.testing.assert_allclose(g, jax.grad(lambda a: theirs(a * a))(x), atol=1e-14)
        assert (direct[np.isnan(x)] == 0).all() and (direct[~np.isnan(x)] != 0).all()


# ---- edge cases ---------------------------------------------------------------------------------

EMPTY = {   # name -> (f, its reference on numpy arrays; None: f itself)
    "cumsum": (lambda a: np.cumsum(a, axis=0), None),
    "cumprod": (lambda a: np.cumprod(a, axis=1), None),
    "sort": (lambda a: np.sort(a, 0), None),
    "diff": (lambda a: np.diff(a, axis=0), None),
    "var": (lambda a: np.var(a, axis=1), None),
    "std": (lambda a: np.std(a, axis=0), None),
    "median": (lambda a: np.median(a, axis=0), None),
    "percentile": (lambda a: np.percentile(a, [20, 50], axis=1), None),
    "tg.cumsum": (lambda a: tg.cumsum(a, 1), lambda x: torch.cumsum(torch.tensor(x), 1)),
    "tg.sort": (lambda a: tg.sort(a, 0).values, lambda x: torch.sort(torch.tensor(x), 0)[0]),
}


@pytest.mark.parametrize("name", list(EMPTY))
@pytest.mark.parametrize("shape", [(0, 3), (1, 3), (3, 1)], ids=str)
def test_empty_and_size_one_axes(name, shape):
    f, reference = EMPTY[name]
    x = _distinct(f"empty {name}", shape)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)        # numpy: empty slices
        expected = np.asarray(f(x) if reference is None else reference(x))
        t = tg.tensor(x, requires_grad=True)
        out = f(t)
        replay = tg.trace(f, x)(x)
    np.testing.assert_array_equal(out.data, expected)
    np.testing.assert_array_equal(replay, expected)
    if out.data.size:
        out.backward(tg.ones_like(out))
        assert t.grad.shape == t.shape and np.isfinite(t.grad.data).all()


def test_size_one_axes_gradients():
    x = np.array([[3.0], [-1.0]])
    np.testing.assert_array_equal(tg.grad(lambda a: np.median(a, axis=1).sum())(x), 1.0)
    np.testing.assert_array_equal(tg.grad(lambda a: np.sort(a, axis=1)[:, 0].sum())(x), 1.0)
    np.testing.assert_array_equal(tg.grad(lambda a: np.cumprod(a, axis=1).sum())(x), 1.0)
    assert tg.grad(lambda a: np.diff(a, axis=1).sum())(x).tolist() == [[0.0], [0.0]]


# ---- PyTorch's functions, eagerly -------------------------------------------------------------

def _both(x):
    return tg.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)


TORCH = {   # name -> f(module-or-tensor namespace, x) for tapegrad and torch alike
    "cumsum": lambda m, x: m.cumsum(x, 1),
    "cumsum-method": lambda m, x: x.cumsum(0),
    "cumprod": lambda m, x: m.cumprod(x, 0),
    "sort": lambda m, x: m.sort(x, 1)[0],
    "sort-descending": lambda m, x: m.sort(x, 0, descending=True)[0],
    "sort-stable": lambda m, x: m.sort(x, dim=-1, stable=True).values,
    "var": lambda m, x: m.var(x),
    "var-dim": lambda m, x: m.var(x, 1, keepdim=True),
    "var-biased": lambda m, x: m.var(x, False),
    "var-correction": lambda m, x: m.var(x, 0, correction=2),
    "std": lambda m, x: m.std(x, 1),
    "std-method": lambda m, x: x.std(),
    "median": lambda m, x: m.median(x),
    "median-dim": lambda m, x: m.median(x, 1).values,
    "median-keepdim": lambda m, x: m.median(x, 0, keepdim=True)[0],
    "diff": lambda m, x: m.diff(x),
    "diff-n2-dim0": lambda m, x: m.diff(x, n=2, dim=0),
    "diff-prepend": lambda m, x: m.diff(x, dim=1, prepend=x[:, :2], append=x[:, :1] * 2),
    "quantile": lambda m, x: m.quantile(x, 0.3),
    "quantile-dim": lambda m, x: m.quantile(x, m.tensor([0.25, 0.5, 0.8], dtype=m.float64), 1,
                                            keepdim=True),
}
TORCH_INTERPOLATIONS = ["linear", "lower", "higher", "midpoint", "nearest"]


def _compare_with_torch(f, x, values_exact=False):
    ours, theirs = _both(x)
    y, z = f(tg, ours), f(torch, theirs)
    if values_exact:
        np.testing.assert_array_equal(y.data, z.detach().numpy())
    else:
        np.testing.assert_allclose(y.data, z.detach().numpy(), rtol=1e-13, atol=1e-14)
    assert y.grad_fn.name() == z.grad_fn.name()
    u = rng_for("torch seed").standard_normal(z.shape)
    y.backward(tg.tensor(u))
    z.backward(torch.tensor(u))
    np.testing.assert_allclose(ours.grad.data, theirs.grad.numpy(), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", list(TORCH))
def test_eager_functions_match_torch(name):
    _compare_with_torch(TORCH[name], _distinct(f"torch {name}", (4, 5)),
                        values_exact=not name.startswith(("var", "std", "quantile")))


@pytest.mark.parametrize("name", ["cumprod", "sort", "sort-descending", "median",
                                  "median-dim", "std"])
def test_eager_functions_match_torch_at_ties_and_zeros(name):
    """Zero factors (cumprod), tied values (sort, and median's shared gradient), zero spread.
    (Not quantile: PyTorch's sorts its values unstably, so which of tied values takes the
    gradient is its implementation's choice.)"""
    x = rng_for(f"torch ties {name}").integers(-1, 2, (4, 5)).astype(np.float64)
    x[2] = 1.0                                       # a row of equal values: std 0
    _compare_with_torch(TORCH[name], x, values_exact=name != "std")


@pytest.mark.parametrize("interpolation", TORCH_INTERPOLATIONS)
def test_quantile_interpolations_match_torch(interpolation):
    _compare_with_torch(lambda m, x: m.quantile(x, m.tensor([0.1, 0.5, 0.73], dtype=m.float64),
                                                0, interpolation=interpolation),
                        _distinct(f"torch {interpolation}", (6, 3)))


def test_sort_and_median_indices_match_torch():
    x = np.array([[2.0, 1.0, 2.0, np.nan, 1.0], [3.0, -1.0, 3.0, 0.0, 3.0]])
    for descending in (False, True):
        ours = tg.sort(tg.tensor(x), 1, descending)
        theirs = torch.sort(torch.tensor(x), dim=1, descending=descending, stable=True)
        np.testing.assert_array_equal(ours.values.data, theirs.values.numpy())
        np.testing.assert_array_equal(ours.indices.data, theirs.indices.numpy())
    ours, theirs = tg.median(tg.tensor(x), 1), torch.median(torch.tensor(x), 1)
    np.testing.assert_array_equal(ours.values.data, theirs.values.numpy())
    assert ours.indices.data[0] == theirs.indices.numpy()[0]      # the NaN's index
    assert np.isnan(tg.median(tg.tensor(x)).item()) and np.isnan(torch.median(torch.tensor(x)))


@pytest.mark.parametrize("code, torch_code", [
    ("tg.quantile(tg.ones(3), 1.5)", "torch.quantile(torch.ones(3), 1.5)"),
    ("tg.quantile(tg.ones(3), tg.tensor([0.5, 2.0]))",
     "torch.quantile(torch.ones(3), torch.tensor([0.5, 2.0]))"),
    ("tg.quantile(tg.ones(0), 0.5)", "torch.quantile(torch.ones(0), 0.5)"),
    ("tg.quantile(tg.ones(3), tg.ones(1, 1))", "torch.quantile(torch.ones(3), torch.ones(1, 1))"),
    ("tg.quantile(tg.ones(3), 0.5, interpolation='cubic')",
     "torch.quantile(torch.ones(3), 0.5, interpolation='cubic')"),
    ("tg.quantile(tg.tensor([1, 2]), 0.5)", "torch.quantile(torch.tensor([1, 2]), 0.5)"),
    ("tg.diff(tg.tensor(1.0))", "torch.diff(torch.tensor(1.0))"),
    ("tg.diff(tg.ones(3), n=-1)", "torch.diff(torch.ones(3), n=-1)"),
    ("tg.diff(tg.ones(3), prepend=tg.tensor(1.0))",
     "torch.diff(torch.ones(3), prepend=torch.tensor(1.0))"),
    ("tg.median(tg.ones(2, 0), 1)", "torch.median(torch.ones(2, 0), 1)"),
    ("tg.var(tg.tensor([1, 2]))", "torch.var(torch.tensor([1, 2]))"),
    ("tg.cumsum(tg.ones(2, 3), 2)", "torch.cumsum(torch.ones(2, 3), 2)"),
    ("tg.sort(tg.ones(2, 3), 2)", "torch.sort(torch.ones(2, 3), 2)"),
])
def test_errors_are_torchs(code, torch_code):
    with pytest.raises(Exception) as theirs:
        eval(torch_code)
    with pytest.raises(type(theirs.value)) as ours:
        eval(code)
    assert str(ours.value) == str(theirs.value)


def test_degrees_of_freedom_warn_as_torch():
    with pytest.warns(UserWarning, match=r"std\(\): degrees of freedom is <= 0"):
        out = tg.std(tg.ones(1, requires_grad=True))
    assert np.isnan(out.item())


# ---- arguments numpy has and tapegrad refuses ---------------------------------------------------

@pytest.mark.parametrize("code, error, message", [
    ("np.cumsum(x, out=np.empty(6))", TypeError,
     "numpy.cumsum: the argument out= is not supported on Tensors"),
    ("np.var(x, where=np.ones((2, 3), bool))", TypeError,
     "numpy.var: the argument where= is not supported on Tensors"),
    ("np.gradient(x, tg.tensor(0.5, requires_grad=True), axis=1)", NotImplementedError,
     "numpy.gradient: a spacing that depends on traced values is not supported (its "
     "gradient); pass a constant"),
    ("np.quantile(x, tg.tensor(0.5, requires_grad=True))", NotImplementedError,
     "numpy.quantile: q that depends on traced values is not supported (its gradient); pass "
     "a constant"),
    ("np.sort(x, order='a')", TypeError,
     "numpy.sort: the argument order= is not supported on Tensors"),
    ("np.partition(x, 5)", ValueError, "kth(=5) out of bounds (3)"),
    ("np.diff(x, n=-1)", ValueError, "order must be non-negative but got -1"),
])
def test_refused_arguments(code, error, message):
    x = tg.ones(2, 3, requires_grad=True)
    with pytest.raises(error) as info:
        eval(code)
    assert str(info.value) == message


# ---- vmap ---------------------------------------------------------------------------------------

FUSABLE = ["cumsum-axis1", "cumprod-axis0", "diff-n2-edges", "gradient-coords-edge2", "var",
           "std", "average-weights"]
UNFUSABLE = ["sort", "median", "percentile", "partition", "ptp", "nansum"]


def _batch(name, n=7):
    rng = rng_for(f"vmap {name}")
    return np.stack([rng.permutation(_distinct(f"{name} {k}", (3, 4)).ravel()).reshape(3, 4)
                     for k in range(n)])


def _loss(f, name):
    out = f(_input(name))
    u = rng_for(f"vmap u {name}").standard_normal(np.shape(np.stack(out) if isinstance(
        out, tuple) else out))
    return lambda x: (_tensor_out(f(x)) * u).sum()


@pytest.mark.parametrize("name", FUSABLE + UNFUSABLE)
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


@pytest.mark.parametrize("name", UNFUSABLE)
def test_vmap_fused_tier_refuses_order_statistics(name):
    """The sort's comparisons branch on values: the fused tier refuses the tape (NotFusable,
    no warning of a failure) and the interpreter answers."""
    loss = _loss(CASES[name], name)
    X = _batch(name)
    vmapped = tg.vmap(tg.grad(loss), fuse=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")        # refused, not failed: no warning
        got = vmapped(X)
    assert tiers(vmapped) == [False]
    np.testing.assert_array_equal(got, tg.vmap(tg.grad(loss), fuse=False)(X))


def test_vmap_median_of_many_values_matches_jax():
    """Every point has its own order: the sort runs per point at replay."""
    X = rng_for("vmap median").standard_normal((50, 101))
    ours = tg.vmap(tg.grad(lambda x: np.median(x) + np.percentile(x, 90)), fuse=False)(X)
    theirs = jax.vmap(jax.grad(lambda x: jnp.median(x) + jnp.percentile(x, 90)))(X)
    np.testing.assert_allclose(ours, theirs, atol=1e-14)


def test_registry_support_metadata():
    for f in (np.sort, np.partition, np.median, np.percentile, np.quantile, np.ptp, np.nansum,
              np.nanmean):
        assert not SUPPORT[f].fused and SUPPORT[f].differentiable
    for f in (np.cumsum, np.cumprod, np.diff, np.gradient, np.var, np.std, np.average):
        assert SUPPORT[f].fused and SUPPORT[f].notes
