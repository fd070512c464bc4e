"""numpy's linear algebra on tensors: `np.linalg.solve`, `inv`, `det`, `slogdet`, `cholesky`,
`eigh`, `eigvalsh`, `svd`, `pinv`, `qr`, `norm`.

Each computes its value with numpy (so a trace gives numpy's value, and numpy's `LinAlgError`
with numpy's message for a singular or non-positive-definite matrix at trace time) and records
one primitive per call on stacked matrices (`core.prims.linalg_lu`, `linalg_cholesky`,
`linalg_eigh`, `linalg_svd`, `linalg_qr`), their leading axes broadcast as numpy broadcasts them:

* `solve(a, b)`: the `solve` primitive (Gaussian elimination with partial pivoting); `inv(a)` is
  `solve(a, I)` with a constant identity shared by the batch.
* `slogdet(a)`: the `slogdet` primitive, whose (sign, log|det|) pairs are split by two gathers;
  the sign is piecewise constant (zero gradient). `det(a)` is `sign * exp(log|det|)`.
* `cholesky(a)`: the `cholesky` primitive (`upper=True`: its transpose). Only the lower
  triangle of `a` is read, as numpy does; the gradient is symmetric (the derivative along
  symmetric perturbations), as HIPS autograd's and JAX's.
* `eigh(a, UPLO)`, `eigvalsh(a, UPLO)`: the `eigh` primitive, whose packed (w, v) two gathers
  split; one triangle is read, the gradient is symmetric, as cholesky's. `eigvalsh` records the
  eigenvectors too (its derivative needs them).
* `svd(a, full_matrices, compute_uv)`: the `svd` primitive (the reduced factors, packed
  (s, U, Vh), split by gathers); `full_matrices=True` is recorded where it equals the reduced
  decomposition (square matrices) and refused with NotImplementedError elsewhere, as HIPS
  autograd and JAX refuse its derivative; `hermitian=True` is refused.
* `qr(a, mode)`: the `qr` primitive (packed Q, R split by gathers), for modes 'reduced' and
  'r' of matrices with at least as many rows as columns (the others raise
  NotImplementedError when recording, as JAX refuses their derivatives).
* `pinv`: numpy's algorithm on the recorded reduced `svd`.
* `norm`: lowered onto abs, powers, sums, max and min (vector norms, and the Frobenius and
  1/inf matrix norms), and onto `svd(compute_uv=False)` for the matrix norms of singular
  values (`ord=2`, `-2`, `'nuc'`), as numpy computes them.

A replay recomputes the values with the primitives' kernels: `eigh`, `svd` and `qr` call
LAPACK's routines with numpy's arguments (numpy's values bit for bit, signs included); the
others agree with numpy's LAPACK to rounding (not bit for bit). A singular matrix at replay:
the per-point interpreters (`grad`, `jacrev`, ...) raise numpy's `LinAlgError` with numpy's
message, from the forward of `solve`, `inv` and `cholesky` and from the derivatives of `solve`,
`inv`, `slogdet` and `det` (the derivative of `log|det|` is `A^-T`, as HIPS autograd's, which
raises there too); `slogdet`'s and `det`'s forward give numpy's (0, -inf) and 0; `eigh`'s and
`svd`'s forward raise numpy's "did not converge" LinAlgError where LAPACK fails (a NaN). `vmap`
gives inf or NaN at such a point instead (its batched interpreters cannot raise), and refuses
`device="cuda"` for these primitives.
"""
import math

import numpy as np

from .. import ops
from ..tensor import constant, record
from ...core.registry import BY_NAME
from .registry import implements

_SOLVE, _SLOGDET, _CHOLESKY = BY_NAME["solve"], BY_NAME["slogdet"], BY_NAME["cholesky"]
_EIGH, _SVD, _QR = BY_NAME["eigh"], BY_NAME["svd"], BY_NAME["qr"]
_NOTES_LAPACK = ("stacked matrices broadcast; singular input: numpy's LinAlgError at trace and "
                 "at per-point replay, inf/NaN under vmap")


