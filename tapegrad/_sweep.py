"""The four sweeps over a flat tape, split around nested-transform entries.

A tape is swept by one call of a compiled interpreter, except where it holds `call` entries
(a `grad(f)` used inside a traced or eager computation): there the sweep runs the compiled
interpreter up to the entry, the entry's Python rule, and the interpreter again after it.
`tape` is anything with E, FC, IP, S, NEED arrays and a `calls` list of (entry, rule).

The sweeps are the validation boundary's gate (see `_validate`): the interpreters do not check
bounds, so a tape reaches them only when it is marked `validated`: tapes built in this process
are marked where they are built (`_tape.FlatTape`, the eager graph; traced and loaded `Tape`s),
anything else must pass `_validate.validate_tape` first (`gradient_sweeps` checks once, when
it binds a tape). In anomaly mode (`_anomaly`) the forward and reverse sweeps run one entry at a
time and check every value they produce.
"""
from . import _graph
from ._interp import interpreters


def check(tape):
    """Refuse a tape that has not passed the validator (one attribute test per sweep); every
    path to a compiled interpreter (these sweeps, the vmap driver, Dask, CUDA) calls it."""
    if getattr(tape, "validated", None) is True:
        return
    from ._validate import TapeFormatError
    raise TapeFormatError(
        f"refusing to sweep a {type(tape).__name__} that has not been validated: tapes built "
        "from arrays (not recorded or traced in this process) must pass "
        "tapegrad.validate_tape(tape) (tapegrad.load does) before they are replayed")


def forward(tape, V):
    check(tape)
    m, start = interpreters(), 0
    if _graph.anomaly_enabled:
        from . import _anomaly
        return _anomaly.forward(tape, V, m)
    for e, rule in tape.calls:
        m.forward(tape.E, tape.FC, tape.IP, tape.S, V, start, e)
        rule.forward(tape, V, e)
        start = e + 1
    m.forward(tape.E, tape.FC, tape.IP, tape.S, V, start, len(tape.E))


def forward_entries(tape, V, E, FC):
    """The forward sweep over a subset of the tape's rows (E, FC), in order; no nested
    transforms (see `_trace._value_entries`). Anomaly mode sweeps the whole tape."""
    check(tape)
    if _graph.anomaly_enabled:
        return forward(tape, V)
    interpreters().forward(E, FC, tape.IP, tape.S, V, 0, len(E))


def gradient_sweeps(tape, entries=None):
    """`run(V, G)`: the forward sweep, then the reverse sweep with the seeds in G, for a tape
    without guards to test between the two (the caller's duty).

    `entries`: the rows (E, FC) that the forward sweep needs (`_trace._value_entries`), None for
    all. Made once per tape for `grad`'s replay on plain arrays, so that a call does no more
    than the two interpreter calls: in a function over large data each sweep evicts the caches,
    and the Python around the sweeps then runs cold, at microseconds per operation (issue #3).
    The tape is checked here, once; anomaly mode and nested transforms take the general sweeps.
    """
    check(tape)
    E, FC = (tape.E, tape.FC) if entries is None else entries
    m = interpreters()
    fwd, bwd, IP, S, NEED = m.forward, m.backward, tape.IP, tape.S, tape.NEED
    E_all, FC_all, n_fwd, n_all = tape.E, tape.FC, len(E), len(tape.E)

    def general(V, G):
        if entries is None:
            forward(tape, V)
        else:
            forward_entries(tape, V, E, FC)
        backward(tape, V, G)

    def run(V, G):
        if _graph.anomaly_enabled:
            return general(V, G)
        fwd(E, FC, IP, S, V, 0, n_fwd)
        bwd(E_all, FC_all, IP, S, NEED, V, G, 0, n_all)

    return general if tape.calls else run


def backward(tape, V, G):
    check(tape)
    m, stop = interpreters(), len(tape.E)
    if _graph.anomaly_enabled:
        from . import _anomaly
        return _anomaly.backward(tape, V, G, m)
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
