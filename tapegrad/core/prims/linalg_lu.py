"""solve and slogdet: Gaussian elimination with partial pivoting (LAPACK's getrf order of
pivots), for a batch of matrices.

solve: Y = A^-1 B, ip = (batch, n, k, a_stride, b_stride): A[q] (n x n), B[q] and Y[q]
(n x k); a stride of 0 shares one operand across the batch (as matmul's). `np.linalg.inv(A)`
is `solve(A, I)` with a constant identity.

* VJP: H = A^-T gY; gB += H; gA -= H Y^T.
* JVP: tY = A^-1 (tB - tA Y).
* second order (the VJP's derivative along tA, tB, tgY; tY from the tangent sweep):
  tH = A^-T (tgY - tA^T H); tgB += tH; tgA -= tH Y^T + H tY^T.

slogdet: per matrix (sign, log|det A|), ip = (batch, n); the sign is constant (zero
derivative), a singular matrix gives (0, -inf) as numpy does.

* VJP: gA += g_logdet A^-T (only the log's adjoint: the sign has none).
* JVP: t_logdet = tr(A^-1 tA) = <A^-T, tA>; t_sign = 0.
* second order: tgA += tg_logdet A^-T - g_logdet A^-T tA^T A^-T.

The rules are portable (the column layout runs them vectorised across points, the pivots
chosen per point by comparing row indices), but not on the GPU: their scratch (n x n) can
exceed the output's size, which bounds what the GPU reserves. A singular matrix gives inf or
NaN in the column layout; the flat layout raises numpy's LinAlgError("Singular matrix")
(solve's forward and the derivatives of both: HIPS autograd's VJP of slogdet inverts A and
raises too). Each rule is a helper flagging a zero pivot in F[0]; the flat layout's override
runs the same helper and raises where it flagged one.
"""
import math

from ..primitive import Values, helper, structural, temp, view
from .linalg import (_add_scaled, _axpy, _copy, _eliminate, _identity, _lu_solve, _mm,
                     _raise_if_singular, _scale, _zero)
from . import dependence, shapes


def _solve_dimensions(ip, n_out, sizes):
    error = shapes.payload_length(ip, 5)
    if error:
        return error
    batch, n, k, sa, sb = (int(v) for v in ip)
    if min(batch, n, k) < 0 or sa not in (0, n * n) or sb not in (0, n * k):
        return f"dimensions {tuple(int(v) for v in ip)} are inconsistent"
    for size, stride, block in ((sizes[0], sa, n * n), (sizes[1], sb, n * k)):
        if size != (batch * block if stride else block):
            return f"operand of size {size} for dimensions {tuple(int(v) for v in ip)}"
    if n_out != batch * n * k:
        return f"output of size {n_out} for dimensions {tuple(int(v) for v in ip)}"
    return None


def _slogdet_dimensions(ip, n_out, sizes):
    error = shapes.payload_length(ip, 2)
    if error:
        return error
    batch, n = int(ip[0]), int(ip[1])
    if batch < 0 or n < 0 or sizes[0] != batch * n * n or n_out != 2 * batch:
        return f"sizes {sizes[0]} -> {n_out} for {batch} matrices of {n} x {n}"
    return None


solve = structural(81, "solve", "LinalgSolveExBackward0", _solve_dimensions, arity=2,
                   reads=(((0,), True), ((0,), False)), cuda=False,
                   reads_elements=dependence.every_operand, curvature="nonlinear")
slogdet = structural(82, "slogdet", "LinalgSlogdetBackward0", _slogdet_dimensions,
                     reads=(((0,), False),), cuda=False,
                     reads_elements=dependence.every_operand, curvature="nonlinear")


# ---- solve --------------------------------------------------------------------------------

