"""Tracing and replay: the `Tape` object, what a tape may assume about the traced function.

The rules under test (see `tapegrad.transforms.trace`):
  * array arguments and Python floats are inputs; ints, bools, strings, None and integer arrays
    are static, part of the cache key (a new value retraces);
  * functions written with plain numpy (`np.sin(x)`, `W @ x`, ...) record on the tape, and a
    numpy function nobody registered raises a TypeError naming it, never a silent constant;
  * Python control flow on traced values is recorded as guards; a replay where a guard differs
    retraces (several tapes per signature, bounded) and never returns the other branch's result;
  * closed-over arrays are constants captured at trace time, unless `capture="call"`;
  * converting a traced value to a Python number raises a TypeError.
Traces are counted by counting calls of the Python function.
"""
import math
import pickle
import threading

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import tapegrad as tg
from tapegrad.transforms import traced as _transforms

from conftest import rng_for


class Counted:
    """A function that counts its calls: each call while a transform runs is one trace."""

    def __init__(self, f):
        self.f, self.calls = f, 0
        self.__name__ = getattr(f, "__name__", "f")

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.f(*args, **kwargs)


def fd_gradient(f, x, eps=1e-6):
    """Central differences of scalar f at float64 array x."""
    x = np.array(x, np.float64)
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[i] += eps
        xm[i] -= eps
        g[i] = (float(f(xp)) - float(f(xm))) / (2 * eps)
    return g


# ---- the Tape object --------------------------------------------------------------------------

def rosenbrock(x):
    return np.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


def test_trace_returns_an_inspectable_tape():
    x = np.array([0.5, -1.2, 0.8, 1.5])
    tape = tg.trace(rosenbrock, x)
    assert isinstance(tape, tg.Tape)
    assert 0 < len(tape) < 40           # array entries, not one entry per scalar operation
    text = repr(tape)
    assert "Tape" in text and f"{len(tape)} entries" in text
    assert len(tape.input_slots) == 1 and len(tape.output_slots) == 1


def test_tape_replays_value_and_gradient_without_calling_f():
    f = Counted(rosenbrock)
    tape = tg.trace(f, np.array([0.5, -1.2, 0.8, 1.5]))
    assert f.calls == 1
    r = rng_for("tape replay")
    for _ in range(3):
        x = r.standard_normal(4)
        np.testing.assert_allclose(tape(x), rosenbrock(x), rtol=1e-13)
        np.testing.assert_allclose(tape.gradient(x), fd_gradient(rosenbrock, x),
                                   rtol=1e-6, atol=1e-6)
    assert f.calls == 1


def test_tape_with_several_arguments_statics_and_keywords():
    def f(x, n, y, scale=1.0):
        return scale * np.sum(x ** n) * y

    x = np.array([1.0, 2.0])
    tape = tg.trace(f, x, 3, 2.0, scale=0.5)
    np.testing.assert_allclose(tape(x, 3, 4.0, scale=2.0), 2.0 * 9.0 * 4.0)
    gx, gy, gscale = tape.gradient(x, 3, 4.0, scale=2.0)     # every input, keywords last
    np.testing.assert_allclose(gx, 2.0 * 3 * x ** 2 * 4.0)
    np.testing.assert_allclose(gy, 2.0 * 9.0)
    np.testing.assert_allclose(gscale, 9.0 * 4.0)


def test_tape_rejects_arguments_unlike_the_traced_ones():
    tape = tg.trace(lambda x, n: np.sum(x ** n), np.ones(3), 2)
    with pytest.raises(TypeError, match="traced with 2 positional arguments"):
        tape(np.ones(3))
    with pytest.raises(TypeError, match="traced with 2 positional arguments"):
        tape(np.ones(3), 2, 5)
    with pytest.raises(ValueError, match=r"shape \(4,\)"):
        tape(np.ones(4), 2)
    with pytest.raises(ValueError, match="float32"):
        tape(np.ones(3, np.float32), 2)
    with pytest.raises(ValueError, match="3"):          # a static value is part of the tape
        tape(np.ones(3), 3)
    with pytest.raises(TypeError, match="structured as"):
        tg.trace(lambda p: p["a"] * 2.0, {"a": 1.0})({"b": 1.0})


def test_tape_detects_another_branch():
    tape = tg.trace(lambda x: x ** 2 if x > 0 else -x, 2.0)
    assert len(tape.guards) == 1
    np.testing.assert_allclose(tape(3.0), 9.0)
    with pytest.raises(tg.GuardError, match="another branch"):
        tape(-1.0)
    with pytest.raises(tg.GuardError):
        tape.gradient(-1.0)


