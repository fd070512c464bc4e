"""Transforms inside a recorded computation: `grad(f)` or `jacobian(f)` called on tensors that an
enclosing trace (or eager graph) records.

The inner transform becomes one entry of the enclosing tape (primitive `call`), whose rule is a
`CallRule`: its value is the inner gradient or Jacobian, from the inner function's own tape, and
its VJP and JVP are second derivatives of the inner function (forward-over-reverse sweeps of
that tape). So `grad(grad(f))` and a gradient inside a loss differentiate, and the enclosing
sweeps (`core.sweep`) call the rule where the entry sits. The inner function is a `Traced`: a
branch change inside it retraces it, not the enclosing function.
"""
import numpy as np

from .signature import is_dynamic
from .tape import columns, directions
from .traced import Traced
from ..core import pytree
from ..core.registry import BY_NAME
from ..eager import ops
from ..eager.tensor import Tensor, record


class CallRule:
    """A nested transform as one tape entry: its value and its derivatives come from the inner
    function's tape. The entry's output is the flat concatenation of the gradients of the inner
    output elements (one for `grad`, all of them for `jacobian`) with respect to the
    differentiated inner inputs, block by block (output leaf, then input leaf). Its VJP and JVP
    are second derivatives of the inner function, one forward-over-reverse sweep per output
    element (Hessians are symmetric, so the VJP of a gradient is a Hessian-vector product too).
    The inner function is a `Traced`, so a branch change inside it retraces it, not the outer."""

    def __init__(self, f, leaves, structure, argnums):
        """`leaves`, `structure`: the inner call's arguments, flattened (`signature.arguments`),
        with plain values; `argnums`: the differentiated positional arguments."""
        self.traced = Traced(f, None)   # every inner input differentiated: the outer needs them
        # the inputs are the floating-point leaves of the positional and keyword arguments
        self.leaves, self.structure = leaves, structure
        n_args = len(structure[1]) - 1
        self.argnums = tuple(i % n_args for i in argnums)
        self.shapes = None          # the shapes of the inputs (set by `record_call`)

    def inner(self, values):
        """The inner tape, its values at the inner inputs `values`, and the wrt slots."""
        it = iter(values)
        leaves = [next(it) if is_dynamic(leaf) else leaf for leaf in self.leaves]
        tape, V = self.traced.replay_flat(leaves, self.structure)
        groups = self.traced.input_groups(tape, leaves, self.structure)
        return tape, V, [s for i in self.argnums for s in groups[i][1]]

    @staticmethod
    def layout(tape, wrt):
        """layout[i, j]: where d(output element i)/d(wrt element j) sits in the entry's output."""
        m = sum(tape.sizes[s] for s in tape.output_slots)
        n = sum(tape.sizes[s] for s in wrt)
        positions = np.empty((m, n), np.int64)
        k, r = 0, 0
        for so in tape.output_slots:
            c = 0
            for s in wrt:
                block = tape.sizes[so] * tape.sizes[s]
                positions[r:r + tape.sizes[so], c:c + tape.sizes[s]] = \
                    np.arange(k, k + block).reshape(tape.sizes[so], tape.sizes[s])
                k += block
                c += tape.sizes[s]
            r += tape.sizes[so]
        return positions

    def evaluate(self, values):
        tape, V, wrt = self.inner(values)
        G = directions(tape, tape.output_slots, V)
        tape._backward(V, G)
        out = np.empty(G.shape[0] * len(columns(tape, wrt)), V.dtype)
        out[self.layout(tape, wrt)] = G[:, columns(tape, wrt)]
        return out

    # -- the sweeps of the enclosing tape call these (see core.sweep) --
    def _inputs(self, outer, V, e):
        slots = outer.IP[outer.E[e, 5]:outer.E[e, 5] + outer.E[e, 6]]
        values = [V[outer.S[s, 0]:outer.S[s, 0] + outer.S[s, 1]].reshape(shape)
                  for s, shape in zip(slots, self.shapes)]
        return slots, outer.E[e, 4], values

    def forward(self, outer, V, e):
        slots, out, values = self._inputs(outer, V, e)
        V[outer.S[out, 0]:outer.S[out, 0] + outer.S[out, 1]] = self.evaluate(values)

    def _hessian_products(self, tape, V, T):
        """For each inner output element i: d/dt grad(f_i) along the directions T."""
        tape._tangent(V, T)
        for seed in columns(tape, tape.output_slots):
            G = np.zeros(V.size, V.dtype)
            G[seed] = 1.0
            TG = np.zeros_like(T)
            tape._backward_tangent(V, T, G, TG)
            yield TG

    def vjp(self, outer, V, G, e):
        slots, out, values = self._inputs(outer, V, e)
        tape, Vi, wrt = self.inner(values)
        cotangent = G[:, outer.S[out, 0]:outer.S[out, 0] + outer.S[out, 1]]
        wrt_cols, in_cols = columns(tape, wrt), columns(tape, tape.input_slots)
        outer_cols = columns(outer, slots, outer.S)
        need = np.repeat(outer.NEED[slots].astype(bool), outer.S[slots, 1])
        for i, row in enumerate(self.layout(tape, wrt)):
            T = np.zeros((G.shape[0], Vi.size), Vi.dtype)
            T[:, wrt_cols] = cotangent[:, row]
            tape._tangent(Vi, T)
            Gi = np.zeros(Vi.size, Vi.dtype)
            Gi[columns(tape, tape.output_slots)[i]] = 1.0
            TG = np.zeros_like(T)
            tape._backward_tangent(Vi, T, Gi, TG)
            # add.at: an outer value passed as several inner arguments gets every contribution
            np.add.at(G, (slice(None), outer_cols[need]), TG[:, in_cols[need]])

    def jvp(self, outer, V, T, e):
        slots, out, values = self._inputs(outer, V, e)
        tape, Vi, wrt = self.inner(values)
        Ti = np.zeros((T.shape[0], Vi.size), Vi.dtype)
        Ti[:, columns(tape, tape.input_slots)] = T[:, columns(outer, slots, outer.S)]
        out_tangent = np.empty((T.shape[0], outer.S[out, 1]), T.dtype)
        wrt_cols = columns(tape, wrt)
        for row, TG in zip(self.layout(tape, wrt), self._hessian_products(tape, Vi, Ti)):
            out_tangent[:, row] = TG[:, wrt_cols]
        T[:, outer.S[out, 0]:outer.S[out, 0] + outer.S[out, 1]] = out_tangent


