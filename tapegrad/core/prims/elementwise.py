"""The elementwise primitives: one row each, y = f(x; c0, c1) (unary) or y = f(a, b) (binary).

A row gives the primitive's scalar expressions: `f` computes the output, `d` the first partial
derivatives and `d2` the second ones (unary expressions see `x`, the output `y`, the constants
`c0`, `c1`; binary ones `a`, `b`, `y`), and the numpy forward that eager tensors compute with.
`core.codegen` writes every interpreter's loops from them (and `core.layouts` each layout's
form), and the fused tier differentiates statements with `d`; a rule is written once.
An operand of size 1 is broadcast inside the kernel. Opcodes are never reused or renumbered:
saved tapes keep their meaning.
"""
import numpy as np

from ..primitive import binary, compare, unary


def _sigmoid(x, c0=0.0, c1=0.0):
    # 1 / (1 + e) for x >= 0 and e / (1 + e) below, with e = exp(-|x|) <= 1: never overflows,
    # and accurate to 2 ulp (exp(-logaddexp(0, -x)) lost |x| ulp for negative x). The compiled
    # interpreters use the same two branches: `core.codegen`'s _sigmoid (CUDA), and on the
    # CPU `core.vecmath.sigmoid`, in double-double (0.55 ulp).
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


_PI = "3.141592653589793"
_R2 = "(a * a + b * b)"
_OFF_ORIGIN = "0.0 if a == 0.0 and b == 0.0 else "      # arctan2's derivatives: 0 at the origin