def test_tape_gradient_requires_a_scalar_output():
    tape = tg.trace(lambda x: x * 2.0, np.ones(3))
    with pytest.raises(TypeError, match="scalar output"):
        tape.gradient(np.ones(3))


def test_tape_pickles():
    x = np.array([0.5, -1.2, 0.8])
    tape = pickle.loads(pickle.dumps(tg.trace(rosenbrock, x)))
    y = np.array([1.0, 2.0, -0.5])
    np.testing.assert_allclose(tape(y), rosenbrock(y))
    np.testing.assert_allclose(tape.gradient(y), fd_gradient(rosenbrock, y), rtol=1e-6)


def test_a_tape_pickles_without_what_it_derived():
    """What a process derives from a tape (per-thread buffers, the bound gradient sweeps, any
    cache kept in `tape.derived`) stays behind: a tape pickles after any use, and its copy
    derives its own."""
    x = np.array([0.5, -1.2, 0.8])
    g = tg.grad(rosenbrock)
    for _ in range(2):
        g(x)
    (tape,), = g.traced.cache.values()
    tape.derived["a cache of another module"] = lambda: None     # not picklable
    assert any(key[0] == "gradient sweeps" for key in tape.derived if isinstance(key, tuple))
    clone = pickle.loads(pickle.dumps(tape))
    assert clone.derived == {}
    np.testing.assert_allclose(clone.gradient(x), g(x), rtol=1e-14)


def test_tape_is_shared_safely_by_threads():
    tape = tg.trace(rosenbrock, np.zeros(5))
    points = [rng_for(f"thread point {i}").standard_normal(5) for i in range(8)]
    expected = [(rosenbrock(p), fd_gradient(rosenbrock, p)) for p in points]
    failures = []

    def work(k):
        for j in range(100):
            i = (k + j) % len(points)
            if not (np.isclose(tape(points[i]), expected[i][0], rtol=1e-12)
                    and np.allclose(tape.gradient(points[i]), expected[i][1], rtol=1e-5,
                                    atol=1e-6)):
                failures.append((k, j))

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures


# ---- numpy functions record on the tape --------------------------------------------------------

W = np.array([[0.5, -1.0, 2.0], [1.5, 0.3, -0.7]])

NUMPY_CASES = {
    "np.sin": lambda x: np.sum(np.sin(x)),
    "np.sum axis": lambda x: np.sum(np.sum(x.reshape(3, 1) * x, axis=0) ** 2),
    "W @ x": lambda x: np.sum((W @ x) ** 2),
    "x @ W.T": lambda x: np.sum(np.tanh(x @ W.T)),
    "np.dot": lambda x: np.dot(W, x)[0] * np.dot(x, x),
    "np.exp": lambda x: np.sum(np.exp(x)),
    "np.log np.sqrt": lambda x: np.sum(np.log(x * x + 1.0) + np.sqrt(x * x + 2.0)),
    "np.maximum": lambda x: np.sum(np.maximum(x, 0.2) * x),
    "np.minimum": lambda x: np.sum(np.minimum(x, 0.2) * x),
    "np.where": lambda x: np.sum(np.where(x > 0.2, x ** 2, -x)),
    "np.concatenate": lambda x: np.sum(np.concatenate([x, x[:2] ** 3]) ** 2),
    "np.stack": lambda x: np.sum(np.stack([x, np.cos(x)]) ** 2),
    "np.mean np.tanh": lambda x: np.mean(np.tanh(x)),
    "np.prod": lambda x: np.prod(x),
    "np.max": lambda x: np.max(x ** 2),
    "np.square np.abs": lambda x: np.sum(np.square(x) * np.abs(x)),
    "np.transpose np.reshape": lambda x: np.sum(np.transpose(np.reshape(x, (3, 1)) * W.T) ** 2),
    "np.clip": lambda x: np.sum(np.clip(x, -0.5, 0.5) * x),
    "slicing": lambda x: x[0] * x[-1] + np.sum(x[::2] ** 2),
}


