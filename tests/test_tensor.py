"""The `Tensor` front end: PyTorch's autograd semantics, attributes, constructors and errors.

Expected values and messages are hard-coded (from PyTorch 2.13) so the file runs without torch;
the `torch` fixture runs the same programs on torch where it is importable.
"""
import os
import re
import threading
import warnings

import numpy as np
import pytest

import tapegrad
import tapegrad.autograd
from tapegrad import Tensor


@pytest.fixture
def torch():
    """torch with float64 as its default dtype (tapegrad's), restored afterwards."""
    torch = pytest.importorskip("torch")
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield torch
    torch.set_default_dtype(previous)


def values(t):
    if t is None:
        return None
    return np.asarray(t.detach().numpy(), dtype=np.float64)


def outcome(fn, L):
    """What `fn(L)` gives: ("ok", result) or (exception type name, message in tapegrad's words)."""
    try:
        return "ok", fn(L)
    except Exception as err:   # noqa: BLE001 (the exception is the result)
        return type(err).__name__, str(err).replace("torch.", "tapegrad.")


NON_LEAF = ("The .grad attribute of a Tensor that is not a leaf Tensor is being accessed. Its "
            ".grad attribute won't be populated during autograd.backward(). If you indeed want "
            "the .grad field to be populated for a non-leaf Tensor, use .retain_grad() on the "
            "non-leaf Tensor. If you access the non-leaf Tensor by mistake, make sure you access "
            "the leaf Tensor instead. See github.com/pytorch/pytorch/pull/30531 for more "
            "information.")


# ---- leaves, requires_grad, grad_fn ------------------------------------------------------------

CONSTRUCTORS = [
    lambda rg: tapegrad.tensor([1., 2.], requires_grad=rg),
    lambda rg: tapegrad.ones(2, 2, requires_grad=rg),
    lambda rg: tapegrad.zeros(3, requires_grad=rg),
    lambda rg: tapegrad.full((2,), 1.5, requires_grad=rg),
    lambda rg: tapegrad.randn(2, 3, requires_grad=rg),
    lambda rg: tapegrad.rand(2, requires_grad=rg),
    lambda rg: tapegrad.arange(0., 3., requires_grad=rg),
    lambda rg: tapegrad.linspace(0, 1, 5, requires_grad=rg),
    lambda rg: tapegrad.eye(2, requires_grad=rg),
    lambda rg: tapegrad.empty(2, requires_grad=rg),
    lambda rg: tapegrad.zeros_like(tapegrad.ones(2), requires_grad=rg),
    lambda rg: tapegrad.ones_like(tapegrad.ones(2), requires_grad=rg),
    lambda rg: tapegrad.randn_like(tapegrad.ones(2), requires_grad=rg),
    lambda rg: tapegrad.rand_like(tapegrad.ones(2), requires_grad=rg),
    lambda rg: tapegrad.full_like(tapegrad.ones(2), 3.0, requires_grad=rg),
    lambda rg: Tensor(np.ones(2), requires_grad=rg),
]


@pytest.mark.parametrize("make", CONSTRUCTORS)
def test_created_tensors_are_leaves(make):
    for rg in (False, True):
        t = make(rg)
        assert t.is_leaf and t.grad_fn is None and t.grad is None
        assert t.requires_grad is rg


def test_requires_grad_propagates():
    x = tapegrad.tensor([1., 2.], requires_grad=True)
    c = tapegrad.tensor([3., 4.])
    for y in (x + c, c * x, x / 2, 2 - x, -x, x.exp(), (x @ c), x.sum(), x[0], x.reshape(2, 1),
              tapegrad.cat([c, x]), tapegrad.stack([x, c]), tapegrad.where(c > 3, x, c)):
        assert y.requires_grad and not y.is_leaf and y.grad_fn is not None
    for y in (c + 1, c * c, c.sum(), c[0]):
        assert not y.requires_grad and y.is_leaf and y.grad_fn is None
    comparison = x > 1
    assert not comparison.requires_grad and comparison.grad_fn is None


def test_requires_grad_flag_rules():
    x = tapegrad.tensor([1., 2.])
    x.requires_grad = True
    assert x.requires_grad
    x.requires_grad_(False)
    assert not x.requires_grad
    assert x.requires_grad_() is x and x.requires_grad
    y = x * 2
    y.requires_grad_(True)      # allowed on a non-leaf
    with pytest.raises(RuntimeError) as info:
        y.requires_grad_(False)
    assert str(info.value) == (
        "you can only change requires_grad flags of leaf variables. If you want to use a computed "
        "variable in a subgraph that doesn't require differentiation use var_no_grad = "
        "var.detach().")


FLOAT_ONLY = "Only Tensors of floating point and complex dtype can require gradients"


