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
import warnings

import numpy as np
from numpy.lib import _function_base_impl as numpy_function_base

from . import graph, views
from .dtypes import torch_type
from .graph import rebound_tensors, state
from ..core.registry import BY_NAME
from .tensor import Tensor, _asarray, constant, record

P = BY_NAME
_WINDOW = P["window"]
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
    """An operand as a Tensor; numbers and arrays become constants. While a function is traced,
    `np.asarray` builds a traced value from a list that holds one (`np.concatenate([x,
    [x[0] ** 2]])`: numpy dispatches on the outer list's arrays only)."""
    if isinstance(x, Tensor):
        return x
    x = np.asarray(x)
    return x if isinstance(x, Tensor) else Tensor(x)


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
    return Tensor(_asarray(_scalar(v), dtype)) if _is_number(v) else as_tensor(v)


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
    value = _asarray(prim.numpy(wa, wb))
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
    `2 * x` and `x * y` are tested first, by exact class (the eager loop's commonest cases),
    then two operands of any tensor class (traced numpy code); bools and numpy scalars take the
    general tests after them."""
    binary, constant = P[name], P[name + "_const"]

    def op(a, b):
        if a.__class__ is Tensor:
            if b.__class__ is Tensor:
                return _binary(binary, a, b)
            if b.__class__ in _PY_NUMBERS:
                return _unary(constant, a, b)
        elif b.__class__ is Tensor and a.__class__ in _PY_NUMBERS:
            return _unary(constant, b, a)
        if isinstance(a, Tensor) and isinstance(b, Tensor):     # numpy-semantics arrays
            return _binary(binary, a, b)
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
    fused = _gather_difference(a, b) if state.tracing else None
    return _binary(P["sub"], a, b) if fused is None else fused


def _gather_difference(a, b):
    """x[I] - x[J] as one `gather_diff` entry when both operands are index-map gathers of one
    tensor (pair differences: one pass over the pairs instead of three, each way). The gathers'
    nodes stay for any other use of x[I] and x[J], and drop out of a tape that does not reach
    them. While a function is traced only: in an eager graph `x[I].retain_grad()` (called
    before or after the difference) and hooks need the gathers' nodes on the way to the
    output. Not after in-place writes (the operand tensor might stand for another version)."""
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
    if state.tracing:
        fused = _softmax(a, b)
        if fused is not None:
            return fused
    return _binary(P["div"], a, b)


_SEGMAX, _SUB, _EXP, _TOTAL = P["segmax"], P["sub"], P["exp"], P["total"]


def _softmax(e, s):
    """e / s as one `softmax` entry of v when e = exp(v - max(v)) and s = sum(e) (numpy's
    softmax, `e = np.exp(v - np.max(v)); e / np.sum(e)`: five entries otherwise). While a
    function is traced only: eager graphs keep the nodes that `grad_fn` shows and `retain_grad`
    reads. The five nodes stay for any other use of their values and drop out of a tape that
    does not reach them. Not after in-place writes (an operand might stand for another
    version)."""
    ne, ns = getattr(e, "_node", None), getattr(s, "_node", None)
    if ne is None or ns is None or ne.prim is not _EXP or ns.prim is not _TOTAL \
            or ns.c0 != 1.0 or ns.inputs[0] is not e or graph.written_bases \
            or graph.rebound_tensors:
        return None
    z = ne.inputs[0]
    nz = z._node
    if nz is None or nz.prim is not _SUB:
        return None
    v, m = nz.inputs
    nm = m._node
    if nm is None or nm.prim is not _SEGMAX or nm.inputs[0] is not v or m._data.size != 1 \
            or v._data.shape != e._data.shape or v._data.dtype != e._data.dtype:
        return None
    return record(P["softmax"], (v,), np.divide(e._data, s._data), name="DivBackward0")


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


# ---- more elementwise functions (PyTorch's names, and numpy's where they differ) -------------

def arcsin(x): return _unary(P["arcsin"], x)
def arccos(x): return _unary(P["arccos"], x)
def arctan(x): return _unary(P["arctan"], x)
def arcsinh(x): return _unary(P["arcsinh"], x)
def arccosh(x): return _unary(P["arccosh"], x)
def arctanh(x): return _unary(P["arctanh"], x)
def sinh(x): return _unary(P["sinh"], x)
def cosh(x): return _unary(P["cosh"], x)
def log2(x): return _unary(P["log2"], x)
def log10(x): return _unary(P["log10"], x)
def sinc(x): return _unary(P["sinc"], x)
def arctan2(a, b): return _binary(P["arctan2"], a, b)
def hypot(a, b): return _binary(P["hypot"], a, b)
def logaddexp(a, b): return _binary(P["logaddexp"], a, b)
def logaddexp2(a, b): return _binary(P["logaddexp2"], a, b)
def heaviside(a, b): return _binary(P["heaviside"], a, b)


asin, acos, atan, asinh, acosh, atanh, atan2 = (
    arcsin, arccos, arctan, arcsinh, arccosh, arctanh, arctan2)


def fmax(a, b):
    """The maximum, ignoring a NaN operand; at a tie each operand gets half of the gradient
    (autograd's convention and `maximum`'s; PyTorch gives it all to `a`)."""
    return _binary(P["fmax"], a, b)


def fmin(a, b):
    """The minimum, ignoring a NaN operand; ties share the gradient as in `fmax`."""
    return _binary(P["fmin"], a, b)


def remainder(a, b):
    """a - b * floor(a / b), of b's sign (`a % b`: Python's, numpy's and, for floats, PyTorch's
    remainder, except that a zero result takes b's sign where PyTorch keeps a's). The gradient
    in b is minus the exact integer quotient, as PyTorch's."""
    return _binary(P["remainder"], a, b, "RemainderBackward0" if _is_number(b) else None)


