"""svd: the reduced singular value decomposition A = U diag(s) Vh of a batch of m x n matrices,
ip = (batch, m, n, values_only), k = min(m, n). Per matrix the output holds s (k, descending),
U (m x k) and Vh (k x n), row-major: numpy's `svd(a, full_matrices=False)`, which is also its
full decomposition where A is square. `values_only` = 1 is `compute_uv=False`: numpy computes
s by LAPACK without the vectors (equal to the reduced one's to rounding only), so s is
computed so too, and U, Vh (which the derivatives need) by a second call.

Derivatives (HIPS autograd's and JAX's), with V = Vh^T, S = diag(s), F_ij = 1 / (s_j^2 - s_i^2)
off the diagonal (0 on it) and P = U^T tA V:

* JVP: ts = diag(P); tU = U (F o (P S + S P^T)) + (I - U U^T) tA V S^-1 (the last term where
  m > n); tVh = -(F o (S P + P^T S)) Vh + S^-1 U^T tA (I - V V^T) (the last where n > m).
* VJP: X = U^T gU, Y = Vh gVh^T, J = F o (X - X^T), K = F o (Y - Y^T), M = diag(gs) + J S + S K:
  gA += U M Vh, + Wu Vh with Wu = (gU - U X) S^-1 (m > n), + U Wv with Wv = S^-1 (gVh - Y^T Vh)
  (n > m).
* second order: the VJP's derivative along tA, the output's tangents (ts, tU, tVh) and the
  adjoint's (tgs, tgU, tgVh), term by term; F's tangent is -2 (s_j ts_j - s_i ts_i) F_ij^2.

Repeated singular values: F o X takes only the entries of X that are not zero, so the
derivatives of the singular values alone (`compute_uv=False`, the norms) stay finite, as HIPS
autograd's; where the vectors' derivatives meet a repeated singular value, or (rectangular A)
a zero one, they are inf or NaN. Likewise the terms divided by s keep their zeros, so that the
vectors of a zero singular value that nothing reads (pinv's discarded ones) add nothing.

Layouts: the flat layout's forward calls LAPACK's gesdd as numpy does (numpy's values and
signs exactly) and raises numpy's LinAlgError("SVD did not converge") where it fails or gives
NaN (as numpy's LAPACK fails on a NaN); the column layout calls it at each point of the tile
(NaN where it fails). The portable forward
(one-sided Jacobi rotations, then sorted) is the GPU's and the fused tier's, which do not run
this primitive (`cuda=False`; the fused tier stops at its first comparison); its vectors'
signs are not LAPACK's. The derivatives are portable.
"""
import math

import numpy as np

from ..primitive import Values, helper, structural, temp, view
from .linalg import (_all_finite, _axpy, _copy, _identity, _mm, _rotate, _set_rotation,
                     _swap_columns_if, _zero)
from . import dependence, shapes


def _dimensions(ip, n_out, sizes):
    error = shapes.payload_length(ip, 4)
    if error:
        return error
    batch, m, n, values_only = (int(v) for v in ip)
    k = min(m, n)
    if min(batch, m, n) < 0 or values_only not in (0, 1) or sizes[0] != batch * m * n \
            or n_out != batch * (k + m * k + k * n):
        return f"sizes {sizes[0]} -> {n_out} for {batch} matrices of {m} x {n}"
    return None


svd = structural(84, "svd", "LinalgSvdBackward0", _dimensions, reads=(((), True),),
                 scratch=lambda n_out: 16 * n_out, cuda=False,
                 reads_elements=dependence.every_operand, curvature="nonlinear")


# ---- derivatives (portable) ------------------------------------------------------------------

@helper
def _skew_spectral(s: Values, ts: Values, X: Values, k, tangent):
    """X = F o (X - X^T), or (tangent) F' o (X - X^T) with F' F's tangent along ts (both are
    symmetric); the diagonal zeroed, entries where X - X^T is zero kept zero."""
    for i in range(k):
        X[i * k + i] = 0.0
        for j in range(i + 1, k):
            x = X[i * k + j] - X[j * k + i]
            gap = s[j] * s[j] - s[i] * s[i]
            f = -2.0 * x * (s[j] * ts[j] - s[i] * ts[i]) / (gap * gap) if tangent else x / gap
            f = 0.0 if x == 0.0 else f
            X[i * k + j] = f
            X[j * k + i] = f


