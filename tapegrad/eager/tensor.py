"""`Tensor`: a numpy value plus PyTorch's autograd bookkeeping.

A tensor holds its value (`data`, a numpy array, in the `_data` slot: assigning `data` is
checked), whether it requires grad, the node that produced it (`grad_fn`, None for leaves), for
leaves the accumulated `.grad`, and for views what they view (`_views`). Arithmetic is computed
eagerly by numpy; `record` appends a node when any operand requires grad.
"""
import operator
import warnings
import weakref

import numpy as np

from .format import format_html, format_tensor
from . import graph as _graph
from . import views as _views
from .graph import _rebound, Node, rebind, saved_operands, state, version, wrote

_NON_LEAF_GRAD = (
    "The .grad attribute of a Tensor that is not a leaf Tensor is being accessed. Its .grad "
    "attribute won't be populated during autograd.backward(). If you indeed want the .grad field "
    "to be populated for a non-leaf Tensor, use .retain_grad() on the non-leaf Tensor. If you "
    "access the non-leaf Tensor by mistake, make sure you access the leaf Tensor instead. See "
    "github.com/pytorch/pytorch/pull/30531 for more information.")
_FLOAT_ONLY = "Only Tensors of floating point and complex dtype can require gradients"
_NEEDS_GRAD_NUMPY = ("Can't call numpy() on Tensor that requires grad. "
                     "Use tensor.detach().numpy() instead.")
_LEAF_INPLACE = "a leaf Variable that requires grad is being used in an in-place operation."


_TORCH_TYPES = {"float16": "Half", "float32": "Float", "float64": "Double", "int8": "Char",
                "int16": "Short", "int32": "Int", "int64": "Long", "uint8": "Byte", "bool": "Bool"}


def _torch_type(dtype):
    """PyTorch's scalar type name of a dtype, as its error messages print it."""
    return _TORCH_TYPES.get(dtype.name, dtype.name)


class Size(tuple):
    """A tensor's shape: a tuple that prints like `torch.Size`."""
    __slots__ = ()

    def __repr__(self):
        return f"tapegrad.Size({list(self)})"

    def numel(self):
        return int(np.prod(self, dtype=np.int64))


def _autograd():
    """`tapegrad.autograd`, imported on first use (it imports this module)."""
    global _autograd_module
    if _autograd_module is None:
        from .. import autograd
        _autograd_module = autograd
    return _autograd_module


_autograd_module = None


_COMPLEX = ("complex numbers are not supported by tapegrad's autograd: a complex tensor cannot "
            "require grad (differentiate the real and imaginary parts as two real tensors)")
# numpy's type characters of the dtypes a tensor may hold (PyTorch's list below)
_SUPPORTED = "?bhilqpBHILQPefdFD"
_UNSUPPORTED = ("can't convert np.ndarray of type numpy.{}. The only supported types are: "
                "float64, float32, float16, complex64, complex128, int64, int32, int16, int8, "
                "uint64, uint32, uint16, uint8, and bool.")


def _check_float(dtype):
    if dtype.kind != "f":
        if dtype.kind == "c":
            raise NotImplementedError(_COMPLEX)
        raise RuntimeError(_FLOAT_ONLY)


def _check_dtype(array):
    """Refuse object, string, datetime and other arrays no tensor can hold (at creation, not
    later when an operation or printing meets them)."""
    if array.dtype.char not in _SUPPORTED:
        raise TypeError(_UNSUPPORTED.format(array.dtype.type.__name__))
    return array


def _type_name(obj):
    """A value's type as PyTorch's messages print it: `int`, `numpy.ndarray`."""
    kind = type(obj)
    return kind.__name__ if kind.__module__ == "builtins" else \
        f"{kind.__module__}.{kind.__qualname__}"


def constant(value):
    """A tensor holding `value`, a numpy array an operation computed (no checks: Tensor(...)
    is for values from outside)."""
    out = Tensor.__new__(Tensor)
    out._data = value
    out._grad = out._node = out._view = None
    out._requires_grad = False
    return out


def record(prim, inputs, value, payload=None, c0=0.0, c1=0.0, name=None):
    """Wrap `value`, the result of `prim` on `inputs`, appending a node when it must be recorded.

    A node is recorded when grad mode is on and an operand requires grad (or, while a function
    transform traces, carries a node: comparisons feeding guards and `where` are replayed too).
    """
    if value.__class__ is not np.ndarray:
        value = np.asarray(value)   # numpy gives scalars, not 0-d arrays, for 0-d operands
    out = Tensor.__new__(Tensor)
    out._data = value
    out._grad = None
    out._requires_grad = False
    out._node = None
    out._view = None
    if state.grad_enabled:
        if _rebound:                # an operand may be a view whose base got a new grad_fn
            _views.refresh_all(inputs)
        requires = False
        for t in inputs:
            if t._requires_grad:
                requires = True
                break
        if requires and prim.differentiable:
            out._requires_grad = True
            out._node = Node(prim, inputs, value, payload, c0, c1, name)
        elif state.tracing and (requires or any(t._node is not None for t in inputs)):
            out._node = Node(prim, inputs, value, payload, c0, c1, name)
    return out


