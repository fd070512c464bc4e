"""numpy's elementwise functions on traced and eager tensors: inverse trigonometric and
hyperbolic functions, exp2/log2/log10, logaddexp(2), hypot, reciprocal, sinc, fabs, fmax/fmin,
remainder (`%`) and fmod, angle conversions, nan_to_num, square, copysign, heaviside.

Values against numpy (eager: numpy's own result; replayed: the compiled rows, to a few ulp),
derivatives against finite differences to second order (`gradcheck`), against HIPS autograd
and PyTorch at first and second order, the conventions at the edges (domain ends, ties, NaN,
the origin, -inf) and batched replay (`vmap`, interpreter and fused tiers).
"""
import math

import autograd
import autograd.numpy as anp
import numpy as np
import pytest
import torch

import tapegrad as tg
from tapegrad.testing import gradcheck

from conftest import rng_for

inf, nan = math.inf, math.nan

# numpy function, the domain its inputs are drawn from (away from kinks and domain ends)
UNARY = [
    (np.arcsin, (-0.9, 0.9)), (np.arccos, (-0.9, 0.9)), (np.arctan, (-3, 3)),
    (np.arcsinh, (-3, 3)), (np.arccosh, (1.2, 4)), (np.arctanh, (-0.9, 0.9)),
    (np.sinh, (-3, 3)), (np.cosh, (-3, 3)), (np.exp2, (-3, 3)), (np.log2, (0.1, 5)),
    (np.log10, (0.1, 5)), (np.reciprocal, (0.5, 3)), (np.sinc, (-2.5, 2.5)),
    (np.fabs, (0.1, 3)), (np.deg2rad, (-400, 400)), (np.radians, (-400, 400)),
    (np.rad2deg, (-7, 7)), (np.degrees, (-7, 7)), (np.square, (-3, 3)),
    (np.nan_to_num, (-3, 3)),
]
BINARY = [
    (np.arctan2, (-3, 3), (-3, 3)), (np.hypot, (-3, 3), (-3, 3)),
    (np.logaddexp, (-5, 5), (-5, 5)), (np.logaddexp2, (-5, 5), (-5, 5)),
    (np.fmax, (-3, 3), (-3, 3)), (np.fmin, (-3, 3), (-3, 3)),
    (np.remainder, (-7, 7), (0.6, 1.9)), (np.fmod, (-7, 7), (-1.9, -0.6)),
    (np.copysign, (0.2, 3), (-3, 3)), (np.heaviside, (0.2, 3), (-3, 3)),
]
NOT_IN_AUTOGRAD = {np.fmod, np.copysign, np.heaviside}
_ID = lambda case: case.__name__ if callable(case) else None


def _draw(name, domain, n=6):
    rng = rng_for(name)
    x = rng.uniform(*domain, n)
    if name.startswith("fabs"):
        x = x * rng.choice([-1.0, 1.0], n)
    return x


def _operands(f, da, db):
    a, b = _draw(f.__name__ + "a", da), _draw(f.__name__ + "b", db)
    if f in (np.remainder, np.fmod):       # quotients away from integers: no jumps nearby
        q = np.floor(a / b) + 0.5
        a = q * b
    return a, b


@pytest.mark.parametrize("f, domain", UNARY, ids=_ID)
def test_unary_values_eager_and_replayed(f, domain):
    x = _draw(f.__name__, domain)
    eager = f(tg.tensor(x, requires_grad=True))
    assert isinstance(eager, tg.Tensor)
    np.testing.assert_array_equal(eager.detach().numpy(), f(x))
    assert eager.dtype == tg.float64
    tape = tg.trace(lambda v: f(v), np.zeros_like(x) + domain[0] / 2 + domain[1] / 2)
    np.testing.assert_allclose(np.asarray(tape(x)), f(x), rtol=4e-16 * 4, atol=0)


