"""The public operations: numpy computes the value, `record` appends the tape entry.

Each function lowers a PyTorch/numpy-style operation to registry primitives: it computes the
eager value with numpy and records the primitive with the payload the interpreters need (index
maps for broadcasts, reductions and indexing; matmul dimensions). Broadcasting that the
elementwise kernels cannot do inline (they broadcast operands of size 1) is recorded as a hidden
gather entry, which `grad_fn.next_functions` looks through.

The operators and methods of `Tensor` (`x + y`, `x @ w`, `x.sum()`, `x.T`) are these functions,
attached to the class at the end of this module. numpy's functions on tensors (`np.sin(x)`)
dispatch to them through `eager.numpy_api`.
"""
import builtins
import collections
import math

import numpy as np

from . import graph, views
from .dtypes import torch_type
from .graph import rebound_tensors, state
from ..core.registry import BY_NAME
from .tensor import Tensor, constant, record

P = BY_NAME
_HIDDEN = ""   # the name of helper entries that users do not see


def _tracked(t):
    return t._requires_grad or t._node is not None


def _recording(*tensors):
    if state.grad_enabled:
        if rebound_tensors:      # an operand may be a view whose base got a new grad_fn
            views.refresh_all(tensors)
        for t in tensors:
            if t._requires_grad or t._node is not None:
                return True
    return False


def as_tensor(x):
    """An operand as a Tensor; numbers and arrays become constants."""
    return x if isinstance(x, Tensor) else Tensor(np.asarray(x))


def _is_number(x):
    return isinstance(x, (int, float, bool, np.number, np.bool_)) and not isinstance(x, Tensor)


def _positions(shape):
    """Flat index of every element, in `shape`: the index maps are built by numpy on this."""
    return np.arange(math.prod(shape), dtype=np.int64).reshape(shape)


def record_gather(t, positions, value, name):
    """Record y = t.flat[positions] (a window or a gather: `views.gather_entry`)."""
    prim, payload = views.gather_entry(positions)
    return record(prim, (t,), value, payload, name=name)


def broadcast_to(t, shape, name=_HIDDEN):
    shape = tuple(shape)
    if t._data.shape == shape:
        return t
    value = np.broadcast_to(t._data, shape)
    if not _recording(t):
        return Tensor(value)
    return record_gather(t, np.broadcast_to(_positions(t._data.shape), shape), value, name)


# ---- elementwise -----------------------------------------------------------------------------

def _unary(prim, x, c0=0.0, c1=0.0, name=None):
    if x.__class__ is not Tensor:
        x = as_tensor(x)
    return record(prim, (x,), prim.numpy(x._data, c0, c1), None, c0, c1, name)


def _weak(v):
    """A Python number stays a number for numpy (weak, as in PyTorch); anything else an array."""
    return _scalar(v) if _is_number(v) else as_tensor(v)._data


def _operand(v, dtype):
    """The Tensor of an operand; a number becomes a constant of the result's dtype."""
    return Tensor(np.asarray(_scalar(v), dtype)) if _is_number(v) else as_tensor(v)


def _binary(prim, a, b, name=None):
    if isinstance(a, Tensor) and isinstance(b, Tensor):     # the common case, kept short
        value = prim.numpy(a._data, b._data)
        if a._data.shape != b._data.shape and _recording(a, b):
            shape = np.shape(value)
            if a._data.size != 1:
                a = broadcast_to(a, shape)
            if b._data.size != 1:
                b = broadcast_to(b, shape)
        return record(prim, (a, b), value, name=name)
    # maximum(float32 tensor, 0.3) stays float32: numbers do not promote.
    wa, wb = _weak(a), _weak(b)
    value = np.asarray(prim.numpy(wa, wb))
    dtype = np.result_type(wa, wb)     # of the operands: comparisons give bool values
    a, b = _operand(a, dtype), _operand(b, dtype)
    if _recording(a, b):
        shape = value.shape
        if a._data.size != 1:
            a = broadcast_to(a, shape)
        if b._data.size != 1:
            b = broadcast_to(b, shape)
    return record(prim, (a, b), value, name=name)


def _scalar(x):
    return x.item() if isinstance(x, np.generic) else x


_PY_NUMBERS = frozenset((int, float))


