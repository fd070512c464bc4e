"""Recording: the nodes of the eager graph and the thread's recording state.

Every differentiable operation on a tensor that requires grad appends one `Node`: the entry of the
tape that produced the tensor (its primitive, operands, payload and constants). Nodes refer to
their operands and nothing refers to a node but the tensors computed from it, so the part of the
tape no live tensor can reach is released by reference counting as soon as it is dropped: a long
eager session keeps memory flat. `backward()` flattens the nodes an output reaches into a flat
tape (`eager.flatten`, sorted by `seq`, which is a topological order) and runs the compiled
reverse interpreter over it.

This module also keeps what backward checks about the recorded values: the version counters of
in-place writes (`check_versions`) and the shapes given by `.data =` (`check_shapes`). It sits
at the bottom of the eager layer and reaches no module above it: anomaly mode, which works per
node, switches `anomaly_enabled` and installs its per-node work in `on_record`; tensors are
only read through their attributes.
"""
import functools
import itertools
import re
import threading
import weakref

import numpy as np

from .dtypes import torch_type

_sequence = itertools.count()
anomaly_enabled = False    # anomaly mode (global, as in PyTorch), switched by eager.anomaly
on_record = None           # anomaly mode's work on each new node, installed by eager.anomaly
retaining = False          # set by the first retain_grad(): backward then looks for retained nodes


class _State(threading.local):
    """Recording is per thread, like PyTorch's grad mode."""
    grad_enabled = True
    tracing = 0            # > 0 while a function transform traces: record non-differentiable ops too
    guards = None          # list collecting (comparison tensor, outcome) while tracing


state = _State()


class Node:
    """One tape entry: the operation that produced a tensor; PyTorch calls it the `grad_fn`."""
    __slots__ = ("prim", "_inputs", "payload", "c0", "c1", "value", "seq", "_name", "freed",
                 "retained", "where", "versions", "rebinds", "__weakref__")

    def __init__(self, prim, inputs, value, payload=None, c0=0.0, c1=0.0, name=None):
        self.prim = prim
        self._inputs = inputs         # tuple of Tensors (see `inputs`)
        self.payload = payload        # int64 array or None
        self.c0 = c0
        self.c1 = c1
        self.value = value            # the output's numpy value
        self.seq = next(_sequence)
        self._name = name
        self.freed = False            # saved values released by a backward without retain_graph
        self.retained = None          # weakref to the output tensor after retain_grad()
        self.where = None             # (file, line, function, source) of the recording call,
        #                               in anomaly mode
        # Versions of the operands and of the output when recorded (None: all 0, the common case
        # of a program that never wrote in place), checked by backward (see `check_versions`),
        # and the operands' rebinding counts (None: all 0), see `inputs`.
        self.versions = self.rebinds = None
        if written_bases or rebound_tensors or replaced_tensors:
            if prim.saves:
                self.versions = _versions(inputs, value)
            if rebound_tensors:
                self.rebinds = tuple(map(rebind_count, inputs))
        if anomaly_enabled:
            on_record(self)

    @property
    def inputs(self):
        """The operands as they were when this node was recorded.

        An in-place operation whose result is recorded (`b += 1` on a non-leaf) gives the tensor
        a new grad_fn (and writes its memory); the nodes recorded before it still need the old
        grad_fn, which `rebind` keeps: an operand rebound since is replaced here by its old state,
        except an operand whose value the backward reads and that was written since, which
        `check_versions` reports as PyTorch does."""
        if rebound_tensors:
            self._resolve_rebound()
        return self._inputs

    def _resolve_rebound(self):
        inputs, rebinds = self._inputs, self.rebinds
        changed = False
        saved = None
        fixed = list(inputs)
        for i, t in enumerate(inputs):
            entry = rebound_tensors.get(id(t))
            if entry is None or entry[0]() is not t:
                continue
            then = rebinds[i] if rebinds is not None else 0
            if entry[1] == then:
                continue
            if saved is None:
                saved = saved_operands(self)
            before = t._history[then]
            if i in saved:
                if version(t) != (0 if self.versions is None else self.versions[i]):
                    continue        # check_versions raises for it (a saved value was modified)
                if t._node is None and before._node is not None:
                    raise RuntimeError(_DETACHED)
            fixed[i] = before
            changed = True
        if changed:
            self._inputs = tuple(fixed)
            self.rebinds = tuple(map(rebind_count, fixed))

    def name(self):
        return self._name or self.prim.grad_fn

    @property
    def next_functions(self):
        """PyTorch's view of the graph: for each operand, its grad_fn (or AccumulateGrad) and 0.

        A Python number operand of `x + 2`, `x * 2`, `x / 2` (a constant here, a wrapped tensor in
        PyTorch) shows as `(None, 0)`, as in PyTorch."""
        try:
            inputs = self.inputs
        except RuntimeError:            # a saved operand detached in place: backward raises
            inputs = self._inputs
        functions = tuple((_function_of(t), 0) for t in _visible(inputs))
        if self.prim.name in _SCALAR_OPERAND:
            functions += ((None, 0),)
        return functions

    def __repr__(self):
        return f"<{self.name()} object at {hex(id(self))}>"


