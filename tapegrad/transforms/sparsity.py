"""Sparsity patterns of Jacobians and Hessians, detected from a tape (index-set propagation).

One forward pass over the tape's entries gives each slot's pattern: a boolean sparse matrix
(slot elements x differentiated input elements) saying which inputs each element's derivative may
depend on, at any input values. An entry's output pattern is the union, over its operands, of
the operand's pattern rows its output elements read; which ones each primitive reads is its own
declared rule (`Prim.element_reads`, from `core/prims/`: elementwise primitives derive it from
their kind and partials, structural ones declare an index map or a conservative rule), never a
table here. Patterns are CSR index arrays; each entry costs one compiled boolean product of its
read map (all operands' reads, as pairs) with the stacked operand patterns (`_gather_union`, a
counting sort and a marker array: linear in the work), never a Python loop per element, and an
elementwise entry whose operands share the output's pattern shares it.

The Hessian pattern of a scalar output adds, for each entry the output depends on through
elements that reach it (a reverse pass of boolean masks over the same read maps), the pairs its
second derivatives couple (`Prim.coupling`): for an output element e and operands i, j coupled,
every pair of an input in the pattern of what e reads of i and one of what it reads of j
(`_row_pairs`), deduplicated at the end.
Piecewise linear primitives (relu, maximum, sort, max) couple nothing; the structural nonlinear
ones without a finer rule couple every pair their output elements read (conservative).

A primitive whose definition declares no rule makes detection conservative for its entries
(every output element reads every operand element, every pair coupled) with a
`SparsityWarning`. Constant operands (values that are the same at every call of the tape) are
handed to the rules, which may drop reads that a zero constant cancels (a product with a
sparse constant matrix); with `capture="call"` the closed-over arrays are re-read per call, so
they are not constants here. The result is a scipy CSR matrix (scipy imported then).
"""
import warnings

import numpy as np

from ..core.jit import jit
from ..core.primitive import ALL, SAME
from ..inspect.display import operands


class SparsityWarning(UserWarning):
    """Detection met a primitive that declares no dependence rule and assumed it dense."""


def jacobian_pattern(tape, in_slots, out_slots, fixed_constants=True):
    """The (output elements, input elements) boolean CSR pattern of the Jacobian of
    `out_slots` with respect to `in_slots` (elements end to end, in slot order)."""
    detection = _Detection(tape, in_slots, fixed_constants)
    blocks = [detection.pattern(s) for s in out_slots]
    indptr = np.zeros(1, np.int64)
    for block_indptr, _ in blocks:
        indptr = np.concatenate([indptr, indptr[-1] + block_indptr[1:]])
    indices = np.concatenate([np.zeros(0, np.int64)] + [ix for _, ix in blocks])
    return _scipy_csr(indptr, indices, (indptr.size - 1, detection.n))


def hessian_pattern(tape, in_slots, out_slot, fixed_constants=True):
    """The symmetric (n, n) boolean CSR pattern of the Hessian of the scalar `out_slot` with
    respect to the elements of `in_slots`."""
    detection = _Detection(tape, in_slots, fixed_constants)
    n = detection.n
    pairs = detection.couplings(out_slot)
    a = np.concatenate([np.zeros(0, np.int64)] + [p[0] for p in pairs] + [p[1] for p in pairs])
    b = np.concatenate([np.zeros(0, np.int64)] + [p[1] for p in pairs] + [p[0] for p in pairs])
    indptr, indices = _gather_union(a, b, n, *_identity(n), n)
    return _scipy_csr(indptr, indices, (n, n))


def _scipy_csr(indptr, indices, shape):
    import scipy.sparse
    M = scipy.sparse.csr_matrix((np.ones(indices.size, bool), indices, indptr), shape=shape)
    M.sort_indices()
    return M


def _identity(n):
    ramp = np.arange(n + 1, dtype=np.int64)
    return ramp, ramp[:n]


# ---- kernels: CSR patterns as (indptr, indices) int64 arrays, columns unsorted within a row --

