"""Function transforms (JAX's names): grad, value_and_grad, vjp, jvp, jacrev, jacfwd, jacobian,
hessian, hvp.

A transformed function traces the user's function once per input signature onto a `Tape`
(`_trace`) and afterwards only replays the tape in the compiled interpreters. Each mode is one
sweep: reverse mode seeds several adjoints at once (so `jacrev` of a small-output function is one
sweep), forward mode carries several tangent directions at once (`jacfwd` is one sweep), and
second order runs tangents through the reverse sweep (forward-over-reverse: `hessian`, `hvp`).
"""
import collections
import functools
import numbers
import types
import weakref

import numpy as np

from . import capture as _capture
from ..core import pytree as _pytree
from ..eager.graph import state
from ..core.registry import BY_NAME
from ..eager.tensor import Tensor, record
from .trace import GuardError, arguments, is_dynamic, leaf_signature, trace

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
        _drop_oldest(self, self.limit)


class Traced:
    """A function with its tapes: one list per input signature, guards pick the tape.

    The signature is the structure of the arguments (positional ones, then keyword ones) and
    each leaf's `leaf_signature`; the leaves and structure that `replay` returns are those of
    `arguments(args, kwargs)`. `cache` keeps the tapes of the `MAX_SIGNATURES` most recently
    used signatures (`SignatureCache`). With `weak`, the function is referenced weakly (a
    `Traced` kept in a cache keyed by the function must not keep it alive)."""

    def __init__(self, f, argnums, capture="trace", name="transform", weak=False):
        if capture not in ("trace", "call"):
            raise ValueError("capture must be 'trace' (closed-over arrays are constants) or "
                             "'call' (re-read at every call)")
        self._f = _weak_callable(f) if weak else f
        self._weak = weak
        self.argnums = argnums
        self.refresh = capture == "call"
        self.name = name
        self.cache = SignatureCache()
        # capture="call": where each tape's constants come from, to follow rebound names
        self.sources = weakref.WeakKeyDictionary()     # tape -> _capture.Sources

    @property
    def f(self):
        return self._f() if self._weak else self._f

    def replay(self, args, kwargs):
        """(tape, value buffer after the forward sweep, argument leaves, structure)."""
        leaves, structure = _pytree.flatten(arguments(args, kwargs))
        if _is_traced_call(leaves):
            raise NotImplementedError(
                f"{self.name} of values that an enclosing computation records (traced by a "
                "function transform, or tensors that require grad): only grad, value_and_grad, "
                "jacrev, jacfwd and jacobian can be used inside a differentiated function; "
                "detach() eager tensors to use their values")
        key = (structure, tuple(map(leaf_signature, leaves)))
        inputs = [leaf for leaf in leaves if is_dynamic(leaf)]
        tapes = self.cache.get(key)
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
                    return tape, V, leaves, structure
        else:
            tapes = self.cache[key] = []
        self._check_differentiable(args)
        tape, _ = trace(self.f, args, kwargs, self.wrt(len(args)))
        if self.refresh:
            self.sources[tape] = _capture.Sources.of(self.f, tape, self.name)
        tapes.append(tape)
        if len(tapes) > MAX_TAPES_PER_SIGNATURE:
            tapes.pop(0)
        return tape, tape.load(inputs), leaves, structure

    def follow(self, tape):
        """capture="call": re-read where the tape's constants come from (see `_capture`); False
        when a closed-over name was rebound to something the tape cannot hold (retrace)."""
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

    def _check_differentiable(self, args):
        for i in self.argnums or ():
            if i >= len(args) or i < -len(args):
                raise TypeError(f"argnums={self.argnums} is out of range for a call with "
                                f"{len(args)} positional argument{'' if len(args) == 1 else 's'}"
                                f" (argnums must be in [{-len(args)}, {len(args) - 1}])")
            for leaf in _pytree.flatten(args[i])[0]:
                if not is_dynamic(leaf):
                    dtype = getattr(getattr(leaf, "data", leaf), "dtype", type(leaf).__name__)
                    raise TypeError(f"grad requires real-valued (floating point) inputs, but "
                                    f"argument {i} has an input of type {dtype}; pass floats or "
                                    "mark the argument static by not differentiating it")

    def input_groups(self, tape, leaves, structure):
        """For each differentiated argument: (its structure, the input slots of its leaves)."""
        groups, k = {}, 0
        for i, arg_structure in enumerate(structure[1]):
            n = _count_leaves(arg_structure)
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