@pytest.mark.parametrize("f, da, db", BINARY, ids=_ID)
def test_binary_values_eager_and_replayed(f, da, db):
    a, b = _operands(f, da, db)
    eager = f(tg.tensor(a, requires_grad=True), tg.tensor(b, requires_grad=True))
    np.testing.assert_array_equal(eager.detach().numpy(), f(a, b))
    tape = tg.trace(lambda u, v: f(u, v), a[::-1].copy(), b[::-1].copy())
    np.testing.assert_allclose(np.asarray(tape(a, b)), f(a, b), rtol=4e-16 * 4, atol=0)


@pytest.mark.parametrize("f, domain", UNARY, ids=_ID)
def test_unary_gradcheck(f, domain):
    gradcheck(lambda x: f(x), [_draw(f.__name__, domain)])


@pytest.mark.parametrize("f, da, db", BINARY, ids=_ID)
def test_binary_gradcheck_with_broadcasting(f, da, db):
    a, b = _operands(f, da, db)
    gradcheck(lambda u, v: f(u, v), [a, b])
    gradcheck(lambda u, v: f(u, v), [a.reshape(2, 3), b[:3]])
    if f not in (np.remainder, np.fmod):
        gradcheck(lambda u, v: f(u, v), [a[:1].reshape(()), b])


def _autograd_fn(f):
    return getattr(anp, f.__name__)


