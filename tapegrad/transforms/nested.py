"""Transforms inside a recorded computation: `grad(f)` or `jacobian(f)` called on tensors that an
enclosing trace (or eager graph) records, or of a function that closes over such values
(`grad(lambda x: x * grad(lambda y: x * y)(2.0))`).

The inner transform becomes one entry of the enclosing tape (primitive `call`), whose rule is a
`CallRule`: its value is the inner gradient or Jacobian, from the inner function's own tape, and
its VJP and JVP are second derivatives of the inner function (forward-over-reverse sweeps of
that tape). So `grad(grad(f))` and a gradient inside a loss differentiate, and the enclosing
sweeps (`core.sweep`) call the rule where the entry sits. The inner function is a `Traced`: a
branch change inside it retraces it, not the enclosing function.

Closures, as JAX's nested traces treat them: the enclosing values that the inner function uses
without receiving them as arguments are implicit inputs of its tape (`trace`'s closures) and
operands of the entry after the explicit ones. They are not differentiated in the inner
gradient (they are not among its arguments), but the entry's VJP and JVP reach them through
the same forward-over-reverse sweeps. Such a tape is bound to the entry (the inner function
cannot be traced again without the enclosing values), so a branch change inside it retraces
the enclosing function (`GuardError`).
"""
import numpy as np

from .signature import is_dynamic
from .tape import GuardError, columns, directions
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
        # every inner input differentiated: the outer needs them; closures are implicit inputs
        self.traced = Traced(f, None, nests=True, closures=True)
        # the inputs are the floating-point leaves of the positional and keyword arguments
        self.leaves, self.structure = leaves, structure
        self.n_explicit = sum(1 for leaf in leaves if is_dynamic(leaf))
        n_args = len(structure[1]) - 1
        self.argnums = tuple(i % n_args for i in argnums)
        self.shapes = None          # the shapes of the operands (set by `record_call`)
        self.tape = None            # the inner tape when it closes over enclosing values

    def bind(self, values, tape=None):
        """The inner tape at the explicit inputs `values` (`tape`, when the caller traced it
        already); a tape that closes over enclosing values is kept: it is the one this entry
        replays, its closure being this entry's operands after the explicit ones."""
        if tape is None:
            tape = self.inner(values)[0]
        if tape.implicit_slots:
            self.tape = tape
        return tape

    def inner(self, values):
        """The inner tape, its values at the operands' values `values` (explicit inputs, then
        the implicit ones of a closure), and the wrt slots."""
        it = iter(values[:self.n_explicit])
        leaves = [next(it) if is_dynamic(leaf) else leaf for leaf in self.leaves]
        if self.tape is None:
            tape, V = self.traced.replay_flat(leaves, self.structure)
        else:
            tape, V = self.tape, self._replay_closure(values)
        groups = self.traced.input_groups(tape, leaves, self.structure)
        return tape, V, [s for i in self.argnums for s in groups[i][1]]

    def _replay_closure(self, values):
        """The forward sweep of the closure tape at `values`. Its branches may depend on the
        enclosing values, which the inner function cannot be traced again for: a guard that
        fails raises GuardError, and the enclosing function is traced again."""
        tape = self.tape
        V = tape.load(values[:self.n_explicit])
        for s, value in zip(tape.implicit_slots, values[self.n_explicit:]):
            V[tape.offsets[s]:tape.offsets[s] + tape.sizes[s]] = np.ravel(value)
        tape._forward(V)
        if not tape.guards_hold(V):
            raise GuardError("a nested transform closing over enclosing values takes another "
                             "branch")
        return V

    @staticmethod
    def operand_slots(tape):
        """The inner slots of the entry's operands: the inputs, then the implicit inputs."""
        return list(tape.input_slots) + list(tape.implicit_slots)

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
        wrt_cols, in_cols = columns(tape, wrt), columns(tape, self.operand_slots(tape))
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
        Ti[:, columns(tape, self.operand_slots(tape))] = T[:, columns(outer, slots, outer.S)]
        out_tangent = np.empty((T.shape[0], outer.S[out, 1]), T.dtype)
        wrt_cols = columns(tape, wrt)
        for row, TG in zip(self.layout(tape, wrt), self._hessian_products(tape, Vi, Ti)):
            out_tangent[:, row] = TG[:, wrt_cols]
        T[:, outer.S[out, 0]:outer.S[out, 0] + outer.S[out, 1]] = out_tangent


def record_call(f, leaves, structure, argnums, single, kind, tape=None):
    """Record `kind`(f) (kind "grad" or "jac") at the call whose arguments flatten to `leaves`,
    `structure` (some of them tensors that the enclosing computation records, or `f` closing
    over such values: `tape`, its tape at this call, traced already) as one entry of the
    enclosing graph; returns the gradients (or Jacobian) arranged as the transform returns
    them, as tensors computed from that entry. The entry's operands are the call's inputs, then
    the enclosing values `f` closes over (its tape's implicit inputs)."""
    inputs = [ops.as_tensor(leaf) for leaf in leaves if is_dynamic(leaf)]
    plain = [leaf.data if isinstance(leaf, Tensor) else leaf for leaf in leaves]
    Traced(f, argnums).check_differentiable(plain, structure)
    rule = CallRule(f, plain, structure, argnums)
    tape = rule.bind([t.data for t in inputs], tape)
    inputs += tape.closure
    tape.closure = ()           # the tape outlives this call: it keeps no enclosing value
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
