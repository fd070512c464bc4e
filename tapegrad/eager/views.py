"""Views: tensors that share memory with a base tensor, with PyTorch's semantics.

Basic indexing (ints, slices, None, Ellipsis), `reshape`/`view`/`flatten`/`squeeze`/`unsqueeze`
where numpy reshapes without copying, and `permute`/`transpose`/`t`/`T`/`mT` return views, as in
PyTorch: the view's value is a numpy view of its base's memory. `detach()` shares memory too but
is not a view (PyTorch's `_base` is None for it). Integer-array and boolean indexing copy.

What follows from sharing memory, as in PyTorch:

* An in-place operation writes memory, so the base and every view of it see the new values, and
  it counts one write in the version shared by everything on that memory (`_graph.wrote`): a
  node that saved any of those values raises at backward. Under `no_grad` (the SGD step
  `w[0:2] -= lr * g`) the write is all there is.
* A recorded in-place operation on a view (`y[0:2].mul_(3)` with `y` requiring grad) gives the
  base PyTorch's `CopySlices` grad_fn: the base's new value is a gather over (the base before,
  the operation's result), so the gradient reaching the base flows to the written region
  through the operation and to the rest of the base unchanged. `b[mask] = v` is the same write
  with an index map (`IndexPutBackward0`); `y.zero_()`, `y.fill_(v)`, `y.copy_(constant)` on a
  tensor that requires grad write a constant (the gradient to the old value is zero).
* A view whose base got a new grad_fn since the view's own was recorded takes, when it is next
  used, a grad_fn over the base's new one (PyTorch's `AsStridedBackward0`): `refresh`.
* In-place operations on a view of a leaf that requires grad, and on a view made under
  `no_grad` from a tensor that requires grad, raise PyTorch's errors (`check_modifiable`).

A view records, in `Tensor._view`, its root (the tensor that is not a view and whose memory it
shares), the root's rebinding count when the view's grad_fn was made (-1 for a view made under
`no_grad` of a tensor that requires grad), then the chain of view operations from the root
(kind, arg, kind, arg...). Its positions in the root are the chain replayed on the root's flat
positions.
"""
import weakref

import numpy as np

from . import graph as _graph
from .graph import _count_rebinds, _rebound, rebind, state, wrote

_HIDDEN = ""
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


def _tracked(t):
    return t._requires_grad or t._node is not None


def involved(t):
    """Whether an in-place write into `t` with grad mode on concerns autograd: `t`, or the base
    it is a view of, requires grad (or `t` is a view made under no_grad of such a base)."""
    if _tracked(t):
        return True
    view = t._view
    return view is not None and (view[1] < 0 or _tracked(view[0]))


def mark(out, x, kind, arg):
    """Make `out`, whose value is a numpy view of `x`'s, a view of `x` made by `kind` ("index",
    "reshape" or "permute") with `arg` (the key, shape or axes). Kept short: every slice of a
    tensor passes here."""
    if out._node is None and (x._requires_grad or x._node is not None):
        stamp = -1              # not recorded although x requires grad: made under no_grad
    elif _rebound:
        stamp = _count_rebinds(x if x._view is None else x._view[0])
    else:
        stamp = 0
    parent = x._view
    if parent is None:
        out._view = (x, stamp, kind, arg)
    else:
        out._view = (parent[0], -1 if parent[1] < 0 else stamp) + parent[2:] + (kind, arg)
    return out


def positions(root, chain):
    """The flat positions in `root` of the elements of the view that `chain` (kind, arg, kind,
    arg...) makes of it."""
    p = np.arange(root._data.size, dtype=np.int64).reshape(root._data.shape)
    for i in range(0, len(chain), 2):
        kind, arg = chain[i], chain[i + 1]
        if kind == "index":
            p = p[arg]
        elif kind == "reshape":
            p = p.reshape(arg)
        else:
            p = np.transpose(p, arg)
    return p


def _still_a_view(t):
    """The positions of view `t` in its root, or None when `.data =` broke the sharing."""
    root = t._view[0]
    if _graph._base(t._data) is not _graph._base(root._data):
        return None
    p = positions(root, t._view[2:])
    return p if p.shape == t._data.shape else None


def refresh(t):
    """Give view `t` a grad_fn over its root's current one when the root was rebound since (a
    recorded in-place operation on the root or on another of its views)."""
    view = t._view
    root, stamp = view[0], view[1]
    now = _count_rebinds(root)
    if stamp < 0 or now == stamp:
        return
    p = _still_a_view(t)
    if p is None:
        t._view = None
        return
    node = None
    if _tracked(root):
        from .ops import _gather
        mode, state.grad_enabled = state.grad_enabled, True
        try:
            node = _gather(root, p, t._data, "AsStridedBackward0")._node
        finally:
            state.grad_enabled = mode
    rebind(t, t._snapshot())
    t._node, t._requires_grad = node, node is not None
    t._view = (root, now) + view[2:]


def refresh_all(tensors):
    for t in tensors:
        if t._view is not None:
            refresh(t)


def check_modifiable(t):
    """PyTorch's errors for an in-place operation with grad mode on."""
    if t._node is None and t._requires_grad:
        from .tensor import _LEAF_INPLACE
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
    from .tensor import Tensor, record
    from .ops import P
    copy = t._data.copy()
    if not _tracked(t):
        return Tensor(copy)
    return record(P["copy"], (t,), copy, name=_HIDDEN)


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
      as its value (`_graph.adopt`);
    * anything else (a view, a region, a constant result): the root's new grad_fn is a gather
      over (the root before, the result): CopySlices for a view, else `name`
      (IndexPutBackward0, ZeroBackward0...).

    `before` is a snapshot of `target` taken before the operation computed `result`; the nodes
    recorded before keep seeing it (`_graph.rebind`)."""
    data = target._data
    view = target._view
    root = target if view is None else view[0]
    if not (state.grad_enabled and (_tracked(result) or _tracked(target) or _tracked(root))):
        try:
            data[key] = result._data
        except ValueError:          # read-only memory: PyTorch's error for an expanded tensor
            _check_writable(data)
            raise
        wrote(data)
        return
    _check_writable(data)           # before anything is recorded
    region = None if view is None else _still_a_view(target)
    if region is None:
        view, root, target._view = None, target, None
    if view is None and key is Ellipsis and result._node is not None:
        data[...] = result._data
        wrote(data)
        _graph.adopt(result._node, data)
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
        refresh(target)


def _pack(root_before, result):
    from .tensor import record
    from .ops import P
    value = np.concatenate((root_before._data.reshape(-1), result._data.reshape(-1)))
    return record(P["pack"], (root_before, result), value, name=_HIDDEN)


def _copy_slices(root, root_before, packed, region, name):
    """The root's new grad_fn: its value (written already) is `packed` = (the root before, the
    result) gathered at `index`, which picks the result at the flat positions `region` and the
    root's old value elsewhere."""
    from .ops import _gather
    n = root._data.size
    index = np.arange(n, dtype=np.int64)
    index[region.reshape(-1)] = n + np.arange(region.size, dtype=np.int64)
    node = _gather(packed, index.reshape(root._data.shape), root._data, name)._node
    _follow(root, root_before, node)


def _follow(tensor, before, node):
    """`tensor` (rebound) takes `node` as its grad_fn; a retained grad follows it."""
    old = tensor._node
    if old is not None and old.retained is not None:
        old.retained = None
        node.retained = weakref.ref(tensor)
        _graph.retaining = True
    rebind(tensor, before)
    tensor._node = node
    tensor._requires_grad = True