def _commutative(name):
    """`a op b` for a commutative op (add, mul), and the reflected form that Python calls for
    `2 op x`: a number on either side is the constant of a `<name>_const` entry. `x + 2`,
    `2 * x` and `x * y` are tested first, by exact class (the eager loop's commonest cases);
    bools, numpy scalars and Tensor subclasses take the general tests after them."""
    binary, constant = P[name], P[name + "_const"]

    def op(a, b):
        if a.__class__ is Tensor:
            if b.__class__ is Tensor:
                return _binary(binary, a, b)
            if b.__class__ in _PY_NUMBERS:
                return _unary(constant, a, b)
        elif b.__class__ is Tensor and a.__class__ in _PY_NUMBERS:
            return _unary(constant, b, a)
        if _is_number(b) and isinstance(a, Tensor):
            return _unary(constant, a, _scalar(b))
        if _is_number(a) and isinstance(b, Tensor):
            return _unary(constant, b, _scalar(a))
        return _binary(binary, a, b)

    def reflected(x, other):
        """`other op x`, which Python calls as x.__radd__(other) / x.__rmul__(other)."""
        if other.__class__ in _PY_NUMBERS:
            return _unary(constant, x, other)
        return op(other, x)

    op.__name__ = op.__qualname__ = name
    op.__doc__ = f"Elementwise {name}, with broadcasting and Python numbers on either side."
    return op, reflected


add, _radd = _commutative("add")
mul, _rmul = _commutative("mul")


def sub(a, b):
    if a.__class__ is Tensor and b.__class__ is Tensor and (a._node is None or b._node is None):
        return _binary(P["sub"], a, b)          # not two gathers (_gather_difference)
    if _is_number(b) and isinstance(a, Tensor):
        b = _scalar(b)
        return record(P["add_const"], (a,), a._data - b, c0=-b, name="SubBackward0")
    if _is_number(a) and isinstance(b, Tensor):
        return _unary(P["rsub_const"], b, _scalar(a))
    fused = _gather_difference(a, b)
    return _binary(P["sub"], a, b) if fused is None else fused


def _gather_difference(a, b):
    """x[I] - x[J] as one `gather_diff` entry when both operands are index-map gathers of one
    tensor (pair differences: one pass over the pairs instead of three, each way). The gathers'
    nodes stay for any other use of x[I] and x[J], and drop out of a tape that does not reach
    them. Not after in-place writes (the operand tensor might stand for another version)."""
    na, nb = getattr(a, "_node", None), getattr(b, "_node", None)
    if na is None or nb is None or na.prim is not P["gather"] or nb.prim is not P["gather"] \
            or a._data.shape != b._data.shape or graph.written_bases or graph.rebound_tensors:
        return None
    (x,), (y,) = na.inputs, nb.inputs
    if x is not y:
        return None
    return record(P["gather_diff"], (x,), np.subtract(a._data, b._data),
                  np.concatenate([na.payload, nb.payload]), name="SubBackward0")


def div(a, b):
    if b.__class__ in _PY_NUMBERS and a.__class__ is Tensor:
        return _unary(P["div_const"], a, b)
    if _is_number(b) and isinstance(a, Tensor):
        return _unary(P["div_const"], a, _scalar(b))
    if _is_number(a) and isinstance(b, Tensor):
        return _unary(P["rdiv_const"], b, _scalar(a))
    return _binary(P["div"], a, b)


def pow(a, b):
    if _is_number(b) and isinstance(a, Tensor):
        b = _scalar(b)
        if b == 2 or b == 3:   # multiplies, not a pow call (the commonest powers)
            prim, x = P["square" if b == 2 else "cube"], a._data
            value = prim.numpy(x, float(b), 0.0)     # the registry's forward: x * x (* x)
            if x.dtype.kind not in "fc":             # integers and bools: numpy's dtype of
                value = np.asarray(value, (x ** b).dtype)   # x ** b (bool ** 3 is int8)
            return record(prim, (a,), value, c0=float(b))
        if b == -1 and a._data.dtype.kind == "f":    # a division (PyTorch's reciprocal)
            return record(P["rdiv_const"], (a,), a._data ** b, c0=1.0, name="PowBackward0")
        return _unary(P["pow_const"], a, b)
    if _is_number(a) and isinstance(b, Tensor):
        return _unary(P["rpow_const"], b, _scalar(a))
    return _binary(P["pow"], a, b)


