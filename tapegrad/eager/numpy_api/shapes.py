"""numpy's shape functions on tensors: reshaping, transposing, joining, splitting, broadcasting,
flips, rolls, rotations, triangles, diagonals, repeats, pads, takes, and the shape queries.

Reshapes, transposes and the axis moves are views where numpy's are (see `eager.views`). The
functions that move elements are one gather each, whose index map is the numpy function applied
to the operand's positions (see `eager.indexmaps`): exact, with numpy's argument handling and
errors, and their results are new tensors (numpy's `flip` and `diagonal` return views of the
operand; writing into them in place does not write into the operand).
"""
import numpy as np
from numpy.lib.stride_tricks import as_strided

from .. import array, indexmaps, ops
from ..indexmaps import assembled, filled, moved, over, pieces, summed_diagonal
from ..tensor import Tensor, constant
from .registry import implements


@implements(np.transpose)
def transpose(a, axes=None):
    return ops.transpose(a) if axes is None else ops.permute(a, axes)


@implements(np.reshape, notes="order 'F' and 'A' are gathers (copies), as in numpy")
def reshape(a, /, shape=None, order="C", *, newshape=None, copy=None):
    shape = newshape if shape is None else shape
    a = ops.as_tensor(a)
    order = _memory_order(a._data, order)
    if order == "C":
        return ops.reshape(a, shape)
    return moved(a, lambda d: np.reshape(d, shape, order=order), "ViewBackward0")


@implements(np.ravel, notes="order 'F', 'A' and 'K' are gathers (copies)")
def ravel(a, order="C"):
    a = ops.as_tensor(a)
    if order == "K":
        return _ravel_in_memory_order(a)
    order = _memory_order(a._data, order)
    if order == "C":
        return ops.reshape(a, -1)
    return moved(a, lambda d: np.ravel(d, order), "ViewBackward0")


def _memory_order(data, order):
    """numpy's order 'A' resolved for the array `data` ('F' when it is Fortran-contiguous
    only, else 'C'); 'C' and 'F' as given."""
    if order in ("A", "a"):
        return "F" if data.flags.f_contiguous and not data.flags.c_contiguous else "C"
    if order not in ("C", "c", "F", "f") and order is not None:
        raise ValueError(f"order must be one of 'C', 'F', 'A' (got {order!r})")
    return "C" if order is None else order.upper()


def _ravel_in_memory_order(a):
    """ravel(order='K'): the positions laid out in memory as a's values are, read the same way."""
    data = a._data
    value = np.ravel(data, "K").copy()
    if not ops._recording(a):
        return constant(value)
    laid_out = np.empty_like(data, dtype=np.int64)
    laid_out[...] = ops._positions(data.shape)
    return ops.record_gather(a, np.ravel(laid_out, "K"), value, "ViewBackward0")


@implements(np.squeeze)
def squeeze(a, axis=None):
    if axis is None:
        return ops.squeeze(a)
    a = ops.as_tensor(a)
    return ops.reshape(a, np.squeeze(a._data, axis).shape, name="SqueezeBackward1")


@implements(np.expand_dims)
def expand_dims(a, axis):
    return ops.unsqueeze(a, axis)


@implements(np.concatenate)
def concatenate(arrays, axis=0):
    return ops.cat(arrays, axis)


@implements(np.stack)
def stack(arrays, axis=0):
    return ops.stack(arrays, axis)


@implements(np.broadcast_to)
def broadcast_to(array, shape):
    return ops.broadcast_to(ops.as_tensor(array), shape, name="ExpandBackward0")


@implements(np.broadcast_arrays)
def broadcast_arrays(*args, subok=False):
    tensors = [ops.as_tensor(a) for a in args]
    shape = np.broadcast_shapes(*(t._data.shape for t in tensors))
    return tuple(ops.broadcast_to(t, shape, name="ExpandBackward0") for t in tensors)


@implements(np.shape)
def shape(a):
    return a._data.shape


@implements(np.ndim)
def ndim(a):
    return a._data.ndim


@implements(np.size)
def size(a):
    return a._data.size


# ---- axis moves (views) ----------------------------------------------------------------------

