"""The batched replay's layout of a tape: copies become views, dead rows leave the buffer.

The copies of a tape (`core.aliases.copies`: windows of step 1 or one element, `copy`
entries) compute rows that already exist in their operand's rows. In the column layout each
costs a pass over every one of its rows and tile points forward, another (accumulating)
backward, and rows of every per-point buffer (values, adjoints, tangents): on a small tape like
Rosenbrock's, where windows are a good part of the entries, a large share of the replay
(docs/design.md, "Batched replay"). `layout(tape)` drops those entries and points their output
slots into the operand's rows instead (an alias: an operand offset; why that is exact for every
sweep the tile driver runs: `core.aliases`), then packs the remaining slots' rows without gaps.
Every alias is checked against the packed buffer again, so none can open a path out of bounds
whatever it was built from.

A product of a slot with itself (`d * d`) is replayed as `square`: the same value, and one
adjoint pass instead of two (2 * g * x for g * x + g * x: rounding only). The recorded entry
stays a `mul`, as PyTorch's graph shows it (MulBackward0 with the operand twice).

A constant multiple that only a sum reads (`sum(4.0 * e)`) is folded into the sum's own scale:
`c * sum(e)` instead of `sum(c * e)`, rounding only, one entry fewer each way.

Only the CPU tile driver (`cpu`) uses this layout; the tape itself, the flat interpreters,
CUDA, saving and display keep the entries.
"""
import weakref

import numpy as np

from ..core.aliases import copies, resolve
from ..core.registry import OPCODE, VARIADIC
from ..core.validate import read_only

_MUL, _SQUARE, _MUL_CONST = (OPCODE[n] for n in ("mul", "square", "mul_const"))
_SCALED_SUMS = [OPCODE["total"], OPCODE["segsum"]]       # sums that scale by their c0
_CACHE = weakref.WeakKeyDictionary()      # tape -> Layout (a tape's arrays never change)


class Layout:
    """E, FC, IP, S, NEED for the tile driver, read-only as the interpreters take them (see
    `core.validate`); `rows`: the rows of the tape's value buffer that the packed one keeps;
    `moved[r]`: where row r of the tape's buffer is in the packed one.
    `need_spans` (k, 2): the packed rows whose adjoints the reverse sweeps touch, as
    [start, stop) runs; `leaf_spans` those of them that no entry writes (inputs, constants), the
    only ones left nonzero by a batched backward sweep (it clears each output adjoint it used)."""

    def __init__(self, E, FC, IP, S, NEED, rows, moved, need_spans, leaf_spans):
        self.E, self.FC, self.S, self.NEED = (read_only(a, owned=True) for a in (E, FC, S, NEED))
        self.IP = read_only(IP)
        self.rows, self.moved = rows, moved
        self.need_spans, self.leaf_spans = need_spans, leaf_spans

    def values(self, V):
        """The packed value buffer, from a value buffer of the tape."""
        return V[self.rows]

    def positions(self, positions):
        """Rows of the tape's buffer (the vmap plan's positions) as rows of the packed one."""
        return self.moved[positions]


def layout(tape):
    """The column-layout replay's Layout of `tape` (cached per tape)."""
    try:
        return _CACHE[tape]
    except (KeyError, TypeError):
        pass
    result = _build(tape)
    try:
        _CACHE[tape] = result
    except TypeError:       # not weak-referenceable: rebuilt on each call
        pass
    return result


def _build(tape):
    E, IP, S, NEED = tape.E, tape.IP, tape.S, tape.NEED
    n_slots = len(S)
    entries, operands, outputs, starts = copies(E, IP, S)
    keep = np.ones(len(E), bool)
    owners = np.ones(n_slots, bool)
    keep[entries] = owners[outputs] = False
    E, FC = E.copy(), tape.FC.copy()              # the tape's entries stay as recorded
    dead = _fold_scales(E, FC, IP, keep, n_slots, _protected(tape))
    sizes = S[:, 1]
    table = np.zeros((n_slots, 2), np.int64)      # the packed slot table
    table[:, 1] = sizes
    table[owners, 0] = np.cumsum(sizes[owners]) - sizes[owners]
    need = NEED.copy()
    resolve(table, need, operands, outputs, starts)
    offsets = table[:, 0]
    total = int(sizes[owners].sum())
    if ((offsets < 0) | (offsets + sizes > total)).any():
        raise AssertionError("column layout: an alias outside the packed buffer")
    # the slot table tiles the tape's buffer in slot order (validated): row r of slot s moves
    # by offsets[s] - S[s, 0]
    n_rows = int(sizes.sum())
    moved = np.repeat(offsets - S[:, 0], sizes) + np.arange(n_rows, dtype=np.int64)
    rows = np.flatnonzero(np.repeat(owners, sizes)).astype(np.int64)
    packed = np.ascontiguousarray(np.stack([offsets, sizes], axis=1))
    leaves = (need != 0) & owners
    leaves[E[keep, 4]] = False
    leaves[dead] = False
    E = E[keep]
    self_product = (E[:, 0] == _MUL) & (E[:, 1] == E[:, 2])
    E[self_product, 0], E[self_product, 2] = _SQUARE, -1
    return Layout(np.ascontiguousarray(E), np.ascontiguousarray(FC[keep]), IP, packed,
                  need, rows, moved, _spans((need != 0)[owners], sizes[owners]),
                  _spans(leaves[owners], sizes[owners]))


def _protected(tape):
    """Slots whose values the tile driver reads (outputs, guards); None: unknown."""
    outputs = getattr(tape, "output_slots", None)
    if outputs is None:
        return None
    return {int(s) for s in outputs} | {int(s) for s, _ in tape.guards}


def _fold_scales(E, FC, IP, keep, n_slots, protected):
    """sum(c * x) as c * sum(x): a constant multiple that only a sum reads moves into the sum's
    scale c0 (total and segsum scale what they add), one entry fewer each way (rounding only).
    Edits E, FC and keep; returns the slots no entry writes any more (their rows are dead)."""
    if protected is None:
        return []
    ops = E[:, 0]
    operands = E[:, 1:4]
    reads = np.bincount(operands[operands >= 0], minlength=n_slots)
    for e in np.flatnonzero(VARIADIC[ops]):
        np.add.at(reads, IP[E[e, 5]:E[e, 5] + E[e, 6]], 1)
    producer = np.full(n_slots, -1, np.int64)
    producer[E[:, 4]] = np.arange(len(E))
    dead = []
    for e in np.flatnonzero(np.isin(ops, _SCALED_SUMS) & keep):
        t = E[e, 1]
        m = producer[t]
        if m >= 0 and keep[m] and ops[m] == _MUL_CONST and reads[t] == 1 \
                and int(t) not in protected:
            FC[e, 0] *= FC[m, 0]
            E[e, 1] = E[m, 1]
            keep[m] = False
            dead.append(int(t))
    return dead


def _spans(marked, sizes):
    """The [start, stop) runs of rows of the marked slots, in a buffer of slots of `sizes`."""
    flags = np.concatenate(([False], np.repeat(marked, sizes), [False])).astype(np.int8)
    edges = np.flatnonzero(np.diff(flags))
    return np.ascontiguousarray(edges.reshape(-1, 2), dtype=np.int64)
