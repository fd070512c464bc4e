"""numpy code on traced values: numpy's semantics for values traced from numpy arguments, arrays
built from traced values, functions without derivatives passing through, complex inputs
refused, and transforms nested in a traced function closing over its values.

References: numpy for values (exactly), HIPS autograd (`autograd.numpy`) for derivatives."""
import threading

import autograd
import autograd.numpy as anp
import numpy as np
import pytest

import tapegrad as tg
from tapegrad.eager.array import Array
from tapegrad.eager.numpy_api import building
from tapegrad.eager.tensor import ArrayConversionError
from tapegrad.testing import gradcheck

RNG = np.random.default_rng(7)
X3 = RNG.standard_normal((2, 3, 4))


# ---- numpy's semantics for traced values ------------------------------------------------------

def _methods(x):
    """numpy code using the ndarray methods and attributes (runs on numpy arrays, autograd's
    boxes and tapegrad's traced values alike)."""
    assert x.size == 24 and isinstance(x.size, int)
    assert x.shape == (2, 3, 4) and x.ndim == 3 and len(x) == 2
    a = x.max(1)                                        # an array, not (values, indices)
    b = x.transpose((1, 0, 2)) * x.transpose([1, 0, 2])  # autograd: no transpose(1, 0, 2)
    c = x.T.reshape(4, 6) @ x.ravel().reshape((6, 4))
    d = x.astype(np.float64).sum(axis=0, keepdims=True)
    return (a ** 2).sum() + b.sum() + (c * c).mean() + (d * x).sum() + x.min(axis=2).sum()


def test_traced_numpy_values_have_numpy_attributes_and_methods():
    got = tg.grad(_methods)(X3)
    np.testing.assert_allclose(got, autograd.grad(_methods)(X3), rtol=1e-12)
    value, _ = tg.value_and_grad(_methods)(X3)
    np.testing.assert_allclose(value, _methods(X3), rtol=1e-12)


def test_second_order_of_numpy_methods_matches_autograd():
    v = RNG.standard_normal(X3.shape)
    hvp = tg.grad(lambda x: np.sum(tg.grad(_methods)(x) * v))(X3)
    expected = autograd.grad(lambda x: anp.sum(autograd.grad(_methods)(x) * v))(X3)
    np.testing.assert_allclose(hvp, expected, rtol=1e-10, atol=1e-12)


def test_size_is_an_int_so_a_comparison_with_it_holds():
    assert tg.grad(lambda x: x.sum() * 3.0 if x.size == 1 else x.sum())(np.ones(1)) == [3.0]


def test_traced_arguments_are_arrays_and_what_they_compute_too():
    seen = []

    def f(x, t):
        seen.extend([x, x * t, np.exp(x)])
        return (x * t).sum()

    tg.grad(f)(np.ones(2), tg.tensor([1.0, 2.0]))
    assert all(isinstance(v, Array) for v in seen)


def test_tensor_arguments_keep_pytorch_semantics():
    def f(x):
        assert x.size() == (2, 2) and not isinstance(x, Array)
        values, indices = x.max(1)
        return values.sum()

    np.testing.assert_array_equal(tg.grad(f)(tg.tensor([[1.0, 2.0], [4.0, 3.0]])),
                                  [[0, 1], [1, 0]])
    eager = tg.tensor([[1.0, 2.0], [4.0, 3.0]])
    assert eager.size() == (2, 2) and eager.max(1).indices.tolist() == [1, 0]


def test_transpose_reshape_and_squeeze_follow_numpy():
    def f(x):
        assert x.transpose().shape == (4, 3, 2) and x.transpose(None).shape == (4, 3, 2)
        np.testing.assert_array_equal(x.transpose(1, 0, 2).data, X3.transpose(1, 0, 2))
        assert x.reshape(4, -1, order="F").shape == (4, 6)
        assert x[:, :1].squeeze(1).shape == (2, 4)
        with pytest.raises(ValueError):
            x.squeeze(0)                # numpy refuses to squeeze an axis of size 2
        return (x.reshape(6, 4, order="F") * np.arange(24.).reshape(6, 4)).sum()

    expected = np.arange(24.).reshape(6, 4).reshape(2, 3, 4, order="F")
    np.testing.assert_array_equal(tg.grad(f)(X3), expected)


