"""The dtypes a tensor may hold, the ones that may require grad, and PyTorch's names for them.

Tensors refuse at creation what no operation could handle later (object, string and datetime
arrays), and only floating tensors require grad: the sweeps are real, so a complex tensor is
refused with a message that says how to differentiate it. The error messages name types and
dtypes as PyTorch's do (`Float`, `numpy.ndarray`), so that code written against PyTorch sees the
same text.
"""
COMPLEX = ("complex numbers are not supported by tapegrad's autograd: a complex tensor cannot "
           "require grad (differentiate the real and imaginary parts as two real tensors)")
COMPLEX_VALUE = ("complex numbers are not supported: {what} would make a complex value, and "
                 "tapegrad differentiates real floating-point values only (carry the real and "
                 "imaginary parts as two real arrays)")
_FLOAT_ONLY = "Only Tensors of floating point and complex dtype can require gradients"
# numpy's type characters of the dtypes a tensor may hold (PyTorch's list below)
_SUPPORTED = "?bhilqpBHILQPefdFD"
_UNSUPPORTED = ("can't convert np.ndarray of type numpy.{}. The only supported types are: "
                "float64, float32, float16, complex64, complex128, int64, int32, int16, int8, "
                "uint64, uint32, uint16, uint8, and bool.")
_TORCH_TYPES = {"float16": "Half", "float32": "Float", "float64": "Double", "int8": "Char",
                "int16": "Short", "int32": "Int", "int64": "Long", "uint8": "Byte", "bool": "Bool"}


def torch_type(dtype):
    """PyTorch's scalar type name of a dtype, as its error messages print it."""
    return _TORCH_TYPES.get(dtype.name, dtype.name)


def check_float(dtype):
    """Refuse a dtype that cannot require grad (PyTorch's error; ours for complex)."""
    if dtype.kind != "f":
        if dtype.kind == "c":
            raise NotImplementedError(COMPLEX)
        raise RuntimeError(_FLOAT_ONLY)


def check_dtype(array):
    """Refuse object, string, datetime and other arrays no tensor can hold (at creation, not
    later when an operation or printing meets them)."""
    if array.dtype.char not in _SUPPORTED:
        raise TypeError(_UNSUPPORTED.format(array.dtype.type.__name__))
    return array


def type_name(obj):
    """A value's type as PyTorch's messages print it: `int`, `numpy.ndarray`."""
    kind = type(obj)
    return kind.__name__ if kind.__module__ == "builtins" else \
        f"{kind.__module__}.{kind.__qualname__}"
