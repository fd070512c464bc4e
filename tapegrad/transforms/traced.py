"""A function with its tapes: `Traced`, the per-signature tape cache behind every transform.

A transformed function traces the user's function once per signature of its arguments
(`transforms.signature`) and afterwards replays the tape: `Traced.replay_flat` finds the tapes
of a call's signature, replays the forward sweep and picks the first tape whose guards hold,
tracing the function again for a new signature or branch. The caches are bounded
(`SignatureCache`, `MAX_TAPES_PER_SIGNATURE`), and `call_traced` keeps one `Traced` per function
for the call-style transforms (`vjp`, `jvp`, `hvp`) without keeping the function alive.
"""
import collections
import types
import weakref

import numpy as np

from .capture import Sources
from .signature import arguments, count_leaves, is_dynamic, leaf_signature
from .tape import GuardError
from .trace import trace
from ..core import pytree
from ..eager.graph import state
from ..eager.tensor import Tensor

COMPLEX_INPUT = ("{name} of a complex input (argument {i}, {dtype}): complex numbers are not "
                 "supported; tapegrad differentiates real floating point values only (pass the "
                 "real and imaginary parts as two real arrays)")

MAX_TAPES_PER_SIGNATURE = 8
MAX_SIGNATURES = 256


class SignatureCache(collections.OrderedDict):
    """The tapes of a transform by signature, keeping the `MAX_SIGNATURES` most recently used.

    Bounded, as `jax.jit`'s caches are (JAX keeps 8192 compiled calls for all functions
    together, LRU): a function called with ever new static values or shapes (a loop counter
    passed as an int, data of varying length) would otherwise keep a tape per call, forever.
    Why 256 per transform: a signature evicted while still in use costs a retrace at its next
    call (about a millisecond for a small function), so the bound must exceed any working set a
    program cycles through (bucketed shapes, a handful of static flags), while the memory it
    holds, 256 tapes of the function (with per-thread value buffers), stays that of a few
    hundred calls. Thread-safe for the GIL's one-operation-at-a-time: a key evicted by another
    thread between two operations reads as missing."""

    def __init__(self, limit=MAX_SIGNATURES):
        super().__init__()
        self.limit = limit

    def get(self, key, default=None):
        """The entry of `key` (now the most recently used), or `default`."""
        try:
            self.move_to_end(key)
            return self[key]
        except KeyError:          # not there, or evicted by another thread meanwhile
            return default

    def __setitem__(self, key, value):
        collections.OrderedDict.__setitem__(self, key, value)
        drop_oldest(self, self.limit)