def neg(x): return _unary(P["neg"], x)
def abs(x): return _unary(P["abs"], x)
def exp(x): return _unary(P["exp"], x)
def log(x): return _unary(P["log"], x)
def log1p(x): return _unary(P["log1p"], x)
def expm1(x): return _unary(P["expm1"], x)
def sqrt(x): return _unary(P["sqrt"], x)
def sin(x): return _unary(P["sin"], x)
def cos(x): return _unary(P["cos"], x)
def tan(x): return _unary(P["tan"], x)
def tanh(x): return _unary(P["tanh"], x)
def sigmoid(x): return _unary(P["sigmoid"], x)
def relu(x): return _unary(P["relu"], x)
def square(x): return pow(as_tensor(x), 2)
def maximum(a, b): return _binary(P["maximum"], a, b)
def minimum(a, b): return _binary(P["minimum"], a, b)
def gt(a, b): return _binary(P["gt"], a, b)
def ge(a, b): return _binary(P["ge"], a, b)
def lt(a, b): return _binary(P["lt"], a, b)
def le(a, b): return _binary(P["le"], a, b)
def eq(a, b): return _binary(P["eq"], a, b)
def ne(a, b): return _binary(P["ne"], a, b)


def clip(x, min=None, max=None):
    """Clamp to [min, max]; the gradient flows where min <= x <= max (PyTorch's clamp)."""
    if min is None and max is None:
        raise RuntimeError("At least one of 'min' or 'max' must not be None")
    if isinstance(min, Tensor) or isinstance(max, Tensor):
        # PyTorch's clamp(x, min, max) = minimum(maximum(x, min), max), but x keeps the whole
        # gradient at a bound (no tie splitting) and max wins when min > max.
        out = as_tensor(x)
        if min is not None:
            out = where(lt(out, min), min, out)
        if max is not None:
            out = where(gt(out, max), max, out)
        if out._node is not None:
            out._node._name = "ClampBackward0"
        return out
    lo = -math.inf if min is None else float(min)
    hi = math.inf if max is None else float(max)
    return _unary(P["clip"], x, lo, hi)


clamp = clip


def where(condition, x, y):
    condition = as_tensor(condition)
    # Python numbers are weak, as in PyTorch: where(c, float32 tensor, 0.0) stays float32.
    wx, wy = _weak(x), _weak(y)
    value = np.where(condition._data, wx, wy)
    dtype = np.result_type(wx, wy)
    x, y = _operand(x, dtype), _operand(y, dtype)
    if _recording(condition, x, y):
        shape = value.shape
        condition = broadcast_to(condition, shape)
        x, y = broadcast_to(x, shape), broadcast_to(y, shape)
    return record(P["where"], (condition, x, y), value)


def astype(x, dtype):
    if x._data.dtype == dtype:
        return x
    if dtype.kind not in "fc":
        return Tensor(x._data.astype(dtype))
    return record(P["copy"], (x,), x._data.astype(dtype), name="ToCopyBackward0")


def clone(x):
    return record(P["copy"], (x,), x._data.copy(), name="CloneBackward0")


# ---- shapes ----------------------------------------------------------------------------------

def _shape_arg(shape):
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        return tuple(shape[0])
    return tuple(int(s) for s in shape)


def reshape(x, *shape, name="ViewBackward0"):
    """A view of `x` in another shape when numpy can give one, else a copy (PyTorch's reshape)."""
    return _reshaped(as_tensor(x), _shape_arg(shape), name, False)


def view(x, *shape):
    """A view of `x` in another shape; an error where only a copy could give that shape."""
    return _reshaped(as_tensor(x), _shape_arg(shape), "ViewBackward0", True)


def _reshaped(x, shape, name, view_only):
    data = x._data
    value = data.reshape(shape)
    shares = _shares_memory(value, data)
    if view_only and not shares and data.size:
        raise RuntimeError("view size is not compatible with input tensor's size and stride (at "
                           "least one dimension spans across two contiguous subspaces). Use "
                           ".reshape(...) instead.")
    out = record(P["copy"], (x,), value, name=name)
    return views.mark(out, x, "reshape", value.shape) if shares else out


def _shares_memory(value, data):
    """Whether numpy made `value` as a view of `data`'s memory (not a copy)."""
    base = value.base
    return base is not None and (base is data or base is data.base)


def flatten(x, start_dim=0, end_dim=-1):
    shape = x._data.shape
    if not shape:
        return reshape(x, 1)
    end = end_dim % len(shape)
    return reshape(x, shape[:start_dim] + (-1,) + shape[end + 1:])


def squeeze(x, dim=None):
    value = np.squeeze(x._data) if dim is None else (
        np.squeeze(x._data, dim) if x._data.shape[dim] == 1 else x._data)
    return reshape(x, value.shape, name="SqueezeBackward0" if dim is None else "SqueezeBackward1")