@pytest.mark.parametrize("name", NUMPY_CASES)
def test_numpy_functions_record_on_the_tape(name):
    f = NUMPY_CASES[name]
    x = np.array([0.7, -0.4, 1.3])
    tape = tg.trace(f, x)
    assert len(tape) > 0
    y = np.array([1.1, 0.6, -0.9])        # values differ from the traced ones: not constants
    np.testing.assert_allclose(tape(y), f(y), rtol=1e-13)
    np.testing.assert_allclose(tg.grad(f)(y), fd_gradient(f, y), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("f, name", [
    (lambda x: np.sum(np.linalg.eig(np.outer(x, x))[0].real), "numpy.linalg.eig "),
    (lambda x: np.sum(np.convolve(x, x)), "numpy.convolve "),
    (lambda x: np.sum(np.interp(x, [0.0, 1.0], [1.0, 2.0])), "numpy.interp "),
    (lambda x: np.sum(np.spacing(x)), "spacing"),        # a ufunc nobody registered
    (lambda x: np.add.reduce(x), "add.reduce"),          # a ufunc method
    (lambda x: np.sum(np.fft.fft(x).real), "numpy.fft.fft "),
])
def test_unregistered_numpy_functions_raise(f, name):
    x = np.array([0.7, -0.4, 1.3])
    with pytest.raises(TypeError, match=name):
        tg.trace(f, x)
    with pytest.raises(TypeError, match=name):
        tg.grad(f)(x)


# ---- the cache key: signature of the arguments -------------------------------------------------

def test_static_int_is_part_of_the_signature():
    f = Counted(lambda x, n: x ** n)
    g = tg.grad(f)
    assert g(2.0, 2) == 4.0
    assert g(3.0, 2) == 6.0 and f.calls == 1           # a new float value: replay
    assert g(2.0, 3) == 12.0 and f.calls == 2          # a new int value: retrace
    assert g(3.0, 3) == 27.0 and g(2.0, 2) == 4.0 and f.calls == 2


@pytest.mark.parametrize("static", ["sq", None, True, (1, "a")])
def test_other_static_arguments(static):
    def body(x, mode):
        return np.sum(x ** 2) if mode == static else np.sum(x)

    f = Counted(body)
    g = tg.grad(f)
    x = np.array([1.0, 2.0])
    np.testing.assert_allclose(g(x, static), 2 * x)
    np.testing.assert_allclose(g(x, "other"), [1.0, 1.0])
    np.testing.assert_allclose(g(x + 1, static), 2 * (x + 1))
    assert f.calls == 2


def test_integer_arrays_are_static_by_value():
    f = Counted(lambda x, idx: np.sum(x[idx] ** 2))
    g = tg.grad(f)
    x = np.array([1.0, 2.0, 3.0])
    np.testing.assert_allclose(g(x, np.array([0, 2])), [2.0, 0.0, 6.0])
    np.testing.assert_allclose(g(x, np.array([1, 1])), [0.0, 8.0, 0.0])   # repeated index
    np.testing.assert_allclose(g(x, np.array([0, 2])), [2.0, 0.0, 6.0])
    assert f.calls == 2
    mask = np.array([True, False, True])
    np.testing.assert_allclose(tg.grad(lambda x, m: np.sum(x[m] ** 2))(x, mask), [2.0, 0, 6.0])


def test_shapes_dtypes_and_structures_retrace():
    f = Counted(lambda x: np.sum(x ** 2))
    g = tg.grad(f)
    np.testing.assert_allclose(g(np.ones(2)), [2.0, 2.0])
    np.testing.assert_allclose(g(np.ones(3)), [2.0] * 3)          # a retrace, not a crash
    np.testing.assert_allclose(g(np.ones((3, 1))), [[2.0]] * 3)
    assert g(np.ones(3, np.float32)).dtype == np.float32
    np.testing.assert_allclose(g(np.full(2, 3.0)), [6.0, 6.0])
    assert f.calls == 4
    h = Counted(lambda p: sum(np.sum(v ** 2) for v in p.values()))
    gh = tg.grad(h)
    assert gh({"a": 1.0}) == {"a": 2.0}
    assert gh({"a": 1.0, "b": 2.0}) == {"a": 2.0, "b": 4.0}
    assert gh({"a": 3.0}) == {"a": 6.0}
    assert h.calls == 2


def test_keyword_arguments_are_inputs_not_differentiated():
    f = Counted(lambda x, w=None, n=1: np.sum(x * w) ** n)
    g = tg.grad(f)
    x = np.array([1.0, 2.0])
    np.testing.assert_allclose(g(x, w=np.array([3.0, 4.0])), [3.0, 4.0])
    np.testing.assert_allclose(g(x, w=np.array([5.0, 6.0])), [5.0, 6.0])   # replayed, new value
    assert f.calls == 1
    np.testing.assert_allclose(g(x, w=np.array([3.0, 4.0]), n=2), 2 * 11.0 * np.array([3, 4]))
    assert f.calls == 2                                   # a static keyword retraces
    value, grads = tg.value_and_grad(lambda x, *, scale: scale * x ** 2)(3.0, scale=2.0)
    assert (value, grads) == (18.0, 12.0)


# ---- guards: Python control flow on traced values ------------------------------------------------

def piecewise(x):
    if x > 1.0:
        return x ** 3
    elif x > -1.0:
        return 2.0 * x
    return -x ** 2


def piecewise_derivative(x):
    return 3 * x ** 2 if x > 1.0 else (2.0 if x > -1.0 else -2 * x)


def test_piecewise_function_across_breakpoints():
    f = Counted(piecewise)
    g = tg.grad(f)
    points = [-3.0, -1.0 - 1e-12, -1.0, -1.0 + 1e-12, 0.0, 0.5, 1.0, 1.0 + 1e-12, 1.5, 4.0]
    for x in points + points[::-1]:
        assert g(x) == pytest.approx(piecewise_derivative(x), rel=1e-12)
    assert f.calls == 3        # one trace per branch, then replays
    assert len(g.traced.cache) == 1 and len(next(iter(g.traced.cache.values()))) == 3


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-3.0, 3.0), min_size=1, max_size=8))
def test_piecewise_property(points):
    g = tg.grad(piecewise)
    vg = tg.value_and_grad(piecewise)
    for x in points:
        assert g(x) == pytest.approx(piecewise_derivative(x), rel=1e-12)
        value, grad = vg(x)
        assert value == pytest.approx(piecewise(x), rel=1e-12)


