"""Arrays built from traced values: `np.array([x, 2 * x])`, `np.asarray`, `np.r_`, `np.c_`,
`np.full(shape, x)`, and numpy functions given lists of traced values (`np.mean([x, x + 2])`).

numpy builds an array from a list without asking its elements anything but their values
(`__array__`), and `np.array` always returns a plain ndarray: no dispatch hook can make it return
a traced value. So while a function transform traces, and only then, `patched` replaces
numpy's array constructors (`numpy.array`, `asarray`, `asanyarray`, the constructor `np.r_` and
`np.c_` use), `np.full` and `np.full_like` (numpy converts the fill value to a plain array
before anything dispatches: `np.full` dispatches on `like=` only, `np.full_like` on the
prototype only) and the numpy functions of `LIST_ARGUMENTS` in numpy's namespace by wrappers
that build a traced value when the argument holds one, and call numpy's own function otherwise
(numpy's result, unchanged). They are installed by the outermost trace of any thread and removed
when the last one ends; a thread that is not tracing gets numpy's function. Code holding numpy's
functions under other names (`from numpy import array`) reaches numpy's: the traced value
refuses the conversion with an error that says what to write (`Tensor.__array__`).

The value is numpy's (`np.array` of the values, its dtype and shape, errors for ragged lists
included); it is recorded as one `pack` entry of the traced and constant elements.
"""
import threading

import numpy as np
import numpy.lib._index_tricks_impl as _index_tricks

from .. import ops
from ..graph import state
from ..tensor import Tensor
from . import shapes

# numpy functions whose first argument may be a list of traced values (numpy converts it with
# asanyarray inside, out of dispatch's reach)
LIST_ARGUMENTS = ("sum", "mean", "prod", "max", "min", "amax", "amin", "std", "var", "average",
                  "median", "cumsum", "cumprod", "diff", "sort", "ravel", "reshape",
                  "transpose", "dot", "outer", "inner", "trace", "clip")

_ORIGINAL = {"array": np.array, "asarray": np.asarray, "asanyarray": np.asanyarray,
             "full": np.full, "full_like": np.full_like}


def holds_traced(obj):
    """Whether `obj` is, or a list/tuple (nested) holds, a tensor that is recorded."""
    if isinstance(obj, Tensor):
        return obj._requires_grad or obj._node is not None
    if isinstance(obj, (list, tuple)):
        for item in obj:
            if holds_traced(item):
                return True
    return False


def build(obj, dtype=None, ndmin=0):
    """The traced array of `obj` (a list, nested, of traced values and constants): numpy's
    value, recorded as one pack of its elements."""
    leaves = []
    value = _ORIGINAL["array"](_values(obj, leaves), dtype=dtype, ndmin=ndmin)
    tensors = [ops.astype(ops.as_tensor(leaf), value.dtype) for leaf in leaves]
    if len(tensors) == 1:
        out = tensors[0]
    else:
        out = ops.cat([ops.reshape(t, -1) for t in tensors])
    return ops.reshape(out, value.shape) if out._data.shape != value.shape else out


def _values(obj, leaves):
    """`obj` with its tensors replaced by their values; the leaves (the non-list elements) are
    appended to `leaves` in numpy's order."""
    if isinstance(obj, (list, tuple)):
        return [_values(item, leaves) for item in obj]
    leaves.append(obj)
    return obj._data if isinstance(obj, Tensor) else obj


def _traced_array(object, dtype=None, *args, copy=True, ndmin=0, **kwargs):
    """`np.array` while tracing (see the module docstring); numpy's other keywords (order,
    subok, like) do not change a traced value."""
    if not (state.tracing and holds_traced(object)):
        return _ORIGINAL["array"](object, dtype, *args, copy=copy, ndmin=ndmin, **kwargs)
    if isinstance(object, Tensor):
        out = object if dtype is None else ops.astype(object, np.dtype(dtype))
        if ndmin > out._data.ndim:
            out = ops.reshape(out, (1,) * (ndmin - out._data.ndim) + out._data.shape)
        return ops.clone(out) if copy and out is object else out
    return build(object, dtype, ndmin)


def _converter(name):
    def convert(a, dtype=None, order=None, **kwargs):
        if not (state.tracing and holds_traced(a)):
            return _ORIGINAL[name](a, dtype, order, **kwargs)
        if isinstance(a, Tensor):
            return a if dtype is None else ops.astype(a, np.dtype(dtype))
        return build(a, dtype)
    convert.__name__ = convert.__qualname__ = name
    convert.__doc__ = f"`np.{name}` while tracing (see `eager.numpy_api.building`)."
    return convert


def _traced_full(shape, fill_value, dtype=None, order="C", *, device=None, like=None):
    """`np.full` while tracing: a traced fill value (or a list holding one) is recorded."""
    if not (state.tracing and holds_traced(fill_value)):
        return _ORIGINAL["full"](shape, fill_value, dtype, order, device=device, like=like)
    return shapes.full(shape, _as_traced(fill_value), dtype, order)


def _traced_full_like(a, fill_value, dtype=None, order="K", subok=True, shape=None, *,
                      device=None):
    """`np.full_like` while tracing: a traced fill value (or a list holding one) is recorded,
    whatever the prototype."""
    if not (state.tracing and holds_traced(fill_value)):
        return _ORIGINAL["full_like"](a, fill_value, dtype, order, subok, shape, device=device)
    return shapes.full_like(a, _as_traced(fill_value), dtype, order, subok, shape)


def _as_traced(obj):
    return obj if isinstance(obj, Tensor) else build(obj)


def _list_argument(function):
    def call(a, *args, **kwargs):
        if state.tracing and isinstance(a, (list, tuple)) and holds_traced(a):
            a = build(a)
        return function(a, *args, **kwargs)
    call.__name__ = call.__qualname__ = function.__name__
    call.__doc__ = function.__doc__
    call.__wrapped__ = function
    return call


def _replacements():
    """(namespace, name, numpy's function, the wrapper) of everything `patched` replaces."""
    table = [(np, name, _ORIGINAL[name], _converter(name)) for name in ("asarray", "asanyarray")]
    table.append((np, "array", _ORIGINAL["array"], _traced_array))
    table.append((_index_tricks, "array", _index_tricks.array, _traced_array))
    table += [(np, name, getattr(np, name), _list_argument(getattr(np, name)))
              for name in LIST_ARGUMENTS]
    table.append((np, "full", _ORIGINAL["full"], _traced_full))
    table.append((np, "full_like", _ORIGINAL["full_like"], _traced_full_like))
    return table


_REPLACEMENTS = _replacements()
_lock = threading.Lock()
_users = 0


class patched:
    """Context of a trace: numpy's constructors build traced values (see the module
    docstring); nested and concurrent traces share one installation."""

    def __enter__(self):
        global _users
        with _lock:
            if _users == 0:
                for namespace, name, _, wrapper in _REPLACEMENTS:
                    setattr(namespace, name, wrapper)
            _users += 1

    def __exit__(self, *exc):
        global _users
        with _lock:
            _users -= 1
            if _users == 0:
                for namespace, name, original, _ in _REPLACEMENTS:
                    setattr(namespace, name, original)
