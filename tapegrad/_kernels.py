"""Interpreter kernels of the structural primitives (gather, reductions, matmul, ...).

Elementwise primitives are scalar expressions in the registry, turned into loops by the code
generator. The primitives here need loops of their own, so each has four njit kernels with one
calling convention, which the generated interpreters call by name:

    fwd(V, S, a, b, c, o, ip, c0, c1)                    writes slot o of V
    vjp(V, G, S, NEED, a, b, c, o, ip, c0, c1)           adds the adjoint of o into G's operands
    jvp(V, T, S, a, b, c, o, ip, c0, c1)                 writes the tangent of o into T
    vjp_jvp(V, T, G, TG, S, NEED, a, b, c, o, ip, c0, c1) tangent of vjp (second order)

A linear primitive (`linear=True` in the registry: gather, window, segsum, total, pack) has only
`_fwd` and `_vjp`: its JVP is its forward on tangents and the tangent of its VJP is its VJP on
adjoint tangents, which the code generator writes as such.

V, G, T, TG are flat buffers; S[s] = (offset, size) is the slot table; a, b, c are operand
slots (-1 when unused); ip is the entry's integer payload; c0, c1 its float constants; NEED[s]
says whether slot s needs an adjoint. Views are sliced first, then indexed (see DESIGN.md:
`buf[off + i]` with a runtime offset does not vectorise).
"""
import numpy as np

from ._jit import jit


@jit
def _v(V, S, s):
    return V[S[s, 0]:S[s, 0] + S[s, 1]]


# ---- gather: y[i] = x[ip[i]] (broadcast, transpose, indexing) --------------------------------

@jit
def gather_fwd(V, S, a, b, c, o, ip, c0, c1):
    x = _v(V, S, a)
    y = _v(V, S, o)
    for i in range(y.size):
        y[i] = x[ip[i]]


@jit
def gather_vjp(V, G, S, NEED, a, b, c, o, ip, c0, c1):
    if NEED[a]:
        gx = _v(G, S, a)
        gy = _v(G, S, o)
        for i in range(gy.size):
            gx[ip[i]] += gy[i]


# ---- gather difference: y[i] = x[ip[i]] - x[ip[n + i]] (x[I] - x[J] in one entry) --------

@jit
def gather_diff_fwd(V, S, a, b, c, o, ip, c0, c1):
    x = _v(V, S, a)
    y = _v(V, S, o)
    n = y.size
    for i in range(n):
        y[i] = x[ip[i]] - x[ip[n + i]]


@jit
def gather_diff_vjp(V, G, S, NEED, a, b, c, o, ip, c0, c1):
    if NEED[a]:
        gx = _v(G, S, a)
        gy = _v(G, S, o)
        n = gy.size
        for i in range(n):
            gx[ip[i]] += gy[i]
            gx[ip[n + i]] -= gy[i]


# ---- window: y[i] = x[ip[0] + i * ip[1]] (slices) ------------------------------------------

@jit
def window_fwd(V, S, a, b, c, o, ip, c0, c1):
    x = _v(V, S, a)
    y = _v(V, S, o)
    start, step = ip[0], ip[1]
    for i in range(y.size):
        y[i] = x[start + i * step]


@jit
def window_vjp(V, G, S, NEED, a, b, c, o, ip, c0, c1):
    if NEED[a]:
        gx = _v(G, S, a)
        gy = _v(G, S, o)
        start, step = ip[0], ip[1]
        for i in range(gy.size):
            gx[start + i * step] += gy[i]


# ---- scaled segment sum: y[ip[i]] += c0 * x[i] (sum and mean over axes) --------------------

@jit
def segsum_fwd(V, S, a, b, c, o, ip, c0, c1):
    x = _v(V, S, a)
    y = _v(V, S, o)
    y[:] = 0.0
    for i in range(x.size):
        y[ip[i]] += c0 * x[i]