@pytest.mark.parametrize("make", [
    lambda: tapegrad.tensor([1, 2], requires_grad=True),
    lambda: tapegrad.tensor([True], requires_grad=True),
    lambda: tapegrad.arange(3, requires_grad=True),
    lambda: tapegrad.zeros(2, dtype=tapegrad.int64, requires_grad=True),
    lambda: tapegrad.full((2,), 3, requires_grad=True),
    lambda: tapegrad.tensor([1, 2]).requires_grad_(),
    lambda: setattr(tapegrad.tensor([1, 2]), "requires_grad", True),
])
def test_integer_tensors_cannot_require_grad(make):
    with pytest.raises(RuntimeError) as info:
        make()
    assert str(info.value) == FLOAT_ONLY


def test_non_leaf_grad_warns_and_retain_grad():
    x = tapegrad.tensor([1., 2.], requires_grad=True)
    y = x * 2
    z = y * y
    assert not y.retains_grad and not x.retains_grad
    with pytest.warns(UserWarning) as record:
        assert y.grad is None
    assert str(record[0].message) == NON_LEAF and "retain_grad()" in str(record[0].message)
    z.retain_grad()
    z.retain_grad()       # twice is fine
    x.retain_grad()       # a leaf: no-op
    assert z.retains_grad and not x.retains_grad
    z.sum().backward()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(z.grad.numpy(), [1., 1.])
        np.testing.assert_array_equal(x.grad.numpy(), [8., 16.])
        assert x.grad is not None
    with pytest.raises(RuntimeError) as info:
        tapegrad.tensor([1.]).retain_grad()
    assert str(info.value) == "can't retain_grad on Tensor that has requires_grad=False"


def test_retained_grad_accumulates_and_follows_in_place_updates(torch):
    def program(L):
        a = L.tensor([1., 2.], requires_grad=True)
        b = a * 2
        b.retain_grad()
        c = (b * b).sum()
        c.backward(retain_graph=True)
        c.backward()
        first = values(b.grad)
        d = a * 2
        d.retain_grad()
        d.mul_(3)
        (d * d).sum().backward()
        return first, values(d.grad), values(a.grad), d.grad_fn.name()
    mine, theirs = program(tapegrad), program(torch)
    for m, t in zip(mine, theirs):
        np.testing.assert_array_equal(m, t)
    np.testing.assert_array_equal(mine[0], [8., 16.])


def test_grad_of_a_non_leaf_passed_as_input_does_not_warn():
    a = tapegrad.tensor([1., 2.], requires_grad=True)
    b = a * 2
    (b * b).sum().backward(inputs=[b])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(b.grad.numpy(), [4., 8.])
    assert a.grad is None


# ---- .grad --------------------------------------------------------------------------------------

def test_grad_shape_and_dtype_follow_the_tensor():
    for dtype in (tapegrad.float32, tapegrad.float64):
        x = tapegrad.ones(2, 3, dtype=dtype, requires_grad=True)
        w = tapegrad.ones(3, requires_grad=True)            # float64 with a float32 input
        (x * w).sum().backward()
        assert x.grad.shape == (2, 3) and x.grad.dtype == dtype
        assert w.grad.shape == (3,) and w.grad.dtype == np.float64
        assert isinstance(x.grad, Tensor) and x.grad.is_leaf and not x.grad.requires_grad


def test_float32_programs_stay_float32():
    x = tapegrad.tensor([0.5, 1.5], dtype=tapegrad.float32, requires_grad=True)
    steps = [x * 3, x + 1, x / 2, 1 - x, x ** 2, x.exp(), x.log(), x.tanh(), x.sigmoid(),
             x.sum(), x.mean(), x * x, x @ x, x.reshape(2, 1), x[0]]
    assert all(s.dtype == np.float32 for s in steps)
    total = steps[0].sum()
    for s in steps[1:]:
        total = total + s.sum()
    assert total.dtype == np.float32
    total.backward()
    assert x.grad.dtype == np.float32


def test_assigning_grad():
    x = tapegrad.tensor([1., 2.], requires_grad=True)
    x.grad = tapegrad.tensor([10., 20.])
    (x * 3).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [13., 23.])
    x.grad = None
    (x * 3).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [3., 3.])
    with pytest.raises(RuntimeError) as info:
        x.grad = tapegrad.tensor([1., 2., 3.])
    assert str(info.value) == ("attempting to assign a gradient of size '[3]' to a tensor of size "
                               "'[2]'. Please ensure that the gradient and the tensor are the "
                               "same size")
    with pytest.raises(RuntimeError, match="attempting to assign a gradient with dtype"):
        x.grad = tapegrad.tensor([1., 2.], dtype=tapegrad.float32)
    with pytest.raises(TypeError) as info:
        x.grad = np.ones(2)
    assert str(info.value) == ("assigned grad expected to be a Tensor or None but got grad of "
                               "type numpy.ndarray")


