"""Views share memory with their base, as in PyTorch, and in-place operations on them record.

Basic indexing, reshape/view/flatten/squeeze/unsqueeze (where numpy gives a view), permute,
transpose, t() and T return views; an in-place operation on a view writes through to the base,
counts in the version shared with it, and, when recorded, gives the base PyTorch's CopySlices
grad_fn (see tapegrad/_views.py). The scenarios that run in tapegrad and in PyTorch side by side
are in test_inplace.py; these tests check what they do not show.
"""
import re

import numpy as np
import pytest

import tapegrad


@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch")


def _t(L, values, grad=False):
    return L.tensor(values, dtype=L.float64, requires_grad=grad)


# ---- what the scenarios do not show ----------------------------------------------------------

def test_the_issue_program_changes_y_through_the_view():
    x = tapegrad.tensor([1., 2., 3., 4.], requires_grad=True)
    y = x * 2
    z = (y * y).sum()
    y[0:2].mul_(3)
    assert y.tolist() == [6., 12., 6., 8.] and y._version == 1
    assert type(y.grad_fn).__name__ == "Node" and repr(y.grad_fn).startswith("<CopySlices ")
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        z.backward()


def test_grad_fn_names_match_torch(torch):
    def names(L):
        x = _t(L, [[1., 2.], [3., 4.]], True)
        y = x * 1
        v = y[0]
        v.mul_(2)
        z = x * 1
        z.zero_()
        w = x * 1
        w[[0, 1]] = 0.0
        u = x * 1
        u.T[1, 0] = 7.0                 # into a view: CopySlices whatever the operation
        s = x * 1
        s[0].zero_()
        views = [x[0], x[:, 1], x.T, x.t(), x.reshape(4), x.view(4), x.unsqueeze(0),
                 x.unsqueeze(0).squeeze(0), x.permute(1, 0), x.transpose(0, 1)]
        return [re.sub(" object at .*", "", repr(t.grad_fn)) for t in [y, v, z, w, u, s] + views]
    assert names(tapegrad) == names(torch)


def test_views_share_memory_and_others_copy():
    a = tapegrad.arange(12.0).reshape(3, 4)
    shared = [a[1], a[1:, ::2], a[..., None], a[2, 3], a.T, a.t(), a.permute(1, 0),
              a.transpose(0, 1), a.reshape(4, 3), a.view(12), a.flatten(), a.unsqueeze(1),
              a[None].squeeze(0), a.detach()]
    copies = [a[[0, 1]], a[a > 3], a[np.array([1, 2])], a.clone(), a.T.reshape(12)]
    for t in shared:
        assert np.shares_memory(t.numpy(), a.numpy())
    for t in copies:
        assert not np.shares_memory(t.numpy(), a.numpy())
    assert a.detach()._view is None and a[1]._view is not None


def test_chains_of_views_replay_to_the_root():
    x = tapegrad.arange(24.0, requires_grad=True)
    y = x * 1
    v = y.view(2, 3, 4).permute(2, 0, 1)[1:3].transpose(0, 2)[::2, 1]
    v.mul_(100)
    (y * 1).sum().backward()
    expected = np.ones(24)
    expected[np.arange(24).reshape(2, 3, 4).transpose(2, 0, 1)[1:3].swapaxes(0, 2)[::2, 1]] = 100
    np.testing.assert_array_equal(x.grad.numpy(), expected)
    np.testing.assert_array_equal(y.detach().numpy(), np.arange(24.0) * expected)


def test_traced_functions_replay_in_place_writes_into_views(torch):
    """A transform records the same writes; replayed at other inputs it stays exact."""
    def f(L):
        def fn(x):
            y = x * 1
            y[0:2] *= 3
            v = y[1:]
            y.mul_(2)
            y[[0, 2]] = v[0:2] * 4
            return (y * y).sum() + (v * x[1:]).sum()
        return fn
    g = tapegrad.grad(f(tapegrad))
    for x in (np.array([1., 2., 3., 4.]), np.array([-1., 0.5, 2., 3.])):
        xt = torch.tensor(x, requires_grad=True)
        f(torch)(xt).backward()
        np.testing.assert_allclose(g(x), xt.grad.numpy(), rtol=1e-14)