def test_numpy_truth_value_and_iteration_errors():
    def f(x):
        with pytest.raises(ValueError, match="truth value of an array with more than one"):
            bool(x > 0)
        with pytest.raises(TypeError, match="iteration over a 0-d array"):
            iter(x.sum())
        return sum(row.sum() for row in x)      # iteration over the first axis

    np.testing.assert_array_equal(tg.grad(f)(np.ones((2, 3))), np.ones((2, 3)))


def test_integer_astype_replays_from_the_new_inputs():
    f = tg.value_and_grad(lambda x: (x.astype(int) * x).sum())
    for x in (np.array([1.5, -2.7]), np.array([3.2, 0.9])):
        value, grad = f(x)
        assert value == (x.astype(int) * x).sum()
        np.testing.assert_array_equal(grad, x.astype(int))


# ---- arrays built from traced values ------------------------------------------------------------

def _built(np_):
    def f(x):
        a = np_.array([x, 2 * x, [1.0, 2.0, 3.0]])
        b = np_.stack([x, np.ones(3)])
        c = np_.concatenate([x, [5.0], x ** 2])
        d = np_.array([[x[0], 1.0], [x[1] * x[2], x[2]]])
        return (a * a).sum() + (b ** 3).sum() + (c * c).sum() + (d @ d).sum() \
            + np_.mean(np_.array([x, x + 2]))
    return f


def test_arrays_built_from_traced_values_match_autograd():
    x = RNG.standard_normal(3)
    np.testing.assert_allclose(tg.grad(_built(np))(x), autograd.grad(_built(anp))(x),
                               rtol=1e-12)
    value, _ = tg.value_and_grad(_built(np))(x)
    np.testing.assert_allclose(value, _built(np)(x), rtol=1e-14)


def test_a_constant_between_traced_operands_of_a_concatenation():
    # the constant has no adjoint: its size must still advance the cotangent's offset
    x = np.array([0.3, -1.2, 0.7])
    got = tg.grad(lambda x: (tg.cat([x, tg.tensor([5.0]), x * x]) ** 2).sum())(x)
    np.testing.assert_allclose(got, 2 * x + 4 * x ** 3, rtol=1e-14)


def test_functions_take_lists_of_traced_values():
    def f(x):
        return np.mean([x, x + 2]) + np.sum([x[0], x[1] ** 2]) + np.max([x[0], 0.5 * x[1]])

    x = np.array([1.0, 3.0])                      # the maximum is 0.5 * x[1]
    np.testing.assert_array_equal(tg.grad(f)(x), [0.5 + 1.0, 0.5 + 6.0 + 0.5])


def test_joins_take_nested_lists_of_traced_values():
    # numpy dispatches np.concatenate([x, [s]]) on x alone: the inner list holds a traced
    # element that the join converts (a common way to append a scalar)
    def f(x):
        s = x[0] ** 2
        return (np.sum(np.concatenate([x, [s]]) ** 2) + np.sum(np.hstack([[x[1]], x, (s, 3.0)]))
                + np.sum(np.stack([x, [s, 1.0, x[2]]]) ** 2)
                + np.sum(np.vstack([x, [1.0, s, 2.0]]) * np.arange(6.0).reshape(2, 3)))

    x = np.array([0.5, -1.5, 2.0])
    s, ds = x[0] ** 2, np.array([2 * x[0], 0.0, 0.0])
    want = (2 * x + 2 * s * ds) + (np.array([0, 1, 0]) + 1 + ds) + (2 * x + 2 * s * ds
            + np.array([0, 0, 2 * x[2]])) + (np.arange(3.0) + 4 * ds)
    np.testing.assert_allclose(tg.grad(f)(x), want, rtol=1e-14)


