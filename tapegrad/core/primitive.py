"""What a primitive is: one definition holding everything the library knows about it.

A tape entry names a primitive by its opcode. The primitive's definition is the one place that
says what the entry computes and how every part of tapegrad treats it:

* identity: `opcode` (stable: saved tapes keep their meaning), `name`, PyTorch's `grad_fn` name;
* facts other modules ask about (tinygrad's lesson: properties of the op, declared with it):
  `saves` and `reads` (which values its VJP reads), `linear`, `differentiable`, `arity`,
  `variadic`;
* its shape rule (`check`), which the tape validator runs on entries from outside the process;
* the per-point scratch its kernels need (`scratch`), which the GPU reserves;
* how its derivatives depend on its operands' elements (`element_reads`, `coupling`), which
  sparsity detection (`transforms.sparsity`) propagates over a tape: an elementwise primitive
  derives both from its rows, a structural one declares `reads_elements` and `curvature`;
* its rules, the bodies of forward, VJP, JVP and VJP-of-JVP (second order):
  - an elementwise primitive gives scalar expressions (`f`, `d`, `d2`) and a numpy forward for
    eager tensors; `core.codegen` writes their loops;
  - a structural primitive gives kernel bodies written once, for one point, in the kernel
    language of `core.layouts`, which generates the flat, column and CUDA code from them. A
    linear primitive gives only `fwd` and `vjp`: its JVP is `fwd` on tangents and its second
    order `vjp` on adjoint tangents. Where a layout truly needs its own loop (BLAS for the flat
    matmul), the override sits beside the portable rule in the primitive's own file.

The definitions live in `core/prims/` (elementwise rows in one table, a file per structural
family); `core.registry` collects them by opcode.
"""
from dataclasses import dataclass, field

import numpy as np

RULES = ("fwd", "vjp", "jvp", "vjp_jvp")
LAYOUTS = ("flat", "column", "cuda")

# The calling convention of every rule (the generated interpreters call them so): V, G, T, TG
# are value, adjoint, tangent and adjoint-tangent buffers; S the slot table; a, b, c the operand
# slots (-1 when unused), o the output slot; ip the entry's integer payload; c0, c1 its constants.
SIGNATURES = {
    "fwd": "V, S, a, b, c, o, ip, c0, c1",
    "vjp": "V, G, S, NEED, a, b, c, o, ip, c0, c1",
    "jvp": "V, T, S, a, b, c, o, ip, c0, c1",
    "vjp_jvp": "V, T, G, TG, S, NEED, a, b, c, o, ip, c0, c1",
}


# What an output element reads of an operand, in a dependence rule's answer (`Prim.element_reads`)
SAME = "same"     # the element at its own index (an operand of size 1: its one element)
ALL = "all"       # every element of the operand
CURVATURES = ("linear", "diagonal", "bilinear", "nonlinear")


class NoGPURule(NotImplementedError):
    """A tape holds a primitive whose rules the GPU does not run (`cuda=False`): vmap with
    device="cuda" says so, device="auto" replays the batch on the CPU instead."""