@helper
def _solve(V: Values, S, a, b, o, ip, F: Values):
    A = view(V, S, a)
    B = view(V, S, b)
    Y = view(V, S, o)
    n, k, sa, sb = ip[1], ip[2], ip[3], ip[4]
    LU = temp(V, 1, n * n)
    D = temp(V, 1 + n * n, 1)
    F[0] = 0.0
    for q in range(ip[0]):
        Aq = A[q * sa:q * sa + n * n]
        Bq = B[q * sb:q * sb + n * k]
        Yq = Y[q * n * k:(q + 1) * n * k]
        _copy(Bq, Yq, n, k, False)
        _lu_solve(Aq, Yq, LU, D, n, k, False, F)


@helper
def _solve_vjp(V: Values, G: Values, S, NEED, a, b, o, ip, F: Values):
    A = view(V, S, a)
    Y = view(V, S, o)
    GA = view(G, S, a)
    GB = view(G, S, b)
    GY = view(G, S, o)
    n, k, sa, sb = ip[1], ip[2], ip[3], ip[4]
    LU = temp(V, 1, n * n)
    D = temp(V, 1 + n * n, 1)
    H = temp(V, 2 + n * n, n * k)
    F[0] = 0.0
    for q in range(ip[0]):
        Aq = A[q * sa:q * sa + n * n]
        Yq = Y[q * n * k:(q + 1) * n * k]
        GYq = GY[q * n * k:(q + 1) * n * k]
        _copy(GYq, H, n, k, False)
        _lu_solve(Aq, H, LU, D, n, k, True, F)          # H = A^-T gY
        if NEED[b]:
            GBq = GB[q * sb:q * sb + n * k]
            _axpy(H, GBq, n * k, 1.0)
        if NEED[a]:
            GAq = GA[q * sa:q * sa + n * n]
            _scale(H, n * k, -1.0)
            _mm(H, Yq, GAq, n, k, n, False, True)


@helper
def _solve_vjp_jvp(V: Values, T: Values, G: Values, TG: Values, S, NEED, a, b, o, ip,
                   F: Values):
    A = view(V, S, a)
    Y = view(V, S, o)
    TA = view(T, S, a)
    TY = view(T, S, o)
    GY = view(G, S, o)
    TGA = view(TG, S, a)
    TGB = view(TG, S, b)
    TGY = view(TG, S, o)
    n, k, sa, sb = ip[1], ip[2], ip[3], ip[4]
    LU = temp(V, 1, n * n)
    D = temp(V, 1 + n * n, 1)
    H = temp(V, 2 + n * n, n * k)
    TH = temp(V, 2 + n * n + n * k, n * k)
    W = temp(V, 2 + n * n + 2 * n * k, n * k)
    F[0] = 0.0
    for q in range(ip[0]):
        Aq = A[q * sa:q * sa + n * n]
        TAq = TA[q * sa:q * sa + n * n]
        Yq = Y[q * n * k:(q + 1) * n * k]
        TYq = TY[q * n * k:(q + 1) * n * k]
        GYq = GY[q * n * k:(q + 1) * n * k]
        TGYq = TGY[q * n * k:(q + 1) * n * k]
        _copy(GYq, H, n, k, False)
        _lu_solve(Aq, H, LU, D, n, k, True, F)          # H = A^-T gY
        _copy(TGYq, TH, n, k, False)
        _zero(W, n * k)
        _mm(TAq, H, W, n, n, k, True, False)
        _axpy(W, TH, n * k, -1.0)
        _lu_solve(Aq, TH, LU, D, n, k, True, F)         # tH = A^-T (tgY - tA^T H)
        if NEED[b]:
            TGBq = TGB[q * sb:q * sb + n * k]
            _axpy(TH, TGBq, n * k, 1.0)
        if NEED[a]:
            TGAq = TGA[q * sa:q * sa + n * n]
            _scale(TH, n * k, -1.0)
            _scale(H, n * k, -1.0)
            _mm(TH, Yq, TGAq, n, k, n, False, True)
            _mm(H, TYq, TGAq, n, k, n, False, True)


@solve.fwd
def solve_fwd(V, S, a, b, c, o, ip, c0, c1):
    F = temp(V, 0, 1)
    _solve(V, S, a, b, o, ip, F)


