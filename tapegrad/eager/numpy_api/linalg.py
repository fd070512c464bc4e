"""numpy's linear algebra on tensors: `np.linalg.solve`, `inv`, `det`, `slogdet`, `cholesky`,
`norm`.

Each computes its value with numpy (so a trace gives numpy's value, and numpy's `LinAlgError`
with numpy's message for a singular or non-positive-definite matrix at trace time) and records
one primitive per call on stacked matrices (`core.prims.linalg_lu`, `core.prims.linalg_cholesky`),
their leading axes broadcast as numpy broadcasts them:

* `solve(a, b)`: the `solve` primitive (Gaussian elimination with partial pivoting); `inv(a)` is
  `solve(a, I)` with a constant identity shared by the batch.
* `slogdet(a)`: the `slogdet` primitive, whose (sign, log|det|) pairs are split by two gathers;
  the sign is piecewise constant (zero gradient). `det(a)` is `sign * exp(log|det|)`.
* `cholesky(a)`: the `cholesky` primitive (`upper=True`: its transpose). Only the lower
  triangle of `a` is read, as numpy does; the gradient is symmetric (the derivative along
  symmetric perturbations), as HIPS autograd's and JAX's.
* `norm`: lowered onto abs, powers, sums, max and min (vector norms, and the Frobenius and
  1/inf matrix norms); the matrix norms of singular values (`ord=2`, `-2`, `'nuc'`) raise
  NotImplementedError.

A replay recomputes the values with the primitives' kernels, which agree with numpy's LAPACK
to rounding (not bit for bit). A singular matrix at replay: the per-point interpreters (`grad`,
`jacrev`, ...) raise numpy's `LinAlgError` with numpy's message, from the forward of `solve`,
`inv` and `cholesky` and from the derivatives of `solve`, `inv`, `slogdet` and `det` (the
derivative of `log|det|` is `A^-T`, as HIPS autograd's, which raises there too); `slogdet`'s and
`det`'s forward give numpy's (0, -inf) and 0. `vmap` gives inf or NaN at such a point instead
(its batched interpreters cannot raise), and refuses `device="cuda"` for these primitives.
"""
import math

import numpy as np

from .. import ops
from ..tensor import constant, record
from ...core.registry import BY_NAME
from .registry import implements

_SOLVE, _SLOGDET, _CHOLESKY = BY_NAME["solve"], BY_NAME["slogdet"], BY_NAME["cholesky"]
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


def _matrix_norm(x, ord, row, col, keepdims, value):
    if ord is None or ord == "fro":
        total = ops.sum(ops.mul(x, x), axis=(row, col))
        return ops.reshape(_finish("sqrt", total, np.asarray(value).reshape(total._data.shape)),
                           np.shape(value))
    if ord in (2, -2, "nuc"):
        raise NotImplementedError(f"np.linalg.norm(ord={ord!r}) of a matrix (its singular "
                                  "values) is not supported on tensors")
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
            notes="vector norms of every order and the 'fro', 1, -1, inf, -inf matrix norms "
                  "(ord=2, -2, 'nuc' raise NotImplementedError); the gradient of the 2-norm at "
                  "0 is NaN, as HIPS autograd's; ties of the max/min norms share it")
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
