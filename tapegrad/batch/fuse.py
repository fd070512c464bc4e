"""Fused batched replay: a tape compiled into one straight-line loop body per point.

The column-layout interpreter (`core.codegen`, batched) runs each tape entry as a loop over a tile
of points: every entry re-reads and re-writes its operands in the tile buffer, and the
dispatch and loop overhead is paid per entry. For a small tape replayed at many points (a
force field, an MLP per example) that overhead is most of the time. This module writes the
whole schedule (forward, guards, reverse) for one point as scalar statements, so that values
live in registers and LLVM vectorises the loop over points: the tier a JIT moves a hot tape to.

How the statements are found keeps one source of truth:
* elementwise entries use the registry's scalar expressions (`f` forward, `d` partials), with
  the same vectorisable math (`core.codegen.vectorisable`) as the interpreters;
* structural entries run their own portable forward (the primitive's kernel body, plain
  Python) on an object array of symbols, so `matmul`, `gather`, `segsum`, `pack`... expand into
  the scalar additions and multiplications they perform. A kernel that branches on a value
  (max, min, where) raises `NotFusable`: such tapes stay with the interpreter;
* the reverse sweep is reverse-mode differentiation of those scalar statements, each one an
  elementwise primitive of the registry with its `d` rule.

Only float64 tapes without nested transforms or re-read constants, of schedules that read
values, adjoints of seeded outputs or tangents of unit directions (value, grad,
value_and_grad, jacrev, jacfwd: not second order, not a jvp's per-point tangents), are fused,
up to `MAX_STATEMENTS` statements; `Candidate.of` returns False for the rest. Generated
modules are files named by a hash of their source in the code cache, so numba's disk cache
makes a fused kernel free to load in a later process.

The body is laid out by `_emit`: statements are split into phases at their calls of math
functions; each phase is one loop over a tile of points reading and writing rows of one flat
buffer, and each math function one loop over its rows (one call site: LLVM inlines and
vectorises it; inlined at every statement instead, LLVM's compile time grows with the number
of call sites, to tens of seconds for a small MLP). Small bodies without calls run in the
caller's row layout (`_emit_rows`). `Point` gives the statements for one point, unlaid, to a
caller that writes its own function around them (`compiled`'s fused member).

Results agree with the interpreter to rounding (the same expressions; sums may associate
differently); `x + 0.0` is folded to `x`, so a sum of negative zeros stays -0.0.
"""
import collections
import math
import os
import re
import sys
import textwrap

import numpy as np

from .launch import launch
from ..core.registry import BY_NAME, PRIMS
# core.codegen and core.cache are imported where used: `import tapegrad` does not load them

MAX_STATEMENTS = 6000     # larger bodies take long to compile (LLVM is superlinear in them)
MAX_VALUES = 50_000       # the symbolic buffer holds one Python object per value


class NotFusable(Exception):
    """The tape (or schedule) has something the fused tier does not handle."""


# ---- symbols: scalar values of one point, recorded as statements ----------------------------

def _literal(value):
    value = float(value)
    if value != value:
        return "math.nan"
    if value in (np.inf, -np.inf):
        return "math.inf" if value > 0 else "(-math.inf)"
    return repr(value) if math.copysign(1.0, value) > 0 else f"({value!r})"   # -0.0 too


def _token(v):
    return v.name if isinstance(v, Sym) else _literal(v)


class Sym:
    """A value computed per point: the name of the statement that computes it. Arithmetic on
    symbols (the structural kernels' own Python code) records statements of the registry's
    elementwise primitives; a comparison, `bool()` or `float()` of one means the kernel
    branches on data, which a straight-line body cannot follow."""
    __slots__ = ("name", "program")
    __array_ufunc__ = None          # numpy scalars defer to our reflected operators

    def __init__(self, name, program):
        self.name, self.program = name, program

    def _emit(self, prim, operands, c0=0.0, c1=0.0):
        return self.program.emit(BY_NAME[prim], operands, c0, c1)

    def __add__(self, other):
        if isinstance(other, Sym):
            return self._emit("add", (self, other))
        return self if other == 0.0 else self._emit("add_const", (self,), other)

    __radd__ = __add__

    def __sub__(self, other):
        if isinstance(other, Sym):
            return self._emit("sub", (self, other))
        return self if other == 0.0 else self._emit("add_const", (self,), -other)

    def __rsub__(self, other):
        return self._emit("rsub_const", (self,), other)

    def __mul__(self, other):
        if isinstance(other, Sym):
            return self._emit("square", (self,)) if other is self else \
                self._emit("mul", (self, other))
        return self if other == 1.0 else self._emit("mul_const", (self,), other)

    __rmul__ = __mul__

    def __truediv__(self, other):
        if isinstance(other, Sym):
            return self._emit("div", (self, other))
        return self if other == 1.0 else self._emit("div_const", (self,), other)

    def __rtruediv__(self, other):
        return self._emit("rdiv_const", (self,), other)

    def __neg__(self):
        return self._emit("neg", (self,))

    def __pos__(self):
        return self

    def _branch(self, *_):
        raise NotFusable("a kernel branches on a traced value")

    __bool__ = __float__ = __int__ = __index__ = _branch
    __lt__ = __le__ = __gt__ = __ge__ = __eq__ = __ne__ = _branch
    __hash__ = object.__hash__