def _batched(t, batch_shape, matrix_shape):
    """(operand, batch stride) of `t`, a stack of `matrix_shape` matrices, for a primitive over
    `batch_shape` matrices: itself where its leading axes are the batch's, stride 0 where it is
    one matrix for every point of the batch, else broadcast to the batch."""
    block = math.prod(matrix_shape)
    lead = t._data.shape[:-len(matrix_shape)] if matrix_shape else t._data.shape
    if lead == tuple(batch_shape):
        return t, block
    if math.prod(lead) == 1:
        return t, 0
    return ops.broadcast_to(t, tuple(batch_shape) + tuple(matrix_shape)), block


@implements(np.linalg.solve, cuda=False, fused=False, notes=_NOTES_LAPACK)
def solve(a, b):
    a, b = ops.as_tensor(a), ops.as_tensor(b)
    value = np.linalg.solve(a._data, b._data)
    if not ops._recording(a, b):
        return constant(value)
    n = a._data.shape[-1]
    vector = b._data.ndim == 1                      # numpy 2: only a 1-d b is a vector
    k = 1 if vector else b._data.shape[-1]
    batch_shape = value.shape[:-1] if vector else value.shape[:-2]
    a_op, sa = _batched(a, batch_shape, (n, n))
    b_op, sb = _batched(b, batch_shape, (n,) if vector else (n, k))
    payload = np.array([math.prod(batch_shape), n, k, sa, sb], np.int64)
    return record(_SOLVE, (a_op, b_op), value, payload, name="LinalgSolveExBackward0")


@implements(np.linalg.inv, cuda=False, fused=False, notes=_NOTES_LAPACK)
def inv(a):
    a = ops.as_tensor(a)
    value = np.linalg.inv(a._data)
    if not ops._recording(a):
        return constant(value)
    n = a._data.shape[-1]
    identity = constant(np.eye(n, dtype=value.dtype))
    payload = np.array([math.prod(value.shape[:-2]), n, n, n * n, 0], np.int64)
    return record(_SOLVE, (a, identity), value, payload, name="LinalgInvExBackward0")


def _signs_and_logs(a, result):
    """The recorded slogdet of `a` (numpy's `result`) as (sign, log|det|) tensors."""
    sign, logabsdet = np.asarray(result[0]), np.asarray(result[1])
    n = a._data.shape[-1]
    pairs = np.stack([sign, logabsdet], axis=-1)
    payload = np.array([sign.size, n], np.int64)
    y = record(_SLOGDET, (a,), pairs, payload, name="LinalgSlogdetBackward0")
    positions = ops._positions(pairs.shape)
    return (ops.record_gather(y, positions[..., 0], sign, "SelectBackward0"),
            ops.record_gather(y, positions[..., 1], logabsdet, "SelectBackward0"))


@implements(np.linalg.slogdet, cuda=False, fused=False,
            notes="the sign has zero gradient; " + _NOTES_LAPACK)
def slogdet(a):
    a = ops.as_tensor(a)
    result = np.linalg.slogdet(a._data)
    if not ops._recording(a):
        return type(result)(*(constant(np.asarray(r)) for r in result))
    return type(result)(*_signs_and_logs(a, result))


@implements(np.linalg.det, cuda=False, fused=False,
            notes="sign * exp(log|det|): its gradient at a singular matrix raises; "
                  + _NOTES_LAPACK)
def det(a):
    a = ops.as_tensor(a)
    value = np.asarray(np.linalg.det(a._data))
    if not ops._recording(a):
        return constant(value)
    sign, logabsdet = _signs_and_logs(a, np.linalg.slogdet(a._data))
    return record(BY_NAME["mul"], (sign, ops.exp(logabsdet)), value,
                  name="LinalgDetBackward0")


@implements(np.linalg.cholesky, cuda=False, fused=False,
            notes="reads the lower triangle; symmetric gradient; " + _NOTES_LAPACK)
