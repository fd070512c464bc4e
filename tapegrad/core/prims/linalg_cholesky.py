"""cholesky: L = cholesky(A) for a batch of n x n matrices, ip = (batch, n); L is lower
triangular with a positive diagonal and A = L L^T. Only A's lower triangle is read (numpy's
`np.linalg.cholesky`, LAPACK's potrf with the lower triangle).

Derivatives (Iain Murray, "Differentiation of the Cholesky decomposition", 2016), with
Phi(X) = the lower triangle of X with its diagonal halved:

* VJP: S = L^-T Phi(L^T gL) L^-1, gA = (S + S^T) / 2, symmetric, as HIPS autograd and JAX
  give it: the derivative along symmetric perturbations of A (numpy reads A's lower triangle
  only, so the finite differences of single upper entries are zero; those of symmetric pairs
  agree).
* JVP: with tA's symmetric part tS = (tA + tA^T) / 2 (so that the JVP is the VJP's transpose),
  tL = L Phi(L^-1 tS L^-T).
* second order (the VJP's derivative along tL, tA, and the adjoint's tangent tgL): with
  P = Phi(L^T gL) and tP = Phi(tL^T gL + L^T tgL),
  tS = L^-T tP L^-1 - L^-T tL^T S - S tL L^-1, and tgA = (tS + tS^T) / 2.

The flat and column layouts run the portable rules (substitution only, no pivoting; the
column layout vectorised across the tile's points); the GPU does not (`cuda=False`). A matrix
that is not positive definite gives NaN (or inf) in the column layout; the flat layout's
forward raises numpy's LinAlgError("Matrix is not positive definite").
"""
import math

import numpy as np

from ..primitive import Values, helper, structural, temp, view
from .linalg import _add_symmetric, _axpy, _copy, _mm, _trsolve, _zero
from . import dependence, shapes


def _dimensions(ip, n_out, sizes):
    error = shapes.payload_length(ip, 2)
    if error:
        return error
    batch, n = int(ip[0]), int(ip[1])
    if batch < 0 or n < 0 or sizes[0] != batch * n * n or n_out != batch * n * n:
        return f"sizes {sizes[0]} -> {n_out} for {batch} matrices of {n} x {n}"
    return None


cholesky = structural(80, "cholesky", "LinalgCholeskyExBackward0", _dimensions,
                      reads=(((), True),), scratch=lambda n_out: 4 * n_out, cuda=False,
                      reads_elements=dependence.every_operand, curvature="nonlinear")


@helper
def _factor(A: Values, L: Values, n):
    """L = the Cholesky factor of A's lower triangle (n x n), zeros above the diagonal."""
    for j in range(n):
        s = A[j * n + j]
        for k in range(j):
            s -= L[j * n + k] * L[j * n + k]
        d = math.sqrt(s)
        L[j * n + j] = d
        for i in range(j + 1, n):
            t = A[i * n + j]
            for k in range(j):
                t -= L[i * n + k] * L[j * n + k]
            L[i * n + j] = t / d
        for i in range(j):
            L[i * n + j] = 0.0


@helper
def _phi(P: Values, n):
    """P = Phi(P): the lower triangle with its diagonal halved, zeros above."""
    for i in range(n):
        P[i * n + i] *= 0.5
        for j in range(i + 1, n):
            P[i * n + j] = 0.0


@helper
def _conjugate_solve(L: Values, X: Values, W: Values, n):
    """X = L^-T X L^-1 in place (W: n x n scratch): L^T Z = X, then L^T X^T = Z^T."""
    _trsolve(L, X, n, n, False, True)
    _copy(X, W, n, n, True)
    _trsolve(L, W, n, n, False, True)
    _copy(W, X, n, n, True)


@helper
def _adjoint(L: Values, GL: Values, P: Values, W: Values, n):
    """P = L^-T Phi(L^T gL) L^-1 (the VJP's S before symmetrising)."""
    _zero(P, n * n)
    _mm(L, GL, P, n, n, n, True, False)
    _phi(P, n)
    _conjugate_solve(L, P, W, n)


@helper
def _factor_batch(A: Values, L: Values, batch, n):
    nn = n * n
    for q in range(batch):
        Aq = A[q * nn:(q + 1) * nn]
        Lq = L[q * nn:(q + 1) * nn]
        _factor(Aq, Lq, n)