def _permutation(fn, ndim):
    """The axis order that numpy's transposing function `fn` gives an array of `ndim` axes
    (with numpy's checks of its arguments): read off a probe whose strides number its axes."""
    probe = as_strided(np.zeros(1), shape=(1,) * ndim, strides=tuple(range(ndim)))
    return fn(probe).strides


def _permuted(a, fn, name="PermuteBackward0"):
    a = ops.as_tensor(a)
    return ops.permute(a, _permutation(fn, a._data.ndim), name=name)


@implements(np.moveaxis)
def moveaxis(a, source, destination):
    return _permuted(a, lambda p: np.moveaxis(p, source, destination))


@implements(np.rollaxis)
def rollaxis(a, axis, start=0):
    return _permuted(a, lambda p: np.rollaxis(p, axis, start))


@implements(np.swapaxes)
def swapaxes(a, axis1, axis2):
    return _permuted(a, lambda p: np.swapaxes(p, axis1, axis2), "TransposeBackward0")


@implements(np.matrix_transpose, np.linalg.matrix_transpose)
def matrix_transpose(x, /):
    return _permuted(x, np.matrix_transpose, "TransposeBackward0")


implements(np.atleast_1d)(indexmaps.atleast_1d)
implements(np.atleast_2d)(indexmaps.atleast_2d)
implements(np.atleast_3d)(indexmaps.atleast_3d)


# ---- flips, rolls, rotations, repeats ----------------------------------------------------------

@implements(np.flip)
def flip(m, axis=None):
    return moved(m, lambda d: np.flip(d, axis), "FlipBackward0")


@implements(np.flipud)
def flipud(m):
    return moved(m, np.flipud, "FlipBackward0")


@implements(np.fliplr)
def fliplr(m):
    return moved(m, np.fliplr, "FlipBackward0")


@implements(np.rot90)
def rot90(m, k=1, axes=(0, 1)):
    return moved(m, lambda d: np.rot90(d, k, axes), "Rot90Backward0")


@implements(np.roll)
def roll(a, shift, axis=None):
    return moved(a, lambda d: np.roll(d, shift, axis), "RollBackward0")


@implements(np.repeat)
def repeat(a, repeats, axis=None):
    counts = repeats._data if isinstance(repeats, Tensor) else repeats
    return moved(a, lambda d: np.repeat(d, counts, axis), "IndexSelectBackward0")


@implements(np.tile)
def tile(A, reps):
    return moved(A, lambda d: np.tile(d, reps), "RepeatBackward0")


# ---- triangles and diagonals -----------------------------------------------------------------

@implements(np.tril)
def tril(m, k=0):
    return filled(m, lambda d: np.tril(d, k), "TrilBackward0")


@implements(np.triu)
def triu(m, k=0):
    return filled(m, lambda d: np.triu(d, k), "TriuBackward0")


@implements(np.diag)
def diag(v, k=0):
    v = ops.as_tensor(v)
    if v._data.ndim == 1:
        return filled(v, lambda d: np.diag(d, k), "DiagEmbedBackward0")
    return moved(v, lambda d: np.diag(d, k), "DiagonalBackward0")


@implements(np.diagflat)
def diagflat(v, k=0):
    return filled(v, lambda d: np.diagflat(d, k), "DiagEmbedBackward0")


@implements(np.diagonal)
def diagonal(a, offset=0, axis1=0, axis2=1):
    return moved(a, lambda d: np.diagonal(d, offset, axis1, axis2), "DiagonalBackward0")


@implements(np.linalg.diagonal)
def linalg_diagonal(x, /, *, offset=0):
    return moved(x, lambda d: np.linalg.diagonal(d, offset=offset), "DiagonalBackward0")


@implements(np.trace)
def trace(a, offset=0, axis1=0, axis2=1, dtype=None, out=None):
    _no_out("trace", out)
    a = ops.as_tensor(a)
    value = np.trace(a._data, offset, axis1, axis2, dtype)
    return summed_diagonal(a, offset, axis1, axis2, value, "TraceBackward0")


@implements(np.linalg.trace)
def linalg_trace(x, /, *, offset=0, dtype=None):
    x = ops.as_tensor(x)
    value = np.linalg.trace(x._data, offset=offset, dtype=dtype)
    return summed_diagonal(x, offset, -2, -1, value, "TraceBackward0")


def _no_out(name, out):
    if out is not None:
        raise TypeError(f"numpy.{name} on Tensors does not write into out=; use its result")