def test_alternating_branches_reuse_their_tapes():
    f = Counted(lambda x: np.sum(x ** 2) if np.sum(x) > 0 else np.sum(np.sin(x)))
    g = tg.grad(f)
    pos, neg = np.array([1.0, 2.0]), np.array([-1.0, -2.0])
    for _ in range(10):
        np.testing.assert_allclose(g(pos), 2 * pos)
        np.testing.assert_allclose(g(neg), np.cos(neg))
    assert f.calls == 2


def halvings(x):
    """x / 2**k with k data dependent: the iteration count is decided by guards."""
    while x > 1.0:
        x = x / 2.0
    return x


@pytest.mark.parametrize("x, k", [(0.5, 0), (1.5, 1), (3.0, 2), (7.0, 3), (100.0, 7)])
def test_while_loop_with_data_dependent_iteration_count(x, k):
    g = tg.grad(halvings)
    for y in (x, x * 1.01, x):
        assert g(y) == 0.5 ** k
        assert tg.value_and_grad(halvings)(y)[0] == pytest.approx(y / 2 ** k)


def test_newton_iteration_until_converged():
    def sqrt_newton(a):
        x = a
        while abs(x * x - a) > 1e-12 * a:
            x = 0.5 * (x + a / x)
        return x

    f = Counted(sqrt_newton)
    g = tg.grad(f)
    for a in [4.0, 9.0, 2.0, 4.0, 100.0, 9.0]:
        assert g(a) == pytest.approx(0.5 / math.sqrt(a), rel=1e-8)
    assert f.calls <= 4


def test_tapes_per_signature_are_bounded():
    f = Counted(halvings)
    g = tg.grad(f)
    points = [1.5 * 2.0 ** k for k in range(12)]          # 12 iteration counts, 12 branches
    for _ in range(2):
        for k, x in enumerate(points):
            assert g(x) == 0.5 ** (k + 1)
    (tapes,) = g.traced.cache.values()
    assert len(tapes) <= _transforms.MAX_TAPES_PER_SIGNATURE


def test_builtin_max_and_min_record_guards():
    g = tg.grad(lambda a, b: max(a, b) ** 2 + min(a, b), argnums=(0, 1))
    assert g(1.0, 3.0) == (1.0, 6.0)
    assert g(3.0, 1.0) == (6.0, 1.0)
    assert g(-2.0, -5.0) == (-4.0, 1.0)


def test_branching_on_an_argument_itself_records_a_guard():
    g = tg.grad(lambda x: 2.0 * x if x else 3.0 * x)
    assert g(1.0) == 2.0
    assert g(0.0) == 3.0
    assert g(1.0) == 2.0


def test_branch_with_a_division_by_zero_in_the_other_branch():
    g = tg.grad(lambda x: 1.0 / x if x != 0.0 else x)
    assert g(2.0) == -0.25
    assert g(0.0) == 1.0        # the 1/x tape replayed at 0 must not decide the result
    assert g(0.0) == 1.0
    assert g(4.0) == -1.0 / 16