def test_grad_setter_errors_match_torch(torch):
    def size(L):
        L.tensor([1.], requires_grad=True).grad = L.tensor([1., 2.])

    def kind(L):
        L.tensor([1.], requires_grad=True).grad = np.ones(1)
    for fn in (size, kind):
        assert outcome(fn, tapegrad) == outcome(fn, torch)


# ---- grad mode ----------------------------------------------------------------------------------

def test_no_grad_records_nothing():
    x = tapegrad.tensor([1., 2.], requires_grad=True)
    with tapegrad.no_grad():
        assert not tapegrad.is_grad_enabled()
        y = x * 2 + 1
        with tapegrad.enable_grad():
            assert tapegrad.is_grad_enabled()
            w = x * 2
        assert not tapegrad.is_grad_enabled()
    assert tapegrad.is_grad_enabled()
    assert not y.requires_grad and y.is_leaf and y.grad_fn is None
    assert w.requires_grad and w.grad_fn.name() == "MulBackward0"
    with pytest.raises(RuntimeError, match="does not require grad and does not have a grad_fn"):
        y.sum().backward()


def test_grad_mode_restored_after_an_exception():
    with pytest.raises(ValueError):
        with tapegrad.no_grad():
            raise ValueError
    assert tapegrad.is_grad_enabled()


def test_no_grad_and_enable_grad_as_decorators():
    x = tapegrad.tensor([1., 2.], requires_grad=True)

    @tapegrad.no_grad()
    def double(t):
        """Doubles."""
        return t * 2

    @tapegrad.no_grad
    def triple(t):
        return t * 3

    @tapegrad.enable_grad()
    def quadruple(t):
        return t * 4

    assert double.__name__ == "double" and double.__doc__ == "Doubles."
    assert not double(x).requires_grad and not triple(x).requires_grad
    assert triple.__name__ == "triple"
    with tapegrad.no_grad():
        assert quadruple(x).requires_grad
        assert not tapegrad.is_grad_enabled()
    assert tapegrad.is_grad_enabled()
    assert tapegrad.autograd.no_grad is tapegrad.no_grad


def test_set_grad_enabled():
    x = tapegrad.tensor([1., 2.], requires_grad=True)
    tapegrad.set_grad_enabled(False)          # a plain call switches the mode
    try:
        assert not tapegrad.is_grad_enabled() and not (x * 2).requires_grad
    finally:
        tapegrad.set_grad_enabled(True)
    assert tapegrad.is_grad_enabled()
    with tapegrad.set_grad_enabled(False):
        assert not (x * 2).requires_grad
        with tapegrad.set_grad_enabled(True):
            assert (x * 2).requires_grad
        assert not tapegrad.is_grad_enabled()
    assert tapegrad.is_grad_enabled()

    @tapegrad.set_grad_enabled(False)
    def frozen(t):
        return t * 2
    assert tapegrad.is_grad_enabled()         # decorating does not switch the mode
    assert not frozen(x).requires_grad
    assert tapegrad.is_grad_enabled() and frozen.__name__ == "frozen"


def test_grad_mode_matches_torch(torch):
    def program(L):
        x = L.tensor([1., 2.], requires_grad=True)
        seen = []

        @L.no_grad
        def f(t):
            return t * 2

        @L.set_grad_enabled(False)
        def g(t):
            return t * 2
        seen += [f(x).requires_grad, g(x).requires_grad, L.is_grad_enabled()]
        with L.no_grad():
            with L.enable_grad():
                seen.append((x * 2).requires_grad)
            seen.append((x * 2).requires_grad)
        with L.set_grad_enabled(False):
            seen.append(L.is_grad_enabled())
        seen.append(L.is_grad_enabled())
        return seen
    assert program(tapegrad) == program(torch) == [False, False, True, True, False, False, True]


def test_grad_mode_is_per_thread():
    inside, release, seen = threading.Event(), threading.Event(), {}

    def frozen():
        with tapegrad.no_grad():
            inside.set()
            release.wait(10)
            seen["frozen"] = tapegrad.is_grad_enabled()

    thread = threading.Thread(target=frozen)
    thread.start()
    try:
        assert inside.wait(10)
        assert tapegrad.is_grad_enabled()
        x = tapegrad.tensor([1., 2.], requires_grad=True)
        assert (x * 2).requires_grad
    finally:
        release.set()
        thread.join()
    assert seen["frozen"] is False


# ---- detach, conversions, attributes ------------------------------------------------------------

def test_detach():
    x = tapegrad.tensor([1., 2.], requires_grad=True)
    y = x * 2
    for d in (x.detach(), y.detach()):
        assert d.is_leaf and not d.requires_grad and d.grad_fn is None
    d = x.detach()
    d[0] = 5.0                                # shares memory, as in PyTorch
    assert x.tolist() == [5.0, 2.0]
    y.detach_()
    assert y.is_leaf and not y.requires_grad


