"""The table of numpy functions that tensors implement, and numpy's two dispatch hooks.

numpy hands a call with a tensor among its arguments to the tensor: a ufunc (`np.sin(x)`,
`W @ x`, `np.add(a, x)`) to `Tensor.__array_ufunc__`, any other public function (`np.sum(x)`,
`np.concatenate([x, y])`) to `Tensor.__array_function__`. Both look the function up here and
call the implementation registered for it with numpy's arguments; a function nobody registered
raises TypeError (so a tensor never silently turns into a plain array). Implementations
register with `implements` and `implements_ufunc`; see the package docstring.
"""
import numpy as np

from ..tensor import Tensor

_FUNCTIONS = {}     # numpy function -> implementation
_UFUNCS = {}        # numpy ufunc -> implementation
SUPPORT = {}        # numpy function or ufunc -> Support (what docs/numpy.md says of it)


class Support:
    """What a registered numpy function supports, for the generated table of docs/numpy.md.

    `differentiable`: whether it has derivatives (False: a constant result that passes
    through, zero gradient, as `np.floor` or `np.argmax`); `fused`: whether tapes using it can
    take vmap's fused tier (False when a kernel it records branches on values, as max/min/sort
    do); `cuda`: whether vmap(..., device="cuda") replays it; `notes`: anything a user must know
    (conventions at ties and kinks, unsupported arguments)."""
    __slots__ = ("differentiable", "fused", "cuda", "notes")

    def __init__(self, differentiable=True, fused=True, cuda=True, notes=""):
        self.differentiable, self.fused, self.cuda, self.notes = \
            differentiable, fused, cuda, notes


def implements(*functions, **support):
    """Decorator: the decorated function implements the numpy `functions` (not ufuncs) on
    tensors; it is called with the arguments the caller gave numpy. Keywords: `Support`'s."""
    for f in functions:
        if isinstance(f, np.ufunc) or not callable(f):
            raise TypeError(f"implements() takes numpy functions; got {f!r} (register ufuncs "
                            "with implements_ufunc)")
    return _registrar(_FUNCTIONS, functions, Support(**support))


def implements_ufunc(*ufuncs, **support):
    """Decorator: the decorated function implements the numpy `ufuncs` on tensors; it is
    called with the operands (a ufunc's keyword arguments and methods, such as `out=` or
    `np.add.reduce`, are refused before it is called). Keywords: `Support`'s."""
    for f in ufuncs:
        if not isinstance(f, np.ufunc):
            raise TypeError(f"implements_ufunc() takes numpy ufuncs; got {f!r} (register other "
                            "functions with implements)")
    return _registrar(_UFUNCS, ufuncs, Support(**support))


def _registrar(table, functions, support):
    functions = tuple(dict.fromkeys(functions))     # aliases (np.true_divide is np.divide) once

    def register(implementation):
        for f in functions:
            if f in table:
                raise ValueError(f"numpy.{f.__name__} is implemented twice: by "
                                 f"{_where(table[f])} and by {_where(implementation)}")
        for f in functions:
            table[f] = implementation
            SUPPORT[f] = support
        return implementation
    return register


def _where(implementation):
    module = getattr(implementation, "__module__", None)
    name = getattr(implementation, "__qualname__", None)
    return f"{module}.{name}" if module and name else repr(implementation)


def implementation(function):
    """The implementation registered for a numpy function or ufunc, or None."""
    table = _UFUNCS if isinstance(function, np.ufunc) else _FUNCTIONS
    return table.get(function)


def array_ufunc(tensor, ufunc, method, *inputs, **kwargs):
    """`Tensor.__array_ufunc__`: a plain call of a registered ufunc goes to its implementation."""
    fn = _UFUNCS.get(ufunc)
    if fn is None or method != "__call__" or kwargs:
        raise TypeError(f"tapegrad does not support numpy.{ufunc.__name__}"
                        f"{'' if method == '__call__' else '.' + method} on Tensors "
                        f"{'with keyword arguments ' + str(sorted(kwargs)) if kwargs else ''}"
                        "; use a tapegrad operation")
    return fn(*inputs)


def array_function(tensor, func, types, args, kwargs):
    """`Tensor.__array_function__`: a registered function goes to its implementation."""
    fn = _FUNCTIONS.get(func)
    if fn is None:
        module = getattr(func, "__module__", None) or "numpy"     # numpy.linalg.eig, not eig
        where = module if module.startswith("numpy.") and not module.startswith("numpy._") \
            else "numpy"
        raise TypeError(f"tapegrad does not support {where}.{func.__name__} on Tensors; "
                        "use a tapegrad operation")
    return fn(*args, **kwargs)


Tensor.__array_ufunc__ = array_ufunc
Tensor.__array_function__ = array_function
