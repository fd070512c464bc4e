"""The eager graph flattened: the nodes an output reaches, as a `core.flat.FlatTape`.

`linearize(outputs)` numbers a slot for every value (leaves and constants when first seen as
operands, then each entry's output), sorts the entries by recording sequence (a topological
order) and gathers the values, constants and payloads into the arrays the compiled interpreters
read. It runs on every eager `backward()`, so it is written for few Python operations per node:
the integer arrays depend only on the graph's structure, which an eager loop repeats on new
tensors, so they are built once per structure (`Structure`) and looked up after that.

`tape_of(out)` (and `Tensor.tape`) shows the same flat tape through the display
(`inspect.display.GraphTape`).
"""
import operator
import sys
import threading

import numpy as np

from . import graph
from ..core.flat import FlatTape
from ..core.registry import DIFFERENTIABLE, VARIADIC
from ..core.validate import read_only
from ..inspect.display import GraphTape
from .tensor import Tensor

_NO_PAYLOAD = read_only(np.zeros(0, np.int64), owned=True)
_F32, _F64 = np.dtype(np.float32), np.dtype(np.float64)
_VARIADIC, _DIFFERENTIABLE = VARIADIC.tolist(), DIFFERENTIABLE.tolist()   # read per entry


def reachable(outputs, boundary=()):
    """The nodes the output tensors reach, in recording order, short of the nodes of the
    `boundary` tensors (see `linearize`)."""
    # nodes and tensors hash by identity (Tensor's == is elementwise, but distinct live objects
    # never have equal identity hashes)
    seen = {t._node for t in boundary} if boundary else set()
    stack = [t._node for t in outputs if t._node is not None and t._node not in seen]
    rebound = graph.rebound_tensors
    while stack:
        node = stack.pop()
        seen.add(node)
        for t in (node.inputs if rebound else node._inputs):
            n = t._node
            if n is not None and n not in seen:
                stack.append(n)        # a node reached twice before it is popped: walked twice
    if boundary:
        seen.difference_update(t._node for t in boundary)
    return sorted(seen, key=_SEQ)


_SEQ = operator.attrgetter("seq")


def linearize(outputs, extra_leaves=(), boundary=()):
    """Flatten the graph behind `outputs` into a FlatTape; `extra_leaves` get slots even if unused.
    `boundary`: computed tensors that are leaves of this tape (the walk stops at them), the
    values of an enclosing computation that a nested trace takes as inputs.

    This runs at every eager `backward()`, and an eager loop records the same graph again and
    again, on new tensors. So the walk over the graph does only what differs between two such
    graphs: it numbers the slots (leaves as first seen as operands, then each entry's output) and
    gathers the values, constants and payloads; the integer arrays (E, S, NEED), which depend on
    the graph's structure alone, are built from the walk's `key` once and then looked up
    (`Structure`). The walk is written out for few Python operations per node."""
    nodes = reachable(outputs, boundary)
    rebound = graph.rebound_tensors
    slots, values, leaves, key, consts, payloads, calls = {}, [], [], [], [], [], []
    for t in extra_leaves:
        if t._node is None and t not in slots:
            slots[t] = len(values)
            leaves.append((len(values), t))
            v = t._data
            values.append(v)
            key.append((v.size, v.dtype, t._requires_grad))
    for t in boundary:              # keyed by node, as the operands that refer to them look up
        if t._node not in slots:
            slots[t._node] = len(values)
            leaves.append((len(values), t))
            v = t._data
            values.append(v)
            key.append((v.size, v.dtype, True))
    e = 0
    for node in nodes:
        inputs = node.inputs if rebound else node._inputs
        for t in inputs:
            n = t._node
            k = t if n is None else n
            s = slots.get(k)
            if s is None:                   # a leaf, first seen
                s = slots[k] = len(values)
                leaves.append((s, t))
                v = t._data
                values.append(v)
                key.append((v.size, v.dtype, t._requires_grad))
            key.append(s)
        prim = node.prim
        payload = node.payload
        if prim.variadic:                   # the operands' slots are the payload
            if prim.kind == "call":
                calls.append((e, payload))
            payload = np.array([slots[t if t._node is None else t._node] for t in inputs],
                               np.int64)
        slots[node] = len(values)
        v = node.value
        values.append(v)
        if payload is None:
            key.append((prim.opcode, v.size, v.dtype, 0))
        else:
            key.append((prim.opcode, v.size, v.dtype, payload.size))
            payloads.append(payload)
        consts += (node.c0, node.c1)
        e += 1
    if graph.replaced_tensors:
        graph.check_shapes(nodes)      # `.data =` of another shape: the payloads would not fit
    key = tuple(key)
    structure = _STRUCTURES.get(key)
    if structure is None:
        structure = Structure.of(key)
    # FC and IP read-only, like every tape array the interpreters get (see core.validate)
    FC = np.array(consts, np.float64)
    FC.setflags(write=False)
    if payloads:
        IP = np.concatenate(payloads)
        IP.setflags(write=False)
    else:
        IP = _NO_PAYLOAD
    return FlatTape(structure.E, FC.reshape(-1, 2), IP, structure.S, structure.NEED,
                    structure.values(values), structure.offsets, structure.sizes, values, nodes,
                    slots, leaves, calls, structure)


