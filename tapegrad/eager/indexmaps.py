"""Operations that move elements: flips, rolls, rotations, triangles, diagonals, repeats, tiles,
pads, takes, splits and stacks, PyTorch-style (`tapegrad.flip`, `tapegrad.tril`...), and the
helpers that numpy's functions of the same family (`eager.numpy_api.shapes`) record with.

Each of them is an index map: every output element is one element of the operand (or of the
flat concatenation of several operands, or a constant such as the zeros of `tril`). numpy
computes the value, and the index map is the same numpy function applied to the operand's flat
positions (`np.flip(positions)` for `flip`), so the entry is exact and follows numpy's rules
(negative axes, broadcasting, numpy's own errors) by construction:

* `moved` records one gather of one operand (a window where the positions are an arithmetic
  progression: `eager.views.gather_entry`);
* `filled` records a gather over the operand packed after constants (the zeros of `tril`,
  `triu`, `diag` of a vector): one pack and one gather entry;
* `assembled` records a gather over the flat concatenation of several operands (`vstack`,
  `column_stack`, `append`): one pack and one gather entry.

The VJP of a gather scatters with accumulation, so repeated positions (`repeat`, `tile`,
`broadcast`) add up. Results are new tensors, not views (as PyTorch's `flip`, `roll`, `tril`
are), except where PyTorch returns views and the view is a basic index, reshape or permutation
(`movedim`, `swapaxes`, `split`, `atleast_2d`...), which go through the view-making ops.
"""
import builtins
import math

import numpy as np

from . import ops
from .ops import _HIDDEN, _positions, _recording, as_tensor, record_gather
from .tensor import Tensor, constant, record
from ..core.registry import BY_NAME

P = BY_NAME


# ---- recording helpers -----------------------------------------------------------------------

def fresh(value, data):
    """`value` as an array of its own: numpy's view of `data` (flip, diagonal) copied, so that
    the result does not share the operand's memory without being a recorded view."""
    value = np.asarray(value)
    return value.copy() if np.may_share_memory(value, data) else value


def moved(x, fn, name):
    """fn(x) for a numpy function `fn` that only moves elements, recorded as one gather whose
    index map is fn of x's flat positions."""
    x = as_tensor(x)
    value = fresh(fn(x._data), x._data)
    if not _recording(x):
        return constant(value)
    return record_gather(x, fn(_positions(x._data.shape)), value, name)


def filled(x, fn, name):
    """fn(x) for a numpy function `fn` that moves elements and writes zeros elsewhere (`tril`,
    `diag` of a vector): a gather over (0, x.flat...), whose index map is fn of x's positions
    counted from 1, so that the zeros fn writes read the constant."""
    x = as_tensor(x)
    value = fresh(fn(x._data), x._data)
    if not _recording(x):
        return constant(value)
    zero = constant(np.zeros(1, x._data.dtype))
    return over([zero, x], fn(_positions(x._data.shape) + 1), value, name)


def over(tensors, positions, value, name):
    """`value` recorded as the gather `positions` of the flat concatenation of `tensors`."""
    return ops._pack_gather(tensors, positions, value, name)


def assembled(operands, fn, name, value=None):
    """fn(list of arrays) for a numpy function that joins arrays (`vstack`, `append`): one
    gather over the flat concatenation of the operands, its index map fn of their positions.
    `value`: fn's value when the caller computed it (with options the positions do not take)."""
    tensors = [as_tensor(a) for a in operands]
    if value is None:
        value = fn([t._data for t in tensors])
    if not _recording(*tensors):
        return constant(np.asarray(value))
    return over(tensors, fn(list(ops._piece_positions(tensors))), value, name)


def pieces(x, fn, name):
    """fn(x) for a numpy function that splits an array into a list of pieces (`split`): one
    gather (or window) per piece."""
    x = as_tensor(x)
    values = fn(x._data)
    if not _recording(x):
        return [constant(fresh(v, x._data)) for v in values]
    maps = fn(_positions(x._data.shape))
    return [record_gather(x, p, fresh(v, x._data), name) for v, p in zip(values, maps)]


