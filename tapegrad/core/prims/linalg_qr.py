"""qr: the reduced QR decomposition A = Q R of a batch of m x n matrices with m >= n,
ip = (batch, m, n): per matrix Q (m x n, orthonormal columns) then R (n x n, upper
triangular), row-major: numpy's `qr(a)` (mode 'reduced').

Derivatives (as PyTorch's and JAX's for m >= n), with copyltu(M) = the symmetric matrix of M's
lower triangle (tril(M, -1) + tril(M, -1)^T + diag(M)):

* JVP: X = tA R^-1, C = Q^T X, W = tril(C, -1) - tril(C, -1)^T; tQ = Q (W - C) + X,
  tR = (C - W) R.
* VJP: M = R gR^T - gQ^T Q; gA += (gQ + Q copyltu(M)) R^-T.
* second order: with B = gQ + Q copyltu(M) and gA0 = B R^-T,
  tM = tR gR^T + R tgR^T - tgQ^T Q - gQ^T tQ, tB = tgQ + tQ copyltu(M) + Q copyltu(tM),
  tgA += (tB - gA0 tR^T) R^-T.

A rank-deficient A (a zero on R's diagonal) gives inf or NaN derivatives.

Layouts: the flat and column layouts' forward calls numba's `np.linalg.qr` (LAPACK's geqrf and
orgqr, as numpy calls them: numpy's values and signs exactly); a matrix with an inf or NaN
gives NaN (numba's own check would raise). The portable forward (modified Gram-Schmidt, R's
diagonal positive, so signs not LAPACK's) is the GPU's and the fused tier's, which do not run
this primitive (`cuda=False`; the fused tier stops at its first comparison). The derivatives
are portable.
"""
import math

import numpy as np

from ..primitive import Values, helper, structural, temp, view
from .linalg import _all_finite, _axpy, _copy, _mm, _scale, _trsolve, _zero
from . import dependence, shapes


def _dimensions(ip, n_out, sizes):
    error = shapes.payload_length(ip, 3)
    if error:
        return error
    batch, m, n = (int(v) for v in ip)
    if min(batch, m, n) < 0 or m < n or sizes[0] != batch * m * n \
            or n_out != batch * (m * n + n * n):
        return f"sizes {sizes[0]} -> {n_out} for {batch} matrices of {m} x {n}"
    return None


qr = structural(85, "qr", "LinalgQrBackward0", _dimensions, reads=(((), True),),
                scratch=lambda n_out: 8 * n_out, cuda=False,
                reads_elements=dependence.every_operand, curvature="nonlinear")


# ---- derivatives (portable) ------------------------------------------------------------------

@helper
def _copyltu(M: Values, X: Values, n):
    """X = copyltu(M): M's lower triangle mirrored above the diagonal."""
    for i in range(n):
        for j in range(n):
            X[i * n + j] = M[i * n + j] if j <= i else M[j * n + i]


@helper
def _right_solve(R: Values, B: Values, X: Values, Z: Values, m, n, trans):
    """X (m x n) = B R^-1, or (trans) B R^-T, R (n x n) upper triangular (Z: n x m scratch)."""
    _copy(B, Z, m, n, True)
    _trsolve(R, Z, n, m, True, trans == 0)
    _copy(Z, X, n, m, True)


@helper
def _adjoint_core(Q: Values, R: Values, gQ: Values, gR: Values, M: Values, L: Values,
                  B: Values, m, n):
    """M = R gR^T - gQ^T Q; L = copyltu(M); B = gQ + Q L."""
    _zero(M, n * n)
    _mm(R, gR, M, n, n, n, False, True)
    _zero(L, n * n)
    _mm(gQ, Q, L, n, m, n, True, False)
    _axpy(L, M, n * n, -1.0)
    _copyltu(M, L, n)
    _copy(gQ, B, m, n, False)
    _mm(Q, L, B, m, n, n, False, False)