def fmod(a, b):
    """C's fmod, a - b * trunc(a / b), of a's sign. The gradient in b is minus the exact
    integer quotient (PyTorch's uses trunc(a / b) as rounded: one off where that rounds to an
    integer)."""
    return _binary(P["fmod"], a, b, "FmodBackward0" if _is_number(b) else None)


def copysign(a, b):
    """|a| with b's sign; the gradient in a is sign(a) sign(b) (0 at a = 0), none in b."""
    return _binary(P["copysign"], a, b, "CopysignBackward1" if _is_number(b) else None)


def exp2(x):
    """2 ** x: numpy's exp2 value, recorded as the power c0 ** x with c0 = 2."""
    x = as_tensor(x)
    return record(P["rpow_const"], (x,), np.exp2(x._data), c0=2.0, name="Exp2Backward0")


def reciprocal(x):
    """1 / x; a float64 result for integer tensors, as the other floating functions give
    (PyTorch: its default dtype)."""
    x = as_tensor(x)
    data = x._data
    value = np.reciprocal(data) if data.dtype.kind == "f" else 1.0 / data
    return record(P["rdiv_const"], (x,), value, c0=1.0, name="ReciprocalBackward0")


def deg2rad(x):
    """x * (pi / 180), the product numpy computes."""
    return _scaled(x, np.pi / 180.0, np.deg2rad, "Deg2RadBackward0")


def rad2deg(x):
    """x * (180 / pi), the product numpy computes."""
    return _scaled(x, 180.0 / np.pi, np.rad2deg, "Rad2DegBackward0")


def _scaled(x, factor, numpy_fn, name):
    x = as_tensor(x)
    return record(P["mul_const"], (x,), numpy_fn(x._data), c0=factor, name=name)


def nan_to_num(x, nan=0.0, posinf=None, neginf=None):
    """NaN, +inf and -inf replaced by `nan`, `posinf` and `neginf` (by default 0 and the
    largest finite values of the dtype). The gradient is 1 where x is finite and 0 where a
    value was replaced (PyTorch, autograd and JAX)."""
    x = as_tensor(x)
    data = x._data
    if data.dtype.kind != "f":
        return record(P["copy"], (x,), data.copy(), name="NanToNumBackward0")
    info = np.finfo(data.dtype)
    hi = float(data.dtype.type(info.max if posinf is None else posinf))
    lo = float(data.dtype.type(info.min if neginf is None else neginf))
    infinities = record(P["nan_to_num"], (x,), np.nan_to_num(data, nan=0.0, posinf=hi, neginf=lo),
                        c0=hi, c1=lo, name="NanToNumBackward0")
    if nan == 0.0 and math.copysign(1.0, nan) > 0:
        return infinities
    # another value for NaN: selected where x != x (a comparison, recomputed in a replay)
    out = where(ne(x, x), nan, infinities)
    if out._node is not None:
        out._node._name = "NanToNumBackward0"
    return out


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
    amin(eq(key, key._data.copy()))._guarded(True)


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
    if key.__class__ is int and x._data.ndim == 1:     # x[i] of a vector, as scalar code reads
        return _element(x, key)
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