def record_call(f, leaves, structure, argnums, single, kind):
    """Record `kind`(f) (kind "grad" or "jac") at the call whose arguments flatten to `leaves`,
    `structure` (some of them tensors that the enclosing computation records) as one entry of
    the enclosing graph; returns the gradients (or Jacobian) arranged as the transform returns
    them, as tensors computed from that entry."""
    inputs = [ops.as_tensor(leaf) for leaf in leaves if is_dynamic(leaf)]
    plain = [leaf.data if isinstance(leaf, Tensor) else leaf for leaf in leaves]
    Traced(f, argnums).check_differentiable(plain, structure)
    rule = CallRule(f, plain, structure, argnums)
    rule.shapes = [t.data.shape for t in inputs]
    value = rule.evaluate([t.data for t in inputs])
    tape, _, wrt = rule.inner([t.data for t in inputs])
    out_shapes = [tape.shapes[s] for s in tape.output_slots]
    if kind == "grad" and (len(out_shapes) != 1 or tape.sizes[tape.output_slots[0]] != 1):
        raise TypeError(f"grad requires a scalar output; use jacobian or vjp (the output has "
                        f"shape {out_shapes[0] if len(out_shapes) == 1 else out_shapes})")
    flat = record(BY_NAME["call"], tuple(inputs), value, rule)
    groups = rule.traced.input_groups(tape, rule.leaves, rule.structure)
    per_output, k = [], 0
    for oshape in out_shapes:
        lead = oshape if kind == "jac" else ()
        osize = int(np.prod(oshape, dtype=np.int64))
        args_out = []
        for i in rule.argnums:
            arg_structure, arg_slots = groups[i]
            arg_leaves = []
            for s in arg_slots:
                n = osize * tape.sizes[s]
                piece = ops.getitem(flat, slice(k, k + n))
                arg_leaves.append(ops.reshape(piece, lead + tape.shapes[s]))
                k += n
            args_out.append(pytree.unflatten(arg_structure, arg_leaves))
        per_output.append(args_out[0] if single else tuple(args_out))
    return per_output[0] if kind == "grad" else pytree.unflatten(tape.out_structure, per_output)