@jit
def _gather_union(rows, cols, n_out, p_indptr, p_indices, n_cols):
    """The pattern whose row r is the union of the rows cols[k] of pattern P over the k with
    rows[k] == r: the boolean product M @ P for the read map M given as pairs (rows, cols)."""
    start = np.zeros(n_out + 1, np.int64)            # M in CSR (a counting sort of the rows,
    ordered = True                                    # unless they come in order)
    for k in range(rows.size):
        start[rows[k] + 1] += 1
        if k and rows[k] < rows[k - 1]:
            ordered = False
    for r in range(n_out):
        start[r + 1] += start[r]
    m_cols = cols
    if not ordered:
        m_cols = np.empty(rows.size, np.int64)
        fill = start[:-1].copy()
        for k in range(rows.size):
            m_cols[fill[rows[k]]] = cols[k]
            fill[rows[k]] += 1
    bound = 0
    for q in m_cols:
        bound += p_indptr[q + 1] - p_indptr[q]
    indices = np.empty(bound, np.int64)
    indptr = np.empty(n_out + 1, np.int64)
    indptr[0] = 0
    marker = np.full(n_cols, -1, np.int64)           # marker[c] == r: c is in row r already
    at = 0
    for r in range(n_out):
        for k in range(start[r], start[r + 1]):
            q = m_cols[k]
            for t in range(p_indptr[q], p_indptr[q + 1]):
                c = p_indices[t]
                if marker[c] != r:
                    marker[c] = r
                    indices[at] = c
                    at += 1
        indptr[r + 1] = at
    return indptr, indices[:at]


@jit
def _row_pairs(selected, a_indptr, a_indices, b_indptr, b_indices):
    """Every pair (i, j) with i in row r of A and j in row r of B, for the rows `selected`."""
    total = 0
    for r in selected:
        total += (a_indptr[r + 1] - a_indptr[r]) * (b_indptr[r + 1] - b_indptr[r])
    first = np.empty(total, np.int64)
    second = np.empty(total, np.int64)
    at = 0
    for r in selected:
        for s in range(a_indptr[r], a_indptr[r + 1]):
            for t in range(b_indptr[r], b_indptr[r + 1]):
                first[at] = a_indices[s]
                second[at] = b_indices[t]
                at += 1
    return first, second


