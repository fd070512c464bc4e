"""The four sweeps over a flat tape, split around nested-transform entries.

A tape is swept by one call of a compiled interpreter, except where it holds `call` entries
(a `grad(f)` used inside a traced or eager computation): there the sweep runs the compiled
interpreter up to the entry, the entry's Python rule, and the interpreter again after it.
`tape` is anything with E, FC, IP, S, NEED arrays and a `calls` list of (entry, rule).

The sweeps are the validation boundary's gate (see `core.validate`): the interpreters do not
check bounds, so a tape reaches them only when it is marked `validated`: tapes built in this
process are marked where they are built (the eager layer's flat tapes and graphs, traced and
loaded tapes), anything else must pass `core.validate.validate_tape` first (`Gradient` checks
once, when it binds a tape). In anomaly mode (`checked`) the forward and reverse sweeps run one
entry at a time and check every value they produce.

`Gradient` is grad's hot path: a forward and a reverse sweep bound once per tape, whose reverse
sweep (`backward_first`) assigns first writes instead of zeroing the adjoint buffer.
"""
import functools
import weakref

import numpy as np

from . import programs
from .interp import interpreters, program_sweeps, reverse_first
from .registry import BINARY, ELEMENTWISE, PRIMS, VARIADIC

# The sweeps of anomaly mode while it is on: an object with forward(tape, V, interpreters) and
# backward(tape, V, G, interpreters) that sweep one entry at a time and check every value
# (installed by the eager layer's anomaly mode; the core knows nothing of it).
checked = None


def check(tape):
    """Refuse a tape that has not passed the validator (one attribute test per sweep); every
    path to a compiled interpreter (these sweeps, the vmap driver, Dask, CUDA) calls it."""
    if getattr(tape, "validated", None) is True:
        return
    from .validate import TapeFormatError
    raise TapeFormatError(
        f"refusing to sweep a {type(tape).__name__} that has not been validated: tapes built "
        "from arrays (not recorded or traced in this process) must pass "
        "tapegrad.validate_tape(tape) (tapegrad.load does) before they are replayed")


def forward(tape, V):
    check(tape)
    m, start = interpreters(), 0
    if checked is not None:
        return checked.forward(tape, V, m)
    for e, rule in tape.calls:
        m.forward(tape.E, tape.FC, tape.IP, tape.S, V, start, e)
        rule.forward(tape, V, e)
        start = e + 1
    m.forward(tape.E, tape.FC, tape.IP, tape.S, V, start, len(tape.E))


def forward_entries(tape, V, E, FC):
    """The forward sweep over a subset of the tape's rows (E, FC), in order; no nested
    transforms (see `Tape._gradient_entries`). Anomaly mode sweeps the whole tape."""
    check(tape)
    if checked is not None:
        return forward(tape, V)
    interpreters().forward(E, FC, tape.IP, tape.S, V, 0, len(E))


