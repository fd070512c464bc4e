"""`Array`: a traced value with numpy's semantics, for numpy code.

A function traced from numpy arrays or Python numbers (`tg.grad(f)(np.ones(3))`, `tg.vmap(f)`,
`tg.trace(f, 1.0)`) is numpy code, so its arguments are traced as `Array`s: a `Tensor` whose
attributes and methods are numpy's (`x.size` is an int, `x.shape` a tuple, `x.max(1)` an array,
`x.transpose(1, 0, 2)`, `x.reshape(2, 3)`, `x.astype(...)`, `x.sum(axis=0, keepdims=True)`,
`len(x)`, iteration, `bool(x)` with numpy's errors). A function traced from `tg.tensor`
arguments, and every eager tensor, keeps PyTorch's semantics (`Tensor`).

Flavour: the result of an operation is an Array when one of its operands is one
(`eager.tensor.flavour`), so everything computed from a numpy argument is an Array, and numpy
code that meets a PyTorch-style tensor stays numpy code. The recording is the same: an Array
is a Tensor, its operations record the same primitives.

Methods: numpy's ndarray methods are numpy's functions of the array (`x.cumsum(0)` is
`np.cumsum(x, 0)`), so each method here calls its numpy function, which numpy dispatches to the
registry of `eager.numpy_api`: a method and its function agree by construction, and a method
whose function nobody registered raises the registry's TypeError naming the function. Methods
that are not a function of the same signature (`transpose(*axes)`, `reshape(*shape)`,
`flatten`, `squeeze`, `astype`, `copy`, `clip`) are written here. The operators that Tensor
lacks (`%`, `//`, `&`, `|`, `^`, `~`) are numpy's ufuncs. PyTorch-only methods (`x.exp()`,
`x.unsqueeze(0)`), which numpy arrays do not have, stay available.

A traced value is not a Python value: `x.item()`, `float(x)`, `x.tolist()` raise, as for every
traced value, and `if x > 0:` records a guard.

Printing is numpy's, with the values of the trace: `str(x)` prints the value as numpy does,
`repr(x)` as `Array([1., 2.])`.
"""
import numpy as np

from . import ops
from ..core.registry import BY_NAME
from .dtypes import COMPLEX_VALUE
from .tensor import Tensor, record


