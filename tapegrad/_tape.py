"""The flat tape: structure-of-arrays entries, a slot table and one value buffer.

`linearize(outputs)` turns the nodes that the output tensors reach into the arrays the compiled
interpreters read:

    E[e]    = (opcode, a, b, c, out, payload offset, payload length, 0)   int64 (n, 8)
    FC[e]   = (c0, c1)                                                   float64 (n, 2)
    IP      = the integer payloads, end to end                           int64
    S[slot] = (offset, size) of the slot in the value buffer             int64 (slots, 2)
    NEED    = 1 where a slot needs an adjoint                            int64 (slots,)
    V       = every slot's value, end to end                             float32 or float64

Every value gets a slot: leaves and constants when first seen as operands, then each entry's
output. Entries are sorted by recording sequence, which is a topological order. This runs on
every eager `backward()`, so it is written for few Python operations per node.
"""
import operator

import numpy as np

from . import _graph
from ._registry import PRIMS

_VARIADIC = [p.variadic for p in PRIMS]
_NO_PAYLOAD = np.zeros(0, np.int64)
_F32, _F64 = np.dtype(np.float32), np.dtype(np.float64)


class FlatTape:
    """Arrays of one linearized graph and the Python objects its slots stand for."""
    __slots__ = ("E", "FC", "IP", "S", "NEED", "V", "offsets", "sizes", "values", "nodes",
                 "slots", "leaves", "calls")
    validated = True    # built by linearize from recorded nodes: valid by construction (_sweep)

    def __init__(self, E, FC, IP, S, NEED, V, offsets, sizes, values, nodes, slots, leaves,
                 calls):
        self.E, self.FC, self.IP, self.S, self.NEED, self.V = E, FC, IP, S, NEED, V
        self.offsets = offsets    # S[:, 0] and S[:, 1] as Python lists (cheap from Python)
        self.sizes = sizes
        self.values = values      # the recorded value of each slot (numpy arrays)
        self.nodes = nodes        # the recorded nodes, in tape order
        self.slots = slots        # id(node) for outputs, id(tensor) for leaves -> slot
        self.leaves = leaves      # (slot, tensor) of every tensor without a node
        self.calls = calls        # (entry, rule) of nested-transform entries, see _sweep

    @property
    def dtype(self):
        return self.V.dtype

    def slot_of(self, tensor):
        node = tensor._node
        return self.slots.get(id(tensor) if node is None else id(node))

    def view(self, buffer, slot):
        """The value of `slot` in a flat `buffer`, in its shape."""
        off = self.offsets[slot]
        return buffer[off:off + self.sizes[slot]].reshape(self.values[slot].shape)


def reachable(outputs):
    """The nodes the output tensors reach, in recording order."""
    seen = {}
    stack = [t._node for t in outputs if t._node is not None]
    rebound = _graph._rebound
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen[id(node)] = node
        for t in (node.inputs if rebound else node._inputs):
            n = t._node
            if n is not None and id(n) not in seen:
                stack.append(n)
    nodes = list(seen.values())
    if len(nodes) > 1:
        nodes.sort(key=_SEQ)
    return nodes


_SEQ = operator.attrgetter("seq")


