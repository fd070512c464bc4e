"""`tg.compiled`: derivatives called from numba's compiled code and from scipy's C callbacks.

Results must equal the Python transforms' to the last bit on the interpreter path: the
transforms are called once first (a trace computes its values with numpy), then compared at
another point, where they replay. Each member compiles once per tape (about a second), so the
tests share a few tapes.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from numba import njit, prange
from numba.core.errors import NumbaPerformanceWarning, TypingError
from numpy.testing import assert_allclose, assert_array_equal

import tapegrad as tg
from tapegrad.batch import native
from tapegrad.transforms.compiled import GUARD_FAILED, OK

RNG = np.random.default_rng(0)
W = RNG.standard_normal((4, 6))
A = RNG.standard_normal((6, 6))


def rosenbrock(x):
    return np.sum(100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)


def quadratic(x):                       # matmul and elementwise ops
    return x @ (A @ x) + np.sum(np.tanh(x))


def reductions(x):                      # reductions of several kinds
    return np.mean(np.exp(x) * x) + np.max(x) ** 2 + np.sum(np.cumsum(x) ** 2)


def matrix_input(x):                    # a 2-d argument through a matrix product
    return np.sum(np.sin(W @ x.T) ** 2)


def vector(x):                          # a vector output: jvp, vjp, jacobian
    return np.tanh(W @ x) * x[:4]


SCALAR = {"rosenbrock": (rosenbrock, (6,)), "quadratic": (quadratic, (6,)),
          "reductions": (reductions, (6,)), "matrix_input": (matrix_input, (5, 6))}


def _points(shape):
    return RNG.uniform(-1, 1, shape), RNG.uniform(-1, 1, shape)


def _replayed(transform, x0, *args):
    """`transform` traced at x0 (its values computed by numpy), then replayed at args."""
    transform(x0, *args[1:])
    return transform(*args)


@pytest.fixture(scope="module")
def rosen():
    x0, x1 = _points(6)
    return tg.compiled(rosenbrock, x0), x0, x1


@pytest.mark.parametrize("name", sorted(SCALAR))
def test_gradient_equals_grad_bit_for_bit(name):
    f, shape = SCALAR[name]
    x0, x1 = _points(shape)
    c = tg.compiled(f, x0)
    assert_array_equal(c.grad(x1), _replayed(tg.grad(f), x0, x1))
    value, gradient = c.value_and_grad(x1)
    ref_value, ref_gradient = _replayed(tg.value_and_grad(f), x0, x1)
    assert value == ref_value and gradient.shape == shape
    assert_array_equal(gradient, ref_gradient)


def test_every_scalar_member_equals_its_transform(rosen):
    c, x0, x1 = rosen
    v = RNG.uniform(-1, 1, 6)
    value, gradient = _replayed(tg.value_and_grad(rosenbrock), x0, x1)
    assert c.value(x1) == value
    out = np.full(1, np.nan)
    assert c.value_into(x1, out) == OK and out[0] == value
    out = np.empty(6)
    assert c.grad_into(x1, out) == OK
    assert_array_equal(out, gradient)
    out = np.empty(6)
    assert c.value_and_grad_into(x1, out) == (value, OK)
    assert_array_equal(out, gradient)
    tg.hvp(rosenbrock, x0, v)
    assert_array_equal(c.hvp(x1, v), tg.hvp(rosenbrock, x1, v))
    out = np.empty(6)
    assert c.hvp_into(x1, v, out) == OK
    assert_array_equal(out, tg.hvp(rosenbrock, x1, v))
    assert_array_equal(c.hessian(x1), _replayed(tg.hessian(rosenbrock), x0, x1))


def test_vector_members_equal_their_transforms():
    x0, x1 = _points(6)
    t, cot = RNG.uniform(-1, 1, 6), RNG.uniform(-1, 1, 4)
    c = tg.compiled(vector, x0)
    tg.jvp(vector, (x0,), (t,))
    value, tangent = c.jvp(x1, t)
    ref_value, ref_tangent = tg.jvp(vector, (x1,), (t,))
    assert_array_equal(value, ref_value)
    assert_array_equal(tangent, ref_tangent)
    assert_array_equal(c.value(x1), ref_value)
    tg.vjp(vector, x0)[1](cot)
    assert_array_equal(c.vjp(x1, cot), tg.vjp(vector, x1)[1](cot)[0])
    jacobian = _replayed(tg.jacrev(vector), x0, x1)
    assert_array_equal(c.jacobian(x1), jacobian)
    out = np.empty((4, 6))
    assert c.jacobian_into(x1, out) == OK
    assert_array_equal(out, jacobian)


def test_called_from_njit_code_and_any_layout(rosen):
    c, x0, x1 = rosen
    grad_into = c.grad_into

    @njit
    def descend(x, steps, rate):
        g = np.empty_like(x)
        for _ in range(steps):
            grad_into(x, g)
            x = x - rate * g
        return x

    expected = x1.copy()
    for _ in range(5):
        expected = expected - 1e-4 * _replayed(tg.grad(rosenbrock), x0, expected)
    assert_array_equal(descend(x1.copy(), 5, 1e-4), expected)
    X = np.asfortranarray(np.stack([x1, x0]).T)       # columns: strided arguments
    assert_array_equal(c.grad(X[:, 0]), c.grad(x1))


def test_prange_loop_equals_serial_loop(rosen):
    c = rosen[0]
    grad_into = c.grad_into

    @njit(parallel=True)
    def gradients(X, out):
        for i in prange(X.shape[0]):
            grad_into(X[i], out[i])

    X = RNG.uniform(-2, 2, (2000, 6))
    parallel = np.empty_like(X)
    gradients(X, parallel)
    serial = np.array([c.grad(x) for x in X])
    assert_array_equal(parallel, serial)


def branchy(x):
    if np.sum(x) > 0:
        return np.sum(x ** 2)
    return np.sum(np.sin(x))


def test_guards_pass_on_the_recorded_branch_and_report_the_other():
    c = tg.compiled(branchy, np.ones(3))
    grad_into = c.grad_into

    @njit
    def status(x, out):
        return grad_into(x, out)

    out = np.full(3, 7.0)
    x = np.array([0.5, 1.0, 2.0])
    assert status(x, out) == OK
    assert_array_equal(out, 2 * x)
    out = np.full(3, 7.0)
    assert status(-x, out) == GUARD_FAILED
    assert_array_equal(out, 7.0)                       # left as it was
    with pytest.raises(tg.GuardError, match="another branch"):
        c.grad(-x)


def test_tapes_that_replay_python_are_refused():
    inner = tg.grad(lambda y: np.sum(y ** 3))
    with pytest.raises(NotImplementedError, match="function transform inside"):
        tg.compiled(lambda x: np.sum(inner(x) * x), np.ones(3))
    with pytest.raises(TypeError, match="exactly one argument"):
        tg.compiled(lambda x, y: np.sum(x * y), np.ones(3), np.ones(3))
    with pytest.raises(TypeError, match="requires a scalar output"):
        tg.compiled(vector, np.ones(6)).grad


def test_wrong_sizes_and_dtypes_are_refused(rosen):
    c = rosen[0]
    grad_into = c.grad_into

    @njit
    def call(x, out):
        return grad_into(x, out)

    with pytest.raises(ValueError, match="x must have 6 elements"):
        call(np.ones(7), np.empty(6))
    with pytest.raises(ValueError, match="out must have 6 elements"):
        call(np.ones(6), np.empty(5))
    with pytest.raises(TypingError, match="x must be a float64 array"):
        call(np.ones(6, np.float32), np.empty(6))
    readonly = np.empty(6)
    readonly.setflags(write=False)
    with pytest.raises(TypingError, match="out must be a writable float64 array"):
        c.grad_into(np.ones(6), readonly)


def test_quad_of_a_derivative_through_a_low_level_callable():
    integrate = pytest.importorskip("scipy.integrate")

    def f(x):
        return np.sin(3 * x) * np.exp(-x * x)

    c = tg.compiled(f, 0.5)
    derivative = tg.grad(f)
    by_python = integrate.quad(lambda x: derivative(x), 0.0, 2.0)
    by_callback = integrate.quad(c.lowlevel("grad", "float64(float64)"), 0.0, 2.0)
    assert_allclose(by_callback, by_python, rtol=1e-13, atol=1e-15)
    assert_allclose(by_callback[0], f(2.0) - f(0.0), rtol=1e-12)

    def g(z):                            # z = (t, a): quad integrates over t, args give a
        return np.sin(z[1] * z[0]) * np.exp(-z[0] ** 2)

    partial = tg.compiled(g, np.array([0.5, 2.0])).lowlevel("grad")
    by_pointer, _ = integrate.quad(partial, 0.0, 1.5, args=(2.0,))
    assert_allclose(by_pointer, g(np.array([1.5, 2.0])) - g(np.array([0.0, 2.0])), rtol=1e-12)


def test_minimize_with_value_and_grad_and_hessp():
    optimize = pytest.importorskip("scipy.optimize")
    x0 = np.linspace(-1.2, 1.0, 10)
    bfgs = optimize.minimize(tg.value_and_grad(rosenbrock), x0, jac=True, method="BFGS")
    assert bfgs.success
    assert_allclose(bfgs.x, np.ones(10), atol=1e-4)
    hessp = tg.hessp(rosenbrock)
    for method, options in (("trust-ncg", {}), ("Newton-CG", dict(xtol=1e-10))):
        result = optimize.minimize(rosenbrock, x0, jac=tg.grad(rosenbrock), hessp=hessp,
                                   method=method, options=dict(maxiter=500, **options))
        assert result.success, (method, result.message)
        assert_allclose(result.x, np.ones(10), atol=1e-5)
    p = RNG.uniform(-1, 1, 10)
    assert_array_equal(hessp(x0, p), tg.hvp(rosenbrock, x0, p))


def test_hessp_passes_minimize_args():
    def scaled(x, s):
        return s * rosenbrock(x)

    x, p = np.linspace(0.0, 1.0, 4), np.arange(4.0)
    assert_allclose(tg.hessp(scaled)(x, p, 3.0), 3.0 * tg.hvp(rosenbrock, x, p), rtol=1e-14)
    with pytest.raises(ValueError, match="p must have the structure of x"):
        tg.hessp(scaled)(x, [p], 3.0)


# a prange loop that numba cannot run in parallel warns (and runs serially)
SERIAL_PRANGE_FAILS = pytest.mark.filterwarnings(f"error::{NumbaPerformanceWarning.__module__}."
                                                 f"{NumbaPerformanceWarning.__name__}")


def _fused_gradients(member):
    """A prange loop over points calling `member` (inlined into it where small)."""
    @njit(parallel=True)
    def gradients(X, out):
        status = np.empty(X.shape[0], np.int64)
        for i in prange(X.shape[0]):
            status[i] = member(X[i], out[i])
        return status
    return gradients


@SERIAL_PRANGE_FAILS
def test_fused_member_agrees_with_grad_to_rounding(rosen):
    c, x0, x1 = rosen
    fused_grad_into = c.fused_grad_into
    gradients = _fused_gradients(fused_grad_into)
    X = RNG.uniform(-2, 2, (500, 6))
    fused = np.empty_like(X)
    assert (gradients(X, fused) == OK).all()
    assert_allclose(fused, [c.grad(x) for x in X], rtol=1e-13, atol=1e-12)
    strided = np.empty((6, 2))[:, 0]                   # a strided output buffer
    assert fused_grad_into(np.asfortranarray(X[:2].T)[:, 1], strided) == OK
    assert_allclose(strided, fused[1], rtol=1e-15)
    with pytest.raises(ValueError, match="x must have 6 elements"):
        fused_grad_into(np.ones(5), strided)


def test_fused_member_reports_guards_and_refuses_what_it_cannot_fuse():
    c = tg.compiled(branchy, np.ones(3))
    out = np.full(3, 7.0)
    x = np.array([0.5, 1.0, 2.0])
    assert c.fused_grad_into(x, out) == OK
    assert_allclose(out, 2 * x, rtol=1e-15)
    out[:] = 7.0
    assert c.fused_grad_into(-x, out) == GUARD_FAILED
    assert_array_equal(out, 7.0)
    with pytest.raises(NotImplementedError, match="fused tier cannot compile"):
        tg.compiled(reductions, np.ones(6)).fused_grad_into


@SERIAL_PRANGE_FAILS
@pytest.mark.parametrize("form", ["straight-line", "kernel"])
def test_fused_member_guards_in_a_prange_loop(form, monkeypatch):
    """Both forms of the member (a large tape's runs the fused kernel for one point): the
    points that take the other branch report GUARD_FAILED and keep their out row."""
    if form == "kernel":
        monkeypatch.setattr(native, "INLINE_LIMIT", 0)
    gradients = _fused_gradients(tg.compiled(branchy, np.ones(3)).fused_grad_into)
    X = RNG.uniform(-1, 1, (300, 3))
    out = np.full_like(X, 7.0)
    taken = X.sum(axis=1) > 0
    assert_array_equal(gradients(X, out), np.where(taken, OK, GUARD_FAILED))
    assert_allclose(out[taken], 2 * X[taken], rtol=1e-15)
    assert_array_equal(out[~taken], 7.0)


def test_fused_member_as_the_fused_kernel_for_one_point(rosen, monkeypatch):
    c, _, x1 = rosen
    monkeypatch.setattr(native, "INLINE_LIMIT", 0)
    out = np.empty(6)
    assert tg.compiled(rosenbrock, x1).fused_grad_into(x1, out) == OK
    assert_allclose(out, c.grad(x1), rtol=1e-13, atol=1e-12)


FUSED = {"quadratic": (quadratic, (6,)), "matrix_input": (matrix_input, (5, 6)),
         "float": (lambda x: np.sin(3 * x) * np.exp(-x * x), ())}


@pytest.mark.parametrize("name", sorted(FUSED))
def test_fused_member_agrees_with_grad_on_other_tapes(name):
    """Math calls, matrix products, a 2-d argument (and out of another layout), a float."""
    f, shape = FUSED[name]
    x0, x1 = (x if shape else float(x) for x in _points(shape))
    member = tg.compiled(f, x0).fused_grad_into
    out = np.full(shape or 1, np.nan)
    assert member(x1, out) == OK
    assert_allclose(out.reshape(shape), tg.grad(f)(x1), rtol=1e-13, atol=1e-14)
    if name == "matrix_input":
        fortran = np.asfortranarray(np.full(shape, np.nan))
        assert member(np.asfortranarray(x1), fortran) == OK
        assert_array_equal(fortran, out)


def test_fused_member_refuses_wrong_arguments(rosen):
    c, _, x1 = rosen
    member = c.fused_grad_into

    @njit
    def call(x, out):
        return member(x, out)

    @njit
    def call_argument(g, x, out):        # a member passed as an argument: called, not inlined
        return g(x, out)

    out = np.empty(6)
    assert call_argument(member, x1, out) == OK
    assert_allclose(out, c.grad(x1), rtol=1e-13, atol=1e-12)
    with pytest.raises(ValueError, match="x must have 6 elements"):
        call(np.ones(7), out)
    with pytest.raises(ValueError, match="out must have 6 elements"):
        call(x1, np.empty(5))
    with pytest.raises(TypingError, match="x must be a float64 array"):
        call(np.ones(6, np.float32), out)
    readonly = np.empty(6)
    readonly.setflags(write=False)
    with pytest.raises(TypingError, match="out must be a writable float64 array"):
        call(x1, readonly)
    with pytest.raises(NotImplementedError, match="float32 tape"):
        tg.compiled(rosenbrock, x1.astype(np.float32)).fused_grad_into


def test_float32_tapes_take_float32_arrays():
    x0, x1 = (x.astype(np.float32) for x in _points(6))
    c = tg.compiled(rosenbrock, x0)
    gradient = c.grad(x1)
    assert gradient.dtype == np.float32
    assert_array_equal(gradient, _replayed(tg.grad(rosenbrock), x0, x1))
    with pytest.raises(TypingError, match="x must be a float32 array"):
        c.grad(x1.astype(np.float64))


_CACHED = """
import json, sys
import numpy as np
import tapegrad as tg

def rosenbrock(x):
    return np.sum(100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)

c = tg.compiled(rosenbrock, np.linspace(0.0, 1.0, 6))
x, out = np.linspace(-1.0, 1.0, 6), np.empty(6)
hits = {}
for name, args in (("value", (x,)), ("grad_into", (x, out)), ("hvp", (x, x)),
                   ("fused_grad_into", (x, out))):
    member = c.member(name)
    member(*args)
    hits[name] = [sum(member.stats.cache_hits.values()), sum(member.stats.cache_misses.values())]
print(json.dumps(hits))
"""


def test_members_load_from_numbas_disk_cache_in_a_later_process():
    """Members written from one template (and the fused member) stay cacheable: a second
    process loads each from numba's disk cache instead of compiling it."""
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    for _ in range(2):
        run = subprocess.run([sys.executable, "-c", _CACHED], capture_output=True, text=True,
                             env=env, timeout=600)
        assert run.returncode == 0, run.stderr
    hits = json.loads(run.stdout.strip().splitlines()[-1])
    assert hits == {name: [1, 0] for name in hits}, hits