@qr.vjp
def qr_vjp(V, G, S, NEED, a, b, c, o, ip, c0, c1):
    if NEED[a]:
        m, n = ip[1], ip[2]
        mn = m * n
        nn = n * n
        size = mn + nn
        Y = view(V, S, o)
        GY = view(G, S, o)
        GA = view(G, S, a)
        M = temp(V, 0, nn)
        L = temp(V, nn, nn)
        B = temp(V, 2 * nn, mn)
        X = temp(V, 2 * nn + mn, mn)
        Z = temp(V, 2 * nn + 2 * mn, mn)
        for q in range(ip[0]):
            Q = Y[q * size:q * size + mn]
            R = Y[q * size + mn:(q + 1) * size]
            gQ = GY[q * size:q * size + mn]
            gR = GY[q * size + mn:(q + 1) * size]
            _adjoint_core(Q, R, gQ, gR, M, L, B, m, n)
            _right_solve(R, B, X, Z, m, n, 1)
            _axpy(X, GA[q * mn:(q + 1) * mn], mn, 1.0)


@qr.jvp
def qr_jvp(V, T, S, a, b, c, o, ip, c0, c1):
    m, n = ip[1], ip[2]
    mn = m * n
    nn = n * n
    size = mn + nn
    Y = view(V, S, o)
    TA = view(T, S, a)
    TY = view(T, S, o)
    X = temp(V, 0, mn)
    Z = temp(V, mn, mn)
    C = temp(V, 2 * mn, nn)
    W = temp(V, 2 * mn + nn, nn)
    for q in range(ip[0]):
        Q = Y[q * size:q * size + mn]
        R = Y[q * size + mn:(q + 1) * size]
        tQ = TY[q * size:q * size + mn]
        tR = TY[q * size + mn:(q + 1) * size]
        _right_solve(R, TA[q * mn:(q + 1) * mn], X, Z, m, n, 0)     # X = tA R^-1
        _zero(C, nn)
        _mm(Q, X, C, n, m, n, True, False)                          # C = Q^T X
        for i in range(n):
            for j in range(n):
                W[i * n + j] = C[i * n + j] if j < i else (-C[j * n + i] if j > i else 0.0)
        _axpy(C, W, nn, -1.0)                                       # W - C
        _copy(X, tQ, m, n, False)
        _mm(Q, W, tQ, m, n, n, False, False)                        # tQ = Q (W - C) + X
        _zero(tR, nn)
        _scale(W, nn, -1.0)
        _mm(W, R, tR, n, n, n, False, False)                        # tR = (C - W) R


@qr.vjp_jvp
def qr_vjp_jvp(V, T, G, TG, S, NEED, a, b, c, o, ip, c0, c1):
    if NEED[a]:
        m, n = ip[1], ip[2]
        mn = m * n
        nn = n * n
        size = mn + nn
        Y = view(V, S, o)
        TY = view(T, S, o)
        GY = view(G, S, o)
        TGY = view(TG, S, o)
        TGA = view(TG, S, a)
        M = temp(V, 0, nn)
        L = temp(V, nn, nn)
        tM = temp(V, 2 * nn, nn)
        B = temp(V, 3 * nn, mn)
        X = temp(V, 3 * nn + mn, mn)
        Z = temp(V, 3 * nn + 2 * mn, mn)
        tB = temp(V, 3 * nn + 3 * mn, mn)
        for q in range(ip[0]):
            Q = Y[q * size:q * size + mn]
            R = Y[q * size + mn:(q + 1) * size]
            tQ = TY[q * size:q * size + mn]
            tR = TY[q * size + mn:(q + 1) * size]
            gQ = GY[q * size:q * size + mn]
            gR = GY[q * size + mn:(q + 1) * size]
            tgQ = TGY[q * size:q * size + mn]
            tgR = TGY[q * size + mn:(q + 1) * size]
            _adjoint_core(Q, R, gQ, gR, M, L, B, m, n)
            _right_solve(R, B, X, Z, m, n, 1)                       # gA0 = B R^-T
            _zero(tM, nn)
            _mm(tR, gR, tM, n, n, n, False, True)
            _mm(R, tgR, tM, n, n, n, False, True)
            _zero(M, nn)
            _mm(tgQ, Q, M, n, m, n, True, False)
            _mm(gQ, tQ, M, n, m, n, True, False)
            _axpy(M, tM, nn, -1.0)                                  # tM
            _copy(tgQ, tB, m, n, False)
            _mm(tQ, L, tB, m, n, n, False, False)
            _copyltu(tM, L, n)
            _mm(Q, L, tB, m, n, n, False, False)                    # tB
            _scale(X, mn, -1.0)
            _mm(X, tR, tB, m, n, n, False, True)                    # tB - gA0 tR^T
            _right_solve(R, tB, X, Z, m, n, 1)
            _axpy(X, TGA[q * mn:(q + 1) * mn], mn, 1.0)


