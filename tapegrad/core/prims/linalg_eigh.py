"""eigh: the eigendecomposition of a batch of symmetric n x n matrices, ip = (batch, n, upper,
values_only). Per matrix the output holds the n eigenvalues w in ascending order, then the
eigenvectors V (n x n, row-major, V[:, j] the eigenvector of w[j]): numpy's (w, v). Only one
triangle of A is read, the lower one or (upper = 1) the upper one, as numpy's `UPLO`.
`values_only` = 1 is `np.linalg.eigvalsh`: numpy computes its w by LAPACK without the
eigenvectors (equal to eigh's to rounding only), so w is computed so too, and V (which the
derivatives need) by a second call.

Derivatives, with F_ij = 1 / (w_j - w_i) off the diagonal (0 on it) and sym(X) = (X + X^T) / 2
(the derivative along symmetric perturbations, as HIPS autograd and JAX give it: numpy reads
one triangle, so finite differences of single entries differ, those of symmetric pairs agree):

* JVP: D = V^T sym(tA) V; tw = diag(D); tV = V (F o D).
* VJP: M = diag(gw) + F o (V^T gV); gA += sym(V M V^T).
* second order (the VJP's derivative along tA, the output's tangents tw, tV, and the adjoint's
  tangents tgw, tgV): tM = diag(tgw) + dF o K + F o (tV^T gV + V^T tgV), K = V^T gV,
  dF_ij = -(tw_j - tw_i) / (w_j - w_i)^2; tgA += sym(tV M V^T + V M tV^T + V tM V^T).

Repeated eigenvalues: F o X only takes the entries of X that are not zero, so the derivatives
of the eigenvalues alone (gV = 0: `eigvalsh`, or eigh's w only) stay finite, as HIPS
autograd's; where the eigenvectors' adjoint or tangent meets a repeated eigenvalue (their
derivative does not exist there) the result is inf or NaN, as JAX's. Second derivatives at a
repeated eigenvalue are inf or NaN.

Layouts: the flat layout's forward calls LAPACK's syevd as numpy does (the same routine and
arguments: numpy's values and eigenvectors' signs exactly) and raises numpy's LinAlgError
where it does not converge or gives NaN (numpy's LAPACK fails on a NaN matrix of 3 x 3 or
more, and returns NaN for smaller ones; scipy's, which numba calls, returns NaN); the column
layout calls it at each point of the tile (NaN where
it does not converge). The portable forward (cyclic Jacobi rotations, then sorted) is the GPU's and
the fused tier's, which do not run this primitive (`cuda=False`; the fused tier stops at its
first comparison); its eigenvectors' signs are not LAPACK's. The derivatives are portable.
"""
import numpy as np

from ..primitive import Values, helper, structural, temp, view
from .linalg import (_add_symmetric, _all_finite, _copy, _identity, _mm, _rotate,
                     _set_rotation, _swap_columns_if, _zero)
from . import dependence, shapes


def _dimensions(ip, n_out, sizes):
    error = shapes.payload_length(ip, 4)
    if error:
        return error
    batch, n, upper, values_only = (int(v) for v in ip)
    if batch < 0 or n < 0 or upper not in (0, 1) or values_only not in (0, 1) \
            or sizes[0] != batch * n * n or n_out != batch * (n + n * n):
        return f"sizes {sizes[0]} -> {n_out} for {batch} matrices of {n} x {n}"
    return None


eigh = structural(83, "eigh", "LinalgEighBackward0", _dimensions, reads=(((), True),),
                  scratch=lambda n_out: 4 * n_out, cuda=False,
                  reads_elements=dependence.every_operand, curvature="nonlinear")


# ---- derivatives (portable) ------------------------------------------------------------------

@helper
def _spectral(w: Values, tw: Values, X: Values, n, tangent):
    """X = F o X, or (tangent) X = dF o X with dF the tangent of F along tw; the diagonal
    zeroed, and entries where X is zero kept zero (see the module's docstring)."""
    for i in range(n):
        for j in range(n):
            x = X[i * n + j]
            gap = w[j] - w[i]
            if i == j or x == 0.0:
                X[i * n + j] = 0.0
            elif tangent:
                X[i * n + j] = -x * (tw[j] - tw[i]) / (gap * gap)
            else:
                X[i * n + j] = x / gap


@helper
def _add_diagonal(d: Values, X: Values, n):
    for i in range(n):
        X[i * n + i] += d[i]