class Program:
    """Straight-line statements `name = code`, each with the names it reads (for dead-code
    elimination); forward statements also keep their primitive and operands, which the
    reverse sweep differentiates."""

    def __init__(self, limit=None):
        self.lines = []           # (name, code, reads)
        self.forward = []         # (output Sym, prim, operands, c0, c1)
        self.limit = MAX_STATEMENTS if limit is None else limit

    def fresh(self, code, reads):
        if len(self.lines) >= self.limit:
            raise NotFusable(f"more than {self.limit} statements")
        name = f"v{len(self.lines)}"
        self.lines.append((name, code, tuple(reads)))
        return Sym(name, self)

    def emit(self, prim, operands, c0=0.0, c1=0.0):
        """A statement computing the primitive's forward expression on `operands` (none for
        the identity, `copy`: its operand is its value, and its adjoint passes through)."""
        if prim.f == "x":
            return operands[0]
        names = _names(prim, operands, None, c0, c1)
        out = self.fresh(_render(prim.f, names), [v.name for v in operands if isinstance(v, Sym)])
        self.forward.append((out, prim, operands, c0, c1))
        return out


def _names(prim, operands, out, c0, c1):
    if prim.kind == "unary":
        names = {"x": _token(operands[0]), "c0": _literal(c0), "c1": _literal(c1)}
    else:
        names = {"a": _token(operands[0]), "b": _token(operands[1])}
    if out is not None:
        names["y"] = out.name
    return names


_IDENT = re.compile(r"(?<![\w.])(x|y|a|b|c0|c1)(?!\w)")


def _render(expr, names):
    """A registry expression with its variables replaced, and its math calls made those of the
    vectorisable math module (as in the CPU interpreters)."""
    from ..core import codegen
    return codegen.vectorisable(_IDENT.sub(lambda m: names[m.group(1)], expr))


# ---- symbolic replay of the tape ------------------------------------------------------------

def _elementwise(program, prim, V, S, a, b, o, c0, c1):
    y = V[S[o, 0]:S[o, 0] + S[o, 1]]
    x = V[S[a, 0]:S[a, 0] + S[a, 1]]
    if prim.kind == "unary":
        for i in range(y.size):
            y[i] = program.emit(prim, (x[i],), c0, c1)
        return
    z = V[S[b, 0]:S[b, 0] + S[b, 1]]
    ka, kb = int(x.size == y.size), int(z.size == y.size)
    for i in range(y.size):
        y[i] = program.emit(prim, (x[i * ka], z[i * kb]))


def _replay(tape, V0, in_pos, wrt_pos):
    """The symbolic value buffer after the forward sweep, and the program that computes it.
    Inputs are symbols read from X; so are the differentiated positions that are not inputs
    (an argument shared by every point, in_axes None), as statements holding their value."""
    if len(V0) > MAX_VALUES:
        raise NotFusable(f"more than {MAX_VALUES} values")
    program = Program()
    V = np.empty(len(V0), object)
    V[:] = list(V0.astype(np.float64))          # numpy scalars: IEEE arithmetic, no exceptions
    for r, p in enumerate(in_pos):
        V[p] = program.fresh(f"X[{r}]", ())         # a row of the tile (see _emit)
    for p in set(wrt_pos) - set(in_pos):
        V[p] = program.fresh(_literal(V[p]), ())
    S = tape.S
    with np.errstate(all="ignore"):
        for e in range(len(tape.E)):
            op, a, b, c, o, start, length, _ = (int(v) for v in tape.E[e])
            prim = PRIMS[op]
            c0, c1 = np.float64(tape.FC[e, 0]), np.float64(tape.FC[e, 1])
            if prim.elementwise:
                _elementwise(program, prim, V, S, a, b, o, c0, c1)
            elif prim.structural:      # its portable forward, run as Python on symbols
                prim.rules["fwd"](V, S, a, b, c, o, tape.IP[start:start + length], c0, c1)
            else:
                raise NotFusable(f"a {prim.name} entry")
    return V, program