_CALL_TRACED = weakref.WeakKeyDictionary()
# owner -> {(function, transform, n primals): Traced}: the owner is the function itself, or the
# object of a bound method (a new method object at every attribute access, but one object);
# values refer to their owner weakly only, so an entry goes when its function or object does


def _traced_of_call(f, name, n_primals):
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


def _discard(tapes, tape):
    try:
        tapes.remove(tape)
    except ValueError:      # another thread removed it
        pass


def _weak_callable(f):
    """A weak reference to `f` that gives `f` back when called (a bound method's too)."""
    return weakref.WeakMethod(f) if isinstance(f, types.MethodType) else weakref.ref(f)


def _count_leaves(structure):
    if structure is _pytree.LEAF:
        return 1
    children = structure[2] if structure[0] is dict else structure[1]
    return sum(_count_leaves(c) for c in children)


def _is_index(i):
    return isinstance(i, numbers.Integral) and not isinstance(i, bool)


def _array_key(args):
    """The signature of a call whose arguments are all float numpy arrays (the common case, for
    which the pytree machinery is skipped), else None. The dtype objects themselves, not their
    `.str` (a new string per call, hashed at every look-up): this runs at every call."""
    key = []
    for a in args:
        dtype = a.dtype if type(a) is np.ndarray else None
        if dtype is None or dtype.kind != "f":
            return None
        key.append((a.shape, dtype))
    return tuple(key)


def _normalize_argnums(argnums):
    if _is_index(argnums):
        return (int(argnums),), True
    if not isinstance(argnums, (tuple, list)) or not argnums or \
            not all(_is_index(i) for i in argnums):
        raise TypeError(f"argnums must be an int or a non-empty tuple of ints, got {argnums!r}")
    return tuple(int(i) for i in argnums), False


def _wrt_groups(traced, tape, leaves, structure):
    """(differentiated argument indices, non-negative; the input groups of every argument)."""
    return traced.wrt(len(structure[1]) - 1), traced.input_groups(tape, leaves, structure)


def _scalar(x):
    return x[()] if isinstance(x, np.ndarray) and x.ndim == 0 else x


def _per_argument(traced, tape, leaves, structure, buffer, single):
    """Gradients arranged like the differentiated arguments (a tuple unless argnums is an int),
    each in its argument's dtype (as JAX: float32 parameters get float32 gradients even where
    float64 data promoted the tape)."""
    argnums, groups = _wrt_groups(traced, tape, leaves, structure)
    dtypes = _input_dtypes(tape, leaves)
    out = []
    for i in argnums:
        arg_structure, slots = groups[i]
        out.append(_pytree.unflatten(arg_structure, [
            _scalar(tape.view(buffer, s).astype(dtypes[s])) for s in slots]))
    return out[0] if single else tuple(out)


def _input_dtypes(tape, leaves):
    """{input slot: the dtype of the argument leaf it holds}."""
    dynamic = [leaf for leaf in leaves if is_dynamic(leaf)]
    return {s: np.asarray(getattr(leaf, "data", leaf)).dtype
            for s, leaf in zip(tape.input_slots, dynamic)}


def _split_aux(tape, V, has_aux):
    """Output leaves' slots, and the aux tree when `has_aux`."""
    if not has_aux:
        return tape.output_slots, None
    structure = tape.out_structure
    if structure is _pytree.LEAF or structure[0] not in (tuple, list) or len(structure[1]) != 2:
        raise TypeError("has_aux=True requires the function to return a pair (output, aux)")
    n_main = _count_leaves(structure[1][0])
    aux_slots = tape.output_slots[n_main:]
    aux = _pytree.unflatten(structure[1][1], [_scalar(tape.view(V, s).copy()) for s in aux_slots])
    return tape.output_slots[:n_main], aux


def _wraps(f, kind):
    def decorate(g):
        functools.update_wrapper(g, f)
        g.__name__ = f"{kind}({getattr(f, '__name__', 'f')})"
        g.__qualname__ = g.__name__
        return g
    return decorate