# ---- selections ------------------------------------------------------------------------------

def _static(index):
    """An index argument as a numpy array (a tensor's integer value)."""
    return index._data if isinstance(index, Tensor) else index


@implements(np.take)
def take(a, indices, axis=None, out=None, mode="raise"):
    _no_out("take", out)
    index = _static(indices)
    return moved(a, lambda d: np.take(d, index, axis, mode=mode), "TakeBackward0")


@implements(np.take_along_axis)
def take_along_axis(arr, indices, axis=-1):
    index = _static(indices)
    return moved(arr, lambda d: np.take_along_axis(d, index, axis), "GatherBackward0")


@implements(np.select, notes="conditions computed from traced values select with `where` "
                             "entries (not fused); constant ones are one gather")
def select(condlist, choicelist, default=0):
    conditions = [ops.as_tensor(c) for c in condlist]
    choices = [ops.as_tensor(c) for c in choicelist]
    default = ops.as_tensor(default)
    value = np.select([c._data for c in conditions], [c._data for c in choices],
                      default._data)
    if any(c._node is not None for c in conditions):
        out = default
        for condition, choice in zip(conditions[::-1], choices[::-1]):
            out = ops.where(condition, choice, out)
        return out
    static = [c._data for c in conditions]
    return assembled([default] + choices, lambda p: np.select(static, p[1:], p[0]),
                     "WhereBackward0")


# ---- splits and joins ------------------------------------------------------------------------

def _splitting(npfn):
    def splitting(ary, indices_or_sections, *args, **kwargs):
        return pieces(ary, lambda d: npfn(d, indices_or_sections, *args, **kwargs),
                      "SplitBackward0")
    splitting.__name__ = splitting.__qualname__ = npfn.__name__
    return splitting


for _split in (np.split, np.array_split, np.hsplit, np.vsplit, np.dsplit):
    implements(_split)(_splitting(_split))


@implements(np.unstack)
def unstack(x, /, *, axis=0):
    return tuple(pieces(x, lambda d: np.unstack(d, axis=axis), "UnbindBackward0"))


def _joining(npfn):
    def joining(tup, *, dtype=None, casting="same_kind"):
        tensors = [ops.as_tensor(t) for t in tup]
        value = npfn([t._data for t in tensors], dtype=dtype, casting=casting)
        return assembled(tensors, npfn, "CatBackward0", value)
    joining.__name__ = joining.__qualname__ = npfn.__name__
    return joining


implements(np.vstack)(_joining(np.vstack))
implements(np.hstack)(_joining(np.hstack))


@implements(np.dstack)
def dstack(tup):
    return assembled(list(tup), np.dstack, "CatBackward0")


@implements(np.column_stack)
def column_stack(tup):
    return assembled(list(tup), np.column_stack, "CatBackward0")


@implements(np.append)
def append(arr, values, axis=None):
    return assembled([arr, values], lambda p: np.append(p[0], p[1], axis), "CatBackward0")


# ---- pad -------------------------------------------------------------------------------------

_PAD_MODES = ("constant", "edge", "reflect", "symmetric", "wrap")
_PAD_NAMES = dict(edge="ReplicationPadBackward0", reflect="ReflectionPadBackward0",
                  symmetric="ReflectionPadBackward0", wrap="CircularPadBackward0")


@implements(np.pad, notes="modes 'constant' (constant values may be traced), 'edge', 'reflect' "
                          "and 'symmetric' (reflect_type 'even'), 'wrap'")
def pad(array, pad_width, mode="constant", **kwargs):
    x = ops.as_tensor(array)
    if mode not in _PAD_MODES or kwargs.get("reflect_type", "even") != "even":
        what = f"mode {mode!r}" if mode not in _PAD_MODES else "reflect_type 'odd'"
        raise NotImplementedError(f"numpy.pad with {what} on Tensors: tapegrad pads with the "
                                  f"modes {', '.join(map(repr, _PAD_MODES))} (reflect_type "
                                  "'even')")
    if mode != "constant":
        return moved(x, lambda d: np.pad(d, pad_width, mode, **kwargs), _PAD_NAMES[mode])
    fill = ops.as_tensor(kwargs.pop("constant_values", 0))
    value = np.pad(x._data, pad_width, "constant", constant_values=fill._data, **kwargs)
    if not ops._recording(x, fill):
        return constant(value)
    # the fill's flat positions spread to numpy's (before, after) pairs per axis, then padded in
    # as constants: each padded element reads its constant from the fill, placed first
    pairs = _as_pairs(np.arange(fill._data.size).reshape(fill._data.shape), x._data.ndim)
    positions = np.pad(ops._positions(x._data.shape) + fill._data.size, pad_width, "constant",
                       constant_values=pairs)
    return over([fill, x], positions, value, "ConstantPadNdBackward0")