def _reverse(program, seed):
    """Reverse-mode differentiation of the forward statements from `seed` (a Sym): the adjoint
    of every symbol the seed depends on, as {name: token} (a statement's name or a literal)."""
    adjoint = {seed.name: "1.0"}
    for out, prim, operands, c0, c1 in reversed(program.forward):
        g = adjoint.get(out.name)
        if g is None or not prim.differentiable:
            continue
        names = _names(prim, operands, out, c0, c1)
        for v, d in zip(operands, prim.d):
            if not isinstance(v, Sym):
                continue
            d = _render(d, names)
            if d == "1.0":
                term = g
            elif g == "1.0":
                term = _statement(program, d)
            else:
                term = _statement(program, f"{g} * ({d})")
            previous = adjoint.get(v.name)
            adjoint[v.name] = term if previous is None else \
                _statement(program, f"{previous} + {term}")
    return adjoint


def _tangent(program, seed):
    """Forward-mode differentiation of the forward statements along the input `seed` (a Sym,
    direction 1): the tangent of every symbol that depends on it, as {name: token}."""
    tangent = {seed.name: "1.0"}
    for out, prim, operands, c0, c1 in program.forward:
        terms = []
        for v, d in zip(operands, prim.d if prim.differentiable else ()):
            t = tangent.get(v.name) if isinstance(v, Sym) else None
            if t is None:
                continue
            d = _render(d, _names(prim, operands, out, c0, c1))
            terms.append(t if d == "1.0" else _statement(program, d if t == "1.0" else
                                                         f"({d}) * {t}"))
        if terms:
            tangent[out.name] = terms[0] if len(terms) == 1 else \
                _statement(program, " + ".join(terms))
    return tangent


def _statement(program, code):
    """The token of `code`: a new statement, or the code itself when it reads no statement
    (a literal, computed once by the compiler)."""
    reads = sorted(set(_NAME.findall(code)))
    return program.fresh(code, reads).name if reads else f"({code})"


# ---- the generated module -------------------------------------------------------------------

_NAME = re.compile(r"\bv\d+\b")
# Calls that LLVM would inline at every call site (our vectorisable math) or cannot vectorise
# (libm): each distinct one runs in a loop of its own over the tile, from one call site.
_CALL = re.compile(r"_vm\.|math\.(?!sqrt|inf|nan)\w+\(|\*\*")
TILE = 128          # points per tile when the body has calls (scratch: rows x TILE floats)
CHUNK = 1024        # points per task of the parallel loop


def _live(lines, roots):
    """The statements the root names depend on, in order."""
    reads = {name: deps for name, _, deps in lines}
    live, stack = set(), [r for r in roots if r in reads]
    while stack:
        name = stack.pop()
        if name not in live:
            live.add(name)
            stack.extend(d for d in reads[name] if d not in live)
    return [line for line in lines if line[0] in live]


def _template(code):
    """(the code with its names replaced by _0, _1, ..., the names in that order)."""
    names = list(dict.fromkeys(_NAME.findall(code)))
    index = {n: f"_{k}" for k, n in enumerate(names)}
    return _NAME.sub(lambda m: index[m.group(0)], code), names


def _phases(lines):
    """Split the statements at their calls: phase k runs per point after the calls of level k,
    and the calls of level k (grouped by their code, each group one loop over its members and
    the tile's points) read what phases < k computed. Returns (phases, groups): phases[k] a
    list of (name, code); groups[k] a list of (template, [(output, operands)])."""
    level, phases, groups = {}, [[]], [{}]
    for name, code, deps in lines:
        k = max((level[d] for d in deps), default=0)
        if _CALL.search(code):
            k += 1
            while len(phases) <= k:
                phases.append([])
                groups.append({})
            template, operands = _template(code)
            groups[k].setdefault(template, []).append((name, operands))
        else:
            phases[k].append((name, code))
        level[name] = k
    return phases, [list(g.items()) for g in groups]


