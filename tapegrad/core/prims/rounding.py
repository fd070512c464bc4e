"""Rounding: elementwise primitives whose derivative is zero wherever it exists.

numpy's `floor`, `ceil`, `trunc`, `rint` and `floor_divide` on traced values (and the
integer conversions `astype(int)`, which truncate): autograd and PyTorch give them a zero
derivative, and a tape must still compute them at each replay (a constant would hold the values
of the trace). The unary ones are differentiable with zero derivatives, as PyTorch's
`FloorBackward0`; `floor_divide` is recorded like a comparison (no derivative).

The expressions compute numpy's results in every layout: `math.floor` and friends return
integers in compiled code, so values of magnitude 2**52 or more (integers already), infinities
and NaN pass through unchanged; `rint` rounds half to even; `floor_divide` is numpy's
(`npy_divmod`, CPython's float `//`: from `fmod`, so that `7.0 // 0.1` is 69.0 as in numpy,
not floor(70.0)).
Signs of zero may differ from numpy's (`ceil(-0.5)` replays as 0.0, numpy gives -0.0).
"""
import numpy as np

from ..primitive import binary, unary

_EXACT = "abs({0}) < 4503599627370496.0"      # below 2**52: math.floor is exact and defined


def _passing(expr, x="x"):
    """`expr` where `x` is finite and below 2**52 in magnitude, else `x` itself."""
    return f"({expr} if {_EXACT.format(x)} else {x})"


_FLOOR = "math.floor(x)"
_RINT = ("(math.floor(x) + 1.0 if (x - math.floor(x) > 0.5 or (x - math.floor(x) == 0.5 and "
         "math.floor(x) % 2 != 0)) else math.floor(x) + 0.0)")
# numpy's npy_divmod is CPython's float floor division, which numba's `//` implements (fmod,
# then the quotient rounded to the nearest integer); a zero divisor gives numpy's inf or NaN
_FLOOR_DIVIDE = "a / b if b == 0.0 else a // b"

ROUNDING = (
    unary(50, "floor", "FloorBackward0", _passing(_FLOOR), "0.0", "0.0",
          lambda x, c0, c1: np.floor(x), saves=False),
    unary(51, "ceil", "CeilBackward0", _passing("math.ceil(x)"), "0.0", "0.0",
          lambda x, c0, c1: np.ceil(x), saves=False),
    unary(52, "trunc", "TruncBackward0", _passing("math.trunc(x)"), "0.0", "0.0",
          lambda x, c0, c1: np.trunc(x), saves=False),
    unary(53, "rint", "RoundBackward0", _passing(_RINT), "0.0", "0.0",
          lambda x, c0, c1: np.rint(x), saves=False),
    binary(54, "floor_divide", "", _FLOOR_DIVIDE, ("0.0", "0.0"), ("0.0", "0.0", "0.0"),
           np.floor_divide, saves=False, differentiable=False),
)