def test_r_and_c_concatenate_traced_values_and_constants():
    def f(x):
        r = np.r_[x, 0.0, x ** 2, [7.0, 8.0]]
        c = np.c_[x, 2 * x]
        assert r.shape == (7,) and c.shape == (2, 2)
        return (r * np.arange(7.0)).sum() + (c * c).sum()

    x = np.array([1.0, 2.0])
    np.testing.assert_allclose(tg.grad(f)(x), np.array([0, 1]) + 2 * x * np.array([3, 4])
                               + 10 * x)


def test_a_built_array_replays_at_new_inputs():
    t = tg.trace(lambda x: np.array([x, x ** 2]).prod(), 2.0)
    assert t(3.0) == 27.0


def test_numpy_array_is_numpy_s_outside_a_trace():
    original = np.array
    tg.grad(lambda x: np.array([x, x]).sum())(1.0)
    assert np.array is original and np.sum is building._REPLACEMENTS[4][2]


def test_another_thread_keeps_numpy_s_constructors_while_one_traces():
    results = []

    def other():
        results.append(np.array([1.0, 2.0]).__class__)

    def f(x):
        thread = threading.Thread(target=other)
        thread.start()
        thread.join()
        return x * 2

    tg.grad(f)(1.0)
    assert results == [np.ndarray]


def test_numpy_constructors_under_other_names_refuse_a_traced_value():
    from numpy import asarray as numpy_asarray

    with pytest.raises(ArrayConversionError, match="would freeze it into the tape"):
        tg.grad(lambda x: numpy_asarray([x, x]).sum())(1.0)
    with pytest.raises(ArrayConversionError, match="build the array first"):
        tg.grad(lambda x: np.exp([x, x]).sum())(1.0)


def test_a_plain_array_s_method_on_a_traced_value_says_what_to_write():
    y = np.arange(3.0)
    with pytest.raises(ArrayConversionError, match=r"y.dot\(x\) write y @ x or np.dot\(y, x\)"):
        tg.grad(lambda x: y.dot(x))(np.ones(3))
    np.testing.assert_array_equal(tg.grad(lambda x: np.dot(y, x) + y @ x)(np.ones(3)), 2 * y)


def test_a_ragged_list_raises_numpy_s_error():
    with pytest.raises(ValueError, match="inhomogeneous"):
        tg.grad(lambda x: np.array([x, [x, x]]).sum())(1.0)


# ---- functions without derivatives pass through --------------------------------------------

PASSING = {
    "floor": lambda np_, x: np_.floor(x),
    "ceil": lambda np_, x: np_.ceil(x),
    "trunc": lambda np_, x: np_.trunc(x),
    "rint": lambda np_, x: np_.rint(x),
    "round1": lambda np_, x: np_.round(x, 1),
    "round-1": lambda np_, x: np_.round(10 * x, -1),
    "floor_divide": lambda np_, x: np_.floor_divide(x, 0.3) * x,
    "isfinite": lambda np_, x: np_.where(np_.isfinite(x), x, 0.0),
    "logical": lambda np_, x: np_.where(np_.logical_and(x > 0, np_.logical_not(x > 1)) |
                                        np_.logical_xor(x < -1, x < -2), x, 2 * x),
    "argmax": lambda np_, x: x[np_.argmax(x)] * np_.argmax(x, axis=0),
    "argmin": lambda np_, x: x.reshape(2, 3)[np_.arange(2), np_.argmin(x.reshape(2, 3), 1)],
    "argsort": lambda np_, x: x[np_.argsort(x)] * np_.arange(6.0),
    "nonzero": lambda np_, x: x[np_.nonzero(np_.floor(x))] ** 2,
    "zeros_like": lambda np_, x: np_.zeros_like(x) + np_.ones_like(x) * x,
    "allclose": lambda np_, x: x * 2 if np_.allclose(x, 0.0) else x * 3,
    "sign": lambda np_, x: np_.sign(x) * x + np_.sign(x - 0.6),
    "where1": lambda np_, x: x[np_.where(x > 0.5)] ** 2,
}
INPUTS = (np.array([0.35, -1.7, 2.5, 1.05, -0.4, 0.6]),
          np.array([2.6, 0.2, -0.5, -2.25, 1.45, 0.0]))