class _Rows:
    """Rows of the tile buffer C (rows x TILE, flat: one array, so that LLVM sees one object
    and numba keeps no view per row), one per value that lives in memory: the inputs
    and outputs of the tile, the guard flag, the operands and results of the call groups, and
    the values that one phase computes and a later one reads."""

    def __init__(self):
        self.count = 0
        self.of = {}              # name -> row

    def take(self, n):
        first = self.count
        self.count += n
        return first


ROW_FORM_RATIO = 16   # statements per input and output below which the row form is faster


def _emit_rows(lines, outputs, checks):
    """The body of `points` in the caller's row layout, one point per iteration, when the
    program has no calls and few statements per input and output: copying a tile into the
    column layout and back then costs more than vectorising saves."""
    body = _statements(lines, "Xt[p, {}]")
    body += [f"Yt[p, {r}] = {token}" for r, token in enumerate(outputs)]
    body.append(f"OKt[p] = {' and '.join(checks) if checks else 'True'}")
    return textwrap.indent("\n".join(
        ["Xt = X[start:stop]", "Yt = Y[start:stop]", "OKt = OK[start:stop]",
         "for p in range(stop - start):"] + ["    " + line for line in body]), "    ")


def _statements(lines, read):
    """The statements as lines `name = code`, input r read as `read.format(r)`."""
    return [f"{name} = " + re.sub(r"^X\[(\d+)\]$", lambda m: read.format(m.group(1)), code)
            for name, code, _ in lines]


def _emit(lines, n_in, outputs, checks):
    """The body of `points(X, Y, OK, start, stop)`, in tiles of TILE points.

    Each tile is copied into the column layout of C (a row per input), runs its phases (each a
    loop over the tile's points reading and writing rows of C at constant offsets, the form
    that LLVM vectorises) and its call loops, then copies the output rows out."""
    phases, groups = _phases(lines)
    rows = _Rows()
    inputs = rows.take(n_in)
    outs = rows.take(len(outputs))
    ok_row = rows.take(1)
    for name, code, _ in lines:
        match = re.fullmatch(r"X\[(\d+)\]", code)
        if match:
            rows.of[name] = inputs + int(match.group(1))
    phases = [[(n, c) for n, c in phase if n not in rows.of] for phase in phases]
    calls = [[] for _ in phases]          # the call loops that run before phase k
    stores = [[] for _ in phases]         # (row, token) written at the end of phase k
    for k, level in enumerate(groups):
        for template, members in level:
            m = len(members)
            out = rows.take(m)
            args = [rows.take(m) for _ in members[0][1]]
            for j, (name, operands) in enumerate(members):
                rows.of[name] = out + j
                stores[k - 1] += [(base + j, operands[i]) for i, base in enumerate(args)]
            # the rows as 1-D views: indexing C itself here kept the loop scalar (the store and
            # the loads share a base, which LLVM then cannot tell apart around an inlined call)
            views = "".join(f"    a{i} = C[({base} + j) * {TILE}:({base} + j) * {TILE} + w]\n"
                            for i, base in enumerate(args))
            expr = re.sub(r"\b_(\d+)\b", lambda x: f"a{x.group(1)}[p]", template)
            calls[k].append(f"for j in range({m}):\n{views}"
                            f"    y = C[({out} + j) * {TILE}:({out} + j) * {TILE} + w]\n"
                            f"    for p in range(w):\n        y[p] = {expr}")
    last = len(phases) - 1
    stores[last] += [(outs + r, token) for r, token in enumerate(outputs)]
    ok = f"1.0 if ({' and '.join(checks)}) else 0.0" if checks else "1.0"
    stores[last].append((ok_row, ok))
    defined = {name: k for k, phase in enumerate(phases) for name, _ in phase}
    loops = []
    for k, phase in enumerate(phases):
        body = [f"{n} = {c}" for n, c in phase]
        mine = {n for n, _ in phase}
        used = _NAME.findall("\n".join(body + [t for _, t in stores[k]]))
        loads = []
        for name in sorted(set(used) - mine, key=lambda n: int(n[1:])):
            if name not in rows.of:                  # crosses from an earlier phase
                rows.of[name] = rows.take(1)
                stores[defined[name]].append((rows.of[name], name))
            loads.append(f"{name} = C[{rows.of[name] * TILE} + p]")
        loops.append((loads, body))
    text = []
    for k, (loads, body) in enumerate(loops):
        text += calls[k]
        writes = [f"C[{r * TILE} + p] = {token}" for r, token in stores[k]]
        text.append("for p in range(w):\n" + textwrap.indent("\n".join(loads + body + writes),
                                                              "    "))
    head = [f"C = np.empty({rows.count * TILE})"]
    n_out = len(outputs)
    tile = [f"w = min({TILE}, stop - first)",
            f"xs = X.reshape(-1)[first * {n_in}:(first + w) * {n_in}]",
            "for p in range(w):", f"    for r in range({n_in}):",
            f"        C[r * {TILE} + p] = xs[p * {n_in} + r]"]
    tile += text
    tile += [f"ys = Y.reshape(-1)[first * {n_out}:(first + w) * {n_out}]",
             "for p in range(w):", f"    for r in range({n_out}):",
             f"        ys[p * {n_out} + r] = C[({outs} + r) * {TILE} + p]",
             "for p in range(w):", f"    OK[first + p] = C[{ok_row * TILE} + p] != 0.0"]
    return textwrap.indent("\n".join(head + [f"for first in range(start, stop, {TILE}):"]
                                     + ["    " + line for line in "\n".join(tile).split("\n")]),
                           "    ")


