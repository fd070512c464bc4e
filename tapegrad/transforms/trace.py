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
* A function transformed inside a traced function may close over the enclosing function's
  traced values (`grad(lambda x: x * grad(lambda y: x * y)(2.0))`): they become implicit
  inputs of its tape, and the enclosing tape differentiates through them (`trace`'s closures).
"""
import gc

import numpy as np

from . import signature
from .tape import Tape
from ..core import pytree
from ..core.registry import DIFFERENTIABLE, VARIADIC
from ..core.flat import compact_adjoints
from ..eager.flatten import linearize
from ..eager import graph
from ..eager.graph import state
from ..eager.array import Array
from ..eager.numpy_api import building
from ..eager.tensor import Tensor

_DIFFERENTIABLE, _VARIADIC = DIFFERENTIABLE.tolist(), VARIADIC.tolist()   # read per entry


class tracing:
    """Context in which every operation on a traced tensor is recorded and guards collected,
    and numpy's array constructors build traced values (`eager.numpy_api.building`)."""

    def __enter__(self):
        self._saved = (state.grad_enabled, state.guards)
        self._numpy = building.patched()
        self._numpy.__enter__()
        state.grad_enabled = True
        state.tracing += 1
        state.guards = []
        return state.guards

    def __exit__(self, *exc):
        state.tracing -= 1
        state.grad_enabled, state.guards = self._saved
        self._numpy.__exit__(*exc)


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

    def _guarded(self, outcome):
        if state.tracing:
            state.guards.append((self, outcome))
        return outcome


class _ArrayInput(_Input, Array):
    """A traced argument given as a numpy array or a Python number: numpy's semantics
    (`eager.array`)."""
    __slots__ = ()


def _input(leaf):
    """The traced argument for an input leaf: a Tensor for tensors (PyTorch's semantics), an
    Array for numpy arrays and numbers (numpy's)."""
    if isinstance(leaf, Tensor):
        return _Input(np.array(leaf.data))
    return _ArrayInput(np.array(leaf))


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


class _collector_paused:
    """Python's cyclic garbage collector held off while a trace records and flattens.

    A trace allocates a few objects per recorded operation (the value, its tensor, its node)
    and keeps them all alive until the tape is built: the collector, triggered by allocation
    counts, then walks the growing graph again and again, for nothing, since none of it is
    garbage yet (on a tape of 40,000 entries that is a third of the tracing time). Reference
    counting still frees acyclic garbage at once; cycles the traced function makes are
    collected after. Nested traces leave it to the outermost."""

    def __enter__(self):
        self._was_enabled = gc.isenabled()
        gc.disable()

    def __exit__(self, *exc):
        if self._was_enabled:
            gc.enable()


def trace(f, leaves, structure, argnums=None, closures=False):
    """Trace `f` at the call whose arguments (`signature.arguments`: the positional ones, then
    the keyword ones) flatten to `leaves` and `structure`, onto a Tape.

    `argnums` (a tuple of non-negative ints) selects the positional arguments to differentiate;
    None differentiates every floating-point input. Returns (tape, per-input flags of
    differentiation).

    Closures: with `closures`, or while an enclosing function transform traces, the values of
    enclosing computations that `f` uses (an enclosing function's traced values, tensors that
    require grad) are implicit inputs of the tape, as in JAX's nested traces: their slots are
    `tape.implicit_slots` (differentiable, so that second-order sweeps reach them), the values
    themselves, at this trace, `tape.closure`, for the nested transform to take as operands
    of its entry in the enclosing recording (`transforms.nested`). Otherwise they are constants
    of the tape, and a value traced by a transform that has finished raises.
    """
    with _collector_paused():
        return _trace(f, leaves, structure, argnums, closures)


def _trace(f, leaves, structure, argnums, closures):
    closures = closures or state.tracing > 0          # asked before our own tracing starts
    since = next(graph._sequence)                       # nodes recorded from here on are f's
    leaf_signatures = (structure, tuple(map(signature.leaf_signature, leaves)))
    arg_of_leaf = [i for i, arg in enumerate(structure[1])
                   for _ in range(signature.count_leaves(arg))]
    inputs, traced_leaves, diff = [], [], {}
    with tracing() as guards:
        for i, leaf in enumerate(leaves):
            if not signature.is_dynamic(leaf):
                traced_leaves.append(leaf)
                continue
            t = _input(leaf)
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
    roots = outputs + [g for g, _ in guard_list]
    closure = _closure(roots, inputs, since) if closures else []
    flat = linearize(roots, extra_leaves=inputs + [o for o in outputs if o._node is None]
                     + [t for t in closure if t._node is None],
                     boundary=[t for t in closure if t._node is not None])
    input_ids = {id(t) for t in inputs}
    if not closures:
        _refuse_leaked(f, flat, input_ids)
    input_slots = [flat.slot_of(t) for t in inputs]
    need = np.zeros(len(flat.S), np.int64)
    for k, s in enumerate(input_slots):
        need[s] = diff[k]
    for t in closure:
        need[flat.slot_of(t)] = 1
    flat, n_adjoint = compact_adjoints(flat, _needing_adjoints(flat, need.tolist()))
    input_slots = [flat.slot_of(t) for t in inputs]
    taken = input_ids | {id(t) for t in closure}
    constants = [(s, t.data) for s, t in flat.leaves if id(t) not in taken]
    guard_slots = [(flat.slot_of(g), outcome) for g, outcome in guard_list]
    tape = Tape(flat, input_slots, [flat.slot_of(o) for o in outputs], out_structure,
                guard_slots, constants, leaf_signatures)
    tape.n_adjoint = n_adjoint
    tape.implicit_slots = [flat.slot_of(t) for t in closure]
    tape.closure = closure
    tape.validated = True        # recorded in this process: valid by construction
    return tape, diff


def _closure(roots, inputs, since):
    """The values of enclosing computations that the graph recorded since sequence number
    `since` (behind `roots`) uses: leaves that require grad other than `inputs`, and values
    recorded before `since`; in the order first met."""
    input_ids = {id(t) for t in inputs}
    found, seen, stack = {}, set(), []

    def visit(t):
        node = t._node
        if node is None:
            if t._requires_grad and id(t) not in input_ids:
                found.setdefault(id(t), t)
        elif node.seq < since:
            found.setdefault(id(node), t)
        elif node not in seen:
            seen.add(node)
            stack.append(node)

    for t in roots:
        visit(t)
    while stack:
        for t in stack.pop().inputs:
            visit(t)
    return list(found.values())


def _refuse_leaked(f, flat, input_ids):
    """Raise for a value traced by a function transform that has finished (kept beyond its
    trace and used by `f`): its value is that of a finished trace."""
    for s, t in flat.leaves:
        if isinstance(t, _Input) and id(t) not in input_ids:
            raise TypeError(
                f"{getattr(f, '__name__', 'the function')} uses a value traced by a function "
                "transform that has finished (kept beyond the traced call, e.g. in a global or "
                "a list); it holds the values of that trace only. Pass it as an argument, or "
                "use it inside the transformed function")


def _needing_adjoints(flat, need):
    """`need` (a list of 0/1 per slot, set for the differentiated inputs) completed in tape
    order: an entry's output needs an adjoint when it is differentiable and an operand does.
    Pack's operands are its payload."""
    IP = flat.IP.tolist() if flat.IP.size else []
    for op, a, b, c, out, at, length, _ in flat.E.tolist():
        if not _DIFFERENTIABLE[op]:
            continue
        if _VARIADIC[op]:
            if any(need[s] for s in IP[at:at + length]):
                need[out] = 1
        elif (a >= 0 and need[a]) or (b >= 0 and need[b]) or (c >= 0 and need[c]):
            need[out] = 1
    return need


def trace_function(f, *example_args, **kwargs):
    """The `Tape` of `f` at arguments like `example_args` (inspect it, replay it, reuse it)."""
    leaves, structure = pytree.flatten(signature.arguments(example_args, kwargs))
    return trace(f, leaves, structure)[0]