class _PlainGradient:
    """The gradient replay of one cached tape for plain-array arguments, resolved once.

    `value_and_grad` keeps one per tape and plain-array signature (every argument a float numpy
    array, so the tape's inputs are the arguments in order). Why everything is resolved once
    (input spans, gradient spans and dtypes, the tape's bound sweeps): in a function that streams
    large data, such as a logistic-regression loss on a large matrix, each sweep evicts the
    caches, so the Python around the compiled sweeps runs cold and each operation costs
    microseconds, not tens of nanoseconds. A call writes the inputs, runs the two sweeps
    (`core.sweep.Gradient`, which also spares zeroing the adjoints) and copies the gradients.
    """
    __slots__ = ("tape", "refresh", "inputs", "sweeps", "guarded", "out", "grads", "single")

    def __init__(self, tape, out, wrt, refresh, single):
        """`out`: the output slot; `wrt`: (input slot, the argument's dtype) of each gradient;
        `refresh`: None, or for `capture="call"` the `Traced.follow` that re-reads closed-over
        arrays at every call; `single`: return the one gradient, not a tuple (argnums an int)."""
        self.tape = tape
        self.refresh = refresh
        self.inputs = [(tape.offsets[s], tape.offsets[s] + tape.sizes[s])
                       for s in tape.input_slots]
        # the tape's bound sweeps by want_value, fetched at first use: the value needs every
        # entry, the gradient only those its VJPs (and the guards) read
        self.sweeps = [None, None]
        self.guarded = bool(tape.guards)        # then tested between the two sweeps
        self.out = out
        self.grads = [(tape.offsets[s], tape.offsets[s] + tape.sizes[s],
                       None if len(tape.shapes[s]) == 1 else tape.shapes[s], dtype)
                      for s, dtype in wrt]
        self.single = single

    def __call__(self, args, want_value):
        """(value or None, the gradients), or None when a guard fails."""
        tape = self.tape
        if self.refresh is not None and not self.refresh(tape):
            return None               # stale: the general path retraces
        V = tape.load(args, True) if self.refresh is not None else self._load(args)
        sweeps = self.sweeps[want_value] or self._bind(want_value)
        if self.guarded:
            sweeps.forward(V)
            if not tape.guards_hold(V):
                return None
            G = sweeps.adjoints(V)
        else:
            G = sweeps.run(V)
        G = G[0]
        grads = [G[lo:hi].astype(dtype) if shape is None else
                 _scalar(G[lo:hi].astype(dtype).reshape(shape))
                 for lo, hi, shape, dtype in self.grads]
        value = _scalar(tape.view(V, self.out).copy()) if want_value else None
        return value, grads[0] if self.single else tuple(grads)

    def _load(self, args):
        """This thread's value buffer with the arguments written in (shapes checked by the key)."""
        V = self.tape._buffer()
        for (lo, hi), a in zip(self.inputs, args):
            V[lo:hi] = a.reshape(-1)
        return V

    def _bind(self, want_value):
        """The sweeps for `want_value` (two threads may both fetch them: the same object)."""
        sweeps = self.sweeps[want_value] = self.tape.gradient_sweeps(self.out, not want_value)
        return sweeps