class Gradient:
    """grad's two sweeps over one tape, seeded with 1 at its scalar output slot `out`, bound
    once (a traced `Tape` keeps them: `Tape.gradient_sweeps`).

    * `forward(V)`: the forward sweep into V over `entries`, the rows (E, FC) whose values the
      reverse sweep and the guards read (`Tape._gradient_entries`), or over every entry (None);
    * `adjoints(V)`, after a forward sweep: the reverse sweep, returning the adjoints, shape
      (1, tape.n_adjoint);
    * `run(V)`: both, for a tape without guards to test in between (the caller's duty).

    The reverse sweep is `backward_first`, which assigns the first write of each adjoint where
    it can, so that the adjoint buffer is not zeroed first (`_first_writes`, found here once).
    Every gradient of a traced tape takes it, the first call too, so that a process loads that
    interpreter, not `backward` as well. Why the rest is bound once too (the seed, the
    interpreters' compiled code for the argument types, `_compiled`): in a function over large
    data each sweep evicts the caches, and the Python around the sweeps then runs cold, at
    microseconds per operation, so a call does little more than the two interpreter calls. V must
    be the tape's own value buffer (`Tape.load` returns it): the compiled code is called without
    the dispatcher's checks. The tape is checked here, once; anomaly mode (tested at each call)
    and nested transforms take the general sweeps, on a zeroed adjoint buffer.

    On a tape of many one-element entries (`core.programs.worth_it`) both sweeps run as
    programs instead (`_bind_programs`: offsets resolved once, no per-entry tests; `programs`
    says which).

    It refers to the tape weakly: a tape keeps its `Gradient`, and a cycle between them would
    leave every tape that a transform evicts to the cycle collector instead of freeing it.
    """
    __slots__ = ("forward", "adjoints", "run", "programs")

    def __init__(self, tape, out, entries=None, aliased=None, read_by_offset=()):
        """`entries`: the (E, FC) rows of the tape that `forward` runs, None for all;
        `aliased`: the arrays the compiled sweeps take instead of the tape's (its copies as
        aliases, `core.aliases.Aliased`) and their rows that `forward` runs (None for all), or
        None for the tape's own; `read_by_offset`: the slots read where the tape puts them
        after the sweeps (inputs, outputs, guards), which a program must write."""
        check(tape)
        n, seed = tape.n_adjoint, tape.offsets[out] if tape.NEED[out] else None
        tape_ref = weakref.ref(tape)
        self.programs = False       # whether the compiled sweeps run programs

        def general_forward(V):
            if entries is None:
                forward(tape_ref(), V)
            else:
                forward_entries(tape_ref(), V, *entries)

        def general_adjoints(V):
            if aliased is not None:     # after the compiled forward: the copies' values too
                forward(tape_ref(), V)
            G = np.zeros((1, n), V.dtype)
            if seed is not None:
                G[0, seed] = 1.0
            backward(tape_ref(), V, G)
            return G

        def general_run(V):
            general_forward(V)
            return general_adjoints(V)

        if tape.calls:
            self.forward, self.adjoints, self.run = general_forward, general_adjoints, general_run
            return
        arrays, rows = (tape, entries) if aliased is None else aliased
        E, FC, IP, S, NEED = arrays.E, arrays.FC, arrays.IP, arrays.S, arrays.NEED
        some_E, some_FC = (E, FC) if rows is None else rows
        n_all, n_some = len(E), len(some_E)
        if programs.worth_it(some_E, S):
            self._bind_programs(arrays, some_E, some_FC, n, seed, tape.dtype,
                                (general_forward, general_adjoints, general_run),
                                read_by_offset)
            return
        FIRST, ZERO = _first_writes(arrays, out)
        V_like, G_like = np.empty(0, tape.dtype), np.empty((1, 0), tape.dtype)
        fwd = _compiled(interpreters().forward, some_E, some_FC, IP, S, V_like, 0, n_some)
        bwd = _compiled(reverse_first().backward_first, E, FC, IP, S, NEED, FIRST, ZERO, V_like,
                        G_like, 0, n_all)

        def forward_(V):
            if checked is not None:
                return general_forward(V)
            fwd(some_E, some_FC, IP, S, V, 0, n_some)

        def adjoints(V):
            if checked is not None:
                return general_adjoints(V)
            G = np.empty((1, n), V.dtype)
            if seed is not None:
                G[0, seed] = 1.0
            bwd(E, FC, IP, S, NEED, FIRST, ZERO, V, G, 0, n_all)
            return G

        def run(V):     # `adjoints` written out: a Python call less on the hot path
            if checked is not None:
                return general_run(V)
            fwd(some_E, some_FC, IP, S, V, 0, n_some)
            G = np.empty((1, n), V.dtype)
            if seed is not None:
                G[0, seed] = 1.0
            bwd(E, FC, IP, S, NEED, FIRST, ZERO, V, G, 0, n_all)
            return G

        self.forward, self.adjoints, self.run = forward_, adjoints, run

    def _bind_programs(self, arrays, some_E, some_FC, n, seed, dtype, general,
                       read_by_offset):
        """The sweeps as programs (`core.programs`): value offsets resolved once, the adjoint
        buffer one element wider for the sink of adjoints nobody needs, zeroed by the sweep.
        A pack a program leaves out (`programs.fusible`) is one whose output nothing reads
        but the entry after it: neither another entry, nor an alias (`shared`), nor a caller
        (`read_by_offset`)."""
        E, FC, IP, S, NEED = arrays.E, arrays.FC, arrays.IP, arrays.S, arrays.NEED
        general_forward, general_adjoints, general_run = general
        self.programs = True
        fused = programs.fusible(arrays, read_by_offset)
        P_forward, K_forward = programs.rows(some_E, S, IP=IP, fused=fused)
        P_reverse, K_reverse = programs.rows(E, S, NEED, sink=n, IP=IP, fused=fused)
        seed = -1 if seed is None else seed
        module = program_sweeps()
        V_like, G_like = np.empty(0, dtype), np.empty((1, 0), dtype)
        fwd = _compiled(module.forward, P_forward, K_forward, some_E, some_FC, IP, S, V_like)
        bwd = _compiled(module.backward, P_reverse, K_reverse, E, FC, IP, S, NEED, V_like,
                        G_like, 0)

        def forward_(V):
            if checked is not None:
                return general_forward(V)
            fwd(P_forward, K_forward, some_E, some_FC, IP, S, V)

        def adjoints(V):
            if checked is not None:
                return general_adjoints(V)
            G = np.empty((1, n + 1), V.dtype)
            bwd(P_reverse, K_reverse, E, FC, IP, S, NEED, V, G, seed)
            return G[:, :n]

        def run(V):
            if checked is not None:
                return general_run(V)
            fwd(P_forward, K_forward, some_E, some_FC, IP, S, V)
            G = np.empty((1, n + 1), V.dtype)
            bwd(P_reverse, K_reverse, E, FC, IP, S, NEED, V, G, seed)
            return G[:, :n]

        self.forward, self.adjoints, self.run = forward_, adjoints, run


