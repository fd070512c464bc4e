"""numpy's elementwise functions on tensors: arithmetic, powers, exponentials and logarithms,
trigonometry and its inverses, hyperbolic functions, remainders, NaN handling, copysign and
heaviside, comparisons, `where` and `clip`. Each is the eager op of the same meaning, or a
numpy variant of it where numpy's result differs from PyTorch's (`fabs`, `reciprocal` of
integers)."""
import numpy as np

from .. import ops
from ..tensor import Tensor
from .registry import implements, implements_ufunc

_SAME_AS = {        # numpy's ufunc -> the op that computes it (called with the operands)
    np.add: ops.add, np.subtract: ops.sub, np.multiply: ops.mul, np.divide: ops.div,
    np.power: ops.pow, np.negative: ops.neg, np.absolute: ops.abs, np.exp: ops.exp,
    np.log: ops.log, np.log1p: ops.log1p, np.expm1: ops.expm1, np.sqrt: ops.sqrt, np.sin: ops.sin,
    np.cos: ops.cos, np.tan: ops.tan, np.tanh: ops.tanh, np.maximum: ops.maximum,
    np.minimum: ops.minimum, np.greater: ops.gt, np.greater_equal: ops.ge, np.less: ops.lt,
    np.less_equal: ops.le, np.equal: ops.eq, np.not_equal: ops.ne, np.square: ops.square,
    np.arcsin: ops.arcsin, np.arccos: ops.arccos, np.arctan: ops.arctan,
    np.arcsinh: ops.arcsinh, np.arccosh: ops.arccosh, np.arctanh: ops.arctanh,
    np.sinh: ops.sinh, np.cosh: ops.cosh, np.exp2: ops.exp2, np.log2: ops.log2,
    np.log10: ops.log10, np.hypot: ops.hypot, np.deg2rad: ops.deg2rad, np.rad2deg: ops.rad2deg,
    np.float_power: ops.float_power,
}
for _ufunc, _op in _SAME_AS.items():
    implements_ufunc(_ufunc)(_op)

# numpy's aliases: np.radians and np.degrees are other ufuncs than deg2rad and rad2deg, with
# the same loops (np.mod is np.remainder, np.true_divide np.divide, np.conj np.conjugate)
implements_ufunc(np.radians)(ops.deg2rad)
implements_ufunc(np.degrees)(ops.rad2deg)
implements_ufunc(
    np.arctan2, notes="gradient 0 at the origin (PyTorch; JAX and autograd: NaN)")(ops.arctan2)
_BOTH_INFINITE = "NaN gradient where both operands are -inf (autograd, JAX)"
implements_ufunc(np.logaddexp, notes=_BOTH_INFINITE)(ops.logaddexp)
implements_ufunc(np.logaddexp2, notes=_BOTH_INFINITE)(ops.logaddexp2)
implements_ufunc(np.heaviside, notes="gradient in the second operand where the first is 0, "
                                     "none in the first (JAX)")(ops.heaviside)

_TIES = ("NaN operands are skipped; at a tie each operand gets half of the gradient "
         "(autograd; PyTorch gives it to the first)")
implements_ufunc(np.fmax, notes=_TIES)(ops.fmax)
implements_ufunc(np.fmin, notes=_TIES)(ops.fmin)
implements_ufunc(np.remainder, notes="gradient in the divisor: minus the exact integer quotient "
                                     "(PyTorch; autograd: -floor(a / b) as rounded)")(ops.remainder)
implements_ufunc(np.fmod, notes="gradient in the divisor: minus the exact integer quotient "
                                "(PyTorch and JAX: -trunc(a / b) as rounded)")(ops.fmod)
implements_ufunc(np.copysign, notes="gradient sign(a) sign(b) in a, 0 at a = 0 (PyTorch); "
                                    "none in b")(ops.copysign)


@implements_ufunc(np.fabs)
def fabs(x):
    """|x| as a float (numpy's fabs of integers is a float), gradient sign(x)."""
    x = ops.as_tensor(x)
    return ops.record(ops.P["abs"], (x,), np.fabs(x._data), name="AbsBackward0")


@implements_ufunc(np.reciprocal)
def reciprocal(x):
    """numpy's reciprocal: integer division for integer arrays (a constant: not
    differentiable), 1 / x for floats."""
    x = ops.as_tensor(x)
    if x._data.dtype.kind != "f":
        return Tensor(np.reciprocal(x._data))
    return ops.reciprocal(x)


@implements_ufunc(np.positive)
def positive(x):
    return x


@implements_ufunc(np.conjugate, notes="real tensors only: the operand itself")
def conjugate(x):
    return x


@implements(np.real, notes="real tensors only: the operand itself")
def real(val):
    return val


@implements(np.real_if_close, notes="real tensors only: the operand itself")
def real_if_close(a, tol=100):
    return a


@implements(np.imag, notes="real tensors only: zeros, a constant")
def imag(val):
    return Tensor(np.zeros_like(ops.as_tensor(val)._data))


@implements(np.angle, notes="real tensors only: arctan2(0, x), 0 or pi, gradient 0")
def angle(z, deg=False):
    a = ops.arctan2(0.0, z)
    return a * (180 / np.pi) if deg else a


@implements(np.sinc, notes="gradient 0 at 0 (PyTorch, JAX; autograd: NaN)")
def sinc(x):
    return ops.sinc(x)


@implements(np.nan_to_num, notes="gradient 1 where x is finite, 0 where a value is replaced; "
                                 "copy=False (in place) is not supported")
def nan_to_num(x, copy=True, nan=0.0, posinf=None, neginf=None):
    if not copy:
        raise TypeError("nan_to_num(copy=False) would replace the values of a Tensor in "
                        "place; Tensors support copy=True only (use the result)")
    return ops.nan_to_num(x, nan, posinf, neginf)


_NO_VALUE = object()


@implements(np.where, notes="one argument: np.nonzero(condition), the positions guarded")
def where(condition, x=_NO_VALUE, y=_NO_VALUE):
    if x is _NO_VALUE and y is _NO_VALUE:
        return np.nonzero(condition)          # numpy's where(condition): the positions
    if x is _NO_VALUE or y is _NO_VALUE:
        raise ValueError("either both or neither of x and y should be given")
    return ops.where(condition, x, y)


@implements(np.clip)
def clip(a, a_min=None, a_max=None):
    return ops.clip(a, a_min, a_max)