def summed_diagonal(x, offset, axis1, axis2, value, name):
    """numpy's trace: the diagonal (one gather), summed along its last axis (one `total`, or a
    `segsum` when other axes remain), recorded with `value`, numpy's own sum."""
    x = as_tensor(x)
    value = np.asarray(value)
    if not _recording(x):
        return constant(value)
    d = moved(x, lambda a: np.diagonal(a, offset, axis1, axis2), _HIDDEN)
    if d._data.ndim == 1:
        return record(P["total"], (d,), value, c0=1.0, name=name)
    return ops._reduce(P["segsum"], d, (d._data.ndim - 1,), False, value, 1.0, (name, name))


def _dim(d, ndim):
    """A dimension index checked and made non-negative, with PyTorch's error."""
    n = builtins.max(ndim, 1)
    if not isinstance(d, (int, np.integer)) or isinstance(d, bool):
        raise TypeError(f"dimension must be an integer, got {type(d).__name__}")
    if not -n <= d < n:
        raise IndexError(f"Dimension out of range (expected to be in range of [{-n}, {n - 1}], "
                         f"but got {d})")
    return int(d) % n


def _dims(dims, ndim):
    return [_dim(d, ndim) for d in ((dims,) if isinstance(dims, (int, np.integer)) else dims)]


def _ints(values):
    """An int, a sequence of ints or an integer tensor as a tuple of Python ints."""
    if isinstance(values, Tensor):
        values = values._data
    return tuple(int(v) for v in np.atleast_1d(values).ravel())


# ---- flips, rolls, rotations -----------------------------------------------------------------

def flip(input, dims):
    """Reverse the order of the elements along `dims` (PyTorch's flip; a copy, not a view)."""
    x = as_tensor(input)
    axes = _dims(dims, x._data.ndim)
    for d in axes:
        if axes.count(d) > 1:
            raise RuntimeError(f"dim {d} appears multiple times in the list of dims")
    if x._data.ndim == 0:
        return moved(x, np.copy, "FlipBackward0")
    return moved(x, lambda a: np.flip(a, tuple(axes)), "FlipBackward0")


def fliplr(input):
    x = as_tensor(input)
    if x._data.ndim < 2:
        raise RuntimeError("Input must be >= 2-d.")
    return moved(x, np.fliplr, "FlipBackward0")


def flipud(input):
    x = as_tensor(input)
    if x._data.ndim < 1:
        raise RuntimeError("Input must be >= 1-d.")
    return moved(x, np.flipud, "FlipBackward0")


def roll(input, shifts, dims=None):
    """Shift the elements along `dims` cyclically; without dims, of the flattened tensor."""
    x = as_tensor(input)
    if dims is None:
        return moved(x, lambda a: np.roll(a, _ints(shifts)[0]), "RollBackward0")
    shifts, axes = _ints(shifts), _dims(dims, x._data.ndim)
    if len(shifts) != len(axes):
        raise RuntimeError(f"shifts and dimensions must align. shifts: {len(shifts)}, "
                           f"dims:{len(axes)}")
    return moved(x, lambda a: np.roll(a, shifts, tuple(axes)), "RollBackward0")


def rot90(input, k=1, dims=(0, 1)):
    """Rotate by 90 degrees k times in the plane of `dims`, from the first towards the second."""
    x = as_tensor(input)
    dims = list(dims)
    if len(dims) != 2:
        raise RuntimeError(f"expected total rotation dims == 2, but got dims = {len(dims)}")
    if x._data.ndim < 2:
        raise RuntimeError(f"expected total dims >= 2, but got total dims = {x._data.ndim}")
    d0, d1 = _dims(dims, x._data.ndim)
    if d0 == d1:
        raise RuntimeError(f"expected rotation dims to be different, but got dim0 = {dims[0]} "
                           f"and dim1 = {dims[1]}")
    return moved(x, lambda a: np.rot90(a, k, (d0, d1)), "Rot90Backward0")


# ---- triangles and diagonals -----------------------------------------------------------------

def _triangle(which, name):
    npfn = getattr(np, which)

    def triangle(input, diagonal=0):
        x = as_tensor(input)
        if x._data.ndim < 2:
            raise RuntimeError(f"{which}: input tensor must have at least 2 dimensions")
        return filled(x, lambda a: npfn(a, diagonal), name)
    triangle.__name__ = triangle.__qualname__ = which
    triangle.__doc__ = (f"The {'lower' if which == 'tril' else 'upper'} triangle of the last "
                        "two dimensions from `diagonal` on, zeros elsewhere (PyTorch's "
                        f"{which}).")
    return triangle