@cholesky.fwd
def cholesky_fwd(V, S, a, b, c, o, ip, c0, c1):
    A = view(V, S, a)
    L = view(V, S, o)
    _factor_batch(A, L, ip[0], ip[1])


@cholesky.vjp
def cholesky_vjp(V, G, S, NEED, a, b, c, o, ip, c0, c1):
    if NEED[a]:
        n = ip[1]
        nn = n * n
        L = view(V, S, o)
        GL = view(G, S, o)
        GA = view(G, S, a)
        P = temp(V, 0, nn)
        W = temp(V, nn, nn)
        for q in range(ip[0]):
            Lq = L[q * nn:(q + 1) * nn]
            GLq = GL[q * nn:(q + 1) * nn]
            GAq = GA[q * nn:(q + 1) * nn]
            _adjoint(Lq, GLq, P, W, n)
            _add_symmetric(P, GAq, n, 0.5)


@cholesky.jvp
def cholesky_jvp(V, T, S, a, b, c, o, ip, c0, c1):
    n = ip[1]
    nn = n * n
    L = view(V, S, o)
    TA = view(T, S, a)
    TL = view(T, S, o)
    P = temp(V, 0, nn)
    W = temp(V, nn, nn)
    for q in range(ip[0]):
        Lq = L[q * nn:(q + 1) * nn]
        TAq = TA[q * nn:(q + 1) * nn]
        TLq = TL[q * nn:(q + 1) * nn]
        _zero(W, nn)
        _add_symmetric(TAq, W, n, 0.5)
        _trsolve(Lq, W, n, n, False, False)           # L^-1 tS
        _copy(W, P, n, n, True)
        _trsolve(Lq, P, n, n, False, False)           # L^-1 tS L^-T
        _phi(P, n)
        _zero(TLq, nn)
        _mm(Lq, P, TLq, n, n, n, False, False)


@cholesky.vjp_jvp
def cholesky_vjp_jvp(V, T, G, TG, S, NEED, a, b, c, o, ip, c0, c1):
    if NEED[a]:
        n = ip[1]
        nn = n * n
        L = view(V, S, o)
        TL = view(T, S, o)
        GL = view(G, S, o)
        TGL = view(TG, S, o)
        TGA = view(TG, S, a)
        P = temp(V, 0, nn)
        W = temp(V, nn, nn)
        Z = temp(V, 2 * nn, nn)
        R = temp(V, 3 * nn, nn)
        for q in range(ip[0]):
            Lq = L[q * nn:(q + 1) * nn]
            TLq = TL[q * nn:(q + 1) * nn]
            GLq = GL[q * nn:(q + 1) * nn]
            TGLq = TGL[q * nn:(q + 1) * nn]
            TGAq = TGA[q * nn:(q + 1) * nn]
            _adjoint(Lq, GLq, P, W, n)                # S
            _zero(R, nn)                              # L^-T tP L^-1
            _mm(TLq, GLq, R, n, n, n, True, False)
            _mm(Lq, TGLq, R, n, n, n, True, False)
            _phi(R, n)
            _conjugate_solve(Lq, R, W, n)
            _zero(Z, nn)                              # - L^-T tL^T S
            _mm(TLq, P, Z, n, n, n, True, False)
            _trsolve(Lq, Z, n, n, False, True)
            _axpy(Z, R, nn, -1.0)
            _zero(Z, nn)                              # - S tL L^-1 = -(L^-T tL^T S^T)^T
            _mm(TLq, P, Z, n, n, n, True, True)
            _trsolve(Lq, Z, n, n, False, True)
            _copy(Z, W, n, n, True)
            _axpy(W, R, nn, -1.0)
            _add_symmetric(R, TGAq, n, 0.5)


# ---- flat layout: numpy's exception for a matrix that is not positive definite ---------------

@helper(layout="flat")
def _raise_unless_positive(L, batch, n):
    for q in range(batch):
        for j in range(n):
            if not L[q * n * n + j * n + j] > 0.0:
                raise np.linalg.LinAlgError("Matrix is not positive definite")


@cholesky.rule("fwd", layout="flat")
def cholesky_fwd_checked(V, S, a, b, c, o, ip, c0, c1):
    A = view(V, S, a)
    L = view(V, S, o)
    _factor_batch(A, L, ip[0], ip[1])
    _raise_unless_positive(L, ip[0], ip[1])