_STRUCTURES = {}           # walk key -> Structure; see linearize
_REUSED = 1 << 15          # values in a structure from which its buffers are reused
_SPARE_BYTES = 1 << 27     # bytes kept in spare buffers, all structures together
_spare_lock = threading.Lock()
_STRUCTURES_MAX = 1 << 20  # tokens kept in all keys together before the cache starts over


class Structure:
    """The arrays of a graph's structure, built from the key of `linearize`'s walk and shared by
    every tape of that structure: read-only (compact_adjoints copies).

    The key lists, in slot order, a token per slot and the operand slots before each entry's
    token: a leaf is (size, dtype, requires_grad), an entry (opcode, size, dtype, payload
    length) after the ints of its operands' slots."""
    __slots__ = ("E", "S", "NEED", "offsets", "sizes", "dtype", "joinable", "size", "spares",
                 "cached")
    tokens = 0             # in all cached keys
    spare_bytes = 0        # in the spare buffers of all cached structures

    def __init__(self, key):
        rows, offsets, sizes, need, dtypes, operands = [], [], [], [], [], []
        variadic, differentiable = _VARIADIC, _DIFFERENTIABLE
        total = ip = 0
        for token in key:
            if token.__class__ is int:
                operands.append(token)
                continue
            if len(token) == 3:                 # a leaf
                size, dtype, requires = token
                need.append(bool(requires))
            else:                               # an entry, after its operands
                opcode, size, dtype, n_payload = token
                n = 0 if variadic[opcode] else len(operands)
                rows += (opcode, operands[0] if n else -1, operands[1] if n > 1 else -1,
                         operands[2] if n > 2 else -1, len(sizes), ip, n_payload, 0)
                ip += n_payload
                operands = []
                need.append(differentiable[opcode])
            offsets.append(total)
            sizes.append(size)
            dtypes.append(dtype)
            total += size
        self.E = read_only(np.array(rows, np.int64).reshape(-1, 8))
        self.S = read_only(np.array([offsets, sizes], np.int64).T.reshape(-1, 2).copy(),
                           owned=True)
        self.NEED = read_only(np.array(need, np.int64), owned=True)
        self.offsets, self.sizes = tuple(offsets), tuple(sizes)
        self.dtype = _dtype_of(dtypes)
        # every value of the buffer's dtype: their bytes can simply be joined (`values`)
        self.joinable = bool(dtypes) and set(dtypes) == {self.dtype}
        self.size = total
        self.spares = []       # buffers of `size` handed back by release (large structures)
        self.cached = True     # in _STRUCTURES (a structure dropped from it keeps no spares)

    @classmethod
    def of(cls, key):
        """The structure of `key`, built and cached."""
        structure = cls(key)
        if cls.tokens + len(key) > _STRUCTURES_MAX:
            _forget_structures()
        _STRUCTURES[key] = structure
        cls.tokens += len(key)
        return structure

    def values(self, values):
        """The value buffer V: the values end to end, in the buffer's dtype.

        Joining the bytes of C-contiguous values of one dtype is much cheaper than
        np.concatenate on an eager graph's small arrays; any other value (a transposed view, a
        broadcast, an integer index among float values) takes np.concatenate, and once one
        did, this structure always does. Large structures concatenate into a buffer they reuse."""
        if self.size >= _REUSED:          # an array of its own, which `release` can keep
            buffer = self._spare()
            if buffer is not None:
                return np.concatenate(values, axis=None, out=buffer, casting="unsafe")
            return np.concatenate(values, axis=None, dtype=self.dtype, casting="unsafe")
        if self.joinable:
            try:
                return np.frombuffer(bytearray().join(values), self.dtype)
            except (TypeError, BufferError, ValueError):
                self.joinable = False
        if not values:
            return np.zeros(0, self.dtype)
        return np.concatenate(values, axis=None, dtype=self.dtype, casting="unsafe")

    def zeros(self):
        """A zeroed buffer of the structure's size (an adjoint buffer)."""
        buffer = self._spare() if self.size >= _REUSED else None
        if buffer is None:
            return np.zeros(self.size, self.dtype)
        buffer.fill(0)
        return buffer

    # Large buffers are reused: a fresh one of a megabyte or more is often fresh memory from
    # the system, whose pages fault in on first write (glibc returns freed memory at the top of
    # its heap), and an eager training step of a large model would pay those faults at every
    # backward. A buffer is handed back by `release` when a backward is done,
    # and taken again only while nothing else refers to it (a kept tape or a view of it holds
    # a reference), so reuse cannot alias live data. Each structure keeps at most two (V and
    # G), and all structures together at most _SPARE_BYTES.
    def _spare(self):
        with _spare_lock:
            while self.spares:
                buffer = self.spares.pop()
                Structure.spare_bytes -= buffer.nbytes
                if sys.getrefcount(buffer) == 2:    # this name and getrefcount's argument
                    return buffer
        return None

    def release(self, *buffers):
        if self.size < _REUSED:
            return
        with _spare_lock:
            if not self.cached:
                return
            for buffer in buffers:
                if len(self.spares) < 2 and buffer.size == self.size and \
                        buffer.dtype == self.dtype and buffer.flags.owndata and \
                        buffer.flags.c_contiguous and \
                        Structure.spare_bytes + buffer.nbytes <= _SPARE_BYTES:
                    self.spares.append(buffer)
                    Structure.spare_bytes += buffer.nbytes


