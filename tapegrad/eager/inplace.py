"""In-place operations: `x += y`, `x.mul_(2)`, `x.zero_()`, `x.copy_(y)`, `x[key] = v`.

Every in-place operation writes the tensor's memory, which its views and its base share (see
`eager.views`), and counts one write in the version of that memory (`graph.wrote`): backward
checks that the values its nodes saved are still at the versions they recorded, and raises
PyTorch's error otherwise. Under `no_grad` (the SGD step `w -= lr * g`, `w[0:2] -= lr * g`) the
write is all there is. With grad mode on and anything involved requiring grad, the write is also
recorded, with PyTorch's semantics:

* on the whole of a tensor that is not a view (`b += x`, `b.exp_()`), the tensor takes the
  result's grad_fn, and the nodes recorded before keep the tensor's previous state
  (`graph.rebind`);
* on a view (`y[0:2].mul_(3)` with `y` requiring grad), the base takes PyTorch's `CopySlices`
  grad_fn: the base's new value is a gather over (the base before, the operation's result), so
  the gradient reaching the base flows to the written region through the operation and to the
  rest of the base unchanged. `b[mask] = v` is the same write with an index map
  (`IndexPutBackward0`); `y.zero_()`, `y.fill_(v)`, `y.copy_(constant)` on a tensor that
  requires grad write a constant (the gradient to the old value is zero);
* in-place operations on a leaf that requires grad, on a view of one, and on a view made under
  `no_grad` from a tensor that requires grad raise PyTorch's errors (`check_modifiable`).

The operations are computed by `eager.ops` and attached to `Tensor` here.
"""
import functools
import weakref

import numpy as np

from . import graph, ops, views
from .dtypes import torch_type
from .graph import rebound_tensors, rebind, saved_operands, state, wrote
from .tensor import Tensor, record

_HIDDEN = ""
_LEAF_INPLACE = "a leaf Variable that requires grad is being used in an in-place operation."
_VIEW_OF_LEAF = ("a view of a leaf Variable that requires grad is being used in an in-place "
                 "operation.")
_NO_GRAD_VIEW = (
    "A view was created in no_grad mode and is being modified inplace with grad mode enabled. "
    "Given that this use case is ambiguous and error-prone, it is forbidden. You can clarify your "
    "code by moving both the view and the inplace either both inside the no_grad block (if you "
    "don't want the inplace to be tracked) or both outside (if you want the inplace to be "
    "tracked).")
_OVERLAPPING = ("unsupported operation: more than one element of the written-to tensor refers to "
                "a single memory location. Please clone() the tensor before performing the "
                "operation.")


# ---- the Tensor methods ------------------------------------------------------------------------

def _inplace(t, op, other, name="CopySlices"):
    """`t op= other`, PyTorch's semantics: in memory only when nothing is recorded (under
    `no_grad`: the SGD step); recorded otherwise. `name` is the grad_fn of a constant written
    into a tensor that requires grad (`zero_`, `fill_`)."""
    if not state.grad_enabled:
        write(t, t, _fitted(t, op(t, other)), name)
        return t
    if rebound_tensors and t._view is not None:
        views.refresh(t)
    check_modifiable(t)
    before = t._snapshot()
    result = op(before, other)
    node = result._node
    if node is not None and node._inputs[0] is before and 0 in saved_operands(node):
        result = op(original(before), other)     # its VJP reads the old value
    write(t, before, _fitted(t, result), name)
    return t


def _fitted(t, result):
    """`result` checked against `t`'s shape and cast to its dtype."""
    shape = result._data.shape
    if shape != t._data.shape:
        raise RuntimeError(f"output with shape {list(t._data.shape)} doesn't match the "
                           f"broadcast shape {list(shape)}")
    return _cast(t, result)


def _cast(t, result):
    """`result` as `t`'s dtype (recorded when `result` is), where numpy casts within a kind."""
    dtype, mine = result._data.dtype, t._data.dtype
    if dtype == mine:
        return result
    if not np.can_cast(dtype, mine, "same_kind"):
        raise RuntimeError(f"result type {torch_type(dtype)} can't be cast to the desired "
                           f"output type {torch_type(mine)}")
    return ops.astype(result, mine) if result._node is not None else \
        Tensor(result._data.astype(mine))


def _iadd(t, other): return _inplace(t, ops.add, other)
def _isub(t, other): return _inplace(t, ops.sub, other)
def _imul(t, other): return _inplace(t, ops.mul, other)
def _itruediv(t, other): return _inplace(t, ops.div, other)
def _ipow(t, other): return _inplace(t, ops.pow, other)


def add_(t, other, alpha=1):
    return _inplace(t, ops.add, other if alpha == 1 else ops.mul(other, alpha))


def sub_(t, other, alpha=1):
    return _inplace(t, ops.sub, other if alpha == 1 else ops.mul(other, alpha))


def copy_(t, src):
    """Copy `src` (broadcast, cast to `t`'s dtype) into `t`."""
    return _inplace(t, functools.partial(_copy_of, t), src, "CopyBackwards")


def _copy_of(t, old, src):
    """`src` broadcast to `t`'s shape, as `t`'s dtype (recorded)."""
    src = ops.broadcast_to(ops.as_tensor(src), t._data.shape)
    return record(ops.P["copy"], (src,), src._data.astype(t._data.dtype), name="CopyBackwards")


def zero_(t):
    return _fill(t, 0, "ZeroBackward0")


def fill_(t, value):
    return _fill(t, value, "FillBackward2")


