"""CUDA device functions of the structural primitives: one point (one thread) at a time.

The same primitives and calling convention as `_kernels` (the per-point CPU kernels), so that
the generated CUDA interpreters (`_codegen_cuda`) dispatch to them exactly as the CPU
interpreters dispatch to `_kernels`:

    fwd(V, S, a, b, c, o, ip, c0, c1)
    vjp(V, G, S, NEED, a, b, c, o, ip, c0, c1)
    jvp(V, T, S, a, b, c, o, ip, c0, c1)
    vjp_jvp(V, T, G, TG, S, NEED, a, b, c, o, ip, c0, c1)

V, G, T, TG are the thread's own column of the (rows, points) buffers in global memory (a
strided 1-D view, see `_cuda`), so these are the CPU per-point kernels with two changes that
real CUDA code needs (the simulator would accept the CPU code as it is):

* no allocation (`np.zeros`) and no `np.dot`: matmul is written out as loops, and the
  per-segment temporaries of segmax/segmin/segprod live in scratch rows at the END of the
  thread's value column V (`_cuda.scratch_rows` sizes them from the tape: `nseg` rows for
  segmax/segmin, `4 * nseg` for segprod). Those rows belong to no slot and are only used
  inside one kernel call;
* a device function may only return an array it was given (NVVM restriction), so slot views
  are sliced inline (`V[S[a, 0]:S[a, 0] + S[a, 1]]`) instead of through a `_v` helper.

Summation orders follow the batched CPU kernels (`_kernels_batched`: a matmul accumulates in
index order from zero), so results agree with the CPU to rounding.
"""
import math

from numba import cuda


def device(fn=None, **options):
    """`cuda.jit(device=True)`; the generated CUDA module binds `jit` to this."""
    if fn is None:
        return lambda f: device(f, **options)
    return cuda.jit(device=True)(fn)


def _v(V, S, s):    # the CPU header binds `_v = K._v`; the CUDA code never calls it
    raise NotImplementedError("device code slices slot views inline")


# ---- gather: y[i] = x[ip[i]] ------------------------------------------------------------------

@cuda.jit(device=True)
def gather_fwd(V, S, a, b, c, o, ip, c0, c1):
    x = V[S[a, 0]:S[a, 0] + S[a, 1]]
    y = V[S[o, 0]:S[o, 0] + S[o, 1]]
    for i in range(y.size):
        y[i] = x[ip[i]]


@cuda.jit(device=True)
def gather_vjp(V, G, S, NEED, a, b, c, o, ip, c0, c1):
    if NEED[a]:
        gx = G[S[a, 0]:S[a, 0] + S[a, 1]]
        gy = G[S[o, 0]:S[o, 0] + S[o, 1]]
        for i in range(gy.size):
            gx[ip[i]] += gy[i]


# ---- gather difference: y[i] = x[ip[i]] - x[ip[n + i]] ---------------------------------------

@cuda.jit(device=True)
def gather_diff_fwd(V, S, a, b, c, o, ip, c0, c1):
    x = V[S[a, 0]:S[a, 0] + S[a, 1]]
    y = V[S[o, 0]:S[o, 0] + S[o, 1]]
    n = y.size
    for i in range(n):
        y[i] = x[ip[i]] - x[ip[n + i]]


@cuda.jit(device=True)
def gather_diff_vjp(V, G, S, NEED, a, b, c, o, ip, c0, c1):
    if NEED[a]:
        gx = G[S[a, 0]:S[a, 0] + S[a, 1]]
        gy = G[S[o, 0]:S[o, 0] + S[o, 1]]
        n = gy.size
        for i in range(n):
            gx[ip[i]] += gy[i]
            gx[ip[n + i]] -= gy[i]


# ---- window: y[i] = x[ip[0] + i * ip[1]] ------------------------------------------------------