def cholesky(a, /, *, upper=False):
    a = ops.as_tensor(a)
    value = np.linalg.cholesky(a._data)
    if not ops._recording(a):
        return constant(np.linalg.cholesky(a._data, upper=True) if upper else value)
    n = a._data.shape[-1]
    payload = np.array([math.prod(value.shape[:-2]), n], np.int64)
    L = record(_CHOLESKY, (a,), value, payload, name="LinalgCholeskyExBackward0")
    return ops.transpose(L, -2, -1) if upper else L


# ---- eigh, eigvalsh ---------------------------------------------------------------------------

_NOTES_EIGH = ("stacked matrices; reads one triangle (UPLO), symmetric gradient; repeated "
               "eigenvalues: finite eigenvalue gradients, inf/NaN where eigenvectors' "
               "derivatives or second derivatives meet them")


def _record_eigh(a, UPLO, w, v, values_only):
    """The recorded (eigenvalues, eigenvectors) of `a`, numpy's `w` and `v`: one `eigh` entry
    whose packed output (w, then v, per matrix) two gathers split."""
    n = a._data.shape[-1]
    batch_shape = w.shape[:-1]
    packed = np.concatenate([w, v.reshape(batch_shape + (n * n,))], axis=-1)
    payload = np.array([math.prod(batch_shape), n, UPLO.upper() == "U", values_only], np.int64)
    y = record(_EIGH, (a,), packed, payload, name="LinalgEighBackward0")
    positions = ops._positions(packed.shape)
    return (ops.record_gather(y, positions[..., :n], w, "SelectBackward0"),
            ops.record_gather(y, positions[..., n:].reshape(v.shape), v, "SelectBackward0"))


@implements(np.linalg.eigh, cuda=False, fused=False, notes=_NOTES_EIGH)
def eigh(a, UPLO="L"):
    a = ops.as_tensor(a)
    result = np.linalg.eigh(a._data, UPLO)        # numpy's checks of `a` and UPLO
    if not ops._recording(a):
        return type(result)(*(constant(r) for r in result))
    return type(result)(*_record_eigh(a, UPLO, result[0], result[1], False))


@implements(np.linalg.eigvalsh, cuda=False, fused=False, notes=_NOTES_EIGH)
def eigvalsh(a, UPLO="L"):
    a = ops.as_tensor(a)
    w = np.linalg.eigvalsh(a._data, UPLO)
    if not ops._recording(a):
        return constant(w)
    return _record_eigh(a, UPLO, w, np.linalg.eigh(a._data, UPLO)[1], True)[0]


# ---- svd -------------------------------------------------------------------------------------

_NOTES_SVD = ("stacked matrices; full_matrices=True only for square matrices when "
              "differentiated (the extra columns have no derivative); repeated singular "
              "values: finite gradients of s, inf/NaN where the vectors' derivatives meet them")


def _record_svd(a, s, U, Vh, values_only):
    """The recorded (s, U, Vh) of `a`, numpy's reduced factors: one `svd` entry whose packed
    output (s, U, Vh per matrix) three gathers split."""
    m, n = a._data.shape[-2:]
    k = min(m, n)
    batch_shape = s.shape[:-1]
    packed = np.concatenate([s, U.reshape(batch_shape + (m * k,)),
                             Vh.reshape(batch_shape + (k * n,))], axis=-1)
    payload = np.array([math.prod(batch_shape), m, n, values_only], np.int64)
    y = record(_SVD, (a,), packed, payload, name="LinalgSvdBackward0")
    positions = ops._positions(packed.shape)
    return (ops.record_gather(y, positions[..., :k], s, "SelectBackward0"),
            ops.record_gather(y, positions[..., k:k + m * k].reshape(U.shape), U,
                              "SelectBackward0"),
            ops.record_gather(y, positions[..., k + m * k:].reshape(Vh.shape), Vh,
                              "SelectBackward0"))


