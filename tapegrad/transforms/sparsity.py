"""Sparsity patterns of Jacobians and Hessians, detected from a tape (index-set propagation).

One forward pass over the tape's entries gives each slot's pattern: a boolean sparse matrix
(slot elements x differentiated input elements) saying which inputs each element's derivative may
depend on, at any input values. An entry's output pattern is the union, over its operands, of
the operand's pattern rows its output elements read; which ones each primitive reads is its own
declared rule (`Prim.element_reads`, from `core/prims/`: elementwise primitives derive it from
their kind and partials, structural ones declare an index map or a conservative rule), never a
table kept here by hand.

Detection has two halves, both compiled. First the tape is described (`_describe`,
`_assemble`): each entry an input reaches becomes a few integers per operand read (a kind,
`_SAME`, `_ALL`, `_GATHER`, `_STRIDED` for a rule answering with ranges, `_PAIRS`, and where it
names elements, an offset into one shared buffer of index maps), every index range-checked
there (the propagation does not check bounds). Per-opcode tables built once from the
definitions say how: an elementwise primitive's reads come from its partials; the common
structural rules (windows, concatenations, segments, index maps, selections, every operand)
have compiled forms beside this code that give the numpy rule's answer, encoded (`_encoded_rule`;
the tests compare the two on every rule); any other rule (matrix products, scans, sorts, a rule
a definition adds) runs in Python for the entries that need it, between a survey and the
description. Then one compiled function (`_detect`) propagates the patterns of every entry, and
for a Hessian runs the reverse pass and assembles the pairs, with no Python per entry.

Patterns are first tried as stencils: row i of a slot holds column i * stride + c for each
of a few terms (c, first row, end row), one stride per slot (`_stencil_of`). Inputs are
stencils; an entry whose reads are maps of rows (its own index, a broadcast of one element, a
strided range: elementwise entries, windows, concatenations and their padding) maps its
operands' stencils to its own in time proportional to their terms, whatever the sizes. Any
other read (every element, an index map, pairs), mixed strides or more than `_CAP` terms make
the entry's pattern rows (below), its stencil operands written out as rows first (`_rows_of`,
on demand); an `_ALL` read of a stencil of stride 0 or 1 (a sum) is the union of its terms'
column ranges, written once (`_stencil_union`). A Jacobian whose outputs are all stencils is
written straight into its CSR arrays (`_stencil_csr`); otherwise its outputs are written out as
rows and gathered.

Otherwise patterns are rows of references: row r of a slot's pattern is
`IDX[RS[p + r]:RE[p + r]]`, a range of one growing buffer of column indices. So an elementwise
entry whose operands share the output's pattern shares it (the same p), a window of step 1
shares its operand's rows from where it starts (p + start), an index map or a broadcast copies
two integers per row (never the columns), the union of an entry's reads writes new columns
only for a row that reads two different nonempty rows (checked against each other where both
are short, else by a marker array stamped per union: never reset), and where the inputs are
rows (an argument passed twice, or `stencils=False`) their one-column rows all point into one
ramp. The buffers are a per-thread workspace kept between detections: fresh memory costs a
page fault per 4 KiB touched, which would cost more than the propagation itself.

The Hessian pattern of a scalar output adds, for each entry the output depends on through
elements that reach it (a reverse pass of boolean masks over the same reads), the pairs its
second derivatives couple (`Prim.coupling`): for an output element e and operands i, j coupled,
every pair of an input in the pattern of what e reads of i and one of what it reads of j. Each
such (left row, right row) is a term; the pattern is the boolean product of the terms' left
rows transposed with their right rows (each Hessian row the union, by a marker, of the right
rows of the terms whose left row holds it; a term of one element with itself marks a diagonal
entry directly), so the pairs are never listed. Where both patterns are stencils and the live
elements a range (liveness is a range per slot while it stays one, else flags), the coupling is
a unit instead: each pair of terms couples column x with x + delta over a range of x (a band,
strides 1), and when every unit is bands the pattern is written row by row from the merged bands
(`_band_product`), sorted, in time proportional to its nonzeros; else the units become terms.
Piecewise linear primitives (relu, maximum, sort, max) couple nothing; the structural nonlinear
ones without a finer rule couple every pair their output elements read (conservative).

A primitive whose definition declares no rule makes detection conservative for its entries
(every output element reads every operand element, every pair coupled) with a
`SparsityWarning`. Constant operands (values that are the same at every call of the tape) are
handed to the rules, which may drop reads that a zero constant cancels (a product with a
sparse constant matrix); with `capture="call"` the closed-over arrays are re-read per call, so
they are not constants here. The result is a scipy CSR matrix with sorted rows (scipy imported
then). `stencils=False` runs the rows path alone: the same patterns (the tests compare them).
"""
import threading
import warnings

import numpy as np

from ..core.jit import jit
from ..core.prims import dependence
from ..core.primitive import ALL, SAME


class SparsityWarning(UserWarning):
    """Detection met a primitive that declares no dependence rule and assumed it dense."""


def jacobian_pattern(tape, in_slots, out_slots, fixed_constants=True, stencils=True):
    """The (output elements, input elements) boolean CSR pattern of the Jacobian of
    `out_slots` with respect to `in_slots` (elements end to end, in slot order). `stencils`
    False propagates rows only (the same pattern, slower: tests compare the two)."""
    description = _describe(tape, in_slots, fixed_constants)
    out_slots = _slot_array(tape, out_slots)
    m = sum(tape.sizes[s] for s in out_slots.tolist())
    return _scipy_csr(*_run(description, out_slots, -1, m, stencils), (m, description[1]))


def hessian_pattern(tape, in_slots, out_slot, fixed_constants=True, stencils=True):
    """The symmetric (n, n) boolean CSR pattern of the Hessian of the scalar `out_slot` with
    respect to the elements of `in_slots` (`stencils`: as for `jacobian_pattern`)."""
    description = _describe(tape, in_slots, fixed_constants)
    n = description[1]
    out = int(_slot_array(tape, [out_slot])[0])
    return _scipy_csr(*_run(description, np.zeros(0, np.int64), out, n, stencils), (n, n))


def _scipy_csr(indptr, indices, ordered, shape, data=None):
    """The pattern (or with `data`, values in its order) as a scipy CSR matrix with sorted rows
    (they come free of duplicates, and sorted where `ordered`). Sorted rows of int32 indices
    skip the constructor's checks (they cost more than a small detection; the compiled pass
    wrote the arrays) where scipy's matrix holds exactly the state `_csr_state` found, else
    scipy's constructor builds it."""
    import scipy.sparse
    if data is None:
        data = np.ones(indices.size, bool)
    state = _csr_state()
    if ordered and state is not None and indices.dtype == np.int32:
        M = scipy.sparse.csr_matrix.__new__(scipy.sparse.csr_matrix)
        M.__dict__.update(state, _shape=shape, data=data, indices=indices, indptr=indptr,
                          _has_sorted_indices=True)
        return M
    M = scipy.sparse.csr_matrix((data, indices, indptr), shape=shape)
    if ordered:
        M.has_sorted_indices = True
    else:
        M.sort_indices()
    return M


_CSR_STATE = []


def _csr_state():
    """The attributes of a scipy CSR matrix besides its arrays and shape (from one built by
    its constructor, once), or None where they are not the plain set this module fills in."""
    if not _CSR_STATE:
        import scipy.sparse
        M = scipy.sparse.csr_matrix((np.ones(1, bool), np.zeros(1, np.int32),
                                     np.array([0, 1], np.int32)), shape=(1, 1))
        state = {k: v for k, v in vars(M).items() if k not in ("data", "indices", "indptr")}
        plain = set(state) == {"_shape", "maxprint"} and type(M) is scipy.sparse.csr_matrix
        _CSR_STATE.append(state if plain else None)
    return _CSR_STATE[0]


def _slot_array(tape, slots):
    slots = [int(s) for s in slots]
    if slots and not 0 <= min(slots) <= max(slots) < len(tape.sizes):
        raise ValueError(f"slots {slots} are not slots of a tape of {len(tape.sizes)}")
    return np.array(slots, np.int64)


class _Workspace(threading.local):
    """Per thread, the compiled pass's buffers, kept from one detection to the next (the pass
    hands them back grown where they were too small) unless they grew past `_KEPT` elements."""

    def __init__(self):
        self.IDX = self.work = self.out = np.zeros(0, np.int64)
        self.flags = np.zeros(0, np.bool_)
        self.marker = np.zeros(0, np.int64)
        self.stencils = np.zeros(0, np.int64)
        self.cur = np.zeros(4, np.int64)     # rows, columns, the marker's last stamp, stencils


_KEPT = 1 << 22
_workspace = _Workspace()


def _run(description, out_slots, hess_slot, m, stencils=True):
    """(indptr, indices, ordered) of the pattern (`_detect`; stencils False: rows only), in
    fresh arrays."""
    ws = _workspace
    n = description[1]
    if ws.marker.size < n:          # stamps only grow: -1 is below every one
        ws.marker = np.full(max(n, 2 * ws.marker.size), -1, np.int64)
    ws.IDX, ws.stencils, ws.work, ws.out, ws.flags, nnz, ordered = _detect(
        *description, out_slots, hess_slot, stencils, ws.IDX, ws.stencils, ws.work, ws.out,
        ws.flags, ws.marker, ws.cur)
    index = np.int32 if max(m, n, nnz) < 2 ** 31 else np.int64     # as scipy would have it
    result = ws.out[:m + 1].astype(index), ws.out[m + 1:m + 1 + nnz].astype(index), ordered
    if max(ws.IDX.size, ws.stencils.size, ws.work.size, ws.out.size, ws.flags.size,
           ws.marker.size) > _KEPT:
        for name in ("IDX", "stencils", "work", "out", "flags", "marker"):
            if getattr(ws, name).size > _KEPT:
                setattr(ws, name, getattr(ws, name)[:0].copy())
    return result