@helper
def _tangent_spectral(s: Values, P: Values, X: Values, k, right):
    """X = F o (P S + S P^T) (right), or F o (S P + P^T S); zero where that is zero."""
    for i in range(k):
        for j in range(k):
            x = P[i * k + j] * s[j] + s[i] * P[j * k + i] if right else \
                s[i] * P[i * k + j] + P[j * k + i] * s[j]
            gap = s[j] * s[j] - s[i] * s[i]
            X[i * k + j] = 0.0 if i == j or x == 0.0 else x / gap


@helper
def _middle(s: Values, J: Values, K: Values, X: Values, k):
    """X += J S + S K (k x k)."""
    for i in range(k):
        for j in range(k):
            X[i * k + j] += J[i * k + j] * s[j] + s[i] * K[i * k + j]


@helper
def _add_diagonal(d: Values, X: Values, k):
    for i in range(k):
        X[i * k + i] += d[i]


@helper
def _submm(A: Values, B: Values, Y: Values, m, k, n, ta, tb):
    """Y (m x n) -= op(A) op(B) (op: the transpose where ta, tb)."""
    for i in range(m):
        for j in range(n):
            for l in range(k):
                ai = l * m + i if ta else i * k + l
                bi = j * k + l if tb else l * n + j
                Y[i * n + j] -= A[ai] * B[bi]


@helper
def _divide(X: Values, s: Values, ts: Values, rows, cols, by_column, tangent):
    """X (rows x cols) = X S^-1 (by_column) or S^-1 X; or (tangent) X S^-1 tS, S^-1 tS X.
    Zeros stay zero (a zero singular value's vectors that nothing reads add nothing)."""
    for i in range(rows):
        for j in range(cols):
            d = j if by_column else i
            r = ts[d] if tangent else 1.0
            x = X[i * cols + j]
            X[i * cols + j] = 0.0 if x == 0.0 else x * r / s[d]


@helper
def _grams(U: Values, Vh: Values, gU: Values, gVh: Values, X: Values, Y: Values, m, n, k):
    """X += U^T gU, Y += Vh gVh^T (k x k)."""
    _mm(U, gU, X, k, m, k, True, False)
    _mm(Vh, gVh, Y, k, n, k, False, True)


@helper
def _spectral_pair(s: Values, ts: Values, X: Values, J: Values, k, tangent):
    """J = F o (X - X^T) (or its tangent's F' part), X kept."""
    _copy(X, J, k, k, False)
    _skew_spectral(s, ts, J, k, tangent)


@helper
def _residual_u(U: Values, s: Values, gU: Values, X: Values, W: Values, m, k):
    """W = (gU - U X) S^-1 (m x k)."""
    _copy(gU, W, m, k, False)
    _submm(U, X, W, m, k, k, False, False)
    _divide(W, s, s, m, k, True, False)


@helper
def _residual_v(Vh: Values, s: Values, gVh: Values, Y: Values, W: Values, n, k):
    """W = S^-1 (gVh - Y^T Vh) (k x n)."""
    _copy(gVh, W, k, n, False)
    _submm(Y, Vh, W, k, k, n, True, False)
    _divide(W, s, s, k, n, False, False)


@svd.vjp
def svd_vjp(V, G, S, NEED, a, b, c, o, ip, c0, c1):
    if NEED[a]:
        m, n = ip[1], ip[2]
        k = min(m, n)
        kk = k * k
        size = k + m * k + k * n
        Y = view(V, S, o)
        GY = view(G, S, o)
        GA = view(G, S, a)
        X = temp(V, 0, kk)
        Yk = temp(V, kk, kk)
        J = temp(V, 2 * kk, kk)
        K = temp(V, 3 * kk, kk)
        M = temp(V, 4 * kk, kk)
        Z = temp(V, 5 * kk, m * k)
        Wu = temp(V, 5 * kk + m * k, m * k)
        Wv = temp(V, 5 * kk + 2 * m * k, k * n)
        for q in range(ip[0]):
            s = Y[q * size:q * size + k]
            U = Y[q * size + k:q * size + k + m * k]
            Vh = Y[q * size + k + m * k:(q + 1) * size]
            gs = GY[q * size:q * size + k]
            gU = GY[q * size + k:q * size + k + m * k]
            gVh = GY[q * size + k + m * k:(q + 1) * size]
            GAq = GA[q * m * n:(q + 1) * m * n]
            _zero(X, kk)
            _zero(Yk, kk)
            _grams(U, Vh, gU, gVh, X, Yk, m, n, k)
            _spectral_pair(s, s, X, J, k, False)
            _spectral_pair(s, s, Yk, K, k, False)
            _zero(M, kk)
            _middle(s, J, K, M, k)
            _add_diagonal(gs, M, k)
            _zero(Z, m * k)
            _mm(U, M, Z, m, k, k, False, False)
            if m > n:
                _residual_u(U, s, gU, X, Wu, m, k)
                _axpy(Wu, Z, m * k, 1.0)
            _mm(Z, Vh, GAq, m, k, n, False, False)
            if n > m:
                _residual_v(Vh, s, gVh, Yk, Wv, n, k)
                _mm(U, Wv, GAq, m, k, n, False, False)


