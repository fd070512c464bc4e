"""matmul: batched matrix products, ip = (batch, m, k, n, a_batch_stride, b_batch_stride,
a_const, b_const): Y[q] = A[q] @ B[q] for q < batch, A[q] (m, k), B[q] (k, n); a stride of 0
shares one matrix across the batch; a_const/b_const say that an operand is a constant (the
same at every point of a batched replay).

Three bodies per rule, side by side: the portable loops (the CUDA kernels and the fused tier's
symbolic replay use them: index order, accumulated from zero), the flat CPU layout's BLAS calls
(numba's np.dot, through scipy), and the column layout's small GEMM whose innermost loop runs
over the tile's points and reads a constant operand once per element, not once per point."""
import numpy as np

from ..primitive import Values, helper, structural, view
from . import dependence


def _dimensions(ip, n_out, sizes):
    if ip.size != 8:
        return f"needs a payload of 8 integers, got {ip.size}"
    batch, m, k, n, sa, sb, a_const, b_const = (int(v) for v in ip)
    if min(batch, m, k, n) < 0 or sa not in (0, m * k) or sb not in (0, k * n) \
            or a_const not in (0, 1) or b_const not in (0, 1):
        return f"dimensions {tuple(int(v) for v in ip)} are inconsistent"
    for size, stride, block in ((sizes[0], sa, m * k), (sizes[1], sb, k * n)):
        need = (batch - 1) * stride + block if batch else 0
        if size != (need if stride else block):
            return f"operand of size {size} for dimensions {tuple(int(v) for v in ip)}"
    if n_out != batch * m * n:
        return f"output of size {n_out} for dimensions {tuple(int(v) for v in ip)}"
    return None


matmul = structural(43, "matmul", "MmBackward0", _dimensions, arity=2,
                    reads=(((1,), False), ((0,), False)),
                    reads_elements=dependence.matrix_product, curvature="bilinear")


# ---- portable: loops in index order ---------------------------------------------------------

@helper
def _product(A: Values, B: Values, Y: Values, sa, sb, sy, batch, m, k, n, ta, tb):
    """Y[q] += A'[q] @ B'[q] for q < batch, with A' = A (m, k) or, when ta, the transpose of
    A (k, m); B' = B (k, n) or, when tb, the transpose of B (n, k); sa, sb, sy: batch strides
    (0: one matrix for the whole batch). Each product is added to Y in index order."""
    for q in range(batch):
        for i in range(m):
            for j in range(n):
                yi = q * sy + i * n + j
                for l in range(k):
                    ai = q * sa + (l * m + i if ta else i * k + l)
                    bi = q * sb + (j * k + l if tb else l * n + j)
                    Y[yi] += A[ai] * B[bi]


@helper
def _product_vjp(A: Values, B: Values, GA: Values, GB: Values, GY: Values, NEED, a, b, ip):
    """GA += GY @ B^T and GB += A^T @ GY, for the operands that need an adjoint."""
    batch, m, k, n, sa, sb = ip[0], ip[1], ip[2], ip[3], ip[4], ip[5]
    if NEED[a]:
        _product(GY, B, GA, m * n, sb, sa, batch, m, n, k, False, True)
    if NEED[b]:
        _product(A, GY, GB, sa, m * n, sb, batch, k, m, n, True, False)


@matmul.fwd
def matmul_fwd(V, S, a, b, c, o, ip, c0, c1):
    A = view(V, S, a)
    B = view(V, S, b)
    Y = view(V, S, o)
    Y[:] = 0.0
    _product(A, B, Y, ip[4], ip[5], ip[1] * ip[3], ip[0], ip[1], ip[2], ip[3], False, False)


@matmul.vjp
def matmul_vjp(V, G, S, NEED, a, b, c, o, ip, c0, c1):
    A = view(V, S, a)
    B = view(V, S, b)
    GA = view(G, S, a)
    GB = view(G, S, b)
    GY = view(G, S, o)
    _product_vjp(A, B, GA, GB, GY, NEED, a, b, ip)


