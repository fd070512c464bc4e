"""Batched interpreter kernels of the structural primitives: the column layout.

The same primitives and calling convention as `_kernels`, over a tile of points: every buffer
is (rows, tile), a slot's value is its rows, and the innermost loop runs over the tile's points
so that it vectorises (DESIGN.md: the column layout). A matmul per point becomes a small GEMM
whose innermost loop is over points. Rows are copied by explicit loops, never by slice
assignment: operands are views of one buffer, and numba copies a slice source that may overlap
its target into a temporary first (measured 3x slower here).
"""
import numpy as np

from ._jit import jit


@jit
def _v(V, S, s):
    return V[S[s, 0]:S[s, 0] + S[s, 1]]


@jit
def clear(G, S, s):
    """Zero the rows of slot s (the batched reverse sweep clears each adjoint it has used)."""
    g = _v(G, S, s)
    for i in range(g.shape[0]):
        gi = g[i]
        for p in range(gi.size):
            gi[p] = 0.0


# ---- gather / segment sum / total -------------------------------------------------------------

@jit
def gather_fwd(V, S, a, b, c, o, ip, c0, c1):
    x = _v(V, S, a)
    y = _v(V, S, o)
    for i in range(y.shape[0]):
        xi = x[ip[i]]
        yi = y[i]
        for p in range(yi.size):
            yi[p] = xi[p]


@jit
def gather_vjp(V, G, S, NEED, a, b, c, o, ip, c0, c1):
    if NEED[a]:
        gx = _v(G, S, a)
        gy = _v(G, S, o)
        for i in range(gy.shape[0]):
            gxi = gx[ip[i]]
            gyi = gy[i]
            for p in range(gyi.size):
                gxi[p] += gyi[p]


@jit
def gather_diff_fwd(V, S, a, b, c, o, ip, c0, c1):
    x = _v(V, S, a)
    y = _v(V, S, o)
    n = y.shape[0]
    for i in range(n):
        xi = x[ip[i]]
        xj = x[ip[n + i]]
        yi = y[i]
        for p in range(yi.size):
            yi[p] = xi[p] - xj[p]


@jit
def gather_diff_vjp(V, G, S, NEED, a, b, c, o, ip, c0, c1):
    if NEED[a]:
        gx = _v(G, S, a)
        gy = _v(G, S, o)
        n = gy.shape[0]
        for i in range(n):
            gxi = gx[ip[i]]
            gyi = gy[i]
            for p in range(gyi.size):
                gxi[p] += gyi[p]
            gxj = gx[ip[n + i]]         # separate loops: ip[i] == ip[n + i] is allowed
            for p in range(gyi.size):
                gxj[p] -= gyi[p]


@jit
def window_fwd(V, S, a, b, c, o, ip, c0, c1):
    x = _v(V, S, a)
    y = _v(V, S, o)
    for i in range(y.shape[0]):
        xi = x[ip[0] + i * ip[1]]
        yi = y[i]
        for p in range(yi.size):
            yi[p] = xi[p]


@jit
def window_vjp(V, G, S, NEED, a, b, c, o, ip, c0, c1):
    if NEED[a]:
        gx = _v(G, S, a)
        gy = _v(G, S, o)
        for i in range(gy.shape[0]):
            gxi = gx[ip[0] + i * ip[1]]
            gyi = gy[i]
            for p in range(gyi.size):
                gxi[p] += gyi[p]


@jit
def segsum_fwd(V, S, a, b, c, o, ip, c0, c1):
    x = _v(V, S, a)
    y = _v(V, S, o)
    y[:] = 0.0
    for i in range(x.shape[0]):
        yi = y[ip[i]]
        xi = x[i]
        for p in range(xi.size):
            yi[p] += c0 * xi[p]


@jit
def segsum_vjp(V, G, S, NEED, a, b, c, o, ip, c0, c1):
    if NEED[a]:
        gx = _v(G, S, a)
        gy = _v(G, S, o)
        for i in range(gx.shape[0]):
            gxi = gx[i]
            gyi = gy[ip[i]]
            for p in range(gxi.size):
                gxi[p] += c0 * gyi[p]


@jit
def total_fwd(V, S, a, b, c, o, ip, c0, c1):
    x = _v(V, S, a)
    y = _v(V, S, o)[0]
    y[:] = 0.0
    for i in range(x.shape[0]):
        xi = x[i]
        for p in range(y.size):
            y[p] += xi[p]
    for p in range(y.size):
        y[p] *= c0


@jit
def total_vjp(V, G, S, NEED, a, b, c, o, ip, c0, c1):
    if NEED[a]:
        gx = _v(G, S, a)
        gy = _v(G, S, o)[0]
        for i in range(gx.shape[0]):
            gxi = gx[i]
            for p in range(gy.size):
                gxi[p] += c0 * gy[p]


