"""Kernel helpers shared by the linear-algebra primitives (`linalg_*` modules).

Matrices are row-major runs of a view: an m x n matrix X holds X[i, j] at X[i * n + j]; a batch
of them is a view sliced per matrix. The portable helpers (kernel language, see
`core.layouts`) are the arithmetic every layout runs: products, transposes, triangular solves,
Gaussian elimination with partial pivoting, Jacobi rotations. A failed factorisation (a zero
pivot, a matrix that is not positive definite) gives inf or NaN there, never an exception: the
column layout cannot raise (an exception inside numba's parallel loop over tiles is lost). The flat
layout's overrides run the same helpers and then raise numpy's `LinAlgError`
(`_raise_if_singular`).
"""
import math

import numpy as np

from ..primitive import Values, helper
from .matmul import _product

# ---- checks ----------------------------------------------------------------------------------

@helper(layout="flat")
def _all_finite(X):
    """Whether every value of the view X is finite: the flat layout's LAPACK overrides check
    inputs and results with it. (`np.isfinite(X).all()` does the same through numba's array
    reductions, whose module imports scipy.linalg when a process loads the interpreters, a
    tenth of a second of every first gradient.)"""
    for i in range(X.size):
        if not math.isfinite(X[i]):
            return False
    return True


# ---- products and copies ---------------------------------------------------------------------


@helper
def _mm(A: Values, B: Values, Y: Values, m, k, n, ta, tb):
    """Y (m x n) += op(A) op(B), op(A) (m x k) being A or (when ta) the transpose of A."""
    _product(A, B, Y, 0, 0, 0, 1, m, k, n, ta, tb)


@helper
def _axpy(X: Values, Y: Values, size, alpha):
    """Y += alpha * X over `size` values."""
    for i in range(size):
        Y[i] += alpha * X[i]


@helper
def _copy(X: Values, Y: Values, m, n, transpose):
    """Y = X (m x n), or its transpose (n x m) when `transpose`."""
    for i in range(m):
        for j in range(n):
            if transpose:
                Y[j * m + i] = X[i * n + j]
            else:
                Y[i * n + j] = X[i * n + j]


@helper
def _add_symmetric(X: Values, Y: Values, n, alpha):
    """Y += alpha * (X + X^T) (n x n)."""
    for i in range(n):
        for j in range(n):
            Y[i * n + j] += alpha * (X[i * n + j] + X[j * n + i])


@helper
def _add_scaled(X: Values, Y: Values, size, Gs: Values, index, alpha):
    """Y += alpha * Gs[index] * X over `size` values (a per-point factor: an adjoint)."""
    for i in range(size):
        Y[i] += alpha * Gs[index] * X[i]


@helper
def _scale(X: Values, size, alpha):
    for i in range(size):
        X[i] *= alpha


@helper
def _zero(X: Values, size):
    for i in range(size):
        X[i] = 0.0


@helper
def _identity(X: Values, n):
    for i in range(n):
        for j in range(n):
            X[i * n + j] = 1.0 if i == j else 0.0


# ---- Jacobi rotations (the portable eigh and svd) ----------------------------------------------


@helper
def _set_rotation(R: Values):
    """R[0], R[1] = cos, sin of the Jacobi rotation that zeroes the off-diagonal entry R[2] of
    the symmetric 2 x 2 matrix [[R[0], R[2]], [R[2], R[1]]] (no rotation where it is zero)."""
    x = R[2]
    theta = (R[1] - R[0]) / (2.0 * x) if x != 0.0 else 0.0
    t = 1.0 / (abs(theta) + math.sqrt(theta * theta + 1.0))
    t = -t if theta < 0.0 else t
    t = t if x != 0.0 else 0.0
    R[0] = 1.0 / math.sqrt(t * t + 1.0)
    R[1] = t * R[0]


@helper
def _rotate(X: Values, R: Values, count, stride, step, p, q):
    """Lines p and q of X (X[k * stride + p * step], k < count: columns where step is 1, rows
    where stride is 1) rotated by R's (cos, sin): x_p, x_q = c x_p - s x_q, s x_p + c x_q."""
    for k in range(count):
        xp = X[k * stride + p * step]
        xq = X[k * stride + q * step]
        X[k * stride + p * step] = R[0] * xp - R[1] * xq
        X[k * stride + q * step] = R[1] * xp + R[0] * xq