def test_guards_inside_nested_transforms():
    inner = lambda x: x ** 3 if x > 0 else -x ** 2
    g2 = tg.grad(tg.grad(inner))
    for x, expected in [(2.0, 12.0), (-2.0, -2.0), (1.0, 6.0), (-1.0, -2.0)]:
        assert g2(x) == expected


# ---- closed-over arrays --------------------------------------------------------------------------

def test_closed_over_arrays_are_constants_captured_at_trace_time():
    w = np.array([1.0, 2.0])
    f = lambda x: np.sum(w * x) + np.sum(w)
    g, vg = tg.grad(f), tg.value_and_grad(f)
    x = np.ones(2)
    np.testing.assert_allclose(g(x), [1.0, 2.0])
    assert vg(x)[0] == 6.0
    w[:] = [10.0, 20.0]              # NOT seen by the cached tape (as in jax.jit)
    np.testing.assert_allclose(g(x), [1.0, 2.0])
    assert vg(x)[0] == 6.0
    np.testing.assert_allclose(g(np.ones(3)[:2].copy()), [1.0, 2.0])
    tape = tg.trace(f, x)
    w[:] = 0.0
    assert tape(x) == 60.0


def test_capture_call_rereads_closed_over_arrays():
    w = np.array([1.0, 2.0])
    f = Counted(lambda x: np.sum(w * x) + np.sum(x / w))
    g = tg.grad(f, capture="call")
    vg = tg.value_and_grad(f, capture="call")
    jac = tg.jacrev(lambda x: w * x, capture="call")
    hess = tg.hessian(lambda x: np.sum(w * x ** 3), capture="call")
    x = np.ones(2)
    np.testing.assert_allclose(g(x), w + 1 / w)
    np.testing.assert_allclose(jac(x), np.diag(w))
    np.testing.assert_allclose(hess(x), np.diag(6 * w))
    w[:] = [10.0, 20.0]
    np.testing.assert_allclose(g(x), w + 1 / w)
    value, grads = vg(x)
    assert value == pytest.approx(30.0 + 0.15)
    np.testing.assert_allclose(grads, w + 1 / w)
    np.testing.assert_allclose(jac(x), np.diag(w))
    np.testing.assert_allclose(hess(x), np.diag(6 * w))
    assert f.calls == 2              # seen by replays (one trace per transform), not retraces


def test_capture_call_does_not_see_values_numpy_computed_from_closures():
    # Documented limitation: `np.sum(w)` on the bare array runs in numpy, not on the tape; its
    # result is a constant of the tape. Only arrays that are operands of traced operations are
    # re-read.
    w = np.array([1.0, 2.0])
    vg = tg.value_and_grad(lambda x: np.sum(w * x) + np.sum(w), capture="call")
    assert vg(np.ones(2))[0] == 6.0
    w[:] = [10.0, 20.0]
    assert vg(np.ones(2))[0] == 30.0 + 3.0


def test_capture_call_rereads_closed_over_tensors():
    w = tg.tensor([1.0, 2.0], requires_grad=True)
    g = tg.grad(lambda x: np.sum(x * w), capture="call")
    np.testing.assert_allclose(g(np.ones(2)), [1.0, 2.0])
    with tg.no_grad():
        w -= 1.0                     # an optimizer step, in place
    np.testing.assert_allclose(g(np.ones(2)), [0.0, 1.0])


def test_capture_must_be_trace_or_call():
    with pytest.raises(ValueError, match="capture"):
        tg.grad(lambda x: x, capture="always")


# ---- traced values cannot become Python numbers ------------------------------------------------

@pytest.mark.parametrize("convert", [
    float, int, lambda t: t.item(), math.exp, lambda t: math.floor(t),
    lambda t: np.sum(t.tolist()), lambda t: np.sum(t.numpy(force=True))],
    ids=["float", "int", "item", "math.exp", "math.floor", "tolist", "numpy"])
@pytest.mark.parametrize("computed", [False, True], ids=["argument", "computed"])
def test_python_numbers_from_traced_values_raise(convert, computed):
    def f(x):
        v = x * 2.0 if computed else x
        return convert(v) * x

    with pytest.raises(TypeError, match="traced"):
        tg.grad(f)(1.5)
    with pytest.raises(TypeError, match="traced"):
        tg.trace(f, 1.5)