_SCALAR_OPERAND = frozenset(("add_const", "mul_const", "div_const", "rdiv_const"))


def _visible(inputs):
    """The operands as PyTorch shows them: a hidden entry with several operands (the pack of
    `cat` or of an in-place write into a view) stands for those operands."""
    for t in inputs:
        node = t._node
        if node is not None and node._name == "" and len(node._inputs) > 1:
            yield from _visible(node.inputs)
        else:
            yield t


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


# ---- version counters -------------------------------------------------------------------------
#
# PyTorch counts the in-place writes into a tensor (shared with its views) and checks, at backward,
# that the values a node saved are still at the version it recorded. Here a tensor's version is the
# number of in-place writes into its memory, counted per numpy base array, so that views, detached
# tensors and slices share it (every in-place operation writes memory, recorded or not). A recorded
# in-place operation also rebinds the tensor to a new grad_fn, which nodes recorded before must not
# see (`rebind`, `Node.inputs`). `.data = value` keeps the tensor's version, as in PyTorch (an
# offset), and remembers the shapes the tensor had (`replaced`, `check_shapes`). The counts live in
# registries keyed by id() with weak references, so a program that never writes in place pays one
# truthiness test per recorded node and nothing else.

written_bases = {}      # id(base array) -> [weakref, writes]
rebound_tensors = {}    # id(tensor) -> [weakref, rebinds]; the states before are tensor._history
replaced_tensors = {}   # id(tensor) -> [weakref, 0, [(seq, shape before) of each change of shape],
#                                      version offset]

_DETACHED = ("Trying to use a saved tensor that has been detached in-place, i.e. with .detach_()."
             "This is not supported, please use out-of-place `.detach()` instead")


def _forget(registry, key, ref):
    entry = registry.get(key)
    if entry is not None and entry[0] is ref:
        del registry[key]


def _entry(registry, obj, extra):
    key = id(obj)
    entry = registry.get(key)
    if entry is None or entry[0]() is not obj:
        entry = registry[key] = [weakref.ref(obj, functools.partial(_forget, registry, key)), 0] \
            + extra
    return entry


def base_array(a):
    """The array that owns the memory of `a` (views share their base's version)."""
    b = a.base
    while isinstance(b, np.ndarray):
        a, b = b, b.base
    return a


def _count(base):
    entry = written_bases.get(id(base))
    return 0 if entry is None or entry[0]() is not base else entry[1]


def rebind_count(tensor):
    entry = rebound_tensors.get(id(tensor))
    return 0 if entry is None or entry[0]() is not tensor else entry[1]


def _offset(tensor):
    entry = replaced_tensors.get(id(tensor))
    return 0 if entry is None or entry[0]() is not tensor else entry[3]