@jit
def segsum_vjp(V, G, S, NEED, a, b, c, o, ip, c0, c1):
    if NEED[a]:
        gx = _v(G, S, a)
        gy = _v(G, S, o)
        for i in range(gx.size):
            gx[i] += c0 * gy[ip[i]]


# ---- segment sum of squares: y[ip[i]] += c0 * x[i]^2 (sum(x * x, axis) as one entry) --------
# Rounded as the square and the segment sum it replaces: each product is formed, then added.

@jit
def segsumsq_fwd(V, S, a, b, c, o, ip, c0, c1):
    x = _v(V, S, a)
    y = _v(V, S, o)
    y[:] = 0.0
    for i in range(x.size):
        y[ip[i]] += c0 * (x[i] * x[i])


@jit
def segsumsq_vjp(V, G, S, NEED, a, b, c, o, ip, c0, c1):
    if NEED[a]:
        x = _v(V, S, a)
        gx = _v(G, S, a)
        gy = _v(G, S, o)
        for i in range(gx.size):
            gx[i] += (c0 * gy[ip[i]]) * (2.0 * x[i])


@jit
def segsumsq_jvp(V, T, S, a, b, c, o, ip, c0, c1):
    x = _v(V, S, a)
    tx = _v(T, S, a)
    ty = _v(T, S, o)
    ty[:] = 0.0
    for i in range(x.size):
        ty[ip[i]] += c0 * ((2.0 * x[i]) * tx[i])


@jit
def segsumsq_vjp_jvp(V, T, G, TG, S, NEED, a, b, c, o, ip, c0, c1):
    if NEED[a]:
        x = _v(V, S, a)
        tx = _v(T, S, a)
        gy = _v(G, S, o)
        tgy = _v(TG, S, o)
        tgx = _v(TG, S, a)
        for i in range(x.size):
            tgx[i] += (c0 * tgy[ip[i]]) * (2.0 * x[i]) + (c0 * gy[ip[i]]) * 2.0 * tx[i]


# ---- scaled total: y = c0 * sum(x) (sum and mean of everything) -----------------------------

@jit
def total_fwd(V, S, a, b, c, o, ip, c0, c1):
    x = _v(V, S, a)
    acc = 0.0
    for i in range(x.size):
        acc += x[i]
    _v(V, S, o)[0] = c0 * acc


@jit
def total_vjp(V, G, S, NEED, a, b, c, o, ip, c0, c1):
    if NEED[a]:
        gx = _v(G, S, a)
        g = c0 * _v(G, S, o)[0]
        for i in range(gx.size):
            gx[i] += g


@jit
def total_vjp_first(V, G, S, NEED, a, b, c, o, ip, c0, c1, first):
    """`total_vjp` for `backward_first` (see _codegen): bit 0 of `first` set, it assigns the
    operand's adjoint instead of adding to it."""
    if (first & 1) == 0:
        total_vjp(V, G, S, NEED, a, b, c, o, ip, c0, c1)
        return
    _v(G, S, a)[:] = c0 * _v(G, S, o)[0]


# ---- segment max / min: ties share the gradient evenly (PyTorch amax, JAX max) -------------

@jit
def _segext_fwd(V, S, a, o, ip, sign):
    x = _v(V, S, a)
    y = _v(V, S, o)
    y[:] = -np.inf
    for i in range(x.size):
        s = ip[i]
        v = sign * x[i]
        if v > y[s] or v != v:
            y[s] = v
    for s in range(y.size):
        y[s] = sign * y[s]


@jit
def _segext_weights(V, S, a, o, ip):
    """w[i] = 1/(number of ties) where x[i] attains its segment's extreme, else 0."""
    x = _v(V, S, a)
    y = _v(V, S, o)
    count = np.zeros(y.size)
    for i in range(x.size):
        if x[i] == y[ip[i]]:
            count[ip[i]] += 1.0
    w = np.zeros(x.size)
    for i in range(x.size):
        if x[i] == y[ip[i]]:
            w[i] = 1.0 / count[ip[i]]
    return w