class Tensor:
    """A value with autograd semantics; create one with `tapegrad.tensor(...)`."""
    __slots__ = ("_data", "_requires_grad", "_node", "_grad", "_view", "_history", "__weakref__")
    __array_priority__ = 1000

    def __init__(self, data, requires_grad=False):
        self._data = _check_dtype(np.asarray(data))
        self._grad = None
        self._node = None
        self._requires_grad = False
        self._view = None           # a view: (root, stamp, chain...), see _views
        if requires_grad:
            self.requires_grad = True

    def _set_data(self, value):
        """`t.data = value`: a new value that autograd does not see (PyTorch's semantics): the
        version stays, a leaf's backward reads the new value, and a backward that would need
        the shape the tensor had when an operation recorded it raises."""
        if isinstance(value, Tensor):
            value = value._data
        elif not isinstance(value, np.ndarray):
            raise TypeError(f"Variable data has to be a numpy array or a Tensor, but got "
                            f"{_type_name(value)}")
        _check_dtype(value)
        if self._requires_grad and value.dtype.kind != "f":
            if value.dtype.kind == "c":
                raise NotImplementedError(_COMPLEX)
            raise RuntimeError("data set to a tensor that requires gradients must be floating "
                               "point or complex dtype")
        old = self._data
        if value is not old:
            _graph.replaced(self, old, value)
            self._data = value
            self._view = None

    data = property(operator.attrgetter("_data"), _set_data,
                    doc="The value, a numpy array (assigning it bypasses autograd).")

    # ---- autograd state ----------------------------------------------------------------------
    @property
    def requires_grad(self):
        if _rebound and self._view is not None:
            _views.refresh(self)
        return self._requires_grad

    @requires_grad.setter
    def requires_grad(self, flag):
        if self._node is not None and not flag:
            raise RuntimeError(
                "you can only change requires_grad flags of leaf variables. If you want to use a "
                "computed variable in a subgraph that doesn't require differentiation use "
                "var_no_grad = var.detach().")
        if flag:
            _check_float(self._data.dtype)
        if self._node is None:
            self._requires_grad = bool(flag)

    def requires_grad_(self, requires_grad=True):
        self.requires_grad = requires_grad
        return self

    @property
    def tape(self):
        """The eager graph behind this tensor as a read-only tape (see `tapegrad.tape_of`)."""
        from .flatten import tape_of
        return tape_of(self)

    @property
    def is_leaf(self):
        return self.grad_fn is None

    @property
    def grad_fn(self):
        if _rebound and self._view is not None:
            _views.refresh(self)        # a view whose base got a new grad_fn since
        return self._node

    @property
    def grad(self):
        if self._grad is None and self._node is not None and self._node.retained is None:
            warnings.warn(_NON_LEAF_GRAD, UserWarning, stacklevel=2)
        return self._grad

    @grad.setter
    def grad(self, value):
        if value is not None:
            if not isinstance(value, Tensor):
                raise TypeError(f"assigned grad expected to be a Tensor or None but got grad of "
                                f"type {_type_name(value)}")
            if value._data.shape != self._data.shape:
                raise RuntimeError(
                    f"attempting to assign a gradient of size '{list(value._data.shape)}' to a "
                    f"tensor of size '{list(self._data.shape)}'. Please ensure that the gradient "
                    "and the tensor are the same size")
            if value._data.dtype != self._data.dtype:
                raise RuntimeError(
                    f"attempting to assign a gradient with dtype '{value._data.dtype}' to a tensor "
                    f"with dtype '{self._data.dtype}'. Please ensure that the gradient and the "
                    "tensor have the same dtype")
        self._grad = value

    def retain_grad(self):
        """Populate `.grad` of this non-leaf tensor during backward."""
        if not self._requires_grad:
            raise RuntimeError("can't retain_grad on Tensor that has requires_grad=False")
        if self._node is not None and self._node.retained is None:
            self._node.retained = weakref.ref(self)
            _graph.retaining = True

    @property
    def retains_grad(self):
        return self._node is not None and self._node.retained is not None

    def backward(self, gradient=None, retain_graph=None, create_graph=False, inputs=None):
        """Accumulate d(self)/d(leaf) into each leaf's `.grad` (a VJP with `gradient`)."""
        _autograd().backward(self, gradient, retain_graph, create_graph, inputs)

    def detach(self):
        return Tensor(self._data)

    def detach_(self):
        if self._view is not None:
            raise RuntimeError("Can't detach views in-place. Use detach() instead.")
        if self._node is not None:      # the nodes recorded before keep the attached tensor
            rebind(self, self._snapshot())
        self._node = None
        self._requires_grad = False
        return self

    @property
    def _version(self):
        """PyTorch's version counter: in-place writes into this tensor's memory (shared with
        its views) plus recorded in-place operations on it."""
        return version(self)

    def _snapshot(self):
        old = Tensor.__new__(Tensor)
        old._data, old._grad, old._view = self._data, None, None
        old._requires_grad, old._node = self._requires_grad, self._node
        return old

    # ---- values ------------------------------------------------------------------------------
    @property
    def shape(self):
        return Size(self._data.shape)

    def size(self, dim=None):
        return self.shape if dim is None else self._data.shape[dim]

    @property
    def dtype(self):
        return self._data.dtype

    @property
    def ndim(self):
        return self._data.ndim

    def dim(self):
        return self._data.ndim

    def numel(self):
        return self._data.size

    def __len__(self):
        if self._data.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self._data.shape[0]

    def __iter__(self):
        if self._data.ndim == 0:
            raise TypeError("iteration over a 0-d tensor")
        return (self[i] for i in range(self._data.shape[0]))

    def _concrete(self, what):
        if state.tracing and self._node is not None:
            raise TypeError(
                f"{what} of a traced value: a tape cannot replay Python numbers computed from "
                "its inputs. Keep the computation in tapegrad ops (comparisons in `if` are fine: "
                "they become guards).")

    def item(self):
        self._concrete("item()")
        if self._data.size != 1:
            raise RuntimeError(f"a Tensor with {self._data.size} elements cannot be converted to "
                               "Scalar")
        return self._data.reshape(()).item()

    def __float__(self):
        self._concrete("float()")
        return float(self.item())

    def __int__(self):
        self._concrete("int()")
        return int(self.item())

    def __index__(self):
        if self._data.dtype.kind not in "iub" or self._data.size != 1:
            raise TypeError("only integer tensors of a single element can be converted to an index")
        return int(self.item())

    def __bool__(self):
        if self._data.size != 1:
            raise RuntimeError("Boolean value of Tensor with more than one value is ambiguous")
        outcome = bool(self._data.reshape(()).item())
        if state.tracing and self._node is not None:
            state.guards.append((self, outcome))
        return outcome

    def numpy(self, force=False):
        self._concrete("numpy()")
        if self._requires_grad and not force:
            raise RuntimeError(_NEEDS_GRAD_NUMPY)
        return self._data

    def __array__(self, dtype=None, copy=None):
        if self._requires_grad or (state.tracing and self._node is not None):
            raise RuntimeError(_NEEDS_GRAD_NUMPY)
        return self._data if dtype is None else self._data.astype(dtype)

    def tolist(self):
        self._concrete("tolist()")
        return self._data.tolist()

    def cpu(self):
        """This tensor: values live in host memory (`x.detach().cpu().numpy()` works)."""
        return self

    def __repr__(self):
        return format_tensor(self._data, self._suffixes())

    def _repr_html_(self):
        return format_html(self._data, self._suffixes())

    def _suffixes(self):
        if self._node is not None and self._requires_grad:
            return (f"grad_fn=<{self._node.name()}>",)
        return ("requires_grad=True",) if self._requires_grad else ()

    __hash__ = object.__hash__

    # ---- in place ----------------------------------------------------------------------------
    # Every in-place operation writes the tensor's memory, which its views and its base share
    # (see `_views`), and counts in the version of that memory (`_graph.wrote`): backward checks
    # that the values its nodes saved are still at the versions they recorded. A recorded one
    # also gives the tensor (or, for a view, its base) a new grad_fn (`_views.write`).
    def _inplace(self, op, other, name="CopySlices"):
        """`self op= other`, PyTorch's semantics: in memory only when nothing is recorded (under
        `no_grad`: the SGD step); recorded otherwise. `name` is the grad_fn of a constant
        written into a tensor that requires grad (`zero_`, `fill_`)."""
        if not state.grad_enabled:
            _views.write(self, self, self._fitted(op(self, other)), name)
            return self
        if _rebound and self._view is not None:
            _views.refresh(self)
        _views.check_modifiable(self)
        before = self._snapshot()
        result = op(before, other)
        node = result._node
        if node is not None and node._inputs[0] is before and 0 in saved_operands(node):
            result = op(_views.original(before), other)     # its VJP reads the old value
        _views.write(self, before, self._fitted(result), name)
        return self

    def _fitted(self, result):
        """`result` checked against this tensor's shape and cast to its dtype."""
        shape = result._data.shape
        if shape != self._data.shape:
            raise RuntimeError(f"output with shape {list(self._data.shape)} doesn't match the "
                               f"broadcast shape {list(shape)}")
        return self._cast(result)

    def _cast(self, result):
        dtype, mine = result._data.dtype, self._data.dtype
        if dtype == mine:
            return result
        if not np.can_cast(dtype, mine, "same_kind"):
            raise RuntimeError(f"result type {_torch_type(dtype)} can't be cast to the desired "
                               f"output type {_torch_type(mine)}")
        return _ops.astype(result, mine) if result._node is not None else \
            Tensor(result._data.astype(mine))

    def __iadd__(self, other): return self._inplace(_ops.add, other)
    def __isub__(self, other): return self._inplace(_ops.sub, other)
    def __imul__(self, other): return self._inplace(_ops.mul, other)
    def __itruediv__(self, other): return self._inplace(_ops.div, other)
    def __ipow__(self, other): return self._inplace(_ops.pow, other)

    def add_(self, other, alpha=1):
        return self._inplace(_ops.add, other if alpha == 1 else _ops.mul(other, alpha))

    def sub_(self, other, alpha=1):
        return self._inplace(_ops.sub, other if alpha == 1 else _ops.mul(other, alpha))

    def mul_(self, other): return self._inplace(_ops.mul, other)
    def div_(self, other): return self._inplace(_ops.div, other)
    def pow_(self, other): return self._inplace(_ops.pow, other)

    def copy_(self, src):
        """Copy `src` (broadcast, cast to this dtype) into this tensor."""
        return self._inplace(self._copy_of, src, "CopyBackwards")

    def _copy_of(self, old, src):
        """`src` broadcast to this tensor's shape, as this tensor's dtype (recorded)."""
        src = _ops.broadcast_to(_ops.as_tensor(src), self._data.shape)
        return record(_ops.P["copy"], (src,), src._data.astype(self._data.dtype),
                      name="CopyBackwards")

    def zero_(self):
        return self._fill(0, "ZeroBackward0")

    def fill_(self, value):
        return self._fill(value, "FillBackward2")

    def _fill(self, value, name):
        if value.__class__ is not Tensor and not (state.grad_enabled and _views.involved(self)):
            self._data[...] = value           # the common `w.grad.zero_()`, kept short
            wrote(self._data)
            return self
        return self._inplace(self._copy_of, value, name)

    def __setitem__(self, key, value):
        """`self[key] = value`: a copy into the view `self[key]` for basic indexing (PyTorch's
        CopySlices), an index put for integer-array and boolean keys."""
        key = _ops.index_key(key)
        tracked = isinstance(value, Tensor) and (value._requires_grad or value._node is not None)
        if not (state.grad_enabled and (tracked or _views.involved(self))):
            self._data[key] = value._data if isinstance(value, Tensor) else value
            wrote(self._data)
            return
        if _rebound and self._view is not None:
            _views.refresh(self)
        if _ops.basic_key(key):         # on a leaf: PyTorch's error for a view of a leaf
            _ops.getitem(self, key).copy_(value)
            return
        _views.check_modifiable(self)
        before = self._snapshot()
        region = np.empty(self._data.shape, np.bool_)[key].shape
        src = self._cast(_ops.broadcast_to(_ops.as_tensor(value), region))
        _views.write(self, before, src, "IndexPutBackward0", key)

    # ---- conversions -------------------------------------------------------------------------
    def to(self, dtype):
        return _ops.astype(self, np.dtype(dtype))

    def float(self):
        return _ops.astype(self, np.dtype(np.float32))

    def double(self):
        return _ops.astype(self, np.dtype(np.float64))

    def clone(self):
        return _ops.clone(self)

    # ---- arithmetic --------------------------------------------------------------------------
    # `x + y`, `x * y`, `2 * x`, `x[i]` ... are the ops themselves, set by _ops (see _METHODS
    # there); the other reflected forms swap the operands here.
    def __rsub__(self, other): return _ops.sub(other, self)
    def __rtruediv__(self, other): return _ops.div(other, self)
    def __rpow__(self, other): return _ops.pow(other, self)
    def __rmatmul__(self, other): return _ops.matmul(other, self)
    def __pos__(self): return self

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        return _ops.array_ufunc(ufunc, method, inputs, kwargs)

    def __array_function__(self, func, types, args, kwargs):
        return _ops.array_function(func, args, kwargs)

    @property
    def T(self):
        return _ops.permute(self, tuple(range(self._data.ndim - 1, -1, -1)))

    @property
    def mT(self):
        return _ops.transpose(self, -2, -1)


from . import ops as _ops  # noqa: E402  (the ops module needs Tensor defined)
