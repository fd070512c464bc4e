"""numpy's shape and indexing functions on tensors (flips, rolls, rotations, repeats, tiles,
pads, triangles, diagonals, splits, stacks, select, full, astype, linspace), and PyTorch's
functions of the same family (`tg.flip`, `tg.tril`, `tg.split`...).

* Values: numpy's, bit for bit, eagerly; a traced tape replayed at other inputs gives numpy's
  value there. Each call is one entry or a few (a gather, a pack), never one per element.
* Derivatives: `gradcheck` (VJP, JVP, second order) of every case, and HIPS autograd's first
  and second derivatives where autograd differentiates the function.
* Edge cases: empty and 0-d arrays, repeated positions (repeat, tile, edge pads), numpy's own
  errors, the pad modes that are refused.
* vmap: the interpreter tier for every case, the fused tier on a few.
"""
import warnings

import numpy as np
import pytest

import tapegrad as tg
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


def _cube(m, x):
    return m.reshape(x, (3, 2, 2))


# name -> f(m, x) for x of shape (3, 4), m numpy (on tensors and arrays) or autograd.numpy
CASES = {
    "atleast_1d": lambda m, x: m.atleast_1d(x[0, 0]),
    "atleast_2d": lambda m, x: m.atleast_2d(x[0]),
    "atleast_3d": lambda m, x: m.atleast_3d(x),
    "atleast_3d-1d": lambda m, x: m.atleast_3d(x[1]),
    "moveaxis": lambda m, x: m.moveaxis(_cube(m, x), 0, -1),
    "moveaxis-many": lambda m, x: m.moveaxis(_cube(m, x), [0, 1], [2, 0]),
    "rollaxis": lambda m, x: m.rollaxis(_cube(m, x), 2),
    "swapaxes": lambda m, x: m.swapaxes(_cube(m, x), 0, -1),
    "flip": lambda m, x: m.flip(x),
    "flip-axis": lambda m, x: m.flip(x, 1),
    "flipud": lambda m, x: m.flipud(x),
    "fliplr": lambda m, x: m.fliplr(x),
    "rot90": lambda m, x: m.rot90(x),
    "rot90-k3": lambda m, x: m.rot90(_cube(m, x), 3, (2, 0)),
    "roll": lambda m, x: m.roll(x, 5),
    "roll-axis": lambda m, x: m.roll(x, -1, axis=0),
    "roll-axes": lambda m, x: m.roll(x, (1, 2), axis=(0, 1)),
    "repeat": lambda m, x: m.repeat(x, 2),
    "repeat-counts": lambda m, x: m.repeat(x, np.array([1, 0, 2]), axis=0),
    "tile": lambda m, x: m.tile(x, 2),
    "tile-3d": lambda m, x: m.tile(x, (2, 1, 2)),
    "pad": lambda m, x: m.pad(x, ((1, 0), (2, 1))),
    "pad-values": lambda m, x: m.pad(x, 1, constant_values=(1.5, -2.0)),
    "pad-edge": lambda m, x: m.pad(x, ((2, 1), (0, 3)), "edge"),
    "pad-reflect": lambda m, x: m.pad(x, 2, "reflect"),
    "pad-symmetric": lambda m, x: m.pad(x, (1, 3), "symmetric"),
    "pad-wrap": lambda m, x: m.pad(x, ((0, 2), (5, 1)), "wrap"),
    "diag": lambda m, x: m.diag(x),
    "diag-k": lambda m, x: m.diag(x, -1),
    "diag-vector": lambda m, x: m.diag(x[0]),
    "diag-vector-k": lambda m, x: m.diag(x[0], 2),
    "diagonal": lambda m, x: m.diagonal(_cube(m, x), 1, 0, 2),
    "trace": lambda m, x: m.trace(x),
    "trace-axes": lambda m, x: m.trace(_cube(m, x), -1, 1, 2),
    "tril": lambda m, x: m.tril(x),
    "triu-k": lambda m, x: m.triu(x, 1),
    "tril-3d": lambda m, x: m.tril(_cube(m, x), -1),
    "split": lambda m, x: m.stack(m.split(x, 2, axis=1)),
    "split-indices": lambda m, x: m.split(x, [1, 3], axis=1)[1],
    "array_split": lambda m, x: m.array_split(x, 3, axis=1)[0],
    "hsplit": lambda m, x: m.hsplit(x, 2)[1],
    "vsplit": lambda m, x: m.vsplit(x, 3)[2],
    "dsplit": lambda m, x: m.dsplit(_cube(m, x), [1])[1],
    "vstack": lambda m, x: m.vstack([x, x[0] * 2.0]),
    "hstack": lambda m, x: m.hstack([x, x[:, :1]]),
    "column_stack": lambda m, x: m.column_stack([x[0], x[1], x[:2].T]),
    "dstack": lambda m, x: m.dstack([x, x * x]),
    "append": lambda m, x: m.append(x, x[0]),
    "append-axis": lambda m, x: m.append(x, x[:1] * 3.0, axis=0),
    "select": lambda m, x: m.select([x > 0.5, x < -0.5], [x, x * x], 1.0),
    "select-traced-default": lambda m, x: m.select([x > 0.0], [x * 2.0], x[0]),
    "linspace": lambda m, x: m.linspace(x[0, 0], x[1, 1], 5),
    "linspace-open": lambda m, x: m.linspace(x[0, 0], x[1, 1], 4, endpoint=False),
    "linspace-arrays": lambda m, x: m.linspace(x[0], x[1], 3, axis=1),
}
# the cases compared with JAX, not autograd: autograd's select and linspace are constants, its
# pad has no VJP but in constant mode, and it has no VJP (flip), a wrong one (diag of a
# rectangle, tile, roll by several shifts, rot90 in other axes, trace with an offset) or none for
# the arguments (repeat with counts, diagonal with an offset) in the others
JAX_CASES = {"select", "select-traced-default", "linspace", "linspace-open", "linspace-arrays",
             "pad", "pad-values", "pad-edge", "pad-reflect", "pad-symmetric", "pad-wrap",
             "flip", "flip-axis", "rot90-k3", "roll-axes", "repeat-counts", "tile", "diag",
             "diag-k", "diagonal", "trace-axes", "dstack"}