_MODULE = """\
# Generated by tapegrad.batch.fuse from one tape. Do not edit.
import math

import numpy as np
from numba import prange

from tapegrad.core.jit import jit
from tapegrad import {vecmath} as _vm


@jit
def points(X, Y, OK, start, stop):
{body}


@jit(parallel=True)
def fused(X, Y, OK):
    n = X.shape[0]
    for t in prange((n + {chunk} - 1) // {chunk}):
        points(X, Y, OK, t * {chunk}, min(n, (t + 1) * {chunk}))
"""


def source(tape, V, plan, vecmath="_vecmath"):
    """The fused module's source for `plan` (a `plan.Plan`), or raise NotFusable."""
    lines, outputs, checks = _program(tape, V, plan)
    n_io = len(plan.in_pos) + len(outputs)
    if not any(_CALL.search(code) for _, code, _ in lines) and \
            len(lines) < ROW_FORM_RATIO * n_io:
        body = _emit_rows(lines, outputs, checks)
    else:
        body = _emit(lines, len(plan.in_pos), outputs, checks)
    return _MODULE.format(vecmath=vecmath, body=body, chunk=CHUNK)


class Point:
    """`plan`'s schedule for one point as straight-line statements, for a caller that writes
    the function around them (`compiled`'s fused member, `batch.native`): `statements` (lines
    `name = code`, input r read as `read.format(r)`), `outputs[r]` the expression of result r
    (a statement's name or a literal) and `check` the expression that is true where the guards
    hold (`True` without guards). They are the statements of the batched kernel's body
    (`source`), in the same order: the same results."""
    __slots__ = ("statements", "outputs", "check")

    def __init__(self, tape, V, plan, read="x[{}]"):
        lines, self.outputs, checks = _program(tape, V, plan)
        self.statements = _statements(lines, read)
        self.check = " and ".join(checks) if checks else "True"

    def __len__(self):
        return len(self.statements)


def _program(tape, V, plan):
    """(the live statements of `plan`'s schedule for one point, the expressions of its
    results, the guards' checks), or raise NotFusable."""
    if plan.schedule.second_order or plan.schedule.given_tangents:
        raise NotFusable(f"a {plan.schedule.label} schedule")
    if tape.dtype != np.float64:
        raise NotFusable("a float32 tape (the fused body computes in float64)")
    if tape.calls:
        raise NotFusable("a nested transform")
    wrt = list(plan.read_g) + list(plan.dir_pos)
    Vs, program = _replay(tape, V, plan.in_pos, wrt)
    outputs = [Vs[p] for p in plan.read_v]
    for seed in (Vs[p] for p in plan.seeds):             # one reverse sweep per seed (jacrev)
        adjoint = _reverse(program, seed) if isinstance(seed, Sym) else {}
        outputs += [adjoint.get(Vs[p].name, "0.0") if isinstance(Vs[p], Sym) else "0.0"
                    for p in plan.read_g]
    for seed in (Vs[p] for p in plan.dir_pos):           # one tangent sweep per direction
        tangent = _tangent(program, seed)
        outputs += [tangent.get(Vs[p].name, "0.0") if isinstance(Vs[p], Sym) else "0.0"
                    for p in plan.read_t]
    outputs = [v if isinstance(v, str) else _token(v) for v in outputs]
    guards = [(Vs[tape.offsets[s]], outcome) for s, outcome in tape.guards]
    checks = [f"(({_token(g)} != 0.0) == {bool(outcome)})" for g, outcome in guards]
    roots = outputs + [g.name for g, _ in guards if isinstance(g, Sym)]
    return _live(program.lines, roots), outputs, checks