# ---- segment sum of squares: y[ip[i]] += c0 * x[i]^2 per point ---------------------------------

@jit
def segsumsq_fwd(V, S, a, b, c, o, ip, c0, c1):
    x = _v(V, S, a)
    y = _v(V, S, o)
    y[:] = 0.0
    for i in range(x.shape[0]):
        yi = y[ip[i]]
        xi = x[i]
        for p in range(xi.size):
            yi[p] += c0 * (xi[p] * xi[p])


@jit
def segsumsq_vjp(V, G, S, NEED, a, b, c, o, ip, c0, c1):
    if NEED[a]:
        x = _v(V, S, a)
        gx = _v(G, S, a)
        gy = _v(G, S, o)
        for i in range(gx.shape[0]):
            xi = x[i]
            gxi = gx[i]
            gyi = gy[ip[i]]
            for p in range(gxi.size):
                gxi[p] += (c0 * gyi[p]) * (2.0 * xi[p])


@jit
def segsumsq_jvp(V, T, S, a, b, c, o, ip, c0, c1):
    x = _v(V, S, a)
    tx = _v(T, S, a)
    ty = _v(T, S, o)
    ty[:] = 0.0
    for i in range(x.shape[0]):
        xi = x[i]
        txi = tx[i]
        tyi = ty[ip[i]]
        for p in range(xi.size):
            tyi[p] += c0 * ((2.0 * xi[p]) * txi[p])


@jit
def segsumsq_vjp_jvp(V, T, G, TG, S, NEED, a, b, c, o, ip, c0, c1):
    if NEED[a]:
        x = _v(V, S, a)
        tx = _v(T, S, a)
        gy = _v(G, S, o)
        tgy = _v(TG, S, o)
        tgx = _v(TG, S, a)
        for i in range(x.shape[0]):
            xi = x[i]
            txi = tx[i]
            gyi = gy[ip[i]]
            tgyi = tgy[ip[i]]
            tgxi = tgx[i]
            for p in range(xi.size):
                tgxi[p] += (c0 * tgyi[p]) * (2.0 * xi[p]) + (c0 * gyi[p]) * 2.0 * txi[p]


# ---- segment max / min: ties share the gradient evenly ----------------------------------------

@jit
def _segext_fwd(V, S, a, o, ip, sign):
    x = _v(V, S, a)
    y = _v(V, S, o)
    y[:] = -np.inf
    for i in range(x.shape[0]):
        yi = y[ip[i]]
        xi = x[i]
        for p in range(xi.size):
            v = sign * xi[p]
            if v > yi[p] or v != v:
                yi[p] = v
    for s in range(y.shape[0]):
        for p in range(y.shape[1]):
            y[s, p] = sign * y[s, p]


@jit
def _segext_weights(V, S, a, o, ip):
    x = _v(V, S, a)
    y = _v(V, S, o)
    count = np.zeros(y.shape)
    w = np.zeros(x.shape)
    for i in range(x.shape[0]):
        for p in range(x.shape[1]):
            if x[i, p] == y[ip[i], p]:
                count[ip[i], p] += 1.0
    for i in range(x.shape[0]):
        for p in range(x.shape[1]):
            if x[i, p] == y[ip[i], p]:
                w[i, p] = 1.0 / count[ip[i], p]
    return w


@jit
def _segext_vjp(V, G, S, NEED, a, o, ip):
    if NEED[a]:
        w = _segext_weights(V, S, a, o, ip)
        gx = _v(G, S, a)
        gy = _v(G, S, o)
        for i in range(gx.shape[0]):
            for p in range(gx.shape[1]):
                gx[i, p] += w[i, p] * gy[ip[i], p]


@jit
def _segext_jvp(V, T, S, a, o, ip):
    w = _segext_weights(V, S, a, o, ip)
    tx = _v(T, S, a)
    ty = _v(T, S, o)
    ty[:] = 0.0
    for i in range(tx.shape[0]):
        for p in range(tx.shape[1]):
            ty[ip[i], p] += w[i, p] * tx[i, p]


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


# ---- segment product: exact at zeros, per point -----------------------------------------------

@jit
def segprod_fwd(V, S, a, b, c, o, ip, c0, c1):
    x = _v(V, S, a)
    y = _v(V, S, o)
    y[:] = 1.0
    for i in range(x.shape[0]):
        for p in range(x.shape[1]):
            y[ip[i], p] *= x[i, p]