def _input(name, shape=(3, 4)):
    return rng_for(name).standard_normal(shape)


def _case(name):
    return lambda x: CASES[name](np, x)


@pytest.mark.parametrize("name", list(CASES))
def test_value_is_numpys_bit_for_bit(name):
    x = _input(name)
    expected = np.asarray(CASES[name](np, x))
    got = CASES[name](np, tg.tensor(x, requires_grad=True))
    assert got.requires_grad
    assert got.data.dtype == expected.dtype
    np.testing.assert_array_equal(got.data, expected)
    other = _input(f"{name} other")
    np.testing.assert_array_equal(tg.trace(_case(name), x)(other), CASES[name](np, other))


@pytest.mark.parametrize("name", [n for n in CASES if not n.startswith(("select", "linspace"))])
def test_one_numpy_call_is_a_few_entries(name):
    """An index map records a gather (with a pack, a slice or a sum where it needs one), not an
    entry per element."""
    assert len(tg.trace(_case(name), _input(name))) <= 6


@pytest.mark.parametrize("name", list(CASES))
def test_gradcheck(name):
    assert gradcheck(_case(name), [_input(name)])


@pytest.mark.parametrize("name", [n for n in CASES if n not in JAX_CASES])
def test_first_and_second_order_match_autograd(name):
    x = _input(name)
    u = rng_for(f"autograd {name}").standard_normal(np.shape(CASES[name](np, x)))
    ours = lambda a: np.sum(np.sin(CASES[name](np, a)) * u)
    theirs = lambda a: anp.sum(anp.sin(CASES[name](anp, a)) * u)
    np.testing.assert_allclose(tg.grad(ours)(x), autograd.grad(theirs)(x), rtol=1e-12,
                               atol=1e-14)
    np.testing.assert_allclose(tg.hessian(ours)(x), autograd.hessian(theirs)(x), rtol=1e-12,
                               atol=1e-14)


