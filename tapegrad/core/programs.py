"""Programs: a tape's scalar entries with their value offsets resolved, for grad's sweeps.

The flat interpreters look everything up per entry: the entry's row of E, each slot's offset in
S, whether the output and each operand need an adjoint (NEED), whether a reverse write is the
first (FIRST). On a graph of scalars (one output element per entry, the FAW benchmark's
15,000 of 20,000) those lookups, not the arithmetic, are most of an entry's cost. A program
does them once per tape: each of its rows is (opcode, entry, a, b, out), where for an entry of
one output element of an elementwise primitive a, b and out are the value offsets of its
operands and output, read by the sweeps directly. A pack of one-element operands (`np.stack` of
scalars, FAW's softmax input) becomes one `copy` row per operand, or, where only the next
entry reads it and that entry is a softmax (`fusible`), nothing: the softmax's row is then a
gathered row, which reads the scalars where they are (their offsets in the program's second
array, K) and adds their adjoints there. Any other entry's row has
opcode -1 and runs the flat interpreters' kernels as they do (its E row, S lookups), those of
small kernels (`Prim.inline`: softmax, pack) written into the sweep's loop, the others called.
The reverse program holds only the entries whose output needs an adjoint, and its rows two
more columns: the adjoint offsets of a and b, those of an operand that needs none pointed at a
sink (one element past the adjoint buffer, which the sweep's caller allocates and drops). So
the reverse sweep tests nothing per entry: it zeroes the adjoints (and the sink), seeds the
output and adds.

The same bits as the flat sweeps: the rows' statements are written from the same expressions
(`f`, `d`) with the same vectorisable math, in the same order of entries and of operands, and
the other entries run the same kernels. Only where the flat reverse sweep assigns a first write
(x), a program adds it to zero (0 + x): the same value, but +0.0 for -0.0; and a gathered row
adds an adjoint v straight into its scalar's, where the pack's copy would add 0 + v (again the
sign of a zero only).

The sweeps' module is generated from the registry (`core.codegen.generate_programs`) and
loaded at the first tape that takes a program (`core.interp.program_sweeps`): `Gradient`
binds programs for tapes with at least `MIN_SCALAR_ROWS` such entries, where they pay for
loading another compiled module (its cold compile, once per machine, about 90 s here).
"""
import numpy as np

from .registry import BINARY, ELEMENTWISE, GATHERS, OPCODE, VARIADIC

_PACK, _COPY = OPCODE["pack"], OPCODE["copy"]

# the fewest one-element elementwise entries for which grad's sweeps run a program
MIN_SCALAR_ROWS = 256


def _scalar(E, S):
    """Which entries of E a program runs by resolved offsets: one-element elementwise ones."""
    return ELEMENTWISE[E[:, 0]] & (S[E[:, 4], 1] == 1)


def _payloads(E, IP, entries):
    """(owner, position, value) per integer of the payloads of `entries` (indices into E), in
    their order: the entry it belongs to, its position in that payload, its value."""
    count = E[entries, 6]
    position = np.arange(int(count.sum()), dtype=np.int64) - \
        np.repeat(np.cumsum(count) - count, count)
    owner = np.repeat(entries, count)
    return owner, position, IP[E[owner, 5] + position]


def _packs_of_scalars(E, IP, S):
    """(entries, operands, positions) of the packs in E whose operands all have one element:
    for each operand, in the order of entries and of their operand lists, its pack's index in
    E, its slot and its position in the pack's output."""
    packs = np.flatnonzero(E[:, 0] == _PACK)
    owner, position, operands = _payloads(E, IP, packs)
    scalars = np.ones(len(E), bool)
    np.logical_and.at(scalars, owner, S[operands, 1] == 1)
    keep = scalars[owner]
    return owner[keep], operands[keep], position[keep]


def fusible(arrays, read_by_offset=()):
    """The output slots of the packs a program leaves out, among the entries of `arrays` (a
    tape's or `core.aliases.Aliased`: E, IP, S, and `shared` where some slots are aliases):
    packs of one-element operands whose output only the next entry reads, as the operand of a
    `GATHERS` primitive (softmax), and which nothing reads by its offset: not a slot of
    `read_by_offset` (inputs, outputs, guards), nor the values an alias points into. That entry
    reads the pack's operands where they are instead (a gathered row, `rows`). The next entry
    only: in the reverse sweep nothing runs between the two, so its adjoints reach the
    operands in the order the pack's copies would add them."""
    E, IP, S = np.asarray(arrays.E), np.asarray(arrays.IP), arrays.S
    protected = np.fromiter(read_by_offset, np.int64, len(read_by_offset))
    shared = getattr(arrays, "shared", None)
    if shared is not None:
        protected = np.union1d(protected, np.flatnonzero(shared))
    packs = np.unique(_packs_of_scalars(E, IP, S)[0])
    packs = packs[packs + 1 < len(E)]
    out, nxt = E[packs, 4], packs + 1
    ok = GATHERS[E[nxt, 0]] & (E[nxt, 1] == out)
    # every operand column, used or not (a column a primitive leaves unused only ever keeps a
    # pack), and the operand lists of variadic entries
    reads = np.concatenate([E[:, 1:4].ravel(),
                            _payloads(E, IP, np.flatnonzero(VARIADIC[E[:, 0]]))[2]])
    readers = np.bincount(reads[reads >= 0], minlength=len(S))
    ok &= readers[out] == 1
    ok &= ~np.isin(out, protected)
    return out[ok]