@jit
def _segext_vjp(V, G, S, NEED, a, o, ip):
    if NEED[a]:
        w = _segext_weights(V, S, a, o, ip)
        gx = _v(G, S, a)
        gy = _v(G, S, o)
        for i in range(gx.size):
            gx[i] += w[i] * gy[ip[i]]


@jit
def _segext_jvp(V, T, S, a, o, ip):
    w = _segext_weights(V, S, a, o, ip)
    tx = _v(T, S, a)
    ty = _v(T, S, o)
    ty[:] = 0.0
    for i in range(tx.size):
        ty[ip[i]] += w[i] * tx[i]


@jit
def segmax_fwd(V, S, a, b, c, o, ip, c0, c1):
    _segext_fwd(V, S, a, o, ip, 1.0)


@jit
def segmax_vjp(V, G, S, NEED, a, b, c, o, ip, c0, c1):
    _segext_vjp(V, G, S, NEED, a, o, ip)


@jit
def segmax_jvp(V, T, S, a, b, c, o, ip, c0, c1):
    _segext_jvp(V, T, S, a, o, ip)


@jit
def segmax_vjp_jvp(V, T, G, TG, S, NEED, a, b, c, o, ip, c0, c1):
    _segext_vjp(V, TG, S, NEED, a, o, ip)


@jit
def segmin_fwd(V, S, a, b, c, o, ip, c0, c1):
    _segext_fwd(V, S, a, o, ip, -1.0)


@jit
def segmin_vjp(V, G, S, NEED, a, b, c, o, ip, c0, c1):
    _segext_vjp(V, G, S, NEED, a, o, ip)


@jit
def segmin_jvp(V, T, S, a, b, c, o, ip, c0, c1):
    _segext_jvp(V, T, S, a, o, ip)


@jit
def segmin_vjp_jvp(V, T, G, TG, S, NEED, a, b, c, o, ip, c0, c1):
    _segext_vjp(V, TG, S, NEED, a, o, ip)


# ---- segment product: exact at zeros (no division by a zero factor) -------------------------

@jit
def segprod_fwd(V, S, a, b, c, o, ip, c0, c1):
    x = _v(V, S, a)
    y = _v(V, S, o)
    y[:] = 1.0
    for i in range(x.size):
        y[ip[i]] *= x[i]


@jit
def _prod_parts(x, ip, nseg):
    """Per segment: the number of zero factors and the product of the nonzero ones."""
    zeros = np.zeros(nseg, np.int64)
    nonzero = np.ones(nseg)
    for i in range(x.size):
        if x[i] == 0.0:
            zeros[ip[i]] += 1
        else:
            nonzero[ip[i]] *= x[i]
    return zeros, nonzero


@jit
def _prod_others(x, ip, zeros, nonzero):
    """d[i] = product of the other factors of x[i]'s segment."""
    d = np.zeros(x.size)
    for i in range(x.size):
        s = ip[i]
        if zeros[s] == 0:
            d[i] = nonzero[s] / x[i]
        elif zeros[s] == 1 and x[i] == 0.0:
            d[i] = nonzero[s]
    return d


@jit
def segprod_vjp(V, G, S, NEED, a, b, c, o, ip, c0, c1):
    if NEED[a]:
        x = _v(V, S, a)
        zeros, nonzero = _prod_parts(x, ip, S[o, 1])
        d = _prod_others(x, ip, zeros, nonzero)
        gx = _v(G, S, a)
        gy = _v(G, S, o)
        for i in range(x.size):
            gx[i] += gy[ip[i]] * d[i]


@jit
def segprod_jvp(V, T, S, a, b, c, o, ip, c0, c1):
    x = _v(V, S, a)
    zeros, nonzero = _prod_parts(x, ip, S[o, 1])
    d = _prod_others(x, ip, zeros, nonzero)
    tx = _v(T, S, a)
    ty = _v(T, S, o)
    ty[:] = 0.0
    for i in range(x.size):
        ty[ip[i]] += d[i] * tx[i]


