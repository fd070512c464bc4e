"""Tracing a function onto a replayable `Tape`.

`trace(f, args, kwargs)` runs `f` once on tensors that record everything computed from its
array arguments, then flattens the recording (`eager.flatten.linearize`) into a `Tape`: the tape
arrays, a template value buffer holding the constants, the slots of the inputs and outputs, and
the guards. Replaying runs the compiled interpreters only; `f` is not called again.

Rules of replay (they decide what a tape may assume about `f`):
* Array arguments and Python floats are inputs: their values may change between replays.
  Python ints, bools, strings and None are static: they are part of the signature (a new value
  retraces), like the shapes and dtypes of the arrays (`transforms.signature`).
* Arrays the function closes over, or creates without using the inputs, are constants of the
  tape, captured by value at trace time (as in `jax.jit`). A transform made with
  `capture="call"` re-reads closed-over arrays at every call instead, so that mutating them
  between calls is seen.
* Python control flow on traced values (`if x > 0`, `while err > tol`, `max(a, b)`) records the
  comparison and its outcome as a guard. A replay at inputs where a guard's outcome differs is
  detected after the forward sweep and the function is traced again for the new branch.
* Converting a traced value to a Python number (`float(x)`, `x.item()`) raises: the tape could
  not replay it. The arguments themselves are traced values too (`float(x)` and `if x:` on an
  argument behave as on any computed value).
* Keyword arguments are traced like positional ones (arrays and floats are inputs), but they are
  never differentiated.
* A function transformed inside a traced function must receive the enclosing function's traced
  values as arguments: closing over them raises (the inner tape would freeze them).
"""
import numpy as np

from . import signature
from .tape import Tape
from ..core import pytree
from ..core.registry import PRIMS
from ..core.flat import compact_adjoints
from ..eager.flatten import linearize
from ..eager.graph import state
from ..eager.tensor import Tensor

_DIFFERENTIABLE = [p.differentiable for p in PRIMS]
_VARIADIC = [p.variadic for p in PRIMS]


class tracing:
    """Context in which every operation on a traced tensor is recorded and guards collected."""

    def __enter__(self):
        self._saved = (state.grad_enabled, state.guards)
        state.grad_enabled = True
        state.tracing += 1
        state.guards = []
        return state.guards

    def __exit__(self, *exc):
        state.tracing -= 1
        state.grad_enabled, state.guards = self._saved


class _Input(Tensor):
    """A traced argument. Its value changes from one replay to the next, like a computed value's:
    converting it to a Python number raises, and branching on it (`if x:`) records a guard."""
    __slots__ = ()

    def _concrete(self, what):
        if state.tracing:
            raise TypeError(
                f"{what} of a traced argument: a tape cannot replay Python numbers computed from "
                "its inputs. Keep the computation in tapegrad ops (comparisons in `if` are fine: "
                "they become guards).")
        Tensor._concrete(self, what)

    def __bool__(self):
        outcome = Tensor.__bool__(self)
        if state.tracing:
            state.guards.append((self, outcome))
        return outcome


def _output_tensor(leaf, dtype):
    """An output leaf as a Tensor: numbers and arrays the function returns are constants."""
    if isinstance(leaf, Tensor):
        return leaf
    if isinstance(leaf, (np.ndarray, np.generic)) and leaf.dtype.kind in "fiub":
        return Tensor(np.asarray(leaf, leaf.dtype if leaf.dtype.kind == "f" else dtype))
    if isinstance(leaf, (int, float, bool)):       # Python numbers take the inputs' precision
        return Tensor(np.asarray(leaf, dtype))
    raise TypeError(f"the traced function returned a leaf of type {type(leaf).__name__}: outputs "
                    "are arrays, numbers, or tuples/lists/dicts of them")


def trace(f, leaves, structure, argnums=None):
    """Trace `f` at the call whose arguments (`signature.arguments`: the positional ones, then
    the keyword ones) flatten to `leaves` and `structure`, onto a Tape.

    `argnums` (a tuple of non-negative ints) selects the positional arguments to differentiate;
    None differentiates every floating-point input. Returns (tape, per-input flags of
    differentiation).
    """
    leaf_signatures = (structure, tuple(map(signature.leaf_signature, leaves)))
    arg_of_leaf = [i for i, arg in enumerate(structure[1])
                   for _ in range(signature.count_leaves(arg))]
    inputs, traced_leaves, diff = [], [], {}
    with tracing() as guards:
        for i, leaf in enumerate(leaves):
            if not signature.is_dynamic(leaf):
                traced_leaves.append(leaf)
                continue
            t = _Input(np.array(leaf.data if isinstance(leaf, Tensor) else leaf))
            t._requires_grad = True          # recorded, whether differentiated or not
            inputs.append(t)
            traced_leaves.append(t)
            diff[len(inputs) - 1] = argnums is None or arg_of_leaf[i] in argnums
        traced_tree = pytree.unflatten(structure, traced_leaves)
        out = f(*traced_tree[:-1], **traced_tree[-1])
        guard_list = list(guards)
    out_leaves, out_structure = pytree.flatten(out)
    dtypes = {t.data.dtype for t in inputs}
    dtype = np.float32 if dtypes == {np.dtype(np.float32)} else np.float64
    outputs = [_output_tensor(o, dtype) for o in out_leaves]
    guard_tensors = [g for g, _ in guard_list]
    flat = linearize(outputs + guard_tensors,
                     extra_leaves=inputs + [o for o in outputs if o._node is None])
    input_ids = {id(t) for t in inputs}
    for s, t in flat.leaves:
        if isinstance(t, _Input) and id(t) not in input_ids:
            raise NotImplementedError(
                f"{getattr(f, '__name__', 'the function')} closes over a value traced by an "
                "enclosing function transform; the inner tape would freeze it. Pass it as an "
                "argument instead, e.g. grad(lambda x, a: ...)(x, a) rather than "
                "grad(lambda x: ... a ...)(x)")
    input_slots = [flat.slot_of(t) for t in inputs]
    need = np.zeros(len(flat.S), np.int64)
    for k, s in enumerate(input_slots):
        need[s] = diff[k]
    for row, payload in _rows_with_operands(flat):
        op, out_slot = row[0], row[4]
        if _DIFFERENTIABLE[op] and any(need[s] for s in payload):
            need[out_slot] = 1
    flat, n_adjoint = compact_adjoints(flat, need)
    input_slots = [flat.slot_of(t) for t in inputs]
    constants = [(s, t.data) for s, t in flat.leaves if id(t) not in input_ids]
    guard_slots = [(flat.slot_of(g), outcome) for g, outcome in guard_list]
    tape = Tape(flat, input_slots, [flat.slot_of(o) for o in outputs], out_structure,
                guard_slots, constants, leaf_signatures)
    tape.n_adjoint = n_adjoint
    tape.validated = True        # recorded in this process: valid by construction
    return tape, diff


def _rows_with_operands(flat):
    """(row, operand slots) of each entry, with pack's operands read from its payload."""
    for row in flat.E:
        if _VARIADIC[row[0]]:
            yield row, flat.IP[row[5]:row[5] + row[6]]
        else:
            yield row, [s for s in row[1:4] if s >= 0]


def trace_function(f, *example_args, **kwargs):
    """The `Tape` of `f` at arguments like `example_args` (inspect it, replay it, reuse it)."""
    leaves, structure = pytree.flatten(signature.arguments(example_args, kwargs))
    return trace(f, leaves, structure)[0]
