"""Copies that cost nothing: entries whose output is a run of their operand's values, replayed
as an alias of those values instead of a copy of them.

A `window` of step 1 (`x[1:]`, `x[:-1]`) or of one element (`x[i]`, most reads of a graph of
scalars) and a `copy` (reshape, clone, astype within the buffer's dtype) compute values that
already sit in their operand's part of the buffer. Replayed as recorded, each costs a pass over
its values forward and another, accumulating, backward: on Rosenbrock's tape three of eleven
entries, on a graph of scalars a quarter. `copies` finds them; a replay may drop those entries
and point each output slot at `start .. start + size` of its operand's values instead (the
operand's offset plus `start`): an alias. Two replays do (docs/design.md, section 4): the
transforms' flat sweeps (`aliased`, below: grad's, and the reverse and tangent sweeps of the
others), in the tape's own value buffer, and the batched CPU replay (`batch.columns`), which
also packs its buffer without the copies' rows.

Why this is exact for the sweeps (forward, tangent, reverse, reverse-tangent):
* forward and tangent: the dropped entry would have copied the operand's values; the alias *is*
  those values. Nothing writes an alias: every other entry writes its own fresh output slot,
  and inputs are never entry outputs (the validator checked both).
* reverse: readers of an alias accumulate into the operand's adjoint directly, which the
  dropped entry's linear VJP would have done later: the same sum in another order (floating
  point reassociation only). Kernels read operands and accumulate into operand adjoints in
  sequential loops, so operands that overlap (`x[1:] * x[:-1]`) stay correct.
* bounds: an alias lies inside its operand by the window's shape rule (validated), and each
  user checks the aliases against its buffer again.
An alias needs an adjoint exactly where its operand does: they have the same adjoint values.
"""
import numpy as np

from .registry import OPCODE

_WINDOW, _COPY = OPCODE["window"], OPCODE["copy"]


def copies(E, IP, S, protected=()):
    """(entries, operands, outputs, starts), int64 arrays in tape order: the entries whose
    output slot can be an alias of `start .. start + size` of their operand slot's values
    (windows of step 1 or of one element, copies), leaving out those whose output is in
    `protected` (slots read from the buffer by their own offsets: outputs, guards). Array
    operations: it runs at the first gradient of every tape, some with thousands of reads."""
    rows = np.flatnonzero((E[:, 0] == _WINDOW) | (E[:, 0] == _COPY))
    out, ip = E[rows, 4], E[rows, 5]
    window = E[rows, 0] == _WINDOW
    pair = window & (E[rows, 6] == 2)                 # a window's (start, step)
    start, step = np.zeros(rows.size, np.int64), np.zeros(rows.size, np.int64)
    start[pair], step[pair] = IP[ip[pair]], IP[ip[pair] + 1]
    ok = ~window | (pair & ((step == 1) | (S[out, 1] <= 1)))   # strided or broadcast: copied
    if protected:
        ok &= ~np.isin(out, np.fromiter(protected, np.int64, len(protected)))
    return rows[ok], E[rows[ok], 1], out[ok], start[ok]


class Aliased:
    """A tape's arrays for the transforms' flat sweeps, its copies dropped and their outputs
    aliased (`aliased`). The value and adjoint buffers are the tape's own (same offsets for
    every slot but the aliases, whose old values are left unused), so inputs, outputs and
    guards are read and written where the tape says.

    E, FC, IP, S, NEED: what the interpreters take (read-only); `offsets`, `sizes`: S's columns
    as lists; `keep`: the tape's rows that E holds; `alias`: the slots made aliases; `shared`:
    the slots whose adjoint values another slot shares (aliases and the operands they alias),
    which the first-write analysis of the reverse sweep (`core.sweep._first_writes`) leaves to
    zeroing (of the operands, which hold their aliases) and accumulation."""
    calls = ()
    validated = True        # built from a validated tape, every alias checked against its operand

    def __init__(self, tape, found):
        from .validate import read_only
        entries, operands, outputs, starts = found
        n_slots = len(tape.S)
        S = np.array(tape.S, np.int64)
        NEED = np.array(tape.NEED, np.int64)
        resolve(S, NEED, operands, outputs, starts)
        keep = np.ones(len(tape.E), bool)
        keep[entries] = False
        alias = np.zeros(n_slots, bool)
        alias[outputs] = True
        shared = alias.copy()
        shared[operands] = True
        self.keep, self.alias, self.shared = keep, alias, shared
        self.E = read_only(np.ascontiguousarray(tape.E[keep]), owned=True)
        self.FC = read_only(np.ascontiguousarray(tape.FC[keep]), owned=True)
        self.IP = tape.IP
        self.S, self.NEED = read_only(S, owned=True), read_only(NEED, owned=True)
        self.offsets, self.sizes = S[:, 0].tolist(), S[:, 1].tolist()


def resolve(S, NEED, operands, outputs, starts):
    """Point each alias slot (`outputs`) of the slot table S at `starts` past its operand's
    offset (an operand may be an alias itself: chains resolve level by level) and give it its
    operand's NEED; raise if an alias does not lie inside its operand."""
    pending = np.ones(outputs.size, bool)
    unplaced = np.zeros(len(S), bool)
    unplaced[outputs] = True
    while pending.any():
        ready = pending & ~unplaced[operands]
        if not ready.any():
            raise AssertionError("aliases that alias each other")
        o, a = outputs[ready], operands[ready]
        S[o, 0] = S[a, 0] + starts[ready]
        NEED[o] = NEED[a]
        unplaced[o] = False
        pending &= ~ready
    a, o = operands, outputs
    if not ((S[a, 0] <= S[o, 0]) & (S[o, 0] + S[o, 1] <= S[a, 0] + S[a, 1])).all():
        raise AssertionError("an alias outside the values of its operand")


def aliased(tape, protected):
    """`Aliased` arrays of `tape` (E, FC, IP, S, NEED, offsets, sizes, calls), or None where
    it has no copy to drop or holds nested-transform entries (whose Python rules read slots by
    the tape's own offsets)."""
    if tape.calls:
        return None
    found = copies(tape.E, tape.IP, tape.S, protected)
    return Aliased(tape, found) if found[0].size else None