class Array(Tensor):
    """A traced value with numpy's semantics (see the module docstring)."""
    __slots__ = ()

    # ---- numpy's attributes ------------------------------------------------------------------
    @property
    def shape(self):
        return self._data.shape

    @property
    def size(self):
        return self._data.size

    @property
    def nbytes(self):
        return self._data.nbytes

    @property
    def itemsize(self):
        return self._data.itemsize

    @property
    def flat(self):
        """`x.flat[key]`: indexing the flattened array."""
        return _Flat(self)

    @property
    def real(self):
        return self

    @property
    def imag(self):
        return constant_like(self, np.zeros_like(self._data))

    def conj(self):
        return self

    conjugate = conj

    def __len__(self):
        if self._data.ndim == 0:
            raise TypeError("len() of unsized object")
        return self._data.shape[0]

    def __iter__(self):
        if self._data.ndim == 0:
            raise TypeError("iteration over a 0-d array")
        return (self[i] for i in range(self._data.shape[0]))

    def __bool__(self):
        return self._guarded(bool(self._data))     # numpy's errors for size != 1

    def __contains__(self, value):
        return bool(np.any(self == value))

    def __round__(self, ndigits=None):
        return np.round(self, 0 if ndigits is None else ndigits)

    # ---- methods that are not their numpy function's signature -------------------------------
    def transpose(self, *axes):
        """numpy's `x.transpose()`, `x.transpose(1, 0, 2)` and `x.transpose((1, 0, 2))`."""
        if len(axes) == 1 and (axes[0] is None or isinstance(axes[0], (tuple, list))):
            axes = axes[0]
        return np.transpose(self, axes or None)

    def reshape(self, *shape, order="C", copy=None):
        """numpy's `x.reshape(2, 3)`, `x.reshape((2, 3))`, `x.reshape(-1)`, in C or Fortran
        order (`order="F"` reshapes the reversed axes)."""
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        if order in ("C", "A"):
            return ops.reshape(self, shape)
        if order == "F":
            return ops.reshape(self.T, shape[::-1]).T
        raise ValueError(f"order must be one of 'C', 'F', 'A' (got {order!r})")

    def ravel(self, order="C"):
        return self.reshape(-1, order="C" if order in ("K", "A") else order)

    def flatten(self, order="C"):
        """numpy's flatten: a copy of the flattened array."""
        return ops.clone(self.ravel(order))

    def squeeze(self, axis=None):
        """numpy's squeeze: an axis that is not of size one raises (PyTorch leaves it)."""
        shape = np.squeeze(self._data, axis).shape       # numpy's errors
        return ops.reshape(self, shape, name="SqueezeBackward0")

    def copy(self, order="C"):
        return ops.clone(self)

    def view(self, dtype=None, type=None):
        """`x.view()`: a view of the same values; reinterpreting the bytes as another dtype
        (`x.view(np.int64)`) has no derivative and is refused."""
        if dtype is not None or type is not None:
            raise TypeError("Array.view(dtype) reinterprets the bytes of a traced value, which "
                            "has no derivative; use astype to convert values")
        return ops.reshape(self, self._data.shape)

    def astype(self, dtype, order="K", casting="unsafe", subok=True, copy=True):
        return astype(self, dtype, copy)

    def clip(self, min=None, max=None, out=None):
        return np.clip(self, min, max, **({} if out is None else {"out": out}))

    def compress(self, condition, axis=None, out=None):
        return np.compress(condition, self, axis, **({} if out is None else {"out": out}))

    def fill(self, value):
        self[...] = value

    def sort(self, axis=-1, kind=None, order=None):
        """numpy's in-place sort: the array takes the sorted values."""
        self[...] = np.sort(self, axis=axis, kind=kind, order=order)

    # ---- printing ----------------------------------------------------------------------------
    def __repr__(self):
        text = np.array_repr(self._data)
        return "Array" + text[len("array"):] if text.startswith("array") else text

    def __str__(self):
        return str(self._data)

    def __format__(self, spec):
        return self._data.__format__(spec)

    _repr_html_ = None


Array._flavour = Array         # see `eager.tensor.flavour`


def _numpy_method(function, *params):
    """The ndarray method that is numpy's `function` of the array: positional arguments are
    passed as the keywords `params` (numpy's parameter names), arguments left at None are not
    passed (the implementations take numpy's defaults)."""
    def method(self, *args, **kwargs):
        if len(args) > len(params):
            raise TypeError(f"{function.__name__}() takes at most {len(params)} positional "
                            f"arguments ({len(args)} given)")
        for name, value in zip(params, args):
            if name in kwargs:
                raise TypeError(f"{function.__name__}() got multiple values for argument "
                                f"'{name}'")
            kwargs[name] = value
        return function(self, **{k: v for k, v in kwargs.items() if v is not None})
    method.__name__ = method.__qualname__ = function.__name__
    method.__doc__ = f"numpy's `x.{function.__name__}(...)`: `np.{function.__name__}(x, ...)`."
    return method