def test_item_numpy_tolist():
    x = tapegrad.tensor([[1., 2.], [3., 4.]], requires_grad=True)
    assert x[1, 0].item() == 3.0 and isinstance(x[1, 0].item(), float)
    assert tapegrad.tensor(3).item() == 3 and isinstance(tapegrad.tensor(3).item(), int)
    assert tapegrad.tensor([2.5]).item() == 2.5
    with pytest.raises(RuntimeError) as info:
        x.item()
    assert str(info.value) == "a Tensor with 4 elements cannot be converted to Scalar"
    with pytest.raises(RuntimeError) as info:
        x.numpy()
    assert str(info.value) == ("Can't call numpy() on Tensor that requires grad. Use "
                               "tensor.detach().numpy() instead.")
    with pytest.raises(RuntimeError, match="Can't call numpy"):
        np.asarray(x)
    n = x.detach().cpu().numpy()
    assert isinstance(n, np.ndarray) and n.dtype == np.float64
    n[0, 0] = 10.0                            # numpy() shares memory
    assert x[0, 0].item() == 10.0
    assert x.tolist() == [[10.0, 2.0], [3.0, 4.0]]
    assert tapegrad.tensor(2.0).tolist() == 2.0
    assert tapegrad.tensor([1, 2]).tolist() == [1, 2]
    assert float(tapegrad.tensor([2.5])) == 2.5 and int(tapegrad.tensor(7)) == 7


def test_shape_dtype_ndim_len():
    x = tapegrad.ones(2, 3)
    assert x.shape == (2, 3) and isinstance(x.shape, tapegrad.Size)
    assert repr(tapegrad.ones(2, 2).shape) == "tapegrad.Size([2, 2])"
    assert str(tapegrad.ones(2, 2).shape) == "tapegrad.Size([2, 2])"
    assert repr(tapegrad.tensor(1.).shape) == "tapegrad.Size([])"
    assert x.size() == (2, 3) and x.size(1) == 3 and x.size(-1) == 3
    assert x.shape.numel() == 6 and x.numel() == 6
    assert x.dtype == tapegrad.float64 == np.float64
    assert tapegrad.ones(2, dtype=tapegrad.float32).dtype == tapegrad.float32
    assert x.ndim == 2 and x.dim() == 2 and tapegrad.tensor(1.).ndim == 0
    assert len(x) == 2
    with pytest.raises(TypeError, match="len\\(\\) of a 0-d tensor"):
        len(tapegrad.tensor(1.))
    assert [r.tolist() for r in x] == [[1., 1., 1.]] * 2
    assert x.T.shape == (3, 2) and x.mT.shape == (3, 2)
    assert tapegrad.ones(2, 3, 4).T.shape == (4, 3, 2)


def test_transpose_and_indexing_gradients(torch):
    data = np.arange(12.).reshape(3, 4)
    index = [
        lambda x: x[1], lambda x: x[:, 1], lambda x: x[-1, 1:3], lambda x: x[[0, 2, 0]],
        lambda x: x[x > 4], lambda x: x[..., ::2], lambda x: x.T[1], lambda x: x[1, 2],
        lambda x: x[None, 0],
    ]
    for i, f in enumerate(index):
        got = []
        for L in (tapegrad, torch):
            x = L.tensor(data, requires_grad=True)
            y = f(x)
            (y * L.arange(1., y.numel() + 1.).reshape(y.shape)).sum().backward()
            got.append((values(y), values(x.grad), y.grad_fn.name()))
        np.testing.assert_array_equal(got[0][0], got[1][0], err_msg=str(i))
        np.testing.assert_array_equal(got[0][1], got[1][1], err_msg=str(i))
        if i != 2:   # x[-1, 1:3]: PyTorch names the last step (SliceBackward0), we the first
            assert got[0][2] == got[1][2], i


def test_indexing_values_and_gradients():
    x = tapegrad.tensor([[1., 2.], [3., 4.]], requires_grad=True)
    assert x[0, 1].item() == 2.0 and x[:, 0].tolist() == [1.0, 3.0] and x[-1].tolist() == [3., 4.]
    assert x[x > 2].tolist() == [3.0, 4.0]
    (x[0, 1] * 10 + x[[1, 1]].sum()).backward()
    np.testing.assert_array_equal(x.grad.numpy(), [[0., 10.], [2., 2.]])


# ---- constructors -------------------------------------------------------------------------------

def test_tensor_dtype_inference():
    assert tapegrad.tensor(3).dtype == np.int64
    assert tapegrad.tensor(3.5).dtype == np.float64
    assert tapegrad.tensor([1, 2.5]).dtype == np.float64
    assert tapegrad.tensor([True, False]).dtype == np.bool_
    assert tapegrad.tensor([]).dtype == np.float64 and tapegrad.tensor([]).shape == (0,)
    assert tapegrad.tensor(np.ones(2, np.float32)).dtype == np.float32
    assert tapegrad.tensor([[1, 2]], dtype=tapegrad.float32).dtype == np.float32
    assert tapegrad.tensor([1., 2.], dtype=tapegrad.int64).tolist() == [1, 2]