@implements(np.linalg.svd, cuda=False, fused=False, notes=_NOTES_SVD)
def svd(a, full_matrices=True, compute_uv=True, hermitian=False):
    a = ops.as_tensor(a)
    result = np.linalg.svd(a._data, full_matrices, compute_uv, hermitian)
    if not ops._recording(a):
        return type(result)(*(constant(r) for r in result)) if compute_uv else constant(result)
    if hermitian:
        raise NotImplementedError("np.linalg.svd(hermitian=True) is not supported on tensors "
                                  "(use hermitian=False, or np.linalg.eigh)")
    m, n = a._data.shape[-2:]
    if not compute_uv:
        U, _, Vh = np.linalg.svd(a._data, full_matrices=False)
        return _record_svd(a, result, U, Vh, True)[0]
    if full_matrices and m != n:
        raise NotImplementedError(
            f"np.linalg.svd(full_matrices=True) of a {m} x {n} matrix is not differentiable "
            "(its extra singular vectors have no derivative): use full_matrices=False")
    s, U, Vh = _record_svd(a, result.S, result.U, result.Vh, False)
    return type(result)(U, s, Vh)



@implements(np.linalg.pinv, cuda=False, fused=False,
            notes="numpy's algorithm on the recorded svd (singular values at or below the "
                  "cutoff discarded, recomputed at each replay); agrees with numpy to rounding")
def pinv(a, rcond=None, hermitian=False, *, rtol=np._NoValue):
    a = ops.as_tensor(a)
    value = np.linalg.pinv(a._data, rcond=rcond, hermitian=hermitian, rtol=rtol)
    if not ops._recording(a) or a._data.size == 0:
        return constant(value)
    if hermitian:
        raise NotImplementedError("np.linalg.pinv(hermitian=True) is not supported on tensors "
                                  "(use hermitian=False)")
    if rcond is None:           # numpy's default cutoff
        rcond = 1e-15 if rtol is np._NoValue else \
            max(a._data.shape[-2:]) * np.finfo(value.dtype).eps if rtol is None else rtol
    U, s, Vh = svd(a, full_matrices=False)
    cutoff = ops.mul(constant(np.asarray(rcond)[..., np.newaxis]),
                     ops.amax(s, axis=-1, keepdims=True))
    large = ops.gt(s, cutoff)
    inverse = ops.where(large, ops.div(1.0, ops.where(large, s, 1.0)), 0.0)
    scaled = ops.mul(ops.reshape(inverse, inverse._data.shape + (1,)), ops.transpose(U, -1, -2))
    return ops.matmul(ops.transpose(Vh, -1, -2), scaled)


# ---- qr --------------------------------------------------------------------------------------

@implements(np.linalg.qr, cuda=False, fused=False,
            notes="stacked matrices; modes 'reduced' and 'r' of m x n matrices with m >= n "
                  "when differentiated (NotImplementedError otherwise, as JAX); a "
                  "rank-deficient matrix gives inf/NaN derivatives")
def qr(a, mode="reduced"):
    a = ops.as_tensor(a)
    result = np.linalg.qr(a._data, mode)                # numpy's checks and value
    if not ops._recording(a):
        return constant(result) if isinstance(result, np.ndarray) else \
            type(result)(*(constant(r) for r in result)) if hasattr(result, "_fields") else \
            tuple(constant(r) for r in result)
    m, n = a._data.shape[-2:]
    if mode not in ("reduced", "r") or m < n:
        raise NotImplementedError(
            f"np.linalg.qr(mode={mode!r}) of a {m} x {n} matrix is not differentiable on "
            "tensors: use mode='reduced' or 'r' with at least as many rows as columns")
    Q, R = np.linalg.qr(a._data) if mode == "r" else result
    batch_shape = Q.shape[:-2]
    packed = np.concatenate([Q.reshape(batch_shape + (m * n,)),
                             R.reshape(batch_shape + (n * n,))], axis=-1)
    payload = np.array([math.prod(batch_shape), m, n], np.int64)
    y = record(_QR, (a,), packed, payload, name="LinalgQrBackward0")
    positions = ops._positions(packed.shape)
    r = ops.record_gather(y, positions[..., m * n:].reshape(R.shape), R, "SelectBackward0")
    if mode == "r":
        return r
    q = ops.record_gather(y, positions[..., :m * n].reshape(Q.shape), Q, "SelectBackward0")
    return type(result)(q, r)


