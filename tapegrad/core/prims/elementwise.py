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
)