def test_tensor_copies_and_from_numpy_shares():
    a = np.array([1., 2.])
    t = tapegrad.tensor(a)
    a[0] = 9.0
    assert t.tolist() == [1.0, 2.0]
    s = tapegrad.from_numpy(a)
    a[1] = 7.0
    assert s.tolist() == [9.0, 7.0]
    s[0] = 3.0
    assert a[0] == 3.0
    assert tapegrad.from_numpy(np.ones(2, np.float32)).dtype == np.float32
    assert tapegrad.from_numpy(np.arange(3)).dtype == np.int64
    with pytest.raises(TypeError, match="expected np.ndarray \\(got list\\)"):
        tapegrad.from_numpy([1.0])
    c = tapegrad.tensor(s)          # a copy of a tensor
    c[0] = -1.0
    assert s[0].item() == 3.0


def test_tensor_of_tensors():
    x = tapegrad.tensor([1., 2.], requires_grad=True)
    t = tapegrad.tensor([x[0], x[1] * 3])
    assert t.tolist() == [1.0, 6.0] and not t.requires_grad and t.is_leaf
    assert tapegrad.tensor([tapegrad.tensor(1), tapegrad.tensor(2)]).tolist() == [1, 2]


def test_factories():
    assert tapegrad.zeros(2, 3).tolist() == [[0.0] * 3] * 2
    assert tapegrad.zeros((2, 3)).shape == (2, 3) and tapegrad.ones([4]).shape == (4,)
    assert tapegrad.ones(2, dtype=tapegrad.int32).dtype == np.int32
    assert tapegrad.full((2, 2), 7.).tolist() == [[7.0, 7.0]] * 2
    assert tapegrad.full((2,), 7).dtype == np.int64 and tapegrad.full((2,), 7.).dtype == np.float64
    assert tapegrad.full((2,), True).dtype == np.bool_
    assert tapegrad.arange(5).tolist() == [0, 1, 2, 3, 4] and tapegrad.arange(5).dtype == np.int64
    assert tapegrad.arange(1, 3).tolist() == [1, 2]
    assert tapegrad.arange(0, 1, 0.25).tolist() == [0.0, 0.25, 0.5, 0.75]
    assert tapegrad.arange(3.).dtype == np.float64
    assert tapegrad.linspace(0, 1, 3).tolist() == [0.0, 0.5, 1.0]
    assert tapegrad.eye(2).tolist() == [[1.0, 0.0], [0.0, 1.0]]
    assert tapegrad.randn(3, 4).shape == (3, 4) and tapegrad.randn(3).dtype == np.float64
    assert tapegrad.randn(2, dtype=tapegrad.float32).dtype == np.float32
    r = tapegrad.rand(1000)
    assert 0.0 <= r.numpy().min() and r.numpy().max() < 1.0
    base = tapegrad.ones(2, 3, dtype=tapegrad.float32)
    for like in (tapegrad.zeros_like, tapegrad.ones_like, tapegrad.randn_like,
                 tapegrad.rand_like, tapegrad.empty_like):
        t = like(base)
        assert t.shape == (2, 3) and t.dtype == np.float32
        assert like(base, dtype=tapegrad.float64).dtype == np.float64
    assert tapegrad.full_like(base, 2.0).tolist() == [[2.0] * 3] * 2
    assert tapegrad.zeros_like(tapegrad.arange(3)).dtype == np.int64
    tapegrad.manual_seed(3)
    a = tapegrad.randn(4)
    tapegrad.manual_seed(3)
    assert tapegrad.randn(4).tolist() == a.tolist()


def test_factories_match_torch(torch):
    programs = [
        lambda L: L.arange(5), lambda L: L.arange(0, 1, 0.25), lambda L: L.arange(5.),
        lambda L: L.full((2,), 3), lambda L: L.full((2,), 3.), lambda L: L.full((2,), True),
        lambda L: L.zeros(2, 3), lambda L: L.ones(2, dtype=L.int64), lambda L: L.tensor(3),
        lambda L: L.tensor([1, 2.5]), lambda L: L.tensor([[True]]), lambda L: L.eye(2),
        lambda L: L.linspace(0, 1, 5), lambda L: L.full_like(L.arange(3), 2.5),
    ]
    for p in programs:
        assert str(p(tapegrad)) == str(p(torch)).replace("torch.", "tapegrad.")


# ---- autograd.grad and autograd.backward --------------------------------------------------------

