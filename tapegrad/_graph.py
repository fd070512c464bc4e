"""Recording: the nodes of the eager graph and the thread's recording state.

Every differentiable operation on a tensor that requires grad appends one `Node`: the entry of the
tape that produced the tensor (its primitive, operands, payload and constants). Nodes refer to
their operands and nothing refers to a node but the tensors computed from it, so the part of the
tape no live tensor can reach is released by reference counting as soon as it is dropped: a long
eager session keeps memory flat. `backward()` flattens the nodes an output reaches into the
structure-of-arrays tape of `_tape` (sorted by `seq`, which is a topological order) and runs the
compiled reverse interpreter over it.
"""
import functools
import itertools
import threading
import weakref

_sequence = itertools.count()


class _State(threading.local):
    """Recording is per thread, like PyTorch's grad mode."""
    grad_enabled = True
    tracing = 0            # > 0 while a function transform traces: record non-differentiable ops too
    guards = None          # list collecting (comparison tensor, outcome) while tracing


state = _State()


class Node:
    """One tape entry: the operation that produced a tensor; PyTorch calls it the `grad_fn`."""
    __slots__ = ("prim", "inputs", "payload", "c0", "c1", "value", "seq", "_name", "freed",
                 "retained", "where", "__weakref__")

    def __init__(self, prim, inputs, value, payload=None, c0=0.0, c1=0.0, name=None):
        self.prim = prim
        self.inputs = inputs          # tuple of Tensors
        self.payload = payload        # int64 array or None
        self.c0 = c0
        self.c1 = c1
        self.value = value            # the output's numpy value
        self.seq = next(_sequence)
        self._name = name
        self.freed = False            # saved values released by a backward without retain_graph
        self.retained = None          # weakref to the output tensor after retain_grad()
        self.where = None             # (file, line) of the recording call, in anomaly mode

    def name(self):
        return self._name or self.prim.grad_fn

    @property
    def next_functions(self):
        """PyTorch's view of the graph: for each operand, its grad_fn (or AccumulateGrad) and 0.

        A Python number operand of `x + 2`, `x * 2`, `x / 2` (a constant here, a wrapped tensor in
        PyTorch) shows as `(None, 0)`, as in PyTorch."""
        functions = tuple((_function_of(t), 0) for t in self.inputs)
        if self.prim.name in _SCALAR_OPERAND:
            functions += ((None, 0),)
        return functions

    def __repr__(self):
        return f"<{self.name()} object at {hex(id(self))}>"


_SCALAR_OPERAND = frozenset(("add_const", "mul_const", "div_const", "rdiv_const"))


def _function_of(tensor):
    """The node to show for an operand; hidden helper entries (broadcasts) are looked through."""
    node = tensor._node
    while node is not None and node._name == "" and len(node.inputs) == 1:
        tensor = node.inputs[0]
        node = tensor._node
    if node is not None:
        return node
    if not tensor._requires_grad:
        return None
    # One AccumulateGrad per leaf while anyone holds it, as in PyTorch (`is` works across nodes).
    acc = _accumulators.get(id(tensor))
    if acc is None or acc.variable is not tensor:
        acc = _accumulators[id(tensor)] = AccumulateGrad(tensor)
    return acc


class AccumulateGrad:
    """The graph's sink for a leaf tensor, as in PyTorch's `next_functions`."""
    __slots__ = ("variable", "__weakref__")
    next_functions = ()

    def __init__(self, variable):
        self.variable = variable

    def name(self):
        return "torch::autograd::AccumulateGrad"

    def __repr__(self):
        return f"<AccumulateGrad object at {hex(id(self))}>"


# An AccumulateGrad holds its leaf, so an id here is never reused while its entry lives.
_accumulators = weakref.WeakValueDictionary()


class no_grad:
    """Context manager and decorator (`@no_grad()` or `@no_grad`): operations inside record
    nothing. The mode is per thread, as in PyTorch."""
    _enabled = False

    def __new__(cls, func=None):
        self = super().__new__(cls)
        return self if func is None else self(func)      # bare `@no_grad`

    def __enter__(self):
        self._prev = state.grad_enabled
        state.grad_enabled = self._enabled

    def __exit__(self, *exc):
        state.grad_enabled = self._prev

    def clone(self):
        return type(self)()

    def __call__(self, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with self.clone():
                return fn(*args, **kwargs)
        return wrapper


class enable_grad(no_grad):
    _enabled = True


class set_grad_enabled(no_grad):
    """`set_grad_enabled(mode)` switches grad mode now; as a context manager or decorator it
    restores the previous mode afterwards (PyTorch's semantics)."""

    def __new__(cls, mode):
        return object.__new__(cls)

    def __init__(self, mode):
        self._enabled = bool(mode)
        self._prev = state.grad_enabled
        state.grad_enabled = self._enabled

    def __enter__(self):
        pass

    def clone(self):
        return type(self)(self._enabled)

    def __call__(self, fn):
        state.grad_enabled = self._prev     # decorating does not switch the mode
        return super().__call__(fn)


def is_grad_enabled():
    return state.grad_enabled