@pytest.mark.parametrize("name", PASSING)
def test_function_without_derivative_passes_through_as_in_autograd(name):
    def scalar(np_):
        return lambda x: np_.sum(PASSING[name](np_, x))

    f = tg.value_and_grad(scalar(np))
    for x in INPUTS:                            # the second call replays, or retraces on a guard
        value, grad = f(x)
        assert value == scalar(np)(x)
        np.testing.assert_allclose(grad, autograd.grad(scalar(anp))(x), rtol=1e-14)


@pytest.mark.parametrize("name", ["floor", "ceil", "trunc", "rint", "round1", "floor_divide"])
def test_rounding_has_zero_derivatives_of_every_order(name):
    x = np.array([0.33, -1.72, 2.41, 1.07, -0.44, 0.61])     # away from the jumps
    gradcheck(lambda t: PASSING[name](np, t) * t, [x])


EDGES = np.array([0.5, 1.5, 2.5, -0.5, -2.5, 2.0 ** 52 + 1, -2.0 ** 60, np.inf, -np.inf, np.nan,
                  1e-300, -0.0])


@pytest.mark.parametrize("ufunc", [np.floor, np.ceil, np.trunc, np.rint, np.sign, np.signbit])
def test_rounding_replays_numpy_s_values_at_edges(ufunc):
    tape = tg.trace(ufunc, np.zeros(EDGES.size))
    np.testing.assert_array_equal(tape(EDGES), ufunc(EDGES))