@dataclass(frozen=True, eq=False)
class Prim:
    """A primitive. Fields not set by a kind's constructor keep their defaults."""
    opcode: int
    name: str
    kind: str                      # "unary" | "binary" | "kernel" | "call"
    grad_fn: str                   # PyTorch's name for the backward node
    saves: bool = True             # the VJP reads saved values (a freed graph cannot run it)
    differentiable: bool = True
    # elementwise: scalar expressions over x, y (output), c0, c1 (unary) or a, b, y (binary)
    f: str = ""                    # forward
    d: tuple = ()                  # first partials ("df",) or ("da", "db")
    d2: tuple = ()                 # second partials ("d2f",) or ("daa", "dab", "dbb")
    numpy: object = None           # eager forward: numpy(x, c0, c1) or numpy(a, b)
    # structural
    arity: int = 0                 # operands (variadic: 0, the payload lists them)
    variadic: bool = False
    linear: bool = False           # JVP = fwd on tangents; second order = vjp on adjoint tangents
    reads: tuple = None            # per operand: (operands its VJP reads, reads the output?)
    check: object = None           # shape rule: check(ip, n_out, operand sizes) -> error or None
    scratch: object = None         # per-point scratch rows: scratch(n_out) (None: none)
    cuda: bool = True              # its portable rules run on the GPU (False: vmap refuses)
    # dependence (structural; elementwise primitives derive it): see `element_reads`, `coupling`
    reads_elements: object = None  # reads_elements(ip, n_out, sizes, consts) -> per operand
    curvature: str = None          # "linear" | "diagonal" | "bilinear" | "nonlinear"
    rules: dict = field(default_factory=dict)        # rule -> kernel body (portable)
    overrides: dict = field(default_factory=dict)    # (rule, layout) -> kernel body
    # structural: statements the flat sweeps run inline for an entry of one output element
    # ("forward", "backward"; see `core.codegen.scalar_path`), where an elementwise primitive's
    # come from its expressions
    scalar: dict = field(default_factory=dict)
    # structural: grad's program sweeps (`core.programs`) write its flat `fwd` and `vjp` into
    # their loop instead of calling them; for small kernels a graph of scalars replays often
    # (a softmax of 4, a pack of 4 scalars), whose call costs more than their arithmetic
    inline: bool = False
    doc: str = ""

    def __repr__(self):
        return f"<primitive {self.name} (opcode {self.opcode})>"

    @property
    def elementwise(self):
        return self.kind in ("unary", "binary")

    @property
    def structural(self):
        return self.kind == "kernel"

    @property
    def n_operands(self):
        """Fixed operand count (0 for variadic primitives, whose payload lists them)."""
        if self.variadic:
            return 0
        return {"unary": 1, "binary": 2}.get(self.kind, self.arity)

    def element_reads(self, ip, n_out, sizes, consts):
        """Which elements of each operand each output element's derivative may depend on, at any
        values: a tuple with, per operand, None (no derivative), `SAME`, `ALL`, or (rows, cols)
        int arrays or ranges (output element rows[k] reads operand element cols[k]; rows None:
        output element i reads cols[i] only, a gather; ranges, rows of step 1, describe a
        strided read without listing it). `consts` holds, per
        operand, its values where they are the same at every call (constants), else None: a rule
        may drop reads that a zero constant cancels (a product with a sparse matrix); detection
        passes the values only to a rule marked `dependence.reads_constants`. None when
        the primitive declares no rule. Elementwise: an operand whose partial is the literal
        "0.0" is not read (comparisons, rounding), any other is read at its own index."""
        if self.elementwise:
            return tuple(None if d == "0.0" else SAME for d in self.d)
        if self.reads_elements is None:
            return None
        return self.reads_elements(ip, n_out, sizes, consts)

    @property
    def coupling(self):
        """How second derivatives couple the elements an output element reads: () (linear, or
        piecewise linear), a tuple of operand pairs (i, j) (the elements of operand i and of
        operand j read by one output element; (0, 0): an elementwise operand with itself),
        "diagonal" (each operand element with itself only: a sum of squares), "nonlinear" (every
        pair an output element reads); None when undeclared. Elementwise primitives derive it
        from which second partials `d2` are not the literal "0.0"."""
        if self.kind == "unary":
            return () if self.d2[0] == "0.0" else ((0, 0),)
        if self.kind == "binary":
            return tuple(pair for pair, d2 in zip(((0, 0), (0, 1), (1, 1)), self.d2)
                         if d2 != "0.0")
        if self.linear and self.curvature is None:
            return ()
        return {"linear": (), "bilinear": ((0, 1),)}.get(self.curvature, self.curvature)

    def body(self, rule, layout):
        """The kernel body of `rule` for `layout` (its override, else the portable one)."""
        return self.overrides.get((rule, layout), self.rules.get(rule))

    # ---- decorators that attach kernel bodies to a structural definition -------------------
    def rule(self, name, layout=None):
        """Attach the decorated function as rule `name` (for every layout, or only `layout`)."""
        if name not in RULES and name != "vjp_first":
            raise ValueError(f"unknown rule {name!r}")

        def attach(fn):
            if layout is None:
                self.rules[name] = fn
            else:
                if layout not in LAYOUTS:
                    raise ValueError(f"unknown layout {layout!r}")
                self.overrides[(name, layout)] = fn
            return fn
        return attach

    @property
    def fwd(self):
        return self.rule("fwd")

    @property
    def vjp(self):
        return self.rule("vjp")

    @property
    def jvp(self):
        return self.rule("jvp")

    @property
    def vjp_jvp(self):
        return self.rule("vjp_jvp")


