"""numpy's reductions on tensors: `sum`, `mean`, `prod`, `max`/`amax`, `min`/`amin`. The ops take
numpy's `axis`, `keepdims` and `dtype` as well as PyTorch's `dim` and `keepdim`."""
import numpy as np

from .. import ops
from .registry import implements

implements(np.sum)(ops.sum)
implements(np.mean)(ops.mean)
implements(np.prod)(ops.prod)
implements(np.max, np.amax)(ops.amax)
implements(np.min, np.amin)(ops.amin)
