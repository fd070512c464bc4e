"""The four sweeps over a flat tape, split around nested-transform entries.

A tape is swept by one call of a compiled interpreter, except where it holds `call` entries
(a `grad(f)` used inside a traced or eager computation): there the sweep runs the compiled
interpreter up to the entry, the entry's Python rule, and the interpreter again after it.
`tape` is anything with E, FC, IP, S, NEED arrays and a `calls` list of (entry, rule).

The sweeps are the validation boundary's gate (see `_validate`): the interpreters do not check
bounds, so a tape reaches them only when it is marked `validated`: tapes built in this process
are marked where they are built (`core.flat.FlatTape`, the eager graph; traced and loaded `Tape`s),
anything else must pass `_validate.validate_tape` first (`gradient_sweeps` checks once, when
it binds a tape). In anomaly mode (`checked`) the forward and reverse sweeps run one entry at a
time and check every value they produce.
"""
import numpy as np

from .interp import interpreters, reverse_first
from .registry import PRIMS

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
    transforms (see `_trace._value_entries`). Anomaly mode sweeps the whole tape."""
    check(tape)
    if checked is not None:
        return forward(tape, V)
    interpreters().forward(E, FC, tape.IP, tape.S, V, 0, len(E))


def gradient_sweeps(tape, out, entries=None):
    """`run(V)`: the forward sweep, then `scalar_adjoints(tape, V, out)`; for a tape without
    guards to test between the two sweeps (the caller's duty).

    `entries`: the rows (E, FC) that the forward sweep needs (`_trace._value_entries`), None for
    all. Made once per tape for `grad`'s replay on plain arrays, so that a call does no more
    than the two interpreter calls: in a function over large data each sweep evicts the caches,
    and the Python around the sweeps then runs cold, at microseconds per operation (issue #3).
    The tape is checked here, once; anomaly mode and nested transforms take the general sweeps.
    `run` calls the two interpreters' compiled code for its argument types directly (`_compiled`):
    V is the tape's own value buffer (`Tape._buffer`, which `load` returns), G made here.
    """
    check(tape)
    E, FC = (tape.E, tape.FC) if entries is None else entries
    IP, S, NEED = tape.IP, tape.S, tape.NEED
    E_all, FC_all, n_fwd, n_all = tape.E, tape.FC, len(E), len(tape.E)
    FIRST, ZERO = _first_writes(tape, out)
    n, seed = tape.n_adjoint, tape.offsets[out] if NEED[out] else None
    V_like, G_like = np.empty(0, tape.dtype), np.empty((1, 0), tape.dtype)
    fwd = _compiled(interpreters().forward, E, FC, IP, S, V_like, 0, n_fwd)
    bwd = _compiled(reverse_first().backward_first, E_all, FC_all, IP, S, NEED, FIRST, ZERO,
                    V_like, G_like, 0, n_all)

    def general(V):
        if entries is None:
            forward(tape, V)
        else:
            forward_entries(tape, V, E, FC)
        return scalar_adjoints(tape, V, out)

    def run(V):
        if checked is not None:
            return general(V)
        fwd(E, FC, IP, S, V, 0, n_fwd)
        G = np.empty((1, n), V.dtype)
        if seed is not None:
            G[0, seed] = 1.0
        bwd(E_all, FC_all, IP, S, NEED, FIRST, ZERO, V, G, 0, n_all)
        return G

    return general if tape.calls else run


def _compiled(dispatcher, *args):
    """The compiled code of numba `dispatcher` for the types of `args`, to be called with
    arguments of exactly those types (nothing checks them: a caller's own arrays only). It
    skips the dispatcher's resolution of the argument types, which costs about 30 ns more per
    read-only array than per writable one, and the tape arrays are read-only (see _validate)."""
    from numba import typeof
    return dispatcher.compile(tuple(typeof(a) for a in args))


def scalar_adjoints(tape, V, out):
    """The adjoints, shape (1, tape.n_adjoint), of the reverse sweep seeded with 1 at the scalar
    output slot `out`: grad's sweep, after the forward sweep has filled V.

    It runs `backward_first`, which assigns the first write of each adjoint where it can, so
    that the adjoint buffer is not zeroed first (see _codegen; the flags are found once per tape
    and output). Every gradient of a traced tape takes it, the first call too, so that a process
    loads that interpreter, not `backward` as well. Nested transforms and anomaly mode take the
    general sweep, on a zeroed buffer."""
    check(tape)
    seed = tape.offsets[out] if tape.NEED[out] else None
    if tape.calls or checked is not None:
        G = np.zeros((1, tape.n_adjoint), V.dtype)
        if seed is not None:
            G[0, seed] = 1.0
        backward(tape, V, G)
        return G
    FIRST, ZERO = _first_writes(tape, out)
    G = np.empty((1, tape.n_adjoint), V.dtype)
    if seed is not None:
        G[0, seed] = 1.0
    reverse_first().backward_first(tape.E, tape.FC, tape.IP, tape.S, tape.NEED, FIRST, ZERO, V,
                                   G, 0, len(tape.E))
    return G


def _first_writes(tape, out):
    """(FIRST, ZERO) of `backward_first` for a reverse sweep seeded at slot `out` (kept on the
    tape, per output slot)."""
    cache = tape.__dict__.setdefault("_first_rows", {})
    if out not in cache:
        cache[out] = _find_first_writes(tape, out)
    return cache[out]


def _find_first_writes(tape, out):
    """(FIRST, ZERO) of `backward_first` for a reverse sweep seeded at slot `out`.

    FIRST[e] has bit j set where entry e is the first of the sweep to write operand j's adjoint,
    can assign it (`core.codegen.assigns_first`) and writes all of it (the operand is not broadcast
    against the output; `total` writes all of its operand). ZERO: the [lo, hi) spans of the
    adjoints that need one but get no such assignment (the inputs' adjoints, those written first
    by other kernels or never written), merged where adjacent. The seeded slot counts as written
    (the caller seeds it; it is a scalar) and is not zeroed."""
    from .codegen import assigns_first
    # Python lists: this runs on the first call of every gradient, where numpy's scalar
    # indexing would cost more than the sweeps
    E, NEED, sizes, offsets = tape.E.tolist(), tape.NEED.tolist(), tape.sizes, tape.offsets
    first = [0] * len(E)
    written = [False] * len(NEED)
    assigned = [False] * len(NEED)
    written[out] = assigned[out] = bool(NEED[out])
    for e in range(len(E) - 1, -1, -1):          # the order of the reverse sweep
        op, a, b, c, o, ip_start, ip_len, _ = E[e]
        prim = PRIMS[op]
        if not NEED[o]:
            continue                               # the sweep skips it
        operands = tape.IP[ip_start:ip_start + ip_len].tolist() if prim.variadic else (a, b, c)
        for j, s in enumerate(operands):
            if s < 0 or not NEED[s] or written[s]:
                continue
            written[s] = True
            if j < 2 and assigns_first(prim) and (prim.kind != "binary" or sizes[s] == sizes[o]):
                first[e] |= 1 << j
                assigned[s] = True
    spans = []
    for s, need in enumerate(NEED):
        if not need or assigned[s]:
            continue
        lo, hi = offsets[s], offsets[s] + sizes[s]
        if spans and spans[-1][1] == lo:
            spans[-1][1] = hi
        else:
            spans.append([lo, hi])
    return np.array(first, np.int64), np.array(spans, np.int64).reshape(-1, 2)


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