@matmul.jvp
def matmul_jvp(V, T, S, a, b, c, o, ip, c0, c1):
    A = view(V, S, a)
    B = view(V, S, b)
    TA = view(T, S, a)
    TB = view(T, S, b)
    TY = view(T, S, o)
    TY[:] = 0.0
    batch, m, k, n, sa, sb = ip[0], ip[1], ip[2], ip[3], ip[4], ip[5]
    _product(TA, B, TY, sa, sb, m * n, batch, m, k, n, False, False)
    _product(A, TB, TY, sa, sb, m * n, batch, m, k, n, False, False)


@matmul.vjp_jvp
def matmul_vjp_jvp(V, T, G, TG, S, NEED, a, b, c, o, ip, c0, c1):
    """Bilinear: d(GY B^T) = TGY B^T + GY TB^T, and likewise for A^T GY."""
    A = view(V, S, a)
    B = view(V, S, b)
    TA = view(T, S, a)
    TB = view(T, S, b)
    GY = view(G, S, o)
    TGA = view(TG, S, a)
    TGB = view(TG, S, b)
    TGY = view(TG, S, o)
    _product_vjp(A, B, TGA, TGB, TGY, NEED, a, b, ip)
    _product_vjp(TA, TB, TGA, TGB, GY, NEED, a, b, ip)


# ---- flat CPU layout: BLAS ------------------------------------------------------------------

@helper(layout="flat")
def _blas_vjp(A, B, GA, GB, GY, NEED, a, b, ip):
    """GA += GY @ B^T, GB += A^T @ GY by BLAS. A matrix-vector product (n == 1: A @ x, or
    m == 1: x @ B) gets vector operands, so that np.dot calls gemv, as numpy does for
    `X.T @ r`, not gemm with one column."""
    batch, m, k, n, sa, sb = ip[0], ip[1], ip[2], ip[3], ip[4], ip[5]
    for p in range(batch):
        gy = GY[p * m * n:(p + 1) * m * n]
        Ap = A[p * sa:p * sa + m * k].reshape((m, k))
        Bp = B[p * sb:p * sb + k * n].reshape((k, n))
        if NEED[a]:
            ga = GA[p * sa:p * sa + m * k]
            if m == 1:
                ga += np.dot(Bp, gy)
            else:
                ga2 = ga.reshape((m, k))
                ga2 += np.dot(gy.reshape((m, n)), Bp.T)
        if NEED[b]:
            gb = GB[p * sb:p * sb + k * n]
            if n == 1:
                gb += np.dot(Ap.T, gy)
            else:
                gb2 = gb.reshape((k, n))
                gb2 += np.dot(Ap.T, gy.reshape((m, n)))


@matmul.rule("fwd", layout="flat")
def matmul_fwd_blas(V, S, a, b, c, o, ip, c0, c1):
    batch, m, k, n, sa, sb = ip[0], ip[1], ip[2], ip[3], ip[4], ip[5]
    A = view(V, S, a)
    B = view(V, S, b)
    Y = view(V, S, o)
    for p in range(batch):
        np.dot(A[p * sa:p * sa + m * k].reshape((m, k)), B[p * sb:p * sb + k * n].reshape((k, n)),
               Y[p * m * n:(p + 1) * m * n].reshape((m, n)))


@matmul.rule("vjp", layout="flat")
def matmul_vjp_blas(V, G, S, NEED, a, b, c, o, ip, c0, c1):
    _blas_vjp(view(V, S, a), view(V, S, b), view(G, S, a), view(G, S, b), view(G, S, o), NEED,
              a, b, ip)


@matmul.rule("jvp", layout="flat")
def matmul_jvp_blas(V, T, S, a, b, c, o, ip, c0, c1):
    batch, m, k, n, sa, sb = ip[0], ip[1], ip[2], ip[3], ip[4], ip[5]
    A = view(V, S, a)
    B = view(V, S, b)
    TA = view(T, S, a)
    TB = view(T, S, b)
    TY = view(T, S, o)
    for p in range(batch):
        ty = TY[p * m * n:(p + 1) * m * n].reshape((m, n))
        ty[:] = np.dot(TA[p * sa:p * sa + m * k].reshape((m, k)),
                       B[p * sb:p * sb + k * n].reshape((k, n)))
        ty += np.dot(A[p * sa:p * sa + m * k].reshape((m, k)),
                     TB[p * sb:p * sb + k * n].reshape((k, n)))