def unsqueeze(x, dim):
    return reshape(x, np.expand_dims(x._data, dim).shape, name="UnsqueezeBackward0")


def permute(x, *dims, name="PermuteBackward0"):
    x = as_tensor(x)
    dims = _shape_arg(dims)
    value = np.transpose(x._data, dims)
    if _recording(x):
        out = record_gather(x, np.transpose(_positions(x._data.shape), dims), value, name)
    else:
        out = constant(value)
    return views.mark(out, x, "permute", dims)


def transpose(x, dim0=None, dim1=None):
    """PyTorch's transpose(x, dim0, dim1); without dims, numpy's transpose (all axes reversed)."""
    x = as_tensor(x)
    if dim0 is None:
        return permute(x, tuple(range(x._data.ndim - 1, -1, -1)))
    dims = list(range(x._data.ndim))
    dims[dim0], dims[dim1] = dims[dim1], dims[dim0]
    return permute(x, dims, name="TransposeBackward0")


def t(x):
    if x._data.ndim > 2:
        raise RuntimeError(f"t() expects a tensor with <= 2 dimensions, but self is "
                           f"{x._data.ndim}D")
    return permute(x, tuple(range(x._data.ndim - 1, -1, -1)), name="TBackward0")


def index_key(key):
    """A key with tensors replaced by their (integer or boolean) numpy values; a 0-d integer
    tensor selects like an int (a view, as in PyTorch)."""
    if isinstance(key, tuple):
        return tuple(index_key(k) for k in key)
    if isinstance(key, Tensor):
        data = key._data
        if state.tracing and key._node is not None and data.size:
            _guard_key(key)
        return int(data) if data.ndim == 0 and data.dtype.kind in "iu" else data
    if isinstance(key, list):
        return np.asarray([k.item() if isinstance(k, Tensor) else k for k in key])
    return key


def _guard_key(key):
    """A key computed from traced values (`x[x > 0]`, `x[np.argsort(x)]`) selects by its values
    at trace time, which the tape then holds as constants: a guard that a replay's key has the
    same values, so a replay whose mask or indices differ traces again instead of reusing them."""
    bool(amin(eq(key, key._data.copy())))        # True: a guard while tracing


def basic_key(key):
    """Whether numpy indexes with `key` by basic indexing, which gives a view: ints, slices,
    None and Ellipsis (not bools, integer arrays or masks)."""
    if key.__class__ is tuple:
        for k in key:
            if k.__class__ is not slice and k.__class__ is not int and k is not None and \
                    k is not Ellipsis and not _is_int(k):
                return False
        return True
    return key.__class__ is slice or key.__class__ is int or key is None or key is Ellipsis or \
        _is_int(key)


def _is_int(k):
    return isinstance(k, (int, np.integer)) and not isinstance(k, (bool, np.bool_))


def _index_name(key):
    parts = key if isinstance(key, tuple) else (key,)
    if builtins.any(isinstance(k, np.ndarray) and k.ndim for k in parts):
        return "IndexBackward0"
    if builtins.any(isinstance(k, (int, np.integer)) or (isinstance(k, np.ndarray) and
                    k.dtype.kind in "iu") for k in parts):   # x[tensor(1)] selects, as x[1]
        return "SelectBackward0"
    return "SliceBackward0"


def getitem(x, key):
    """Basic indexing gives a view (see `eager.views`), integer-array and boolean indexing a
    copy; the VJP scatters with accumulation (repeated indices)."""
    key = index_key(key)
    value = x._data[key]
    basic = basic_key(key)
    if value.__class__ is not np.ndarray:        # a number: a 0-d view, or a 0-d array
        if basic:
            key = (key if key.__class__ is tuple else (key,)) + (Ellipsis,)
            value = x._data[key]
        else:
            value = np.asarray(value)
    if _recording(x):
        out = record_gather(x, _positions(x._data.shape)[key], value, _index_name(key))
    else:
        out = constant(value)
    return views.mark(out, x, "index", key) if basic else out


def _pack_gather(tensors, pieces, value, name):
    """Record `value` as a gather over the flat concatenation of `tensors` (cat and stack)."""
    tensors = [as_tensor(t) for t in tensors]
    if not _recording(*tensors):
        return Tensor(value)
    packed_value = np.concatenate([t._data.ravel() for t in tensors])
    packed = record(P["pack"], tuple(tensors), packed_value, name=_HIDDEN)
    return record_gather(packed, pieces, value, name)