# ---- forward: portable modified Gram-Schmidt -------------------------------------------------

@qr.fwd
def qr_fwd(V, S, a, b, c, o, ip, c0, c1):
    m, n = ip[1], ip[2]
    mn = m * n
    size = mn + n * n
    A = view(V, S, a)
    Y = view(V, S, o)
    for q in range(ip[0]):
        Q = Y[q * size:q * size + mn]
        R = Y[q * size + mn:(q + 1) * size]
        _copy(A[q * mn:(q + 1) * mn], Q, m, n, False)
        _zero(R, n * n)
        for j in range(n):
            for i in range(j):
                dot = 0.0
                for k in range(m):
                    dot += Q[k * n + i] * Q[k * n + j]
                R[i * n + j] = dot
                for k in range(m):
                    Q[k * n + j] -= dot * Q[k * n + i]
            total = 0.0
            for k in range(m):
                total += Q[k * n + j] * Q[k * n + j]
            R[j * n + j] = math.sqrt(total)
            for k in range(m):
                Q[k * n + j] = Q[k * n + j] / R[j * n + j] if R[j * n + j] > 0.0 else 0.0


# ---- flat and column layouts: LAPACK, as numpy calls it --------------------------------------

@helper(layout="flat")
def _lapack_qr(A, Y, m, n):
    """Y = (Q, R) of the row-major m x n matrix A by numba's np.linalg.qr (LAPACK's geqrf and
    orgqr, as numpy calls them); all NaN where A has an inf or a NaN."""
    if _all_finite(A):
        Q, R = np.linalg.qr(A.reshape((m, n)))
        Y[:m * n].reshape((m, n))[:, :] = Q
        Y[m * n:].reshape((n, n))[:, :] = R
    else:
        Y[:] = np.nan


@qr.rule("fwd", layout="flat")
def qr_fwd_lapack(V, S, a, b, c, o, ip, c0, c1):
    m, n = ip[1], ip[2]
    size = m * n + n * n
    A = view(V, S, a)
    Y = view(V, S, o)
    for q in range(ip[0]):
        if size > 0:
            _lapack_qr(A[q * m * n:(q + 1) * m * n], Y[q * size:(q + 1) * size], m, n)


@qr.rule("fwd", layout="column")
def qr_fwd_lapack_points(V, S, a, b, c, o, ip, c0, c1):
    m, n = ip[1], ip[2]
    size = m * n + n * n
    A = view(V, S, a)
    Y = view(V, S, o)
    X = np.empty(m * n)
    W = np.empty(size)
    for q in range(ip[0]):
        for p in range(Y.shape[1]):
            for i in range(m * n):
                X[i] = A[q * m * n + i, p]
            if size > 0:
                _lapack_qr(X, W, m, n)
            for i in range(size):
                Y[q * size + i, p] = W[i]