@helper
def _conjugate(Vm: Values, M: Values, X: Values, Z: Values, n):
    """X = V M V^T (Z: n x n scratch)."""
    _zero(Z, n * n)
    _mm(Vm, M, Z, n, n, n, False, False)
    _zero(X, n * n)
    _mm(Z, Vm, X, n, n, n, False, True)


@eigh.vjp
def eigh_vjp(V, G, S, NEED, a, b, c, o, ip, c0, c1):
    if NEED[a]:
        n = ip[1]
        nn = n * n
        m = n + nn
        Y = view(V, S, o)
        GY = view(G, S, o)
        GA = view(G, S, a)
        M = temp(V, 0, nn)
        X = temp(V, nn, nn)
        Z = temp(V, 2 * nn, nn)
        for q in range(ip[0]):
            w = Y[q * m:q * m + n]
            Vm = Y[q * m + n:(q + 1) * m]
            gw = GY[q * m:q * m + n]
            gV = GY[q * m + n:(q + 1) * m]
            _zero(M, nn)
            _mm(Vm, gV, M, n, n, n, True, False)
            _spectral(w, w, M, n, False)
            _add_diagonal(gw, M, n)
            _conjugate(Vm, M, X, Z, n)
            _add_symmetric(X, GA[q * nn:(q + 1) * nn], n, 0.5)


@eigh.jvp
def eigh_jvp(V, T, S, a, b, c, o, ip, c0, c1):
    n = ip[1]
    nn = n * n
    m = n + nn
    Y = view(V, S, o)
    TA = view(T, S, a)
    TY = view(T, S, o)
    X = temp(V, 0, nn)
    Z = temp(V, nn, nn)
    for q in range(ip[0]):
        w = Y[q * m:q * m + n]
        Vm = Y[q * m + n:(q + 1) * m]
        tw = TY[q * m:q * m + n]
        tV = TY[q * m + n:(q + 1) * m]
        _zero(X, nn)
        _add_symmetric(TA[q * nn:(q + 1) * nn], X, n, 0.5)
        _zero(Z, nn)
        _mm(Vm, X, Z, n, n, n, True, False)
        _zero(X, nn)
        _mm(Z, Vm, X, n, n, n, False, False)        # D = V^T sym(tA) V
        for i in range(n):
            tw[i] = X[i * n + i]
        _spectral(w, w, X, n, False)
        _zero(tV, nn)
        _mm(Vm, X, tV, n, n, n, False, False)


@eigh.vjp_jvp
def eigh_vjp_jvp(V, T, G, TG, S, NEED, a, b, c, o, ip, c0, c1):
    if NEED[a]:
        n = ip[1]
        nn = n * n
        m = n + nn
        Y = view(V, S, o)
        TY = view(T, S, o)
        GY = view(G, S, o)
        TGY = view(TG, S, o)
        TGA = view(TG, S, a)
        M = temp(V, 0, nn)
        K = temp(V, nn, nn)
        R = temp(V, 2 * nn, nn)
        Z = temp(V, 3 * nn, nn)
        for q in range(ip[0]):
            w = Y[q * m:q * m + n]
            Vm = Y[q * m + n:(q + 1) * m]
            tw = TY[q * m:q * m + n]
            tV = TY[q * m + n:(q + 1) * m]
            gw = GY[q * m:q * m + n]
            gV = GY[q * m + n:(q + 1) * m]
            tgw = TGY[q * m:q * m + n]
            tgV = TGY[q * m + n:(q + 1) * m]
            _zero(K, nn)
            _mm(Vm, gV, K, n, n, n, True, False)    # K = V^T gV
            _copy(K, M, n, n, False)
            _spectral(w, w, M, n, False)
            _add_diagonal(gw, M, n)                 # M
            _zero(R, nn)
            _mm(tV, gV, R, n, n, n, True, False)
            _mm(Vm, tgV, R, n, n, n, True, False)
            _spectral(w, w, R, n, False)
            _spectral(w, tw, K, n, True)
            for i in range(nn):
                R[i] += K[i]
            _add_diagonal(tgw, R, n)                # tM
            _zero(Z, nn)
            _mm(tV, M, Z, n, n, n, False, False)
            _mm(Vm, R, Z, n, n, n, False, False)    # tV M + V tM
            _zero(K, nn)
            _mm(Z, Vm, K, n, n, n, False, True)
            _zero(Z, nn)
            _mm(Vm, M, Z, n, n, n, False, False)
            _mm(Z, tV, K, n, n, n, False, True)     # ... + V M tV^T
            _add_symmetric(K, TGA[q * nn:(q + 1) * nn], n, 0.5)


# ---- forward: portable Jacobi rotations ------------------------------------------------------

