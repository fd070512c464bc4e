"""`Tensor`: a numpy value plus PyTorch's autograd bookkeeping, and `record`.

A tensor holds its value (`data`, a numpy array, in the `_data` slot: assigning `data` is
checked), whether it requires grad, the node that produced it (`grad_fn`, None for leaves), for
leaves the accumulated `.grad`, and for views what they view (`_view`). Arithmetic is computed
eagerly by numpy; `record` appends a node when any operand requires grad.

This module defines the class with its state and what reads it (autograd flags, conversions,
printing); it imports only the modules below it (graph, views, dtypes, format). The modules
that implement operations attach them to the class: `ops` the operators and methods (`x + y`,
`x.sum()`), `inplace` the in-place ones (`x += y`, `x[i] = v`), `numpy_api` numpy's dispatch
(`np.sin(x)`), `flatten` the `tape` property and `autograd` `backward()`. The package's
`__init__` imports them all, so any import of the eager layer sees the complete class.
"""
import operator
import warnings
import weakref

import numpy as np
# numpy's own asarray, bound at import: while a function is traced `np.asarray` is a wrapper
# that looks for traced values (`eager.numpy_api.building`), which the values an operation
# computes never hold
_asarray = np.asarray

from . import graph, views
from .dtypes import COMPLEX, check_dtype, check_float, type_name
from .format import format_html, format_tensor
from .graph import Node, rebound_tensors, rebind, state, version

_NON_LEAF_GRAD = (
    "The .grad attribute of a Tensor that is not a leaf Tensor is being accessed. Its .grad "
    "attribute won't be populated during autograd.backward(). If you indeed want the .grad field "
    "to be populated for a non-leaf Tensor, use .retain_grad() on the non-leaf Tensor. If you "
    "access the non-leaf Tensor by mistake, make sure you access the leaf Tensor instead. See "
    "github.com/pytorch/pytorch/pull/30531 for more information.")
_NEEDS_GRAD_NUMPY = ("Can't call numpy() on Tensor that requires grad. "
                     "Use tensor.detach().numpy() instead.")

_TRACED_TO_ARRAY = (
    "numpy tried to convert a traced value to a plain array, which would freeze it into the "
    "tape and drop its derivatives. Build arrays from traced values with np.array, np.asarray, "
    "np.stack or np.concatenate (numpy functions such as np.sum([x, y]) take lists of them "
    "too); for a ufunc on a list (np.exp([x, y])) build the array first, and to fill an array "
    "start from one made from the traced value (np.zeros_like(x)), not from np.zeros. A plain "
    "array's methods convert their arguments too: for y.dot(x) write y @ x or np.dot(y, x).")


class ArrayConversionError(TypeError):
    """numpy asked a traced value for a plain array (`np.exp([x, y])`, `a[0] = x` into a numpy
    array): refused, since the array would be a constant of the tape."""


class Size(tuple):
    """A tensor's shape: a tuple that prints like `torch.Size`."""
    __slots__ = ()

    def __repr__(self):
        return f"tapegrad.Size({list(self)})"

    def numel(self):
        return int(np.prod(self, dtype=np.int64))


def constant(value):
    """A tensor holding `value`, a numpy array an operation computed (no checks: Tensor(...)
    is for values from outside)."""
    out = Tensor.__new__(Tensor)
    out._data = value
    out._grad = out._node = out._view = None
    out._requires_grad = False
    return out


def flavour(inputs):
    """The class of an operation's result: that of its first operand of another flavour than
    `Tensor` (an `eager.array.Array`, numpy's semantics, where a function traced from numpy
    values meets PyTorch-style tensors), else `Tensor`. A class says its flavour in `_flavour`
    (a traced argument is its flavour's subclass)."""
    for t in inputs:
        cls = t._flavour
        if cls is not Tensor:
            return cls
    return Tensor


def record(prim, inputs, value, payload=None, c0=0.0, c1=0.0, name=None):
    """Wrap `value`, the result of `prim` on `inputs`, appending a node when it must be recorded.

    A node is recorded when grad mode is on and an operand requires grad (or, while a function
    transform traces, carries a node: comparisons feeding guards and `where` are replayed too).
    The result is a `Tensor` when every operand is one (the eager hot path tests each operand's
    class once), else of the operands' `flavour`.
    """
    if value.__class__ is not np.ndarray:
        value = _asarray(value)     # numpy gives scalars, not 0-d arrays, for 0-d operands
    cls = Tensor
    for t in inputs:                # the result's flavour (`flavour`): one class test each
        if t.__class__ is not Tensor:
            cls = flavour(inputs)
            break
    out = Tensor.__new__(cls)
    out._data = value
    out._grad = None
    out._requires_grad = False
    out._node = None
    out._view = None
    if state.grad_enabled:
        if rebound_tensors:      # an operand may be a view whose base got a new grad_fn
            views.refresh_all(inputs)
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
        self._data = check_dtype(np.asarray(data))
        self._grad = None
        self._node = None
        self._requires_grad = False
        self._view = None           # a view: (root, stamp, chain...), see eager.views
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
                            f"{type_name(value)}")
        check_dtype(value)
        if self._requires_grad and value.dtype.kind != "f":
            if value.dtype.kind == "c":
                raise NotImplementedError(COMPLEX)
            raise RuntimeError("data set to a tensor that requires gradients must be floating "
                               "point or complex dtype")
        old = self._data
        if value is not old:
            graph.replaced(self, old, value)
            self._data = value
            self._view = None

    data = property(operator.attrgetter("_data"), _set_data,
                    doc="The value, a numpy array (assigning it bypasses autograd).")

    # ---- autograd state ----------------------------------------------------------------------
    @property
    def requires_grad(self):
        if rebound_tensors and self._view is not None:
            views.refresh(self)
        return self._requires_grad

    @requires_grad.setter
    def requires_grad(self, flag):
        if self._node is not None and not flag:
            raise RuntimeError(
                "you can only change requires_grad flags of leaf variables. If you want to use a "
                "computed variable in a subgraph that doesn't require differentiation use "
                "var_no_grad = var.detach().")
        if flag:
            check_float(self._data.dtype)
        if self._node is None:
            self._requires_grad = bool(flag)

    def requires_grad_(self, requires_grad=True):
        self.requires_grad = requires_grad
        return self

    @property
    def is_leaf(self):
        return self.grad_fn is None

    @property
    def grad_fn(self):
        if rebound_tensors and self._view is not None:
            views.refresh(self)        # a view whose base got a new grad_fn since
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
                                f"type {type_name(value)}")
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
            graph.retaining = True

    @property
    def retains_grad(self):
        return self._node is not None and self._node.retained is not None

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
        return self._guarded(bool(self._data.reshape(()).item()))

    def _guarded(self, outcome):
        """`outcome`, a Python bool taken from this tensor's value; while a function transform
        traces a computed value, recorded as a guard (a replay whose outcome differs retraces)."""
        if state.tracing and self._node is not None:
            state.guards.append((self, outcome))
        return outcome

    def numpy(self, force=False):
        self._concrete("numpy()")
        if self._requires_grad and not force:
            raise RuntimeError(_NEEDS_GRAD_NUMPY)
        return self._data

    def __array__(self, dtype=None, copy=None):
        if state.tracing and (self._requires_grad or self._node is not None):
            raise ArrayConversionError(_TRACED_TO_ARRAY)
        if self._requires_grad:
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

    def __pos__(self):
        return self


Tensor._flavour = Tensor       # see `flavour`