def _compare_with_autograd(f, args):
    """First and second derivatives (gradient, Hessian of sum(w * f)) of every operand."""
    w = rng_for(f.__name__ + "w").uniform(0.5, 1.5, args[0].shape)
    g = _autograd_fn(f)
    for k in range(len(args)):
        def ours(v, k=k):
            return np.sum(w * f(*args[:k], v, *args[k + 1:]))

        def theirs(v, k=k):
            return anp.sum(w * g(*args[:k], v, *args[k + 1:]))
        np.testing.assert_allclose(tg.grad(ours)(args[k]), autograd.grad(theirs)(args[k]),
                                   rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(tg.hessian(ours)(args[k]), autograd.hessian(theirs)(args[k]),
                                   rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("f, domain", UNARY, ids=_ID)
def test_unary_matches_autograd_to_second_order(f, domain):
    _compare_with_autograd(f, [_draw(f.__name__, domain)])


@pytest.mark.parametrize("f, da, db", [c for c in BINARY if c[0] not in NOT_IN_AUTOGRAD],
                         ids=_ID)
def test_binary_matches_autograd_to_second_order(f, da, db):
    _compare_with_autograd(f, list(_operands(f, da, db)))


# ---- edges of the domains --------------------------------------------------------------------

def _grad_of_sum(f, *args):
    """Eager values and gradients of sum(f(*args)), every argument a float64 leaf."""
    leaves = [tg.tensor(np.asarray(a, float), requires_grad=True) for a in args]
    with np.errstate(all="ignore"):
        out = f(*leaves)
        out.sum().backward()
    return out.detach().numpy(), [leaf.grad.numpy() for leaf in leaves]


@pytest.mark.parametrize("f, x, value, slope", [
    (np.arcsin, [1.0, -1.0], [np.pi / 2, -np.pi / 2], [inf, inf]),
    (np.arccos, [1.0, -1.0], [0.0, np.pi], [-inf, -inf]),
    (np.arctanh, [1.0, -1.0], [inf, -inf], [inf, inf]),
    (np.arccosh, [1.0], [0.0], [inf]),
    (np.log2, [0.0], [-inf], [inf]),
    (np.log10, [0.0], [-inf], [inf]),
    (np.log, [0.0], [-inf], [inf]),
    (np.arcsin, [1.5], [nan], [nan]),
    (np.arctanh, [2.0], [nan], [-1 / 3]),     # 1 / (1 - x^2) where the value is NaN
])
def test_domain_ends_give_numpys_inf_and_nan(f, x, value, slope):
    """As numpy, autograd and PyTorch: the value at the end, an infinite slope there, and
    their slope beyond it."""
    y, (g,) = _grad_of_sum(f, x)
    np.testing.assert_array_equal(y, value)
    np.testing.assert_array_equal(g, slope)
    with np.errstate(all="ignore"):
        np.testing.assert_array_equal(autograd.elementwise_grad(_autograd_fn(f))(np.array(x)),
                                      slope)


def test_sinc_at_and_near_zero():
    """sinc(0) = 1, sinc'(0) = 0 (PyTorch, JAX; autograd: NaN), sinc''(0) = -pi^2/3 (JAX;
    PyTorch: NaN), and the series used near 0 meets the closed form continuously."""
    y, (g,) = _grad_of_sum(np.sinc, [0.0])
    assert y[0] == 1.0 and g[0] == 0.0
    second = tg.hessian(lambda v: np.sum(np.sinc(v)))(np.array([0.0]))[0, 0]
    assert second == pytest.approx(-np.pi ** 2 / 3, rel=1e-15)
    x = torch.tensor([0.0], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.grad(torch.sinc(x).sum(), x)[0].item() == g[0]
    jax = pytest.importorskip("jax")
    x64 = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    try:
        assert jax.grad(jax.grad(jax.numpy.sinc))(0.0) == pytest.approx(second, rel=1e-15)
    finally:
        jax.config.update("jax_enable_x64", x64)
    near = np.array([-1.001e-3, -0.999e-3, 0.999e-3, 1.001e-3, 1e-8, -1e-300])
    exact = [(np.cos(np.pi * v) - np.sinc(v)) / v for v in near[:4]]
    np.testing.assert_allclose(tg.grad(lambda v: np.sum(np.sinc(v)))(near)[:4], exact,
                               rtol=1e-9)
    np.testing.assert_allclose(np.diag(tg.hessian(lambda v: np.sum(np.sinc(v)))(near)),
                               -np.pi ** 2 / 3 * (1 - 3 * np.pi ** 2 / 10 * near ** 2),
                               rtol=1e-9)
    gradcheck(lambda v: np.sinc(v), [near[:4]], eps=1e-7)


def test_fmax_fmin_ties_split_the_gradient_as_autograd_does():
    a, b = np.array([1.0, 2.0, -0.5, 3.0]), np.array([1.0, 1.0, -0.5, 4.0])
    for f in (np.fmax, np.fmin):
        _, grads = _grad_of_sum(f, a, b)
        expected = autograd.grad(lambda u, v: anp.sum(_autograd_fn(f)(u, v)), (0, 1))(a, b)
        for ours, theirs in zip(grads, expected):
            np.testing.assert_array_equal(ours, theirs)
        assert grads[0][0] == grads[1][0] == 0.5


def test_fmax_fmin_skip_nan_where_maximum_propagates_it():
    a = np.array([nan, 1.0, nan, 2.0])
    b = np.array([1.0, nan, nan, 3.0])
    for f, g in ((np.fmax, np.maximum), (np.fmin, np.minimum)):
        y, (ga, gb) = _grad_of_sum(f, a, b)
        np.testing.assert_array_equal(y, f(a, b))
        np.testing.assert_array_equal(ga, [0.0, 1.0, 0.0, f is np.fmin])
        np.testing.assert_array_equal(gb, [1.0, 0.0, 0.0, f is np.fmax])
        y, (ga, gb) = _grad_of_sum(g, a, b)
        np.testing.assert_array_equal(y, g(a, b))
        assert np.isnan(y[:3]).all()
        tape = tg.trace(lambda u, v: f(u, v), np.zeros(4), np.ones(4))
        np.testing.assert_array_equal(np.asarray(tape(a, b)), f(a, b))


def test_remainder_sign_and_gradient_follow_pytorch():
    """numpy's sign convention (that of the divisor); d/db = -(the exact integer quotient), as
    PyTorch computes it: 1.0 % 0.1 is 0.0999..., quotient 9 (autograd: -floor(1.0 / 0.1) =
    -10)."""
    a = np.array([1.0, -7.5, 7.5, -7.5, 5.0, -2.0])
    b = np.array([0.1, 2.0, -2.0, -2.0, 2.5, 1.0])
    y, (ga, gb) = _grad_of_sum(np.remainder, a, b)
    np.testing.assert_array_equal(y, np.remainder(a, b))
    ta, tb = (torch.tensor(v, requires_grad=True) for v in (a, b))
    torch.remainder(ta, tb).sum().backward()
    np.testing.assert_array_equal(y, torch.remainder(ta, tb).detach().numpy())
    np.testing.assert_array_equal(ga, ta.grad.numpy())
    np.testing.assert_array_equal(gb, tb.grad.numpy())
    assert gb[0] == -9.0
    tape = tg.trace(lambda u, v: np.remainder(u, v), np.ones(6), np.ones(6))
    np.testing.assert_array_equal(np.asarray(tape(a, b)), y)
    np.testing.assert_array_equal(tg.grad(lambda v: np.sum(np.mod(a, v)))(b), gb)


def test_percent_operator_eager_and_traced():
    """`x % c`, `c % x` and `x % y` are remainder: PyTorch's on eager tensors, numpy's on
    traced values (the same values, up to the sign of a zero result). PyTorch has no
    derivative of `c % x` (remainder of a number by a tensor): ours is that of a tensor of c's."""
    x = np.array([-3.7, -1.0, 0.5, 2.25, 6.0])
    leaf, divisor = tg.tensor(x, requires_grad=True), tg.tensor(x[::-1].copy())
    t, t_divisor = torch.tensor(x, requires_grad=True), torch.tensor(x[::-1].copy())
    ((leaf % 1.5) + (2.0 % leaf) + (leaf % divisor) + (divisor % leaf)).sum().backward()
    two = torch.full_like(t, 2.0)
    ((t % 1.5) + (two % t) + (t % t_divisor) + (t_divisor % t)).sum().backward()
    np.testing.assert_array_equal(leaf.grad.numpy(), t.grad.numpy())
    np.testing.assert_array_equal((leaf % 1.5).detach().numpy(), (t % 1.5).detach().numpy())
    np.testing.assert_array_equal(tg.tensor([5, -3, 7]) % 3, torch.tensor([5, -3, 7]) % 3)
    f = lambda v: np.sum(v % 1.0 + 3.0 % v)
    np.testing.assert_allclose(tg.grad(f)(x), autograd.grad(f)(x), rtol=1e-15)


def test_hypot_and_arctan2_at_the_origin():
    """hypot: the gradient at (0, 0) is 0, the subgradient abs takes at 0 (torch.hypot and
    autograd give NaN); arctan2: 0 there, as PyTorch's (autograd: NaN)."""
    y, grads = _grad_of_sum(np.hypot, [0.0, 3.0], [0.0, -4.0])
    np.testing.assert_array_equal(y, [0.0, 5.0])
    np.testing.assert_array_equal(grads, [[0.0, 0.6], [0.0, -0.8]])
    h = tg.hessian(lambda v: np.hypot(v[0], v[1]))(np.zeros(2))
    np.testing.assert_array_equal(h, np.zeros((2, 2)))
    _, grads = _grad_of_sum(np.arctan2, [0.0], [0.0])
    ta, tb = (torch.zeros(1, dtype=torch.float64, requires_grad=True) for _ in range(2))
    torch.atan2(ta, tb).sum().backward()
    np.testing.assert_array_equal(grads, [ta.grad.numpy(), tb.grad.numpy()])


def test_logaddexp_with_minus_infinity():
    """-inf is log(0): logaddexp(-inf, b) = b with gradients (0, 1); both -inf give -inf and
    a NaN gradient, as does inf in the first operand with a finite second (exp(inf - inf)),
    as in autograd."""
    for f, g in ((np.logaddexp, anp.logaddexp), (np.logaddexp2, anp.logaddexp2)):
        a, b = np.array([-inf, 0.5, -inf, inf]), np.array([2.0, -inf, -inf, 1.0])
        y, (ga, gb) = _grad_of_sum(f, a, b)
        np.testing.assert_array_equal(y, f(a, b))
        np.testing.assert_array_equal(ga[:2], [0.0, 1.0])
        np.testing.assert_array_equal(gb[[0, 1, 3]], [1.0, 0.0, 0.0])
        assert np.isnan(ga[2]) and np.isnan(gb[2]) and np.isnan(ga[3])
        with np.errstate(all="ignore"):
            theirs = autograd.grad(lambda u, v: anp.sum(g(u, v)), (0, 1))(a, b)
        np.testing.assert_array_equal(theirs[0], ga)
        np.testing.assert_array_equal(theirs[1], gb)
        tape = tg.trace(lambda u, v: f(u, v), np.zeros(4), np.zeros(4))
        np.testing.assert_array_equal(np.asarray(tape(a, b)), f(a, b))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("kwargs", [{}, dict(nan=-1.5, posinf=9.0, neginf=-9.0),
                                    dict(nan=nan)])
def test_nan_to_num(dtype, kwargs):
    """numpy's values (by default 0 and the dtype's extremes); gradient 1 where x is finite,
    0 where a value was replaced (PyTorch, autograd)."""
    x = np.array([nan, inf, -inf, 1.5, -0.0], dtype)
    leaf = tg.tensor(x, requires_grad=True)
    out = np.nan_to_num(leaf, **kwargs)
    np.testing.assert_array_equal(out.detach().numpy(), np.nan_to_num(x, **kwargs))
    assert out.dtype == leaf.dtype
    out.sum().backward()
    np.testing.assert_array_equal(leaf.grad.numpy(), [0, 0, 0, 1, 1])
    if dtype == np.float64:
        tape = tg.trace(lambda v: np.nan_to_num(v, **kwargs), np.zeros(5))
        np.testing.assert_array_equal(np.asarray(tape(x)), np.nan_to_num(x, **kwargs))
        torch_out = torch.nan_to_num(torch.tensor(x), **kwargs)
        np.testing.assert_array_equal(tg.nan_to_num(tg.tensor(x), **kwargs).numpy(),
                                      torch_out.numpy())


def test_integer_operands():
    """numpy's results on integer tensors: reciprocal by integer division, fabs a float,
    remainder of integers (constants: nothing to differentiate)."""
    k = np.array([-3, -1, 1, 2])
    with np.errstate(all="ignore"):
        for f in (np.reciprocal, np.fabs, np.square, lambda v: np.remainder(v, 3)):
            out = f(tg.tensor(k))
            np.testing.assert_array_equal(out.numpy(), f(k))
            assert out.numpy().dtype == f(k).dtype
    np.testing.assert_allclose(tg.reciprocal(tg.tensor(k)).numpy(),
                               torch.reciprocal(torch.tensor(k, dtype=torch.float64)).numpy())


# ---- PyTorch's names: functions and methods ----------------------------------------------------

TORCH_UNARY = ["asin", "acos", "atan", "asinh", "atanh", "arcsin", "arccos", "arctan", "arcsinh",
               "arctanh", "sinh", "cosh", "exp2", "log2", "log10", "reciprocal", "sinc",
               "deg2rad", "rad2deg", "nan_to_num", "square", "acosh", "arccosh"]
TORCH_BINARY = ["atan2", "arctan2", "hypot", "logaddexp", "logaddexp2", "fmax", "fmin",
                "remainder", "fmod", "copysign", "float_power"]


@pytest.mark.parametrize("name", TORCH_UNARY)
def test_pytorch_unary_names(name):
    x = _draw(name, (1.1, 1.9) if name in ("acosh", "arccosh") else (-0.9, 0.9))
    ours = [tg.tensor(x, requires_grad=True) for _ in range(2)]
    theirs = [torch.tensor(x, requires_grad=True) for _ in range(2)]
    outs = [getattr(tg, name)(ours[0]), getattr(ours[1], name)()]
    touts = [getattr(torch, name)(theirs[0]), getattr(theirs[1], name)()]
    for o, t, leaf, tleaf in zip(outs, touts, ours, theirs):
        np.testing.assert_allclose(o.detach().numpy(), t.detach().numpy(), rtol=1e-15)
        o.sum().backward()
        t.sum().backward()
        np.testing.assert_allclose(leaf.grad.numpy(), tleaf.grad.numpy(), rtol=1e-14)


@pytest.mark.parametrize("name", TORCH_BINARY)
def test_pytorch_binary_names(name):
    a, b = _draw(name + "a", (-3, 3)), _draw(name + "b", (0.6, 1.9))
    if name == "float_power":
        a = np.abs(a) + 0.1
    ours = [tg.tensor(v, requires_grad=True) for v in (a, b, a, b)]
    theirs = [torch.tensor(v, requires_grad=True) for v in (a, b, a, b)]
    outs = [getattr(tg, name)(ours[0], ours[1]), getattr(ours[2], name)(ours[3])]
    touts = [getattr(torch, name)(theirs[0], theirs[1]), getattr(theirs[2], name)(theirs[3])]
    for o, t in zip(outs, touts):
        np.testing.assert_allclose(o.detach().numpy(), t.detach().numpy(), rtol=1e-15)
        o.sum().backward()
        t.sum().backward()
    for leaf, tleaf in zip(ours, theirs):
        np.testing.assert_allclose(leaf.grad.numpy(), tleaf.grad.numpy(), rtol=1e-14)


def test_heaviside_names_and_gradient():
    """torch.heaviside has no derivative; ours flows to the second operand where the first is
    0 (JAX's)."""
    a, b = np.array([-1.0, 0.0, 2.0, 0.0]), np.array([0.3, 0.5, 0.7, 0.2])
    np.testing.assert_array_equal(tg.heaviside(tg.tensor(a), tg.tensor(b)).numpy(),
                                  torch.heaviside(torch.tensor(a), torch.tensor(b)).numpy())
    y, (ga, gb) = _grad_of_sum(lambda u, v: u.heaviside(v), a, b)
    np.testing.assert_array_equal(y, np.heaviside(a, b))
    np.testing.assert_array_equal(ga, 0.0)
    np.testing.assert_array_equal(gb, [0.0, 1.0, 0.0, 1.0])


def test_real_helpers_pass_through():
    x = np.array([-2.0, 0.5, 3.0])
    for f in (np.real, np.conj, np.conjugate, np.real_if_close, np.imag, np.angle):
        ours = tg.grad(lambda v: np.sum(f(v) * v))(x)
        np.testing.assert_array_equal(ours, autograd.grad(lambda v: anp.sum(
            getattr(anp, f.__name__)(v) * v))(x))
        np.testing.assert_array_equal(f(tg.tensor(x)).numpy(), f(x))


# ---- batched replay ----------------------------------------------------------------------------

def _all_unary(x):
    """Every unary function, at x in (-1, 1) mapped onto its domain."""
    return sum(np.sum(f(lo + (hi - lo) * (x + 1) / 2)) for f, (lo, hi) in UNARY
               if f is not np.fabs) + np.sum(np.fabs(x))


def _all_binary(a, b):
    return sum(np.sum(f(a, b)) for f, _, _ in BINARY)


@pytest.mark.parametrize("fuse", [False, True])
def test_vmap_of_gradients(fuse):
    rng = rng_for(f"vmap{fuse}")
    x = rng.uniform(-0.8, 0.8, (5, 3))
    a, b = rng.uniform(0.3, 2.0, (2, 5, 3))
    got = tg.vmap(tg.grad(_all_unary), fuse=fuse)(x)
    np.testing.assert_allclose(got, [tg.grad(_all_unary)(p) for p in x], rtol=1e-13)
    got = tg.vmap(tg.grad(_all_binary, argnums=(0, 1)), fuse=fuse)(a, b)
    per_point = [tg.grad(_all_binary, argnums=(0, 1))(p, q) for p, q in zip(a, b)]
    for k in range(2):
        np.testing.assert_allclose(got[k], [g[k] for g in per_point], rtol=1e-13)


def test_vmap_of_hessians():
    rng = rng_for("vmap-hessian")
    x = rng.uniform(-0.8, 0.8, (4, 3))
    got = tg.vmap(tg.hessian(_all_unary), fuse=False)(x)
    np.testing.assert_allclose(got, [tg.hessian(_all_unary)(p) for p in x], rtol=1e-12)