# ---- norm ------------------------------------------------------------------------------------

def _finish(prim_name, x, value):
    """Record the last elementwise step of a norm with numpy's value of the whole norm."""
    return record(BY_NAME[prim_name], (x,), np.asarray(value))


def _vector_norm(x, ord, axis, keepdims, value):
    if ord is None or ord == 2:
        return _finish("sqrt", ops.sum(ops.mul(x, x), axis=axis, keepdims=keepdims), value)
    if ord == 0:                                    # a count: no gradient, as numpy's
        return constant(np.asarray(value))
    absx = ops.abs(x)
    if ord == math.inf:
        return ops.amax(absx, axis=axis, keepdims=keepdims)
    if ord == -math.inf:
        return ops.amin(absx, axis=axis, keepdims=keepdims)
    if ord == 1:
        return ops.sum(absx, axis=axis, keepdims=keepdims)
    total = ops.sum(ops.pow(absx, float(ord)), axis=axis, keepdims=keepdims)
    return record(BY_NAME["pow"], (total, constant(np.asarray(1.0 / ord, total._data.dtype))),
                  np.asarray(value))


def _singular_value_norm(x, ord, row, col, value):
    """numpy's matrix norms of singular values: the max (ord=2), min (-2) or sum ('nuc') of
    `svd(compute_uv=False)` over the matrices of axes (row, col) moved last."""
    rest = [d for d in range(x._data.ndim) if d not in (row, col)]
    s = svd(ops.permute(x, rest + [row, col]), compute_uv=False)
    reduce = {2: ops.amax, -2: ops.amin, "nuc": ops.sum}[ord]
    return ops.reshape(reduce(s, axis=-1), np.shape(value))


def _matrix_norm(x, ord, row, col, keepdims, value):
    if ord is None or ord == "fro":
        total = ops.sum(ops.mul(x, x), axis=(row, col))
        return ops.reshape(_finish("sqrt", total, np.asarray(value).reshape(total._data.shape)),
                           np.shape(value))
    if ord in (2, -2, "nuc"):
        return _singular_value_norm(x, ord, row, col, value)
    if ord in (1, -1):
        summed, over = row, col - (col > row)       # column sums, then the extreme over columns
    elif ord in (math.inf, -math.inf):
        summed, over = col, row - (row > col)       # row sums, then the extreme over rows
    else:
        raise ValueError("Invalid norm order for matrices.")
    sums = ops.sum(ops.abs(x), axis=summed)
    extreme = ops.amax(sums, axis=over) if ord > 0 else ops.amin(sums, axis=over)
    return ops.reshape(extreme, np.shape(value)) if keepdims else extreme


@implements(np.linalg.norm,
            notes="vector and matrix norms of every order; the matrix 2, -2 and 'nuc' norms "
                  "through svd (not on the GPU, not fused); the gradient of the 2-norm at 0 "
                  "is NaN, as HIPS autograd's; ties of the max/min norms share it")
def norm(x, ord=None, axis=None, keepdims=False):
    x = ops.as_tensor(x)
    value = np.linalg.norm(x._data, ord=ord, axis=axis, keepdims=keepdims)   # numpy's checks
    if not ops._recording(x):
        return constant(np.asarray(value))
    ndim = x._data.ndim
    if axis is None:            # numpy: every axis, a vector's norm, or a matrix's given `ord`
        axis = (0, 1) if ndim == 2 and ord is not None else tuple(range(ndim))
        if ndim != 2 or ord is None:
            return _vector_norm(x, ord, axis, keepdims, value)
    if isinstance(axis, tuple) and len(axis) == 2:
        row, col = (a % ndim for a in axis)
        return _matrix_norm(x, ord, row, col, keepdims, value)
    return _vector_norm(x, ord, axis, keepdims, value)