def _compiled(dispatcher, *args):
    """The compiled code of numba `dispatcher` for the types of `args`, to be called with
    arguments of exactly those types (nothing checks them: a caller's own arrays only). It
    skips the dispatcher's resolution of the argument types, which costs about 30 ns more per
    read-only array than per writable one, and the tape arrays are read-only (see
    `core.validate`)."""
    from numba import typeof
    return dispatcher.compile(tuple(typeof(a) for a in args))


def _first_writes(tape, out):
    """(FIRST, ZERO) of `backward_first` for a reverse sweep seeded at slot `out`.

    FIRST[e] has bit j set where entry e is the first of the sweep to write operand j's adjoint,
    can assign it (`core.codegen.assigns_first`) and writes all of it (the operand is not broadcast
    against the output; `total` writes all of its operand). ZERO: the [lo, hi) spans of the
    adjoints that need one but get no such assignment (the inputs' adjoints, those written first
    by other kernels or never written), merged where adjacent. The seeded slot counts as written
    (the caller seeds it; it is a scalar) and is not zeroed. On `core.aliases.Aliased` arrays,
    adjoints that slots share (an alias and the operand holding it) are never assigned: the
    operand's is zeroed, and every writer accumulates.

    A first write is assigned only where it pays: on the scalar path (a one-element elementwise
    entry, inline in the sweep) or into an adjoint of `FIRST_WRITE_MIN` elements or more. A
    small non-scalar entry with its FIRST bits clear runs the plain `_vjp` kernel, where the
    assigning `_vjp_first` kernel costs an extra call of 10-25 ns per entry (measured on the FAW
    graph's 4-element entries), more than zeroing a few elements in ZERO costs.

    It runs on the first call of every gradient, so it is array operations over the tape's
    operand reads, not a Python loop over entries: the first writer of a slot in the reverse
    sweep is its reader with the highest entry number (the lowest operand position within it),
    among the entries the sweep runs (those whose output needs an adjoint)."""
    E, NEED = tape.E, tape.NEED.astype(bool)
    sizes = np.asarray(tape.sizes, np.int64)
    assigns_table, binary, elementwise = _first_write_flags()
    runs = NEED[E[:, 4]] if len(E) else np.zeros(0, bool)
    variadic = VARIADIC[E[:, 0]] & runs
    fixed = np.flatnonzero(runs & ~variadic)
    entry = [np.repeat(fixed, 3)]
    position = [np.tile(np.arange(3), fixed.size)]
    slot = [E[fixed, 1:4].reshape(-1)]
    for e in np.flatnonzero(variadic).tolist():     # operands in the payload (pack: few)
        operands = tape.IP[E[e, 5]:E[e, 5] + E[e, 6]]
        entry.append(np.full(operands.size, e))
        position.append(np.arange(operands.size))
        slot.append(operands)
    entry, position, slot = (np.concatenate(a).astype(np.int64) for a in (entry, position, slot))
    read = slot >= 0
    read[read] = NEED[slot[read]]
    read &= slot != out                               # the seed counts as written
    entry, position, slot = entry[read], position[read], slot[read]
    order = np.lexsort((position, -entry))            # the reverse sweep's order of writes
    _, firsts = np.unique(slot[order], return_index=True)
    writer = order[firsts]
    e, j, s = entry[writer], position[writer], slot[writer]
    op = E[e, 0]
    out_sizes = sizes[E[e, 4]]
    assigns = (j < 2) & assigns_table[op] & (~binary[op] | (sizes[s] == out_sizes)) & \
        ((elementwise[op] & (out_sizes == 1)) | (sizes[s] >= FIRST_WRITE_MIN))
    shared = getattr(tape, "shared", None)        # `core.aliases.Aliased`: aliases, operands
    if shared is not None:
        assigns &= ~shared[s]
    first = np.zeros(len(E), np.int64)
    np.bitwise_or.at(first, e[assigns], np.left_shift(1, j[assigns]))
    assigned = np.zeros(NEED.size, bool)
    assigned[s[assigns]] = True
    if NEED.size:
        assigned[out] = NEED[out]
    if shared is not None:
        assigned |= tape.alias                        # inside an operand, which is zeroed
    zeroed = np.flatnonzero(NEED & ~assigned)
    lo = np.asarray(tape.offsets, np.int64)[zeroed]
    hi = lo + sizes[zeroed]
    opens = np.ones(lo.size, bool)                    # a span not adjacent to the one before
    opens[1:] = lo[1:] != hi[:-1]
    closes = np.ones(lo.size, bool)                   # the last of its run of adjacent spans
    closes[:-1] = opens[1:]
    return first, np.stack([lo[opens], hi[closes]], axis=1).reshape(-1, 2)