@solve.vjp
def solve_vjp(V, G, S, NEED, a, b, c, o, ip, c0, c1):
    F = temp(V, 0, 1)
    _solve_vjp(V, G, S, NEED, a, b, o, ip, F)


@solve.jvp
def solve_jvp(V, T, S, a, b, c, o, ip, c0, c1):
    A = view(V, S, a)
    Y = view(V, S, o)
    TA = view(T, S, a)
    TB = view(T, S, b)
    TY = view(T, S, o)
    n, k, sa, sb = ip[1], ip[2], ip[3], ip[4]
    F = temp(V, 0, 1)
    LU = temp(V, 1, n * n)
    D = temp(V, 1 + n * n, 1)
    W = temp(V, 2 + n * n, n * k)
    for q in range(ip[0]):
        Aq = A[q * sa:q * sa + n * n]
        Yq = Y[q * n * k:(q + 1) * n * k]
        TAq = TA[q * sa:q * sa + n * n]
        TBq = TB[q * sb:q * sb + n * k]
        TYq = TY[q * n * k:(q + 1) * n * k]
        _copy(TBq, TYq, n, k, False)
        _zero(W, n * k)
        _mm(TAq, Yq, W, n, n, k, False, False)
        _axpy(W, TYq, n * k, -1.0)
        _lu_solve(Aq, TYq, LU, D, n, k, False, F)


@solve.vjp_jvp
def solve_vjp_jvp(V, T, G, TG, S, NEED, a, b, c, o, ip, c0, c1):
    F = temp(V, 0, 1)
    _solve_vjp_jvp(V, T, G, TG, S, NEED, a, b, o, ip, F)


# ---- slogdet -----------------------------------------------------------------------------

@helper
def _sign_and_log(LU: Values, D: Values, Y: Values, n, q):
    """Y[2q], Y[2q + 1] = the sign and log|det| of the factorised matrix (U's diagonal and the
    permutation's sign D[0]); a zero pivot gives (0, -inf)."""
    sign = D[0]
    logdet = 0.0
    for j in range(n):
        u = LU[j * n + j]
        if u < 0.0:
            sign = -sign
        if u == 0.0:
            sign = 0.0
        logdet += math.log(abs(u))
    Y[2 * q] = sign
    Y[2 * q + 1] = logdet


@helper
def _inverse_transpose(V: Values, A: Values, X: Values, n, F: Values):
    """X = A^-T (n x n)."""
    LU = temp(V, 1, n * n)
    D = temp(V, 1 + n * n, 1)
    _identity(X, n)
    _lu_solve(A, X, LU, D, n, n, True, F)


@helper
def _slogdet_vjp(V: Values, G: Values, S, NEED, a, o, ip, F: Values):
    A = view(V, S, a)
    GA = view(G, S, a)
    GY = view(G, S, o)
    n = ip[1]
    X = temp(V, 2 + n * n, n * n)
    F[0] = 0.0
    if NEED[a]:
        for q in range(ip[0]):
            Aq = A[q * n * n:(q + 1) * n * n]
            GAq = GA[q * n * n:(q + 1) * n * n]
            _inverse_transpose(V, Aq, X, n, F)
            _add_scaled(X, GAq, n * n, GY, 2 * q + 1, 1.0)


@helper
def _slogdet_vjp_jvp(V: Values, T: Values, G: Values, TG: Values, S, NEED, a, o, ip,
                     F: Values):
    A = view(V, S, a)
    TA = view(T, S, a)
    GY = view(G, S, o)
    TGA = view(TG, S, a)
    TGY = view(TG, S, o)
    n = ip[1]
    X = temp(V, 2 + n * n, n * n)
    W = temp(V, 2 + 2 * n * n, n * n)
    Z = temp(V, 2 + 3 * n * n, n * n)
    F[0] = 0.0
    if NEED[a]:
        for q in range(ip[0]):
            Aq = A[q * n * n:(q + 1) * n * n]
            TAq = TA[q * n * n:(q + 1) * n * n]
            TGAq = TGA[q * n * n:(q + 1) * n * n]
            _inverse_transpose(V, Aq, X, n, F)
            _add_scaled(X, TGAq, n * n, TGY, 2 * q + 1, 1.0)
            _zero(W, n * n)
            _mm(X, TAq, W, n, n, n, False, True)        # A^-T tA^T
            _zero(Z, n * n)
            _mm(W, X, Z, n, n, n, False, False)         # A^-T tA^T A^-T
            _add_scaled(Z, TGAq, n * n, GY, 2 * q + 1, -1.0)


