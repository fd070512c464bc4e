"""numpy's products on tensors: einsum (every subscript form), tensordot, inner, outer, kron,
cross, dot, vdot, matmul and numpy 2's vecdot/matvec/vecmat, and PyTorch's einsum, tensordot,
inner, outer, kron, vdot and cross.

* Values: numpy's own result eagerly (bit for bit: the value is numpy's); a traced tape replayed
  at other inputs agrees with numpy to rounding (its sums associate as the kernels add).
* Recording: an einsum is a few entries (gathers, batched matmuls, muls, segment sums), never
  one per element.
* Derivatives: `gradcheck` (VJP, JVP, second order) of every case, HIPS autograd's first and
  second derivatives, PyTorch's gradients for the tg.* functions.
* vmap: the interpreter tier for every case.
"""
import numpy as np
import pytest

import tapegrad as tg
from tapegrad.testing import gradcheck

from conftest import rng_for
from test_numpy_shapes import assert_numpys_error

autograd = pytest.importorskip("autograd")
anp = pytest.importorskip("autograd.numpy")
jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")
torch = pytest.importorskip("torch")


@pytest.fixture(scope="module", autouse=True)
def _jax_x64():
    jax.config.update("jax_enable_x64", True)


# name -> (f(m, *operands) for m numpy or autograd.numpy, the operands' shapes)
CASES = {
    "einsum-matmul": (lambda m, a, b: m.einsum("ij,jk->ik", a, b), [(3, 4), (4, 5)]),
    "einsum-implicit": (lambda m, a, b: m.einsum("kj,ji", a, b), [(3, 4), (4, 5)]),
    "einsum-swapped-out": (lambda m, a, b: m.einsum("ij,jk->ki", a, b), [(3, 4), (4, 5)]),
    "einsum-diagonal": (lambda m, a: m.einsum("ii->i", a), [(4, 4)]),
    "einsum-trace": (lambda m, a: m.einsum("ii", a), [(4, 4)]),
    "einsum-repeated-3d": (lambda m, a: m.einsum("iji->ij", a), [(3, 2, 3)]),
    "einsum-transpose": (lambda m, a: m.einsum("ijk->kij", a), [(2, 3, 4)]),
    "einsum-sum": (lambda m, a: m.einsum("ijk->j", a), [(2, 3, 4)]),
    "einsum-total": (lambda m, a: m.einsum("ij->", a), [(3, 4)]),
    "einsum-dot": (lambda m, a, b: m.einsum("i,i", a, b), [(5,), (5,)]),
    "einsum-outer": (lambda m, a, b: m.einsum("i,j->ij", a, b), [(3,), (4,)]),
    "einsum-rowdots": (lambda m, a, b: m.einsum("ij,ij->i", a, b), [(3, 4), (3, 4)]),
    "einsum-hadamard": (lambda m, a, b: m.einsum("ij,ij->ij", a, b), [(1, 4), (3, 4)]),
    "einsum-batched": (lambda m, a, b: m.einsum("bij,bjk->bik", a, b), [(2, 3, 4), (2, 4, 3)]),
    "einsum-ellipsis": (lambda m, a, b: m.einsum("...ij,...jk->...ik", a, b),
                        [(2, 1, 3, 4), (3, 4, 2)]),
    "einsum-ellipsis-implicit": (lambda m, a, b: m.einsum("...i,...i", a, b), [(3, 4), (4,)]),
    "einsum-three": (lambda m, a, b, c: m.einsum("ij,jk,kl->il", a, b, c),
                     [(2, 3), (3, 4), (4, 2)]),
    "einsum-four": (lambda m, a, b, c, d: m.einsum("ab,bc,cd,da->", a, b, c, d),
                    [(2, 3), (3, 4), (4, 3), (3, 2)]),
    "einsum-repeated-with-other": (lambda m, a, b: m.einsum("ii,ij->j", a, b), [(3, 3), (3, 4)]),
    "einsum-summed-alone": (lambda m, a, b: m.einsum("ijk,kl->il", a, b), [(2, 3, 4), (4, 2)]),
    "einsum-triple-product": (lambda m, a, b, c: m.einsum("i,i,i->", a, b, c),
                              [(4,), (4,), (4,)]),
    "einsum-scalar": (lambda m, a, b: m.einsum(",ij->ij", a, b), [(), (2, 3)]),
    "einsum-sublists": (lambda m, a, b: m.einsum(a, [0, 1], b, [1, 2], [2, 0]),
                        [(3, 4), (4, 2)]),
    "tensordot-2": (lambda m, a, b: m.tensordot(a, b), [(2, 3, 4), (3, 4, 2)]),
    "tensordot-0": (lambda m, a, b: m.tensordot(a, b, 0), [(2, 3), (3,)]),
    "tensordot-1": (lambda m, a, b: m.tensordot(a, b, 1), [(2, 3), (3, 4)]),
    "tensordot-pairs": (lambda m, a, b: m.tensordot(a, b, ([1, 0], [0, 2])),
                        [(3, 2, 4), (2, 5, 3)]),
    "tensordot-int-pair": (lambda m, a, b: m.tensordot(a, b, (2, 0)), [(3, 2, 4), (4, 3)]),
    "inner": (lambda m, a, b: m.inner(a, b), [(4,), (4,)]),
    "inner-2d": (lambda m, a, b: m.inner(a, b), [(2, 3, 4), (5, 4)]),
    "inner-scalar": (lambda m, a, b: m.inner(a, b), [(), (2, 3)]),
    "outer": (lambda m, a, b: m.outer(a, b), [(3,), (4,)]),
    "outer-flattened": (lambda m, a, b: m.outer(a, b), [(2, 3), (2, 2)]),
    "kron": (lambda m, a, b: m.kron(a, b), [(2, 3), (3, 2)]),
    "kron-ranks": (lambda m, a, b: m.kron(a, b), [(3,), (2, 2)]),
    "cross": (lambda m, a, b: m.cross(a, b), [(4, 3), (4, 3)]),
    "cross-broadcast": (lambda m, a, b: m.cross(a, b), [(3,), (2, 3)]),
    "cross-axes": (lambda m, a, b: m.cross(a, b, axisa=0, axisb=1, axisc=0), [(3, 2), (2, 3)]),
    "cross-2d": (lambda m, a, b: m.cross(a, b), [(4, 2), (4, 2)]),
    "cross-2d-3d": (lambda m, a, b: m.cross(a, b), [(2,), (3,)]),
    "dot": (lambda m, a, b: m.dot(a, b), [(2, 3), (2, 3, 4)]),
    "dot-vector": (lambda m, a, b: m.dot(a, b), [(3,), (3,)]),
    "vdot": (lambda m, a, b: m.vdot(a, b), [(2, 3), (3, 2)]),
    "matmul": (lambda m, a, b: m.matmul(a, b), [(2, 3, 4), (4,)]),
    "matmul-broadcast": (lambda m, a, b: m.matmul(a, b), [(2, 1, 3, 4), (3, 4, 2)]),
}
NUMPY2 = {   # functions autograd does not have
    "vecdot": (lambda a, b: np.vecdot(a, b), [(3, 4), (4,)]),
    "linalg.vecdot-axis": (lambda a, b: np.linalg.vecdot(a, b, axis=0), [(3, 4), (3, 1)]),
    "matvec": (lambda a, b: np.matvec(a, b), [(2, 3, 4), (4,)]),
    "vecmat": (lambda a, b: np.vecmat(a, b), [(3,), (2, 3, 4)]),
    "linalg.outer": (lambda a, b: np.linalg.outer(a, b), [(3,), (2,)]),
    "linalg.cross": (lambda a, b: np.linalg.cross(a, b), [(2, 3), (2, 3)]),
    "linalg.tensordot": (lambda a, b: np.linalg.tensordot(a, b, axes=1), [(2, 3), (3, 2)]),
    "linalg.matmul": (lambda a, b: np.linalg.matmul(a, b), [(2, 3), (3, 2)]),
}
# compared with JAX, not autograd: autograd's einsum has no VJP with a repeated index, its vdot
# none at all, its outer does not flatten and its cross neither takes 2-vectors nor sums the
# gradient of a broadcast operand
JAX_CASES = {"einsum-diagonal", "einsum-trace", "einsum-repeated-3d", "einsum-repeated-with-other",
             "outer-flattened", "cross-broadcast", "cross-2d", "cross-2d-3d", "vdot"}