def _piece_positions(tensors):
    start = 0
    for t in tensors:
        yield start + _positions(t._data.shape)
        start += t._data.size


def cat(tensors, dim=0):
    tensors = [as_tensor(t) for t in tensors]
    value = np.concatenate([t._data for t in tensors], axis=dim)
    pieces = np.concatenate(list(_piece_positions(tensors)), axis=dim)
    return _pack_gather(tensors, pieces, value, "CatBackward0")


def stack(tensors, dim=0):
    tensors = [as_tensor(t) for t in tensors]
    value = np.stack([t._data for t in tensors], axis=dim)
    pieces = np.stack(list(_piece_positions(tensors)), axis=dim)
    return _pack_gather(tensors, pieces, value, "StackBackward0")


concatenate = cat


# ---- reductions ------------------------------------------------------------------------------

def _dims(dim, axis, ndim):
    dim = axis if dim is None else dim
    if dim is None:
        return None
    dims = dim if isinstance(dim, (tuple, list)) else (dim,)
    for d in dims:
        if not -builtins.max(ndim, 1) <= d < builtins.max(ndim, 1):
            raise IndexError(f"Dimension out of range (expected to be in range of "
                             f"[{-builtins.max(ndim, 1)}, {builtins.max(ndim, 1) - 1}], but got {d})")
    return tuple(sorted({d % builtins.max(ndim, 1) for d in dims}))


def _segments(shape, dims):
    """Segment id of every element of `shape` when the axes `dims` are reduced."""
    kept = tuple(1 if i in dims else s for i, s in enumerate(shape))
    return np.broadcast_to(_positions(kept), shape)


def _reduce(prim, x, dims, keepdim, value, c0, names):
    x = as_tensor(x)
    value = np.asarray(value)
    if not _recording(x):
        return Tensor(value)
    if dims is None or x._data.ndim == 0:
        payload, name = np.zeros(x._data.size, np.int64), names[0]
    else:
        payload, name = _segments(x._data.shape, dims).ravel(), names[1]
    base = _squared(x) if prim is P["segsum"] else None
    if base is not None:
        return record(P["segsumsq"], (base,), value, payload, c0=c0, name=name)
    return record(prim, (x,), value, payload, c0=c0, name=name)


def _squared(x):
    """y where x = y * y (or y ** 2) was recorded while tracing: the segment sum of x is then one
    `segsumsq` entry on y (one pass over the values instead of two, each way). The square's
    node stays for any other use of x and drops out of a tape that does not reach it. Eager
    graphs keep PyTorch's structure (SumBackward1 of MulBackward0); not after in-place writes."""
    node = x._node
    if node is None or not state.tracing or graph.written_bases or graph.rebound_tensors:
        return None
    if node.prim is P["square"] or (node.prim is P["mul"] and node.inputs[0] is node.inputs[1]):
        return node.inputs[0]
    return None


def sum(x, dim=None, keepdim=False, *, axis=None, keepdims=None, dtype=None):
    x = as_tensor(x)
    keepdim = keepdims if keepdims is not None else keepdim
    dims = _dims(dim, axis, x._data.ndim)
    # the ufunc's own reduce: np.sum's Python wrapper costs more than a small sum itself
    value = np.add.reduce(x._data, axis=dims, keepdims=keepdim, dtype=dtype)
    if dims is None and _recording(x):
        return record(P["total"], (x,), np.asarray(value), c0=1.0)
    return _reduce(P["segsum"], x, dims, keepdim, value, 1.0, (None, "SumBackward1"))


def mean(x, dim=None, keepdim=False, *, axis=None, keepdims=None, dtype=None):
    if x.__class__ is not Tensor:
        x = as_tensor(x)
    keepdim = keepdims if keepdims is not None else keepdim
    data = x._data
    dims = None if dim is None and axis is None else _dims(dim, axis, data.ndim)
    count = data.size if dims is None else math.prod(data.shape[d] for d in dims)
    if data.dtype.kind == "f" and dtype is None and count:
        value = np.add.reduce(data, axis=dims, keepdims=keepdim) / count   # np.mean's rule
    else:
        value = np.mean(data, axis=dims, keepdims=keepdim, dtype=dtype)
    scale = 1.0 / count if count else math.nan
    if dims is None and _recording(x):
        return record(P["total"], (x,), np.asarray(value), None, scale, 0.0, "MeanBackward0")
    return _reduce(P["segsum"], x, dims, keepdim, value, scale, (None, "MeanBackward1"))


