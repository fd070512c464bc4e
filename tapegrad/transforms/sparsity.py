"""Sparsity patterns of Jacobians and Hessians, detected from a tape (index-set propagation).

One forward pass over the tape's entries gives each slot's pattern: a boolean sparse matrix
(slot elements x differentiated input elements) saying which inputs each element's derivative may
depend on, at any input values. An entry's output pattern is the union, over its operands, of
the operand's pattern rows its output elements read; which ones each primitive reads is its own
declared rule (`Prim.element_reads`, from `core/prims/`: elementwise primitives derive it from
their kind and partials, structural ones declare an index map or a conservative rule), never a
table here. Each entry costs a few vectorised scipy.sparse operations (a boolean product of the
entry's read map with the operand's pattern), never a Python loop per element; an elementwise
entry whose operand has the output's size shares the operand's pattern.

The Hessian pattern of a scalar output adds, for each entry the output depends on through
elements that reach it (a reverse pass of boolean masks over the same read maps), the pairs its
second derivatives couple (`Prim.coupling`): for an output element e and operands i, j coupled,
every pair of an input in the pattern of what e reads of i and one of what it reads of j.
Piecewise linear primitives (relu, maximum, sort, max) couple nothing; the structural nonlinear
ones without a finer rule couple every pair their output elements read (conservative).

A primitive whose definition declares no rule makes detection conservative for its entries
(every output element reads every operand element, every pair coupled) with a
`SparsityWarning`. Constant operands (values that are the same at every call of the tape) are
handed to the rules, which may drop reads that a zero constant cancels (a product with a
sparse constant matrix); with `capture="call"` the closed-over arrays are re-read per call, so
they are not constants here. scipy is imported at the first detection, not with tapegrad.
"""
import warnings

import numpy as np

from ..core.primitive import ALL, SAME
from ..inspect.display import operands


class SparsityWarning(UserWarning):
    """Detection met a primitive that declares no dependence rule and assumed it dense."""


def _sp():
    import scipy.sparse
    return scipy.sparse


def jacobian_pattern(tape, in_slots, out_slots, fixed_constants=True):
    """The (output elements, input elements) boolean CSR pattern of the Jacobian of
    `out_slots` with respect to `in_slots` (elements end to end, in slot order)."""
    detection = _Detection(tape, in_slots, fixed_constants)
    sp = _sp()
    blocks = [detection.pattern(s) for s in out_slots]
    if not blocks:
        return sp.csr_matrix((0, detection.n), dtype=bool)
    return _canonical(sp.vstack(blocks, format="csr"))


def hessian_pattern(tape, in_slots, out_slot, fixed_constants=True):
    """The symmetric (n, n) boolean CSR pattern of the Hessian of the scalar `out_slot` with
    respect to the elements of `in_slots`."""
    detection = _Detection(tape, in_slots, fixed_constants)
    sp = _sp()
    parts = detection.couplings(out_slot)
    H = sp.csr_matrix((detection.n, detection.n), dtype=bool)
    for part in parts:
        H = H + part
    return _canonical(H + H.T)


def _canonical(M):
    M = M.tocsr().astype(bool)
    M.eliminate_zeros()
    M.sum_duplicates()
    M.sort_indices()
    return M