@svd.jvp
def svd_jvp(V, T, S, a, b, c, o, ip, c0, c1):
    m, n = ip[1], ip[2]
    k = min(m, n)
    kk = k * k
    size = k + m * k + k * n
    Y = view(V, S, o)
    TA = view(T, S, a)
    TY = view(T, S, o)
    P = temp(V, 0, kk)
    X = temp(V, kk, kk)
    Z = temp(V, 2 * kk, k * n)
    W = temp(V, 2 * kk + k * n, m * k)
    for q in range(ip[0]):
        s = Y[q * size:q * size + k]
        U = Y[q * size + k:q * size + k + m * k]
        Vh = Y[q * size + k + m * k:(q + 1) * size]
        ts = TY[q * size:q * size + k]
        tU = TY[q * size + k:q * size + k + m * k]
        tVh = TY[q * size + k + m * k:(q + 1) * size]
        tA = TA[q * m * n:(q + 1) * m * n]
        _zero(Z, k * n)
        _mm(U, tA, Z, k, m, n, True, False)         # U^T tA
        _zero(P, kk)
        _mm(Z, Vh, P, k, n, k, False, True)         # P = U^T tA V
        for i in range(k):
            ts[i] = P[i * k + i]
        _tangent_spectral(s, P, X, k, True)
        _zero(tU, m * k)
        _mm(U, X, tU, m, k, k, False, False)
        if m > n:
            _zero(W, m * k)
            _mm(tA, Vh, W, m, n, k, False, True)
            _submm(U, P, W, m, k, k, False, False)
            _divide(W, s, s, m, k, True, False)
            _axpy(W, tU, m * k, 1.0)
        _tangent_spectral(s, P, X, k, False)
        _zero(tVh, k * n)
        _submm(X, Vh, tVh, k, k, n, False, False)
        if n > m:
            _submm(P, Vh, Z, k, k, n, False, False)
            _divide(Z, s, s, k, n, False, False)
            _axpy(Z, tVh, k * n, 1.0)