def test_arrays_from_traced_values_stay_traced():
    # np.asarray of a traced value is the value itself, as numpy's of an array
    np.testing.assert_array_equal(tg.grad(lambda x: np.sum(np.asarray(x) * x))(np.ones(2)),
                                  [2.0, 2.0])


# ---- outputs ------------------------------------------------------------------------------------

def test_outputs_that_do_not_depend_on_the_inputs():
    assert tg.grad(lambda x: 3.0)(2.0) == 0.0
    np.testing.assert_allclose(tg.grad(lambda x, y: np.sum(y ** 2), argnums=0)(np.ones(2), 1.0),
                               [0.0, 0.0])
    np.testing.assert_allclose(tg.jacrev(lambda x: np.ones(3))(np.ones(2)), np.zeros((3, 2)))
    np.testing.assert_allclose(tg.jacfwd(lambda x: (x, np.zeros(2)))(np.ones(2))[1],
                               np.zeros((2, 2)))
    tape = tg.trace(lambda x: (np.sum(x), 7.0), np.ones(2))
    assert tape(np.full(2, 2.0)) == (4.0, 7.0)


def test_outputs_must_be_numbers_or_arrays():
    with pytest.raises(TypeError, match="NoneType"):
        tg.grad(lambda x: None)(1.0)
    with pytest.raises(TypeError, match="str"):
        tg.grad(lambda x: (x ** 2, "label"), has_aux=True)(1.0)


def test_float32_tape_stays_float32_with_python_number_outputs():
    tape = tg.trace(lambda x: (np.sum(x), 1.5), np.ones(2, np.float32))
    assert tape.dtype == np.float32


# ---- nested transforms and closures over traced values -----------------------------------------

def test_inner_transform_closing_over_an_outer_traced_value():
    def outer(a):
        return tg.grad(lambda x: a * x ** 2)(1.0)        # closes over the traced `a`

    assert outer(3.0) == 6.0                              # outside a trace, `a` is a number
    assert tg.grad(outer)(3.0) == 2.0                     # inside, an input of the inner tape
    # passing the value as an argument gives the same
    assert tg.grad(lambda a: tg.grad(lambda x, a: a * x ** 2)(1.0, a))(3.0) == 2.0


@pytest.mark.parametrize("f", [
    lambda x: (x[x > 0] ** 2).sum(),                       # a boolean mask from the inputs
    lambda x: (x[np.argsort(x)][:2] ** 2).sum(),           # integer indices from the inputs
    lambda x: (np.where(x > 0, x, 0.0)[x < 1.5] * x[x < 1.5]).sum(),
], ids=["mask", "argsort", "two masks"])
def test_a_key_computed_from_the_inputs_is_guarded(f):
    """A replay whose mask or indices differ from the trace's traces again (the tape holds the
    trace's key as constants): never the gradient of the trace's selection."""
    g = tg.grad(f)
    points = [np.array([1.0, -1.0, 2.0]), np.array([-1.0, 3.0, 0.5]), np.array([0.5, 1.0, -2.0])]
    for x in points:
        fresh = tg.grad(f)(x)             # traced at x itself
        np.testing.assert_array_equal(g(x), fresh)
    X = np.stack(points)
    np.testing.assert_array_equal(tg.vmap(g, fuse=False)(X),
                                  np.stack([tg.grad(f)(x) for x in points]))


def test_tracing_holds_the_cycle_collector_off_and_gives_it_back():
    """A trace keeps every recorded value alive until its tape is built, so the cycle collector
    is held off while it runs (nothing to collect, a graph to walk again and again); it is on
    again afterwards, also when the function raises, and stays off when the caller had it off."""
    import gc
    seen = []

    def f(x):
        seen.append(gc.isenabled())
        return np.sum(x * x)

    def broken(x):
        seen.append(gc.isenabled())
        raise ValueError("broken")

    assert gc.isenabled()
    np.testing.assert_array_equal(tg.grad(f)(np.ones(3)), 2.0)
    assert seen == [False] and gc.isenabled()
    with pytest.raises(ValueError, match="broken"):
        tg.grad(broken)(np.ones(3))
    assert seen == [False, False] and gc.isenabled()
    gc.disable()
    try:
        tg.trace(f, np.ones(4))
        assert seen[-1] is False and not gc.isenabled()
    finally:
        gc.enable()
    nested = tg.grad(lambda x: tg.grad(f)(x * 2.0).sum())     # the inner trace leaves it off
    nested(np.ones(2))
    assert not any(seen[2:]) and gc.isenabled()