def unary(opcode, name, grad_fn, f, df, d2f, numpy, saves=True):
    return Prim(opcode, name, "unary", grad_fn, saves, f=f, d=(df,), d2=(d2f,), numpy=numpy)


def binary(opcode, name, grad_fn, f, d, d2, numpy, saves=True, differentiable=True):
    return Prim(opcode, name, "binary", grad_fn, saves, differentiable, f=f, d=d, d2=d2,
                numpy=numpy)


def compare(opcode, name, expr, numpy):
    """A comparison: recorded so that traced control flow can be re-checked (guards)."""
    return binary(opcode, name, "", f"1.0 if {expr} else 0.0", ("0.0", "0.0"),
                  ("0.0", "0.0", "0.0"), numpy, saves=False, differentiable=False)


def structural(opcode, name, grad_fn, check, arity=1, reads=None, variadic=False, linear=False,
               scratch=None, cuda=True, doc="", reads_elements=None, curvature=None,
               inline=False):
    """A structural primitive; attach its kernel bodies with the `fwd`, `vjp`, ... decorators.
    `cuda=False`: the GPU cannot run its rules (their scratch grows faster than the output's
    size, which is all `scratch` is told), so vmap(device="cuda") refuses tapes holding it.
    `reads_elements` and `curvature`: its dependence rule (see `Prim.element_reads` and
    `Prim.coupling`; a linear primitive's curvature is "linear" unless it says otherwise).
    `inline`: grad's program sweeps run its flat `fwd` and `vjp` inline (see `Prim.inline`)."""
    return Prim(opcode, name, "kernel", grad_fn, reads is not None, arity=arity,
                variadic=variadic, linear=linear, reads=reads, check=check, scratch=scratch,
                cuda=cuda, doc=doc, reads_elements=reads_elements, curvature=curvature,
                inline=inline)


# ---- the kernel language (see `core.layouts` for its rules) ------------------------------------
# These definitions make kernel bodies plain Python that runs as written on numpy arrays, of
# floats or of symbols (the fused tier replays structural kernels on symbols); the layouts
# rewrite the calls into the code each layout compiles.

class Values:
    """Annotation of a helper parameter that receives views of values (`x: Values`)."""


def view(buffer, S, s):
    """The values of slot s in `buffer` (V, G, T or TG)."""
    return buffer[S[s, 0]:S[s, 0] + S[s, 1]]


def temp(V, offset, n):
    """n rows of per-point scratch, starting `offset` rows into the primitive's scratch (its
    `scratch` rule says how many rows the GPU reserves); uninitialised."""
    return np.empty(n, V.dtype)


def helper(fn=None, layout=None):
    """Mark a function a kernel helper: the layouts generate it beside the rules calling it.
    Array helpers take views (parameters annotated `Values`) and are called as statements;
    scalar helpers take and return scalars and may be called in expressions. A helper of a
    layout's override is written for that layout (`layout="column"`) and emitted as it is."""
    if fn is None:
        return lambda f: helper(f, layout)
    fn.kernel_helper = True
    fn.kernel_layout = layout
    return fn