# the smallest adjoint (in elements) that a non-scalar entry assigns on its first write
FIRST_WRITE_MIN = 32


@functools.cache
def _first_write_flags():
    """Per opcode: whether `backward_first` assigns its first writes, whether it is binary,
    whether it is elementwise (a one-element entry of which takes the sweep's scalar path)."""
    from .codegen import assigns_first
    return np.array([assigns_first(p) for p in PRIMS], bool), BINARY, ELEMENTWISE


def backward(tape, V, G):
    check(tape)
    m, stop = interpreters(), len(tape.E)
    if checked is not None:
        return checked.backward(tape, V, G, m)
    for e, rule in reversed(tape.calls):
        m.backward(tape.E, tape.FC, tape.IP, tape.S, tape.NEED, V, G, e + 1, stop)
        if tape.NEED[tape.E[e, 4]]:      # like the compiled sweeps: no adjoint, nothing to do
            rule.vjp(tape, V, G, e)
        stop = e
    m.backward(tape.E, tape.FC, tape.IP, tape.S, tape.NEED, V, G, 0, stop)


def tangent(tape, V, T):
    check(tape)
    m, start = interpreters(), 0
    for e, rule in tape.calls:
        m.tangent(tape.E, tape.FC, tape.IP, tape.S, V, T, start, e)
        rule.jvp(tape, V, T, e)
        start = e + 1
    m.tangent(tape.E, tape.FC, tape.IP, tape.S, V, T, start, len(tape.E))


def backward_tangent(tape, V, T, G, TG):
    check(tape)
    if tape.calls:
        raise NotImplementedError(
            "third-order derivatives: a nested transform inside hessian/hvp (or a second-order "
            "transform of a gradient) is not supported")
    interpreters().backward_tangent(tape.E, tape.FC, tape.IP, tape.S, tape.NEED, V, T, G, TG,
                                    0, len(tape.E))