@slogdet.fwd
def slogdet_fwd(V, S, a, b, c, o, ip, c0, c1):
    A = view(V, S, a)
    Y = view(V, S, o)
    n = ip[1]
    LU = temp(V, 1, n * n)
    D = temp(V, 1 + n * n, 1)
    for q in range(ip[0]):
        Aq = A[q * n * n:(q + 1) * n * n]
        _copy(Aq, LU, n, n, False)
        _eliminate(LU, LU, n, 0, D)
        _sign_and_log(LU, D, Y, n, q)


@slogdet.vjp
def slogdet_vjp(V, G, S, NEED, a, b, c, o, ip, c0, c1):
    F = temp(V, 0, 1)
    _slogdet_vjp(V, G, S, NEED, a, o, ip, F)


@slogdet.jvp
def slogdet_jvp(V, T, S, a, b, c, o, ip, c0, c1):
    A = view(V, S, a)
    TA = view(T, S, a)
    TY = view(T, S, o)
    n = ip[1]
    F = temp(V, 0, 1)
    X = temp(V, 2 + n * n, n * n)
    for q in range(ip[0]):
        Aq = A[q * n * n:(q + 1) * n * n]
        TAq = TA[q * n * n:(q + 1) * n * n]
        _inverse_transpose(V, Aq, X, n, F)
        t = 0.0
        for i in range(n * n):
            t += X[i] * TAq[i]
        TY[2 * q] = 0.0
        TY[2 * q + 1] = t


@slogdet.vjp_jvp
def slogdet_vjp_jvp(V, T, G, TG, S, NEED, a, b, c, o, ip, c0, c1):
    F = temp(V, 0, 1)
    _slogdet_vjp_jvp(V, T, G, TG, S, NEED, a, o, ip, F)


# ---- flat layout: numpy's LinAlgError at a singular matrix ----------------------------------

@solve.rule("fwd", layout="flat")
def solve_fwd_checked(V, S, a, b, c, o, ip, c0, c1):
    F = temp(V, 0, 1)
    _solve(V, S, a, b, o, ip, F)
    _raise_if_singular(F)


@solve.rule("vjp", layout="flat")
def solve_vjp_checked(V, G, S, NEED, a, b, c, o, ip, c0, c1):
    F = temp(V, 0, 1)
    _solve_vjp(V, G, S, NEED, a, b, o, ip, F)
    _raise_if_singular(F)


@solve.rule("vjp_jvp", layout="flat")
def solve_vjp_jvp_checked(V, T, G, TG, S, NEED, a, b, c, o, ip, c0, c1):
    F = temp(V, 0, 1)
    _solve_vjp_jvp(V, T, G, TG, S, NEED, a, b, o, ip, F)
    _raise_if_singular(F)


@slogdet.rule("vjp", layout="flat")
def slogdet_vjp_checked(V, G, S, NEED, a, b, c, o, ip, c0, c1):
    F = temp(V, 0, 1)
    _slogdet_vjp(V, G, S, NEED, a, o, ip, F)
    _raise_if_singular(F)


@slogdet.rule("vjp_jvp", layout="flat")
def slogdet_vjp_jvp_checked(V, T, G, TG, S, NEED, a, b, c, o, ip, c0, c1):
    F = temp(V, 0, 1)
    _slogdet_vjp_jvp(V, T, G, TG, S, NEED, a, o, ip, F)
    _raise_if_singular(F)