def value_and_grad(f, argnums=0, has_aux=False, capture="trace"):
    """`f`'s value and its gradient with respect to `argnums`; `f` must return a scalar.

    Arrays `f` closes over are constants captured when `f` is traced: mutating them later is
    not seen (as with `jax.jit`), unless `capture="call"`, which re-reads them at every call and
    follows a variable, global or attribute rebound to a new array (`_capture`). Keyword
    arguments are passed to `f` and traced, never differentiated."""
    argnums, single = _normalize_argnums(argnums)
    traced = Traced(f, argnums, capture, "value_and_grad")
    # plain-array calls: shapes and dtypes -> [_PlainGradient]; at most MAX_SIGNATURES keys, the
    # oldest inserted dropped first (hits do not reorder: nothing added to the hot path; a key
    # dropped while in use is added again by its next call, which replays through `traced`)
    fast = {}

    def replay_plain(key, args, want_value):
        """(value or None, gradients) from a cached tape for plain-array arguments (`key`: their
        `_array_key`), or None."""
        for plan in fast.get(key, ()):
            result = plan(args, want_value)
            if result is not None:
                return result
        return None

    @_wraps(f, "value_and_grad")
    def value_and_grad_f(*args, **kwargs):
        key = None if kwargs or has_aux else _array_key(args)
        if key is not None and key in fast:
            result = replay_plain(key, args, True)
            if result is not None:
                return result
        if _is_traced_call(arguments(args, kwargs)):
            if has_aux:
                raise NotImplementedError("has_aux inside a traced computation")
            grads = _record_call(f, args, kwargs, argnums, single, "grad")
            return f(*args, **kwargs), grads
        tape, V, leaves, structure = traced.replay(args, kwargs)
        out_slots, aux = _split_aux(tape, V, has_aux)
        if len(out_slots) != 1 or tape.sizes[out_slots[0]] != 1:
            shapes = [tape.shapes[s] for s in out_slots]
            raise TypeError(f"grad requires a scalar output; use jacobian or vjp (the output "
                            f"has shape {shapes[0] if len(shapes) == 1 else shapes})")
        # the sweeps a _PlainGradient of this tape binds too; adjoints: a prefix of the slots
        G = tape.gradient_sweeps(out_slots[0]).adjoints(V)
        value = _scalar(tape.view(V, out_slots[0]).copy())
        grads = _per_argument(traced, tape, leaves, structure, G[0], single)
        if key is not None and all(p.tape is not tape for p in fast.get(key, ())):
            resolved, groups = _wrt_groups(traced, tape, leaves, structure)
            wrt = [(groups[i][1][0], args[i].dtype) for i in resolved]
            plans = fast.get(key)
            if plans is None:
                plans = fast[key] = []
                _drop_oldest(fast, MAX_SIGNATURES)
            plans.append(_PlainGradient(tape, out_slots[0], wrt,
                                        traced.follow if traced.refresh else None, single))
            del plans[:-MAX_TAPES_PER_SIGNATURE]
        return ((value, aux), grads) if has_aux else (value, grads)

    value_and_grad_f.traced = traced
    value_and_grad_f._replay_plain = replay_plain
    value_and_grad_f._transform = ("value_and_grad", f, argnums, single, has_aux)
    return value_and_grad_f


def _drop_oldest(cache, limit):
    """Drop the first-inserted entries of a dict until it has `limit` (another thread may drop
    the same one: then it is gone already)."""
    while len(cache) > limit:
        try:
            del cache[next(iter(cache))]
        except (KeyError, StopIteration, RuntimeError):
            break


def grad(f=None, argnums=0, has_aux=False, capture="trace"):
    """The gradient of scalar `f` with respect to `argnums` (usable as `@grad` and
    `@grad(argnums=...)`); see `value_and_grad` for `capture` and keyword arguments."""
    if f is None:
        return lambda fn: grad(fn, argnums, has_aux, capture)
    vg = value_and_grad(f, argnums, has_aux, capture)
    vg.traced.name = "grad"

    @_wraps(f, "grad")
    def grad_f(*args, **kwargs):
        key = None if kwargs or has_aux else _array_key(args)
        if key is not None:                            # plain arrays: never a traced call
            result = vg._replay_plain(key, args, False)
            return result[1] if result is not None else vg(*args)[1]
        if _is_traced_call(arguments(args, kwargs)):
            if has_aux:
                raise NotImplementedError("has_aux inside a traced computation")
            return _record_call(f, args, kwargs, vg.traced.argnums, isinstance(argnums, int),
                                "grad")
        (value_aux, grads) = vg(*args, **kwargs)
        return (grads, value_aux[1]) if has_aux else grads

    grad_f.traced = vg.traced
    grad_f._transform = ("grad", f, vg.traced.argnums, isinstance(argnums, int), has_aux)
    return grad_f