class Candidate:
    """The generated source of a fusable plan, compiled on demand (`build`). Its compile time
    is estimated as BASE_S plus PER_STATEMENT_S per line of source (numba's typing and
    lowering of each statement is most of it; docs/design.md gives the measurements)."""
    BASE_S, PER_STATEMENT_S = 0.3, 0.0025

    def __init__(self, text, salt, n_in, n_out):
        from ..core import cache
        self.text = text
        self.name = f"_gen_fused_{cache.digest(text, salt)}"
        self.statements = text.count("\n")
        self.n_in, self.n_out = n_in, n_out
        self.path = os.path.join(cache.cache_dir(), f"{self.name}.py")   # (probes: once)

    @classmethod
    def of(cls, tape, V, plan):
        """The candidate for this plan, or False when it cannot be fused."""
        from ..core import cache, vecmath
        salt = cache.salt()
        try:
            vm = cache.copy_module(vecmath, "vecmath").__name__.rsplit(".")[-1]
            text = source(tape, V, plan, vm)
        except NotFusable:
            return False
        return cls(text, salt, len(plan.in_pos), plan.n_results)

    def cached(self):
        """Whether this source was compiled before (its file is in the code cache)."""
        return os.path.exists(self.path)

    def compile_estimate_s(self):
        return self.BASE_S + self.PER_STATEMENT_S * self.statements

    def build(self):
        """The compiled kernel (a `Fused`)."""
        from ..core import cache
        kernel = cache.materialize(self.name, self.text).fused
        _imported(self.name)
        return Fused(kernel, self.n_in, self.n_out)


MAX_MODULES = 64
_MODULES = collections.OrderedDict()     # generated fused modules imported, least recent first


def _imported(name):
    """Record that the fused module `name` was (re)used, and un-import the least recently used
    beyond MAX_MODULES: each distinct tape (a new static value baked into its statements, a new
    shape) has a module of its own, and a long session would otherwise keep all of them. A
    module un-imported here lives on while a plan's `Fused` holds its kernel; building its
    source again imports the file anew, with numba's on-disk cache (milliseconds). Why 64: a
    working set of fused tapes larger than that is unusual (each took a compile of a second or
    more), and each holds compiled code and numba's typing state (hundreds of kilobytes)."""
    from ..core import cache
    with cache.materializing:          # no thread imports a module while one is dropped
        _MODULES[name] = None
        _MODULES.move_to_end(name)
        while len(_MODULES) > MAX_MODULES:
            old, _ = _MODULES.popitem(last=False)
            sys.modules.pop(f"tapegrad.{old}", None)


class Fused:
    """A fused kernel, `fused(X, Y, OK)`: X is (points, inputs), Y (points, results), and OK[q]
    says whether point q's guards hold (its results are written either way). The generated
    loops index X and Y with the counts they were written for and check nothing: the shapes
    and types are checked here, at the boundary."""
    __slots__ = ("kernel", "n_in", "n_out")

    def __init__(self, kernel, n_in, n_out):
        self.kernel, self.n_in, self.n_out = kernel, n_in, n_out

    def __call__(self, X, Y, OK):
        n = X.shape[0]
        for name, array, shape, dtype in (("X", X, (n, self.n_in), np.float64),
                                          ("Y", Y, (n, self.n_out), np.float64),
                                          ("OK", OK, (n,), np.bool_)):
            if array.shape != shape or array.dtype != dtype or not array.flags.c_contiguous:
                raise ValueError(f"fused kernel: {name} must be a C-contiguous {shape} array of "
                                 f"{np.dtype(dtype)}, got {array.shape} {array.dtype}")
        launch(self.kernel, X, Y, OK)