@cuda.jit(device=True)
def window_fwd(V, S, a, b, c, o, ip, c0, c1):
    x = V[S[a, 0]:S[a, 0] + S[a, 1]]
    y = V[S[o, 0]:S[o, 0] + S[o, 1]]
    for i in range(y.size):
        y[i] = x[ip[0] + i * ip[1]]


@cuda.jit(device=True)
def window_vjp(V, G, S, NEED, a, b, c, o, ip, c0, c1):
    if NEED[a]:
        gx = G[S[a, 0]:S[a, 0] + S[a, 1]]
        gy = G[S[o, 0]:S[o, 0] + S[o, 1]]
        for i in range(gy.size):
            gx[ip[0] + i * ip[1]] += gy[i]


# ---- scaled segment sum: y[ip[i]] += c0 * x[i] --------------------------------------------------

@cuda.jit(device=True)
def segsum_fwd(V, S, a, b, c, o, ip, c0, c1):
    x = V[S[a, 0]:S[a, 0] + S[a, 1]]
    y = V[S[o, 0]:S[o, 0] + S[o, 1]]
    for s in range(y.size):
        y[s] = 0.0
    for i in range(x.size):
        y[ip[i]] += c0 * x[i]


@cuda.jit(device=True)
def segsum_vjp(V, G, S, NEED, a, b, c, o, ip, c0, c1):
    if NEED[a]:
        gx = G[S[a, 0]:S[a, 0] + S[a, 1]]
        gy = G[S[o, 0]:S[o, 0] + S[o, 1]]
        for i in range(gx.size):
            gx[i] += c0 * gy[ip[i]]


# ---- segment sum of squares: y[ip[i]] += c0 * x[i]^2 ------------------------------------------

@cuda.jit(device=True)
def segsumsq_fwd(V, S, a, b, c, o, ip, c0, c1):
    x = V[S[a, 0]:S[a, 0] + S[a, 1]]
    y = V[S[o, 0]:S[o, 0] + S[o, 1]]
    for s in range(y.size):
        y[s] = 0.0
    for i in range(x.size):
        y[ip[i]] += c0 * (x[i] * x[i])


@cuda.jit(device=True)
def segsumsq_vjp(V, G, S, NEED, a, b, c, o, ip, c0, c1):
    if NEED[a]:
        x = V[S[a, 0]:S[a, 0] + S[a, 1]]
        gx = G[S[a, 0]:S[a, 0] + S[a, 1]]
        gy = G[S[o, 0]:S[o, 0] + S[o, 1]]
        for i in range(gx.size):
            gx[i] += (c0 * gy[ip[i]]) * (2.0 * x[i])


@cuda.jit(device=True)
def segsumsq_jvp(V, T, S, a, b, c, o, ip, c0, c1):
    x = V[S[a, 0]:S[a, 0] + S[a, 1]]
    tx = T[S[a, 0]:S[a, 0] + S[a, 1]]
    ty = T[S[o, 0]:S[o, 0] + S[o, 1]]
    for s in range(ty.size):
        ty[s] = 0.0
    for i in range(x.size):
        ty[ip[i]] += c0 * ((2.0 * x[i]) * tx[i])


@cuda.jit(device=True)
def segsumsq_vjp_jvp(V, T, G, TG, S, NEED, a, b, c, o, ip, c0, c1):
    if NEED[a]:
        x = V[S[a, 0]:S[a, 0] + S[a, 1]]
        tx = T[S[a, 0]:S[a, 0] + S[a, 1]]
        gy = G[S[o, 0]:S[o, 0] + S[o, 1]]
        tgy = TG[S[o, 0]:S[o, 0] + S[o, 1]]
        tgx = TG[S[a, 0]:S[a, 0] + S[a, 1]]
        for i in range(x.size):
            tgx[i] += (c0 * tgy[ip[i]]) * (2.0 * x[i]) + (c0 * gy[ip[i]]) * 2.0 * tx[i]


# ---- scaled total: y = c0 * sum(x) ------------------------------------------------------------