ALL = {**{k: (lambda *ops, f=f: f(np, *ops), s) for k, (f, s) in CASES.items()}, **NUMPY2}


def _operands(name, shapes):
    rng = rng_for(name)
    return [rng.standard_normal(s) for s in shapes]


@pytest.mark.parametrize("name", list(ALL))
def test_value_is_numpys(name):
    f, shapes = ALL[name]
    xs = _operands(name, shapes)
    expected = np.asarray(f(*xs))
    got = f(*[tg.tensor(x, requires_grad=True) for x in xs])
    assert got.requires_grad
    assert got.data.dtype == expected.dtype and got.data.shape == expected.shape
    np.testing.assert_array_equal(got.data, expected)
    others = _operands(f"{name} other", shapes)
    np.testing.assert_allclose(tg.trace(f, *xs)(*others), f(*others), rtol=1e-13, atol=1e-14)


@pytest.mark.parametrize("name", list(ALL))
def test_one_numpy_call_is_a_few_entries(name):
    f, shapes = ALL[name]
    assert len(tg.trace(f, *_operands(name, shapes))) <= 12


def test_einsum_entries_do_not_grow_with_the_sizes():
    f = lambda a, b, c: np.einsum("ij,jk,kl->il", a, b, c)
    small = tg.trace(f, *_operands("small", [(2, 3), (3, 4), (4, 2)]))
    large = tg.trace(f, *_operands("large", [(20, 30), (30, 40), (40, 20)]))
    assert len(small) == len(large) <= 4


