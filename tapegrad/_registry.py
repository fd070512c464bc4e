"""The op registry: the one place that says what each primitive computes.

A tape entry names a primitive by opcode. The primitive's registry entry holds everything about
it: name, opcode, PyTorch `grad_fn` name, whether its VJP reads saved values, the numpy forward
used by eager tensors, and the interpreter rules (forward, VJP, JVP and the tangent of the VJP
that second-order transforms need).

* Elementwise primitives are written as scalar expressions: `f` computes the output, `d` the
  first partial derivatives and `d2` the second ones. Unary expressions see `x`, `y` (the output),
  `c0`, `c1` (the entry's float constants); binary ones see `a`, `b`, `y`. The code generator
  (`_codegen`) turns the expressions into the loops of every interpreter, so a rule is written once.
* Structural primitives name a family of njit kernels in `_kernels` (`<kernel>_fwd`, `_vjp`,
  `_jvp`, `_vjp_jvp`); for a linear one (`linear=True`) only `_fwd` and `_vjp`: the code
  generator derives the other two.
* `call` is a nested transform (`grad(f)` called on traced values); its entry's payload is a
  Python rule (`_transforms.CallRule`) that the sweeps (`_sweep`) run between compiled segments.

Opcodes are positions in `PRIMS`; the code generator and every interpreter read this table, so
adding a primitive is one entry here (and its gradcheck test).
"""
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Prim:
    name: str
    kind: str                 # "unary" | "binary" | "kernel"
    grad_fn: str              # PyTorch's name for the backward node
    saves: bool = True        # the VJP reads saved values (a freed graph cannot run it)
    f: str = ""               # elementwise: forward expression
    d: tuple = ()             # elementwise: first partials ("df",) or ("da", "db")
    d2: tuple = ()            # elementwise: second partials ("d2f",) or ("daa", "dab", "dbb")
    numpy: object = None      # elementwise: eager forward, numpy(x, c0, c1) or numpy(a, b)
    kernel: str = ""          # structural: kernel family in _kernels
    differentiable: bool = True
    variadic: bool = False    # operands are listed in the payload (any number of them)
    linear: bool = False      # structural and linear: JVP = forward on tangents, and the VJP's
    #                           tangent = VJP on adjoint tangents; the code generator derives
    #                           both, so the kernel family has only `_fwd` and `_vjp`
    arity: int = 0            # structural: the number of operands (variadic ones: 0)
    reads: tuple = None       # structural: for each operand, (the operands whose values its VJP
    #                           reads, whether it reads the output); None: the VJP reads none
    opcode: int = field(default=-1, compare=False)


def _sigmoid(x, c0=0.0, c1=0.0):
    # 1 / (1 + e) for x >= 0 and e / (1 + e) below, with e = exp(-|x|) <= 1: never overflows,
    # and accurate to 2 ulp (exp(-logaddexp(0, -x)) lost |x| ulp for negative x). The compiled
    # interpreters use the same two branches: _codegen's _sigmoid (CUDA), and on the CPU
    # _vecmath.sigmoid, in double-double (0.55 ulp).
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


def _unary(name, grad_fn, f, df, d2f, numpy, saves=True):
    return Prim(name, "unary", grad_fn, saves, f, (df,), (d2f,), numpy)


def _binary(name, grad_fn, f, d, d2, numpy, saves=True, differentiable=True):
    return Prim(name, "binary", grad_fn, saves, f, d, d2, numpy, differentiable=differentiable)


def _kernel(name, grad_fn, kernel, arity=1, reads=None, variadic=False, linear=False):
    return Prim(name, "kernel", grad_fn, reads is not None, kernel=kernel, variadic=variadic,
                linear=linear, arity=arity, reads=reads)


def _compare(name, expr, numpy):
    return _binary(name, "", f"1.0 if {expr} else 0.0", ("0.0", "0.0"), ("0.0", "0.0", "0.0"),
                   numpy, saves=False, differentiable=False)