@cuda.jit(device=True)
def total_fwd(V, S, a, b, c, o, ip, c0, c1):
    x = V[S[a, 0]:S[a, 0] + S[a, 1]]
    acc = 0.0
    for i in range(x.size):
        acc += x[i]
    V[S[o, 0]] = c0 * acc


@cuda.jit(device=True)
def total_vjp(V, G, S, NEED, a, b, c, o, ip, c0, c1):
    if NEED[a]:
        gx = G[S[a, 0]:S[a, 0] + S[a, 1]]
        g = c0 * G[S[o, 0]]
        for i in range(gx.size):
            gx[i] += g


# ---- segment max / min: ties share the gradient evenly ------------------------------------------

@cuda.jit(device=True)
def _segext_fwd(V, S, a, o, ip, sign):
    x = V[S[a, 0]:S[a, 0] + S[a, 1]]
    y = V[S[o, 0]:S[o, 0] + S[o, 1]]
    for s in range(y.size):
        y[s] = -math.inf
    for i in range(x.size):
        s = ip[i]
        v = sign * x[i]
        if v > y[s] or v != v:
            y[s] = v
    for s in range(y.size):
        y[s] = sign * y[s]


@cuda.jit(device=True)
def _segext_count(V, S, a, o, ip):
    """Scratch rows W[s] = number of elements attaining segment s's extreme (the tail of V)."""
    x = V[S[a, 0]:S[a, 0] + S[a, 1]]
    y = V[S[o, 0]:S[o, 0] + S[o, 1]]
    nseg = S[o, 1]
    W = V[V.size - nseg:]
    for s in range(nseg):
        W[s] = 0.0
    for i in range(x.size):
        if x[i] == y[ip[i]]:
            W[ip[i]] += 1.0


@cuda.jit(device=True)
def _segext_vjp(V, G, S, NEED, a, o, ip):
    if NEED[a]:
        _segext_count(V, S, a, o, ip)
        x = V[S[a, 0]:S[a, 0] + S[a, 1]]
        y = V[S[o, 0]:S[o, 0] + S[o, 1]]
        W = V[V.size - S[o, 1]:]
        gx = G[S[a, 0]:S[a, 0] + S[a, 1]]
        gy = G[S[o, 0]:S[o, 0] + S[o, 1]]
        for i in range(gx.size):
            w = 1.0 / W[ip[i]] if x[i] == y[ip[i]] else 0.0
            gx[i] += w * gy[ip[i]]


@cuda.jit(device=True)
def _segext_jvp(V, T, S, a, o, ip):
    _segext_count(V, S, a, o, ip)
    x = V[S[a, 0]:S[a, 0] + S[a, 1]]
    y = V[S[o, 0]:S[o, 0] + S[o, 1]]
    W = V[V.size - S[o, 1]:]
    tx = T[S[a, 0]:S[a, 0] + S[a, 1]]
    ty = T[S[o, 0]:S[o, 0] + S[o, 1]]
    for s in range(ty.size):
        ty[s] = 0.0
    for i in range(tx.size):
        w = 1.0 / W[ip[i]] if x[i] == y[ip[i]] else 0.0
        ty[ip[i]] += w * tx[i]


@cuda.jit(device=True)
def segmax_fwd(V, S, a, b, c, o, ip, c0, c1):
    _segext_fwd(V, S, a, o, ip, 1.0)


@cuda.jit(device=True)
def segmax_vjp(V, G, S, NEED, a, b, c, o, ip, c0, c1):
    _segext_vjp(V, G, S, NEED, a, o, ip)


@cuda.jit(device=True)
def segmax_jvp(V, T, S, a, b, c, o, ip, c0, c1):
    _segext_jvp(V, T, S, a, o, ip)


@cuda.jit(device=True)
def segmax_vjp_jvp(V, T, G, TG, S, NEED, a, b, c, o, ip, c0, c1):
    _segext_vjp(V, TG, S, NEED, a, o, ip)