def rows(E, S, NEED=None, sink=None, IP=None, fused=()):
    """The program of the entries E: (P, K), P's rows (opcode, entry, a, b, out) of int64 in
    E's order, a row of opcode -1 running its entry as the flat sweeps do. With `NEED`, a
    reverse program: the entries whose output needs an adjoint, with two more columns, the
    adjoint offsets of a and b, `sink` for an operand that needs none. With the payload `IP`,
    a pack of one-element operands is a row of `copy` per operand (`V[out + j] = V[a_j]`;
    reversed, `G[a_j] += G[out + j] * 1.0`, which is the pack's sum exactly), in the order of
    its operands, which a reverse program lists last to first so that its sweep, running the
    rows backwards, adds them in the pack's order. A pack whose output is in `fused`
    (`fusible`) has no row, and the entry reading it a gathered row (opcode -2, a the start in
    K of its operands' value offsets, b their count; a reverse program's K holds their adjoint
    offsets next, `sink` for those that need none). Array operations: a program is built at
    the first gradient of its tape."""
    E = np.asarray(E)
    entries = np.arange(len(E), dtype=np.int64)
    if NEED is not None:
        entries = entries[NEED[E[:, 4]].astype(bool)]
    E = E[entries]
    op, so = E[:, 0].astype(np.int64), E[:, 4]
    scalar = _scalar(E, S)
    binary = scalar & BINARY[op]
    P = np.zeros((entries.size, 5 if NEED is None else 7), np.int64)
    P[:, 0] = np.where(scalar, op, -1)
    P[:, 1] = entries
    P[:, 4] = np.where(scalar, S[so, 0], 0)
    for column, slots, used in ((2, E[:, 1], scalar), (3, E[:, 2], binary)):
        slots = np.where(used, slots, 0)
        P[:, column] = np.where(used, S[slots, 0], 0)
        if NEED is not None:
            P[:, column + 3] = np.where(used & NEED[slots].astype(bool), P[:, column], sink)
    K = np.zeros(0, np.int64)
    if IP is not None:
        P, K = _expand_packs(P, E, S, NEED, sink, np.asarray(IP), np.asarray(fused, np.int64))
    P.flags.writeable = False
    K.flags.writeable = False
    return P, K


def _expand_packs(P, E, S, NEED, sink, IP, fused):
    """(P, K): P with the row of each pack of one-element operands replaced by its rows of
    `copy`, or, for a pack in `fused` whose reader is in E, by none and its reader's row by a
    gathered one, whose offsets K holds."""
    packs, operands, position = _packs_of_scalars(E, IP, S)
    reader = np.flatnonzero(GATHERS[E[:, 0]] & np.isin(E[:, 1], fused))
    fuse = np.isin(E[packs, 4], E[reader, 1])           # per operand
    reader = reader[np.isin(E[reader, 1], E[packs[fuse], 4])]
    K = _gathered(P, E, S, NEED, sink, reader, packs[fuse], operands[fuse])
    gone = np.unique(packs[fuse])
    packs, operands, position = packs[~fuse], operands[~fuse], position[~fuse]
    if NEED is not None:        # last operand first: the reverse sweep runs rows backwards
        order = np.lexsort((-position, packs))
        packs, operands, position = packs[order], operands[order], position[order]
    copies = np.zeros((packs.size, P.shape[1]), np.int64)
    copies[:, 0] = _COPY
    copies[:, 1] = P[packs, 1]
    copies[:, 2] = S[operands, 0]
    copies[:, 4] = S[E[packs, 4], 0] + position
    if NEED is not None:
        copies[:, 5] = np.where(NEED[operands].astype(bool), copies[:, 2], sink)
        copies[:, 6] = sink
    # each row in its entry's place: a pack's run of copies where its row was, none for a
    # fused pack
    copied = np.unique(packs)
    count = np.ones(len(P), np.int64)
    count[gone] = 0
    count[copied] = 0
    np.add.at(count, packs, 1)
    new = np.empty((int(count.sum()), P.shape[1]), np.int64)
    start = np.cumsum(count) - count
    kept = count == 1
    kept[copied] = False
    new[start[kept]] = P[kept]
    new[start[packs] + (np.arange(packs.size) - np.searchsorted(packs, packs))] = copies
    return new, K


def _gathered(P, E, S, NEED, sink, reader, packs, operands):
    """Make the rows `reader` gathered rows (in place) and return their K: for each, the value
    offsets of the operands of the pack whose output it reads (`packs`, `operands`: per
    operand of those packs, in E's order and the packs' order), then, in a reverse program,
    their adjoint offsets. Each pack has one reader, after it: their orders agree."""
    if not reader.size:
        return np.zeros(0, np.int64)
    group, size = np.unique(packs, return_counts=True)
    assert (E[group, 4] == E[reader, 1]).all()
    width = size if NEED is None else 2 * size
    start = np.cumsum(width) - width
    within = np.arange(packs.size) - np.repeat(np.cumsum(size) - size, size)
    at = np.repeat(start, size) + within
    K = np.empty(int(width.sum()), np.int64)
    K[at] = S[operands, 0]
    if NEED is not None:
        K[at + np.repeat(size, size)] = np.where(NEED[operands].astype(bool),
                                                 S[operands, 0], sink)
    P[reader, 0], P[reader, 2], P[reader, 3] = -2, start, size
    return K


def worth_it(E, S):
    """Whether grad's sweeps over the entries E run programs: at least `MIN_SCALAR_ROWS` of
    them would run by resolved offsets."""
    return int(np.count_nonzero(_scalar(np.asarray(E), S))) >= MIN_SCALAR_ROWS
