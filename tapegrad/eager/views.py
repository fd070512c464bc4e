"""Views: tensors that share memory with a base tensor, with PyTorch's semantics.

Basic indexing (ints, slices, None, Ellipsis), `reshape`/`view`/`flatten`/`squeeze`/`unsqueeze`
where numpy reshapes without copying, and `permute`/`transpose`/`t`/`T`/`mT` return views, as in
PyTorch: the view's value is a numpy view of its base's memory. `detach()` shares memory too but
is not a view (PyTorch's `_base` is None for it). Integer-array and boolean indexing copy.

A view records, in `Tensor._view`, its root (the tensor that is not a view and whose memory it
shares), the root's rebinding count when the view's grad_fn was made (-1 for a view made under
`no_grad` of a tensor that requires grad), then the chain of view operations from the root
(kind, arg, kind, arg...). Its positions in the root are the chain replayed on the root's flat
positions.

A recorded in-place operation on the root or on another of its views gives the root a new
grad_fn (`eager.inplace`); a view recorded before then takes, when it is next used, a grad_fn
over the root's new one (PyTorch's `AsStridedBackward0`): `refresh`. Recording, `grad_fn` and
`requires_grad` call it, so this module sits below the tensor and builds that grad_fn's node
itself (`gather_entry` says which entry reads a view's positions, for the ops as well).
"""
import numpy as np

from .graph import Node, rebound_tensors, base_array, rebind, rebind_count, state
from ..core.registry import BY_NAME

_WINDOW, _GATHER = BY_NAME["window"], BY_NAME["gather"]


def tracked(t):
    """Whether `t` is part of a recording: it requires grad or was computed by a node."""
    return t._requires_grad or t._node is not None


def involved(t):
    """Whether an in-place write into `t` with grad mode on concerns autograd: `t`, or the base
    it is a view of, requires grad (or `t` is a view made under no_grad of such a base)."""
    if tracked(t):
        return True
    view = t._view
    return view is not None and (view[1] < 0 or tracked(view[0]))


def mark(out, x, kind, arg):
    """Make `out`, whose value is a numpy view of `x`'s, a view of `x` made by `kind` ("index",
    "reshape" or "permute") with `arg` (the key, shape or axes). Kept short: every slice of a
    tensor passes here."""
    if out._node is None and (x._requires_grad or x._node is not None):
        stamp = -1              # not recorded although x requires grad: made under no_grad
    elif rebound_tensors:
        stamp = rebind_count(x if x._view is None else x._view[0])
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


def still_a_view(t):
    """The positions of view `t` in its root, or None when `.data =` broke the sharing."""
    root = t._view[0]
    if base_array(t._data) is not base_array(root._data):
        return None
    p = positions(root, t._view[2:])
    return p if p.shape == t._data.shape else None


def gather_entry(positions):
    """(primitive, payload) of the entry y = x.flat[positions]: a window (start, step) when the
    positions are an arithmetic progression (slices: no index map, and a reverse sweep that
    vectorises), else a gather with the index map."""
    positions = np.ascontiguousarray(positions, np.int64).ravel()
    n = positions.size
    if n < 3:
        if n:
            return _WINDOW, window(int(positions[0]), int(positions[-1] - positions[0]))
    elif n <= 16:               # small maps (scalar graphs): Python ints cost less than numpy
        p = positions.tolist()
        step = p[1] - p[0]
        if all(p[k + 1] - p[k] == step for k in range(n - 1)):
            return _WINDOW, window(p[0], step)
    else:
        step = int(positions[1] - positions[0])
        if (np.diff(positions) == step).all():
            return _WINDOW, window(int(positions[0]), step)
    return _GATHER, positions


def window(start, step):
    """The payload of a window entry: y[i] = x.flat[start + i * step]."""
    return _array((start, step), np.int64)


# numpy's own array, bound at import: while a function is traced `np.array` is a wrapper that
# looks for traced values (`eager.numpy_api.building`), which a payload never holds
_array = np.array


def refresh(t):
    """Give view `t` a grad_fn over its root's current one when the root was rebound since (a
    recorded in-place operation on the root or on another of its views)."""
    view = t._view
    root, stamp = view[0], view[1]
    now = rebind_count(root)
    if stamp < 0 or now == stamp:
        return
    p = still_a_view(t)
    if p is None:
        t._view = None
        return
    node = None
    if root._requires_grad or (state.tracing and root._node is not None):   # as `record` does
        prim, payload = gather_entry(p)
        node = Node(prim, (root,), t._data, payload, name="AsStridedBackward0")
    rebind(t, t._snapshot())
    t._node, t._requires_grad = node, node is not None
    t._view = (root, now) + view[2:]


def refresh_all(tensors):
    for t in tensors:
        if t._view is not None:
            refresh(t)