@cuda.jit(device=True)
def segmin_fwd(V, S, a, b, c, o, ip, c0, c1):
    _segext_fwd(V, S, a, o, ip, -1.0)


@cuda.jit(device=True)
def segmin_vjp(V, G, S, NEED, a, b, c, o, ip, c0, c1):
    _segext_vjp(V, G, S, NEED, a, o, ip)


@cuda.jit(device=True)
def segmin_jvp(V, T, S, a, b, c, o, ip, c0, c1):
    _segext_jvp(V, T, S, a, o, ip)


@cuda.jit(device=True)
def segmin_vjp_jvp(V, T, G, TG, S, NEED, a, b, c, o, ip, c0, c1):
    _segext_vjp(V, TG, S, NEED, a, o, ip)


# ---- segment product: exact at zeros ------------------------------------------------------------
# Scratch (tail of V, 4 * nseg rows): zeros count | product of the nonzero factors | sum of
# t/x over nonzero factors | tangent of the zero factors.

@cuda.jit(device=True)
def segprod_fwd(V, S, a, b, c, o, ip, c0, c1):
    x = V[S[a, 0]:S[a, 0] + S[a, 1]]
    y = V[S[o, 0]:S[o, 0] + S[o, 1]]
    for s in range(y.size):
        y[s] = 1.0
    for i in range(x.size):
        y[ip[i]] *= x[i]


@cuda.jit(device=True)
def _prod_parts(V, S, a, o, ip):
    x = V[S[a, 0]:S[a, 0] + S[a, 1]]
    nseg = S[o, 1]
    W = V[V.size - 4 * nseg:]
    for s in range(nseg):
        W[s] = 0.0
        W[nseg + s] = 1.0
    for i in range(x.size):
        if x[i] == 0.0:
            W[ip[i]] += 1.0
        else:
            W[nseg + ip[i]] *= x[i]


@cuda.jit(device=True)
def _prod_other(W, nseg, xi, s):
    """The product of the other factors of an element xi of segment s."""
    zeros = W[s]
    if zeros == 0.0:
        return W[nseg + s] / xi
    if zeros == 1.0 and xi == 0.0:
        return W[nseg + s]
    return 0.0


@cuda.jit(device=True)
def segprod_vjp(V, G, S, NEED, a, b, c, o, ip, c0, c1):
    if NEED[a]:
        _prod_parts(V, S, a, o, ip)
        nseg = S[o, 1]
        W = V[V.size - 4 * nseg:]
        x = V[S[a, 0]:S[a, 0] + S[a, 1]]
        gx = G[S[a, 0]:S[a, 0] + S[a, 1]]
        gy = G[S[o, 0]:S[o, 0] + S[o, 1]]
        for i in range(x.size):
            gx[i] += gy[ip[i]] * _prod_other(W, nseg, x[i], ip[i])


@cuda.jit(device=True)
def segprod_jvp(V, T, S, a, b, c, o, ip, c0, c1):
    _prod_parts(V, S, a, o, ip)
    nseg = S[o, 1]
    W = V[V.size - 4 * nseg:]
    x = V[S[a, 0]:S[a, 0] + S[a, 1]]
    tx = T[S[a, 0]:S[a, 0] + S[a, 1]]
    ty = T[S[o, 0]:S[o, 0] + S[o, 1]]
    for s in range(nseg):
        ty[s] = 0.0
    for i in range(x.size):
        ty[ip[i]] += _prod_other(W, nseg, x[i], ip[i]) * tx[i]