def version(tensor):
    """PyTorch's `tensor._version`: the in-place writes into its memory."""
    if not (written_bases or replaced_tensors):
        return 0
    n = _count(base_array(tensor._data))
    return n + _offset(tensor) if replaced_tensors else n


def _versions(inputs, value):
    """(version of each operand..., writes into the output's memory), as a node records them;
    None when all are 0. `version` written out: a training loop that updates its parameters in
    place records every node this way."""
    versions = []
    for t in inputs:
        a = t._data
        b = a.base
        while isinstance(b, np.ndarray):
            a, b = b, b.base
        entry = written_bases.get(id(a))
        n = 0 if entry is None or entry[0]() is not a else entry[1]
        if replaced_tensors:
            n += _offset(t)
        versions.append(n)
    versions.append(_count(base_array(value)))
    return tuple(versions) if any(versions) else None


# The `seq` of the last in-place write or rebinding: nodes recorded after it saw every value at
# its current version, so `check_versions` has nothing to check for them.
_last_write = -1


def wrote(array):
    """Count an in-place write into `array` (and every view of its memory)."""
    global _last_write
    _entry(written_bases, base_array(array), [])[1] += 1
    _last_write = next(_sequence)


def rebind(tensor, old):
    """Record that `tensor` gets a new grad_fn (a recorded in-place operation, a view whose base
    was modified, detach_); `old` (a tensor with its previous value and grad_fn) stands in for
    it in the nodes recorded before."""
    global _last_write
    entry = _entry(rebound_tensors, tensor, [])
    if entry[1]:
        tensor._history.append(old)
    else:           # on the tensor, not here: the history may lead back to it (through views)
        tensor._history = [old]
    entry[1] += 1
    _last_write = next(_sequence)


def adopt(node, array):
    """Make `array` (the memory an in-place operation wrote its result into) the value of `node`,
    at the array's current version: later writes into it are then caught like writes into any
    saved value."""
    node.value = array
    if node.prim.saves:
        written = _count(base_array(array))
        versions = node.versions
        if versions is not None:
            node.versions = versions[:-1] + (written,)
        elif written:
            node.versions = (0,) * len(node._inputs) + (written,)


def replaced(tensor, old, new):
    """`tensor.data = new` replaced `old`: the tensor keeps its version (PyTorch's `.data`
    assignment is invisible to the version counter), and a change of shape is remembered for
    `check_shapes`."""
    global _last_write
    keep = version(tensor)
    entry = replaced_tensors.get(id(tensor))
    if entry is None or entry[0]() is not tensor:
        if keep == _count(base_array(new)) and old.shape == new.shape:
            return              # nothing to remember: the common `p.data = p.data - lr * g`
        entry = _entry(replaced_tensors, tensor, [[], 0])
    if old.shape != new.shape:
        entry[2].append((next(_sequence), old.shape))
    entry[3] = keep - _count(base_array(new))
    _last_write = next(_sequence)


def _shape_when(history, seq, shape):
    """The shape a tensor had when the node numbered `seq` was recorded (`shape` is its shape
    now; `history` lists (seq, shape before) of its changes of shape)."""
    for when, before in history:
        if when > seq:
            return before
    return shape


def check_shapes(nodes):
    """Raise when a tensor that a node recorded was given data of another shape since (by
    `.data = value`): the node's payload (index maps, matmul dimensions) and its operand's value
    in the tape must have the shape the node was recorded with, or the compiled sweeps would
    read out of bounds. A leaf's current data is what backward reads (a leaf's value may be
    changed this way, with its shape kept); a non-leaf's value is the one recorded."""
    if not replaced_tensors:
        return
    for node in nodes:
        for i, t in enumerate(node._inputs):
            entry = replaced_tensors.get(id(t))
            if entry is None or entry[0]() is not t or not entry[2]:
                continue
            now = t._data.shape
            recorded = _shape_when(entry[2], node.seq, now)
            used = now if t._node is None else t._node.value.shape
            if recorded != used:
                raise RuntimeError(
                    "one of the variables needed for gradient computation was given data of "
                    f"another shape (by .data =): input {i} of {node.name()} had shape "
                    f"{list(recorded)} when it was recorded, and the value backward would use "
                    f"has shape {list(used)}. Assign .data a value of the recorded shape, or "
                    "record the computation again.")