def _fill(t, value, name):
    if value.__class__ is not Tensor and not (state.grad_enabled and views.involved(t)):
        t._data[...] = value           # the common `w.grad.zero_()`, kept short
        wrote(t._data)
        return t
    return _inplace(t, functools.partial(_copy_of, t), value, name)


def setitem(t, key, value):
    """`t[key] = value`: a copy into the view `t[key]` for basic indexing (PyTorch's
    CopySlices), an index put for integer-array and boolean keys."""
    key = ops.index_key(key)
    tracked = isinstance(value, Tensor) and (value._requires_grad or value._node is not None)
    if not (state.grad_enabled and (tracked or views.involved(t))):
        t._data[key] = value._data if isinstance(value, Tensor) else value
        wrote(t._data)
        return
    if rebound_tensors and t._view is not None:
        views.refresh(t)
    if ops.basic_key(key):         # on a leaf: PyTorch's error for a view of a leaf
        copy_(ops.getitem(t, key), value)
        return
    check_modifiable(t)
    before = t._snapshot()
    region = np.empty(t._data.shape, np.bool_)[key].shape
    src = _cast(t, ops.broadcast_to(ops.as_tensor(value), region))
    write(t, before, src, "IndexPutBackward0", key)


# ---- the write ---------------------------------------------------------------------------------

def check_modifiable(t):
    """PyTorch's errors for an in-place operation with grad mode on."""
    if t._node is None and t._requires_grad:
        raise RuntimeError(_LEAF_INPLACE)
    view = t._view
    if view is not None:
        if view[1] < 0:
            raise RuntimeError(_NO_GRAD_VIEW)
        root = view[0]
        if root._node is None and root._requires_grad:
            raise RuntimeError(_VIEW_OF_LEAF)


def original(t):
    """`t`'s current values in memory of their own, standing for `t` as the operand of an
    in-place operation whose VJP reads it (PyTorch saves the original self): the write would
    change them otherwise."""
    copy = t._data.copy()
    if not views.tracked(t):
        return Tensor(copy)
    return record(ops.P["copy"], (t,), copy, name=_HIDDEN)


def _check_writable(data):
    if not data.flags.writeable:
        for size, stride in zip(data.shape, data.strides):
            if stride == 0 and size > 1:
                raise RuntimeError(_OVERLAPPING)


def write(target, before, result, name, key=Ellipsis):
    """Write `result` (a tensor of the region's shape and `target`'s dtype) into `target[key]`,
    in memory, and record it when grad mode is on and anything involved requires grad:

    * the whole of a tensor that is not a view, with a recorded result (`b += x`, `b.exp_()`):
      the tensor takes the result's grad_fn, and the result's node takes the tensor's memory
      as its value (`graph.adopt`);
    * anything else (a view, a region, a constant result): the root's new grad_fn is a gather
      over (the root before, the result): CopySlices for a view, else `name`
      (IndexPutBackward0, ZeroBackward0...).

    `before` is a snapshot of `target` taken before the operation computed `result`; the nodes
    recorded before keep seeing it (`graph.rebind`)."""
    data = target._data
    view = target._view
    root = target if view is None else view[0]
    tracked = views.tracked
    if not (state.grad_enabled and (tracked(result) or tracked(target) or tracked(root))):
        try:
            data[key] = result._data
        except ValueError:          # read-only memory: PyTorch's error for an expanded tensor
            _check_writable(data)
            raise
        wrote(data)
        return
    _check_writable(data)           # before anything is recorded
    region = None if view is None else views.still_a_view(target)
    if region is None:
        view, root, target._view = None, target, None
    if view is None and key is Ellipsis and result._node is not None:
        data[...] = result._data
        wrote(data)
        graph.adopt(result._node, data)
        _follow(target, before, result._node)
        return
    if region is None:
        region = np.arange(data.size, dtype=np.int64).reshape(data.shape)
    if key is not Ellipsis:
        region = region[key]
    root_before = before if root is target else root._snapshot()
    packed = _pack(root_before, result)        # before the write: the root's old values
    data[key] = result._data
    wrote(data)
    _copy_slices(root, root_before, packed, region, name if view is None else "CopySlices")
    if view is not None:
        views.refresh(target)


def _pack(root_before, result):
    value = np.concatenate((root_before._data.reshape(-1), result._data.reshape(-1)))
    return record(ops.P["pack"], (root_before, result), value, name=_HIDDEN)


def _copy_slices(root, root_before, packed, region, name):
    """The root's new grad_fn: its value (written already) is `packed` = (the root before, the
    result) gathered at `index`, which picks the result at the flat positions `region` and the
    root's old value elsewhere."""
    n = root._data.size
    index = np.arange(n, dtype=np.int64)
    index[region.reshape(-1)] = n + np.arange(region.size, dtype=np.int64)
    node = ops.record_gather(packed, index.reshape(root._data.shape), root._data, name)._node
    _follow(root, root_before, node)


def _follow(tensor, before, node):
    """`tensor` (rebound) takes `node` as its grad_fn; a retained grad follows it."""
    old = tensor._node
    if old is not None and old.retained is not None:
        old.retained = None
        node.retained = weakref.ref(tensor)
        graph.retaining = True
    rebind(tensor, before)
    tensor._node = node
    tensor._requires_grad = True


_METHODS = dict(
    __iadd__=_iadd, __isub__=_isub, __imul__=_imul, __itruediv__=_itruediv, __ipow__=_ipow,
    add_=add_, sub_=sub_, copy_=copy_, zero_=zero_, fill_=fill_, __setitem__=setitem,
    mul_=_imul, div_=_itruediv, pow_=_ipow,
)
for _name, _method in _METHODS.items():
    setattr(Tensor, _name, _method)