@jit
def segprod_vjp_jvp(V, T, G, TG, S, NEED, a, b, c, o, ip, c0, c1):
    """tg[i] += tgy * d[i] + gy * sum_{j != i} t[j] * (product without i and j)."""
    if not NEED[a]:
        return
    x = _v(V, S, a)
    nseg = S[o, 1]
    zeros, nonzero = _prod_parts(x, ip, nseg)
    d = _prod_others(x, ip, zeros, nonzero)
    tx = _v(T, S, a)
    gy = _v(G, S, o)
    tgy = _v(TG, S, o)
    tgx = _v(TG, S, a)
    # Per segment: sum of t[j]/x[j] over nonzero x[j], and the tangent of the zero factors.
    ratio = np.zeros(nseg)
    tzero = np.zeros(nseg)
    for j in range(x.size):
        if x[j] == 0.0:
            tzero[ip[j]] += tx[j]
        else:
            ratio[ip[j]] += tx[j] / x[j]
    for i in range(x.size):
        s = ip[i]
        if zeros[s] == 0:
            cross = d[i] * (ratio[s] - tx[i] / x[i])
        elif zeros[s] == 1:
            if x[i] == 0.0:  # others of i are all nonzero
                cross = d[i] * ratio[s]
            else:  # the only surviving term takes the zero factor's tangent
                cross = nonzero[s] / x[i] * tzero[s]
        elif zeros[s] == 2 and x[i] == 0.0:
            cross = nonzero[s] * (tzero[s] - tx[i])
        else:
            cross = 0.0
        tgx[i] += tgy[s] * d[i] + gy[s] * cross


# ---- batched matmul: ip = (batch, m, k, n, a_batch_stride, b_batch_stride, a_const, b_const) ---

@jit
def matmul_fwd(V, S, a, b, c, o, ip, c0, c1):
    batch, m, k, n, sa, sb = ip[0], ip[1], ip[2], ip[3], ip[4], ip[5]
    A = _v(V, S, a)
    B = _v(V, S, b)
    Y = _v(V, S, o)
    for p in range(batch):
        np.dot(A[p * sa:p * sa + m * k].reshape((m, k)), B[p * sb:p * sb + k * n].reshape((k, n)),
               Y[p * m * n:(p + 1) * m * n].reshape((m, n)))


@jit
def _matmul_vjp(V, A_src, B_src, GA_dst, GB_dst, GY_src, S, NEED, a, b, o, ip):
    """GA += GY @ B^T, GB += A^T @ GY, with A, B read from A_src/B_src (V or T).

    A matrix-vector product (n == 1: A @ x, or m == 1: x @ B) gets vector operands for the
    adjoint of the matrix's partner, so that np.dot calls BLAS gemv, as numpy does for
    `X.T @ r`, not gemm with one column. Whether that is faster is up to the BLAS: issue #3
    saw 254 against 180 µs (X 10000 x 100); numba with scipy's OpenBLAS later measured the two
    forms equal, in cache (X 2000 x 100: 27 µs) and memory-bound (10000 x 100: 275 µs)."""
    batch, m, k, n, sa, sb = ip[0], ip[1], ip[2], ip[3], ip[4], ip[5]
    A = _v(A_src, S, a)
    B = _v(B_src, S, b)
    GY = _v(GY_src, S, o)
    for p in range(batch):
        gy = GY[p * m * n:(p + 1) * m * n]
        Ap = A[p * sa:p * sa + m * k].reshape((m, k))
        Bp = B[p * sb:p * sb + k * n].reshape((k, n))
        if NEED[a]:
            ga = _v(GA_dst, S, a)[p * sa:p * sa + m * k]
            if m == 1:
                ga += np.dot(Bp, gy)
            else:
                ga2 = ga.reshape((m, k))
                ga2 += np.dot(gy.reshape((m, n)), Bp.T)
        if NEED[b]:
            gb = _v(GB_dst, S, b)[p * sb:p * sb + k * n]
            if n == 1:
                gb += np.dot(Ap.T, gy)
            else:
                gb2 = gb.reshape((k, n))
                gb2 += np.dot(Ap.T, gy.reshape((m, n)))