@svd.vjp_jvp
def svd_vjp_jvp(V, T, G, TG, S, NEED, a, b, c, o, ip, c0, c1):
    if NEED[a]:
        m, n = ip[1], ip[2]
        k = min(m, n)
        kk = k * k
        mk = m * k
        kn = k * n
        size = k + mk + kn
        Y = view(V, S, o)
        TY = view(T, S, o)
        GY = view(G, S, o)
        TGY = view(TG, S, o)
        TGA = view(TG, S, a)
        X = temp(V, 0, kk)
        Yk = temp(V, kk, kk)
        tX = temp(V, 2 * kk, kk)
        tY = temp(V, 3 * kk, kk)
        J = temp(V, 4 * kk, kk)
        K = temp(V, 5 * kk, kk)
        M = temp(V, 6 * kk, kk)
        tM = temp(V, 7 * kk, kk)
        Z = temp(V, 8 * kk, mk)
        Z2 = temp(V, 8 * kk + mk, mk)
        Wu = temp(V, 8 * kk + 2 * mk, mk)
        Wv = temp(V, 8 * kk + 3 * mk, kn)
        tW = temp(V, 8 * kk + 3 * mk + kn, kn)
        for q in range(ip[0]):
            s = Y[q * size:q * size + k]
            U = Y[q * size + k:q * size + k + mk]
            Vh = Y[q * size + k + mk:(q + 1) * size]
            ts = TY[q * size:q * size + k]
            tU = TY[q * size + k:q * size + k + mk]
            tVh = TY[q * size + k + mk:(q + 1) * size]
            gs = GY[q * size:q * size + k]
            gU = GY[q * size + k:q * size + k + mk]
            gVh = GY[q * size + k + mk:(q + 1) * size]
            tgs = TGY[q * size:q * size + k]
            tgU = TGY[q * size + k:q * size + k + mk]
            tgVh = TGY[q * size + k + mk:(q + 1) * size]
            TGAq = TGA[q * m * n:(q + 1) * m * n]
            _zero(X, kk)
            _zero(Yk, kk)
            _grams(U, Vh, gU, gVh, X, Yk, m, n, k)            # X, Y
            _zero(tX, kk)
            _zero(tY, kk)
            _grams(tU, tVh, gU, gVh, tX, tY, m, n, k)
            _grams(U, Vh, tgU, tgVh, tX, tY, m, n, k)          # tX, tY
            _spectral_pair(s, s, X, J, k, False)
            _spectral_pair(s, s, Yk, K, k, False)
            _zero(M, kk)
            _middle(s, J, K, M, k)
            _add_diagonal(gs, M, k)                            # M
            _zero(tM, kk)
            _middle(ts, J, K, tM, k)                           # J tS + tS K
            _spectral_pair(s, ts, X, J, k, True)
            _spectral_pair(s, ts, Yk, K, k, True)
            _middle(s, J, K, tM, k)                            # F' parts of tJ S + S tK
            _spectral_pair(s, s, tX, J, k, False)
            _spectral_pair(s, s, tY, K, k, False)
            _middle(s, J, K, tM, k)                            # F parts
            _add_diagonal(tgs, tM, k)                          # tM
            _zero(Z, mk)
            _mm(tU, M, Z, m, k, k, False, False)
            _mm(U, tM, Z, m, k, k, False, False)               # tU M + U tM
            _zero(Z2, mk)
            _mm(U, M, Z2, m, k, k, False, False)               # U M
            if m > n:
                _residual_u(U, s, gU, X, Wu, m, k)             # Wu
                _axpy(Wu, Z2, mk, 1.0)
                _copy(tgU, Wu, m, k, False)
                _submm(tU, X, Wu, m, k, k, False, False)
                _submm(U, tX, Wu, m, k, k, False, False)
                _divide(Wu, s, s, m, k, True, False)           # (tgU - tU X - U tX) S^-1
                _axpy(Wu, Z, mk, 1.0)
                _residual_u(U, s, gU, X, Wu, m, k)
                _divide(Wu, s, ts, m, k, True, True)           # Wu S^-1 tS
                _axpy(Wu, Z, mk, -1.0)
            _mm(Z, Vh, TGAq, m, k, n, False, False)
            _mm(Z2, tVh, TGAq, m, k, n, False, False)
            if n > m:
                _residual_v(Vh, s, gVh, Yk, Wv, n, k)          # Wv
                _mm(tU, Wv, TGAq, m, k, n, False, False)
                _divide(Wv, s, ts, k, n, False, True)          # S^-1 tS Wv
                _copy(tgVh, tW, k, n, False)
                _submm(tY, Vh, tW, k, k, n, True, False)
                _submm(Yk, tVh, tW, k, k, n, True, False)
                _divide(tW, s, s, k, n, False, False)
                _axpy(Wv, tW, kn, -1.0)                        # tWv
                _mm(U, tW, TGAq, m, k, n, False, False)


# ---- forward: portable one-sided Jacobi ------------------------------------------------------

@helper
def _orthogonalise(W: Values, Q: Values, R: Values, r, k, p, j):
    """One Jacobi rotation making columns p and j of W (r x k) orthogonal; Q (k x k) = Q J
    (R: scratch). The rotation is the one diagonalising the columns' 2 x 2 Gram matrix."""
    R[0] = 0.0
    R[1] = 0.0
    R[2] = 0.0
    for i in range(r):
        R[0] += W[i * k + p] * W[i * k + p]
        R[1] += W[i * k + j] * W[i * k + j]
        R[2] += W[i * k + p] * W[i * k + j]
    _set_rotation(R)
    _rotate(W, R, r, k, 1, p, j)
    _rotate(Q, R, k, k, 1, p, j)