@pytest.mark.parametrize("name", sorted(JAX_CASES))
def test_first_and_second_order_match_jax(name):
    x = _input(name)
    u = rng_for(f"jax {name}").standard_normal(np.shape(CASES[name](np, x)))
    ours = lambda a: np.sum(np.sin(CASES[name](np, a)) * u)
    theirs = lambda a: jnp.sum(jnp.sin(CASES[name](jnp, a)) * u)
    np.testing.assert_allclose(tg.grad(ours)(x), jax.grad(theirs)(x), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(tg.hessian(ours)(x), jax.hessian(theirs)(x), rtol=1e-12,
                               atol=1e-14)


# ---- edge cases ---------------------------------------------------------------------------------

EMPTY = {   # name -> f(m, a) for m numpy (on tensors and arrays) or jax.numpy
    "flip": lambda m, a: m.flip(a, 0),
    "roll": lambda m, a: m.roll(a, 1, axis=1),
    "tril": lambda m, a: m.tril(a),
    "repeat": lambda m, a: m.repeat(a, 2, axis=0),
    "tile": lambda m, a: m.tile(a, (1, 2)),
    "pad": lambda m, a: m.pad(a, 1),
    "diagonal": lambda m, a: m.diagonal(a),
    "trace": lambda m, a: m.trace(a),
    "split": lambda m, a: m.array_split(a, 2, axis=1)[0],
    "vstack": lambda m, a: m.vstack([a, a]),
    "rot90": lambda m, a: m.rot90(a),
}


@pytest.mark.parametrize("name", list(EMPTY))
@pytest.mark.parametrize("shape", [(0, 3), (3, 0), (1, 1)], ids=str)
def test_empty_and_single_element_arrays(name, shape):
    f = lambda a: EMPTY[name](np, a)
    x = _input(f"empty {name}", shape)
    t = tg.tensor(x, requires_grad=True)
    out = f(t)
    np.testing.assert_array_equal(out.data, f(x))
    np.testing.assert_array_equal(tg.trace(f, x)(x), f(x))
    np.sum(out * 2.0).backward()
    expected = jax.grad(lambda a: jnp.sum(EMPTY[name](jnp, a) * 2.0))(x)
    np.testing.assert_array_equal(t.grad.data, expected)
    np.testing.assert_array_equal(tg.grad(lambda a: np.sum(f(a) * 2.0))(x), expected)


def test_a_constant_packed_before_a_traced_operand():
    """The adjoint of a pack skips the constants before an operand (they have no room in the
    adjoint buffer): tril, diag, pad and concatenate with a constant first."""
    w = np.arange(4.0)
    x = np.array([1.0, 2.0])
    f = lambda a: np.sum(np.concatenate([np.ones(2), a]) * w)
    np.testing.assert_array_equal(tg.grad(f)(x), [2.0, 3.0])
    np.testing.assert_array_equal(tg.vmap(tg.grad(f), fuse=False)(np.stack([x, x])),
                                  [[2.0, 3.0], [2.0, 3.0]])


def test_repeated_positions_add_their_gradients():
    x = np.arange(3.0)
    np.testing.assert_array_equal(tg.grad(lambda a: np.sum(np.tile(np.repeat(a, [3, 0, 1]), 2)))
                                  (x), [6.0, 0.0, 2.0])
    np.testing.assert_array_equal(tg.grad(lambda a: np.sum(np.pad(a, 2, "edge")))(x),
                                  [3.0, 1.0, 3.0])


def test_zero_d_operands():
    x = np.array(2.5)
    for f in (np.atleast_1d, np.atleast_2d, np.atleast_3d, np.flip, lambda a: np.roll(a, 1),
              lambda a: np.repeat(a, 3), lambda a: np.tile(a, (2, 2)), lambda a: np.pad(a, 0),
              lambda a: np.append(a, a)):
        got = f(tg.tensor(x, requires_grad=True))
        np.testing.assert_array_equal(got.data, f(x))
        assert gradcheck(f, [x])


def test_traced_pad_values_and_linspace_endpoints_have_gradients():
    gx, gc = tg.grad(lambda a, c: np.sum(np.pad(a, 1, constant_values=c)), argnums=(0, 1))(
        np.ones((2, 2)), 1.5)
    assert gc == 12.0                                    # 16 elements, 4 of them a's
    np.testing.assert_array_equal(gx, np.ones((2, 2)))
    g = tg.grad(lambda s: np.sum(np.linspace(s, 3.0, 4)))(0.5)
    np.testing.assert_allclose(g, 2.0)                   # 1, 2/3, 1/3, 0
    gs = tg.grad(lambda s, e: np.linspace(s, e, 4, retstep=True)[1], argnums=(0, 1))(0.5, 2.0)
    np.testing.assert_allclose(gs, (-1 / 3, 1 / 3))


def test_full_and_astype():
    x = np.array(1.25)
    shape = (2, 3)
    full = lambda a: np.full(shape, a, like=a)
    got = full(tg.tensor(x, requires_grad=True))
    np.testing.assert_array_equal(got.data, np.full(shape, x))
    assert tg.grad(lambda a: np.sum(np.full(shape, a * 2.0, like=a)))(x) == 12.0
    assert gradcheck(full, [x])
    y = _input("astype", (2, 3))
    cast = np.astype(tg.tensor(y, requires_grad=True), np.float32)
    assert cast.dtype == tg.float32
    np.testing.assert_array_equal(cast.data, y.astype(np.float32))
    g = tg.grad(lambda a: np.sum(np.astype(a, np.float32) * 2.0))(y)
    np.testing.assert_array_equal(g, np.full(y.shape, 2.0))


def test_integer_results_are_constants():
    i = tg.tensor(np.arange(6).reshape(2, 3))
    assert not np.flip(i).requires_grad
    np.testing.assert_array_equal(np.pad(i, 1).data, np.pad(np.arange(6).reshape(2, 3), 1))


ERRORS = {   # f(tensor) -> numpy's error on the array
    "roll-axes": lambda a: np.roll(a, (1, 2), axis=(0, 1, 1)),
    "split-unequal": lambda a: np.split(a, 3, axis=1),
    "rot90-axes": lambda a: np.rot90(a, 1, (0, 0)),
    "swapaxes": lambda a: np.swapaxes(a, 0, 2),
    "moveaxis": lambda a: np.moveaxis(a, 0, 5),
    "diag-3d": lambda a: np.diag(np.reshape(a, (1, 2, 2))),
    "vstack": lambda a: np.vstack([a, a[:, :1]]),
    "tile-negative": lambda a: np.tile(a, -1),
    "repeat-counts": lambda a: np.repeat(a, [1, 2, 3], axis=0),
    "pad-negative": lambda a: np.pad(a, -1),
}


def assert_numpys_error(f, x):
    """f raises on a tensor what it raises on the array x, word for word."""
    with pytest.raises(Exception) as numpys:
        f(x)
    with pytest.raises(type(numpys.value)) as ours:
        f(tg.tensor(x, requires_grad=True))
    assert str(ours.value) == str(numpys.value)


@pytest.mark.parametrize("name", list(ERRORS))
def test_bad_arguments_raise_numpys_errors(name):
    assert_numpys_error(ERRORS[name], _input(name, (2, 2)))


def test_refused_pad_modes_and_out():
    x = tg.tensor(np.ones((2, 2)), requires_grad=True)
    with pytest.raises(NotImplementedError, match="numpy.pad with mode 'mean' on Tensors"):
        np.pad(x, 1, "mean")
    with pytest.raises(NotImplementedError, match="reflect_type 'odd'"):
        np.pad(x, 1, "reflect", reflect_type="odd")
    with pytest.raises(TypeError, match="numpy.take on Tensors does not write into out="):
        np.take(x, [0], out=np.zeros(1))


# ---- vmap ---------------------------------------------------------------------------------------

def _loss(name):
    u = rng_for(f"vmap u {name}").standard_normal(np.shape(CASES[name](np, _input(name))))
    return lambda x: np.sum(np.sin(CASES[name](np, x)) * u)


VMAP = ["flip", "roll-axes", "rot90-k3", "repeat-counts", "tile-3d", "pad-values", "pad-reflect",
        "diag-vector-k", "trace-axes", "tril-3d", "split", "vstack", "column_stack", "select",
        "linspace-arrays", "moveaxis-many", "append-axis"]


@pytest.mark.parametrize("name", VMAP)
def test_vmap_interpreter_matches_one_gradient_per_point(name):
    loss = _loss(name)
    X = np.stack([_input(f"vmap {name} {k}") for k in range(5)])
    got = tg.vmap(tg.value_and_grad(loss), fuse=False)(X)
    grad = tg.value_and_grad(loss)
    for k in range(len(X)):
        value, g = grad(X[k])
        np.testing.assert_allclose(got[0][k], value, rtol=1e-13)
        np.testing.assert_allclose(got[1][k], g, rtol=1e-13, atol=1e-14)


@pytest.mark.parametrize("name", ["roll-axes", "tril-3d", "pad-values", "vstack"])
def test_vmap_fused_tier_matches_the_interpreter(name):
    _check_fused(_loss(name), np.stack([_input(f"fused {name} {k}") for k in range(6)]))


def _check_fused(loss, X):
    """vmap(grad(loss), fuse=True) at X: fused, without a warning, and the interpreter's."""
    vmapped = tg.vmap(tg.grad(loss), fuse=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = vmapped(X)
    assert fused(vmapped), tiers(vmapped)
    np.testing.assert_allclose(got, tg.vmap(tg.grad(loss), fuse=False)(X), rtol=1e-13,
                               atol=1e-14)


# ---- PyTorch's functions, eagerly ---------------------------------------------------------------

TORCH = {   # name -> f(module, tensor) for tapegrad and torch alike, on a (3, 4) tensor
    "flip": lambda m, x: m.flip(x, [0, 1]),
    "flip-method": lambda m, x: x.flip(1),
    "fliplr": lambda m, x: m.fliplr(x),
    "flipud": lambda m, x: m.flipud(x),
    "roll": lambda m, x: m.roll(x, 5),
    "roll-dims": lambda m, x: m.roll(x, (1, -2), (0, 1)),
    "rot90": lambda m, x: m.rot90(x, 3, [1, 0]),
    "tril": lambda m, x: m.tril(x, -1),
    "triu-method": lambda m, x: x.triu(1),
    "diag": lambda m, x: m.diag(x, 1),
    "diag-vector": lambda m, x: m.diag(x[0], -1),
    "diagflat": lambda m, x: m.diagflat(x[:2], 1),
    "diagonal": lambda m, x: m.diagonal(x.reshape(3, 2, 2), 1, 2, 0),
    "trace-method": lambda m, x: x.trace(),
    "movedim": lambda m, x: m.movedim(x.reshape(3, 2, 2), (0, 1), (2, 0)),
    "swapaxes": lambda m, x: m.swapaxes(x, 0, 1),
    "repeat_interleave": lambda m, x: m.repeat_interleave(x, 2, dim=1),
    "repeat_interleave-counts": lambda m, x: m.repeat_interleave(x, m.tensor([1, 0, 3]), dim=0),
    "tile": lambda m, x: m.tile(x, (2, 1, 2)),
    "repeat-method": lambda m, x: x.repeat(2, 1, 3),
    "take": lambda m, x: m.take(x, m.tensor([[0, -1], [5, 2]])),
    "take_along_dim": lambda m, x: m.take_along_dim(x, m.tensor([[0, 2, 2, 1]]), 0),
    "gather": lambda m, x: m.gather(x, 1, m.tensor([[0, 0], [3, 1], [2, 2]])),
    "split": lambda m, x: m.split(x, 3, 1)[1],
    "split-sizes": lambda m, x: m.split(x, [1, 2], 0)[1],
    "tensor_split": lambda m, x: m.tensor_split(x, 3, 1)[0],
    "chunk": lambda m, x: m.chunk(x, 2, 1)[1],
    "hsplit": lambda m, x: m.hsplit(x, 2)[1],
    "vsplit": lambda m, x: m.vsplit(x, [1])[1],
    "dsplit": lambda m, x: m.dsplit(x.reshape(3, 2, 2), 2)[0],
    "vstack": lambda m, x: m.vstack([x, x[0]]),
    "hstack": lambda m, x: m.hstack([x, x * 2]),
    "dstack": lambda m, x: m.dstack([x, x]),
    "column_stack": lambda m, x: m.column_stack([x[0], x[:, :4].T]),
    "atleast_3d": lambda m, x: m.atleast_3d(x[0]),
    "broadcast_tensors": lambda m, x: m.broadcast_tensors(x, x[0])[1],
}


@pytest.mark.parametrize("name", list(TORCH))
def test_eager_functions_match_torch(name):
    x = _input(f"torch {name}")
    ours, theirs = tg.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    y, z = TORCH[name](tg, ours), TORCH[name](torch, theirs)
    np.testing.assert_array_equal(y.data, z.detach().numpy())
    u = rng_for(f"torch u {name}").standard_normal(tuple(z.shape))
    y.backward(tg.tensor(u))
    z.backward(torch.tensor(u))
    np.testing.assert_allclose(ours.grad.data, theirs.grad.numpy(), rtol=1e-13, atol=1e-14)


TORCH_ERRORS = {
    "flip-repeated": lambda m, x: m.flip(x, (0, 0)),
    "roll-align": lambda m, x: m.roll(x, (1, 2), 0),
    "rot90-dims": lambda m, x: m.rot90(x, 1, (0, 0)),
    "tril-1d": lambda m, x: m.tril(x[0]),
    "diag-3d": lambda m, x: m.diag(x.reshape(1, 3, 4)),
    "trace-3d": lambda m, x: x.reshape(1, 3, 4).trace(),
    "split-sizes": lambda m, x: m.split(x, [1, 1], 0),
    "hsplit": lambda m, x: m.hsplit(x, 3),
    "movedim": lambda m, x: m.movedim(x, (0, 0), (1, 0)),
    "repeat": lambda m, x: x.repeat(2),
    "take": lambda m, x: m.take(x, m.tensor([12])),
}


@pytest.mark.parametrize("name", list(TORCH_ERRORS))
def test_eager_errors_are_torchs(name):
    x = _input(name)
    with pytest.raises(Exception) as theirs:
        TORCH_ERRORS[name](torch, torch.tensor(x))
    with pytest.raises(Exception) as ours:
        TORCH_ERRORS[name](tg, tg.tensor(x))
    assert str(ours.value) == str(theirs.value)


# ---- np.full and np.full_like with a traced fill value ------------------------------------------
# numpy converts the fill value to a plain array before anything dispatches, so while a function
# transform traces both are wrapped (`eager.numpy_api.building`); each case is compared with the
# same array made by multiplying with ones, a path that never meets np.full.

FILLS = {   # name -> (f(np, x) for x of shape (3,), the fill of f, the filled shape)
    "full-scalar": (lambda x: np.full((2, 3), x[0] * x[1]), lambda x: x[0] * x[1], (2, 3)),
    "full-row": (lambda x: np.full((2, 3), np.sin(x)), np.sin, (2, 3)),
    "full-column": (lambda x: np.full((3, 4), x[:, None]), lambda x: x[:, None], (3, 4)),
    "full-list": (lambda x: np.full((2, 3), [x[0], 1.0, x[2] ** 2]),
                  lambda x: np.array([x[0], 1.0, x[2] ** 2]), (2, 3)),
    "full_like-plain": (lambda x: np.full_like(np.ones((2, 3)), x[1]), lambda x: x[1], (2, 3)),
    "full_like-traced": (lambda x: np.full_like(np.stack([x, x]), x ** 2), lambda x: x ** 2,
                         (2, 3)),
    "full_like-shape": (lambda x: np.full_like(x, x[2], shape=(4, 3)), lambda x: x[2], (4, 3)),
}


def _fill_loss(name, by_ones=False):
    f, fill, shape = FILLS[name]
    u = rng_for(f"fill u {name}").standard_normal(shape)
    made = (lambda x: fill(x) * np.ones(shape)) if by_ones else f
    return lambda x: np.sum(np.sin(made(x)) * u)


@pytest.mark.parametrize("name", list(FILLS))
def test_full_with_a_traced_fill_replays_numpy_s_value(name):
    f = FILLS[name][0]
    tape = tg.trace(f, _input(f"fill {name}", (3,)))
    x = _input(f"fill {name} again", (3,))
    got = tape(x)
    assert got.dtype == f(x).dtype
    np.testing.assert_array_equal(got, f(x))


@pytest.mark.parametrize("name", list(FILLS))
def test_full_with_a_traced_fill_differentiates_as_a_broadcast(name):
    loss, reference = _fill_loss(name), _fill_loss(name, by_ones=True)
    x, t = _input(f"fill {name}", (3,)), _input(f"fill t {name}", (3,))

    def derivatives(f):
        value, grad = tg.value_and_grad(f)(x)
        primal, tangent = tg.jvp(f, (x,), (t,))
        return np.concatenate([np.ravel(a) for a in (value, grad, tg.hessian(f)(x), primal,
                                                     tangent)])

    np.testing.assert_allclose(derivatives(loss), derivatives(reference), rtol=1e-13, atol=1e-14)


def test_full_and_full_like_dispatching_eagerly_pass_gradcheck():
    x = _input("fill eager", (3,))
    assert gradcheck(lambda a: np.full((2, 3), a * a, like=a), [x])
    assert gradcheck(lambda a: np.full_like(a[None] * np.ones((2, 1)), np.sin(a)), [x])
    assert gradcheck(lambda a: np.full_like(a, a[1], shape=(2, 3)), [x])


@pytest.mark.parametrize("name", list(FILLS))
def test_full_with_a_traced_fill_through_vmap(name):
    loss = _fill_loss(name)
    X = np.stack([_input(f"fill vmap {name} {k}", (3,)) for k in range(5)])
    got = tg.vmap(tg.grad(loss), fuse=False)(X)
    for k in range(len(X)):
        np.testing.assert_allclose(got[k], tg.grad(loss)(X[k]), rtol=1e-13, atol=1e-14)


@pytest.mark.parametrize("name", ["full-row", "full_like-plain"])
def test_full_with_a_traced_fill_fuses(name):
    _check_fused(_fill_loss(name),
                 np.stack([_input(f"fill fused {name} {k}", (3,)) for k in range(6)]))


@pytest.mark.parametrize("f", [
    lambda x: np.full(3, x[0], dtype=int) * x,
    lambda x: np.full_like(x, x[0], dtype=bool) * x,
    lambda x: np.full(3, x[0], dtype=int, like=x) * x,
    lambda x: np.astype(x, np.int32) * x,
], ids=["full-int", "full_like-bool", "full-like-int", "astype-int"])
def test_integer_fills_and_casts_replay_from_the_new_inputs(f):
    tape = tg.trace(f, np.array([1.5, -2.7, 0.0]))
    x = np.array([3.2, 0.9, -4.5])
    np.testing.assert_array_equal(tape(x), f(x))
    np.testing.assert_allclose(tg.grad(lambda x: np.sum(f(x)))(x), f(x) / x, rtol=1e-15)


def test_full_outside_a_trace_is_numpy_s():
    full, full_like = np.full, np.full_like
    tg.grad(lambda x: np.full(2, x).sum() + np.full_like(x, x).sum())(1.0)
    assert np.full is full and np.full_like is full_like
    assert type(np.full(2, 1.5)) is np.ndarray and type(np.full_like([1], 2)) is np.ndarray
    with pytest.raises(ValueError, match="could not broadcast input array from shape"):
        tg.grad(lambda x: np.full((2, 2), x).sum())(np.ones(3))


@pytest.mark.parametrize("axis", [0, -1, 1, None])
def test_stack_and_concatenate_along_the_first_axis_record_one_pack(axis):
    """Along the first axis (or flattened) the pieces end to end are the result: one pack
    entry, no gather after it; along another axis a window or gather lays them out. Gradients
    agree with JAX either way."""
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    jnp = jax.numpy

    def f(x, np=np):
        a = np.stack([x[0] * x[1], x[2], np.sin(x[3])]) if axis is None else \
            np.stack([x[:3], x[1:4] ** 2], axis=axis)
        b = np.concatenate([x, x[::-1] * 2.0], axis=axis if axis in (None, 0, -1) else 0)
        return np.sum(a ** 2) + np.sum(b ** 3)

    x = np.array([0.5, -1.0, 2.0, 1.5])
    tape = tg.trace(f, x)
    packs = [int(tape.E[e, 4]) for e, p in enumerate(tape.prims) if p.name == "pack"]
    laid_out = [s for s in packs if any(p.name in ("window", "gather") and tape.E[e, 1] == s
                                        for e, p in enumerate(tape.prims))]
    assert len(packs) == 2       # the 1-D concatenation is first-axis at every axis given
    assert len(laid_out) == (1 if axis in (-1, 1) else 0)
    np.testing.assert_allclose(tg.grad(f)(x), jax.grad(lambda v: f(v, jnp))(x), rtol=1e-13)


def test_stack_and_cat_of_tensors_read_like_pytorch():
    torch = pytest.importorskip("torch")
    a, b = tg.tensor([1.0, 2.0], requires_grad=True), tg.tensor([3.0, 4.0], requires_grad=True)
    ta, tb = torch.tensor([1.0, 2.0], requires_grad=True), torch.tensor([3.0, 4.0], requires_grad=True)
    for ours, theirs in ((tg.stack([a, b]), torch.stack([ta, tb])),
                         (tg.cat([a, b]), torch.cat([ta, tb])),
                         (tg.stack([a, b], dim=1), torch.stack([ta, tb], dim=1))):
        assert ours.grad_fn.name() == theirs.grad_fn.name()
        assert len(ours.grad_fn.next_functions) == len(theirs.grad_fn.next_functions)
        (ours * ours).sum().backward()
        (theirs * theirs).sum().backward()
        np.testing.assert_array_equal(a.grad.numpy(), ta.grad.numpy())
        np.testing.assert_array_equal(b.grad.numpy(), tb.grad.numpy())