def vjp(f, *primals, has_aux=False):
    """`(f(*primals), pullback)`; `pullback(cotangent)` returns one gradient per primal.

    `f` is traced once per input signature and replayed afterwards (see `_traced_of_call`)."""
    traced = _traced_of_call(f, "vjp", len(primals))
    tape, V, leaves, structure = traced.replay(primals, {})
    V = V.copy()          # the pullback keeps its own values: later calls reuse the buffer
    out_slots, aux = _split_aux(tape, V, has_aux)
    main_structure = tape.out_structure[1][0] if has_aux else tape.out_structure
    out = _pytree.unflatten(main_structure, [_scalar(tape.view(V, s).copy()) for s in out_slots])

    def pullback(cotangent):
        cot_leaves, cot_structure = _pytree.flatten(cotangent)
        if cot_structure != main_structure or len(cot_leaves) != len(out_slots):
            raise ValueError("the cotangent must have the structure of the output")
        G = np.zeros((1, tape.n_adjoint), V.dtype)
        seeded = set()
        for s, c in zip(out_slots, cot_leaves):
            c = np.asarray(c, V.dtype)
            if c.shape != tape.shapes[s]:
                raise ValueError(f"cotangent of shape {c.shape} for an output of shape "
                                 f"{tape.shapes[s]}")
            if tape.NEED[s]:      # an output that no input moves has no adjoint to seed
                if s in seeded:   # a value returned at several output positions: summed
                    G[0, tape.offsets[s]:tape.offsets[s] + tape.sizes[s]] += c.reshape(-1)
                else:
                    G[0, tape.offsets[s]:tape.offsets[s] + tape.sizes[s]] = c.reshape(-1)
                    seeded.add(s)
        tape._backward(V, G)
        return _per_argument(traced, tape, leaves, structure, G[0], False)

    return (out, pullback, aux) if has_aux else (out, pullback)


def jvp(f, primals, tangents):
    """`(f(*primals), directional derivative along tangents)` by one forward tangent sweep."""
    primals, tangents = tuple(primals), tuple(tangents)
    p_leaves, p_structure = _pytree.flatten(primals)
    t_leaves, t_structure = _pytree.flatten(tangents)
    if p_structure != t_structure:
        raise ValueError("primals and tangents must have the same structure")
    traced = _traced_of_call(f, "jvp", len(primals))
    traced._check_differentiable(primals)
    tape, V, leaves, structure = traced.replay(primals, {})
    T = np.zeros((1, V.size), V.dtype)
    for s, t, p in zip(tape.input_slots, t_leaves, p_leaves):
        t = np.asarray(t, V.dtype)
        if t.shape != np.shape(p):
            raise ValueError(f"tangent of shape {t.shape} for a primal of shape {np.shape(p)}")
        T[0, tape.offsets[s]:tape.offsets[s] + tape.sizes[s]] = t.reshape(-1)
    tape._tangent(V, T)
    out = tape.outputs(V)
    out_tangent = _pytree.unflatten(tape.out_structure, [_scalar(tape.view(T[0], s).copy())
                                                         for s in tape.output_slots])
    return _scalar_tree(out), out_tangent


def _scalar_tree(tree):
    leaves, structure = _pytree.flatten(tree)
    return _pytree.unflatten(structure, [_scalar(x) for x in leaves])


def _directions(tape, slots, V, width=None):
    """Identity seeds: one row per element of `slots`, over buffers of `width` values (V's by
    default; the adjoint prefix for reverse seeds, where slots past it stay zero rows)."""
    width = V.size if width is None else width
    n = sum(tape.sizes[s] for s in slots)
    T = np.zeros((n, width), V.dtype)
    row = 0
    for s in slots:
        if tape.offsets[s] + tape.sizes[s] <= width:
            T[np.arange(row, row + tape.sizes[s]),
              np.arange(tape.offsets[s], tape.offsets[s] + tape.sizes[s])] = 1.0
        row += tape.sizes[s]
    return T


def _blocks(matrix, out_shapes, in_shapes):
    """Split a (sum of outputs, sum of inputs) matrix into out_shape + in_shape blocks."""
    blocks, r = [], 0
    for oshape in out_shapes:
        osize = int(np.prod(oshape, dtype=np.int64))
        row, c = [], 0
        for ishape in in_shapes:
            isize = int(np.prod(ishape, dtype=np.int64))
            row.append(matrix[r:r + osize, c:c + isize].reshape(oshape + ishape))
            c += isize
        blocks.append(row)
        r += osize
    return blocks