def _element(x, i):
    """x[i] of a vector: a 0-d view of element i, recorded as a one-element window (what the
    general path records, without building an index map)."""
    value = x._data[i, ...]                  # a 0-d view; IndexError out of range
    if _recording(x):
        start = i + x._data.shape[0] if i < 0 else i
        out = record(_WINDOW, (x,), value, views.window(start, 0), name="SelectBackward0")
    else:
        out = constant(value)
    return views.mark(out, x, "index", (i, Ellipsis))


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


def _packed(tensors, value, name):
    """Record `value`, the flat concatenation of `tensors` in its own shape, as one pack entry
    (cat and stack along the first axis: no gather needed to lay the pieces out)."""
    if not _recording(*tensors):
        return Tensor(value)
    return record(P["pack"], tuple(tensors), value, name=name)


def cat(tensors, dim=0):
    tensors = [as_tensor(t) for t in tensors]
    value = np.concatenate([t._data for t in tensors], axis=dim)
    if dim is None or dim % value.ndim == 0:
        return _packed(tensors, value, "CatBackward0")
    pieces = np.concatenate(list(_piece_positions(tensors)), axis=dim)
    return _pack_gather(tensors, pieces, value, "CatBackward0")


def stack(tensors, dim=0):
    tensors = [as_tensor(t) for t in tensors]
    value = np.stack([t._data for t in tensors], axis=dim)
    if dim % value.ndim == 0:
        return _packed(tensors, value, "StackBackward0")
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
    value = _asarray(value)
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
        return record(P["total"], (x,), _asarray(value), c0=1.0)
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
        return record(P["total"], (x,), _asarray(value), None, scale, 0.0, "MeanBackward0")
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
        if state.tracing and len(dims) == x._data.ndim and x._data.size:
            # over everything: one entry (its c0: the maximum replaced by 0 when not finite)
            return record(P["softmax"], (x,), out._data, c0=1.0, name="SoftmaxBackward0")
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


# ---- scans, sorting and statistics -----------------------------------------------------------
# The lowerings numpy's functions share with PyTorch's: scans and sorts record one entry along
# an axis (`cumsum`, `cumprod`, `sort`); order statistics gather ranks of a sort; the spread of
# values is the mean, the deviations and their sum of squares.

def _lane_shape(shape, axis):
    """(L, inner): the length of `axis` and the distance between its values in the flat layout."""
    if not shape:
        return 1, 1
    axis %= len(shape)
    return shape[axis], math.prod(shape[axis + 1:])