def prod(x, dim=None, keepdim=False, *, axis=None, keepdims=None, dtype=None):
    x = as_tensor(x)
    keepdim = keepdims if keepdims is not None else keepdim
    dims = _dims(dim, axis, x._data.ndim)
    value = np.prod(x._data, axis=dims, keepdims=keepdim, dtype=dtype)
    return _reduce(P["segprod"], x, dims, keepdim, value, 0.0, ("ProdBackward0", "ProdBackward1"))


def _extreme(prim, npfn, x, dims, keepdim, names):
    if x._data.size == 0:
        raise RuntimeError(f"{npfn.__name__}(): Expected reduction dim to be specified for "
                           "input.numel() == 0. Specify the reduction dim with the 'dim' argument.")
    value = npfn(x._data, axis=dims, keepdims=keepdim)
    return _reduce(prim, x, dims, keepdim, value, 0.0, names)


def amax(x, dim=None, keepdim=False, *, axis=None, keepdims=None):
    """Maximum over axes; tied elements share the gradient evenly (PyTorch amax, JAX max)."""
    x = as_tensor(x)
    keepdim = keepdims if keepdims is not None else keepdim
    return _extreme(P["segmax"], np.max, x, _dims(dim, axis, x._data.ndim), keepdim,
                    ("AmaxBackward0", "AmaxBackward0"))


def amin(x, dim=None, keepdim=False, *, axis=None, keepdims=None):
    x = as_tensor(x)
    keepdim = keepdims if keepdims is not None else keepdim
    return _extreme(P["segmin"], np.min, x, _dims(dim, axis, x._data.ndim), keepdim,
                    ("AminBackward0", "AminBackward0"))


max_return = collections.namedtuple("max", ["values", "indices"])
min_return = collections.namedtuple("min", ["values", "indices"])


def _select_extreme(x, dim, keepdim, argfn, result, name):
    """PyTorch's max(dim)/min(dim): values and indices; the gradient goes to the index."""
    x = as_tensor(x)
    (d,) = _dims(dim, None, x._data.ndim)
    indices = np.expand_dims(argfn(x._data, axis=d), d)
    positions = np.take_along_axis(_positions(x._data.shape), indices, axis=d)
    value = np.take_along_axis(x._data, indices, axis=d)
    if not keepdim:
        positions, value, indices = (np.squeeze(a, d) for a in (positions, value, indices))
    values = record_gather(x, positions, value, name) if _recording(x) else Tensor(value)
    return result(values, Tensor(indices.astype(np.int64)))


def max(x, dim=None, keepdim=False, *, axis=None, keepdims=None):
    """`max(x)` and `max(x, axis=...)` reduce (ties share the gradient); `max(x, dim)` is
    PyTorch's, returning (values, indices) with the gradient on the selected index."""
    if isinstance(dim, Tensor):
        return maximum(x, dim)
    if dim is None or axis is not None:
        x = as_tensor(x)
        return _extreme(P["segmax"], np.max, x, _dims(None, axis, x._data.ndim),
                        bool(keepdims) or keepdim, ("MaxBackward1", "AmaxBackward0"))
    return _select_extreme(x, dim, keepdim, np.argmax, max_return, "MaxBackward0")


def min(x, dim=None, keepdim=False, *, axis=None, keepdims=None):
    if isinstance(dim, Tensor):
        return minimum(x, dim)
    if dim is None or axis is not None:
        x = as_tensor(x)
        return _extreme(P["segmin"], np.min, x, _dims(None, axis, x._data.ndim),
                        bool(keepdims) or keepdim, ("MinBackward1", "AminBackward0"))
    return _select_extreme(x, dim, keepdim, np.argmin, min_return, "MinBackward0")


def logsumexp(x, dim=None, keepdim=False, *, axis=None, keepdims=None):
    """log(sum(exp(x))) without overflow: the maximum is taken out first."""
    x = as_tensor(x)
    keepdim = keepdims if keepdims is not None else keepdim
    dims = _dims(dim, axis, x._data.ndim)
    dims = tuple(range(x._data.ndim)) if dims is None else dims
    m = amax(x, dims, keepdim=True)
    m_safe = where(isfinite_mask(m), m, 0.0)
    with np.errstate(divide="ignore"):   # a row of -inf has log(0) = -inf, as intended
        out = add(log(sum(exp(sub(x, m_safe)), dims, keepdim=True)), m_safe)
    if not keepdim:
        out = reshape(out, np.squeeze(out._data, dims).shape)
    if out._node is not None:
        out._node._name = "LogsumexpBackward0"
    return out