@helper
def _read_triangle(A: Values, X: Values, n, upper):
    """X = the symmetric matrix of A's lower (or upper) triangle."""
    for i in range(n):
        for j in range(n):
            if (j <= i) != (upper == 1):
                X[i * n + j] = A[i * n + j]
                X[j * n + i] = A[i * n + j]
            elif i == j:
                X[i * n + j] = A[i * n + j]


@helper
def _sort_pairs(X: Values, Vm: Values, F: Values, n):
    """Order the eigenvalues (X's diagonal) ascending, with V's columns (F: scratch)."""
    for i in range(n):
        for j in range(i + 1, n):
            F[0] = 1.0 if X[j * n + j] < X[i * n + i] else 0.0
            _swap_columns_if(Vm, F, n, n, i, j)
            xi = X[i * n + i]
            xj = X[j * n + j]
            X[i * n + i] = xj if F[0] > 0.0 else xi
            X[j * n + j] = xi if F[0] > 0.0 else xj


@eigh.fwd
def eigh_fwd(V, S, a, b, c, o, ip, c0, c1):
    n = ip[1]
    nn = n * n
    m = n + nn
    A = view(V, S, a)
    Y = view(V, S, o)
    X = temp(V, 0, nn)
    R = temp(V, nn, 3)
    for q in range(ip[0]):
        w = Y[q * m:q * m + n]
        Vm = Y[q * m + n:(q + 1) * m]
        _read_triangle(A[q * nn:(q + 1) * nn], X, n, ip[2])
        _identity(Vm, n)
        # 12 cyclic Jacobi sweeps (a literal: generated code has no module constants)
        for sweep in range(12):
            for p in range(n):
                for r in range(p + 1, n):       # X = J^T X J, V = V J, zeroing X[p, r]
                    R[0] = X[p * n + p]
                    R[1] = X[r * n + r]
                    R[2] = X[p * n + r]
                    _set_rotation(R)
                    _rotate(X, R, n, n, 1, p, r)
                    _rotate(X, R, n, 1, n, p, r)
                    _rotate(Vm, R, n, n, 1, p, r)
        _sort_pairs(X, Vm, R, n)
        for i in range(n):
            w[i] = X[i * n + i]


# ---- flat and column layouts: LAPACK, as numpy calls it --------------------------------------

@helper(layout="flat")
def _syevd(A, Y, n, upper, values_only):
    """Y = (w, V) of the row-major n x n matrix A by LAPACK's dsyevd, as numpy calls it: a
    matrix's Fortran-order buffer is its transpose's row-major one. Returns LAPACK's info
    (0: converged). `values_only`: w from a second call without eigenvectors (numpy's
    eigvalsh). `lapack` is `core.lapack`, which the generated modules import."""
    uplo = 85 if upper else 76                               # 'U', 'L'
    w = np.empty(n)
    work = np.empty((n, n))
    work[:, :] = A.reshape((n, n)).T
    info = lapack.syevd(100, 86, uplo, n, work.ctypes, n, w.ctypes)   # 'd', 'V'
    Y[n:].reshape((n, n))[:, :] = work.T
    if values_only:
        work[:, :] = A.reshape((n, n)).T
        info += lapack.syevd(100, 78, uplo, n, work.ctypes, n, w.ctypes)  # 'N'
    Y[:n] = w
    return info


@eigh.rule("fwd", layout="flat")
def eigh_fwd_lapack(V, S, a, b, c, o, ip, c0, c1):
    n = ip[1]
    nn = n * n
    A = view(V, S, a)
    Y = view(V, S, o)
    for q in range(ip[0]):
        Yq = Y[q * (n + nn):(q + 1) * (n + nn)]
        if n > 0 and (_syevd(A[q * nn:(q + 1) * nn], Yq, n, ip[2], ip[3]) != 0
                      or not _all_finite(Yq)):
            raise np.linalg.LinAlgError("Eigenvalues did not converge")


@eigh.rule("fwd", layout="column")
def eigh_fwd_lapack_points(V, S, a, b, c, o, ip, c0, c1):
    n = ip[1]
    nn = n * n
    m = n + nn
    A = view(V, S, a)
    Y = view(V, S, o)
    X = np.empty(nn)
    W = np.empty(m)
    for q in range(ip[0]):
        for p in range(Y.shape[1]):
            for i in range(nn):
                X[i] = A[q * nn + i, p]
            if n > 0 and _syevd(X, W, n, ip[2], ip[3]) != 0:
                W[:] = np.nan
            for i in range(m):
                Y[q * m + i, p] = W[i]