@jit
def _prod_others(x, ip, nseg):
    """d[i, p] = product of the other factors of x[i, p]'s segment (exact at zeros)."""
    zeros = np.zeros((nseg, x.shape[1]), np.int64)
    nonzero = np.ones((nseg, x.shape[1]))
    for i in range(x.shape[0]):
        for p in range(x.shape[1]):
            if x[i, p] == 0.0:
                zeros[ip[i], p] += 1
            else:
                nonzero[ip[i], p] *= x[i, p]
    d = np.zeros(x.shape)
    for i in range(x.shape[0]):
        s = ip[i]
        for p in range(x.shape[1]):
            if zeros[s, p] == 0:
                d[i, p] = nonzero[s, p] / x[i, p]
            elif zeros[s, p] == 1 and x[i, p] == 0.0:
                d[i, p] = nonzero[s, p]
    return d, zeros, nonzero


@jit
def segprod_vjp(V, G, S, NEED, a, b, c, o, ip, c0, c1):
    if NEED[a]:
        x = _v(V, S, a)
        d, _, _ = _prod_others(x, ip, S[o, 1])
        gx = _v(G, S, a)
        gy = _v(G, S, o)
        for i in range(x.shape[0]):
            for p in range(x.shape[1]):
                gx[i, p] += gy[ip[i], p] * d[i, p]


@jit
def segprod_jvp(V, T, S, a, b, c, o, ip, c0, c1):
    x = _v(V, S, a)
    d, _, _ = _prod_others(x, ip, S[o, 1])
    tx = _v(T, S, a)
    ty = _v(T, S, o)
    ty[:] = 0.0
    for i in range(x.shape[0]):
        for p in range(x.shape[1]):
            ty[ip[i], p] += d[i, p] * tx[i, p]


@jit
def segprod_vjp_jvp(V, T, G, TG, S, NEED, a, b, c, o, ip, c0, c1):
    if not NEED[a]:
        return
    x = _v(V, S, a)
    nseg = S[o, 1]
    d, zeros, nonzero = _prod_others(x, ip, nseg)
    tx = _v(T, S, a)
    gy = _v(G, S, o)
    tgy = _v(TG, S, o)
    tgx = _v(TG, S, a)
    ratio = np.zeros((nseg, x.shape[1]))
    tzero = np.zeros((nseg, x.shape[1]))
    for j in range(x.shape[0]):
        for p in range(x.shape[1]):
            if x[j, p] == 0.0:
                tzero[ip[j], p] += tx[j, p]
            else:
                ratio[ip[j], p] += tx[j, p] / x[j, p]
    for i in range(x.shape[0]):
        s = ip[i]
        for p in range(x.shape[1]):
            z = zeros[s, p]
            if z == 0:
                cross = d[i, p] * (ratio[s, p] - tx[i, p] / x[i, p])
            elif z == 1:
                if x[i, p] == 0.0:
                    cross = d[i, p] * ratio[s, p]
                else:
                    cross = nonzero[s, p] / x[i, p] * tzero[s, p]
            elif z == 2 and x[i, p] == 0.0:
                cross = nonzero[s, p] * (tzero[s, p] - tx[i, p])
            else:
                cross = 0.0
            tgx[i, p] += tgy[s, p] * d[i, p] + gy[s, p] * cross


# ---- matmul per point: a small GEMM whose innermost loop is over the tile ---------------------
# ip = (batch, m, k, n, a_batch_stride, b_batch_stride, a_const, b_const)

@jit
def _mm_acc(A, B, Y, sa, sb, sy, batch, m, k, n, ta, tb, a_const, b_const):
    """Y[q,i,j] += sum_l A'[q,i,l] B'[q,l,j] per point, A' = A or A^T (ta), B' likewise (tb).

    Shapes are those of the product: A' is (m, k), B' (k, n), Y (m, n) per batch entry q;
    sa, sb, sy are the batch strides (0 for a matrix shared by the batch). A constant operand
    (the same at every point, like a network's weights) is read once per element, not per point.
    """
    for q in range(batch):
        for i in range(m):
            for j in range(n):
                y = Y[q * sy + i * n + j]
                for l in range(k):
                    ai = q * sa + (l * m + i if ta else i * k + l)
                    bi = q * sb + (j * k + l if tb else l * n + j)
                    a_row = A[ai]
                    b_row = B[bi]
                    if b_const:
                        b = b_row[0]
                        for p in range(y.size):
                            y[p] += a_row[p] * b
                    elif a_const:
                        a = a_row[0]
                        for p in range(y.size):
                            y[p] += a * b_row[p]
                    else:
                        for p in range(y.size):
                            y[p] += a_row[p] * b_row[p]


@jit
def matmul_fwd(V, S, a, b, c, o, ip, c0, c1):
    batch, m, k, n, sa, sb = ip[0], ip[1], ip[2], ip[3], ip[4], ip[5]
    Y = _v(V, S, o)
    Y[:] = 0.0
    _mm_acc(_v(V, S, a), _v(V, S, b), Y, sa, sb, m * n, batch, m, k, n, False, False,
            ip[6], ip[7])


