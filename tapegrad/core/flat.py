"""The flat tape: structure-of-arrays entries, a slot table and one value buffer.

    E[e]    = (opcode, a, b, c, out, payload offset, payload length, 0)   int64 (n, 8)
    FC[e]   = (c0, c1)                                                   float64 (n, 2)
    IP      = the integer payloads, end to end                           int64
    S[slot] = (offset, size) of the slot in the value buffer             int64 (slots, 2)
    NEED    = 1 where a slot needs an adjoint                            int64 (slots,)
    V       = every slot's value, end to end                             float32 or float64

A `FlatTape` is what a front end hands to the sweeps, the transforms and the display: the arrays
the compiled interpreters read, plus the Python objects its slots stand for (recorded nodes,
leaves), which the core only carries along. The eager layer builds one from its graph
(`eager.flatten.linearize`); tracing renumbers it with `compact_adjoints`.
"""
import numpy as np

from .registry import VARIADIC



class FlatTape:
    """Arrays of one linearized graph and the Python objects its slots stand for."""
    __slots__ = ("E", "FC", "IP", "S", "NEED", "V", "offsets", "sizes", "values", "nodes",
                 "slots", "leaves", "calls", "structure")
    validated = True    # built from recorded nodes: valid by construction (see core.sweep.check)

    def __init__(self, E, FC, IP, S, NEED, V, offsets, sizes, values, nodes, slots, leaves,
                 calls, structure=None):
        self.E, self.FC, self.IP, self.S, self.NEED, self.V = E, FC, IP, S, NEED, V
        self.offsets = offsets    # S[:, 0] and S[:, 1] as Python lists (cheap from Python)
        self.sizes = sizes
        self.values = values      # the recorded value of each slot (numpy arrays)
        self.nodes = nodes        # the recorded nodes, in tape order
        self.slots = slots        # node for outputs, leaf object for leaves -> slot (identity keys)
        self.leaves = leaves      # (slot, leaf object) of every value without a node
        self.calls = calls        # (entry, rule) of nested-transform entries, see core.sweep
        self.structure = structure    # the builder's cached structure (buffer reuse), or None

    def adjoints(self):
        """A zeroed adjoint buffer the size of V (from the structure's spares when large)."""
        if self.structure is not None:
            return self.structure.zeros()
        return np.zeros(self.V.size, self.V.dtype)

    def release(self, *buffers):
        """Hand V and adjoint buffers back for reuse by the next tape of this structure, once
        the caller is done with them (nothing may keep them or views of them)."""
        if self.structure is not None:
            self.structure.release(*buffers)

    @property
    def dtype(self):
        return self.V.dtype

    def slot_of(self, value):
        """The slot of a front end's value: that of the node that computed it (`value._node`),
        or its own when it is a leaf; None when the tape does not hold it."""
        node = value._node
        return self.slots.get(value if node is None else node)

    def view(self, buffer, slot):
        """The value of `slot` in a flat `buffer`, in its shape."""
        off = self.offsets[slot]
        return buffer[off:off + self.sizes[slot]].reshape(self.values[slot].shape)


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
    for e in np.flatnonzero(VARIADIC[E[:, 0]]).tolist():     # operands in the payload
        span = slice(E[e, 5], E[e, 5] + E[e, 6])
        IP[span] = renumber[IP[span]]
    old_sizes = np.asarray(flat.sizes, np.int64)
    sizes = old_sizes[order]
    ends = np.cumsum(sizes)
    starts = ends - sizes
    # V gathered in the new order: element k of new slot j comes from old offset + (k - start)
    moved = np.asarray(flat.offsets, np.int64)[order] - starts
    V = flat.V[np.repeat(moved, sizes) + np.arange(int(ends[-1]) if len(ends) else 0)]
    S = np.stack([starts, sizes], axis=1)
    offsets, sizes = starts.tolist(), sizes.tolist()
    total = int(ends[-1]) if len(ends) else 0
    new_slot = renumber.tolist()
    values = [flat.values[s] for s in order.tolist()]
    slots = {key: new_slot[s] for key, s in flat.slots.items()}
    leaves = [(new_slot[s], t) for s, t in flat.leaves]
    compact = FlatTape(E, flat.FC, IP, S, need[order].astype(np.int64), V, offsets, sizes, values,
                       flat.nodes, slots, leaves, flat.calls)
    n_need = int(need.sum())
    return compact, (offsets[n_need] if n_need < len(offsets) else total)