def test_autograd_grad():
    x = tapegrad.tensor([1., 2.], requires_grad=True)
    y = tapegrad.tensor([3., 4.], requires_grad=True)
    out = (x * y).sum()
    gx, gy = tapegrad.autograd.grad(out, [x, y], retain_graph=True)
    np.testing.assert_array_equal(gx.numpy(), [3., 4.])
    np.testing.assert_array_equal(gy.numpy(), [1., 2.])
    assert x.grad is None and y.grad is None
    (gx2,) = tapegrad.autograd.grad(out, x)
    np.testing.assert_array_equal(gx2.numpy(), [3., 4.])
    with pytest.raises(RuntimeError, match="backward through the graph a second time"):
        tapegrad.autograd.grad(out, x)
    # vector outputs with grad_outputs, several outputs at once
    (g,) = tapegrad.autograd.grad(x * x, x, grad_outputs=tapegrad.tensor([1., 10.]))
    np.testing.assert_array_equal(g.numpy(), [2., 40.])
    (g,) = tapegrad.autograd.grad([(x * x).sum(), (x * 3).sum()], [x])
    np.testing.assert_array_equal(g.numpy(), [5., 7.])
    # with respect to an intermediate value
    h = x * 2
    (gh,) = tapegrad.autograd.grad((h * h).sum(), h)
    np.testing.assert_array_equal(gh.numpy(), [4., 8.])
    assert x.grad is None


def test_autograd_grad_unused_inputs():
    x = tapegrad.tensor([1., 2.], requires_grad=True)
    unused = tapegrad.tensor([5.], requires_grad=True)
    with pytest.raises(RuntimeError) as info:
        tapegrad.autograd.grad((x * 2).sum(), [x, unused])
    assert str(info.value) == ("The differentiated Tensor at index 1 appears to not have been "
                               "used in the graph. Set allow_unused=True if this is the desired "
                               "behavior.")
    gx, gu = tapegrad.autograd.grad((x * 2).sum(), [x, unused], allow_unused=True)
    assert gu is None and gx.tolist() == [2.0, 2.0]
    gx, gu = tapegrad.autograd.grad((x * 2).sum(), [x, unused], materialize_grads=True)
    assert gu.tolist() == [0.0]
    with pytest.raises(RuntimeError) as info:
        tapegrad.autograd.grad((x * 2).sum(), [x, tapegrad.tensor([1.])], allow_unused=True)
    assert str(info.value) == "One of the differentiated Tensors does not require grad"


def test_autograd_functions_match_torch(torch):
    def unused(L):
        x = L.tensor([1., 2.], requires_grad=True)
        return L.autograd.grad((x * 2).sum(), [x, L.tensor([1.], requires_grad=True)])

    def no_grad_input(L):
        x = L.tensor([1., 2.], requires_grad=True)
        return L.autograd.grad((x * 2).sum(), [x, L.tensor([1.])])

    def constant_output(L):
        L.tensor([1., 2.]).sum().backward()

    def empty_inputs(L):
        x = L.tensor([1., 2.], requires_grad=True)
        (x * 2).sum().backward(inputs=[])

    def constant_input(L):
        x = L.tensor([1., 2.], requires_grad=True)
        (x * 2).sum().backward(inputs=[L.tensor([1.])])

    def twice(L):
        x = L.tensor([1., 2.], requires_grad=True)
        out = (x * x).sum()
        L.autograd.grad(out, x)
        L.autograd.grad(out, x)

    def vector(L):
        x = L.tensor([1., 2.], requires_grad=True)
        L.autograd.grad(x * x, x)

    def mismatch(L):
        x = L.tensor([1., 2.], requires_grad=True)
        L.autograd.grad(x * x, x, grad_outputs=L.ones(3))

    for fn in (unused, no_grad_input, constant_output, empty_inputs, constant_input, twice,
               vector, mismatch):
        mine, theirs = outcome(fn, tapegrad), outcome(fn, torch)
        assert mine[0] != "ok" and mine == theirs, fn.__name__


def test_autograd_backward_and_inputs():
    x = tapegrad.tensor([1., 2.], requires_grad=True)
    y = tapegrad.tensor([3., 4.], requires_grad=True)
    tapegrad.autograd.backward([(x * y).sum(), (x * x).sum()])
    np.testing.assert_array_equal(x.grad.numpy(), [5., 8.])
    x.grad = y.grad = None
    tapegrad.autograd.backward([x * y, x], [tapegrad.ones(2), tapegrad.tensor([10., 10.])])
    np.testing.assert_array_equal(x.grad.numpy(), [13., 14.])
    x.grad = y.grad = None
    (x * y).sum().backward(inputs=[x])
    assert y.grad is None and x.grad.tolist() == [3.0, 4.0]
    (x * y).sum().backward(inputs=y)
    assert y.grad.tolist() == [1.0, 2.0]
    leaf = tapegrad.tensor(2., requires_grad=True)
    leaf.backward()
    assert leaf.grad.item() == 1.0