def _jacobian(f, argnums, mode, has_aux=False, capture="trace"):
    argnums_t, single = _normalize_argnums(argnums)
    traced = Traced(f, argnums_t, capture, f"jac{mode}")

    def jac_f(*args, **kwargs):
        if _is_traced_call(arguments(args, kwargs)):
            if has_aux:
                raise NotImplementedError("has_aux inside a traced computation")
            return _record_call(f, args, kwargs, argnums_t, single, "jac")
        tape, V, leaves, structure = traced.replay(args, kwargs)
        traced._check_differentiable(args)
        wrt, groups = _wrt_groups(traced, tape, leaves, structure)
        in_slots = [s for i in wrt for s in groups[i][1]]
        out_slots, aux = _split_aux(tape, V, has_aux)
        if mode == "rev":
            m = sum(tape.sizes[s] for s in out_slots)
            G = _directions(tape, out_slots, V, tape.n_adjoint)
            tape._backward(V, G)
            J = np.concatenate([G[:, tape.offsets[s]:tape.offsets[s] + tape.sizes[s]]
                                for s in in_slots], axis=1) if in_slots else np.zeros((m, 0))
        else:
            T = _directions(tape, in_slots, V)
            tape._tangent(V, T)
            J = np.concatenate([T[:, tape.offsets[s]:tape.offsets[s] + tape.sizes[s]]
                                for s in out_slots], axis=1).T
        blocks = _blocks(J, [tape.shapes[s] for s in out_slots], [tape.shapes[s] for s in in_slots])
        out_structure = tape.out_structure[1][0] if has_aux else tape.out_structure
        jac = _pytree.unflatten(out_structure, [_by_argument(row, wrt, groups, single)
                                                for row in blocks])
        return (jac, aux) if has_aux else jac

    jac_f = _wraps(f, f"jac{mode}")(jac_f)
    jac_f.traced = traced
    jac_f._transform = (f"jac{mode}", f, argnums_t, single, has_aux)
    return jac_f


def _by_argument(items, argnums, groups, single):
    """`items` (one per input leaf of the differentiated arguments, in order) arranged as the
    arguments: one tree per argument, a tuple of them unless argnums is an int."""
    k, out = 0, []
    for i in argnums:
        arg_structure, slots = groups[i]
        out.append(_pytree.unflatten(arg_structure, items[k:k + len(slots)]))
        k += len(slots)
    return out[0] if single else tuple(out)


def jacrev(f, argnums=0, has_aux=False, capture="trace"):
    """Jacobian by reverse mode: all output seeds in one reverse sweep.

    Arranged as JAX arranges it: the output tree, each leaf holding (for each differentiated
    argument) the argument's tree of blocks of shape output leaf shape + input leaf shape."""
    return _jacobian(f, argnums, "rev", has_aux, capture)


def jacfwd(f, argnums=0, has_aux=False, capture="trace"):
    """Jacobian by forward mode: all input directions in one tangent sweep."""
    return _jacobian(f, argnums, "fwd", has_aux, capture)


def jacobian(f, argnums=0, mode="rev", has_aux=False, capture="trace"):
    """`jacrev` (mode="rev") or `jacfwd` (mode="fwd")."""
    if mode not in ("rev", "fwd"):
        raise ValueError(f"mode must be 'rev' or 'fwd', got {mode!r}")
    return _jacobian(f, argnums, mode, has_aux, capture)


def _second_order(traced, args, kwargs, directions, has_aux=False):
    """Forward-over-reverse: tangents of the gradient of scalar f along `directions` (and the
    aux tree when `has_aux`)."""
    tape, V, leaves, structure = traced.replay(args, kwargs)
    out_slots, aux = _split_aux(tape, V, has_aux)
    if len(out_slots) != 1 or tape.sizes[out_slots[0]] != 1:
        raise TypeError("hessian and hvp require a scalar output")
    wrt, groups = _wrt_groups(traced, tape, leaves, structure)
    in_slots = [s for i in wrt for s in groups[i][1]]
    T = directions(tape, in_slots, V)
    tape._tangent(V, T)
    G = np.zeros(V.size, V.dtype)
    G[tape.offsets[out_slots[0]]] = 1.0
    TG = np.zeros_like(T)
    tape._backward_tangent(V, T, G, TG)
    return tape, TG, in_slots, wrt, groups, leaves, aux