class Traced:
    """A function with its tapes: one list per input signature, guards pick the tape.

    The signature is the structure of the arguments (positional ones, then keyword ones) and
    each leaf's `leaf_signature`; the leaves and structure that `replay` returns are those of
    `arguments(args, kwargs)`. `cache` keeps the tapes of the `MAX_SIGNATURES` most recently
    used signatures (`SignatureCache`). With `weak`, the function is referenced weakly (a
    `Traced` kept in a cache keyed by the function must not keep it alive)."""

    def __init__(self, f, argnums, capture="trace", name="transform", weak=False, nests=False,
                 closures=False):
        """`nests`: the transform records itself as an entry of an enclosing computation
        (`transforms.nested`), so `f` may close over that computation's values (a tape whose
        `implicit_slots` take them); `closures`: take them even outside an enclosing trace (the
        nested entry of an eager computation: `trace`'s closures)."""
        if capture not in ("trace", "call"):
            raise ValueError("capture must be 'trace' (closed-over arrays are constants) or "
                             "'call' (re-read at every call)")
        self._f = _weak_callable(f) if weak else f
        self._weak = weak
        self.argnums = argnums
        self.refresh = capture == "call"
        self.name = name
        self.nests, self.closures = nests, closures
        self.cache = SignatureCache()
        # capture="call": where each tape's constants come from, to follow rebound names
        self.sources = weakref.WeakKeyDictionary()     # tape -> Sources

    @property
    def f(self):
        return self._f() if self._weak else self._f

    def replay(self, args, kwargs):
        """(tape, value buffer after the forward sweep, argument leaves, structure)."""
        leaves, structure = pytree.flatten(arguments(args, kwargs))
        tape, V = self.replay_flat(leaves, structure)
        return tape, V, leaves, structure

    def replay_flat(self, leaves, structure):
        """(tape, value buffer after the forward sweep) of the call whose arguments
        (`arguments(args, kwargs)`) flatten to `leaves` and `structure`."""
        if is_traced_call(leaves):
            raise NotImplementedError(
                f"{self.name} of values that an enclosing computation records (traced by a "
                "function transform, or tensors that require grad): only grad, value_and_grad, "
                "jacrev, jacfwd and jacobian can be used inside a differentiated function; "
                "detach() eager tensors to use their values")
        key = (structure, tuple(map(leaf_signature, leaves)))
        inputs = [leaf for leaf in leaves if is_dynamic(leaf)]
        # inside an enclosing trace, f is traced afresh: what it closes over is that trace's
        tapes = None if state.tracing else self.cache.get(key)
        if tapes:
            for tape in list(tapes):
                if self.refresh and not self.follow(tape):
                    _discard(tapes, tape)     # a closed-over name now holds another shape
                    continue
                V = tape.load(inputs, self.refresh)
                try:
                    tape._forward(V)
                except GuardError:      # a nested transform's guard failed: retrace
                    continue
                if tape.guards_hold(V):
                    return tape, V
        self.check_differentiable(leaves, structure)
        tape, _ = trace(self.f, leaves, structure, self.wrt(len(structure[1]) - 1), self.closures)
        if tape.implicit_slots:
            if not self.nests:
                raise NotImplementedError(
                    "a function that closes over values an enclosing computation records "
                    "(traced by a function transform, or tensors that require grad) can be "
                    "transformed by grad, value_and_grad, jacrev, jacfwd and jacobian only; "
                    "pass those values as arguments to other transforms (vmap, vjp, jvp, "
                    "hessian ...)")
            return tape, tape.load(inputs)      # not cached: its closure is this call's
        if tapes is None:
            tapes = self.cache.get(key)
            if tapes is None:
                tapes = self.cache[key] = []
        if self.refresh:
            self.sources[tape] = Sources.of(self.f, tape, self.name)
        tapes.append(tape)
        if len(tapes) > MAX_TAPES_PER_SIGNATURE:
            tapes.pop(0)
        return tape, tape.load(inputs)

    def follow(self, tape):
        """capture="call": re-read where the tape's constants come from (`transforms.capture`);
        False when a closed-over name was rebound to something the tape cannot hold (retrace)."""
        sources = self.sources.get(tape)
        return sources is None or sources.follow(tape)

    def current(self, key):
        """The tapes of signature `key` that still hold (`follow`), stale ones dropped."""
        tapes = self.cache.get(key) or []
        if self.refresh:
            for tape in [t for t in tapes if not self.follow(t)]:
                _discard(tapes, tape)
        return list(tapes)

    def wrt(self, n_args):
        """The differentiated argument indices, non-negative, for a call with n_args."""
        if self.argnums is None:
            return None
        return tuple(i % n_args for i in self.argnums)

    def check_differentiable(self, leaves, structure):
        """Raise unless every differentiated positional argument of the call (flattened to
        `leaves`, `structure`) exists and has floating-point leaves only."""
        n_args = len(structure[1]) - 1
        starts = _argument_starts(structure)
        for i in self.argnums or ():
            if i >= n_args or i < -n_args:
                raise TypeError(f"argnums={self.argnums} is out of range for a call with "
                                f"{n_args} positional argument{'' if n_args == 1 else 's'}"
                                f" (argnums must be in [{-n_args}, {n_args - 1}])")
            i %= n_args
            for leaf in leaves[starts[i]:starts[i + 1]]:
                if not is_dynamic(leaf):
                    value = leaf.data if isinstance(leaf, Tensor) else leaf
                    dtype = getattr(value, "dtype", type(leaf).__name__)
                    if np.iscomplexobj(value):
                        raise TypeError(COMPLEX_INPUT.format(name=self.name, i=i, dtype=dtype))
                    raise TypeError(f"grad requires real-valued (floating point) inputs, but "
                                    f"argument {i} has an input of type {dtype}; pass floats or "
                                    "mark the argument static by not differentiating it")

    def input_groups(self, tape, leaves, structure):
        """For each argument: (its structure, the input slots of its leaves)."""
        groups, k = {}, 0
        for i, arg_structure in enumerate(structure[1]):
            n = count_leaves(arg_structure)
            arg_leaves = leaves[k:k + n]
            slots = []
            j = sum(1 for leaf in leaves[:k] if is_dynamic(leaf))
            for leaf in arg_leaves:
                if is_dynamic(leaf):
                    slots.append(tape.input_slots[j])
                    j += 1
            groups[i] = (arg_structure, slots)
            k += n
        return groups


def _argument_starts(structure):
    """The index of the first leaf of each argument of a call's structure, and the count."""
    starts = [0]
    for arg_structure in structure[1]:
        starts.append(starts[-1] + count_leaves(arg_structure))
    return starts


def is_traced_call(leaves):
    """Whether a transform is called on tensors that an enclosing computation records (`leaves`:
    the leaves of its arguments)."""
    for leaf in leaves:
        if isinstance(leaf, Tensor) and (leaf._node is not None or leaf._requires_grad):
            return state.grad_enabled
    return False


_CALL_TRACED = weakref.WeakKeyDictionary()
# owner -> {(function, transform, n primals): Traced}: the owner is the function itself, or the
# object of a bound method (a new method object at every attribute access, but one object);
# values refer to their owner weakly only, so an entry goes when its function or object does


def call_traced(f, name, n_primals):
    """The `Traced` of `f` for the call-style transforms (`vjp`, `jvp`, `hvp`), kept per function
    so that calling them again with the same function only replays its tape, as the decorating
    transforms do (closed-over arrays are constants of the tape, as for `grad`). The cache holds
    neither the function nor a bound method's object: a fresh function per call (a lambda in a
    loop) leaves nothing behind. A function that cannot be weakly referenced gets a fresh
    `Traced` (traced at every call)."""
    method = isinstance(f, types.MethodType)
    owner = f.__self__ if method else f
    key = (f.__func__ if method else None, name, n_primals)
    try:
        per_owner = _CALL_TRACED.get(owner)
        if per_owner is None:
            per_owner = _CALL_TRACED[owner] = {}
    except TypeError:
        return Traced(f, tuple(range(n_primals)), name=name)
    traced = per_owner.get(key)
    if traced is None:
        traced = per_owner[key] = Traced(f, tuple(range(n_primals)), name=name, weak=True)
    return traced


def drop_oldest(cache, limit):
    """Drop the first-inserted entries of a dict until it has `limit` (another thread may drop
    the same one: then it is gone already)."""
    while len(cache) > limit:
        try:
            del cache[next(iter(cache))]
        except (KeyError, StopIteration, RuntimeError):
            break


def _discard(tapes, tape):
    try:
        tapes.remove(tape)
    except ValueError:      # another thread removed it
        pass


def _weak_callable(f):
    """A weak reference to `f` that gives `f` back when called (a bound method's too)."""
    return weakref.WeakMethod(f) if isinstance(f, types.MethodType) else weakref.ref(f)