def isfinite_mask(x):
    return Tensor(np.isfinite(x._data))


def softmax(x, dim=None, *, axis=None):
    x = as_tensor(x)
    dims = _dims(dim, axis, x._data.ndim)
    dims = tuple(range(x._data.ndim)) if dims is None else dims
    m = amax(x, dims, keepdim=True)
    e = exp(sub(x, where(isfinite_mask(m), m, 0.0)))
    out = div(e, sum(e, dims, keepdim=True))
    if out._node is not None:
        out._node._name = "SoftmaxBackward0"
    return out


def log_softmax(x, dim=None, *, axis=None):
    """(x - max) - log(sum(exp(x - max))): subtracting logsumexp(x) from x instead loses the
    digits of log(sum) next to a large max (1e-13 relative in float64, 3e-5 in float32 at 1000)."""
    x = as_tensor(x)
    dims = _dims(dim, axis, x._data.ndim)
    dims = tuple(range(x._data.ndim)) if dims is None else dims
    m = amax(x, dims, keepdim=True)
    shifted = sub(x, where(isfinite_mask(m), m, 0.0))
    with np.errstate(divide="ignore", invalid="ignore"):   # a row of -inf gives NaN (PyTorch)
        out = sub(shifted, log(sum(exp(shifted), dims, keepdim=True)))
    if out._node is not None:
        out._node._name = "LogSoftmaxBackward0"
    return out


# ---- matmul ----------------------------------------------------------------------------------

def matmul(a, b):
    """numpy/PyTorch matmul: vectors are promoted and squeezed, batch dimensions broadcast."""
    a, b = as_tensor(a), as_tensor(b)
    if a.data.ndim == 0 or b.data.ndim == 0:
        raise RuntimeError("both arguments to matmul need to be at least 1D, but they are "
                           f"{a.data.ndim}D and {b.data.ndim}D")
    value = np.matmul(a.data, b.data)
    if not _recording(a, b):
        return Tensor(value)
    sa, sb = a.data.shape, b.data.shape
    a2 = sa if len(sa) > 1 else (1,) + sa
    b2 = sb if len(sb) > 1 else sb + (1,)
    m, k, n = a2[-2], a2[-1], b2[-1]
    batch_shape = np.broadcast_shapes(a2[:-2], b2[:-2])
    batch = math.prod(batch_shape)
    strides = []
    for t, s2 in ((a, a2), (b, b2)):
        size = s2[-2] * s2[-1]
        if s2[:-2] == batch_shape:
            strides.append(size)
        elif math.prod(s2[:-2]) == 1:
            strides.append(0)          # one matrix shared by the whole batch
        else:
            strides.append(size)
    if strides[0] and a2[:-2] != batch_shape:
        a = broadcast_to(reshape(a, a2, name=_HIDDEN), batch_shape + a2[-2:])
    if strides[1] and b2[:-2] != batch_shape:
        b = broadcast_to(reshape(b, b2, name=_HIDDEN), batch_shape + b2[-2:])
    # the last two say whether an operand is a constant (neither recorded nor an input): the
    # batched kernels then read one value per element instead of one per point
    payload = np.array([batch, m, k, n, strides[0], strides[1], not _tracked(a),
                        not _tracked(b)], np.int64)
    if len(sa) == 1 and len(sb) == 1:
        name = "DotBackward0"
    elif len(sb) == 1 and len(sa) == 2:
        name = "MvBackward0"
    elif len(sa) == 1 and len(sb) == 2:
        name = "SqueezeBackward4"
    elif len(sa) == 2 and len(sb) == 2:
        name = "MmBackward0"
    else:
        name = "UnsafeViewBackward0"
    return record(P["matmul"], (a, b), np.asarray(value), payload, name=name)


def dot(a, b):
    """PyTorch's dot (`tapegrad.dot`, `Tensor.dot`): the inner product of two 1-D tensors of the
    same dtype and size; anything else raises PyTorch's error (numpy's `np.dot`, which takes any
    ranks, is `numpy_dot`)."""
    a, b = as_tensor(a), as_tensor(b)
    if a.data.ndim != 1 or b.data.ndim != 1:
        raise RuntimeError(f"1D tensors expected, but got {a.data.ndim}D and {b.data.ndim}D "
                           "tensors")
    if a.data.dtype != b.data.dtype:
        raise RuntimeError(f"dot : expected both vectors to have same dtype, but found "
                           f"{torch_type(a.data.dtype)} and {torch_type(b.data.dtype)}")
    if a.data.size != b.data.size:
        raise RuntimeError(f"inconsistent tensor size, expected tensor [{a.data.size}] and src "
                           f"[{b.data.size}] to have the same number of elements, but got "
                           f"{a.data.size} and {b.data.size} elements respectively")
    return matmul(a, b)