tril = _triangle("tril", "TrilBackward0")
triu = _triangle("triu", "TriuBackward0")


def diag(input, diagonal=0):
    """A vector's diagonal matrix, or a matrix's diagonal (PyTorch's diag)."""
    x = as_tensor(input)
    ndim = x._data.ndim
    if ndim == 1:
        return filled(x, lambda a: np.diag(a, diagonal), "DiagEmbedBackward0")
    if ndim == 2:
        return moved(x, lambda a: np.diag(a, diagonal), "DiagonalBackward0_copy")
    raise RuntimeError(f"diag(): Supports 1D or 2D tensors. Got {ndim}D")


def diagflat(input, offset=0):
    """The diagonal matrix of the flattened input."""
    return filled(as_tensor(input), lambda a: np.diagflat(a, offset), "DiagEmbedBackward0")


def diagonal(input, offset=0, dim1=0, dim2=1):
    """The diagonal of the (dim1, dim2) planes, as the last dimension (a copy, not a view)."""
    x = as_tensor(input)
    d1, d2 = _dim(dim1, x._data.ndim), _dim(dim2, x._data.ndim)
    if d1 == d2:
        raise RuntimeError(f"diagonal dimensions cannot be identical {dim1}, {dim2}")
    return moved(x, lambda a: np.diagonal(a, offset, d1, d2), "DiagonalBackward0")


def trace(input):
    """The sum of a matrix's diagonal."""
    x = as_tensor(input)
    if x._data.ndim != 2:
        raise RuntimeError(f"trace: expected a matrix, but got tensor with dim {x._data.ndim}")
    return summed_diagonal(x, 0, 0, 1, np.trace(x._data), "TraceBackward0")


# ---- moving dimensions (views) ---------------------------------------------------------------

def movedim(input, source, destination):
    """The dimensions `source` moved to `destination`, the others in their order (a view)."""
    x = as_tensor(input)
    ndim = x._data.ndim
    src, dst = _dims(source, ndim), _dims(destination, ndim)
    if len(src) != len(dst):
        raise RuntimeError(f"movedim: Invalid source or destination dims: source ({list(src)} "
                           f"dims) should contain the same number of dims as destination "
                           f"({list(dst)} dims)")
    for what, dims, given in (("source", src, source), ("destination", dst, destination)):
        if len(set(dims)) != len(dims):
            raise RuntimeError(f"movedim: repeated dim in `{what}` "
                               f"({[int(d) for d in np.atleast_1d(given)]})")
    order = [d for d in range(ndim) if d not in src]
    for d, s in sorted(zip(dst, src)):
        order.insert(d, s)
    return ops.permute(x, order)


moveaxis = movedim


def swapaxes(input, axis0, axis1):
    """Dimensions axis0 and axis1 exchanged (a view)."""
    x = as_tensor(input)
    return ops.transpose(x, _dim(axis0, x._data.ndim), _dim(axis1, x._data.ndim))


swapdims = swapaxes


# ---- repeats and tiles -----------------------------------------------------------------------

def repeat_interleave(input, repeats, dim=None, *, output_size=None):
    """Each element repeated `repeats` times along `dim` (of the flattened tensor without)."""
    x = as_tensor(input)
    counts = repeats._data if isinstance(repeats, Tensor) else repeats
    name = "IndexSelectBackward0" if np.ndim(counts) else "ViewBackward0"
    axis = None if dim is None else _dim(dim, x._data.ndim)
    return moved(x, lambda a: np.repeat(a, counts, axis), name)


def tile(input, dims):
    """The tensor repeated `dims` times along each dimension (numpy's tile)."""
    reps = _ints(dims)
    return moved(as_tensor(input), lambda a: np.tile(a, reps), "RepeatBackward0")


def repeat(input, *sizes):
    """`Tensor.repeat`: `tile` with at least as many sizes as the tensor has dimensions."""
    x = as_tensor(input)
    sizes = _ints(sizes[0] if len(sizes) == 1 and not isinstance(sizes[0], int) else sizes)
    if len(sizes) < x._data.ndim:
        raise RuntimeError("Number of dimensions of repeat dims can not be smaller than number "
                           "of dimensions of tensor")
    return moved(x, lambda a: np.tile(a, sizes), "RepeatBackward0")


# ---- selections ------------------------------------------------------------------------------