@matmul.rule("vjp_jvp", layout="flat")
def matmul_vjp_jvp_blas(V, T, G, TG, S, NEED, a, b, c, o, ip, c0, c1):
    _blas_vjp(view(V, S, a), view(V, S, b), view(TG, S, a), view(TG, S, b), view(TG, S, o),
              NEED, a, b, ip)
    _blas_vjp(view(T, S, a), view(T, S, b), view(TG, S, a), view(TG, S, b), view(G, S, o),
              NEED, a, b, ip)


# ---- column layout: a small GEMM per tile, innermost loop over the points ----------------------

@helper(layout="column")
def _gemm(A, B, Y, sa, sb, sy, batch, m, k, n, ta, tb, a_const, b_const):
    """`_product` on (rows, tile) blocks: Y[q,i,j] += sum_l A'[q,i,l] B'[q,l,j] at every point.
    A constant operand (the same at every point, like a network's weights) is read once per
    element, not per point."""
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
                        bv = b_row[0]
                        for p in range(y.size):
                            y[p] += a_row[p] * bv
                    elif a_const:
                        av = a_row[0]
                        for p in range(y.size):
                            y[p] += av * b_row[p]
                    else:
                        for p in range(y.size):
                            y[p] += a_row[p] * b_row[p]


@helper(layout="column")
def _gemm_vjp(A, B, GA, GB, GY, NEED, a, b, ip):
    """A constant operand's rows are the same at every point in V and zero in T: either way one
    value per element."""
    batch, m, k, n, sa, sb = ip[0], ip[1], ip[2], ip[3], ip[4], ip[5]
    if NEED[a]:   # GA (m, k) += GY (m, n) @ B^T (n, k)
        _gemm(GY, B, GA, m * n, sb, sa, batch, m, n, k, False, True, False, ip[7])
    if NEED[b]:   # GB (k, n) += A^T (k, m) @ GY (m, n)
        _gemm(A, GY, GB, sa, m * n, sb, batch, k, m, n, True, False, ip[6], False)


@matmul.rule("fwd", layout="column")
def matmul_fwd_gemm(V, S, a, b, c, o, ip, c0, c1):
    Y = view(V, S, o)
    Y[:] = 0.0
    _gemm(view(V, S, a), view(V, S, b), Y, ip[4], ip[5], ip[1] * ip[3], ip[0], ip[1], ip[2],
          ip[3], False, False, ip[6], ip[7])


@matmul.rule("vjp", layout="column")
def matmul_vjp_gemm(V, G, S, NEED, a, b, c, o, ip, c0, c1):
    _gemm_vjp(view(V, S, a), view(V, S, b), view(G, S, a), view(G, S, b), view(G, S, o), NEED,
              a, b, ip)


@matmul.rule("jvp", layout="column")
def matmul_jvp_gemm(V, T, S, a, b, c, o, ip, c0, c1):
    TY = view(T, S, o)
    TY[:] = 0.0
    _gemm(view(T, S, a), view(V, S, b), TY, ip[4], ip[5], ip[1] * ip[3], ip[0], ip[1], ip[2],
          ip[3], False, False, ip[6], ip[7])
    _gemm(view(V, S, a), view(T, S, b), TY, ip[4], ip[5], ip[1] * ip[3], ip[0], ip[1], ip[2],
          ip[3], False, False, ip[6], ip[7])


@matmul.rule("vjp_jvp", layout="column")
def matmul_vjp_jvp_gemm(V, T, G, TG, S, NEED, a, b, c, o, ip, c0, c1):
    _gemm_vjp(view(V, S, a), view(V, S, b), view(TG, S, a), view(TG, S, b), view(TG, S, o),
              NEED, a, b, ip)
    _gemm_vjp(view(T, S, a), view(T, S, b), view(TG, S, a), view(TG, S, b), view(G, S, o),
              NEED, a, b, ip)