_REDUCTION = ("axis", "dtype", "out", "keepdims", "initial", "where")
_EXTREME = ("axis", "out", "keepdims", "initial", "where")
_MOMENT = ("axis", "dtype", "out", "ddof", "keepdims", "where")
_METHODS = {
    "sum": (np.sum, *_REDUCTION), "prod": (np.prod, *_REDUCTION),
    "max": (np.max, *_EXTREME), "min": (np.min, *_EXTREME),
    "mean": (np.mean, "axis", "dtype", "out", "keepdims", "where"),
    "std": (np.std, *_MOMENT), "var": (np.var, *_MOMENT),
    "all": (np.all, "axis", "out", "keepdims", "where"),
    "any": (np.any, "axis", "out", "keepdims", "where"),
    "argmax": (np.argmax, "axis", "out", "keepdims"),
    "argmin": (np.argmin, "axis", "out", "keepdims"),
    "argsort": (np.argsort, "axis", "kind", "order", "stable"),
    "argpartition": (np.argpartition, "kth", "axis", "kind", "order"),
    "cumsum": (np.cumsum, "axis", "dtype", "out"), "cumprod": (np.cumprod, "axis", "dtype", "out"),
    "dot": (np.dot, "b", "out"), "nonzero": (np.nonzero,),
    "round": (np.round, "decimals", "out"), "repeat": (np.repeat, "repeats", "axis"),
    "take": (np.take, "indices", "axis", "out", "mode"),
    "swapaxes": (np.swapaxes, "axis1", "axis2"),
    "trace": (np.trace, "offset", "axis1", "axis2", "dtype", "out"),
    "diagonal": (np.diagonal, "offset", "axis1", "axis2"),
    "searchsorted": (np.searchsorted, "v", "side", "sorter"),
    "choose": (np.choose, "choices", "out", "mode"),
}
for _name, (_function, *_params) in _METHODS.items():
    setattr(Array, _name, _numpy_method(_function, *_params))


def _ufunc_operator(ufunc, reflected):
    if reflected:
        def operator(self, other):
            return ufunc(other, self)
    else:
        def operator(self, other):
            return ufunc(self, other)
    return operator


# numpy's operators that Tensor does not define: the ufuncs numpy calls for them
for _name, _ufunc in (("mod", np.remainder), ("floordiv", np.floor_divide),
                      ("and", np.bitwise_and), ("or", np.bitwise_or),
                      ("xor", np.bitwise_xor)):
    setattr(Array, f"__{_name}__", _ufunc_operator(_ufunc, False))
    setattr(Array, f"__r{_name}__", _ufunc_operator(_ufunc, True))
Array.__invert__ = lambda self: np.invert(self)


class _Flat:
    """`x.flat`: indexing (and writing into) the flattened array."""
    __slots__ = ("array",)

    def __init__(self, array):
        self.array = array

    def __getitem__(self, key):
        return self.array.reshape(-1)[key]

    def __setitem__(self, key, value):
        flat = self.array.reshape(-1)
        flat[key] = value

    def __len__(self):
        return self.array._data.size

    def __iter__(self):
        return iter(self.array.reshape(-1))


def astype(x, dtype, copy=True):
    """numpy's `x.astype(dtype)` of a tensor: to a float dtype a recorded copy (the derivative
    passes); to an integer dtype numpy's truncation and to bool `x != 0`, recorded without
    derivative, so that a replay computes them from its own inputs (a constant would hold the
    values of the trace)."""
    dtype = np.dtype(dtype)
    data = x._data
    if dtype.kind == "c":
        raise TypeError(COMPLEX_VALUE.format(what=f"astype({dtype})"))
    if dtype == data.dtype:
        return ops.clone(x) if copy else x
    if not (x._requires_grad or x._node is not None):
        return constant_like(x, data.astype(dtype))
    if dtype.kind == "f":
        return ops.astype(x, dtype)
    if dtype.kind == "b":
        return ops.ne(x, 0)
    prim = BY_NAME["trunc"] if data.dtype.kind == "f" else BY_NAME["copy"]
    return record(prim, (x,), data.astype(dtype), name="ToCopyBackward0")


def constant_like(x, value):
    """A constant (nothing recorded) of `x`'s flavour holding `value`."""
    out = Tensor.__new__(x._flavour)
    out._data = np.asarray(value)
    out._grad = out._node = out._view = None
    out._requires_grad = False
    return out