def test_autograd_backward_matches_torch(torch):
    def program(L):
        x = L.tensor([1., 2.], requires_grad=True)
        y = L.tensor([3., 4.], requires_grad=True)
        L.autograd.backward([x * y, (x * x).sum()], [L.tensor([1., -1.]), None])
        first = values(x.grad), values(y.grad)
        z = x * 2
        (z * y).sum().backward(inputs=[z, y])
        return first + (values(x.grad), values(y.grad), values(z.grad))
    for m, t in zip(program(tapegrad), program(torch)):
        np.testing.assert_array_equal(m, t)


def test_create_graph_is_not_supported():
    x = tapegrad.tensor([1., 2.], requires_grad=True)
    with pytest.raises(NotImplementedError, match="function transforms"):
        (x * x).sum().backward(create_graph=True)


# ---- the graph: next_functions ------------------------------------------------------------------

def walk(fn, depth=0):
    """The graph below `fn` as nested (name, children) tuples."""
    if fn is None:
        return None
    return (fn.name(), tuple(walk(f, depth + 1) for f, _ in fn.next_functions))


def test_next_functions():
    x = tapegrad.ones(2, 2, requires_grad=True)
    out = ((x + 2) * (x + 2) * 3).mean()
    acc = "torch::autograd::AccumulateGrad"
    add = ("AddBackward0", ((acc, ()), None))
    assert walk(out.grad_fn) == (
        "MeanBackward0", (("MulBackward0", (("MulBackward0", (add, add)), None)),))
    (acc_fn, index), = out.grad_fn.next_functions[0][0].next_functions[0][0] \
        .next_functions[0][0].next_functions[:1]
    assert index == 0 and acc_fn.variable is x and acc_fn.next_functions == ()
    assert re.fullmatch(r"<AccumulateGrad object at 0x[0-9a-f]+>", repr(acc_fn))
    # one AccumulateGrad per leaf, shared by the nodes that use it
    a, b = x * 2, x.exp()
    assert a.grad_fn.next_functions[0][0] is b.grad_fn.next_functions[0][0]
    # constants are None; broadcasts are looked through
    c = tapegrad.tensor([1., 2.], requires_grad=True)
    s = x + c
    assert [f.name() for f, _ in s.grad_fn.next_functions] == [acc, acc]
    assert s.grad_fn.next_functions[1][0].variable is c
    assert (x * tapegrad.ones(2)).grad_fn.next_functions[1] == (None, 0)


def test_next_functions_match_torch(torch):
    programs = [
        lambda x, c: ((x + 2) * (x + 2) * 3).mean(), lambda x, c: 3 * x + 2 * x * x + x.log(),
        lambda x, c: x - 2, lambda x, c: 2 - x, lambda x, c: x / 2, lambda x, c: x ** 2,
        lambda x, c: 2 ** x, lambda x, c: (x * c).sum(0), lambda x, c: x + c, lambda x, c: -x,
        lambda x, c: x @ c, lambda x, c: x.T[0], lambda x, c: x.reshape(4).exp(),
        lambda x, c: x[0].tanh() * c, lambda x, c: (x.sigmoid() - c).abs().max(),
    ]
    for i, p in enumerate(programs):
        graphs = []
        for L in (tapegrad, torch):
            x = L.tensor([[1., 2.], [3., 4.]], requires_grad=True)
            graphs.append(walk(p(x, L.tensor([0.5, 0.25])).grad_fn))
        assert graphs[0] == graphs[1], i


# ---- in-place operations ------------------------------------------------------------------------

def test_sgd_step_in_place_under_no_grad(torch):
    def train(L):
        w = L.tensor([1., -2.], requires_grad=True)
        data = L.tensor([0.5, 1.5])
        for _ in range(5):
            loss = ((w * data).sum() - 1) ** 2
            loss.backward()
            with L.no_grad():
                w -= 0.1 * w.grad
                w.grad.zero_()
        return w, values(w), w.is_leaf, w.requires_grad
    w, value, leaf, rg = train(tapegrad)
    assert leaf and rg and w.grad_fn is None and w.grad.tolist() == [0.0, 0.0]
    _, expected, tleaf, trg = train(torch)
    np.testing.assert_allclose(value, expected, rtol=1e-15)
    assert (leaf, rg) == (tleaf, trg)


def test_in_place_arithmetic():
    a = tapegrad.tensor([1., 2.])
    same = a
    a += 1
    a -= tapegrad.tensor([0.5, 0.5])
    a *= 4
    a /= 2
    a **= 2
    assert a is same and a.tolist() == [9.0, 25.0]
    a.add_(tapegrad.tensor([1., 1.]), alpha=3).sub_(1).mul_(0.5).div_(tapegrad.tensor([1., 2.]))
    assert a.tolist() == [5.5, 6.75]
    assert a.pow_(2).tolist() == [30.25, 45.5625]
    b = tapegrad.zeros(2, 2)
    b.copy_(tapegrad.tensor([1, 2]))
    assert b.tolist() == [[1.0, 2.0], [1.0, 2.0]] and b.dtype == np.float64
    n = np.zeros(2)
    t = tapegrad.from_numpy(n)
    t += 1                             # in memory: the numpy array sees it
    assert n.tolist() == [1.0, 1.0]
    f = tapegrad.ones(2, dtype=tapegrad.float32)
    f += tapegrad.tensor([1., 1.])
    assert f.dtype == np.float32 and f.tolist() == [2.0, 2.0]
    z = tapegrad.tensor(2.) + 1       # a 0-d result can be updated in place
    z.zero_()
    assert z.item() == 0.0
    assert z.fill_(4).item() == 4.0


