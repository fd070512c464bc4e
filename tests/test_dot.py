"""`np.dot` on tensors follows numpy's dot; `tapegrad.dot` and `Tensor.dot` follow PyTorch's.

numpy's dot is not matmul: a 0-d operand multiplies, and for a of two axes or more and b of
three or more the result is a.shape[:-1] + b.shape[:-2] + b.shape[-1:] (matmul broadcasts the
leading axes instead). Every case is checked for its value and shape against numpy, for its
derivatives by `gradcheck` (reverse, forward and second order, eager), and through the
function transforms against finite differences.
"""
import numpy as np
import pytest

import tapegrad as tg
from tapegrad.testing import gradcheck

SHAPES = [((), ()), ((), (3,)), ((2, 3), ()), ((3,), (3,)), ((2, 3), (3,)), ((2, 2, 3), (3,)),
          ((3,), (3, 4)), ((3,), (2, 3, 4)), ((2, 3), (3, 4)), ((2, 3), (2, 3, 4)),
          ((2, 2, 3), (2, 3, 4)), ((4, 2, 3), (2, 2, 3, 5)), ((1, 3), (3, 1, 3, 2))]


def _operands(sa, sb, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal(sa), rng.standard_normal(sb)


@pytest.mark.parametrize("sa,sb", SHAPES, ids=[f"{a}.{b}" for a, b in SHAPES])
def test_values_and_shapes_match_numpy(sa, sb):
    a, b = _operands(sa, sb)
    expected = np.dot(a, b)
    eager = np.dot(tg.tensor(a, requires_grad=True), tg.tensor(b))
    assert eager.shape == expected.shape
    np.testing.assert_allclose(eager.detach().numpy(), expected, rtol=1e-13, atol=1e-14)
    traced = tg.trace(lambda x, y: np.dot(x, y), a, b)(a, b)
    assert np.shape(traced) == expected.shape
    np.testing.assert_allclose(traced, expected, rtol=1e-13, atol=1e-14)


@pytest.mark.parametrize("sa,sb", SHAPES, ids=[f"{a}.{b}" for a, b in SHAPES])
def test_eager_derivatives_match_finite_differences(sa, sb):
    a, b = _operands(sa, sb, seed=1)
    assert gradcheck(lambda x, y: np.dot(x, y), [a, b])


@pytest.mark.parametrize("sa,sb", SHAPES, ids=[f"{a}.{b}" for a, b in SHAPES])
def test_transforms_match_finite_differences(sa, sb):
    a, b = _operands(sa, sb, seed=2)
    w = np.random.default_rng(3).standard_normal(np.dot(a, b).shape)
    loss = lambda x, y: np.sum(np.dot(x, y) * w)
    ga, gb = tg.grad(loss, argnums=(0, 1))(a, b)
    eps = 1e-6
    for g, k in ((ga, 0), (gb, 1)):
        base = [a, b]
        numeric = np.zeros(base[k].shape)
        for j in range(base[k].size):
            e = np.zeros(base[k].size)
            e[j] = eps
            hi, lo = list(base), list(base)
            hi[k] = base[k] + e.reshape(base[k].shape)
            lo[k] = base[k] - e.reshape(base[k].shape)
            numeric.flat[j] = (np.sum(np.dot(*hi) * w) - np.sum(np.dot(*lo) * w)) / (2 * eps)
        np.testing.assert_allclose(g, numeric, rtol=1e-6, atol=1e-8)


def test_eager_backward_matches_numpy_by_hand():
    a, b = _operands((2, 2, 3), (2, 3, 4), seed=4)
    x, y = tg.tensor(a, requires_grad=True), tg.tensor(b, requires_grad=True)
    out = np.dot(x, y)
    assert out.shape == (2, 2, 2, 4)
    u = np.random.default_rng(5).standard_normal(out.shape)
    out.backward(tg.tensor(u))
    np.testing.assert_allclose(x.grad.numpy(), np.einsum("ijkl,kml->ijm", u, b), rtol=1e-12)
    np.testing.assert_allclose(y.grad.numpy(), np.einsum("ijkl,ijm->kml", u, a), rtol=1e-12)


def test_a_number_operand_multiplies():
    x = np.array([1.0, 2.0, 3.0])
    np.testing.assert_allclose(tg.grad(lambda v: np.sum(np.dot(v, 2.0)))(x), [2.0, 2.0, 2.0])
    np.testing.assert_allclose(tg.grad(lambda v: np.sum(np.dot(2.5, v)))(x), [2.5, 2.5, 2.5])
    assert np.dot(tg.tensor(x, dtype=tg.float32), 2.0).dtype == tg.float64     # as numpy


def test_misaligned_shapes_raise_numpy_error():
    for sa, sb in [((2, 3), (4,)), ((3,), (4,)), ((2, 2, 3), (2, 4, 5)), ((3,), (2, 4, 5))]:
        with pytest.raises(ValueError) as expected:
            np.dot(np.ones(sa), np.ones(sb))
        with pytest.raises(ValueError) as got:
            np.dot(tg.ones(*sa, requires_grad=True), tg.ones(*sb))
        assert str(got.value) == str(expected.value)


def test_torch_dot_is_one_dimensional():
    x, y = tg.tensor([1.0, 2.0], requires_grad=True), tg.tensor([3.0, 4.0])
    out = tg.dot(x, y)
    assert out.item() == 11.0 and x.dot(y).item() == 11.0
    out.backward()
    assert x.grad.tolist() == [3.0, 4.0]
    with pytest.raises(RuntimeError, match=r"^1D tensors expected, but got 2D and 1D tensors$"):
        tg.dot(tg.ones(2, 3), tg.ones(3))
    with pytest.raises(RuntimeError, match=r"^1D tensors expected, but got 1D and 0D tensors$"):
        tg.ones(3).dot(tg.tensor(2.0))
    with pytest.raises(RuntimeError, match=r"^inconsistent tensor size, expected tensor \[3\] "
                       r"and src \[4\] to have the same number of elements, but got 3 and 4 "
                       r"elements respectively$"):
        tg.dot(tg.ones(3), tg.ones(4))
    with pytest.raises(RuntimeError, match=r"^dot : expected both vectors to have same dtype, "
                       r"but found Float and Double$"):
        tg.dot(tg.ones(3, dtype=tg.float32), tg.ones(3))


def test_torch_dot_messages_are_pytorch_messages():
    torch = pytest.importorskip("torch")
    cases = [((2, 3), (3,), None), ((3,), (4,), None), ((3,), (3,), "float32")]
    for sa, sb, dtype in cases:
        with pytest.raises(RuntimeError) as expected:
            torch.dot(torch.ones(sa, dtype=getattr(torch, dtype or "float64")),
                      torch.ones(sb, dtype=torch.float64))
        with pytest.raises(RuntimeError) as got:
            tg.dot(tg.ones(*sa, dtype=getattr(tg, dtype or "float64")), tg.ones(*sb))
        assert str(got.value) == str(expected.value)
