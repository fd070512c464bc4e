"""numpy's reductions and scans on tensors.

`sum`, `mean`, `prod`, `max`/`amax`, `min`/`amin` are the ops themselves (they take numpy's
`axis`, `keepdims` and `dtype` as well as PyTorch's `dim` and `keepdim`). The others compute
numpy's value with numpy itself (so the value, the warnings and the errors for bad arguments are
numpy's) and record a lowering onto the primitives: scans (`cumsum`, `cumprod`).
"""
import numpy as np
from numpy.lib.array_utils import normalize_axis_index

from .. import ops
from .registry import implements

implements(np.sum)(ops.sum)
implements(np.mean)(ops.mean)
implements(np.prod)(ops.prod)
implements(np.max, np.amax)(ops.amax)
implements(np.min, np.amin)(ops.amin)

_NO = np._NoValue


def _refuse(name, **arguments):
    """TypeError for numpy arguments tapegrad does not support (given, and not their default)."""
    for key, value in arguments.items():
        if value is not None and value is not _NO and value is not False:
            raise TypeError(f"numpy.{name}: the argument {key}= is not supported on Tensors")


def _flat(a):
    return ops.reshape(a, -1, name="")


# ---- scans ------------------------------------------------------------------------------------

def _scan(prim, npfn, name, a, axis, dtype, out):
    _refuse(npfn.__name__, out=out)
    a = ops.as_tensor(a)
    value = npfn(a._data, axis=axis, dtype=dtype)
    if axis is None:
        a, axis = _flat(a), 0
    else:
        axis = normalize_axis_index(axis, a._data.ndim)
    return ops.scan(prim, a, axis, value, name)


@implements(np.cumsum, notes="one `cumsum` entry (a scan along the axis); values as numpy's "
                             "sequential sums")
def cumsum(a, axis=None, dtype=None, out=None):
    return _scan(ops.P["cumsum"], np.cumsum, "CumsumBackward0", a, axis, dtype, out)


@implements(np.cumprod, notes="one `cumprod` entry; gradients of every order exact at zeros "
                              "(no division)")
def cumprod(a, axis=None, dtype=None, out=None):
    return _scan(ops.P["cumprod"], np.cumprod, "CumprodBackward0", a, axis, dtype, out)