@cuda.jit(device=True)
def segprod_vjp_jvp(V, T, G, TG, S, NEED, a, b, c, o, ip, c0, c1):
    """tg[i] += tgy * d[i] + gy * sum_{j != i} t[j] * (product without i and j)."""
    if not NEED[a]:
        return
    _prod_parts(V, S, a, o, ip)
    nseg = S[o, 1]
    W = V[V.size - 4 * nseg:]
    x = V[S[a, 0]:S[a, 0] + S[a, 1]]
    tx = T[S[a, 0]:S[a, 0] + S[a, 1]]
    gy = G[S[o, 0]:S[o, 0] + S[o, 1]]
    tgy = TG[S[o, 0]:S[o, 0] + S[o, 1]]
    tgx = TG[S[a, 0]:S[a, 0] + S[a, 1]]
    for s in range(nseg):
        W[2 * nseg + s] = 0.0
        W[3 * nseg + s] = 0.0
    for j in range(x.size):
        if x[j] == 0.0:
            W[3 * nseg + ip[j]] += tx[j]
        else:
            W[2 * nseg + ip[j]] += tx[j] / x[j]
    for i in range(x.size):
        s = ip[i]
        z = W[s]
        nonzero = W[nseg + s]
        ratio = W[2 * nseg + s]
        tzero = W[3 * nseg + s]
        d = _prod_other(W, nseg, x[i], s)
        if z == 0.0:
            cross = d * (ratio - tx[i] / x[i])
        elif z == 1.0:
            if x[i] == 0.0:
                cross = d * ratio
            else:
                cross = nonzero / x[i] * tzero
        elif z == 2.0 and x[i] == 0.0:
            cross = nonzero * (tzero - tx[i])
        else:
            cross = 0.0
        tgx[i] += tgy[s] * d + gy[s] * cross


# ---- batched matmul: ip = (batch, m, k, n, a_batch_stride, b_batch_stride) ----------------------

@cuda.jit(device=True)
def _mm_acc(A, B, Y, oa, ob, oy, sa, sb, sy, batch, m, k, n, ta, tb):
    """Y[oy + q*sy + i*n + j] += sum_l A'[q, i, l] B'[q, l, j] for the product shape (m, k, n):
    A' is A (m, k) or, when ta, A^T of an A stored (k, m); B' likewise with tb."""
    for q in range(batch):
        for i in range(m):
            for j in range(n):
                acc = 0.0
                for l in range(k):
                    ai = oa + q * sa + (l * m + i if ta else i * k + l)
                    bi = ob + q * sb + (j * k + l if tb else l * n + j)
                    acc += A[ai] * B[bi]
                Y[oy + q * sy + i * n + j] += acc


@cuda.jit(device=True)
def matmul_fwd(V, S, a, b, c, o, ip, c0, c1):
    batch, m, k, n, sa, sb = ip[0], ip[1], ip[2], ip[3], ip[4], ip[5]
    oo = S[o, 0]
    for i in range(S[o, 1]):
        V[oo + i] = 0.0
    _mm_acc(V, V, V, S[a, 0], S[b, 0], oo, sa, sb, m * n, batch, m, k, n, False, False)


@cuda.jit(device=True)
def _matmul_vjp(A_src, B_src, GA_dst, GB_dst, GY_src, S, NEED, a, b, o, ip):
    """GA += GY @ B^T, GB += A^T @ GY, reading A, B from A_src, B_src and GY from GY_src."""
    batch, m, k, n, sa, sb = ip[0], ip[1], ip[2], ip[3], ip[4], ip[5]
    if NEED[a]:   # GA (m, k) += GY (m, n) @ B^T (n, k)
        _mm_acc(GY_src, B_src, GA_dst, S[o, 0], S[b, 0], S[a, 0], m * n, sb, sa,
                batch, m, n, k, False, True)
    if NEED[b]:   # GB (k, n) += A^T (k, m) @ GY (m, n)
        _mm_acc(A_src, GY_src, GB_dst, S[a, 0], S[o, 0], S[b, 0], sa, m * n, sb,
                batch, k, m, n, True, False)


@cuda.jit(device=True)
def matmul_vjp(V, G, S, NEED, a, b, c, o, ip, c0, c1):
    _matmul_vjp(V, V, G, G, G, S, NEED, a, b, o, ip)


