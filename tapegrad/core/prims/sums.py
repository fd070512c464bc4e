"""Sums: `segsum` (scaled segment sum: sum and mean over axes), `segsumsq` (the segment sum of
squares, sum(x * x, axis) in one entry) and `total` (the scaled sum of everything)."""
import numpy as np

from ..primitive import Values, helper, structural, temp, view
from . import dependence, shapes

def _one_value(ip, n_out, sizes):
    return None if n_out == 1 else f"has one output value, not {n_out}"


segsum = structural(38, "segsum", "SumBackward1", shapes.segments, linear=True,
                    reads_elements=dependence.segments,
                    doc="y[ip[i]] += c0 * x[i]")
total = structural(39, "total", "SumBackward0", _one_value, linear=True, doc="y = c0 * sum(x)",
                  reads_elements=dependence.every_operand)
# Rounded as the square and the segment sum it replaces: each product is formed, then added.
segsumsq = structural(49, "segsumsq", "SumBackward1", shapes.segments, reads=(((0,), False),),
                      reads_elements=dependence.segments, curvature="diagonal",
                      doc="y[ip[i]] += c0 * x[i]^2")


@segsum.fwd
def segsum_fwd(V, S, a, b, c, o, ip, c0, c1):
    x = view(V, S, a)
    y = view(V, S, o)
    y[:] = 0.0
    for i in range(x.size):
        y[ip[i]] += c0 * x[i]


@segsum.vjp
def segsum_vjp(V, G, S, NEED, a, b, c, o, ip, c0, c1):
    if NEED[a]:
        gx = view(G, S, a)
        gy = view(G, S, o)
        for i in range(gx.size):
            gx[i] += c0 * gy[ip[i]]


@helper
def _eight_partial_sums(V: Values, S, a, lo, m, out: Values, k):
    """out[k] = the sum of x[lo:lo + m], x slot a, 8 <= m <= 128, as numpy adds such a run: in
    eight interleaved partial sums, added as a tree, then the values left over one after
    another. (x is made here, not passed: a view only indexed is an offset in the flat
    layout, and its unsigned indices run twice as fast as a view's.)"""
    x = view(V, S, a)
    r0 = 0.0 + x[lo]
    r1 = 0.0 + x[lo + 1]
    r2 = 0.0 + x[lo + 2]
    r3 = 0.0 + x[lo + 3]
    r4 = 0.0 + x[lo + 4]
    r5 = 0.0 + x[lo + 5]
    r6 = 0.0 + x[lo + 6]
    r7 = 0.0 + x[lo + 7]
    end = lo + m - m % 8
    for i in range(lo + 8, end, 8):
        r0 += x[i]
        r1 += x[i + 1]
        r2 += x[i + 2]
        r3 += x[i + 3]
        r4 += x[i + 4]
        r5 += x[i + 5]
        r6 += x[i + 6]
        r7 += x[i + 7]
    out[k] = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    for i in range(end, lo + m):
        out[k] += x[i]


@helper
def _pairwise_sum(V: Values, S, a, out: Values):
    """out[0] = the sum of slot a's values (8 or more) in numpy's pairwise order. A run of more
    than 128 values is halved at a multiple of 8 below its middle, and the halves' sums added.
    The runs are visited left to right without recursion: each is found from the root, its sum
    added to the pending left halves while it ends a right half, or left pending (in scratch
    rows 0..63 of the calling primitive: the tree of 2^63 values is under 64 levels deep)."""
    x = view(V, S, a)
    n = x.size
    if n <= 128:
        _eight_partial_sums(V, S, a, 0, n, out, 0)
    else:
        pending = temp(V, 0, 64)
        top = 0
        lo = 0
        while lo < n:
            start = 0
            m = n
            path = 0            # bit j: whether the run j levels above this one is a right half
            depth = 0
            while m > 128:
                half = m // 16 * 8
                path = path * 2
                if lo < start + half:
                    m = half
                else:
                    start += half
                    m -= half
                    path += 1
                depth += 1
            _eight_partial_sums(V, S, a, lo, m, pending, top)
            climbing = True
            for level in range(depth):
                if climbing:
                    if path % 2 == 1:
                        pending[top - 1] = pending[top - 1] + pending[top]
                        top -= 1
                        path = path // 2
                    else:
                        top += 1
                        climbing = False
            lo += m
        out[0] = pending[0]


@helper
def _pairwise_total(V: Values, S, a, o, c0):
    """`total_fwd` of 8 values or more (`_pairwise_sum`, then the scale)."""
    y = view(V, S, o)
    _pairwise_sum(V, S, a, y)
    y[0] = c0 * y[0]


@total.fwd
def total_fwd(V, S, a, b, c, o, ip, c0, c1):
    """y = c0 * sum(x), added in numpy's order for a contiguous array (pairwise summation), so
    that a replay gives the bits the traced call gave (numpy computed those; float32 runs add
    in float64 partial sums, as every accumulator of the column layout does), and a long sum
    runs eight independent additions at a time: fewer than 8 values one after another, from 0,
    more in `_pairwise_total` (a helper, so that a short sum makes no views); the column layout
    in `total_fwd_column`, the same additions over a tile's points. The CUDA layout
    adds one value after another at any length (`total_fwd_cuda`: a GPU thread has no room
    for the pending halves)."""
    x = view(V, S, a)
    y = view(V, S, o)
    if x.size < 8:
        acc = 0.0
        for i in range(x.size):
            acc += x[i]
        y[0] = c0 * acc
    else:
        _pairwise_total(V, S, a, o, c0)