class _Detection:
    """The forward pass: `P[s]`, the pattern of slot s (None: depends on no input), and per
    entry the reads its rule gave (None: an entry no input reaches)."""

    def __init__(self, tape, in_slots, fixed_constants):
        sp = _sp()
        self.tape = tape
        self.n = n = sum(tape.sizes[s] for s in in_slots)
        P = self.P = [None] * len(tape.S)
        col = 0
        for s in in_slots:
            size = tape.sizes[s]
            block = sp.csr_matrix((np.ones(size, bool), np.arange(col, col + size),
                                   np.arange(size + 1)), shape=(size, n))
            P[s] = block if P[s] is None else P[s] + block     # an argument passed twice
            col += size
        # slots whose values may change between calls: inputs (differentiated or not), the
        # implicit inputs of a nested transform, arrays re-read per call, and what they reach
        varies = self.varies = np.zeros(len(tape.S), bool)
        varies[list(tape.input_slots) + list(tape.implicit_slots)] = True
        if not fixed_constants:
            varies[[s for s, _ in tape.constants]] = True
        self.reads = [None] * len(tape.E)
        warned = set()
        for e, prim in enumerate(tape.prims):
            ops = operands(tape, e)
            o = int(tape.E[e, 4])
            varies[o] = varies[ops].any() if ops else False
            if all(P[s] is None for s in ops):
                continue
            reads = self._reads(e, prim, ops, warned)
            self.reads[e] = reads
            parts = [_pattern_rows(rule, P[s], tape.sizes[o])
                     for s, rule in zip(ops, reads) if rule is not None and P[s] is not None]
            P[o] = _union(parts)

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

    def pattern(self, s):
        P = self.P[s]
        return _sp().csr_matrix((self.tape.sizes[s], self.n), dtype=bool) if P is None else P

    def couplings(self, out_slot):
        """The pattern matrices whose sum (and its transpose) is the Hessian's pattern: one per
        coupling of an entry the output depends on, from a reverse pass of element masks."""
        tape, P = self.tape, self.P
        live = [None] * len(tape.S)
        live[out_slot] = np.ones(tape.sizes[out_slot], bool)
        parts = []
        for e in range(len(tape.E) - 1, -1, -1):
            reads = self.reads[e]
            o = int(tape.E[e, 4])
            if reads is None or live[o] is None or not live[o].any():
                continue
            ops, lo, n_out = operands(tape, e), live[o], tape.sizes[o]
            coupling = tape.prims[e].coupling
            if coupling is None:
                coupling = "nonlinear"      # warned about by the forward pass (no rule at all)
            parts.extend(self._coupled(coupling, ops, reads, lo, o))
            for s, rule in zip(ops, reads):
                if rule is None or P[s] is None:
                    continue
                ls = _live_operand(rule, lo, n_out, tape.sizes[s])
                live[s] = ls if live[s] is None else live[s] | ls
        return parts

    def _coupled(self, coupling, ops, reads, lo, o):
        P, sizes = self.P, self.tape.sizes
        rows = None if lo.all() else np.flatnonzero(lo)

        def read(i):
            if reads[i] is None or P[ops[i]] is None:
                return None
            R = _pattern_rows(reads[i], P[ops[i]], sizes[o])
            return R if rows is None else R[rows]

        if coupling == "nonlinear":
            Q = P[o] if rows is None else P[o][rows]
            return [Q.T @ Q]
        if coupling == "diagonal":
            if reads[0] is None or P[ops[0]] is None:
                return []
            l0 = _live_operand(reads[0], lo, sizes[o], sizes[ops[0]])
            Q = P[ops[0]][np.flatnonzero(l0)]
            return [Q.T @ Q]
        out = []
        for i, j in coupling:
            Ri, Rj = read(i), read(j)
            if Ri is not None and Rj is not None:
                out.append(Ri.T @ Rj)
        return out


def _pattern_rows(rule, Pop, n_out):
    """The pattern rows an entry's output elements read of one operand (pattern Pop)."""
    sp = _sp()
    size = Pop.shape[0]
    if rule is SAME or (isinstance(rule, str) and rule == SAME):
        if size == n_out:
            return Pop
        return Pop[np.zeros(n_out, np.int64)]          # a broadcast operand of size 1
    if isinstance(rule, str) and rule == ALL:
        union = np.unique(Pop.indices)
        return sp.csr_matrix((np.ones(n_out * union.size, bool), np.tile(union, n_out),
                              np.arange(n_out + 1) * union.size), shape=(n_out, Pop.shape[1]))
    rows, cols = rule
    M = sp.csr_matrix((np.ones(rows.size, bool), (rows, cols)), shape=(n_out, size))
    return M @ Pop


def _live_operand(rule, lo, n_out, size):
    """Which elements of an operand reach live output elements `lo` through `rule`."""
    if isinstance(rule, str) and rule == SAME:
        return lo.copy() if size == n_out else np.full(size, lo.any())
    if isinstance(rule, str) and rule == ALL:
        return np.full(size, lo.any())
    rows, cols = rule
    out = np.zeros(size, bool)
    out[cols[lo[rows]]] = True
    return out


def _union(parts):
    if not parts:
        return None
    first = parts[0]
    if all(p is first for p in parts[1:]):
        return first
    out = first
    for p in parts[1:]:
        if p is not first:
            out = out + p
    return out
