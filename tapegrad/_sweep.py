"""The four sweeps over a flat tape, split around nested-transform entries.

A tape is swept by one call of a compiled interpreter, except where it holds `call` entries
(a `grad(f)` used inside a traced or eager computation): there the sweep runs the compiled
interpreter up to the entry, the entry's Python rule, and the interpreter again after it.
`tape` is anything with E, FC, IP, S, NEED arrays and a `calls` list of (entry, rule).
"""
from ._interp import interpreters


def forward(tape, V):
    m, start = interpreters(), 0
    for e, rule in tape.calls:
        m.forward(tape.E, tape.FC, tape.IP, tape.S, V, start, e)
        rule.forward(tape, V, e)
        start = e + 1
    m.forward(tape.E, tape.FC, tape.IP, tape.S, V, start, len(tape.E))


def backward(tape, V, G):
    m, stop = interpreters(), len(tape.E)
    for e, rule in reversed(tape.calls):
        m.backward(tape.E, tape.FC, tape.IP, tape.S, tape.NEED, V, G, e + 1, stop)
        rule.vjp(tape, V, G, e)
        stop = e
    m.backward(tape.E, tape.FC, tape.IP, tape.S, tape.NEED, V, G, 0, stop)


def tangent(tape, V, T):
    m, start = interpreters(), 0
    for e, rule in tape.calls:
        m.tangent(tape.E, tape.FC, tape.IP, tape.S, V, T, start, e)
        rule.jvp(tape, V, T, e)
        start = e + 1
    m.tangent(tape.E, tape.FC, tape.IP, tape.S, V, T, start, len(tape.E))


def backward_tangent(tape, V, T, G, TG):
    if tape.calls:
        raise NotImplementedError(
            "third-order derivatives: a nested transform inside hessian/hvp (or a second-order "
            "transform of a gradient) is not supported")
    interpreters().backward_tangent(tape.E, tape.FC, tape.IP, tape.S, tape.NEED, V, T, G, TG,
                                    0, len(tape.E))
