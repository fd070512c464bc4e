"""numpy's elementwise functions on tensors: arithmetic, powers, exponentials and logarithms,
trigonometry, comparisons, `where` and `clip`. Each is the eager op of the same meaning."""
import numpy as np

from .. import ops
from .registry import implements, implements_ufunc

_SAME_AS = {        # numpy's ufunc -> the op that computes it (called with the operands)
    np.add: ops.add, np.subtract: ops.sub, np.multiply: ops.mul, np.divide: ops.div,
    np.power: ops.pow, np.negative: ops.neg, np.absolute: ops.abs, np.exp: ops.exp,
    np.log: ops.log, np.log1p: ops.log1p, np.expm1: ops.expm1, np.sqrt: ops.sqrt, np.sin: ops.sin,
    np.cos: ops.cos, np.tan: ops.tan, np.tanh: ops.tanh, np.maximum: ops.maximum,
    np.minimum: ops.minimum, np.greater: ops.gt, np.greater_equal: ops.ge, np.less: ops.lt,
    np.less_equal: ops.le, np.equal: ops.eq, np.not_equal: ops.ne, np.square: ops.square,
}
for _ufunc, _op in _SAME_AS.items():
    implements_ufunc(_ufunc)(_op)


@implements_ufunc(np.positive)
def positive(x):
    return x


implements(np.where)(ops.where)


@implements(np.clip)
def clip(a, a_min=None, a_max=None):
    return ops.clip(a, a_min, a_max)
