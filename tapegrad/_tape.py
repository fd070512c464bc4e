"""The flat tape: structure-of-arrays entries, a slot table and one value buffer.

`linearize(outputs)` turns the nodes that the output tensors reach into the arrays the compiled
interpreters read:

    E[e]    = (opcode, a, b, c, out, payload offset, payload length, 0)   int64 (n, 8)
    FC[e]   = (c0, c1)                                                   float (n, 2)
    IP      = the integer payloads, end to end                           int64
    S[slot] = (offset, size) of the slot in the value buffer             int64 (slots, 2)
    NEED    = 1 where a slot needs an adjoint                            uint8 (slots,)

Every value gets a slot: leaves and constants first seen as operands, then each entry's output.
Entries are sorted by recording sequence, which is a topological order.
"""
import numpy as np

from ._registry import OPCODE

_PACK = OPCODE["pack"]


class FlatTape:
    """Arrays of one linearized graph, the Python objects its slots stand for, and their values."""

    def __init__(self, E, FC, IP, S, NEED, shapes, dtype, nodes, leaves, node_slot, leaf_slot):
        self.E, self.FC, self.IP, self.S, self.NEED = E, FC, IP, S, NEED
        self.shapes = shapes          # shape of each slot
        self.dtype = dtype            # the value buffer's dtype
        self.nodes = nodes            # the recorded nodes, in tape order
        self.leaves = leaves          # tensors without a node (inputs and constants), by slot
        self.node_slot = node_slot    # id(node) -> output slot
        self.leaf_slot = leaf_slot    # id(tensor) -> slot

    @property
    def size(self):
        return int(self.S[-1, 0] + self.S[-1, 1]) if len(self.S) else 0

    def slot_of(self, tensor):
        node = tensor._node
        if node is not None:
            return self.node_slot.get(id(node))
        return self.leaf_slot.get(id(tensor))

    def values(self):
        """The value buffer, packed from the recorded values."""
        V = np.empty(self.size, self.dtype)
        S = self.S
        for s, t in self.leaves.items():
            V[S[s, 0]:S[s, 0] + S[s, 1]] = t.data.ravel()
        for node in self.nodes:
            s = self.node_slot[id(node)]
            V[S[s, 0]:S[s, 0] + S[s, 1]] = node.value.ravel()
        return V

    def view(self, buffer, slot):
        """The value of `slot` in a flat `buffer`, in its shape."""
        off, size = self.S[slot]
        return buffer[off:off + size].reshape(self.shapes[slot])


def reachable(outputs):
    """The nodes the output tensors reach, in recording order."""
    seen = {}
    stack = [t._node for t in outputs if t._node is not None]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen[id(node)] = node
        for t in node.inputs:
            if t._node is not None and id(t._node) not in seen:
                stack.append(t._node)
    return sorted(seen.values(), key=lambda n: n.seq)


def _buffer_dtype(values):
    floats = {v.dtype for v in values if v.dtype.kind == "f"}
    return np.dtype(np.float32) if floats == {np.dtype(np.float32)} else np.dtype(np.float64)


def linearize(outputs, extra_leaves=()):
    """Flatten the graph behind `outputs` into a FlatTape; `extra_leaves` get slots even if unused."""
    nodes = reachable(outputs)
    leaf_slot, node_slot, leaves = {}, {}, {}
    sizes, shapes, need = [], [], []

    def new_slot(value, needs_grad):
        sizes.append(value.size)
        shapes.append(value.shape)
        need.append(needs_grad)
        return len(sizes) - 1

    def slot(t):
        node = t._node
        if node is not None:
            return node_slot[id(node)]
        s = leaf_slot.get(id(t))
        if s is None:
            s = leaf_slot[id(t)] = new_slot(t.data, t._requires_grad)
            leaves[s] = t
        return s

    for t in extra_leaves:
        slot(t)
    rows, payloads, consts = [], [], []
    offset = 0
    for node in nodes:
        operands = [slot(t) for t in node.inputs]
        out = node_slot[id(node)] = new_slot(node.value, bool(node.prim.differentiable))
        payload = node.payload
        if node.prim.opcode == _PACK:
            payload = np.array(operands, np.int64)
            operands = []
        n_payload = 0 if payload is None else payload.size
        if n_payload:
            payloads.append(payload)
        operands += [-1] * (3 - len(operands))
        rows.append((node.prim.opcode, *operands, out, offset, n_payload, 0))
        consts.append((node.c0, node.c1))
        offset += n_payload
    sizes = np.array(sizes, np.int64)
    S = np.empty((len(sizes), 2), np.int64)
    S[:, 1] = sizes
    S[:, 0] = np.cumsum(sizes) - sizes
    dtype = _buffer_dtype([n.value for n in nodes] + [t.data for t in leaves.values()])
    return FlatTape(
        E=np.array(rows, np.int64).reshape(-1, 8),
        FC=np.array(consts, np.float64).reshape(-1, 2),
        IP=np.concatenate(payloads) if payloads else np.zeros(0, np.int64),
        S=S, NEED=np.array(need, np.uint8), shapes=shapes, dtype=dtype, nodes=nodes,
        leaves=leaves, node_slot=node_slot, leaf_slot=leaf_slot)