def take(input, index):
    """The elements at flat `index` (negative ones count from the end), in index's shape."""
    x = as_tensor(input)
    index = np.asarray(index._data if isinstance(index, Tensor) else index)
    n = x._data.size
    bad = index[(index >= n) | (index < -n)]
    if bad.size:
        raise IndexError(f"out of range: tried to access index {int(bad.flat[0])} on a tensor "
                         f"of {n} elements.")
    return moved(x, lambda a: np.take(a, index), "TakeBackward0")


def take_along_dim(input, indices, dim=None):
    """The elements at `indices` along `dim` (numpy's take_along_axis; broadcasting)."""
    x = as_tensor(input)
    idx = np.asarray(indices._data if isinstance(indices, Tensor) else indices)
    if dim is None:
        return moved(x, lambda a: np.take_along_axis(a.ravel(), idx.ravel(), 0),
                     "GatherBackward0")
    d = _dim(dim, x._data.ndim)
    shape = np.broadcast_shapes(x._data.shape[:d] + (1,) + x._data.shape[d + 1:],
                                idx.shape[:d] + (1,) + idx.shape[d + 1:])
    idx = np.broadcast_to(idx, shape[:d] + idx.shape[d:d + 1] + shape[d + 1:])

    def along(a):
        a = np.broadcast_to(a, shape[:d] + a.shape[d:d + 1] + shape[d + 1:])
        return np.take_along_axis(a, idx, d)
    return moved(x, along, "GatherBackward0")


def gather(input, dim, index):
    """out[i][j] = input[index[i][j]][j] for dim 0 (PyTorch's gather): index has the input's
    number of dimensions and no larger a size along the others."""
    x = as_tensor(input)
    idx = np.asarray(index._data if isinstance(index, Tensor) else index)
    d = _dim(dim, x._data.ndim)
    if idx.ndim != x._data.ndim and not (idx.ndim <= 1 and x._data.ndim <= 1):
        raise RuntimeError("Index tensor must have the same number of dimensions as input "
                           "tensor")
    grid = list(np.indices(idx.shape, sparse=True))
    grid[d] = idx
    key = tuple(grid)
    return moved(x, lambda a: a[key], "GatherBackward0")


def broadcast_tensors(*tensors):
    """The tensors broadcast to their common shape (each a tensor of that shape)."""
    tensors = [as_tensor(t) for t in tensors]
    shape = np.broadcast_shapes(*(t._data.shape for t in tensors))
    return tuple(ops.broadcast_to(t, shape, name="ExpandBackward0") for t in tensors)


# ---- splits ----------------------------------------------------------------------------------

def _slices(x, dim, bounds, name):
    """Views of x between consecutive `bounds` along `dim`, their grad_fn named `name`."""
    out = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        piece = ops.getitem(x, (slice(None),) * dim + (slice(lo, hi),))
        if name and piece._node is not None:
            piece._node._name = name
        out.append(piece)
    return tuple(out)


def split(tensor, split_size_or_sections, dim=0):
    """Pieces of `split_size_or_sections` elements along `dim` (the last one smaller), or of
    the listed sizes, which must add up to the dimension (views)."""
    x = as_tensor(tensor)
    d = _dim(dim, x._data.ndim)
    n = x._data.shape[d]
    if isinstance(split_size_or_sections, (int, np.integer)):
        size = int(split_size_or_sections)
        if size == 0 and n:
            raise RuntimeError(f"split_size can only be 0 if dimension size is 0, but got "
                               f"dimension size of {n}")
        bounds = list(range(0, n, size)) + [n] if size > 0 and n else [0, n]
        return _slices(x, d, bounds, "SplitBackward0")
    sizes = list(_ints(split_size_or_sections))
    if builtins.sum(sizes) != n:
        raise RuntimeError(f"split_with_sizes expects split_sizes to sum exactly to {n} (input "
                           f"tensor's size at dimension {d}), but got split_sizes={sizes}")
    return _slices(x, d, [0] + list(np.cumsum(sizes)), "SplitWithSizesBackward0")


def tensor_split(input, indices_or_sections, dim=0):
    """numpy's array_split: `sections` pieces as even as can be, or pieces cut at `indices`
    (views)."""
    x = as_tensor(input)
    d = _dim(dim, x._data.ndim)
    n = x._data.shape[d]
    if isinstance(indices_or_sections, (int, np.integer)):
        sections = int(indices_or_sections)
        if sections <= 0:
            raise RuntimeError(f"number of sections must be larger than 0, got {sections}")
        each, extra = divmod(n, sections)
        bounds = [0] + list(np.cumsum([each + 1] * extra + [each] * (sections - extra)))
    else:
        bounds = [0] + list(_ints(indices_or_sections)) + [n]     # sliced as Python slices
    return _slices(x, d, [int(b) for b in bounds], None)