_PRIMS = [
    # unary: y = f(x; c0, c1)
    _unary("copy", "CloneBackward0", "x", "1.0", "0.0", lambda x, c0, c1: x.copy(), saves=False),
    _unary("neg", "NegBackward0", "-x", "-1.0", "0.0", lambda x, c0, c1: -x, saves=False),
    _unary("add_const", "AddBackward0", "x + c0", "1.0", "0.0",
           lambda x, c0, c1: x + c0, saves=False),
    _unary("mul_const", "MulBackward0", "x * c0", "c0", "0.0",
           lambda x, c0, c1: x * c0, saves=False),
    _unary("rsub_const", "RsubBackward1", "c0 - x", "-1.0", "0.0",
           lambda x, c0, c1: c0 - x, saves=False),
    _unary("div_const", "DivBackward0", "x / c0", "1.0 / c0", "0.0",
           lambda x, c0, c1: x / c0, saves=False),
    _unary("rdiv_const", "MulBackward0", "c0 / x", "-y / x", "2.0 * y / (x * x)",
           lambda x, c0, c1: c0 / x),
    _unary("square", "PowBackward0", "x * x", "2.0 * x", "2.0", lambda x, c0, c1: x * x),
    # PyTorch: d/dx x**0 is 0 everywhere, even at x = 0.
    _unary("pow_const", "PowBackward0", "x ** c0",
           "0.0 if c0 == 0.0 else c0 * x ** (c0 - 1.0)",
           "0.0 if c0 == 0.0 or c0 == 1.0 else c0 * (c0 - 1.0) * x ** (c0 - 2.0)",
           lambda x, c0, c1: x ** c0),
    # PyTorch: the exponent's derivative of c**x is 0 where c == 0 and x >= 0.
    _unary("rpow_const", "PowBackward2", "c0 ** x",
           "0.0 if c0 == 0.0 and x >= 0.0 else y * math.log(c0)",
           "0.0 if c0 == 0.0 and x >= 0.0 else y * math.log(c0) * math.log(c0)",
           lambda x, c0, c1: c0 ** x),
    # PyTorch and JAX: sign(0) = 0, so |x| has gradient 0 at 0.
    _unary("abs", "AbsBackward0", "abs(x)", "1.0 if x > 0.0 else (-1.0 if x < 0.0 else 0.0)",
           "0.0", lambda x, c0, c1: np.abs(x)),
    _unary("exp", "ExpBackward0", "math.exp(x)", "y", "y", lambda x, c0, c1: np.exp(x)),
    _unary("log", "LogBackward0", "math.log(x)", "1.0 / x", "-1.0 / (x * x)",
           lambda x, c0, c1: np.log(x)),
    _unary("log1p", "Log1PBackward0", "math.log1p(x)", "1.0 / (1.0 + x)",
           "-1.0 / ((1.0 + x) * (1.0 + x))", lambda x, c0, c1: np.log1p(x)),
    _unary("expm1", "Expm1Backward0", "math.expm1(x)", "y + 1.0", "y + 1.0",
           lambda x, c0, c1: np.expm1(x)),
    _unary("sqrt", "SqrtBackward0", "math.sqrt(x)", "0.5 / y", "-0.25 / (y * y * y)",
           lambda x, c0, c1: np.sqrt(x)),
    _unary("sin", "SinBackward0", "math.sin(x)", "math.cos(x)", "-y", lambda x, c0, c1: np.sin(x)),
    _unary("cos", "CosBackward0", "math.cos(x)", "-math.sin(x)", "-y",
           lambda x, c0, c1: np.cos(x)),
    _unary("tan", "TanBackward0", "math.tan(x)", "1.0 + y * y", "2.0 * y * (1.0 + y * y)",
           lambda x, c0, c1: np.tan(x)),
    _unary("tanh", "TanhBackward0", "math.tanh(x)", "1.0 - y * y", "-2.0 * y * (1.0 - y * y)",
           lambda x, c0, c1: np.tanh(x)),
    _unary("sigmoid", "SigmoidBackward0", "_sigmoid(x)", "y * (1.0 - y)",
           "y * (1.0 - y) * (1.0 - 2.0 * y)", _sigmoid),
    # PyTorch and JAX: relu'(0) = 0; NaN passes through.
    _unary("relu", "ReluBackward0", "0.0 if x <= 0.0 else x", "1.0 if x > 0.0 else 0.0", "0.0",
           lambda x, c0, c1: np.where(x <= 0, np.zeros_like(x), x)),
    # PyTorch clamp: min(max(x, lo), hi), so hi wins when lo > hi; gradient flows where
    # lo <= x <= hi (bounds included); NaN passes through.
    _unary("clip", "ClampBackward1",
           "x if x != x else (c1 if (c0 > c1 or x > c1) else (c0 if x < c0 else x))",
           "1.0 if (x >= c0 and x <= c1) else 0.0", "0.0",
           lambda x, c0, c1: np.minimum(np.maximum(x, c0), c1).astype(x.dtype)),

    # binary: y = f(a, b), elementwise; an operand of size 1 is broadcast inside the kernel
    _binary("add", "AddBackward0", "a + b", ("1.0", "1.0"), ("0.0", "0.0", "0.0"),
            np.add, saves=False),
    _binary("sub", "SubBackward0", "a - b", ("1.0", "-1.0"), ("0.0", "0.0", "0.0"),
            np.subtract, saves=False),
    _binary("mul", "MulBackward0", "a * b", ("b", "a"), ("0.0", "1.0", "0.0"), np.multiply),
    _binary("div", "DivBackward0", "a / b", ("1.0 / b", "-a / (b * b)"),
            ("0.0", "-1.0 / (b * b)", "2.0 * a / (b * b * b)"), np.divide),
    _binary("pow", "PowBackward1", "a ** b",
            ("0.0 if b == 0.0 else b * a ** (b - 1.0)",
             "0.0 if a == 0.0 and b >= 0.0 else y * math.log(a)"),
            ("0.0 if b == 0.0 or b == 1.0 else b * (b - 1.0) * a ** (b - 2.0)",
             "0.0 if a == 0.0 else a ** (b - 1.0) * (1.0 + b * math.log(a))",
             "0.0 if a == 0.0 and b >= 0.0 else y * math.log(a) * math.log(a)"),
            np.power),
    # PyTorch and JAX: at a tie each operand gets half of the gradient.
    _binary("maximum", "MaximumBackward0", "a if (a > b or a != a) else b",
            ("1.0 if a > b else (0.5 if a == b else 0.0)",
             "1.0 if b > a else (0.5 if a == b else 0.0)"), ("0.0", "0.0", "0.0"), np.maximum),
    _binary("minimum", "MinimumBackward0", "a if (a < b or a != a) else b",
            ("1.0 if a < b else (0.5 if a == b else 0.0)",
             "1.0 if b < a else (0.5 if a == b else 0.0)"), ("0.0", "0.0", "0.0"), np.minimum),
    # comparisons: recorded so that traced control flow can be re-checked (guards)
    _compare("gt", "a > b", np.greater),
    _compare("ge", "a >= b", np.greater_equal),
    _compare("lt", "a < b", np.less),
    _compare("le", "a <= b", np.less_equal),
    _compare("eq", "a == b", np.equal),
    _compare("ne", "a != b", np.not_equal),

    # structural: kernels in _kernels
    _kernel("gather", "IndexBackward0", "gather", linear=True),
    # a strided window: y[i] = x[start + i * step], ip = (start, step); basic slices of a flat
    # buffer, without gather's index map (and a VJP that vectorises)
    _kernel("window", "SliceBackward0", "window", linear=True),
    _kernel("segsum", "SumBackward1", "segsum", linear=True),
    _kernel("total", "SumBackward0", "total", linear=True),
    _kernel("segmax", "AmaxBackward0", "segmax", reads=(((0,), True),)),
    _kernel("segmin", "AminBackward0", "segmin", reads=(((0,), True),)),
    _kernel("segprod", "ProdBackward1", "segprod", reads=(((0,), False),)),
    _kernel("matmul", "MmBackward0", "matmul", arity=2,
            reads=(((1,), False), ((0,), False))),
    _kernel("pack", "CatBackward0", "pack", arity=0, variadic=True, linear=True),
    _kernel("where", "WhereBackward0", "where", arity=3,
            reads=((), ((0,), False), ((0,), False))),

    # a nested function transform (grad or jacobian of a traced function) used inside a traced
    # or eager computation; the sweeps run its rules in Python between compiled segments
    Prim("call", "call", "CallBackward0", variadic=True),

    # appended, so that the opcodes of saved tapes keep their meaning
    # x**3 as PyTorch computes it (x * x * x, not a pow call: 100x cheaper in the batched
    # interpreter); its derivative 3 * x**2 as PyTorch's pow_backward rounds it
    _unary("cube", "PowBackward0", "x * x * x", "3.0 * (x * x)", "6.0 * x",
           lambda x, c0, c1: x * x * x),
    # x[I] - x[J] as one entry, y[i] = x[ip[i]] - x[ip[n + i]] (pair differences: distances,
    # forces), recorded by `sub` when both operands are gathers of one tensor
    _kernel("gather_diff", "SubBackward0", "gather_diff", linear=True),
    # sum(x * x, axis) as one entry, y[ip[i]] += c0 * x[i]^2, recorded while tracing by the
    # segment sum of a square (one pass over x instead of two, each way; eager graphs keep
    # PyTorch's SumBackward1 of a MulBackward0)
    _kernel("segsumsq", "SumBackward1", "segsumsq", reads=(((0,), False),)),
]

PRIMS = tuple(Prim(**{**p.__dict__, "opcode": i}) for i, p in enumerate(_PRIMS))
BY_NAME = {p.name: p for p in PRIMS}
OPCODE = {p.name: p.opcode for p in PRIMS}
SAVES = np.array([p.saves for p in PRIMS], dtype=bool)