def hessian(f, argnums=0, has_aux=False, capture="trace"):
    """The Hessian of scalar `f`: n tangent directions carried through one reverse sweep.
    With `has_aux`, `f` returns (output, aux) and the result is (hessian, aux), as in JAX."""
    argnums_t, single = _normalize_argnums(argnums)
    traced = Traced(f, argnums_t, capture, "hessian")

    @_wraps(f, "hessian")
    def hessian_f(*args, **kwargs):
        traced._check_differentiable(args)
        tape, TG, in_slots, wrt, groups, leaves, aux = _second_order(
            traced, args, kwargs, _directions, has_aux)
        H = np.concatenate([TG[:, tape.offsets[s]:tape.offsets[s] + tape.sizes[s]]
                            for s in in_slots], axis=1)
        shapes = [tape.shapes[s] for s in in_slots]
        dtypes = _input_dtypes(tape, leaves)            # a row is a gradient: its input's dtype
        rows = [_by_argument([b.astype(dtypes[s], copy=False) for b in row], wrt, groups, single)
                for s, row in zip(in_slots, _blocks(H, shapes, shapes))]
        hess = _by_argument(rows, wrt, groups, single)     # as JAX's jacfwd(jacrev(f))
        return (hess, aux) if has_aux else hess

    hessian_f.traced = traced
    hessian_f._transform = ("hessian", f, argnums_t, single, has_aux)
    return hessian_f


def hvp(f, x, v):
    """Hessian-vector product H(x) v of scalar `f(x)`, in one tangent and one reverse sweep."""
    traced = _traced_of_call(f, "hvp", 1)
    traced._check_differentiable((x,))
    v_leaves, v_structure = _pytree.flatten(v)
    x_structure = _pytree.flatten(x)[1]
    if v_structure != x_structure:
        raise ValueError("v must have the structure of x")

    def along_v(tape, slots, V):
        T = np.zeros((1, V.size), V.dtype)
        for s, leaf in zip(slots, v_leaves):
            leaf = np.asarray(leaf, V.dtype)
            if leaf.size != tape.sizes[s]:
                raise ValueError(f"v of shape {leaf.shape} for x of shape {tape.shapes[s]}")
            T[0, tape.offsets[s]:tape.offsets[s] + tape.sizes[s]] = leaf.reshape(-1)
        return T

    tape, TG, in_slots, _, _, _, _ = _second_order(traced, (x,), {}, along_v)
    return _pytree.unflatten(x_structure, [_scalar(tape.view(TG[0], s).copy()) for s in in_slots])


def trace_function(f, *example_args, **kwargs):
    """The `Tape` of `f` at arguments like `example_args` (inspect it, replay it, reuse it)."""
    tape, _ = trace(f, example_args, kwargs, None)
    return tape


# ---- nested transforms: grad(f) or jacobian(f) called on traced (or grad-requiring) tensors ----

def _is_traced_call(args):
    """Whether a transform is called on tensors that an enclosing computation records (`args`:
    a tree of the arguments)."""
    for leaf in _pytree.flatten(args)[0]:
        if isinstance(leaf, Tensor) and (leaf._node is not None or leaf._requires_grad):
            return state.grad_enabled
    return False


