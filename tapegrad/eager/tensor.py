"""`Tensor`: a numpy value plus PyTorch's autograd bookkeeping.

A tensor holds its value (`data`, a numpy array), whether it requires grad, the node that
produced it (`grad_fn`, None for leaves) and, for leaves, the accumulated `.grad`. Arithmetic is
computed eagerly by numpy; `record` appends a node when any operand requires grad.
"""
import warnings
import weakref

import numpy as np

from .format import format_html, format_tensor
from . import graph as _graph
from .graph import Node, rebind, state, version, wrote

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


def _check_float(dtype):
    if dtype.kind not in "fc":
        raise RuntimeError(_FLOAT_ONLY)


def record(prim, inputs, value, payload=None, c0=0.0, c1=0.0, name=None):
    """Wrap `value`, the result of `prim` on `inputs`, appending a node when it must be recorded.

    A node is recorded when grad mode is on and an operand requires grad (or, while a function
    transform traces, carries a node: comparisons feeding guards and `where` are replayed too).
    """
    if value.__class__ is not np.ndarray:
        value = np.asarray(value)   # numpy gives scalars, not 0-d arrays, for 0-d operands
    out = Tensor.__new__(Tensor)
    out.data = value
    out._grad = None
    out._requires_grad = False
    out._node = None
    if state.grad_enabled:
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
    __slots__ = ("data", "_requires_grad", "_node", "_grad", "__weakref__")
    __array_priority__ = 1000

    def __init__(self, data, requires_grad=False):
        self.data = np.asarray(data)
        self._grad = None
        self._node = None
        self._requires_grad = False
        if requires_grad:
            self.requires_grad = True

    # ---- autograd state ----------------------------------------------------------------------
    @property
    def requires_grad(self):
        return self._requires_grad

    @requires_grad.setter
    def requires_grad(self, flag):
        if self._node is not None and not flag:
            raise RuntimeError(
                "you can only change requires_grad flags of leaf variables. If you want to use a "
                "computed variable in a subgraph that doesn't require differentiation use "
                "var_no_grad = var.detach().")
        if flag:
            _check_float(self.data.dtype)
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
        return self._node is None

    @property
    def grad_fn(self):
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
                kind = type(value)
                kind = kind.__name__ if kind.__module__ == "builtins" else \
                    f"{kind.__module__}.{kind.__qualname__}"
                raise TypeError(f"assigned grad expected to be a Tensor or None but got grad of "
                                f"type {kind}")
            if value.data.shape != self.data.shape:
                raise RuntimeError(
                    f"attempting to assign a gradient of size '{list(value.data.shape)}' to a "
                    f"tensor of size '{list(self.data.shape)}'. Please ensure that the gradient "
                    "and the tensor are the same size")
            if value.data.dtype != self.data.dtype:
                raise RuntimeError(
                    f"attempting to assign a gradient with dtype '{value.data.dtype}' to a tensor "
                    f"with dtype '{self.data.dtype}'. Please ensure that the gradient and the "
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
        return Tensor(self.data)

    def detach_(self):
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
        old.data, old._grad = self.data, None
        old._requires_grad, old._node = self._requires_grad, self._node
        return old

    # ---- values ------------------------------------------------------------------------------
    @property
    def shape(self):
        return Size(self.data.shape)

    def size(self, dim=None):
        return self.shape if dim is None else self.data.shape[dim]

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def ndim(self):
        return self.data.ndim

    def dim(self):
        return self.data.ndim

    def numel(self):
        return self.data.size

    def __len__(self):
        if self.data.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self.data.shape[0]

    def __iter__(self):
        if self.data.ndim == 0:
            raise TypeError("iteration over a 0-d tensor")
        return (self[i] for i in range(self.data.shape[0]))

    def _concrete(self, what):
        if state.tracing and self._node is not None:
            raise TypeError(
                f"{what} of a traced value: a tape cannot replay Python numbers computed from "
                "its inputs. Keep the computation in tapegrad ops (comparisons in `if` are fine: "
                "they become guards).")

    def item(self):
        self._concrete("item()")
        if self.data.size != 1:
            raise RuntimeError(f"a Tensor with {self.data.size} elements cannot be converted to "
                               "Scalar")
        return self.data.reshape(()).item()

    def __float__(self):
        self._concrete("float()")
        return float(self.item())

    def __int__(self):
        self._concrete("int()")
        return int(self.item())

    def __index__(self):
        if self.data.dtype.kind not in "iub" or self.data.size != 1:
            raise TypeError("only integer tensors of a single element can be converted to an index")
        return int(self.item())

    def __bool__(self):
        if self.data.size != 1:
            raise RuntimeError("Boolean value of Tensor with more than one value is ambiguous")
        outcome = bool(self.data.reshape(()).item())
        if state.tracing and self._node is not None:
            state.guards.append((self, outcome))
        return outcome

    def numpy(self, force=False):
        self._concrete("numpy()")
        if self._requires_grad and not force:
            raise RuntimeError(_NEEDS_GRAD_NUMPY)
        return self.data

    def __array__(self, dtype=None, copy=None):
        if self._requires_grad or (state.tracing and self._node is not None):
            raise RuntimeError(_NEEDS_GRAD_NUMPY)
        return self.data if dtype is None else self.data.astype(dtype)

    def tolist(self):
        self._concrete("tolist()")
        return self.data.tolist()

    def cpu(self):
        """This tensor: values live in host memory (`x.detach().cpu().numpy()` works)."""
        return self

    def __repr__(self):
        return format_tensor(self.data, self._suffixes())

    def _repr_html_(self):
        return format_html(self.data, self._suffixes())

    def _suffixes(self):
        if self._node is not None and self._requires_grad:
            return (f"grad_fn=<{self._node.name()}>",)
        return ("requires_grad=True",) if self._requires_grad else ()

    __hash__ = object.__hash__

    # ---- in place (values only: tensors in a recorded graph must not change) -----------------
    # Every write in memory counts in the version of the tensor's memory, every recorded
    # in-place operation in the tensor's own count (`_graph.wrote`, `_graph.rebind`): backward
    # checks that the values its nodes saved are still at the versions they recorded.
    def _check_inplace(self):
        if self._requires_grad and state.grad_enabled:
            if self._node is None:
                raise RuntimeError(_LEAF_INPLACE)
            raise RuntimeError("in-place operations on tensors recorded for backward are not "
                               "supported; use the out-of-place form")

    def _inplace(self, op, other):
        """`self op= other`: in memory when nothing is recorded (e.g. under `no_grad`, the SGD
        step); when the result must be recorded, the tensor takes the new value and the new
        grad_fn (the old value stays intact for the entries that saved it; other tensors that
        share memory with this one do not see the change)."""
        if self._requires_grad and self._node is None and state.grad_enabled:
            raise RuntimeError(_LEAF_INPLACE)
        old = self._snapshot() if state.grad_enabled else self   # no_grad: nothing keeps it
        result = op(old, other)
        shape = result.data.shape
        if shape != self.data.shape:
            raise RuntimeError(f"output with shape {list(self.data.shape)} doesn't match the "
                               f"broadcast shape {list(shape)}")
        dtype = result.data.dtype
        if dtype != self.data.dtype and not np.can_cast(dtype, self.data.dtype, "same_kind"):
            raise RuntimeError(f"result type {_torch_type(dtype)} can't be cast to the desired "
                               f"output type {_torch_type(self.data.dtype)}")
        node = result._node
        if node is None:
            if self._node is not None and state.grad_enabled:   # copy_ of a constant
                self._check_inplace()
            self.data[...] = result.data
            wrote(self.data)
            return self
        if dtype != self.data.dtype:
            result = _ops.astype(result, self.data.dtype)
            node = result._node
        if self._node is not None and self._node.retained is not None:
            self._node.retained = None      # the retained grad follows the new value
            node.retained = weakref.ref(self)
            _graph.retaining = True
        rebind(self, old)
        self.data, self._node, self._requires_grad = result.data, node, result._requires_grad
        return self

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
        def copy(old, src):
            src = _ops.broadcast_to(_ops.as_tensor(src), self.data.shape)
            return record(_ops.P["copy"], (src,), src.data.astype(self.data.dtype),
                          name="CopyBackwards")
        return self._inplace(copy, src)

    def zero_(self):
        self._check_inplace()
        self.data[...] = 0
        wrote(self.data)
        return self

    def fill_(self, value):
        self._check_inplace()
        self.data[...] = value
        wrote(self.data)
        return self

    def __setitem__(self, key, value):
        self._check_inplace()
        self.data[_ops.index_key(key)] = value.data if isinstance(value, Tensor) else value
        wrote(self.data)

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
        return _ops.permute(self, tuple(range(self.data.ndim - 1, -1, -1)))

    @property
    def mT(self):
        return _ops.transpose(self, -2, -1)


from . import ops as _ops  # noqa: E402  (the ops module needs Tensor defined)
