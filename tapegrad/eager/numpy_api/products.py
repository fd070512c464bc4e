"""numpy's products on tensors: `matmul` (the `@` operator, a ufunc) and `dot` (numpy's rule,
which differs from PyTorch's `dot` for operands of more than one axis: `ops.numpy_dot`)."""
import numpy as np

from .. import ops
from .registry import implements, implements_ufunc

implements_ufunc(np.matmul)(ops.matmul)
implements(np.dot)(ops.numpy_dot)