@jit
def matmul_vjp(V, G, S, NEED, a, b, c, o, ip, c0, c1):
    _matmul_vjp(V, V, V, G, G, G, S, NEED, a, b, o, ip)


@jit
def matmul_jvp(V, T, S, a, b, c, o, ip, c0, c1):
    batch, m, k, n, sa, sb = ip[0], ip[1], ip[2], ip[3], ip[4], ip[5]
    A = _v(V, S, a)
    B = _v(V, S, b)
    TA = _v(T, S, a)
    TB = _v(T, S, b)
    TY = _v(T, S, o)
    for p in range(batch):
        ty = TY[p * m * n:(p + 1) * m * n].reshape((m, n))
        ty[:] = np.dot(TA[p * sa:p * sa + m * k].reshape((m, k)),
                       B[p * sb:p * sb + k * n].reshape((k, n)))
        ty += np.dot(A[p * sa:p * sa + m * k].reshape((m, k)),
                     TB[p * sb:p * sb + k * n].reshape((k, n)))


@jit
def matmul_vjp_jvp(V, T, G, TG, S, NEED, a, b, c, o, ip, c0, c1):
    # Bilinear: d(GY B^T) = TGY B^T + GY TB^T, and likewise for A^T GY.
    _matmul_vjp(V, V, V, TG, TG, TG, S, NEED, a, b, o, ip)
    _matmul_vjp(V, T, T, TG, TG, G, S, NEED, a, b, o, ip)


# ---- pack: y = concatenation of the flat operands listed in ip (cat, stack) -----------------

@jit
def pack_fwd(V, S, a, b, c, o, ip, c0, c1):
    y = _v(V, S, o)
    start = 0
    for j in range(ip.size):
        x = _v(V, S, ip[j])
        y[start:start + x.size] = x
        start += x.size


@jit
def pack_vjp(V, G, S, NEED, a, b, c, o, ip, c0, c1):
    gy = _v(G, S, o)
    start = 0
    for j in range(ip.size):
        n = S[ip[j], 1]
        if NEED[ip[j]]:
            _v(G, S, ip[j])[:] += gy[start:start + n]
        start += n


# ---- where: y = b if a else c ----------------------------------------------------------------

@jit
def where_fwd(V, S, a, b, c, o, ip, c0, c1):
    cond = _v(V, S, a)
    x = _v(V, S, b)
    z = _v(V, S, c)
    y = _v(V, S, o)
    for i in range(y.size):
        y[i] = x[i] if cond[i] != 0.0 else z[i]


@jit
def where_vjp(V, G, S, NEED, a, b, c, o, ip, c0, c1):
    cond = _v(V, S, a)
    gy = _v(G, S, o)
    if NEED[b]:
        gx = _v(G, S, b)
        for i in range(gy.size):
            if cond[i] != 0.0:
                gx[i] += gy[i]
    if NEED[c]:
        gz = _v(G, S, c)
        for i in range(gy.size):
            if cond[i] == 0.0:
                gz[i] += gy[i]


@jit
def where_jvp(V, T, S, a, b, c, o, ip, c0, c1):
    cond = _v(V, S, a)
    tx = _v(T, S, b)
    tz = _v(T, S, c)
    ty = _v(T, S, o)
    for i in range(ty.size):
        ty[i] = tx[i] if cond[i] != 0.0 else tz[i]


@jit
def where_vjp_jvp(V, T, G, TG, S, NEED, a, b, c, o, ip, c0, c1):
    where_vjp(V, TG, S, NEED, a, b, c, o, ip, c0, c1)
