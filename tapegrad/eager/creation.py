"""Tensor constructors with PyTorch's names and dtype rules (float64 is the default float)."""
import numpy as np

from .dtypes import check_float
from .tensor import Tensor

float16, float32, float64 = np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64)
int8, int16, int32, int64 = (np.dtype(t) for t in (np.int8, np.int16, np.int32, np.int64))
uint8, bool_ = np.dtype(np.uint8), np.dtype(np.bool_)
half, float, double, long, int = float16, float32, float64, int64, int32   # torch aliases
default_dtype = float64

_rng = np.random.default_rng()


def manual_seed(seed):
    """Seed the generator behind randn and rand."""
    global _rng
    _rng = np.random.default_rng(seed)


def _make(value, dtype, requires_grad):
    value = np.asarray(value)
    if dtype is not None:
        value = value.astype(np.dtype(dtype), copy=False)
    tensor = Tensor(value)
    if requires_grad:
        check_float(value.dtype)
        tensor._requires_grad = True
    return tensor


def _infer(data):
    """torch.tensor's dtype inference: Python floats give the default float dtype."""
    if isinstance(data, Tensor):
        return data._data.copy()
    if isinstance(data, np.ndarray):
        return data.copy()
    try:
        array = np.array(data)
    except RuntimeError:     # tensors that require grad inside a list: take their values
        array = np.array(_values(data))
    if array.dtype.kind == "f":
        return array.astype(default_dtype, copy=False)     # a new array already
    if array.dtype.kind == "O":
        array = np.array([d.item() if isinstance(d, Tensor) else d for d in np.ravel(data)])
    return array


def _values(data):
    if isinstance(data, Tensor):
        return data._data
    if isinstance(data, (list, tuple)):
        return [_values(d) for d in data]
    return data


def tensor(data, dtype=None, requires_grad=False):
    """A new leaf tensor holding a copy of `data`."""
    return _make(_infer(data), dtype, requires_grad)


def as_tensor(data, dtype=None):
    return data if isinstance(data, Tensor) and dtype is None else tensor(data, dtype)


def from_numpy(array):
    """A tensor sharing memory with `array`."""
    if not isinstance(array, np.ndarray):
        raise TypeError(f"expected np.ndarray (got {type(array).__name__})")
    return Tensor(array)


def _size(size):
    if len(size) == 1 and isinstance(size[0], (tuple, list)):
        size = tuple(size[0])
    for s in size:
        if s.__class__ is not builtin_int:
            return tuple(builtin_int(s) for s in size)
    return size


builtin_int = __builtins__["int"] if isinstance(__builtins__, dict) else __builtins__.int


def zeros(*size, dtype=None, requires_grad=False):
    return _make(np.zeros(_size(size), dtype or default_dtype), None, requires_grad)


def ones(*size, dtype=None, requires_grad=False):
    value = np.empty(_size(size), dtype or default_dtype)
    value.fill(1)            # np.ones, without its Python wrapper (half the cost of ones(2, 2))
    return _make(value, None, requires_grad)


def empty(*size, dtype=None, requires_grad=False):
    return _make(np.empty(_size(size), dtype or default_dtype), None, requires_grad)


def full(size, fill_value, dtype=None, requires_grad=False):
    if dtype is None:
        dtype = default_dtype if isinstance(fill_value, builtins_float) else np.asarray(
            fill_value).dtype
    return _make(np.full(_size((size,)), fill_value, dtype), None, requires_grad)


builtins_float = __builtins__["float"] if isinstance(__builtins__, dict) else __builtins__.float


def eye(n, m=None, dtype=None, requires_grad=False):
    return _make(np.eye(n, m, dtype=dtype or default_dtype), None, requires_grad)


def arange(start, end=None, step=1, dtype=None, requires_grad=False):
    if end is None:
        start, end = 0, start
    value = np.arange(start, end, step)
    if dtype is None and value.dtype.kind == "f":
        value = value.astype(default_dtype)
    return _make(value, dtype, requires_grad)


def linspace(start, end, steps, dtype=None, requires_grad=False):
    return _make(np.linspace(start, end, steps, dtype=dtype or default_dtype), None, requires_grad)


def randn(*size, dtype=None, requires_grad=False):
    return _make(_rng.standard_normal(_size(size)).astype(dtype or default_dtype), None,
                 requires_grad)


def rand(*size, dtype=None, requires_grad=False):
    return _make(_rng.random(_size(size)).astype(dtype or default_dtype), None, requires_grad)


def _like(fn):
    def like(input, dtype=None, requires_grad=False, **kwargs):
        return fn(*input.shape, dtype=dtype or input.dtype, requires_grad=requires_grad, **kwargs)
    like.__name__ = f"{fn.__name__}_like"
    like.__doc__ = f"`{fn.__name__}` with the shape (and, by default, dtype) of `input`."
    return like


zeros_like, ones_like, empty_like, randn_like, rand_like = (
    _like(f) for f in (zeros, ones, empty, randn, rand))


def full_like(input, fill_value, dtype=None, requires_grad=False):
    return full(input.shape, fill_value, dtype=dtype or input.dtype, requires_grad=requires_grad)
