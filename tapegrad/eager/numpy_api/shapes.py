"""numpy's shape functions on tensors: reshaping, transposing, joining, broadcasting, and the
shape queries. Reshapes and transposes are views where numpy's are (see `eager.views`)."""
import numpy as np

from .. import ops
from .registry import implements


@implements(np.transpose)
def transpose(a, axes=None):
    return ops.transpose(a) if axes is None else ops.permute(a, axes)


@implements(np.reshape)
def reshape(a, shape, **ignored):
    return ops.reshape(a, shape)


@implements(np.ravel)
def ravel(a):
    return ops.reshape(a, -1)


@implements(np.squeeze)
def squeeze(a, axis=None):
    return ops.squeeze(a, axis)


@implements(np.expand_dims)
def expand_dims(a, axis):
    return ops.unsqueeze(a, axis)


@implements(np.concatenate)
def concatenate(arrays, axis=0):
    return ops.cat(arrays, axis)


@implements(np.stack)
def stack(arrays, axis=0):
    return ops.stack(arrays, axis)


@implements(np.broadcast_to)
def broadcast_to(array, shape):
    return ops.broadcast_to(ops.as_tensor(array), shape, name="ExpandBackward0")


@implements(np.shape)
def shape(a):
    return a._data.shape


@implements(np.ndim)
def ndim(a):
    return a._data.ndim


@implements(np.size)
def size(a):
    return a._data.size
