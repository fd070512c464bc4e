"""numpy's products on tensors: `matmul` (the `@` operator, a ufunc), `dot` (numpy's rule,
which differs from PyTorch's `dot` for operands of more than one axis: `ops.numpy_dot`), and
einsum with the products written with it (tensordot, inner, outer, kron, vdot, vecdot, matvec,
vecmat) and the cross product, recorded as gathers, batched matmuls, elementwise products and
segment sums (see `eager.contraction`)."""
import numpy as np

from .. import contraction, indexmaps, ops
from .registry import implements, implements_ufunc

implements_ufunc(np.matmul)(ops.matmul)
implements(np.dot)(ops.numpy_dot)


@implements(np.linalg.matmul)
def linalg_matmul(x1, x2, /):
    return ops.matmul(x1, x2)


implements(np.einsum, notes="every subscript form (implicit output, ellipsis, repeated "
                            "indices, sublists); contracted pairwise in numpy's greedy order, "
                            "each pair one batched matmul; `out=` is refused")(contraction.einsum)
implements(np.tensordot, np.linalg.tensordot)(contraction.tensordot)
implements(np.inner)(contraction.inner)
implements(np.kron)(contraction.kron)
implements(np.vdot)(contraction.vdot)


@implements(np.outer)
def outer(a, b, out=None):
    if out is not None:
        raise TypeError("numpy.outer on Tensors does not write into out=; use its result")
    return contraction.outer(a, b)


@implements(np.linalg.outer)
def linalg_outer(x1, x2, /):
    x1, x2 = ops.as_tensor(x1), ops.as_tensor(x2)
    np.linalg.outer(x1._data, x2._data)            # numpy's checks: vectors only
    return contraction.outer(x1, x2)


@implements(np.cross, notes="3-vectors, and 2-vectors (deprecated by numpy) with a zero "
                            "third component")
def cross(a, b, axisa=-1, axisb=-1, axisc=-1, axis=None):
    return contraction.cross(a, b, axisa, axisb, axisc, axis)


@implements(np.linalg.cross)
def linalg_cross(x1, x2, /, *, axis=-1):
    x1, x2 = ops.as_tensor(x1), ops.as_tensor(x2)
    np.linalg.cross(x1._data, x2._data, axis=axis)     # numpy's checks: 3-vectors only
    return contraction.cross(x1, x2, axis=axis)


def _vector_product(spec, npfn, a, b):
    """A ufunc product of numpy 2 (vecdot, matvec, vecmat): einsum `spec` holding npfn's value."""
    a, b = ops.as_tensor(a), ops.as_tensor(b)
    return contraction.contract_spec(spec, [a, b], npfn(a._data, b._data))


_VECTOR_PRODUCTS = dict(vecdot="...i,...i->...", matvec="...ij,...j->...i",
                        vecmat="...i,...ij->...j")
for _name, _spec in _VECTOR_PRODUCTS.items():
    _ufunc = getattr(np, _name, None)          # numpy >= 2.0 (vecdot), 2.2 (matvec, vecmat)
    if isinstance(_ufunc, np.ufunc):
        implements_ufunc(_ufunc)(
            lambda a, b, _spec=_spec, _ufunc=_ufunc: _vector_product(_spec, _ufunc, a, b))


@implements(np.linalg.vecdot)
def linalg_vecdot(x1, x2, /, *, axis=-1):
    x1, x2 = ops.as_tensor(x1), ops.as_tensor(x2)
    value = np.linalg.vecdot(x1._data, x2._data, axis=axis)
    last = [t if axis % t._data.ndim == t._data.ndim - 1 else indexmaps.movedim(t, axis, -1)
            for t in (x1, x2)]          # the axis of each operand, as numpy's gufunc reads it
    return contraction.contract_spec("...i,...i->...", last, value)