def linearize(outputs, extra_leaves=()):
    """Flatten the graph behind `outputs` into a FlatTape; `extra_leaves` get slots even if unused.

    This runs at every eager `backward()`, so it is one pass written for few Python operations
    per node: slots are numbered as they are first seen (leaves as operands, then each entry's
    output), their offsets accumulate on the way, and each array is one numpy call."""
    nodes = reachable(outputs)
    rebound = _graph._rebound
    slots, values, flat, need, leaves, offsets, sizes = {}, [], [], [], [], [], []
    total = 0
    for t in extra_leaves:
        if t._node is None and id(t) not in slots:
            slots[id(t)] = len(values)
            leaves.append((len(values), t))
            values.append(t.data)
            flat.append(t.data.reshape(-1))
            need.append(t._requires_grad)
            offsets.append(total)
            sizes.append(t.data.size)
            total += t.data.size
    rows, consts, payloads, calls = [], [], [], []
    offset = 0
    for e, node in enumerate(nodes):
        operands = [-1, -1, -1]
        for j, t in enumerate(node.inputs if rebound else node._inputs):
            n = t._node          # a leaf gets a slot when first seen (written out: hot loop)
            key = id(t) if n is None else id(n)
            s = slots.get(key)
            if s is None:
                s = slots[key] = len(values)
                leaves.append((s, t))
                v = t.data
                values.append(v)
                flat.append(v.reshape(-1))
                need.append(t._requires_grad)
                offsets.append(total)
                sizes.append(v.size)
                total += v.size
            if j < 3:
                operands[j] = s
        out = slots[id(node)] = len(values)
        v = node.value
        values.append(v)
        flat.append(v.reshape(-1))
        offsets.append(total)
        sizes.append(v.size)
        total += v.size
        prim = node.prim
        need.append(prim.differentiable)
        payload = node.payload
        if prim.variadic:
            if prim.kind == "call":
                calls.append((e, payload))
            payload = np.array([slots[id(t) if t._node is None else id(t._node)]
                                for t in node._inputs], np.int64)
            operands = [-1, -1, -1]
        if payload is None:
            rows += (prim.opcode, operands[0], operands[1], operands[2], out, offset, 0, 0)
        else:
            rows += (prim.opcode, operands[0], operands[1], operands[2], out, offset,
                     payload.size, 0)
            payloads.append(payload)
            offset += payload.size
        consts += (node.c0, node.c1)
    n_rows, n_slots = len(nodes), len(values)
    for k in range(n_slots):
        rows += (offsets[k], sizes[k])
    rows += need
    ints = np.array(rows, np.int64)
    dtype = _dtype_of(values)
    V = np.concatenate(flat, dtype=dtype, casting="unsafe") if values else np.zeros(0, dtype)
    return FlatTape(
        ints[:8 * n_rows].reshape(n_rows, 8), np.array(consts, np.float64).reshape(n_rows, 2),
        np.concatenate(payloads) if payloads else _NO_PAYLOAD,
        ints[8 * n_rows:8 * n_rows + 2 * n_slots].reshape(n_slots, 2),
        ints[8 * n_rows + 2 * n_slots:], V, offsets, sizes, values, nodes, slots, leaves, calls)


def _dtype_of(values):
    """float32 when every floating value is float32, else float64 (integers count as neither:
    they are constants such as indices, and promote nothing)."""
    first = values[0].dtype if values else _F64
    if first is _F64 or first is _F32:
        for v in values:
            if v.dtype is not first:
                break
        else:
            return first
    dtypes = {v.dtype for v in values}
    return _F32 if _F32 in dtypes and _F64 not in dtypes else _F64


def compact_adjoints(flat, need):
    """Renumber the slots of `flat` so that those needing an adjoint come first.

    The reverse sweeps touch adjoints of those slots only (NEED), so an adjoint buffer the size
    of that prefix suffices: a function of a large constant (a data matrix) no longer allocates
    and clears an adjoint for it at every call. Returns the new FlatTape (its `slots`, `leaves`
    and operand columns renumbered, `NEED` set) and the prefix length in values.
    """
    need = np.asarray(need, bool)
    order = np.argsort(~need, kind="stable")              # needed slots first, order kept
    renumber = np.empty(len(order), np.int64)
    renumber[order] = np.arange(len(order))
    E = flat.E.copy()
    operands = E[:, 1:5]
    E[:, 1:5] = np.where(operands >= 0, renumber[np.maximum(operands, 0)], -1)
    IP = flat.IP.copy()
    for e in (e for e in range(len(E)) if _VARIADIC[E[e, 0]]):
        span = slice(E[e, 5], E[e, 5] + E[e, 6])
        IP[span] = renumber[IP[span]]
    values = [flat.values[s] for s in order]
    sizes = [flat.sizes[s] for s in order]
    offsets, total = [], 0
    for n in sizes:
        offsets.append(total)
        total += n
    S = np.array([offsets, sizes], np.int64).T.reshape(-1, 2).copy()
    V = np.concatenate([flat.V[flat.offsets[s]:flat.offsets[s] + flat.sizes[s]] for s in order]) \
        if len(order) else flat.V.copy()
    slots = {key: int(renumber[s]) for key, s in flat.slots.items()}
    leaves = [(int(renumber[s]), t) for s, t in flat.leaves]
    compact = FlatTape(E, flat.FC, IP, S, need[order].astype(np.int64), V, offsets, sizes, values,
                       flat.nodes, slots, leaves, flat.calls)
    n_need = int(need.sum())
    return compact, (offsets[n_need] if n_need < len(offsets) else total)