@helper
def _normalise_and_sort(W: Values, Q: Values, s: Values, F: Values, r, k):
    """s = W's column norms, W's columns normalised, the three sorted by s descending
    (F: scratch)."""
    for j in range(k):
        total = 0.0
        for i in range(r):
            total += W[i * k + j] * W[i * k + j]
        s[j] = math.sqrt(total)
        for i in range(r):
            W[i * k + j] = W[i * k + j] / s[j] if s[j] > 0.0 else W[i * k + j]
    for i in range(k):
        for j in range(i + 1, k):
            F[0] = 1.0 if s[j] > s[i] else 0.0
            _swap_columns_if(W, F, r, k, i, j)
            _swap_columns_if(Q, F, k, k, i, j)
            _swap_columns_if(s, F, 1, k, i, j)


@svd.fwd
def svd_fwd(V, S, a, b, c, o, ip, c0, c1):
    m, n = ip[1], ip[2]
    k = min(m, n)
    r = max(m, n)
    size = k + m * k + k * n
    A = view(V, S, a)
    Y = view(V, S, o)
    W = temp(V, 0, r * k)
    Q = temp(V, r * k, k * k)
    R = temp(V, r * k + k * k, 3)
    for q in range(ip[0]):
        Aq = A[q * m * n:(q + 1) * m * n]
        s = Y[q * size:q * size + k]
        U = Y[q * size + k:q * size + k + m * k]
        Vh = Y[q * size + k + m * k:(q + 1) * size]
        _copy(Aq, W, m, n, m < n)                   # A, or A^T: r x k
        _identity(Q, k)
        # 12 cyclic Jacobi sweeps (a literal: generated code has no module constants)
        for sweep in range(12):
            for p in range(k):
                for j in range(p + 1, k):
                    _orthogonalise(W, Q, R, r, k, p, j)
        _normalise_and_sort(W, Q, s, R, r, k)
        if m < n:                                   # A^T = W S Q^T
            _copy(Q, U, k, k, False)
            _copy(W, Vh, n, k, True)
        else:                                       # A = W S Q^T
            _copy(W, U, m, k, False)
            _copy(Q, Vh, k, k, True)


# ---- flat and column layouts: LAPACK, as numpy calls it --------------------------------------

@helper(layout="flat")
def _gesdd(A, Y, m, n, values_only):
    """Y = (s, U, Vh) of the row-major m x n matrix A by LAPACK's dgesdd, as numpy calls it (a
    matrix's Fortran-order buffer is its transpose's row-major one). Returns LAPACK's info.
    `values_only`: s from a second call without vectors (numpy's compute_uv=False).
    `lapack` is `core.lapack`, which the generated modules import."""
    k = min(m, n)
    s = np.empty(k)
    u = np.empty((k, m))
    vt = np.empty((n, k))
    work = np.empty((n, m))
    work[:, :] = A.reshape((m, n)).T
    info = lapack.gesdd(100, 83, m, n, work.ctypes, m, s.ctypes, u.ctypes, m, vt.ctypes, k)
    Y[k:k + m * k].reshape((m, k))[:, :] = u.T
    Y[k + m * k:].reshape((k, n))[:, :] = vt.T
    if values_only:
        work[:, :] = A.reshape((m, n)).T
        info += lapack.gesdd(100, 78, m, n, work.ctypes, m, s.ctypes, u.ctypes, m, vt.ctypes,
                             k)
    Y[:k] = s
    return info


@svd.rule("fwd", layout="flat")
def svd_fwd_lapack(V, S, a, b, c, o, ip, c0, c1):
    m, n = ip[1], ip[2]
    size = min(m, n) * (1 + m + n)
    A = view(V, S, a)
    Y = view(V, S, o)
    for q in range(ip[0]):
        Yq = Y[q * size:(q + 1) * size]
        if size > 0 and (_gesdd(A[q * m * n:(q + 1) * m * n], Yq, m, n, ip[3]) != 0
                         or not _all_finite(Yq)):
            raise np.linalg.LinAlgError("SVD did not converge")


@svd.rule("fwd", layout="column")
def svd_fwd_lapack_points(V, S, a, b, c, o, ip, c0, c1):
    m, n = ip[1], ip[2]
    size = min(m, n) * (1 + m + n)
    A = view(V, S, a)
    Y = view(V, S, o)
    X = np.empty(m * n)
    W = np.empty(size)
    for q in range(ip[0]):
        for p in range(Y.shape[1]):
            for i in range(m * n):
                X[i] = A[q * m * n + i, p]
            if size > 0 and _gesdd(X, W, m, n, ip[3]) != 0:
                W[:] = np.nan
            for i in range(size):
                Y[q * size + i, p] = W[i]