class CallRule:
    """A nested transform as one tape entry: its value and its derivatives come from the inner
    function's tape. The entry's output is the flat concatenation of the gradients of the inner
    output elements (one for `grad`, all of them for `jacobian`) with respect to the
    differentiated inner inputs, block by block (output leaf, then input leaf). Its VJP and JVP
    are second derivatives of the inner function, one forward-over-reverse sweep per output
    element (Hessians are symmetric, so the VJP of a gradient is a Hessian-vector product too).
    The inner function is a `Traced`, so a branch change inside it retraces it, not the outer."""

    def __init__(self, f, args, kwargs, argnums):
        self.traced = Traced(f, None)   # every inner input differentiated: the outer needs them
        # the inputs are the floating-point leaves of the positional and keyword arguments
        self.leaves, self.structure = _pytree.flatten(arguments(args, kwargs))
        self.argnums = tuple(i % len(args) for i in argnums)

    def inner(self, values):
        """The inner tape, its values at the inner inputs `values`, and the wrt slots."""
        it = iter(values)
        tree = _pytree.unflatten(self.structure, [next(it) if is_dynamic(leaf) else leaf
                                                  for leaf in self.leaves])
        tape, V, leaves, structure = self.traced.replay(tree[:-1], tree[-1])
        groups = self.traced.input_groups(tape, leaves, structure)
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
        G = _directions(tape, tape.output_slots, V)
        tape._backward(V, G)
        out = np.empty(G.shape[0] * len(_columns(tape, wrt)), V.dtype)
        out[self.layout(tape, wrt)] = G[:, _columns(tape, wrt)]
        return out

    # -- the sweeps of the enclosing tape call these (see _sweep) --
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
        for seed in _columns(tape, tape.output_slots):
            G = np.zeros(V.size, V.dtype)
            G[seed] = 1.0
            TG = np.zeros_like(T)
            tape._backward_tangent(V, T, G, TG)
            yield TG

    def vjp(self, outer, V, G, e):
        slots, out, values = self._inputs(outer, V, e)
        tape, Vi, wrt = self.inner(values)
        cotangent = G[:, outer.S[out, 0]:outer.S[out, 0] + outer.S[out, 1]]
        wrt_cols, in_cols = _columns(tape, wrt), _columns(tape, tape.input_slots)
        outer_cols = _columns(outer, slots, outer.S)
        need = np.repeat(outer.NEED[slots].astype(bool), outer.S[slots, 1])
        for i, row in enumerate(self.layout(tape, wrt)):
            T = np.zeros((G.shape[0], Vi.size), Vi.dtype)
            T[:, wrt_cols] = cotangent[:, row]
            tape._tangent(Vi, T)
            Gi = np.zeros(Vi.size, Vi.dtype)
            Gi[_columns(tape, tape.output_slots)[i]] = 1.0
            TG = np.zeros_like(T)
            tape._backward_tangent(Vi, T, Gi, TG)
            # add.at: an outer value passed as several inner arguments gets every contribution
            np.add.at(G, (slice(None), outer_cols[need]), TG[:, in_cols[need]])

    def jvp(self, outer, V, T, e):
        slots, out, values = self._inputs(outer, V, e)
        tape, Vi, wrt = self.inner(values)
        Ti = np.zeros((T.shape[0], Vi.size), Vi.dtype)
        Ti[:, _columns(tape, tape.input_slots)] = T[:, _columns(outer, slots, outer.S)]
        out_tangent = np.empty((T.shape[0], outer.S[out, 1]), T.dtype)
        wrt_cols = _columns(tape, wrt)
        for row, TG in zip(self.layout(tape, wrt), self._hessian_products(tape, Vi, Ti)):
            out_tangent[:, row] = TG[:, wrt_cols]
        T[:, outer.S[out, 0]:outer.S[out, 0] + outer.S[out, 1]] = out_tangent


def _columns(tape, slots, S=None):
    """Buffer positions of the elements of `slots`, end to end."""
    if S is None:
        spans = [(tape.offsets[s], tape.sizes[s]) for s in slots]
    else:
        spans = [(S[s, 0], S[s, 1]) for s in slots]
    if not spans:
        return np.zeros(0, np.int64)
    return np.concatenate([np.arange(off, off + size) for off, size in spans])


def _record_call(f, args, kwargs, argnums, single, kind):
    """Record `kind`(f)(*args) (kind "grad" or "jac") as one entry of the enclosing graph."""
    from ..eager import ops as _ops
    leaves, structure = _pytree.flatten(arguments(args, kwargs))
    inputs = [_ops.as_tensor(leaf) for leaf in leaves if is_dynamic(leaf)]
    plain = _pytree.unflatten(structure, [leaf.data if isinstance(leaf, Tensor) else leaf
                                          for leaf in leaves])
    Traced(f, argnums)._check_differentiable(plain[:-1])
    rule = CallRule(f, plain[:-1], plain[-1], argnums)
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
                piece = _ops.getitem(flat, slice(k, k + n))
                arg_leaves.append(_ops.reshape(piece, lead + tape.shapes[s]))
                k += n
            args_out.append(_pytree.unflatten(arg_structure, arg_leaves))
        per_output.append(args_out[0] if single else tuple(args_out))
    return per_output[0] if kind == "grad" else _pytree.unflatten(tape.out_structure, per_output)
