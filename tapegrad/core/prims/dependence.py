"""Dependence rules shared by structural primitives: which operand elements each output element
reads (`Prim.element_reads` says what a rule returns). Sparsity detection
(`transforms.sparsity`) runs them once per entry of a tape, so each is vectorised numpy over the
payload, never a loop per element, and a strided read answers with ranges (checked and run
without listing its elements). A rule may over-approximate (a read that never matters costs
a color, never a wrong value); it may not leave out a read that a derivative can depend on at
some input values."""
import numpy as np

from ..primitive import ALL, SAME


def every_operand(ip, n_out, sizes, consts):
    """Each output element reads every element of every operand (the conservative rule)."""
    return (ALL,) * len(sizes)


def selection(ip, n_out, sizes, consts):
    """y[i] is b[i] or c[i] as the condition a[i] says: a has no derivative, b and c are read
    at their own index (both: which one depends on the values)."""
    return (None, SAME, SAME)


def index_map(ip, n_out, sizes, consts):
    """y[i] reads x[ip[i]] (and x[ip[n_out + i]] where the payload holds two maps)."""
    per_output = ip.size // n_out if n_out else 1
    if per_output == 1:
        return ((None, np.asarray(ip, np.int64)),)
    rows = np.tile(np.arange(n_out, dtype=np.int64), per_output)
    return ((rows, np.asarray(ip[:per_output * n_out], np.int64)),)


def window(ip, n_out, sizes, consts):
    """y[i] reads x[start + i * step], ip = (start, step): a range (step 0: an index map)."""
    start, step = int(ip[0]), int(ip[1])
    if step == 0:
        return ((None, np.full(n_out, start, np.int64)),)
    return ((None, range(start, start + n_out * step, step)),)


def segments(ip, n_out, sizes, consts):
    """y[ip[i]] reads x[i]: a segment id per operand element."""
    return ((np.asarray(ip, np.int64), np.arange(sizes[0], dtype=np.int64)),)


def concatenation(ip, n_out, sizes, consts):
    """The operands end to end: output element start_j + i reads element i of operand j."""
    reads, start = [], 0
    for size in sizes:
        reads.append((range(start, start + size), range(size)))
        start += size
    return tuple(reads)


def predecessor_chains(ip, n_out, sizes, consts):
    """A scan, y[i] = y[ip[i]] op x[i]: y[i] reads x along its chain of predecessors (one pass
    per step back: as many passes as the longest run, each over the runs still going)."""
    rows_all = [np.arange(n_out, dtype=np.int64)]
    cols_all = [rows_all[0]]
    rows, cols = rows_all[0], np.asarray(ip, np.int64)
    while rows.size:
        keep = cols >= 0
        rows, cols = rows[keep], cols[keep]
        rows_all.append(rows)
        cols_all.append(cols)
        cols = np.asarray(ip, np.int64)[cols]
    return ((np.concatenate(rows_all), np.concatenate(cols_all)),)


def lanes(ip, n_out, sizes, consts):
    """Each output element reads every element of its lane, ip = (L, inner, ...): lane l holds
    the L values `inner` apart from (l // inner) * L * inner + l % inner."""
    L, inner = int(ip[0]), int(ip[1])
    lane_starts = np.arange(n_out // L, dtype=np.int64)
    lane_starts = (lane_starts // inner) * L * inner + lane_starts % inner
    members = lane_starts[:, None] + inner * np.arange(L, dtype=np.int64)      # (lanes, L)
    rows = np.repeat(members, L, axis=1).reshape(-1)
    cols = np.tile(members, (1, L)).reshape(-1)
    return ((rows, cols),)


# the reads of a batched matrix product above this many pairs are taken as `ALL` (conservative)
_MATMUL_PAIRS = 20_000_000


def reads_constants(rule):
    """Mark a rule that reads `consts`: detection gathers the constant operands' values only
    for such a rule (the others get None for every operand; gathering them costs detection
    more than most rules' own work)."""
    rule.reads_constants = True
    return rule


@reads_constants
def matrix_product(ip, n_out, sizes, consts):
    """Y[q] = A[q] @ B[q], ip = (batch, m, k, n, a_stride, b_stride, ...): Y[q, i, j] reads
    A[q, i, :] and B[q, :, j], and of those only the ones a constant other factor does not
    multiply by zero (A[q, i, l] with B[q, l, j] == 0 for a constant B)."""
    batch, m, k, n, sa, sb = (int(v) for v in ip[:6])
    if batch * m * n * k > _MATMUL_PAIRS:
        return (ALL, ALL)
    q, i, l, j = np.meshgrid(*(np.arange(d, dtype=np.int64) for d in (batch, m, k, n)),
                             indexing="ij")
    out = (q * m + i) * n + j
    a_pos = q * sa + i * k + l
    b_pos = q * sb + l * n + j
    a_const, b_const = consts
    a_read = np.ones(out.shape, bool) if b_const is None else b_const[b_pos] != 0
    b_read = np.ones(out.shape, bool) if a_const is None else a_const[a_pos] != 0
    return ((out[a_read], a_pos[a_read]), (out[b_read], b_pos[b_read]))