# ---- the description of a tape: integers per entry and per operand read --------------------

# how an operand is read (column 1 of a read): not at all, at the output element's own index
# (element 0 when the operand's size differs: a broadcast), every element, through an index map,
# through a strided map (output elements p0 + k read p1 + k * p2, k < p3), or as pairs
_UNREAD, _SAME, _ALL, _GATHER, _STRIDED, _PAIRS = range(6)
# how an entry's second derivatives couple what its output elements read (column 4 of an entry)
_LINEAR, _DIAGONAL, _NONLINEAR, _COUPLED = range(4)

def _describe(tape, in_slots, fixed_constants, compiled_rules=True):
    """(S, n, in_slots, entries, reads, pairs, maps): the arrays `_detect` reads.
    entries[k] = (output slot, its size, first read, reads, coupling code, first pair, pairs)
    for each entry an input reaches (in tape order); reads[r] = (operand slot, kind, p0, p1, p2,
    p3, operand size), one per operand; pairs: coupled operand pairs (i, j); maps: the index
    maps of `_GATHER` and `_PAIRS` reads, end to end (range-checked).

    Written by compiled code (`_assemble`) from the tape's arrays and the per-opcode tables
    (`_tables`), with no Python per entry: elementwise entries and the common structural rules
    are encoded there (`_encoded_rule`). Only the entries whose rule has no compiled form (and
    that an input may reach: a first run surveys them) run their rule in Python, and `_assemble`
    runs again with their encoded reads. `compiled_rules` False runs every structural rule in
    Python (the tests compare the two)."""
    T = _tables(compiled_rules)
    in_slots = _slot_array(tape, in_slots)
    n = int(tape.S[in_slots, 1].sum())
    varying = list(tape.input_slots) + list(tape.implicit_slots)
    if not fixed_constants:
        varying += [s for s, _ in tape.constants]
    varying = np.array(varying, np.int64)
    none = np.zeros(0, np.int64)
    status, entries, reads, pairs, maps, varies = _assemble(
        tape.E, tape.IP, tape.S, in_slots, varying, *T, _NO_ROWS[:, :2], _NO_ROWS, none)
    if status == _SURVEYED:         # entries whose rules run in Python: encode them, again
        at, rows, python_maps = _python_reads(tape, maps, varies)
        status, entries, reads, pairs, maps, _ = _assemble(
            tape.E, tape.IP, tape.S, in_slots, varying, *T, at, rows, python_maps)
    if status != _DESCRIBED:
        raise RuntimeError(f"a dependence rule {_FAULTS[status]}")
    return tape.S, n, in_slots, entries, reads, pairs, maps


def _python_reads(tape, python_entries, varies):
    """(at, rows, maps) for `_assemble`: the encoded reads of each entry of `python_entries`
    (its rule run in Python: `_rule`, `_encode`), at[e] = (first row, rows) in `rows` (one per
    operand, as `_assemble` writes them), their index maps at the start of the shared buffer."""
    sizes, prims, E, IP = tape.sizes, tape.prims, tape.E, tape.IP
    at = np.full((len(E), 2), -1, np.int64)
    rows, maps, warned = [], _Maps(), set()
    varies = varies.tolist()
    for e in python_entries.tolist():
        row, prim = E[e].tolist(), prims[e]
        ops = IP[row[5]:row[5] + row[6]].tolist() if prim.variadic else \
            [s for s in row[1:4] if s >= 0]
        at[e, 0] = len(rows) // 7
        for s, rule in zip(ops, _rule(tape, row, prim, ops, varies, warned)):
            rows += (s,) + _encode(rule, sizes[row[4]], sizes[s], maps) + (sizes[s],)
        at[e, 1] = len(rows) // 7 - at[e, 0]     # (a rule may answer for the first few only)
    return at, np.array(rows, np.int64).reshape(-1, 7), maps.buffer()


def _rule(tape, row, prim, ops, varies, warned):
    """The entry's `Prim.element_reads` answer (every operand `ALL` where the primitive
    declares none, with a warning once per primitive). Only structural primitives come here:
    their answer is their `reads_elements` rule's."""
    sizes, offsets, V0 = tape.sizes, tape.offsets, tape.V0
    rule = prim.reads_elements
    reads = None
    if rule is not None:
        if getattr(rule, "reads_constants", False):
            consts = tuple([None if varies[s] else V0[offsets[s]:offsets[s] + sizes[s]]
                            for s in ops])
        else:
            consts = (None,) * len(ops)
        reads = rule(tape.IP[row[5]:row[5] + row[6]], sizes[row[4]], [sizes[s] for s in ops],
                     consts)
    if reads is None:
        if prim.name not in warned:
            warned.add(prim.name)
            warnings.warn(f"primitive {prim.name} declares no dependence rule "
                          "(reads_elements): its entries are taken as dense",
                          SparsityWarning, stacklevel=6)
        reads = (ALL,) * len(ops)
    return reads


def _coupling(prim):
    """(coupling code, operand pairs) of a primitive (`Prim.coupling`). An undeclared coupling
    is every pair the output elements read (the forward pass warned)."""
    coupling = prim.coupling
    if coupling is None or _is(coupling, "nonlinear"):
        return _NONLINEAR, ()
    if _is(coupling, "diagonal"):
        return _DIAGONAL, ()
    if not coupling:
        return _LINEAR, ()
    coupled = tuple((int(i), int(j)) for i, j in coupling)
    if min(min(pair) for pair in coupled) < 0:
        return _NONLINEAR, ()
    return _COUPLED, coupled


# how `_assemble` describes an opcode's entries (column 0 of its table)
_ELEMENTWISE, _COMPILED_RULE, _PYTHON_RULE = range(3)
_TABLES = {}
_NO_ROWS = np.zeros((0, 7), np.int64)