def numpy_dot(a, b):
    """numpy's dot (`np.dot` on tensors), lowered onto mul, matmul, permute and reshape:
    a 0-d operand multiplies; otherwise the sum over a's last axis and b's second-to-last (its
    only one when 1-D), the result shaped a.shape[:-1] + b.shape[:-2] + b.shape[-1:]. That is
    matmul's result wherever b has at most two axes or a has one; for a of two axes or more and
    b of three or more (where matmul would broadcast the leading axes instead), b's summed axis
    is moved first and both operands become matrices."""
    a, b = as_tensor(a), as_tensor(b)
    sa, sb = a.data.shape, b.data.shape
    if not sa or not sb:
        return mul(a, b)
    k = 0 if len(sb) == 1 else len(sb) - 2          # b's summed axis
    if sa[-1] != sb[k]:
        raise ValueError(f"shapes {_numpy_shape(sa)} and {_numpy_shape(sb)} not aligned: "
                         f"{sa[-1]} (dim {len(sa) - 1}) != {sb[k]} (dim {k})")
    if len(sb) <= 2 or len(sa) == 1:
        return matmul(a, b)
    if not _recording(a, b):
        return Tensor(np.dot(a.data, b.data))
    lead = sb[:-2]
    b_first = permute(b, (k,) + tuple(range(k)) + (len(sb) - 1,), name=_HIDDEN)
    product = matmul(reshape(a, (math.prod(sa[:-1]), sa[-1]), name=_HIDDEN),
                     reshape(b_first, (sb[k], math.prod(lead) * sb[-1]), name=_HIDDEN))
    return reshape(product, sa[:-1] + lead + sb[-1:], name="UnsafeViewBackward0")


def _numpy_shape(shape):
    """A shape as numpy's messages print it: (2,3), (4,)."""
    return f"({','.join(map(str, shape))}{',' if len(shape) == 1 else ''})"


# ---- Tensor methods --------------------------------------------------------------------------

def _to(x, dtype): return astype(x, np.dtype(dtype))
def _float(x): return astype(x, np.dtype(np.float32))
def _double(x): return astype(x, np.dtype(np.float64))
def _reversed_axes(x): return permute(x, tuple(range(x._data.ndim - 1, -1, -1)))
def _last_two_swapped(x): return transpose(x, -2, -1)


# The reflected forms that swap the operands (`2 - x` calls x.__rsub__(2)).
def _rsub(x, other): return sub(other, x)
def _rtruediv(x, other): return div(other, x)
def _rpow(x, other): return pow(other, x)
def _rmatmul(x, other): return matmul(other, x)


_METHODS = dict(
    exp=exp, log=log, log1p=log1p, expm1=expm1, sqrt=sqrt, sin=sin, cos=cos, tan=tan, tanh=tanh,
    sigmoid=sigmoid, relu=relu, abs=abs, neg=neg, square=square, sum=sum, mean=mean, prod=prod,
    max=max, min=min, amax=amax, amin=amin, logsumexp=logsumexp, softmax=softmax,
    log_softmax=log_softmax, clamp=clip, clip=clip, reshape=reshape, view=view, flatten=flatten,
    squeeze=squeeze, unsqueeze=unsqueeze, permute=permute, transpose=transpose, t=t,
    matmul=matmul, dot=dot, pow=pow, maximum=maximum, minimum=minimum, add=add, sub=sub,
    mul=mul, div=div, clone=clone, to=_to, float=_float, double=_double,
    T=property(_reversed_axes), mT=property(_last_two_swapped),
)
# Operators call the op itself (one call less per operation than a method calling it).
_METHODS.update(
    __radd__=_radd, __rmul__=_rmul, __rsub__=_rsub, __rtruediv__=_rtruediv, __rpow__=_rpow,
    __rmatmul__=_rmatmul,
    __add__=add, __sub__=sub, __mul__=mul, __truediv__=div, __pow__=pow, __matmul__=matmul,
    __neg__=neg, __abs__=abs, __gt__=gt, __ge__=ge, __lt__=lt, __le__=le, __eq__=eq, __ne__=ne,
    __getitem__=getitem,
)
for _name, _fn in _METHODS.items():
    setattr(Tensor, _name, _fn)