class _Detection:
    """The forward pass: `P[s]`, the pattern of slot s as (indptr, indices) (None: depends on
    no input), and per entry the reads its rule gave (None: an entry no input reaches)."""

    def __init__(self, tape, in_slots, fixed_constants):
        self.tape = tape
        self.n = n = sum(tape.sizes[s] for s in in_slots)
        P = self.P = [None] * len(tape.S)
        col = 0
        for s in in_slots:
            size = tape.sizes[s]
            block = (np.arange(size + 1, dtype=np.int64), np.arange(col, col + size,
                                                                    dtype=np.int64))
            P[s] = block if P[s] is None else _gather_union(    # an argument passed twice
                np.tile(np.arange(size, dtype=np.int64), 2), np.arange(2 * size, dtype=np.int64),
                size, np.concatenate([P[s][0], P[s][0][-1] + block[0][1:]]),
                np.concatenate([P[s][1], block[1]]), n)
            col += size
        # slots whose values may change between calls: inputs (differentiated or not), the
        # implicit inputs of a nested transform, arrays re-read per call, and what they reach
        varies = self.varies = np.zeros(len(tape.S), bool)
        varies[list(tape.input_slots) + list(tape.implicit_slots)] = True
        if not fixed_constants:
            varies[[s for s, _ in tape.constants]] = True
        self.reads = [None] * len(tape.E)
        self.operands = [None] * len(tape.E)
        warned = set()
        for e, prim in enumerate(tape.prims):
            ops = operands(tape, e)
            o = int(tape.E[e, 4])
            varies[o] = varies[ops].any() if ops else False
            if all(P[s] is None for s in ops):
                continue
            reads = self._reads(e, prim, ops, warned)
            self.reads[e], self.operands[e] = reads, ops
            P[o] = self.read_rows(ops, reads, tape.sizes[o], range(len(ops)))

    def _reads(self, e, prim, ops, warned):
        tape = self.tape
        row = tape.E[e]
        ip = tape.IP[row[5]:row[5] + row[6]]
        sizes = [tape.sizes[s] for s in ops]
        consts = tuple(None if self.varies[s] else
                       tape.V0[tape.offsets[s]:tape.offsets[s] + tape.sizes[s]] for s in ops)
        reads = prim.element_reads(ip, tape.sizes[int(row[4])], sizes, consts)
        if reads is None:
            if prim.name not in warned:
                warned.add(prim.name)
                warnings.warn(f"primitive {prim.name} declares no dependence rule "
                              "(reads_elements): its entries are taken as dense",
                              SparsityWarning, stacklevel=5)
            reads = (ALL,) * len(ops)
        return reads

    def read_rows(self, ops, reads, n_out, which):
        """The pattern of what an entry's output elements read of its operands `which` (None
        when that is nothing): the operand's own pattern where an operand of the output's size
        is read at its own index, else one product of the read map with the stacked operand
        patterns."""
        P, sizes = self.P, self.tape.sizes
        used = [i for i in which if reads[i] is not None and P[ops[i]] is not None]
        if not used:
            return None
        if all(_is(reads[i], SAME) and sizes[ops[i]] == n_out for i in used) and \
                all(P[ops[i]] is P[ops[used[0]]] for i in used):
            return P[ops[used[0]]]
        if len(used) == 1 and isinstance(reads[used[0]], tuple) and reads[used[0]][0] is None:
            return _gather_rows(P[ops[used[0]]], reads[used[0]][1], self.n)
        rows, cols, indptrs, indices, offset = [], [], [np.zeros(1, np.int64)], [], 0
        for i in used:
            p_indptr, p_indices = P[ops[i]]
            if _is(reads[i], ALL):      # every output element reads the union of the rows
                size = p_indptr.size - 1
                p_indptr, p_indices = _gather_union(np.zeros(size, np.int64),
                                                    np.arange(size, dtype=np.int64), 1,
                                                    p_indptr, p_indices, self.n)
                r, c = None, np.zeros(n_out, np.int64)
            else:
                r, c = _read_map(reads[i], n_out, sizes[ops[i]])
            rows.append(r)
            cols.append(c + offset)
            indptrs.append(indptrs[-1][-1] + p_indptr[1:])
            indices.append(p_indices)
            offset += p_indptr.size - 1
        if all(r is None for r in rows):    # one read per output element and operand: in
            rows = np.repeat(np.arange(n_out, dtype=np.int64), len(cols))     # row order
            cols = np.stack(cols, axis=1).reshape(-1)
        else:
            ramp = np.arange(n_out, dtype=np.int64)
            rows = np.concatenate([ramp if r is None else r for r in rows])
            cols = np.concatenate(cols)
        return _gather_union(rows, cols, n_out, np.concatenate(indptrs), np.concatenate(indices),
                             self.n)

    def pattern(self, s):
        P = self.P[s]
        return (np.zeros(self.tape.sizes[s] + 1, np.int64), np.zeros(0, np.int64)) \
            if P is None else P

    def couplings(self, out_slot):
        """The pairs (first, second) of input elements that second derivatives couple, from
        each entry the output depends on (a reverse pass of element masks): one pair of arrays
        per coupling."""
        tape, P = self.tape, self.P
        live = [None] * len(tape.S)
        live[out_slot] = np.ones(tape.sizes[out_slot], bool)
        pairs, self.paired = [], {}
        for e in range(len(tape.E) - 1, -1, -1):
            reads, ops = self.reads[e], self.operands[e]
            o = int(tape.E[e, 4])
            if reads is None or live[o] is None or not live[o].any():
                continue
            lo, n_out = live[o], tape.sizes[o]
            coupling = tape.prims[e].coupling
            if coupling is None:
                coupling = "nonlinear"      # warned about by the forward pass (no rule at all)
            pairs.extend(self._coupled(coupling, ops, reads, lo, o))
            for s, rule in zip(ops, reads):
                if rule is None or P[s] is None:
                    continue
                ls = _live_operand(rule, lo, n_out, tape.sizes[s])
                live[s] = ls if live[s] is None else live[s] | ls
        return pairs

    def _coupled(self, coupling, ops, reads, lo, o):
        P, sizes = self.P, self.tape.sizes
        complete = bool(lo.all())
        selected = np.flatnonzero(lo)
        if coupling == "nonlinear":
            return self._pairs(selected, complete, P[o], P[o])
        if coupling == "diagonal":
            if reads[0] is None or P[ops[0]] is None:
                return []
            l0 = _live_operand(reads[0], lo, sizes[o], sizes[ops[0]])
            return self._pairs(np.flatnonzero(l0), bool(l0.all()), P[ops[0]], P[ops[0]])
        out = []
        for i, j in coupling:
            Ri = self.read_rows(ops, reads, sizes[o], (i,))
            Rj = Ri if i == j else self.read_rows(ops, reads, sizes[o], (j,))
            if Ri is not None and Rj is not None:
                out.extend(self._pairs(selected, complete, Ri, Rj))
        return out

    def _pairs(self, selected, complete, A, B):
        """[the pairs of rows `selected` of patterns A and B], or [] where every row of the same
        two patterns gave its pairs already (a chain of elementwise entries shares patterns)."""
        if complete:
            key = (id(A), id(B))
            if key in self.paired:
                return []
            self.paired[key] = (A, B)          # kept alive: the ids stay theirs
        return [_row_pairs(selected, *A, *B)]