@pytest.mark.parametrize("name", list(ALL))
def test_gradcheck(name):
    f, shapes = ALL[name]
    assert gradcheck(f, _operands(name, shapes))


@pytest.mark.parametrize("name", list(CASES))
def test_first_and_second_order_match_autograd_or_jax(name):
    f, shapes = CASES[name]
    xs = _operands(name, shapes)
    u = rng_for(f"autograd {name}").standard_normal(np.shape(f(np, *xs)))
    m, grad, hessian = ((jnp, jax.grad, jax.hessian) if name in JAX_CASES else
                        (anp, autograd.grad, autograd.hessian))
    ours = lambda *a: np.sum(np.sin(f(np, *a)) * u)
    theirs = lambda *a: m.sum(m.sin(f(m, *a)) * u)
    argnums = tuple(range(len(xs)))
    for got, expected in zip(tg.grad(ours, argnums=argnums)(*xs),
                             [grad(theirs, k)(*xs) for k in argnums]):
        np.testing.assert_allclose(got, expected, rtol=1e-11, atol=1e-13)
    rest = xs[1:]
    np.testing.assert_allclose(tg.hessian(lambda a: ours(a, *rest))(xs[0]),
                               hessian(lambda a: theirs(a, *rest))(xs[0]),
                               rtol=1e-11, atol=1e-13)


@pytest.mark.parametrize("name", ["einsum-three", "einsum-repeated-with-other", "tensordot-pairs",
                                  "kron", "cross-axes", "outer-flattened", "vecdot"])
def test_vmap_interpreter_matches_one_gradient_per_point(name):
    f, shapes = ALL[name]
    xs = _operands(name, shapes)
    u = rng_for(f"vmap u {name}").standard_normal(np.shape(f(*xs)))
    loss = lambda a, *rest: np.sum(np.sin(f(a, *rest)) * u)
    X = np.stack([_operands(f"vmap {name} {k}", shapes[:1])[0] for k in range(5)])
    in_axes = (0,) + (None,) * (len(xs) - 1)
    got = tg.vmap(tg.value_and_grad(loss), in_axes=in_axes, fuse=False)(X, *xs[1:])
    for k in range(len(X)):
        value, g = tg.value_and_grad(loss)(X[k], *xs[1:])
        np.testing.assert_allclose(got[0][k], value, rtol=1e-12)
        np.testing.assert_allclose(got[1][k], g, rtol=1e-12, atol=1e-13)


def test_constant_operands_are_not_differentiated():
    a, b = _operands("constants", [(3, 4), (4, 2)])
    g = tg.grad(lambda x: np.sum(np.einsum("ij,jk->ik", a, x) ** 2))(b)
    np.testing.assert_allclose(g, 2 * a.T @ (a @ b), rtol=1e-13)
    assert not np.einsum("ij,jk", tg.tensor(a), tg.tensor(b)).requires_grad


def test_empty_contractions():
    a, b = np.zeros((3, 0)), np.zeros((0, 2))
    out = np.einsum("ij,jk->ik", tg.tensor(a, requires_grad=True), tg.tensor(b))
    np.testing.assert_array_equal(out.data, np.zeros((3, 2)))
    g = tg.grad(lambda x: np.sum(np.tensordot(x, b, 1)))(a)
    assert g.shape == (3, 0)