def _tables(compiled_rules=True):
    """Per opcode, from the definitions (built once): (how, rule, arity, variadic, kinds, code,
    needs, first pair, pairs), and the pairs end to end. how: `_ELEMENTWISE` (kinds: each
    operand's read, `_SAME` or `_UNREAD`, from its partials), `_COMPILED_RULE` (rule: the id of
    the compiled form of its `reads_elements`, `_RULE_IDS`) or `_PYTHON_RULE`; code and pairs:
    `_coupling`; needs: the operands the pairs name."""
    if compiled_rules not in _TABLES:
        from ..core.registry import PRIMS
        table = np.zeros((len(PRIMS), 8), np.int64)
        kinds = np.full((len(PRIMS), 3), _UNREAD, np.int64)
        pairs = []
        for prim in PRIMS:
            op = prim.opcode
            code, coupled = _coupling(prim)
            rule = _RULE_IDS.get(prim.reads_elements, -1) if compiled_rules else -1
            if prim.elementwise:
                how = _ELEMENTWISE
                for j, read in enumerate(prim.element_reads(None, 0, (), ())):
                    kinds[op, j] = _UNREAD if read is None else _SAME
            else:
                how = _COMPILED_RULE if rule >= 0 else _PYTHON_RULE
            needs = 1 + max((max(pair) for pair in coupled), default=-1)
            table[op] = (how, rule, prim.n_operands, prim.variadic, code, needs,
                         len(pairs) // 2, len(coupled))
            for pair in coupled:
                pairs += pair
        _TABLES[compiled_rules] = (np.ascontiguousarray(table), kinds,
                                   np.array(pairs, np.int64).reshape(-1, 2))
    return _TABLES[compiled_rules]


def _is(rule, marker):
    return isinstance(rule, str) and rule == marker


class _Maps:
    """The index maps of a tape's reads, end to end."""

    def __init__(self):
        self.arrays, self.size = [], 0

    def add(self, array):
        self.arrays.append(array)
        self.size += array.size
        return self.size - array.size

    def buffer(self):
        return np.concatenate(self.arrays) if self.arrays else np.zeros(0, np.int64)


def _encode(rule, n_out, size, maps):
    """(kind, p0, p1, p2, p3) of one operand's read, its indices checked against the output's
    and the operand's sizes (the compiled pass does not check bounds). Ranges (windows,
    concatenations) are tested first: they are the common answer."""
    if rule is None or size == 0:
        return (_UNREAD, 0, 0, 0, 0)
    if type(rule) is not tuple:
        if _is(rule, SAME):
            return (_SAME, 0, 0, 0, 0)
        if _is(rule, ALL):
            return (_ALL, 0, 0, 0, 0)
    rows, cols = rule
    if type(cols) is range and (rows is None or (type(rows) is range and
                                                 (rows.step == 1 or len(rows) < 2))):
        count = len(cols)
        rows = range(n_out) if rows is None else rows
        if len(rows) != count:
            raise RuntimeError("a dependence rule gave rows and cols of different shapes")
        if count:
            low, high = (cols[0], cols[-1]) if cols.step > 0 else (cols[-1], cols[0])
            _check_range(rows.start, rows[-1], n_out, "an output")
            _check_range(low, high, size, "an operand")
        return (_STRIDED, rows.start, cols.start, cols.step, count)
    cols = np.ascontiguousarray(cols, np.int64)
    if rows is not None:
        rows = np.ascontiguousarray(rows, np.int64)
    if cols.ndim != 1 or cols.size != (n_out if rows is None else rows.size) or \
            (rows is not None and rows.ndim != 1):
        raise RuntimeError("a dependence rule gave rows and cols of different shapes")
    if cols.size:
        _check_range(cols.min(), cols.max(), size, "an operand")
    if rows is None:
        return (_GATHER, maps.add(cols), 0, 0, 0)
    if rows.size:
        _check_range(rows.min(), rows.max(), n_out, "an output")
    return (_PAIRS, maps.add(rows), maps.add(cols), cols.size, 0)


def _check_range(low, high, size, what):
    """The compiled pass does not check bounds: a rule's indices are checked first."""
    if low < 0 or high >= size:
        raise RuntimeError(f"a dependence rule read outside {what} of {size} elements")


# ---- the description in compiled code ------------------------------------------------------
# `_assemble` returns (status, entries, reads, pairs, maps, varies); status `_SURVEYED`: maps
# holds the entries whose rules must run in Python, varies which slots change between calls
# (their rules may read the others' values); a fault: the read a compiled rule refused.
_DESCRIBED, _SURVEYED, _OUTSIDE_OPERAND, _OUTSIDE_OUTPUT, _SHAPES = range(5)
_FAULTS = {_OUTSIDE_OPERAND: "read outside an operand", _OUTSIDE_OUTPUT: "read outside an output",
           _SHAPES: "gave rows and cols of different shapes"}
# the compiled forms of the common rules of `core.prims.dependence` (the tests check each
# against its numpy rule, `_describe(..., compiled_rules=False)`)
_EVERY, _SELECTION, _WINDOW, _SEGMENTS, _CONCATENATION, _INDEX_MAP = range(6)
_RULE_IDS = {dependence.every_operand: _EVERY, dependence.selection: _SELECTION,
             dependence.window: _WINDOW, dependence.segments: _SEGMENTS,
             dependence.concatenation: _CONCATENATION, dependence.index_map: _INDEX_MAP}


@jit
def _n_operands(E, e, table):
    """How many operands entry e has (variadic: its payload lists them; a structural entry's
    are the non-negative slots of columns 1-3)."""
    op = E[e, 0]
    if table[op, 3]:
        return E[e, 6]
    if table[op, 0] == _ELEMENTWISE:
        return table[op, 2]
    count = 0
    for c in range(1, 4):
        if E[e, c] >= 0:
            count += 1
    return count


@jit
def _operand(E, IP, e, j, table):
    """The slot of entry e's operand j (as `_n_operands` counts them)."""
    op = E[e, 0]
    if table[op, 3]:
        return IP[E[e, 5] + j]
    if table[op, 0] == _ELEMENTWISE:
        return E[e, 1 + j]
    for c in range(1, 4):
        if E[e, c] >= 0:
            if j == 0:
                return E[e, c]
            j -= 1
    return -1


@jit
def _rule_maps(rule, IP, ip, ip_len, size, n_out):
    """How many integers of index maps the compiled rule writes for one operand."""
    if size == 0:
        return 0
    if rule == _WINDOW:
        return n_out if IP[ip + 1] == 0 else 0
    if rule == _SEGMENTS:
        return 2 * ip_len
    if rule == _INDEX_MAP:
        per_output = ip_len // n_out if n_out else 1
        return ip_len if per_output == 1 else 2 * per_output * n_out
    return 0


@jit
def _encoded_rule(rule, IP, ip, ip_len, j, size, before, n_out, reads, r, maps, m):
    """(fault, maps used): reads[r, 1:6] for operand j (of `size` elements; `before`: the
    elements of the operands before it) of an entry whose `reads_elements` is the rule with
    compiled form `rule`, its payload IP[ip:ip + ip_len]; the same answer as the numpy rule
    encoded by `_encode`, range-checked alike, index maps written from maps[m]."""
    if size == 0:
        return 0, m
    if rule == _EVERY:
        reads[r, 1] = _ALL
    elif rule == _SELECTION:
        reads[r, 1] = _UNREAD if j == 0 else _SAME
    elif rule == _WINDOW:               # y[i] reads x[start + i * step]
        start, step = IP[ip], IP[ip + 1]
        if step == 0:
            if n_out and not 0 <= start < size:
                return _OUTSIDE_OPERAND, m
            maps[m:m + n_out] = start
            reads[r, 1], reads[r, 2] = _GATHER, m
            return 0, m + n_out
        if n_out:
            last = start + (n_out - 1) * step
            if min(start, last) < 0 or max(start, last) >= size:
                return _OUTSIDE_OPERAND, m
        reads[r, 1], reads[r, 3], reads[r, 4], reads[r, 5] = _STRIDED, start, step, n_out
    elif rule == _SEGMENTS:             # y[ip[i]] reads x[i]
        if ip_len != size:
            return _SHAPES, m
        for i in range(size):
            if not 0 <= IP[ip + i] < n_out:
                return _OUTSIDE_OUTPUT, m
            maps[m + i], maps[m + size + i] = IP[ip + i], i
        reads[r, 1], reads[r, 2], reads[r, 3], reads[r, 4] = _PAIRS, m, m + size, size
        return 0, m + 2 * size
    elif rule == _CONCATENATION:        # the operands end to end
        if before + size > n_out:
            return _OUTSIDE_OUTPUT, m
        reads[r, 1], reads[r, 2], reads[r, 4], reads[r, 5] = _STRIDED, before, 1, size
    elif rule == _INDEX_MAP:            # y[i] reads x[ip[i]] (and x[ip[n_out + i]], ...)
        per_output = ip_len // n_out if n_out else 1
        count = ip_len if per_output == 1 else per_output * n_out
        if per_output == 1 and count != n_out:
            return _SHAPES, m
        for q in range(count):
            if not 0 <= IP[ip + q] < size:
                return _OUTSIDE_OPERAND, m
        if per_output == 1:
            maps[m:m + count] = IP[ip:ip + count]
            reads[r, 1], reads[r, 2] = _GATHER, m
            return 0, m + count
        for q in range(count):
            maps[m + q], maps[m + count + q] = q % n_out, IP[ip + q]
        reads[r, 1], reads[r, 2], reads[r, 3], reads[r, 4] = _PAIRS, m, m + count, count
        return 0, m + 2 * count
    return 0, m


@jit
def _assemble(E, IP, S, in_slots, varying, table, kinds, PAIRS, py_at, py_rows, py_maps):
    """The description of `_describe` (see there), written from the tape's arrays: a survey
    (which entries an input may reach, an entry taken as reached when any operand is; the sizes
    of the tables; which reached entries need their rule run in Python and have no rows in
    py_at/py_rows yet), then the tables, with the exact reach (an output is reached through a
    read, not an unread operand)."""
    n_slots, n_entries = S.shape[0], E.shape[0]
    reach = np.zeros(n_slots, np.bool_)
    varies = np.zeros(n_slots, np.bool_)
    for k in range(in_slots.size):
        reach[in_slots[k]] = True
    for k in range(varying.size):
        varies[varying[k]] = True
    python_entries = np.empty(n_entries, np.int64)
    n_hit, n_reads, n_pairs, n_maps, missing = 0, 0, 0, py_maps.size, 0
    for e in range(n_entries):
        op, o = E[e, 0], E[e, 4]
        count = _n_operands(E, e, table)
        hit = vary = False
        for j in range(count):
            s = _operand(E, IP, e, j, table)
            hit = hit or reach[s]
            vary = vary or varies[s]
        varies[o] = vary
        if not hit:
            continue
        reach[o] = True
        n_hit += 1
        n_reads += count
        n_pairs += table[op, 7]
        if table[op, 0] == _COMPILED_RULE:
            for j in range(count):
                n_maps += _rule_maps(table[op, 1], IP, E[e, 5], E[e, 6],
                                     S[_operand(E, IP, e, j, table), 1], S[o, 1])
        elif table[op, 0] == _PYTHON_RULE and (py_at.size == 0 or py_at[e, 0] < 0):
            python_entries[missing] = e
            missing += 1
    none = np.zeros((0, 7), np.int64)
    if missing:
        return _SURVEYED, none, none, PAIRS[:0], python_entries[:missing], varies
    entries, reads = np.empty((n_hit, 7), np.int64), np.empty((n_reads, 7), np.int64)
    pairs, maps = np.empty((n_pairs, 2), np.int64), np.empty(n_maps, np.int64)
    maps[:py_maps.size] = py_maps
    reached = np.zeros(n_slots, np.bool_)
    for k in range(in_slots.size):
        reached[in_slots[k]] = True
    k, r, p, m = 0, 0, 0, py_maps.size
    for e in range(n_entries):
        op, o = E[e, 0], E[e, 4]
        how, count, hit = table[op, 0], _n_operands(E, e, table), False
        for j in range(count):
            hit = hit or reached[_operand(E, IP, e, j, table)]
        if not hit:
            continue
        if how == _PYTHON_RULE:
            count = py_at[e, 1]             # the operands its rule answered for
        n_out, first, before = S[o, 1], r, 0
        for j in range(count):
            s = _operand(E, IP, e, j, table)
            size = S[s, 1]
            reads[r, 0], reads[r, 6] = s, size
            reads[r, 1:6] = 0
            if how == _ELEMENTWISE:
                if size:
                    reads[r, 1] = kinds[op, j]
            elif how == _COMPILED_RULE:
                fault, m = _encoded_rule(table[op, 1], IP, E[e, 5], E[e, 6], j, size, before,
                                         n_out, reads, r, maps, m)
                if fault:
                    return fault, none, none, PAIRS[:0], maps[:0], varies
            else:
                reads[r, 1:6] = py_rows[py_at[e, 0] + j, 1:6]
            if reads[r, 1] != _UNREAD and reached[s]:
                reached[o] = True
            before += size
            r += 1
        code, n_coupled = table[op, 4], table[op, 7]
        if count < table[op, 5]:            # pairs naming operands the entry lacks
            code, n_coupled = _NONLINEAR, 0
        entries[k, 0], entries[k, 1], entries[k, 2], entries[k, 3] = o, n_out, first, count
        entries[k, 4], entries[k, 5], entries[k, 6] = code, p, n_coupled
        for q in range(n_coupled):
            pairs[p, 0], pairs[p, 1] = PAIRS[table[op, 6] + q, 0], PAIRS[table[op, 6] + q, 1]
            p += 1
        k += 1
    return _DESCRIBED, entries[:k], reads[:r], pairs[:p], maps[:m], varies


# ---- the compiled pass -------------------------------------------------------------------
# A pattern is p, an offset into the row tables RS and RE (-1: no pattern, the slot depends on
# no input); its row r is IDX[RS[p + r]:RE[p + r]]. `cur` holds the rows used, the columns used
# in IDX, and the marker's stamp (it only grows, so the marker is never reset). Every large
# buffer comes from the per-thread workspace (`_Workspace`) and is handed back, grown where it
# was too small. Hot loops call nothing: a call per row costs more than the row's work.

@jit
def _detect(S, n, in_slots, entries, reads, pairs, maps, out_slots, hess_slot, stencils, IDX,
            T, work, out, flags, marker, cur):
    """(IDX, T, work, out, flags, nnz, ordered): the workspace's buffers, and in out[:m + 1]
    and out[m + 1:m + 1 + nnz] the CSR (indptr, indices) of the Jacobian of `out_slots`
    (hess_slot < 0) or of the Hessian of the scalar `hess_slot` (m = n); ordered: every row
    is sorted (else some long ones are not). `stencils` False: rows only."""
    n_slots, n_entries = S.shape[0], entries.shape[0]
    rows, sources, widest, n_terms, n_units, most_reads = 1, 0, 2, 0, 0, 1
    for k in range(in_slots.size):
        rows += S[in_slots[k], 1]
    for e in range(n_entries):                  # an entry's rows, its reads, its terms
        n_out, code = entries[e, 1], entries[e, 4]
        rows += (1 + 2 * entries[e, 6]) * n_out
        widest = max(widest, n_out + 1)
        most_reads = max(most_reads, entries[e, 3])
        count = 0
        for k in range(entries[e, 2], entries[e, 2] + entries[e, 3]):
            count += _n_sources(reads, k, n_out)
            sources = max(sources, reads[k, 6])         # an `_ALL` read's union
        sources = max(sources, count)
        n_units += entries[e, 6] if code == _COUPLED else 1
        if code == _NONLINEAR:
            n_terms += n_out
        elif code == _DIAGONAL:
            n_terms += reads[entries[e, 2], 6]
        elif code == _COUPLED:
            n_terms += 2 * entries[e, 6] * n_out
    scratch_size = 3 * _CAP * most_reads
    need = 7 * n_slots + 2 * rows + 2 * sources + 2 * widest + 4 * n_terms + scratch_size + \
        _UNIT * n_units
    if work.size < need:
        work = np.empty(max(need, 2 * work.size), np.int64)
    poff = work[:n_slots]
    RS = work[n_slots:n_slots + rows]
    RE = work[n_slots + rows:n_slots + 2 * rows]
    at = n_slots + 2 * rows
    starts, ends = work[at:at + sources], work[at + sources:at + 2 * sources]
    at += 2 * sources
    first_source, fill = work[at:at + widest], work[at + widest:at + 2 * widest]
    at += 2 * widest
    terms = work[at:at + 4 * n_terms]
    at += 4 * n_terms
    st = work[at:at + 3 * n_slots].reshape(n_slots, 3)
    live = work[at + 3 * n_slots:at + 6 * n_slots].reshape(n_slots, 3)
    at += 6 * n_slots
    scratch = work[at:at + scratch_size]
    units = work[at + scratch_size:at + scratch_size + _UNIT * n_units]
    poff[:] = -1
    st[:, 0], st[:, 1], st[:, 2] = -1, 0, 0
    cur[0], cur[1], cur[3] = 0, 0, 0
    if stencils and _distinct(in_slots):
        T = _input_stencils(S, in_slots, st, T, cur)
    else:
        IDX = _grow(IDX, cur[1], max(2 * n, 16))
        for c in range(n):                      # the inputs' one-column rows point into it
            IDX[c] = c
        cur[1] = n
        IDX = _input_rows(S, in_slots, poff, RS, RE, IDX, cur)
    for e in range(n_entries):
        first, last, n_out, o = entries[e, 2], entries[e, 2] + entries[e, 3], entries[e, 1], \
            entries[e, 0]
        if stencils:
            f, count, stride, T = _stencil_of(first, last, n_out, reads, poff, st, T, scratch,
                                              cur)
            if count >= 0:             # (replacing what an input slot written here had)
                st[o, 0], st[o, 1], st[o, 2], poff[o] = f, count, stride, -1
                continue
            p, IDX, done = _stencil_union(first, last, n_out, reads, poff, st, T, scratch, RS,
                                          RE, IDX, cur)
            if done:
                poff[o], st[o, 0] = p, -1
                continue
            IDX = _rows_of_operands(first, last, S, reads, poff, st, T, RS, RE, IDX, cur)
        p, IDX = _read_rows(first, last, n_out, reads, maps, poff, RS, RE, IDX, cur, marker,
                            starts, ends, first_source, fill)
        poff[o], st[o, 0] = p, -1
    if hess_slot < 0:
        if _all_stencils(out_slots, poff, st):
            out, nnz = _stencil_csr(out_slots, S, st, T, out)
            return IDX, T, work, out, flags, nnz, True
        for k in range(out_slots.size):
            IDX = _rows_of(out_slots[k], S, poff, st, T, RS, RE, IDX, cur)
        out, nnz, ordered = _gathered_rows(out_slots, S, poff, RS, RE, IDX, out)
        return IDX, T, work, out, flags, nnz, ordered
    span = n
    for s in range(n_slots):
        span = max(span, S[s, 0] + S[s, 1])
    if flags.size < 2 * span + n:
        flags = np.empty(max(2 * span + n, 2 * flags.size), np.bool_)
    flags[span:span + n] = False
    t, n_units, general, IDX, T = _terms(
        S, entries, reads, pairs, maps, hess_slot, poff, RS, RE, IDX, cur, marker, starts,
        ends, first_source, fill, flags, span, n, terms, T, st, live, scratch, units)
    if not general:
        out, nnz = _band_product(units, n_units, T, n, out)
        if nnz >= 0:
            return IDX, T, work, out, flags, nnz, True
    for u in range(n_units):                    # rows for the units, terms of them
        IDX, t = _unit_terms(units, u, S, poff, st, T, RS, RE, IDX, cur, terms, t, flags,
                              span)
    out, nnz, ordered = _product(terms, t, flags[span:span + n], IDX, marker, cur, n, out)
    return IDX, T, work, out, flags, nnz, ordered


@jit
def _all_stencils(slots, poff, st):
    """Whether each slot's pattern is a stencil or none."""
    for k in range(slots.size):
        if st[slots[k], 0] < 0 and poff[slots[k]] >= 0:
            return False
    return True


@jit
def _distinct(in_slots):
    """Whether no slot is passed twice (an argument passed twice has two columns per row:
    rows, not a stencil)."""
    for k in range(in_slots.size):
        for j in range(k):
            if in_slots[j] == in_slots[k]:
                return False
    return True


@jit
def _zero():
    """0 typed int64: a variable starting at the literal 0 and passed to a compiled function
    makes numba compile that function once more, for the literal."""
    return np.int64(0)


@jit
def _grow(IDX, used, need):
    """IDX, or a copy with room for `need` more columns after the first `used`."""
    if used + need <= IDX.size:
        return IDX
    bigger = np.empty(max(2 * IDX.size, used + need), np.int64)
    for q in range(used):
        bigger[q] = IDX[q]
    return bigger


@jit
def _input_rows(S, in_slots, poff, RS, RE, IDX, cur):
    """The inputs' patterns: the next columns, one per element (an argument passed twice: both
    of its columns)."""
    col = 0
    for k in range(in_slots.size):
        s = in_slots[k]
        size = S[s, 1]
        old, p = poff[s], cur[0]
        cur[0] += size
        for r in range(size):
            if old < 0:
                RS[p + r], RE[p + r] = col + r, col + r + 1
            else:
                length = RE[old + r] - RS[old + r]
                IDX = _grow(IDX, cur[1], length + 1)
                at = cur[1]
                for q in range(length):
                    IDX[at + q] = IDX[RS[old + r] + q]
                IDX[at + length] = col + r
                RS[p + r], RE[p + r] = at, at + length + 1
                cur[1] = at + length + 1
        poff[s] = p
        col += size
    return IDX


@jit
def _source(reads, k, t, n_out, maps):
    """(output row, operand row) of the t-th read of reads[k] (operand row -1: the union of
    every row, `_ALL`; 0 for a broadcast operand)."""
    kind = reads[k, 1]
    if kind == _SAME:
        return t, t if reads[k, 6] == n_out else 0
    if kind == _ALL:
        return t, -1
    if kind == _GATHER:
        return t, maps[reads[k, 2] + t]
    if kind == _STRIDED:
        return reads[k, 2] + t, reads[k, 3] + t * reads[k, 4]
    return maps[reads[k, 2] + t], maps[reads[k, 3] + t]


@jit
def _union_pair(reads, first, last, n_out, maps, poff, RS, RE, p, IDX, cur):
    """(IDX, done): RS[p + r], RE[p + r] the union of the rows two reads (one row each, like
    an elementwise binary entry's) give row r: the common case, in one loop without scratch or
    marker, where the rows are short (done False, nothing written, where some are not). A row
    holds no column twice, so only the second row's columns are checked against the first's."""
    k0 = first
    while reads[k0, 1] == _UNREAD or poff[reads[k0, 0]] < 0:
        k0 += 1
    k1 = k0 + 1
    while reads[k1, 1] == _UNREAD or poff[reads[k1, 0]] < 0:
        k1 += 1
    q0, q1 = poff[reads[k0, 0]], poff[reads[k1, 0]]
    g0, offset0, step0 = _row_map(reads, k0, n_out)
    g1, offset1, step1 = _row_map(reads, k1, n_out)
    need = _zero()
    for r in range(n_out):
        row0 = maps[g0 + r] if g0 >= 0 else offset0 + r * step0
        row1 = maps[g1 + r] if g1 >= 0 else offset1 + r * step1
        length0, length1 = RE[q0 + row0] - RS[q0 + row0], RE[q1 + row1] - RS[q1 + row1]
        if length0 * length1 > 16:
            return IDX, False
        need += length0 + length1
    IDX = _grow(IDX, cur[1], need)
    at = cur[1]
    for r in range(n_out):
        row0 = maps[g0 + r] if g0 >= 0 else offset0 + r * step0
        row1 = maps[g1 + r] if g1 >= 0 else offset1 + r * step1
        s0, e0, s1, e1 = RS[q0 + row0], RE[q0 + row0], RS[q1 + row1], RE[q1 + row1]
        if e1 == s1 or (s0 == s1 and e0 == e1):
            RS[p + r], RE[p + r] = s0, e0
            continue
        if e0 == s0:
            RS[p + r], RE[p + r] = s1, e1
            continue
        begin = at
        for q in range(s0, e0):
            IDX[at] = IDX[q]
            at += 1
        for q in range(s1, e1):
            c = IDX[q]
            seen = False
            for w in range(begin, begin + e0 - s0):
                seen = seen or IDX[w] == c
            if not seen:
                IDX[at] = c
                at += 1
        RS[p + r], RE[p + r] = begin, at
    cur[1] = at
    return IDX, True


@jit
def _row_map(reads, k, n_out):
    """(gather, offset, step) of a read giving each output row r one operand row: maps[gather
    + r] where gather >= 0, else offset + r * step (a hot loop computes it inline: a call
    per row costs more than the row's work)."""
    kind = reads[k, 1]
    if kind == _GATHER:
        return reads[k, 2], 0, 0
    if kind == _STRIDED:
        return -1, reads[k, 3], reads[k, 4]
    return -1, 0, 1 if reads[k, 6] == n_out else 0


@jit
def _n_sources(reads, k, n_out):
    """How many (output row, operand row) reads reads[k] makes (`_source` gives each)."""
    kind = reads[k, 1]
    if kind == _STRIDED:
        return reads[k, 5]
    if kind == _PAIRS:
        return reads[k, 4]
    return n_out


@jit
def _unions(IDX, cur, marker, starts, ends, first_source, n_rows, RS, RE, p):
    """RS[p + r], RE[p + r] for r < n_rows: the union of the rows IDX[starts[t]:ends[t]],
    first_source[r] <= t < first_source[r + 1]: one of them where the others are empty or the
    same, else a new row of IDX (the caller made room). One loop, no call per row: a call
    costs more than a row's work."""
    stamp, at = cur[2], cur[1]
    for r in range(n_rows):
        lo, hi = first_source[r], first_source[r + 1]
        single, distinct = -1, False
        for t in range(lo, hi):
            if ends[t] > starts[t]:
                if single < 0:
                    single = t
                elif starts[t] != starts[single] or ends[t] != ends[single]:
                    distinct = True
        if single < 0:
            RS[p + r], RE[p + r] = 0, 0
        elif not distinct:
            RS[p + r], RE[p + r] = starts[single], ends[single]
        else:
            stamp += 1
            begin = at
            for t in range(lo, hi):
                for q in range(starts[t], ends[t]):
                    c = IDX[q]
                    if marker[c] != stamp:
                        marker[c] = stamp
                        IDX[at] = c
                        at += 1
            RS[p + r], RE[p + r] = begin, at
    cur[1], cur[2] = at, stamp


@jit
def _read_rows(first, last, n_out, reads, maps, poff, RS, RE, IDX, cur, marker, starts, ends,
               first_source, fill):
    """(p, IDX): the pattern of what the output elements of an entry read through reads[first:
    last] (p = -1: nothing). Shared where every read is `_SAME` of one pattern; else rows of
    references: a row with one source copies its reference, a row with several is their
    union. starts, ends, first_source and fill are scratch."""
    used, shared, general, only, every = 0, -2, False, first, False
    for k in range(first, last):
        q = poff[reads[k, 0]]
        if reads[k, 1] == _UNREAD or q < 0:
            continue
        used += 1
        only = k
        kind = reads[k, 1]
        every = every or kind == _ALL
        if kind == _SAME and reads[k, 6] == n_out and (shared == -2 or shared == q):
            shared = q
        else:
            shared = -1
        if kind == _PAIRS or (kind == _STRIDED and (reads[k, 2] != 0 or reads[k, 5] != n_out)):
            general = True
    if used == 0:
        return -1, IDX
    if shared >= 0:
        return shared, IDX
    if used == 1 and reads[only, 1] == _STRIDED and reads[only, 4] == 1 and \
            reads[only, 2] == 0 and reads[only, 5] == n_out:
        return poff[reads[only, 0]] + reads[only, 3], IDX     # a window: the rows it starts at
    every_start = np.zeros(last - first, np.int64)      # the union of every row, for `_ALL`
    every_end = np.zeros(last - first, np.int64)
    for k in range(first, last):
        q = poff[reads[k, 0]]
        if reads[k, 1] == _ALL and q >= 0:
            size = reads[k, 6]
            need = _zero()
            for r in range(size):
                starts[r], ends[r] = RS[q + r], RE[q + r]
                need += RE[q + r] - RS[q + r]
            first_source[0], first_source[1] = 0, size
            IDX = _grow(IDX, cur[1], need)
            one = min(size, 1)      # not the literal 1, which would compile its own version
            _unions(IDX, cur, marker, starts, ends, first_source, one, every_start, every_end,
                    k - first)
    p = cur[0]
    cur[0] += n_out
    if used == 1 and not general:       # one source per row: its reference
        q, kind = poff[reads[only, 0]], reads[only, 1]
        if kind == _ALL:
            RS[p:p + n_out] = every_start[only - first]
            RE[p:p + n_out] = every_end[only - first]
            return p, IDX
        gather, offset, step = _row_map(reads, only, n_out)
        for r in range(n_out):
            row = maps[gather + r] if gather >= 0 else offset + r * step
            RS[p + r], RE[p + r] = RS[q + row], RE[q + row]
        return p, IDX
    if used == 2 and not general and not every:
        IDX, done = _union_pair(reads, first, last, n_out, maps, poff, RS, RE, p, IDX, cur)
        if done:
            return p, IDX
    need = _zero()
    if general:                         # the sources of each row, by a counting sort
        first_source[:n_out + 1] = 0
        for k in range(first, last):
            if reads[k, 1] != _UNREAD and poff[reads[k, 0]] >= 0:
                for t in range(_n_sources(reads, k, n_out)):
                    first_source[_source(reads, k, t, n_out, maps)[0] + 1] += 1
        for r in range(n_out):
            first_source[r + 1] += first_source[r]
            fill[r] = first_source[r]
        for k in range(first, last):
            q = poff[reads[k, 0]]
            if reads[k, 1] == _UNREAD or q < 0:
                continue
            for t in range(_n_sources(reads, k, n_out)):
                r, row = _source(reads, k, t, n_out, maps)
                if row < 0:
                    start, end = every_start[k - first], every_end[k - first]
                else:
                    start, end = RS[q + row], RE[q + row]
                starts[fill[r]], ends[fill[r]] = start, end
                fill[r] += 1
                need += end - start
    else:                               # one per read and row, in order
        j = 0
        for k in range(first, last):
            q, kind = poff[reads[k, 0]], reads[k, 1]
            if kind == _UNREAD or q < 0:
                continue
            gather, offset, step = _row_map(reads, k, n_out)
            for r in range(n_out):
                if kind == _ALL:
                    start, end = every_start[k - first], every_end[k - first]
                else:
                    row = maps[gather + r] if gather >= 0 else offset + r * step
                    start, end = RS[q + row], RE[q + row]
                starts[r * used + j], ends[r * used + j] = start, end
                need += end - start
            j += 1
        for r in range(n_out + 1):
            first_source[r] = r * used
    IDX = _grow(IDX, cur[1], need)
    _unions(IDX, cur, marker, starts, ends, first_source, n_out, RS, RE, p)
    return p, IDX


@jit
def _sort_rows(indptr, indices):
    """Sort each short row of a CSR pattern in place (insertion); whether every row is sorted
    (long rows are left to scipy: numpy's sort would compile a quicksort here)."""
    ordered = True
    for r in range(indptr.size - 1):
        lo, hi = indptr[r], indptr[r + 1]
        if hi - lo > 32:
            ordered = False
            continue
        for i in range(lo + 1, hi):
            v = indices[i]
            j = i - 1
            while j >= lo and indices[j] > v:
                indices[j + 1] = indices[j]
                j -= 1
            indices[j + 1] = v
    return ordered


@jit
def _gathered_rows(out_slots, S, poff, RS, RE, IDX, out):
    """(out, nnz, ordered): the rows of the patterns of `out_slots`, end to end, as the CSR
    (indptr, indices) in out[:m + 1] and out[m + 1:m + 1 + nnz] (`_sort_rows`)."""
    m = nnz = 0
    for k in range(out_slots.size):
        s = out_slots[k]
        m += S[s, 1]
        if poff[s] >= 0:
            for r in range(S[s, 1]):
                nnz += RE[poff[s] + r] - RS[poff[s] + r]
    if out.size < m + 1 + nnz:
        out = np.empty(max(m + 1 + nnz, 2 * out.size), np.int64)
    out[0] = 0
    row, at = 1, m + 1
    for k in range(out_slots.size):
        s = out_slots[k]
        for r in range(S[s, 1]):
            if poff[s] >= 0:
                for q in range(RS[poff[s] + r], RE[poff[s] + r]):
                    out[at] = IDX[q]
                    at += 1
            out[row] = at - m - 1
            row += 1
    return out, nnz, _sort_rows(out[:m + 1], out[m + 1:m + 1 + nnz])


@jit
def _mark_live(reads, k, n_out, maps, flags, out_at, in_at):
    """Set flags[in_at + i] for the operand elements i that reach the live output elements
    (flags[out_at:out_at + n_out]) through reads[k]."""
    kind = reads[k, 1]
    if kind == _ALL or (kind == _SAME and reads[k, 6] != n_out):
        if flags[out_at:out_at + n_out].any():
            flags[in_at:in_at + reads[k, 6]] = True
    elif kind == _PAIRS:
        for t in range(reads[k, 4]):
            if flags[out_at + maps[reads[k, 2] + t]]:
                flags[in_at + maps[reads[k, 3] + t]] = True
    else:
        gather, offset, step = _row_map(reads, k, n_out)
        first, count = 0, n_out
        if kind == _STRIDED:
            first, count = reads[k, 2], reads[k, 5]
        for t in range(count):
            if flags[out_at + first + t]:
                flags[in_at + (maps[gather + t] if gather >= 0 else offset + t * step)] = True


@jit
def _terms(S, entries, reads, pairs, maps, hess_slot, poff, RS, RE, IDX, cur, marker, starts,
           ends, first_source, fill, flags, span, n, terms, T, st, live, scratch, units):
    """(t, units used, general, IDX, T): the reverse pass. From the output's elements back,
    each entry a live output element reaches couples (its coupling) what its live elements
    read, and marks what they read live. A coupling of two stencils over a range of live
    elements is a unit (`_UNIT` integers in `units`: `_add_unit`); any other adds terms
    (left row, right row; 4 integers each, t of them in `terms`) and sets `general`. Which
    elements of slot s are live: live[s] = (0: none, 1: those from live[s, 1] to live[s, 2],
    2: those set in flags, from the slot's offset). Also in `flags`: the diagonal entries
    (from span), what a sum of squares reads of its live elements (from span + n)."""
    live[:, 0] = 0
    live[hess_slot, 0], live[hess_slot, 1], live[hess_slot, 2] = 1, 0, S[hess_slot, 1]
    t, u, general, zero = _zero(), _zero(), False, _zero()
    for e in range(entries.shape[0] - 1, -1, -1):
        o, n_out, first, count, code = entries[e, 0], entries[e, 1], entries[e, 2], \
            entries[e, 3], entries[e, 4]
        out_at = S[o, 0]
        if poff[o] < 0 and st[o, 0] < 0:
            continue
        alive = live[o, 0] == 1 and live[o, 2] > live[o, 1]
        for r in range(out_at, out_at + n_out if live[o, 0] == 2 else out_at):
            alive = alive or flags[r]
        if not alive:
            continue
        for c in range(entries[e, 6] if code == _COUPLED else 1):
            a = b = poff[o]
            rows, flag_at = n_out, out_at
            if code == _DIAGONAL:
                s = reads[first, 0]
                if reads[first, 1] == _UNREAD or (poff[s] < 0 and st[s, 0] < 0):
                    continue
                lo, hi = _live_read(reads, first, n_out, live, o)
                if lo >= 0 and st[s, 0] >= 0:
                    u = _add_unit(units, u, st[s, 0], st[s, 1], st[s, 2], st[s, 0], st[s, 1],
                                  st[s, 2], lo, hi, S[s, 1], s)
                    continue
                IDX = _rows_of(s, S, poff, st, T, RS, RE, IDX, cur)
                a = b = poff[s]
                rows, flag_at = reads[first, 6], span + n
                flags[flag_at:flag_at + rows] = False
                _to_flags(live, flags, o, out_at, n_out)
                _mark_live(reads, first, n_out, maps, flags, out_at, flag_at)
            elif code == _COUPLED:
                i, j = first + pairs[entries[e, 5] + c, 0], first + pairs[entries[e, 5] + c, 1]
                fa, ca, sa, T = _stencil_of(i, i + 1, n_out, reads, poff, st, T, scratch, cur)
                fb, cb, sb = fa, ca, sa
                if j != i:
                    fb, cb, sb, T = _stencil_of(j, j + 1, n_out, reads, poff, st, T, scratch,
                                                cur)
                if min(ca, cb) >= 0 and min(fa, fb) < 0:
                    continue
                if min(ca, cb) >= 0 and live[o, 0] == 1:
                    u = _add_unit(units, u, fa, ca, sa, fb, cb, sb, live[o, 1], live[o, 2],
                                  n_out, zero - 1)
                    continue
                IDX = _rows_of_operands(i, i + 1, S, reads, poff, st, T, RS, RE, IDX, cur)
                IDX = _rows_of_operands(j, j + 1, S, reads, poff, st, T, RS, RE, IDX, cur)
                a, IDX = _read_rows(i, i + 1, n_out, reads, maps, poff, RS, RE, IDX, cur,
                                    marker, starts, ends, first_source, fill)
                b = a
                if j != i:
                    b, IDX = _read_rows(j, j + 1, n_out, reads, maps, poff, RS, RE, IDX, cur,
                                        marker, starts, ends, first_source, fill)
                if a < 0 or b < 0:
                    continue
                _to_flags(live, flags, o, out_at, n_out)
            elif code == _NONLINEAR:
                if st[o, 0] >= 0 and live[o, 0] == 1:
                    u = _add_unit(units, u, st[o, 0], st[o, 1], st[o, 2], st[o, 0], st[o, 1],
                                  st[o, 2], live[o, 1], live[o, 2], n_out, o)
                    continue
                IDX = _rows_of(o, S, poff, st, T, RS, RE, IDX, cur)
                a = b = poff[o]
                _to_flags(live, flags, o, out_at, n_out)
            else:
                continue
            general = True
            t = _add_terms(terms, t, flags, span, IDX, RS, RE, a, b, flag_at, zero, rows)
        for k in range(first, first + count):
            s = reads[k, 0]
            if reads[k, 1] == _UNREAD or (poff[s] < 0 and st[s, 0] < 0):
                continue
            lo, hi = _live_read(reads, k, n_out, live, o)
            if lo >= 0:
                _live_union(live, flags, s, S[s, 0], S[s, 1], lo, hi)
            else:
                _to_flags(live, flags, o, out_at, n_out)
                _to_flags(live, flags, s, S[s, 0], S[s, 1])
                _mark_live(reads, k, n_out, maps, flags, out_at, S[s, 0])
    return t, u, general, IDX, T


@jit
def _add_unit(units, u, fa, ca, sa, fb, cb, sb, lo, hi, n_rows, slot):
    """Record unit u, returns u + 1: rows lo to hi of stencil A (first term fa, ca terms,
    stride sa) couple with those rows of stencil B; the stencils of a slot's pattern (slot)
    or of a read (slot -1), of n_rows rows."""
    at = _UNIT * u
    units[at], units[at + 1], units[at + 2], units[at + 3], units[at + 4] = fa, ca, sa, fb, cb
    units[at + 5], units[at + 6], units[at + 7], units[at + 8] = sb, lo, hi, n_rows
    units[at + 9] = slot
    return u + 1


@jit
def _unit_terms(units, u, S, poff, st, T, RS, RE, IDX, cur, terms, t, flags, span):
    """(IDX, t): unit u as terms (`_add_terms`), its stencils as rows."""
    at = _UNIT * u
    fa, ca, sa, fb, cb, sb = units[at], units[at + 1], units[at + 2], units[at + 3], \
        units[at + 4], units[at + 5]
    lo, hi, n_rows, slot = units[at + 6], units[at + 7], units[at + 8], units[at + 9]
    if slot >= 0:
        IDX = _rows_of(slot, S, poff, st, T, RS, RE, IDX, cur)
        a = b = poff[slot]
    else:
        a, IDX = _stencil_rows(T, fa, ca, sa, n_rows, RS, RE, IDX, cur)
        b = a
        if fb != fa or cb != ca:
            b, IDX = _stencil_rows(T, fb, cb, sb, n_rows, RS, RE, IDX, cur)
    return IDX, _add_terms(terms, t, flags, span, IDX, RS, RE, a, b, _zero() - 1, lo, hi)


@jit
def _to_flags(live, flags, s, at, size):
    """Slot s's live elements as flags (from at), where they were none or a range."""
    if live[s, 0] != 2:
        flags[at:at + size] = False
        if live[s, 0] == 1:
            flags[at + live[s, 1]:at + live[s, 2]] = True
        live[s, 0] = 2


@jit
def _live_union(live, flags, s, at, size, lo, hi):
    """Make the elements lo to hi of slot s live too (a range where the union is one)."""
    if hi <= lo:
        return
    if live[s, 0] == 0:
        live[s, 0], live[s, 1], live[s, 2] = 1, lo, hi
    elif live[s, 0] == 1 and lo <= live[s, 2] and hi >= live[s, 1]:
        live[s, 1], live[s, 2] = min(lo, live[s, 1]), max(hi, live[s, 2])
    else:
        _to_flags(live, flags, s, at, size)
        flags[at + lo:at + hi] = True


@jit
def _live_read(reads, k, n_out, live, o):
    """(lo, hi): the operand elements the live elements of slot o read through reads[k] where
    they are a range (empty: lo = hi = 0), else (-1, -1)."""
    if live[o, 0] != 1:
        return -1, -1
    lo, hi, kind = live[o, 1], live[o, 2], reads[k, 1]
    if kind == _ALL or (kind == _SAME and reads[k, 6] != n_out):
        return (0, reads[k, 6]) if hi > lo else (0, 0)
    r0, c0, d, count = _map_rows(reads, k, n_out)
    if count < 0:
        return -1, -1
    q0, q1 = max(lo - r0, 0), min(hi - r0, count)
    if q1 <= q0:
        return 0, 0
    if d >= 0 and (d <= 1 or q1 - q0 == 1):
        return c0 + q0 * d, c0 + (q1 - 1) * d + 1
    if d == -1:
        return c0 - q1 + 1, c0 - q0 + 1
    return -1, -1


@jit
def _add_terms(terms, t, flags, diagonal_at, IDX, RS, RE, a, b, flag_at, lo, hi):
    """Record from t on the terms (row r of pattern a, row r of pattern b), and (row r of b,
    row r of a) where a and b differ, for the rows lo <= r < hi with flags[flag_at + r]
    (every one where flag_at < 0); a one-element row with itself sets flags[diagonal_at +
    its column] (a diagonal entry) instead. Returns the next t."""
    for r in range(lo, hi):
        if flag_at >= 0 and not flags[flag_at + r]:
            continue
        for side in range(2 if a != b else 1):
            left, right = (a, b) if side == 0 else (b, a)
            ls, le, rs, re = RS[left + r], RE[left + r], RS[right + r], RE[right + r]
            if le == ls or re == rs:
                continue
            if le - ls == 1 and ls == rs and le == re:
                flags[diagonal_at + IDX[ls]] = True
                continue
            terms[4 * t], terms[4 * t + 1], terms[4 * t + 2], terms[4 * t + 3] = ls, le, rs, re
            t += 1
    return t


@jit
def _band_product(units, n_units, T, n, out):
    """(out, nnz): the Hessian of units only, in out as `_product` has it (rows sorted), or
    nnz -1 where some unit is no band. A term (c, lo, hi) of A and one (d, lo', hi') of B, over
    the unit's rows i from i0 to i1 that both hold, couple columns i * sa + c and i * sb + d:
    where the strides are 1 (or one row), a band: (column x, column x + delta) for x from
    x0 to x0 + i1 - i0, and its mirror. Bands of one delta are merged (`_merge_terms`), then
    each row's columns are written in order of delta: sorted, without duplicates."""
    n_bands, bound = _bands(units, n_units, T, out[:0])
    if n_bands < 0 or n_bands > _BANDS:
        return out, -1
    bound = min(bound, n * n)
    need = 2 * (n + 1) + bound + 3 * n_bands
    if out.size < need:
        out = np.empty(max(need, 2 * out.size), np.int64)
    indptr, indices = out[:n + 1], out[n + 1:n + 1 + bound]
    ends, bands = out[n + 1 + bound:2 * n + 2 + bound], out[2 * n + 2 + bound:need]
    _bands(units, n_units, T, bands)
    n_bands = _merge_terms(bands, n_bands)
    for b in range(n_bands):        # columns of stencils are columns: checked all the same
        if min(bands[3 * b + 1], bands[3 * b + 1] + bands[3 * b]) < 0 or \
                max(bands[3 * b + 2], bands[3 * b + 2] + bands[3 * b]) > n:
            return out, -1
    ends[:] = 0
    for b in range(n_bands):
        ends[bands[3 * b + 1]] += 1
        ends[bands[3 * b + 2]] -= 1
    indptr[0], running = 0, _zero()
    for x in range(n):              # then ends[x] is where row x's columns start
        running += ends[x]
        indptr[x + 1] = indptr[x] + running
        ends[x] = indptr[x]
    for b in range(n_bands):
        delta = bands[3 * b]
        for x in range(bands[3 * b + 1], bands[3 * b + 2]):
            indices[ends[x]] = x + delta
            ends[x] += 1
    return out, indptr[n]


@jit
def _bands(units, n_units, T, bands):
    """(bands, their length): the bands of the units (written in `bands` where it has room for
    them: 3 integers each, the mirror of each after it); bands -1 where some unit is no band."""
    n_bands, length = _zero(), _zero()
    for u in range(n_units):
        at = _UNIT * u
        fa, ca, sa, fb, cb, sb = units[at], units[at + 1], units[at + 2], units[at + 3], \
            units[at + 4], units[at + 5]
        for p in range(fa, fa + ca):
            for q in range(fb, fb + cb):
                i0 = max(units[at + 6], T[3 * p + 1], T[3 * q + 1])
                i1 = min(units[at + 7], T[3 * p + 2], T[3 * q + 2])
                if i1 > i0 + 1 and (sa != 1 or sb != 1):
                    return -1, length
                if i1 <= i0:
                    continue
                if bands.size:
                    x0, y0 = i0 * sa + T[3 * p], i0 * sb + T[3 * q]
                    b = 3 * n_bands
                    bands[b], bands[b + 1], bands[b + 2] = y0 - x0, x0, x0 + i1 - i0
                    bands[b + 3], bands[b + 4], bands[b + 5] = x0 - y0, y0, y0 + i1 - i0
                n_bands += 2
                length += 2 * (i1 - i0)
    return n_bands, length


@jit
def _product(terms, n_terms, diagonal, IDX, marker, cur, n, out):
    """(out, nnz, ordered): row a of the result is a where `diagonal` says so, and the union of
    the right rows of the terms whose left row holds a: the CSR (indptr, indices) in
    out[:n + 1] and out[n + 1:n + 1 + nnz] (`_sort_rows`). Scratch (the terms holding each
    column, by a counting sort) follows them in `out`."""
    held = bound = 0
    for t in range(n_terms):
        held += terms[4 * t + 1] - terms[4 * t]
        bound += (terms[4 * t + 1] - terms[4 * t]) * (terms[4 * t + 3] - terms[4 * t + 2])
    bound = min(bound + n, n * n)
    need = (n + 1) + bound + (n + 1) + held
    if out.size < need:
        out = np.empty(max(need, 2 * out.size), np.int64)
    indptr, indices = out[:n + 1], out[n + 1:n + 1 + bound]
    at = out[n + 1 + bound:2 * n + 2 + bound]
    holding = out[2 * n + 2 + bound:need]
    at[:] = 0
    for t in range(n_terms):
        for q in range(terms[4 * t], terms[4 * t + 1]):
            at[IDX[q] + 1] += 1
    for a in range(n):
        at[a + 1] += at[a]
    for t in range(n_terms):            # then at[a] is where the terms of column a end
        for q in range(terms[4 * t], terms[4 * t + 1]):
            holding[at[IDX[q]]] = t
            at[IDX[q]] += 1
    indptr[0] = 0
    end = held_from = 0
    stamp = cur[2]
    for a in range(n):
        stamp += 1
        if diagonal[a]:
            marker[a] = stamp
            indices[end] = a
            end += 1
        for h in range(held_from, at[a]):
            t = holding[h]
            for q in range(terms[4 * t + 2], terms[4 * t + 3]):
                c = IDX[q]
                if marker[c] != stamp:
                    marker[c] = stamp
                    indices[end] = c
                    end += 1
        indptr[a + 1] = end
        held_from = at[a]
    cur[2] = stamp
    return out, end, _sort_rows(indptr, indices[:end])


# ---- stencils: a slot's pattern as a few (offset, rows) terms ------------------------------
# A stencil (st[s] = first, count, stride) says: row i of the slot holds column i * stride + c
# for each of its terms (c, lo, hi) = T[3 u:3 u + 3], first <= u < first + count, with
# lo <= i < hi. Terms are sorted by c, and terms of the same c have disjoint rows, so each row
# comes sorted and free of duplicates. Elementwise entries, windows, concatenations and
# broadcasts map stencils to stencils in O(terms), whatever the size; any other read (or a
# stencil of more than `_CAP` terms) turns the operands into rows (`_rows_of`), on demand.

_CAP = 16           # the most terms a stencil holds (more: rows)
_UNIT = 10          # integers per Hessian unit (`_add_unit`)
_BANDS = 1024       # the most bands `_band_product` sorts (more: the general product)


@jit
def _input_stencils(S, in_slots, st, T, cur):
    """T: the inputs' stencils, one term each (row i: column col + i)."""
    T = _grow(T, cur[3], 3 * in_slots.size)
    col = 0
    for k in range(in_slots.size):
        s, at = in_slots[k], cur[3]
        size = S[s, 1]
        st[s, 0], st[s, 1], st[s, 2] = at // 3, min(size, 1), 1 if size > 1 else 0
        T[at], T[at + 1], T[at + 2] = col, 0, size
        cur[3] = at + 3 * min(size, 1)
        col += size
    return T


@jit
def _map_rows(reads, k, n_out):
    """(r0, c0, d, count): output rows r0 + q, q < count, read operand row c0 + q * d through
    reads[k]; count -1 where the read is no such map (`_ALL`, `_GATHER`, `_PAIRS`)."""
    kind = reads[k, 1]
    if kind == _SAME:
        return 0, 0, 1 if reads[k, 6] == n_out else 0, n_out
    if kind == _STRIDED:
        return reads[k, 2], reads[k, 3], reads[k, 4], reads[k, 5]
    return 0, 0, 0, -1


@jit
def _stencil_of(first, last, n_out, reads, poff, st, T, scratch, cur):
    """(first term, count, stride, T): the stencil of what the output elements read through
    reads[first:last], written from T[cur[3]] on (first -1: no pattern); count -1 (nothing
    written) where some operand read has rows only, or a read is not a map of rows, or the
    terms need different strides or more than `_CAP` of them."""
    count, stride, used = _zero(), _zero(), 0
    for k in range(first, last):
        s = reads[k, 0]
        if reads[k, 1] == _UNREAD or st[s, 0] < 0:
            if reads[k, 1] != _UNREAD and poff[s] >= 0:
                return -1, -1, 0, T
            continue
        r0, c0, d, rows = _map_rows(reads, k, n_out)
        if rows < 0:
            return -1, -1, 0, T
        used += 1
        a = st[s, 2]
        for u in range(st[s, 0], st[s, 0] + st[s, 1]):
            lo, hi = T[3 * u + 1], T[3 * u + 2]    # the q < rows with lo <= c0 + q d < hi
            if d == 0:
                q0, q1 = (0, rows) if lo <= c0 < hi else (0, 0)
            elif d > 0:
                q0, q1 = -((c0 - lo) // d), -((c0 - hi) // d)
            else:
                q0, q1 = (c0 - hi) // -d + 1, (c0 - lo) // -d + 1
            q0, q1 = max(q0, 0), min(q1, rows)
            if q1 <= q0:
                continue
            term_stride = 0 if n_out == 1 else d * a
            if (count > 0 and term_stride != stride) or 3 * count + 3 > scratch.size:
                return -1, -1, 0, T
            stride = term_stride
            scratch[3 * count] = (c0 - r0 * d) * a + T[3 * u]
            scratch[3 * count + 1], scratch[3 * count + 2] = r0 + q0, r0 + q1
            count += 1
    if used == 0:
        return -1, 0, 0, T
    count = _merge_terms(scratch, count)
    if count > _CAP:
        return -1, -1, 0, T
    at = cur[3]
    T = _grow(T, at, 3 * count)
    for q in range(3 * count):
        T[at + q] = scratch[q]
    cur[3] = at + 3 * count
    return at // 3, count, stride, T


@jit
def _stencil_union(first, last, n_out, reads, poff, st, T, scratch, RS, RE, IDX, cur):
    """(p, IDX, done): where the entry's one read of a pattern is `_ALL` of a stencil of stride
    0 or 1 (a sum, a reduction), n_out rows that are all the union of the stencil's rows:
    its terms' column ranges merged (`_merge_terms`) and written once, sorted (done False,
    nothing written, for any other entry)."""
    only = -1
    for k in range(first, last):
        s = reads[k, 0]
        if reads[k, 1] != _UNREAD and (poff[s] >= 0 or st[s, 0] >= 0):
            if only >= 0:
                return -1, IDX, False
            only = k
    if only < 0 or reads[only, 1] != _ALL:
        return -1, IDX, False
    s = reads[only, 0]
    if st[s, 0] < 0 or st[s, 2] < 0 or st[s, 2] > 1:
        return -1, IDX, False
    ranges, size = 0, _zero()
    for u in range(st[s, 0], st[s, 0] + st[s, 1]):
        if T[3 * u + 2] > T[3 * u + 1]:
            scratch[3 * ranges], scratch[3 * ranges + 1] = 0, T[3 * u + 1] * st[s, 2] + T[3 * u]
            scratch[3 * ranges + 2] = (T[3 * u + 2] - 1) * st[s, 2] + T[3 * u] + 1
            ranges += 1
    ranges = _merge_terms(scratch, ranges)
    for q in range(ranges):
        size += scratch[3 * q + 2] - scratch[3 * q + 1]
    IDX = _grow(IDX, cur[1], size)
    at = cur[1]
    for q in range(ranges):
        for c in range(scratch[3 * q + 1], scratch[3 * q + 2]):
            IDX[at] = c
            at += 1
    p = cur[0]
    cur[0] += n_out
    RS[p:p + n_out], RE[p:p + n_out] = cur[1], at
    cur[1] = at
    return p, IDX, True


@jit
def _merge_terms(terms, count):
    """Sort terms[:3 count] by (offset, first row) (insertion: there are few) and merge those
    of one offset whose rows overlap or touch; returns how many are left."""
    for i in range(1, count):
        c, lo, hi = terms[3 * i], terms[3 * i + 1], terms[3 * i + 2]
        j = i - 1
        while j >= 0 and (terms[3 * j] > c or (terms[3 * j] == c and terms[3 * j + 1] > lo)):
            terms[3 * j + 3], terms[3 * j + 4], terms[3 * j + 5] = \
                terms[3 * j], terms[3 * j + 1], terms[3 * j + 2]
            j -= 1
        terms[3 * j + 3], terms[3 * j + 4], terms[3 * j + 5] = c, lo, hi
    kept = 0
    for i in range(count):
        if kept > 0 and terms[3 * kept - 3] == terms[3 * i] and \
                terms[3 * i + 1] <= terms[3 * kept - 1]:
            terms[3 * kept - 1] = max(terms[3 * kept - 1], terms[3 * i + 2])
            continue
        terms[3 * kept], terms[3 * kept + 1], terms[3 * kept + 2] = \
            terms[3 * i], terms[3 * i + 1], terms[3 * i + 2]
        kept += 1
    return kept


@jit
def _stencil_rows(T, first, count, stride, n_rows, RS, RE, IDX, cur):
    """(p, IDX): the stencil's rows, written as rows of references (sorted)."""
    IDX = _grow(IDX, cur[1], _stencil_size(T, first, count))
    p = cur[0]
    cur[0] += n_rows
    cur[1] = _write_stencil(T, first, count, stride, n_rows, RS[p:], RE[p:], IDX, cur[1])
    return p, IDX


@jit
def _stencil_size(T, first, count):
    """How many columns a stencil's rows hold in all."""
    size = _zero()
    for u in range(first, first + count):
        size += T[3 * u + 2] - T[3 * u + 1]
    return size


@jit
def _write_stencil(T, first, count, stride, n_rows, starts, ends, dest, at):
    """The columns of a stencil's rows i < n_rows, in order, from dest[at] on; starts[i] and
    ends[i] where each row's are. Returns where they end."""
    for i in range(n_rows):
        starts[i] = at
        for u in range(first, first + count):
            if T[3 * u + 1] <= i < T[3 * u + 2]:
                dest[at] = i * stride + T[3 * u]
                at += 1
        ends[i] = at
    return at


@jit
def _stencil_csr(out_slots, S, st, T, out):
    """(out, nnz): the CSR (indptr, indices) of the patterns of `out_slots`, end to end, in
    out[:m + 1] and out[m + 1:m + 1 + nnz], where each is a stencil or none (rows sorted)."""
    m = nnz = _zero()
    for k in range(out_slots.size):
        m += S[out_slots[k], 1]
        if st[out_slots[k], 0] >= 0:
            nnz += _stencil_size(T, st[out_slots[k], 0], st[out_slots[k], 1])
    if out.size < m + 1 + nnz:
        out = np.empty(max(m + 1 + nnz, 2 * out.size), np.int64)
    indptr, indices = out[:m + 1], out[m + 1:m + 1 + nnz]
    row, at = 0, _zero()
    indptr[0] = 0
    for k in range(out_slots.size):
        s = out_slots[k]
        count = st[s, 1] if st[s, 0] >= 0 else 0
        at = _write_stencil(T, st[s, 0], count, st[s, 2], S[s, 1], indptr[row:],
                            indptr[row + 1:], indices, at)
        row += S[s, 1]
    return out, nnz


@jit
def _rows_of(s, S, poff, st, T, RS, RE, IDX, cur):
    """IDX, with poff[s] set: slot s's stencil as rows, where it has a stencil and no rows."""
    if poff[s] < 0 and st[s, 0] >= 0:
        poff[s], IDX = _stencil_rows(T, st[s, 0], st[s, 1], st[s, 2], S[s, 1], RS, RE, IDX,
                                     cur)
    return IDX


@jit
def _rows_of_operands(first, last, S, reads, poff, st, T, RS, RE, IDX, cur):
    """IDX: `_rows_of` every operand read through reads[first:last]."""
    for k in range(first, last):
        if reads[k, 1] != _UNREAD:
            IDX = _rows_of(reads[k, 0], S, poff, st, T, RS, RE, IDX, cur)
    return IDX