@cuda.jit(device=True)
def matmul_jvp(V, T, S, a, b, c, o, ip, c0, c1):
    batch, m, k, n, sa, sb = ip[0], ip[1], ip[2], ip[3], ip[4], ip[5]
    oo = S[o, 0]
    for i in range(S[o, 1]):
        T[oo + i] = 0.0
    _mm_acc(T, V, T, S[a, 0], S[b, 0], oo, sa, sb, m * n, batch, m, k, n, False, False)
    _mm_acc(V, T, T, S[a, 0], S[b, 0], oo, sa, sb, m * n, batch, m, k, n, False, False)


@cuda.jit(device=True)
def matmul_vjp_jvp(V, T, G, TG, S, NEED, a, b, c, o, ip, c0, c1):
    # Bilinear: d(GY B^T) = TGY B^T + GY TB^T, and likewise for A^T GY.
    _matmul_vjp(V, V, TG, TG, TG, S, NEED, a, b, o, ip)
    _matmul_vjp(T, T, TG, TG, G, S, NEED, a, b, o, ip)


# ---- pack: y = concatenation of the flat operands listed in ip ---------------------------------

@cuda.jit(device=True)
def pack_fwd(V, S, a, b, c, o, ip, c0, c1):
    start = S[o, 0]
    for j in range(ip.size):
        ox = S[ip[j], 0]
        nx = S[ip[j], 1]
        for i in range(nx):
            V[start + i] = V[ox + i]
        start += nx


@cuda.jit(device=True)
def pack_vjp(V, G, S, NEED, a, b, c, o, ip, c0, c1):
    start = S[o, 0]
    for j in range(ip.size):
        ox = S[ip[j], 0]
        nx = S[ip[j], 1]
        if NEED[ip[j]]:
            for i in range(nx):
                G[ox + i] += G[start + i]
        start += nx


# ---- where: y = b if a else c ------------------------------------------------------------------

@cuda.jit(device=True)
def where_fwd(V, S, a, b, c, o, ip, c0, c1):
    cond = V[S[a, 0]:S[a, 0] + S[a, 1]]
    x = V[S[b, 0]:S[b, 0] + S[b, 1]]
    z = V[S[c, 0]:S[c, 0] + S[c, 1]]
    y = V[S[o, 0]:S[o, 0] + S[o, 1]]
    for i in range(y.size):
        y[i] = x[i] if cond[i] != 0.0 else z[i]


@cuda.jit(device=True)
def where_vjp(V, G, S, NEED, a, b, c, o, ip, c0, c1):
    cond = V[S[a, 0]:S[a, 0] + S[a, 1]]
    gy = G[S[o, 0]:S[o, 0] + S[o, 1]]
    if NEED[b]:
        gx = G[S[b, 0]:S[b, 0] + S[b, 1]]
        for i in range(gy.size):
            if cond[i] != 0.0:
                gx[i] += gy[i]
    if NEED[c]:
        gz = G[S[c, 0]:S[c, 0] + S[c, 1]]
        for i in range(gy.size):
            if cond[i] == 0.0:
                gz[i] += gy[i]


@cuda.jit(device=True)
def where_jvp(V, T, S, a, b, c, o, ip, c0, c1):
    cond = V[S[a, 0]:S[a, 0] + S[a, 1]]
    tx = T[S[b, 0]:S[b, 0] + S[b, 1]]
    tz = T[S[c, 0]:S[c, 0] + S[c, 1]]
    ty = T[S[o, 0]:S[o, 0] + S[o, 1]]
    for i in range(ty.size):
        ty[i] = tx[i] if cond[i] != 0.0 else tz[i]


@cuda.jit(device=True)
def where_vjp_jvp(V, T, G, TG, S, NEED, a, b, c, o, ip, c0, c1):
    where_vjp(V, TG, S, NEED, a, b, c, o, ip, c0, c1)


# ---- scratch rows each primitive needs at the end of a value column ------------------------------

SCRATCH = {"segmax": 1, "segmin": 1, "segprod": 4}   # times the number of segments (S[o, 1])
