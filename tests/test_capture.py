"""`capture="call"` follows closed-over names rebound to new arrays (see `tapegrad.transforms.capture`).

Mutating a closed-over array in place was always seen; rebinding the name (`w = w - lr * g`,
the usual update) was silently ignored: the tape kept the old array. Now a variable of the
closure (`nonlocal`), a global, and an attribute (`self.w`, `model.w`) are followed: a new
array of the same shape is read at the next call, another shape retraces. What cannot be
followed (an array in a list) warns once, when traced.
"""
import warnings

import numpy as np
import pytest

import tapegrad as tg

W_GLOBAL = np.array([1.0, 2.0])


def global_loss(x):
    return np.sum(W_GLOBAL * x * x)


def helper_loss(x):
    return global_loss(x) * 2.0          # the global is read by a function this one calls


def expected(w, x):
    return 2 * w * x                    # the gradient of sum(w * x * x)


def kept(name, loss):
    """The gradient of `loss` by one transform object made with capture='call'."""
    if name == "grad":
        return tg.grad(loss, capture="call")
    if name == "value_and_grad":
        vg = tg.value_and_grad(loss, capture="call")
        return lambda x: vg(x)[1]
    if name == "hessian":                           # H x = 2 w x for sum(w x^2)
        h = tg.hessian(loss, capture="call")
        return lambda x: h(x) @ x
    batched = tg.vmap(tg.grad(loss, capture="call"))
    return lambda x: batched(x[None])[0]


@pytest.mark.parametrize("name", ["grad", "value_and_grad", "hessian", "vmap"])
def test_a_rebound_closure_variable_is_followed(name):
    w = np.array([1.0, 2.0])

    def loss(x):
        return np.sum(w * x * x)

    g = kept(name, loss)
    x = np.array([0.5, -1.5])
    np.testing.assert_allclose(g(x), expected(w, x))
    w = np.array([3.0, 4.0])                      # rebound: same shape, new array
    np.testing.assert_allclose(g(x), expected(w, x))
    w = w * 2                                     # again
    np.testing.assert_allclose(g(x), expected(w, x))
    w[:] = [1.0, 1.0]                             # mutation still seen
    np.testing.assert_allclose(g(x), expected(w, x))
    w = np.array([1.0, 2.0, 3.0])                 # another shape: retraced at new inputs
    x3 = np.array([1.0, 1.0, 1.0])
    np.testing.assert_allclose(g(x3), expected(w, x3))
    w = np.array([-2.0, 1.0])                     # back to two: the old tape, followed
    np.testing.assert_allclose(g(x), expected(w, x))


def test_jacrev_follows_a_rebound_closure_variable():
    w = np.array([1.0, 2.0])
    jac = tg.jacrev(lambda x: w * x, capture="call")
    np.testing.assert_allclose(jac(np.ones(2)), np.diag(w))
    w = np.array([5.0, 7.0])
    np.testing.assert_allclose(jac(np.ones(2)), np.diag(w))


def test_a_rebound_global_is_followed_also_in_a_called_function():
    global W_GLOBAL
    g, h = tg.grad(global_loss, capture="call"), tg.grad(helper_loss, capture="call")
    x = np.array([1.0, 1.0])
    saved = W_GLOBAL
    try:
        np.testing.assert_allclose(g(x), expected(W_GLOBAL, x))
        np.testing.assert_allclose(h(x), 2 * expected(W_GLOBAL, x))
        W_GLOBAL = np.array([-1.0, 0.5])
        np.testing.assert_allclose(g(x), expected(W_GLOBAL, x))
        np.testing.assert_allclose(h(x), 2 * expected(W_GLOBAL, x))
    finally:
        W_GLOBAL = saved


class Model:
    def __init__(self, w):
        self.w = w

    def loss(self, x):
        return np.sum(self.w * x * x)


def test_a_rebound_attribute_is_followed():
    model = Model(np.array([1.0, 2.0]))
    method = tg.grad(model.loss, capture="call")             # self.w
    closure = tg.grad(lambda x: np.sum(model.w * x * x), capture="call")   # model.w
    x = np.array([0.5, 2.0])
    for g in (method, closure):
        np.testing.assert_allclose(g(x), expected(model.w, x))
    model.w = np.array([4.0, -4.0])
    for g in (method, closure):
        np.testing.assert_allclose(g(x), expected(model.w, x))


def test_a_rebound_tensor_is_followed():
    w = tg.tensor([1.0, 2.0])
    g = tg.grad(lambda x: np.sum(w * x * x), capture="call")
    x = np.array([1.0, 3.0])
    np.testing.assert_allclose(g(x), expected(w.numpy(), x))
    w = w * 3.0
    np.testing.assert_allclose(g(x), expected(w.numpy(), x))


def test_an_array_that_cannot_be_followed_warns_once_and_is_still_reread():
    weights = [np.array([1.0, 2.0])]
    g = tg.grad(lambda x: np.sum(weights[0] * x * x), capture="call")
    x = np.array([1.0, 1.0])
    with pytest.warns(RuntimeWarning, match=r"capture='call'\) of <lambda> re-reads 1 "
                      r"closed-over array\(s\) \(shapes \(2,\)\) .* rebinding the name to a new "
                      r"array is not"):
        np.testing.assert_allclose(g(x), expected(weights[0], x))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        weights[0][:] = [3.0, 3.0]                    # in place: seen
        np.testing.assert_allclose(g(x), expected(weights[0], x))


def test_a_view_of_a_closed_over_array_warns():
    """`w.T` is a new array object (a view): writing into w is seen through it, rebinding w
    is not."""
    w = np.array([[1.0, 2.0]])
    with pytest.warns(RuntimeWarning, match="rebinding the name to a new array is not"):
        g = tg.grad(lambda x: np.sum(w.T[:, 0] * x), capture="call")
        np.testing.assert_allclose(g(np.ones(2)), [1.0, 2.0])
    w[0, 0] = 5.0
    np.testing.assert_allclose(g(np.ones(2)), [5.0, 2.0])


def test_arrays_the_function_creates_do_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        g = tg.grad(lambda x: np.sum(np.array([1.0, 2.0]) * x * x + np.eye(2)[0] * x),
                    capture="call")
        np.testing.assert_allclose(g(np.ones(2)), [3.0, 4.0])