def chunk(input, chunks, dim=0):
    """At most `chunks` pieces of ceil(size / chunks) elements along `dim` (views)."""
    if chunks <= 0:
        raise RuntimeError(f"chunk expects `chunks` to be greater than 0, got: {chunks}")
    x = as_tensor(input)
    n = x._data.shape[_dim(dim, x._data.ndim)]
    return split(x, builtins.max(math.ceil(n / chunks), 1), dim)


def _directional_split(name, dim, least):
    def directional(input, indices_or_sections):
        x = as_tensor(input)
        ndim = x._data.ndim
        if ndim < least:
            raise RuntimeError(f"torch.{name} requires a tensor with at least {least} "
                               f"dimension, but got a tensor with {ndim} dimensions!")
        d = 0 if name == "hsplit" and ndim == 1 else dim
        if isinstance(indices_or_sections, (int, np.integer)):
            n = x._data.shape[d]
            if indices_or_sections == 0 or n % indices_or_sections:
                raise RuntimeError(f"torch.{name} attempted to split along dimension {d}, but "
                                   f"the size of the dimension {n} is not divisible by the "
                                   f"split_size {indices_or_sections}!")
        return tensor_split(x, indices_or_sections, d)
    directional.__name__ = directional.__qualname__ = name
    directional.__doc__ = f"tensor_split along dimension {dim}, into equal pieces for a number."
    return directional


hsplit = _directional_split("hsplit", 1, 1)
vsplit = _directional_split("vsplit", 0, 2)
dsplit = _directional_split("dsplit", 2, 3)


# ---- stacks ----------------------------------------------------------------------------------

def _stacking(npfn, name):
    def stacking(tensors):
        return assembled(list(tensors), npfn, "CatBackward0")
    stacking.__name__ = stacking.__qualname__ = name
    stacking.__doc__ = f"numpy's {npfn.__name__} of tensors: one gather over their concatenation."
    return stacking


vstack = _stacking(np.vstack, "vstack")
row_stack = vstack
hstack = _stacking(np.hstack, "hstack")
dstack = _stacking(np.dstack, "dstack")
column_stack = _stacking(np.column_stack, "column_stack")


def _at_least(ndim, npfn):
    def at_least(*tensors):
        if len(tensors) == 1 and isinstance(tensors[0], (list, tuple)):
            tensors = tuple(tensors[0])
        out = []
        for t in tensors:
            t = as_tensor(t)
            if t._data.ndim >= ndim:
                out.append(t)
            else:
                name = "ViewBackward0" if t._data.ndim == 0 else "UnsqueezeBackward0"
                out.append(ops.reshape(t, npfn(t._data).shape, name=name))
        return out[0] if len(out) == 1 else tuple(out)
    at_least.__name__ = at_least.__qualname__ = f"atleast_{ndim}d"
    at_least.__doc__ = (f"Each tensor with at least {ndim} dimensions (numpy's placement of the "
                        "new ones); a tensor that has them is returned as it is.")
    return at_least


atleast_1d = _at_least(1, np.atleast_1d)
atleast_2d = _at_least(2, np.atleast_2d)
atleast_3d = _at_least(3, np.atleast_3d)


_METHODS = dict(
    flip=lambda x, *dims: flip(x, dims[0] if len(dims) == 1 else dims),
    fliplr=fliplr, flipud=flipud, roll=roll, rot90=rot90, tril=tril, triu=triu, diag=diag,
    diagflat=diagflat, diagonal=diagonal, trace=trace, movedim=movedim, moveaxis=moveaxis,
    swapaxes=swapaxes, swapdims=swapdims, repeat_interleave=repeat_interleave, tile=tile,
    repeat=repeat, take=take, take_along_dim=take_along_dim,
    gather=gather, split=split, tensor_split=tensor_split, chunk=chunk, hsplit=hsplit,
    vsplit=vsplit, dsplit=dsplit,
)
for _name, _fn in _METHODS.items():
    setattr(Tensor, _name, _fn)