def _is(rule, marker):
    return isinstance(rule, str) and rule == marker


def _gather_rows(pattern, cols, n_cols):
    """Rows `cols` of a pattern: index arrays only where each row holds one column."""
    indptr, indices = pattern
    cols = np.ascontiguousarray(cols, np.int64)
    _check_range(cols, indptr.size - 1, "an operand")
    if indices.size == indptr.size - 1 and (indptr.size == 1 or
                                            (indptr[1:] - indptr[:-1]).min() == 1):
        return np.arange(cols.size + 1, dtype=np.int64), indices[cols]
    ramp = np.arange(cols.size, dtype=np.int64)
    return _gather_union(ramp, cols, cols.size, indptr, indices, n_cols)


def _read_map(rule, n_out, size):
    """(rows, cols): the output element and the operand element of each read (not `ALL`);
    rows None: output element i reads cols[i] only."""
    if _is(rule, SAME):
        return None, (np.arange(n_out, dtype=np.int64) if size == n_out else
                      np.zeros(n_out, np.int64))
    rows, cols = rule
    cols = np.ascontiguousarray(cols, np.int64)
    if rows is not None:
        rows = np.ascontiguousarray(rows, np.int64)
        _check_range(rows, n_out, "an output")
    if cols.ndim != 1 or cols.size != (n_out if rows is None else rows.size):
        raise RuntimeError("a dependence rule gave rows and cols of different shapes")
    _check_range(cols, size, "an operand")
    return rows, cols


def _check_range(index, size, what):
    """The compiled kernels do not check bounds: a rule's indices are checked first."""
    if index.size and (index.min() < 0 or index.max() >= size):
        raise RuntimeError(f"a dependence rule read outside {what} of {size} elements")


def _live_operand(rule, lo, n_out, size):
    """Which elements of an operand reach live output elements `lo` through `rule`."""
    if _is(rule, SAME):
        return lo.copy() if size == n_out else np.full(size, lo.any())
    if _is(rule, ALL):
        return np.full(size, lo.any())
    rows, cols = rule
    out = np.zeros(size, bool)
    out[cols[lo] if rows is None else cols[lo[rows]]] = True
    return out