def _forget_structures():
    """Empty the cache of structures, and their spare buffers."""
    with _spare_lock:
        for structure in list(_STRUCTURES.values()):    # a snapshot: others may insert
            Structure.spare_bytes -= sum(buffer.nbytes for buffer in structure.spares)
            structure.spares.clear()
            structure.cached = False
        _STRUCTURES.clear()
        Structure.tokens = 0


def _dtype_of(dtypes):
    """float32 when every floating value is float32, else float64 (integers count as neither:
    they are constants such as indices, and promote nothing). Complex values are refused: the
    sweeps are real, and casting would drop the imaginary parts."""
    dtypes = set(dtypes)
    for dtype in dtypes:
        if dtype.kind == "c":
            raise NotImplementedError(
                f"complex numbers are not supported by tapegrad's autograd: the graph holds a "
                f"value of dtype {dtype} (an operation on a complex tensor was recorded); "
                "differentiate the real and imaginary parts as two real tensors")
        if dtype.kind not in "biuf":
            raise TypeError(f"the graph holds a value of dtype {dtype}, which tapegrad cannot "
                            "differentiate")
    return _F32 if _F32 in dtypes and _F64 not in dtypes else _F64


def tape_of(*outputs):
    """The eager graph behind `outputs` (tensors) as a read-only `GraphTape`: print it, look at
    `.stats()`, `.table(values=True, adjoints=True)`, `.draw()`."""
    if len(outputs) == 1 and isinstance(outputs[0], (tuple, list)):
        outputs = tuple(outputs[0])
    if not outputs:
        raise TypeError("tape_of needs at least one tensor")
    for o in outputs:
        if not isinstance(o, Tensor):
            raise TypeError(f"tape_of expects tensors, got {type(o).__name__}")
    flat = linearize(outputs, tuple(o for o in outputs if o._node is None))
    return GraphTape(flat, outputs)


Tensor.tape = property(tape_of, doc="The eager graph behind this tensor as a read-only tape "
                                     "(see `tapegrad.tape_of`).")