def test_in_place_errors():
    x = tapegrad.tensor([1., 2.], requires_grad=True)
    for op in (lambda: x.__iadd__(1), lambda: x.mul_(2), lambda: x.zero_(), lambda: x.fill_(1),
               lambda: x.__setitem__([0], 1.0), lambda: x.copy_(tapegrad.ones(2))):
        with pytest.raises(RuntimeError) as info:
            op()
        assert str(info.value) == ("a leaf Variable that requires grad is being used in an "
                                   "in-place operation.")
    with pytest.raises(RuntimeError) as info:      # x[0] is a view (PyTorch's message)
        x[0] = 1.0
    assert str(info.value) == ("a view of a leaf Variable that requires grad is being used in an "
                               "in-place operation.")
    assert x.tolist() == [1.0, 2.0]
    i = tapegrad.tensor([1, 2])
    with pytest.raises(RuntimeError) as info:
        i += 1.5
    assert str(info.value) == "result type Double can't be cast to the desired output type Long"
    with pytest.raises(RuntimeError) as info:
        tapegrad.tensor([1., 2.]).add_(tapegrad.ones(2, 2))
    assert str(info.value) == "output with shape [2] doesn't match the broadcast shape [2, 2]"


def test_in_place_on_recorded_tensors(torch):
    def program(L):
        x = L.tensor([1., 2.], requires_grad=True)
        b = x * 2
        b += 1                              # a non-leaf: recorded
        c = (b * b)
        c.mul_(L.tensor([1., 3.]))
        acc = L.zeros(2)
        acc += x * x                        # a constant becomes part of the graph
        src = L.zeros(2)
        src.copy_(x)
        (c.sum() + acc.sum() + (src * 5).sum()).backward()
        names = [re.sub(" object at .*", "", repr(t.grad_fn)) for t in (b, c, acc, src)]
        return [values(t) for t in (b, c, acc, x.grad)], names, acc.is_leaf, acc.requires_grad
    mine, theirs = program(tapegrad), program(torch)
    for m, t in zip(mine[0], theirs[0]):
        np.testing.assert_array_equal(m, t)
    assert mine[1:] == theirs[1:]
    assert mine[1] == ["<AddBackward0", "<MulBackward0", "<AddBackward0", "<CopyBackwards"]


def test_in_place_errors_match_torch(torch):
    def leaf(L):
        x = L.tensor([1., 2.], requires_grad=True)
        x += 1

    def cast(L):
        i = L.tensor([1, 2])
        i += 1.5

    def shape(L):
        L.tensor([1., 2.]).add_(L.ones(2, 2))
    for fn in (leaf, cast, shape):
        mine = outcome(fn, tapegrad)
        assert mine[0] != "ok" and mine == outcome(fn, torch), fn.__name__


# ---- printing -----------------------------------------------------------------------------------

def test_reprs():
    x = tapegrad.tensor([1., 2.], requires_grad=True)
    assert repr(x) == "tensor([1., 2.], requires_grad=True)"
    assert repr(x * 2) == "tensor([2., 4.], grad_fn=<MulBackward0>)"
    assert repr(x.detach()) == "tensor([1., 2.])"
    with tapegrad.no_grad():
        assert repr(x * 2) == "tensor([2., 4.])"
    assert repr(tapegrad.tensor([1., 2.], dtype=tapegrad.float32, requires_grad=True)) == \
        "tensor([1., 2.], dtype=tapegrad.float32, requires_grad=True)"
    assert repr(tapegrad.arange(3)) == "tensor([0, 1, 2])"


def test_import_and_recording_do_not_import_numba():
    """`import tapegrad` and eager recording stay in numpy (numba's import is ~150 ms); the
    first backward() loads the compiled interpreters."""
    import subprocess
    import sys
    code = ("import sys, tapegrad as tg\n"
            "assert 'numba' not in sys.modules\n"
            "x = tg.ones(2, 2, requires_grad=True)\n"
            "out = ((x + 2) * (x + 2) * 3).mean()\n"
            "assert 'numba' not in sys.modules\n"
            "out.backward()\n"
            "assert 'numba' in sys.modules and x.grad.tolist() == [[4.5, 4.5], [4.5, 4.5]]\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300,
                   cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