ERRORS = {
    "einsum-sizes": lambda a: np.einsum("ij,jk", a, np.ones((3, 2))),
    "einsum-letters": lambda a: np.einsum("ijk", a),
    "tensordot": lambda a: np.tensordot(a, np.ones((3, 3)), 1),
    "cross": lambda a: np.cross(a, np.ones((2, 4))),
    "vdot-sizes": lambda a: np.vdot(a, np.ones(3)),
}


@pytest.mark.parametrize("name", list(ERRORS))
def test_bad_arguments_raise_numpys_errors(name):
    assert_numpys_error(ERRORS[name], _operands(name, [(2, 4)])[0])


def test_out_is_refused():
    x = tg.tensor(np.ones((2, 2)), requires_grad=True)
    with pytest.raises(TypeError, match="numpy.einsum on Tensors does not write into out="):
        np.einsum("ij->ji", x, out=np.zeros((2, 2)))
    with pytest.raises(TypeError, match="numpy.outer on Tensors does not write into out="):
        np.outer(x, x, out=np.zeros((4, 4)))


# ---- PyTorch's functions, eagerly ---------------------------------------------------------------

TORCH = {   # name -> (f(module, *tensors) for tapegrad and torch alike, shapes)
    "einsum": (lambda m, a, b: m.einsum("bij,jk->bki", a, b), [(2, 3, 4), (4, 2)]),
    "einsum-list": (lambda m, a, b: m.einsum("ii,i->i", [a, b]), [(3, 3), (3,)]),
    "tensordot": (lambda m, a, b: m.tensordot(a, b, dims=([0, 2], [2, 0])),
                  [(3, 2, 4), (4, 5, 3)]),
    "tensordot-int": (lambda m, a, b: m.tensordot(a, b, 1), [(2, 3), (3, 4)]),
    "inner": (lambda m, a, b: m.inner(a, b), [(2, 4), (3, 4)]),
    "outer": (lambda m, a, b: m.outer(a, b), [(3,), (4,)]),
    "ger": (lambda m, a, b: m.ger(a, b), [(3,), (2,)]),
    "kron": (lambda m, a, b: m.kron(a, b), [(2, 3), (2, 2)]),
    "vdot": (lambda m, a, b: m.vdot(a, b), [(4,), (4,)]),
    "cross": (lambda m, a, b: m.cross(a, b, dim=1), [(2, 3), (2, 3)]),
    "cross-broadcast": (lambda m, a, b: m.cross(a, b, dim=-1), [(4, 3), (1, 3)]),
    "kron-method": (lambda m, a, b: a.kron(b), [(2,), (3,)]),
    "outer-method": (lambda m, a, b: a.outer(b), [(2,), (3,)]),
}


@pytest.mark.parametrize("name", list(TORCH))
def test_eager_functions_match_torch(name):
    f, shapes = TORCH[name]
    xs = _operands(f"torch {name}", shapes)
    ours = [tg.tensor(x, requires_grad=True) for x in xs]
    theirs = [torch.tensor(x, requires_grad=True) for x in xs]
    y, z = f(tg, *ours), f(torch, *theirs)
    np.testing.assert_allclose(y.data, z.detach().numpy(), rtol=1e-13, atol=1e-14)
    u = rng_for(f"torch u {name}").standard_normal(tuple(z.shape))
    y.backward(tg.tensor(u))
    z.backward(torch.tensor(u))
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a.grad.data, b.grad.numpy(), rtol=1e-12, atol=1e-14)


TORCH_ERRORS = {
    "tensordot-sizes": lambda m, a: m.tensordot(a, a, dims=([0], [1])),
    "inner-sizes": lambda m, a: m.inner(a, a[:, :2]),
    "outer-2d": lambda m, a: m.outer(a, a[0]),
    "cross-size": lambda m, a: m.cross(a, a, dim=0),
}


@pytest.mark.parametrize("name", list(TORCH_ERRORS))
def test_eager_errors_are_torchs(name):
    x = _operands(name, [(2, 3)])[0]
    with pytest.raises(RuntimeError) as theirs:
        TORCH_ERRORS[name](torch, torch.tensor(x))
    with pytest.raises(RuntimeError) as ours:
        TORCH_ERRORS[name](tg, tg.tensor(x))
    assert str(ours.value) == str(theirs.value)