def test_floor_divide_replays_numpy_s_values():
    a = np.array([7.0, -7.0, 1.0, 0.0, 5.0])
    b = np.array([0.1, 0.1, 0.0, 0.0, -np.inf])
    tape = tg.trace(lambda a, b: a // b, np.ones(5), np.ones(5))
    with np.errstate(divide="ignore", invalid="ignore"):
        np.testing.assert_array_equal(tape(a, b), a // b)


@pytest.mark.parametrize("fuse", [False, True])
def test_rounding_through_vmap(fuse):
    X = RNG.standard_normal((5, 4)) * 3
    out = tg.vmap(lambda x: np.floor(x) * x + np.rint(x) + x // 0.7, fuse=fuse)(X)
    np.testing.assert_allclose(out, np.floor(X) * X + np.rint(X) + X // 0.7, rtol=1e-15)


@pytest.mark.parametrize("fuse", [False, True])
def test_sign_through_vmap(fuse):
    X = np.concatenate([RNG.standard_normal((4, 5)), [[0.0, -0.0, np.inf, -np.inf, 2.0]]])
    f = tg.vmap(tg.value_and_grad(lambda x: np.sum(np.sign(x) * x * x)), fuse=fuse)
    value, grad = f(X)
    np.testing.assert_array_equal(value, np.sum(np.sign(X) * X * X, axis=1))
    np.testing.assert_array_equal(grad, 2 * np.sign(X) * X)


def test_signbit_selects_and_passes_no_derivative():     # autograd has no signbit
    f = tg.value_and_grad(lambda x: np.sum(np.where(np.signbit(x), x * x, 3.0 * x)))
    for x in INPUTS:
        value, grad = f(x)
        assert value == np.sum(np.where(np.signbit(x), x * x, 3.0 * x))
        np.testing.assert_array_equal(grad, np.where(np.signbit(x), 2 * x, 3.0))


def test_where_of_one_argument_is_nonzero_and_both_or_neither_value():
    x = np.array([0.2, 0.7, -1.0, 0.9])
    assert tg.grad(lambda x: np.sum(x[np.where(x > 0.5)] ** 2))(x).tolist() == [0, 1.4, 0, 1.8]
    with pytest.raises(ValueError, match="either both or neither"):
        tg.grad(lambda x: np.sum(np.where(x > 0.5, x)))(x)


def test_argmax_guard_retraces_when_the_maximum_moves():
    f = tg.grad(lambda x: x[np.argmax(x)] * 2.0)
    np.testing.assert_array_equal(f(np.array([1.0, 3.0, 2.0])), [0, 2, 0])
    np.testing.assert_array_equal(f(np.array([1.0, 3.0, 3.0])), [0, 2, 0])     # first of ties
    np.testing.assert_array_equal(f(np.array([4.0, 3.0, 3.0])), [2, 0, 0])
    np.testing.assert_array_equal(f(np.array([1.0, np.nan, 2.0])), [0, 2, 0])  # numpy: nan


def test_like_functions_give_constants_and_full_like_a_traced_fill():
    def f(x):
        z = np.zeros_like(x)
        z[1] = x[0]
        return (z + np.full_like(x, x[2]) + np.empty_like(x) * 0).sum()

    np.testing.assert_array_equal(tg.grad(f)(np.array([1.0, 2.0, 3.0])), [1, 0, 3])


def test_isclose_matches_numpy():
    a = np.array([1.0, np.inf, np.inf, np.nan, 1.0, 1e10])
    b = np.array([1.0 + 1e-9, np.inf, -np.inf, np.nan, np.inf, 1.0001e10])
    tape = tg.trace(lambda a, b: np.where(np.isclose(a, b), 1.0, 0.0), a, b)
    np.testing.assert_array_equal(tape(a, b) != 0, np.isclose(a, b))


def test_bitwise_operators_of_traced_non_booleans_are_refused():
    with pytest.raises(TypeError, match="bitwise_and of recorded non-boolean values"):
        tg.grad(lambda x: (x.astype(int) & 1).sum() * x)(1.0)


# ---- complex numbers --------------------------------------------------------------------------

def test_complex_inputs_and_values_are_refused():
    with pytest.raises(TypeError, match=r"grad of a complex input \(argument 0, complex128\)"):
        tg.grad(lambda x: np.sum(x))(np.array([1 + 2j]))
    with pytest.raises(TypeError, match=r"astype\(complex128\) would make a complex value"):
        tg.grad(lambda x: np.sum(x.astype(complex)))(np.ones(2))
    with pytest.raises(NotImplementedError, match="complex numbers are not supported"):
        tg.grad(lambda x: np.sum(np.array([x, 1j])).real)(1.0)


# ---- transforms nested in a traced function, closing over its values -------------------------

def test_inner_grad_closing_over_an_outer_traced_value():
    assert tg.grad(lambda x: x * tg.grad(lambda y: x * y)(2.0))(1.0) == 2.0


def _nested(np_, grad):
    def f(x):
        inner = grad(lambda y: np_.sum(np_.sin(x * y) * y))
        return np_.sum(inner(x) * x ** 2)
    return f


def test_nested_closures_match_autograd():
    x = RNG.standard_normal(3)
    np.testing.assert_allclose(tg.grad(_nested(np, tg.grad))(x),
                               autograd.grad(_nested(anp, autograd.grad))(x), rtol=1e-12)


def test_inner_jacobian_closing_over_outer_values():
    def f(x):
        return np.sum(tg.jacobian(lambda y: x * y ** 2)(np.ones(2)) * x)

    x = np.array([1.0, 2.0])
    np.testing.assert_allclose(tg.grad(f)(x), 4 * x)


def test_inner_closure_branching_on_outer_values_retraces():
    def f(x):
        return tg.grad(lambda y: y * x if x > 0 else y * x ** 2)(1.0) * x

    g = tg.grad(f)
    assert g(2.0) == 4.0
    assert g(-2.0) == 12.0          # d/dx x^3
    assert g(3.0) == 6.0


def test_vmap_closing_over_outer_traced_values_is_refused():
    with pytest.raises(NotImplementedError, match="closes over values an enclosing computation records"):
        tg.grad(lambda x: np.sum(tg.vmap(lambda y: x * y)(np.ones((3, 2)))))(np.ones(2))


def test_a_value_kept_from_a_finished_trace_is_refused():
    kept = []
    tg.grad(lambda x: kept.append(x * 2) or x)(1.0)
    with pytest.raises(TypeError, match="traced by a function transform that has finished"):
        tg.grad(lambda y: y * kept[0])(1.0)