@helper(layout="column")
def _column_run(x, lo, m, parts, out):
    """`_eight_partial_sums` on (rows, tile) blocks: out = the sum of rows x[lo:lo + m]
    (8 <= m <= 128) at every point, the partial sums in the float64 rows `parts`, the rest in
    out's dtype, as the flat body adds."""
    for j in range(8):
        row = x[lo + j]
        part = parts[j]
        for p in range(part.size):
            part[p] = 0.0 + row[p]
    end = lo + m - m % 8
    for i in range(lo + 8, end, 8):
        for j in range(8):
            row = x[i + j]
            part = parts[j]
            for p in range(part.size):
                part[p] += row[p]
    for p in range(out.size):
        out[p] = ((parts[0, p] + parts[1, p]) + (parts[2, p] + parts[3, p])) + \
            ((parts[4, p] + parts[5, p]) + (parts[6, p] + parts[7, p]))
    for i in range(end, lo + m):
        row = x[i]
        for p in range(out.size):
            out[p] += row[p]


@total.rule("fwd", layout="column")
def total_fwd_column(V, S, a, b, c, o, ip, c0, c1):
    """`total_fwd` at every point of a tile, with the same additions in the same types,
    innermost over the points: one float64 block for the partial sums, one for the pending
    halves (the generated form of the flat body allocates a row per partial sum: twice the
    time of a small tape's batched replay)."""
    x = view(V, S, a)
    y = view(V, S, o)
    out = y[0]
    n = x.shape[0]
    if n < 8:
        acc = np.zeros(out.size, np.float64)
        for i in range(n):
            row = x[i]
            for p in range(out.size):
                acc[p] += row[p]
        for p in range(out.size):
            out[p] = c0 * acc[p]
        return
    parts = np.empty((8, out.size), np.float64)
    if n <= 128:
        _column_run(x, 0, n, parts, out)
        for p in range(out.size):
            out[p] = c0 * out[p]
        return
    pending = np.empty((64, out.size), x.dtype)     # `_pairwise_total`'s walk
    top = 0
    lo = 0
    while lo < n:
        start = 0
        m = n
        path = 0
        depth = 0
        while m > 128:
            half = m // 16 * 8
            path = path * 2
            if lo < start + half:
                m = half
            else:
                start += half
                m -= half
                path += 1
            depth += 1
        _column_run(x, lo, m, parts, pending[top])
        climbing = True
        for level in range(depth):
            if climbing:
                if path % 2 == 1:
                    below = pending[top - 1]
                    above = pending[top]
                    for p in range(below.size):
                        below[p] = below[p] + above[p]
                    top -= 1
                    path = path // 2
                else:
                    top += 1
                    climbing = False
        lo += m
    for p in range(out.size):
        out[p] = c0 * pending[0, p]


@total.rule("fwd", layout="cuda")
def total_fwd_cuda(V, S, a, b, c, o, ip, c0, c1):
    x = view(V, S, a)
    y = view(V, S, o)
    acc = 0.0
    for i in range(x.size):
        acc += x[i]
    y[0] = c0 * acc


@total.vjp
def total_vjp(V, G, S, NEED, a, b, c, o, ip, c0, c1):
    if NEED[a]:
        gx = view(G, S, a)
        gy = view(G, S, o)
        g = c0 * gy[0]
        for i in range(gx.size):
            gx[i] += g


@total.rule("vjp_first", layout="flat")
def total_vjp_first(V, G, S, NEED, a, b, c, o, ip, c0, c1, first):
    """`total_vjp` for the reverse sweep that assigns first writes (see `core.codegen`): with
    bit 0 of `first` set, it assigns the operand's adjoint instead of adding to it."""
    if (first & 1) == 0:
        total_vjp(V, G, S, NEED, a, b, c, o, ip, c0, c1)
        return
    gx = view(G, S, a)
    gy = view(G, S, o)
    g = c0 * gy[0]
    for i in range(gx.size):
        gx[i] = g


@segsumsq.fwd
def segsumsq_fwd(V, S, a, b, c, o, ip, c0, c1):
    x = view(V, S, a)
    y = view(V, S, o)
    y[:] = 0.0
    for i in range(x.size):
        y[ip[i]] += c0 * (x[i] * x[i])


@segsumsq.vjp
def segsumsq_vjp(V, G, S, NEED, a, b, c, o, ip, c0, c1):
    if NEED[a]:
        x = view(V, S, a)
        gx = view(G, S, a)
        gy = view(G, S, o)
        for i in range(gx.size):
            gx[i] += (c0 * gy[ip[i]]) * (2.0 * x[i])


@segsumsq.jvp
def segsumsq_jvp(V, T, S, a, b, c, o, ip, c0, c1):
    x = view(V, S, a)
    tx = view(T, S, a)
    ty = view(T, S, o)
    ty[:] = 0.0
    for i in range(x.size):
        ty[ip[i]] += c0 * ((2.0 * x[i]) * tx[i])


@segsumsq.vjp_jvp
def segsumsq_vjp_jvp(V, T, G, TG, S, NEED, a, b, c, o, ip, c0, c1):
    if NEED[a]:
        x = view(V, S, a)
        tx = view(T, S, a)
        gy = view(G, S, o)
        tgy = view(TG, S, o)
        tgx = view(TG, S, a)
        for i in range(x.size):
            tgx[i] += (c0 * tgy[ip[i]]) * (2.0 * x[i]) + (c0 * gy[ip[i]]) * 2.0 * tx[i]