ELEMENTWISE = (
    # unary: y = f(x; c0, c1)
    unary(0, "copy", "CloneBackward0", "x", "1.0", "0.0", lambda x, c0, c1: x.copy(), saves=False),
    unary(1, "neg", "NegBackward0", "-x", "-1.0", "0.0", lambda x, c0, c1: -x, saves=False),
    unary(2, "add_const", "AddBackward0", "x + c0", "1.0", "0.0",
          lambda x, c0, c1: x + c0, saves=False),
    unary(3, "mul_const", "MulBackward0", "x * c0", "c0", "0.0",
          lambda x, c0, c1: x * c0, saves=False),
    unary(4, "rsub_const", "RsubBackward1", "c0 - x", "-1.0", "0.0",
          lambda x, c0, c1: c0 - x, saves=False),
    unary(5, "div_const", "DivBackward0", "x / c0", "1.0 / c0", "0.0",
          lambda x, c0, c1: x / c0, saves=False),
    unary(6, "rdiv_const", "MulBackward0", "c0 / x", "-y / x", "2.0 * y / (x * x)",
          lambda x, c0, c1: c0 / x),
    unary(7, "square", "PowBackward0", "x * x", "2.0 * x", "2.0", lambda x, c0, c1: x * x),
    # PyTorch: d/dx x**0 is 0 everywhere, even at x = 0.
    unary(8, "pow_const", "PowBackward0", "x ** c0",
          "0.0 if c0 == 0.0 else c0 * x ** (c0 - 1.0)",
          "0.0 if c0 == 0.0 or c0 == 1.0 else c0 * (c0 - 1.0) * x ** (c0 - 2.0)",
          lambda x, c0, c1: x ** c0),
    # PyTorch: the exponent's derivative of c**x is 0 where c == 0 and x >= 0.
    unary(9, "rpow_const", "PowBackward2", "c0 ** x",
          "0.0 if c0 == 0.0 and x >= 0.0 else y * math.log(c0)",
          "0.0 if c0 == 0.0 and x >= 0.0 else y * math.log(c0) * math.log(c0)",
          lambda x, c0, c1: c0 ** x),
    # PyTorch and JAX: sign(0) = 0, so |x| has gradient 0 at 0.
    unary(10, "abs", "AbsBackward0", "abs(x)", "1.0 if x > 0.0 else (-1.0 if x < 0.0 else 0.0)",
          "0.0", lambda x, c0, c1: np.abs(x)),
    unary(11, "exp", "ExpBackward0", "math.exp(x)", "y", "y", lambda x, c0, c1: np.exp(x)),
    unary(12, "log", "LogBackward0", "math.log(x)", "1.0 / x", "-1.0 / (x * x)",
          lambda x, c0, c1: np.log(x)),
    unary(13, "log1p", "Log1PBackward0", "math.log1p(x)", "1.0 / (1.0 + x)",
          "-1.0 / ((1.0 + x) * (1.0 + x))", lambda x, c0, c1: np.log1p(x)),
    unary(14, "expm1", "Expm1Backward0", "math.expm1(x)", "y + 1.0", "y + 1.0",
          lambda x, c0, c1: np.expm1(x)),
    unary(15, "sqrt", "SqrtBackward0", "math.sqrt(x)", "0.5 / y", "-0.25 / (y * y * y)",
          lambda x, c0, c1: np.sqrt(x)),
    unary(16, "sin", "SinBackward0", "math.sin(x)", "math.cos(x)", "-y", lambda x, c0, c1: np.sin(x)),
    unary(17, "cos", "CosBackward0", "math.cos(x)", "-math.sin(x)", "-y",
          lambda x, c0, c1: np.cos(x)),
    unary(18, "tan", "TanBackward0", "math.tan(x)", "1.0 + y * y", "2.0 * y * (1.0 + y * y)",
          lambda x, c0, c1: np.tan(x)),
    unary(19, "tanh", "TanhBackward0", "math.tanh(x)", "1.0 - y * y", "-2.0 * y * (1.0 - y * y)",
          lambda x, c0, c1: np.tanh(x)),
    unary(20, "sigmoid", "SigmoidBackward0", "_sigmoid(x)", "y * (1.0 - y)",
          "y * (1.0 - y) * (1.0 - 2.0 * y)", _sigmoid),
    # PyTorch and JAX: relu'(0) = 0; NaN passes through.
    unary(21, "relu", "ReluBackward0", "0.0 if x <= 0.0 else x", "1.0 if x > 0.0 else 0.0", "0.0",
          lambda x, c0, c1: np.where(x <= 0, np.zeros_like(x), x)),
    # PyTorch clamp: min(max(x, lo), hi), so hi wins when lo > hi; gradient flows where
    # lo <= x <= hi (bounds included); NaN passes through.
    unary(22, "clip", "ClampBackward1",
          "x if x != x else (c1 if (c0 > c1 or x > c1) else (c0 if x < c0 else x))",
          "1.0 if (x >= c0 and x <= c1) else 0.0", "0.0",
          lambda x, c0, c1: np.minimum(np.maximum(x, c0), c1).astype(x.dtype)),

    # binary: y = f(a, b), elementwise; an operand of size 1 is broadcast inside the kernel
    binary(23, "add", "AddBackward0", "a + b", ("1.0", "1.0"), ("0.0", "0.0", "0.0"),
           np.add, saves=False),
    binary(24, "sub", "SubBackward0", "a - b", ("1.0", "-1.0"), ("0.0", "0.0", "0.0"),
           np.subtract, saves=False),
    binary(25, "mul", "MulBackward0", "a * b", ("b", "a"), ("0.0", "1.0", "0.0"), np.multiply),
    binary(26, "div", "DivBackward0", "a / b", ("1.0 / b", "-a / (b * b)"),
           ("0.0", "-1.0 / (b * b)", "2.0 * a / (b * b * b)"), np.divide),
    binary(27, "pow", "PowBackward1", "a ** b",
           ("0.0 if b == 0.0 else b * a ** (b - 1.0)",
            "0.0 if a == 0.0 and b >= 0.0 else y * math.log(a)"),
           ("0.0 if b == 0.0 or b == 1.0 else b * (b - 1.0) * a ** (b - 2.0)",
            "0.0 if a == 0.0 else a ** (b - 1.0) * (1.0 + b * math.log(a))",
            "0.0 if a == 0.0 and b >= 0.0 else y * math.log(a) * math.log(a)"),
           np.power),
    # PyTorch and JAX: at a tie each operand gets half of the gradient.
    binary(28, "maximum", "MaximumBackward0", "a if (a > b or a != a) else b",
           ("1.0 if a > b else (0.5 if a == b else 0.0)",
            "1.0 if b > a else (0.5 if a == b else 0.0)"), ("0.0", "0.0", "0.0"), np.maximum),
    binary(29, "minimum", "MinimumBackward0", "a if (a < b or a != a) else b",
           ("1.0 if a < b else (0.5 if a == b else 0.0)",
            "1.0 if b < a else (0.5 if a == b else 0.0)"), ("0.0", "0.0", "0.0"), np.minimum),
    # comparisons: recorded so that traced control flow can be re-checked (guards)
    compare(30, "gt", "a > b", np.greater),
    compare(31, "ge", "a >= b", np.greater_equal),
    compare(32, "lt", "a < b", np.less),
    compare(33, "le", "a <= b", np.less_equal),
    compare(34, "eq", "a == b", np.equal),
    compare(35, "ne", "a != b", np.not_equal),
    # x**3 as PyTorch computes it (x * x * x, not a pow call: 100x cheaper in the batched
    # interpreter); its derivative 3 * x**2 as PyTorch's pow_backward rounds it
    unary(47, "cube", "PowBackward0", "x * x * x", "3.0 * (x * x)", "6.0 * x",
          lambda x, c0, c1: x * x * x),

    # inverse trigonometric and hyperbolic functions; numpy's inf and NaN at and beyond the
    # ends of their domains (arcsin'(1) = inf, as in PyTorch, JAX and autograd)
    unary(55, "arcsin", "AsinBackward0", "math.asin(x)", "1.0 / math.sqrt(1.0 - x * x)",
          "x / ((1.0 - x * x) * math.sqrt(1.0 - x * x))", lambda x, c0, c1: np.arcsin(x)),
    unary(56, "arccos", "AcosBackward0", "math.acos(x)", "-1.0 / math.sqrt(1.0 - x * x)",
          "-x / ((1.0 - x * x) * math.sqrt(1.0 - x * x))", lambda x, c0, c1: np.arccos(x)),
    unary(57, "arctan", "AtanBackward0", "math.atan(x)", "1.0 / (1.0 + x * x)",
          "-2.0 * x / ((1.0 + x * x) * (1.0 + x * x))", lambda x, c0, c1: np.arctan(x)),
    unary(58, "arcsinh", "AsinhBackward0", "math.asinh(x)", "1.0 / math.sqrt(x * x + 1.0)",
          "-x / ((x * x + 1.0) * math.sqrt(x * x + 1.0))", lambda x, c0, c1: np.arcsinh(x)),
    # (x - 1)(x + 1) rather than x * x - 1: exact near x = 1, where the derivative is large
    unary(59, "arccosh", "AcoshBackward0", "math.acosh(x)",
          "1.0 / math.sqrt((x - 1.0) * (x + 1.0))",
          "-x / ((x - 1.0) * (x + 1.0) * math.sqrt((x - 1.0) * (x + 1.0)))",
          lambda x, c0, c1: np.arccosh(x)),
    unary(60, "arctanh", "AtanhBackward0", "math.atanh(x)", "1.0 / ((1.0 - x) * (1.0 + x))",
          "2.0 * x / (((1.0 - x) * (1.0 + x)) * ((1.0 - x) * (1.0 + x)))",
          lambda x, c0, c1: np.arctanh(x)),
    unary(61, "sinh", "SinhBackward0", "math.sinh(x)", "math.cosh(x)", "y",
          lambda x, c0, c1: np.sinh(x)),
    unary(62, "cosh", "CoshBackward0", "math.cosh(x)", "math.sinh(x)", "y",
          lambda x, c0, c1: np.cosh(x)),
    unary(63, "log2", "Log2Backward0", "math.log2(x)", "1.0 / (x * 0.6931471805599453)",
          "-1.0 / (x * x * 0.6931471805599453)", lambda x, c0, c1: np.log2(x)),
    unary(64, "log10", "Log10Backward0", "math.log10(x)", "1.0 / (x * 2.302585092994046)",
          "-1.0 / (x * x * 2.302585092994046)", lambda x, c0, c1: np.log10(x)),
    # numpy's sinc, sin(pi x) / (pi x) and 1 at 0. The derivatives are (cos(pi x) - y) / x and
    # -pi^2 y - 2 y' / x, with their Maclaurin series near 0 (no cancellation; y'(0) = 0 and
    # y''(0) = -pi^2 / 3, as in JAX; PyTorch's y'(0) is 0 and y''(0) NaN, autograd's
    # y'(0) NaN).
    unary(65, "sinc", "SincBackward0",
          f"1.0 if x == 0.0 else math.sin({_PI} * x) / ({_PI} * x)",
          f"-3.289868133696453 * x * (1.0 - x * x * (0.9869604401089358 - "
          f"0.3478896108357229 * x * x)) if abs(x) < 1e-3 else (math.cos({_PI} * x) - y) / x",
          f"-3.289868133696453 * (1.0 - x * x * (2.9608813203268074 - 1.7394480541786146 * "
          f"x * x)) if abs(x) < 1e-3 else -9.869604401089358 * y - 2.0 * "
          f"(math.cos({_PI} * x) - y) / (x * x)",
          lambda x, c0, c1: np.sinc(x)),
    # numpy's nan_to_num with nan=0: +inf -> c0, -inf -> c1 (a NaN replaced by another value
    # is a `where` after it). Derivative 1 where x is finite, 0 where replaced (PyTorch,
    # autograd, JAX).
    unary(66, "nan_to_num", "NanToNumBackward0",
          "x if x - x == 0.0 else (c0 if x > 0.0 else (c1 if x < 0.0 else 0.0))",
          "1.0 if x - x == 0.0 else 0.0", "0.0",
          lambda x, c0, c1: np.nan_to_num(x, nan=0.0, posinf=c0, neginf=c1)),

    # arctan2(a, b), the angle of the point (b, a). PyTorch: gradient 0 at the origin (JAX and
    # autograd give NaN there).
    binary(67, "arctan2", "Atan2Backward0", "math.atan2(a, b)",
           (f"{_OFF_ORIGIN}b / {_R2}", f"{_OFF_ORIGIN}-a / {_R2}"),
           (f"{_OFF_ORIGIN}-2.0 * a * b / ({_R2} * {_R2})",
            f"{_OFF_ORIGIN}(a - b) * (a + b) / ({_R2} * {_R2})",
            f"{_OFF_ORIGIN}2.0 * a * b / ({_R2} * {_R2})"),
           np.arctan2),
    # hypot(a, b) = sqrt(a^2 + b^2) without overflow. At the origin the gradient is 0, as
    # PyTorch's abs and norms give at 0 (hypot(a, 0) = |a|); torch.hypot and autograd give NaN
    # there, JAX 0.5.
    binary(68, "hypot", "HypotBackward0", "math.hypot(a, b)",
           ("0.0 if y == 0.0 else a / y", "0.0 if y == 0.0 else b / y"),
           ("0.0 if y == 0.0 else (b / y) * (b / y) / y",
            "0.0 if y == 0.0 else -(a / y) * (b / y) / y",
            "0.0 if y == 0.0 else (a / y) * (a / y) / y"),
           np.hypot),
    # numpy's logaddexp and logaddexp2, branch for branch (equal operands, infinities of one
    # sign included, give a + log(2) and a + 1); the derivatives exp(a - y) and 2^(a - y) are
    # NaN where both operands are -inf (autograd and JAX too)
    binary(69, "logaddexp", "LogaddexpBackward0",
           "a + 0.6931471805599453 if a == b else (a + math.log1p(math.exp(b - a)) if a > b "
           "else (b + math.log1p(math.exp(a - b)) if a < b else a - b))",
           ("math.exp(a - y)", "math.exp(b - y)"),
           ("math.exp(a - y) * math.exp(b - y)", "-math.exp(a - y) * math.exp(b - y)",
            "math.exp(a - y) * math.exp(b - y)"),
           np.logaddexp),
    binary(70, "logaddexp2", "Logaddexp2Backward0",
           "a + 1.0 if a == b else (a + 1.4426950408889634 * math.log1p(2.0 ** (b - a)) if a > b "
           "else (b + 1.4426950408889634 * math.log1p(2.0 ** (a - b)) if a < b else a - b))",
           ("2.0 ** (a - y)", "2.0 ** (b - y)"),
           ("0.6931471805599453 * 2.0 ** (a - y) * 2.0 ** (b - y)",
            "-0.6931471805599453 * 2.0 ** (a - y) * 2.0 ** (b - y)",
            "0.6931471805599453 * 2.0 ** (a - y) * 2.0 ** (b - y)"),
           np.logaddexp2),
    # fmax and fmin: maximum and minimum that skip a NaN operand; of 0.0 and -0.0 the second, as
    # numpy's array loops (its scalar path and PyTorch take the first). The gradient goes to the
    # operand taken, and at a tie half to each (autograd, and maximum's convention here;
    # PyTorch gives it all to the first operand, JAX to the second); none when both are NaN.
    binary(71, "fmax", "FmaxBackward0", "a if (a > b or b != b) else b",
           ("1.0 if (a > b or (b != b and a == a)) else (0.5 if a == b else 0.0)",
            "1.0 if (b > a or (a != a and b == b)) else (0.5 if a == b else 0.0)"),
           ("0.0", "0.0", "0.0"), np.fmax),
    binary(72, "fmin", "FminBackward0", "a if (a < b or b != b) else b",
           ("1.0 if (a < b or (b != b and a == a)) else (0.5 if a == b else 0.0)",
            "1.0 if (b < a or (a != a and b == b)) else (0.5 if a == b else 0.0)"),
           ("0.0", "0.0", "0.0"), np.fmin),
    # remainder (numpy's mod, Python's %: the sign of b; numba's float % is numpy's, signed
    # zeros included) and fmod (C's, the sign of a; numba's CPU target has no math.fmod). The
    # derivative in b is minus the quotient a = q b + y, taken from the result: exact, as
    # PyTorch's remainder (floor division); autograd, JAX and PyTorch's fmod use floor(a / b)
    # or trunc(a / b), one off where a / b rounds to an integer (1.0 % 0.1).
    binary(73, "remainder", "RemainderBackward1", "a % b",
           ("1.0", "-math.floor((a - y) / b + 0.5)"), ("0.0", "0.0", "0.0"), np.remainder),
    binary(74, "fmod", "FmodBackward1", "math.copysign(abs(a) % abs(b), a)",
           ("1.0", "-math.floor((a - y) / b + 0.5)"), ("0.0", "0.0", "0.0"), np.fmod),
    # PyTorch: the gradient in a is sign(a) sign(b) (0 at a = 0), none in b
    binary(75, "copysign", "CopysignBackward0", "math.copysign(a, b)",
           ("0.0 if a == 0.0 else (1.0 if (a < 0.0) == (y < 0.0) else -1.0)", "0.0"),
           ("0.0", "0.0", "0.0"), np.copysign),
    # heaviside(a, b): 0, b at a = 0, 1 (NaN at NaN). JAX: the gradient flows to b where a = 0
    # and never to a (PyTorch has no derivative).
    binary(76, "heaviside", "HeavisideBackward0",
           "0.0 if a < 0.0 else (1.0 if a > 0.0 else (b if a == 0.0 else a))",
           ("0.0", "1.0 if a == 0.0 else 0.0"), ("0.0", "0.0", "0.0"), np.heaviside),
)