def vjp_reads(prim):
    """For each operand of `prim`: (the operands whose values its VJP reads, whether it reads
    the output), or None when the VJP reads no value. Elementwise: from the derivative
    expressions; structural: the registry's `reads`."""
    reads = _READS.get(prim.opcode, _READS)
    if reads is _READS:
        reads = _READS[prim.opcode] = _reads(prim)
    return reads


def _reads(prim):
    if not prim.saves:
        return None
    if prim.kind not in ("unary", "binary"):
        return prim.reads
    names = (("x",),) if prim.kind == "unary" else (("a", "b"),) * 2
    reads = []
    for expr, operands in zip(prim.d, names):
        used = set(re.findall(r"[a-z_]\w*", expr))
        reads.append((tuple(i for i, v in enumerate(operands) if v in used), "y" in used))
    return tuple(reads)


_READS = {}


def saved_operands(node):
    """The operand indices whose recorded values `node`'s VJP reads (and -1: its output), for
    the operands that require grad (PyTorch saves `other` of `self * other` only when `self`
    requires grad)."""
    reads = vjp_reads(node.prim)
    saved = set()
    if reads is None:
        return saved
    for j, t in enumerate(node._inputs):
        if j < len(reads) and reads[j] and (t._requires_grad or t._node is not None):
            operands, output = reads[j]
            saved.update(operands)
            if output:
                saved.add(-1)
    return saved


_QUALIFIED = {"CopySlices": "torch::autograd::CopySlices"}    # as PyTorch prints them


def _describe(tensor, node, dtype_name):
    shape = list(tensor._data.shape) if tensor is not None else list(node.value.shape)
    text = f"[tapegrad.{dtype_name}Tensor {shape}]"
    producer = node if tensor is None else tensor.grad_fn   # a view's, over its base's now
    if producer is not None:
        name = re.sub(r'Backward[0-9]*$', '', producer.name())
        text += f", which is output 0 of {_QUALIFIED.get(name, name)},"
    return text


def check_versions(nodes):
    """Raise PyTorch's error when a value that a node's VJP reads was modified in place since
    the node was recorded (before any sweep reads it). `nodes` are in recording order."""
    if not (written_bases or rebound_tensors or replaced_tensors) or not nodes or nodes[0].seq > _last_write:
        return
    for node in nodes:
        if not node.prim.saves:
            continue
        saved = saved_operands(node)
        if not saved:
            continue
        recorded = node.versions
        for i in sorted(saved):
            if i == -1:
                tensor, now = None, _count(base_array(node.value))
            else:
                tensor = node._inputs[i]
                now = version(tensor)
            then = 0 if recorded is None else recorded[i]
            if now != then:
                dtype = (node.value if tensor is None else tensor._data).dtype
                raise RuntimeError(
                    "one of the variables needed for gradient computation has been modified by "
                    f"an inplace operation: {_describe(tensor, node, torch_type(dtype))} is at "
                    f"version {now}; expected version {then} instead. " + _hint(node))


def _hint(node):
    if not anomaly_enabled or node.where is None:
        return ("Hint: enable anomaly detection to find the operation that failed to compute its "
                "gradient, with tapegrad.autograd.set_detect_anomaly(True).")
    return (f"Hint: the operation that failed to compute its gradient is {node.name()}, "
            f"recorded at {location(node.where)}. The variable in question was changed in there "
            "or anywhere later. Good luck!")


def location(where):
    """'File "f.py", line 3, in loss: y = x.log()' for a Node.where."""
    if where is None:
        return "an unknown place (a replayed tape keeps no source locations)"
    filename, line, function, source = where
    return f'File "{filename}", line {line}, in {function}' + (f": {source}" if source else "")


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