def _as_pairs(values, ndim):
    """numpy.pad's reading of constant_values: one (before, after) pair per axis."""
    if values.size == 1:
        return np.broadcast_to(values.ravel()[0], (ndim, 2))
    if values.size == 2 and values.shape != (2, 1):
        return np.broadcast_to(values.ravel(), (ndim, 2))
    return np.broadcast_to(values, (ndim, 2))


# ---- filled and spaced arrays ------------------------------------------------------------------

@implements(np.full, notes="a traced fill value (scalar or broadcastable) is broadcast: numpy "
                           "converts it before anything dispatches, so a trace wraps np.full; "
                           "eager tensors dispatch with `like=` a tensor")
def full(shape, fill_value, dtype=None, order="C", *, device=None, like=None):
    fill = ops.as_tensor(fill_value)
    return _filled(fill, np.full(shape, fill._data, dtype, order), like)


@implements(np.full_like, notes="a constant, or the traced fill value broadcast (whatever the "
                                "prototype: a trace wraps np.full_like)")
def full_like(a, fill_value, dtype=None, order="K", subok=True, shape=None, *, device=None):
    fill = ops.as_tensor(fill_value)
    prototype = ops.as_tensor(a)
    value = np.full_like(prototype._data, fill._data, dtype, order, subok, shape)
    return _filled(fill, value, prototype)


def _filled(fill, value, like):
    """numpy's `value` of np.full / np.full_like as a traced value: `fill` broadcast (its
    gradient the sum of the seed over the filled positions) and cast to `value`'s dtype as
    `x.astype` casts (an integer or bool result is recorded too, so that a replay fills with
    its own value), or a constant of `like`'s flavour (`fill`'s when `like` is not a tensor)
    when `fill` is not recorded."""
    if not ops._recording(fill):
        return array.constant_like(like if isinstance(like, Tensor) else fill, value)
    out = ops.broadcast_to(fill, value.shape, name="ExpandBackward0")
    return array.astype(out, value.dtype, copy=out is fill)


@implements(np.astype, notes="to an integer or bool dtype recorded without derivative, so that "
                             "a replay casts its own values")
def astype(x, dtype, /, *, copy=True, device=None):
    return array.astype(ops.as_tensor(x), dtype, copy)


@implements(np.linspace, notes="traced start and stop; replay follows numpy's formula "
                               "start + i * ((stop - start) / div), except numpy's branch for "
                               "a step that underflows to zero")
def linspace(start, stop, num=50, endpoint=True, retstep=False, dtype=None, axis=0, *,
             device=None):
    start, stop = ops.as_tensor(start), ops.as_tensor(stop)
    value = np.linspace(start._data, stop._data, num, endpoint, retstep, dtype, axis)
    result, step = value if retstep else (value, None)
    if not ops._recording(start, stop) or result.dtype.kind != "f":
        return constant(result) if not retstep else (constant(result), step)
    div = num - 1 if endpoint else num
    dt = np.result_type(start._data, stop._data, 1.0)
    delta = ops.sub(stop, start)
    rest = delta._data.shape
    rows = num - 1 if endpoint and num > 1 else num
    counts = constant(np.arange(0, rows, dtype=dt).reshape((-1,) + (1,) * len(rest)))
    if div > 0:
        step_t = ops.div(delta, float(div))
        y = ops.add(ops.mul(counts, step_t), start)
    else:
        step_t = None
        y = ops.add(ops.mul(counts, delta), start)
    if rows != num:
        y = ops.cat([y, ops.unsqueeze(ops.broadcast_to(stop, rest), 0)], 0)
    if axis != 0:
        y = indexmaps.movedim(y, 0, axis)
    out = ops.astype(y, result.dtype)
    return (out, step if step_t is None else step_t) if retstep else out