@helper
def _swap_columns_if(X: Values, flag: Values, rows, cols, i, j):
    """Columns i and j of X (rows x cols) exchanged where flag[0] > 0."""
    for k in range(rows):
        xi = X[k * cols + i]
        xj = X[k * cols + j]
        X[k * cols + i] = xj if flag[0] > 0.0 else xi
        X[k * cols + j] = xi if flag[0] > 0.0 else xj


# ---- triangular solves and Gaussian elimination --------------------------------------------


@helper
def _trsolve(R: Values, X: Values, n, k, upper, trans):
    """X (n x k) = op(R)^-1 X in place, R (n x n) triangular (upper or lower; the other
    triangle is not read), op(R) = R or (trans) its transpose: substitution, forward where
    op(R) is lower triangular, backward where it is upper. A zero on R's diagonal gives inf or
    NaN."""
    lower = upper == trans
    for step in range(n):
        i = step if lower else n - 1 - step
        lo = 0 if lower else i + 1
        hi = i if lower else n
        for c in range(k):
            s = X[i * k + c]
            for j in range(lo, hi):
                r = R[j * n + i] if trans else R[i * n + j]
                s -= r * X[j * k + c]
            X[i * k + c] = s / R[i * n + i]


@helper
def _eliminate(LU: Values, X: Values, n, k, D: Values):
    """Gaussian elimination with partial pivoting (LAPACK's getf2: the pivot of column j is the
    first entry of largest magnitude on or below the diagonal) of LU (n x n), applying the row
    operations to X (n x k) too: LU becomes U above and on its diagonal (the multipliers below
    it), X becomes L^-1 P X. D[0] = the permutation's sign (+1 or -1). Rows are swapped by
    comparing each candidate row with the pivot's index, as the pivot differs from point to
    point. A zero pivot column leaves the column as it is (U's diagonal holds the zero).
Magnitudes are taken by comparison, not abs(), so that the fused tier's symbolic replay stops
at the first comparison (NotFusable) rather than failing inside abs()."""
    D[0] = 1.0
    for j in range(n):
        best = LU[j * n + j]
        if best < 0.0:
            best = -best
        pivot = 1.0 * j
        for r in range(j + 1, n):
            size = LU[r * n + j]
            if size < 0.0:
                size = -size
            if size > best:
                best = size
                pivot = 1.0 * r
        for r in range(j + 1, n):
            for col in range(n):
                if pivot == r:
                    swap = LU[j * n + col]
                    LU[j * n + col] = LU[r * n + col]
                    LU[r * n + col] = swap
            for col in range(k):
                if pivot == r:
                    swap = X[j * k + col]
                    X[j * k + col] = X[r * k + col]
                    X[r * k + col] = swap
        if pivot != j:
            D[0] = -D[0]
        u = LU[j * n + j]
        for r in range(j + 1, n):
            f = LU[r * n + j] / u if u != 0.0 else 0.0
            LU[r * n + j] = f
            for col in range(j + 1, n):
                LU[r * n + col] -= f * LU[j * n + col]
            for col in range(k):
                X[r * k + col] -= f * X[j * k + col]


@helper
def _lu_solve(A: Values, X: Values, LU: Values, D: Values, n, k, trans, F: Values):
    """X (n x k) = op(A)^-1 X, op(A) = A or (trans) A^T, by elimination with partial pivoting
    in the scratch LU (n x n); D[0] the permutation's sign. A singular matrix gives inf or
    NaN, and sets F[0] to 1."""
    _copy(A, LU, n, n, trans)
    _eliminate(LU, X, n, k, D)
    _trsolve(LU, X, n, k, True, False)
    _note_singular(LU, n, F)


@helper
def _note_singular(LU: Values, n, F: Values):
    """F[0] = 1 where the factorisation LU has a zero pivot (it is left as it is elsewhere)."""
    for j in range(n):
        if LU[j * n + j] == 0.0:
            F[0] = 1.0


# ---- the flat layout's exceptions ------------------------------------------------------------


@helper(layout="flat")
def _raise_if_singular(F):
    """numpy's LinAlgError where `_note_singular` flagged a zero pivot (F[0] = 1)."""
    if F[0] != 0.0:
        raise np.linalg.LinAlgError("Singular matrix")