@jit
def _matmul_vjp(A_src, B_src, GA_dst, GB_dst, GY_src, S, NEED, a, b, o, ip):
    batch, m, k, n, sa, sb = ip[0], ip[1], ip[2], ip[3], ip[4], ip[5]
    GY = _v(GY_src, S, o)
    # a constant operand's rows are the same at every point in V, and zero in T: either way
    # one value per element
    if NEED[a]:   # GA (m, k) += GY (m, n) @ B^T (n, k)
        _mm_acc(GY, _v(B_src, S, b), _v(GA_dst, S, a), m * n, sb, sa, batch, m, n, k, False, True,
                False, ip[7])
    if NEED[b]:   # GB (k, n) += A^T (k, m) @ GY (m, n)
        _mm_acc(_v(A_src, S, a), GY, _v(GB_dst, S, b), sa, m * n, sb, batch, k, m, n, True, False,
                ip[6], False)


@jit
def matmul_vjp(V, G, S, NEED, a, b, c, o, ip, c0, c1):
    _matmul_vjp(V, V, G, G, G, S, NEED, a, b, o, ip)


@jit
def matmul_jvp(V, T, S, a, b, c, o, ip, c0, c1):
    batch, m, k, n, sa, sb = ip[0], ip[1], ip[2], ip[3], ip[4], ip[5]
    TY = _v(T, S, o)
    TY[:] = 0.0
    _mm_acc(_v(T, S, a), _v(V, S, b), TY, sa, sb, m * n, batch, m, k, n, False, False,
            ip[6], ip[7])
    _mm_acc(_v(V, S, a), _v(T, S, b), TY, sa, sb, m * n, batch, m, k, n, False, False,
            ip[6], ip[7])


@jit
def matmul_vjp_jvp(V, T, G, TG, S, NEED, a, b, c, o, ip, c0, c1):
    _matmul_vjp(V, V, TG, TG, TG, S, NEED, a, b, o, ip)
    _matmul_vjp(T, T, TG, TG, G, S, NEED, a, b, o, ip)


# ---- pack / where -----------------------------------------------------------------------------

@jit
def pack_fwd(V, S, a, b, c, o, ip, c0, c1):
    y = _v(V, S, o)
    start = 0
    for j in range(ip.size):
        x = _v(V, S, ip[j])
        for i in range(x.shape[0]):
            xi = x[i]
            yi = y[start + i]
            for p in range(xi.size):
                yi[p] = xi[p]
        start += x.shape[0]


@jit
def pack_vjp(V, G, S, NEED, a, b, c, o, ip, c0, c1):
    gy = _v(G, S, o)
    start = 0
    for j in range(ip.size):
        n = S[ip[j], 1]
        if NEED[ip[j]]:
            gx = _v(G, S, ip[j])
            for i in range(n):
                gxi = gx[i]
                gyi = gy[start + i]
                for p in range(gxi.size):
                    gxi[p] += gyi[p]
        start += n


@jit
def where_fwd(V, S, a, b, c, o, ip, c0, c1):
    cond = _v(V, S, a)
    x = _v(V, S, b)
    z = _v(V, S, c)
    y = _v(V, S, o)
    for i in range(y.shape[0]):
        for p in range(y.shape[1]):
            y[i, p] = x[i, p] if cond[i, p] != 0.0 else z[i, p]


@jit
def where_vjp(V, G, S, NEED, a, b, c, o, ip, c0, c1):
    cond = _v(V, S, a)
    gy = _v(G, S, o)
    if NEED[b]:
        gx = _v(G, S, b)
        for i in range(gy.shape[0]):
            for p in range(gy.shape[1]):
                if cond[i, p] != 0.0:
                    gx[i, p] += gy[i, p]
    if NEED[c]:
        gz = _v(G, S, c)
        for i in range(gy.shape[0]):
            for p in range(gy.shape[1]):
                if cond[i, p] == 0.0:
                    gz[i, p] += gy[i, p]


@jit
def where_jvp(V, T, S, a, b, c, o, ip, c0, c1):
    cond = _v(V, S, a)
    tx = _v(T, S, b)
    tz = _v(T, S, c)
    ty = _v(T, S, o)
    for i in range(ty.shape[0]):
        for p in range(ty.shape[1]):
            ty[i, p] = tx[i, p] if cond[i, p] != 0.0 else tz[i, p]


@jit
def where_vjp_jvp(V, T, G, TG, S, NEED, a, b, c, o, ip, c0, c1):
    where_vjp(V, TG, S, NEED, a, b, c, o, ip, c0, c1)
