"""numpy's functions on tensors: `np.sin(x)`, `np.sum(x, axis=0)`, `W @ x` record on the tape.

numpy hands any call with a tensor among its arguments to the tensor (`__array_ufunc__` for
ufuncs, `__array_function__` for the other functions); `registry` looks the function up in one
table and calls the implementation registered for it. A function that nothing implements raises
TypeError naming it, never a silent conversion to a plain array (which would cut the gradient).

The implementations live in one module per family (`elementwise`, `reductions`, `shapes`,
`products`...). Every module in this package is imported when the package is, so adding a
family is adding a file, and modules written at the same time touch no shared file.

Adding a numpy function:

1. Write its implementation in its family's module (or a new module here), computing the value
   with numpy and recording it with the primitives `eager.ops` records (an existing op, or
   `record(prim, operands, value, payload, c0, c1)`), and register it:

       import numpy as np

       from .. import ops
       from .registry import implements

       @implements(np.cumsum)
       def cumsum(a, axis=None, dtype=None, out=None):
           ...

   It is called with the arguments the caller gave numpy, tensors among them, so it takes
   numpy's parameter names. A ufunc registers with `implements_ufunc(np.some_ufunc)` and is
   called with the operands only: numpy's keyword arguments (`out=`, `where=`) and methods
   (`np.add.reduce`) raise before it is called. One implementation may register several
   functions (`@implements(np.max, np.amax)`); registering a function twice raises at import,
   naming both implementations.
2. Test it: its value against numpy's, its gradient with `tapegrad.testing.gradcheck` in every
   mode, and an unsupported argument's error.
"""
import importlib
import pkgutil

from .registry import implementation, implements, implements_ufunc

__all__ = ["implementation", "implements", "implements_ufunc"]

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