def _predecessors(shape, axis):
    """Each element's predecessor along `axis` (its flat index), -1 at the axis's start."""
    positions = _positions(shape).ravel()
    L, inner = _lane_shape(shape, axis)
    if not positions.size:
        return positions
    return np.where((positions // inner) % L == 0, -1, positions - inner)


def scan(prim, x, axis, value, name):
    """Record the running sum or product `prim` of x along `axis`, whose value numpy computed."""
    if not _recording(x):
        return Tensor(np.asarray(value))
    return record(prim, (x,), value, _predecessors(x._data.shape, axis), name=name)


def _running(prim, npfn, x, dim, dtype, name):
    x = as_tensor(x)
    data = x._data
    (d,) = _dims(dim, None, data.ndim)
    value = npfn(data.reshape(-1) if data.ndim == 0 else data, axis=d, dtype=dtype)
    return scan(prim, x, d, value.reshape(data.shape), name)


def cumsum(x, dim, *, dtype=None):
    """Running sums along `dim` (PyTorch's cumsum: integers and bools accumulate in int64)."""
    return _running(P["cumsum"], np.cumsum, x, dim, dtype, "CumsumBackward0")


def cumprod(x, dim, *, dtype=None):
    """Running products along `dim`; the gradient is exact at zero factors."""
    return _running(P["cumprod"], np.cumprod, x, dim, dtype, "CumprodBackward0")


def stable_order(data, axis, descending=False):
    """The indices that sort `data` along `axis` stably (equal values keep their order), NaN as
    the greatest value: last ascending, first descending (the `sort` primitive's order)."""
    if data.ndim == 0:
        return np.zeros((), np.int64)
    if not descending:
        return np.argsort(data, axis=axis, kind="stable").astype(np.int64)
    reversed_order = np.argsort(np.flip(data, axis), axis=axis, kind="stable")
    return (data.shape[axis] - 1 - np.flip(reversed_order, axis)).astype(np.int64)


def sort_along(x, axis, descending, value, name="SortBackward0"):
    """Record the sort of x along `axis` (see `core.prims.sort`), whose value is `value`."""
    if not _recording(x):
        return Tensor(np.asarray(value))
    L, inner = _lane_shape(x._data.shape, axis)
    payload = np.array([builtins.max(L, 1), builtins.max(inner, 1), int(bool(descending))],
                       np.int64)
    return record(P["sort"], (x,), value, payload, name=name)


def sorted_along(x, axis):
    """x sorted along `axis` (stable, NaN last), recorded."""
    data = x._data
    value = np.sort(data, axis=axis, kind="stable") if data.ndim else data.copy()
    return sort_along(x, axis, False, value)


sort_return = collections.namedtuple("sort", ["values", "indices"])


def sort(x, dim=-1, descending=False, stable=False):
    """PyTorch's sort: (values, indices) along `dim`. Always stable; NaN is the greatest value
    (last ascending, first descending); each value's gradient goes back to its index."""
    x = as_tensor(x)
    data = x._data
    (d,) = _dims(dim, None, data.ndim)
    indices = stable_order(data, d, descending)
    value = np.take_along_axis(data, indices, axis=d) if data.ndim else data.copy()
    values = sort_along(x, d, descending, value, "SortBackward1" if stable else "SortBackward0")
    return sort_return(values, Tensor(indices))


def lanes_last(x, axes):
    """x with the axes `axes` (a sorted tuple; None: all) moved to the end and merged into one."""
    shape = x._data.shape
    axes = tuple(range(len(shape))) if axes is None else tuple(axes)
    kept = [d for d in range(len(shape)) if d not in axes]
    if kept + list(axes) != list(range(len(shape))):
        x = permute(x, kept + list(axes), name=_HIDDEN)
    merged = tuple(shape[d] for d in kept) + (math.prod(shape[d] for d in axes),)
    return reshape(x, merged, name=_HIDDEN)


def nan_propagated(s, result):
    """`result` (order statistics of the lanes of `s`, sorted along its last axis, NaN last),
    NaN where a lane holds a NaN: numpy's and PyTorch's rule for medians and quantiles."""
    if s._data.dtype.kind != "f":
        return result
    n = s._data.shape[-1]
    lanes = result._data.ndim == s._data.ndim            # result keeps a last axis of its own
    last = getitem(s, (Ellipsis, slice(n - 1, n) if lanes else n - 1))
    return where(ne(last, last), last, result)


def median_of_lanes(x):
    """The median of each lane (last axis) of x as numpy takes it: the mean of the middle one or
    two values of the sorted lane, NaN if the lane holds one."""
    n = x._data.shape[-1]
    if n == 0:                      # numpy's NaN of an empty slice, constant
        with np.errstate(invalid="ignore"):
            return add(sum(x, -1), math.nan)
    s = sorted_along(x, -1)
    h = n // 2
    middle = getitem(s, (Ellipsis, slice(h, h + 1) if n % 2 else slice(h - 1, h + 1)))
    return nan_propagated(s, mean(middle, -1))


def quantile_positions(n, q, method):
    """numpy's (previous, next, gamma) of the quantiles q (an array) of n sorted values by
    `method`; gamma is None where numpy takes the values at `previous` without interpolating.
    The positions depend on n and q alone, never on the values."""
    base = numpy_function_base            # numpy's own tables: its values bit for bit
    props = base._QuantileMethods[method]
    virtual = np.asanyarray(props["get_virtual_index"](n, q))
    if props["fix_gamma"] is None or (method == "linear" and virtual.dtype.kind in "iu"):
        return virtual.astype(np.intp), None, None
    previous, following = base._get_indexes(np.empty(0), virtual, n)
    return previous, following, base._get_gamma(virtual, previous, props)


def quantiles_of_lanes(x, q, method, weak):
    """The quantiles q (a 1-d array) of each lane (last axis) of x, interpolated as numpy's
    `_lerp` does; shape x.shape[:-1] + (q.size,). `weak`: q was a Python number (its gamma
    keeps the dtype of x, as in numpy)."""
    n = x._data.shape[-1]
    s = sorted_along(x, -1)
    previous, following, gamma = quantile_positions(n, q, method)
    lower = getitem(s, (Ellipsis, previous))
    if gamma is None:
        return nan_propagated(s, lower)
    upper = getitem(s, (Ellipsis, following))
    step = sub(upper, lower)
    weight = float(gamma[0]) if weak else gamma
    above = gamma >= 0.5
    result = None
    if not above.all():
        result = add(lower, mul(step, weight))
    if above.any():
        high = sub(upper, mul(step, 1 - weight))
        result = high if result is None else where(above, high, result)
    return nan_propagated(s, result)


def _float_only(x, what):
    if x._data.dtype.kind != "f":
        raise RuntimeError(f"{what} only support floating point and complex dtypes")


median_return = collections.namedtuple("median", ["values", "indices"])


def median(x, dim=None, keepdim=False):
    """PyTorch's median: the lower of the two middle values (NaN if there is one). Without
    `dim`, of all values, the gradient shared by the values equal to it; with `dim`, (values,
    indices) along it, the gradient going to the index (the stable order's middle one, or the
    first NaN)."""
    x = as_tensor(x)
    if dim is None:
        return _median_of_all(x)
    data = x._data
    (d,) = _dims(dim, None, data.ndim)
    if data.ndim == 0:
        values, indices = median(reshape(x, 1, name=_HIDDEN), 0)
        return median_return(values, indices)
    n = data.shape[d]
    if n == 0:
        raise IndexError(f"median(): Expected reduction dim {d} to have non-zero size.")
    k = (n - 1) // 2
    missing = np.isnan(data).sum(axis=d, keepdims=True) if data.dtype.kind == "f" else 0
    rank = np.broadcast_to(np.where(missing > 0, n - missing, k), reduced_shape(data.shape,
                                                                                 (d,), True))
    indices = np.take_along_axis(stable_order(data, d), rank, axis=d)
    s = sorted_along(x, d)
    key = [slice(None)] * data.ndim
    key[d] = slice(k, k + 1)
    last = [slice(None)] * data.ndim
    last[d] = slice(n - 1, n)
    values = getitem(s, tuple(key))
    if data.dtype.kind == "f":
        top = getitem(s, tuple(last))
        values = where(ne(top, top), top, values)
    if not keepdim:
        values = reshape(values, np.squeeze(values._data, d).shape)
        indices = np.squeeze(indices, d)
    if values._node is not None:
        values._node._name = "MedianBackward1"
    return median_return(values, Tensor(np.asarray(indices, np.int64)))


def _median_of_all(x):
    flat = reshape(x, -1, name=_HIDDEN)
    n = flat._data.size
    if n == 0:
        out = add(sum(flat), math.nan)
    else:
        s = sorted_along(flat, 0)
        middle = getitem(s, (n - 1) // 2)
        # the values equal to the median share its gradient (PyTorch's rule)
        below = where(le(flat, middle), flat, -math.inf)
        out = nan_propagated(s, amax(below))
    if out._node is not None:
        out._node._name = "MedianBackward0"
    return out


def variance(x, dims, ddof, keepdim, value, name="VarBackward0"):
    """The variance of x over `dims` (None: all), whose value numpy computed: the sum of squared
    deviations from the mean, divided by max(n - ddof, 0) (numpy's order of operations)."""
    x = as_tensor(x)
    if not _recording(x):
        return Tensor(np.asarray(value))
    deviation = sub(x, mean(x, dims, keepdim=True))
    d = deviation._data
    squares = _reduce(P["segsumsq"], deviation, dims, keepdim,
                      np.add.reduce(d * d, axis=dims, keepdims=keepdim), 1.0, (_HIDDEN, _HIDDEN))
    count = reduction_count(x._data.shape, dims)
    return record(P["div_const"], (squares,), value, c0=float(builtins.max(count - ddof, 0)),
                  name=name)


def reduction_count(shape, dims):
    """The number of values each reduction over `dims` (None: all) of `shape` takes."""
    return math.prod(shape) if dims is None else math.prod(shape[d] for d in dims)


def _spread_arguments(x, dim, unbiased, correction, what):
    """(x, dims, ddof) of PyTorch's var/std arguments, warning as PyTorch does when the degrees
    of freedom are not positive."""
    x = as_tensor(x)
    _float_only(x, "std and var")
    if isinstance(dim, bool):               # var(x, unbiased)
        dim, unbiased = None, dim
    dims = None if dim is None else _dims(dim, None, x._data.ndim)
    if correction is not None and unbiased is not None:
        raise TypeError(f"{what}() received an invalid combination of arguments: unbiased and "
                        "correction")
    ddof = correction if correction is not None else (0 if unbiased is False else 1)
    if reduction_count(x._data.shape, dims) - ddof <= 0:
        warnings.warn(f"{what}(): degrees of freedom is <= 0. Correction should be strictly less "
                      "than the reduction factor (input numel divided by output numel).",
                      UserWarning, stacklevel=3)
    return x, dims, ddof


def _numpy_variance(x, dims, ddof, keepdim):
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.var(x._data, axis=dims, ddof=ddof, keepdims=keepdim)


def var(x, dim=None, unbiased=None, keepdim=False, *, correction=None):
    """PyTorch's var: unbiased (correction 1) by default; `var(x, False)` and `correction=`."""
    x, dims, ddof = _spread_arguments(x, dim, unbiased, correction, "var")
    return variance(x, dims, ddof, keepdim, _numpy_variance(x, dims, ddof, keepdim))


def std(x, dim=None, unbiased=None, keepdim=False, *, correction=None):
    """PyTorch's std: sqrt(var), whose gradient is zero where the deviation is zero (PyTorch
    masks the division by a zero result)."""
    x, dims, ddof = _spread_arguments(x, dim, unbiased, correction, "std")
    v = variance(x, dims, ddof, keepdim, _numpy_variance(x, dims, ddof, keepdim), _HIDDEN)
    positive = gt(v, 0.0)
    out = where(positive, sqrt(where(positive, v, 1.0)), mul(v, 0.0))
    if out._node is not None:
        out._node._name = "StdBackward0"
    return out


def differences(x, n, axis, name="SubBackward0"):
    """The n-th differences of x along `axis`, one `gather_diff` entry per order, each numpy's
    x[1:] - x[:-1]."""
    for _ in range(n):
        shape = x._data.shape
        value = np.diff(x._data, axis=axis)
        if not _recording(x):
            x = Tensor(value)
            continue
        positions = _positions(shape)
        L = shape[axis]
        upper = np.take(positions, np.arange(1, L), axis=axis)
        lower = np.take(positions, np.arange(0, builtins.max(L - 1, 0)), axis=axis)
        x = record(P["gather_diff"], (x,), value, np.concatenate([upper.ravel(), lower.ravel()]),
                   name=name)
    return x


def diff(x, n=1, dim=-1, prepend=None, append=None):
    """PyTorch's diff: n-th forward differences along `dim`, after concatenating `prepend` and
    `append` (tensors of x's dimension)."""
    x = as_tensor(x)
    if x._data.ndim == 0:
        raise RuntimeError("diff expects input to be at least one-dimensional")
    if n < 0:
        raise RuntimeError(f"order must be non-negative but got {n}")
    (d,) = _dims(dim, None, x._data.ndim)
    parts = [as_tensor(p) for p in (prepend, x, append) if p is not None]
    if builtins.any(p._data.ndim != x._data.ndim for p in parts):
        raise RuntimeError("diff expects prepend or append to be the same dimension as input")
    if len(parts) > 1:
        x = cat(parts, d)
    return differences(x, n, d)


_INTERPOLATIONS = ("linear", "lower", "higher", "midpoint", "nearest")


def quantile(x, q, dim=None, keepdim=False, *, interpolation="linear"):
    """PyTorch's quantile: q a number or a 1-d tensor in [0, 1], of all values or along `dim`;
    the result has q's dimension first. The interpolations are numpy's methods of those names,
    computed as numpy does (PyTorch's kernel may round the last bit otherwise)."""
    x = as_tensor(x)
    if x._data.dtype.kind != "f":
        raise RuntimeError("quantile() input tensor must be either float or double dtype")
    if isinstance(q, Tensor) and _tracked(q):
        raise NotImplementedError("quantile(): q must be a constant (its gradient is not "
                                  "supported)")
    qs = np.asarray(q._data if isinstance(q, Tensor) else q, np.float64)
    if qs.ndim > 1:
        raise RuntimeError("quantile() q must be a scalar or 1D tensor")
    if x._data.size == 0:
        raise RuntimeError("quantile() input tensor must be non-empty")
    if ((qs < 0) | (qs > 1)).any():
        raise RuntimeError("quantile() q values must be in the range [0, 1]" if qs.ndim else
                           f"quantile() q must be in the range [0, 1] but got {float(qs):g}")
    if interpolation not in _INTERPOLATIONS:
        raise RuntimeError("quantile() interpolation must be one of linear, lower, higher, "
                           f"midpoint or nearest, but got {interpolation}")
    dims = None if dim is None else _dims(dim, None, x._data.ndim)
    lanes = lanes_last(x, dims)
    out = quantiles_of_lanes(lanes, qs.reshape(-1).astype(x._data.dtype), interpolation,
                             weak=False)
    shape = reduced_shape(x._data.shape, dims, keepdim)
    out = reshape(moved_first(out), qs.shape + shape, name="SqueezeBackward4")
    return out


def moved_first(x):
    """x with its last axis moved first."""
    ndim = x._data.ndim
    if ndim < 2:
        return x
    return permute(x, (ndim - 1,) + tuple(range(ndim - 1)), name=_HIDDEN)


def reduced_shape(shape, dims, keepdim):
    """The shape of a reduction of `shape` over `dims` (None: all)."""
    dims = range(len(shape)) if dims is None else dims
    if keepdim:
        return tuple(1 if d in dims else s for d, s in enumerate(shape))
    return tuple(s for d, s in enumerate(shape) if d not in dims)


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
    mul=mul, div=div, clone=clone, to=_to, float=_float, double=_double, cumsum=cumsum,
    cumprod=cumprod, sort=sort, var=var, std=std, median=median, diff=diff, quantile=quantile,
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


def positive(x):
    """+x: x itself (PyTorch's positive returns its operand)."""
    return as_tensor(x)


def float_power(a, b):
    """a ** b computed in float64 (PyTorch's and numpy's float_power)."""
    return pow(*(v if _is_number(v) else astype(as_tensor(v), np.dtype(np.float64))
                 for v in (a, b)))


negative = neg


def _rmod(x, other): return remainder(other, x)


# The elementwise functions above as methods (`x.sinh()`, `x.atan2(y)`), and `%`.
_METHODS.update(
    arcsin=arcsin, asin=arcsin, arccos=arccos, acos=arccos, arctan=arctan, atan=arctan,
    arcsinh=arcsinh, asinh=arcsinh, arccosh=arccosh, acosh=arccosh, arctanh=arctanh,
    atanh=arctanh, arctan2=arctan2, atan2=arctan2, sinh=sinh, cosh=cosh, log2=log2,
    log10=log10, exp2=exp2, reciprocal=reciprocal, sinc=sinc, deg2rad=deg2rad,
    rad2deg=rad2deg, nan_to_num=nan_to_num, fmax=fmax, fmin=fmin,
    remainder=remainder, fmod=fmod, copysign=copysign, heaviside=heaviside, hypot=hypot,
    logaddexp=logaddexp, logaddexp2=logaddexp2, negative=neg, positive=positive,
    float_power=float_power, __mod__=remainder, __rmod__=_rmod,
)
for _name, _fn in _METHODS.items():
    setattr(Tensor, _name, _fn)