def test_sgd_on_a_slice_under_no_grad_writes_through():
    w = tapegrad.tensor([1., 2., 3., 4.], requires_grad=True)
    (w * w).sum().backward()
    with tapegrad.no_grad():
        w[1:3] -= 0.5 * w.grad[1:3]
    assert w.tolist() == [1., 0., 0., 4.] and w.is_leaf and w.requires_grad


def test_view_of_a_tensor_whose_data_was_replaced_is_no_longer_one():
    x = tapegrad.tensor([1., 2., 3.])
    v = x[1:]
    x.data = np.zeros(3)
    y = tapegrad.tensor([1., 1.], requires_grad=True)
    v.mul_(y)                           # into v's own (old) memory: x is not rebound
    assert x.is_leaf and not x.requires_grad and x.tolist() == [0., 0., 0.]
    assert v.tolist() == [2., 3.]


def test_graphs_with_writes_into_views_are_released():
    """The history of a rebound base can lead back to it (through the nodes of its views): it
    lives on the tensor, not in the registry, so such graphs are garbage once dropped."""
    import gc
    import weakref
    from tapegrad.eager import graph as _graph
    gc.collect()
    before = len(_graph.rebound_tensors)
    refs = []
    for _ in range(5):
        x = tapegrad.ones(6, requires_grad=True)
        y = x * 2
        y[0:2].mul_(3)
        y[1:4] += x[1:4]
        y.sum().backward()
        refs.append(weakref.ref(y))
        del x, y
    gc.collect()
    assert all(r() is None for r in refs)
    assert len(_graph.rebound_tensors) <= before


def test_graph_of_a_saved_tensor_detached_in_place_still_displays():
    x = tapegrad.ones(2, requires_grad=True)
    w = tapegrad.ones(2, requires_grad=True)
    y = x * 2
    z = (y * w).sum()
    y.detach_()
    (mul, _), = z.grad_fn.next_functions
    assert mul.name() == "MulBackward0" and len(mul.next_functions) == 2
    with pytest.raises(RuntimeError, match="detached in-place"):
        z.backward()


def test_an_element_of_a_vector_is_a_zero_d_view(torch):
    """x[i] of a vector (the read of scalar code, recorded without an index map) behaves as the
    general path and as PyTorch: a 0-d view, negative indices, IndexError out of range, writes
    through, and the gradient lands on element i."""
    for i in (1, -1, -3):
        x = tapegrad.tensor([1.0, 2.0, 3.0], requires_grad=True)
        t = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
        y, u = x.clone(), t.clone()
        v, w = y[i], u[i]
        assert v.shape == () and v.grad_fn.name() == w.grad_fn.name() == "SelectBackward0"
        v.mul_(3.0)
        w.mul_(3.0)
        np.testing.assert_array_equal(y.detach().numpy(), u.detach().numpy())
        (y * y).sum().backward()
        (u * u).sum().backward()
        np.testing.assert_array_equal(x.grad.numpy(), t.grad.numpy())
    with pytest.raises(IndexError, match="index 3 is out of bounds"):
        tapegrad.tensor([1.0, 2.0, 3.0], requires_grad=True)[3]
    with pytest.raises(IndexError, match="index -4 is out of bounds"):
        tapegrad.tensor([1.0, 2.0, 3.0], requires_grad=True)[-4]
    g = tapegrad.grad(lambda x: x[-1] * x[0] ** 2)
    for x in (np.array([1.0, 2.0, 3.0]), np.array([-2.0, 5.0, 0.5])):
        np.testing.assert_array_equal(g(x), [2 * x[0] * x[-1], 0.0, x[0] ** 2])
