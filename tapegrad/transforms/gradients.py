"""Function transforms (JAX's names): grad, value_and_grad, vjp, jvp, jacrev, jacfwd, jacobian,
hessian, hvp.

A transformed function traces the user's function once per input signature onto a `Tape`
(`transforms.traced`) and afterwards only replays the tape in the compiled interpreters. Each
mode is one sweep: reverse mode seeds several adjoints at once (so `jacrev` of a small-output
function is one sweep), forward mode carries several tangent directions at once (`jacfwd` is one
sweep), and second order runs tangents through the reverse sweep (forward-over-reverse:
`hessian`, `hvp`).

A call flattens its arguments once and takes one path to the sweeps: the tape's bound gradient
sweeps (`Tape.gradient_sweeps`) for `grad` and `value_and_grad`, whose calls on plain float
arrays skip the argument machinery altogether (`PlainGradient`); the tape's unchecked sweeps
(`_backward`, `_tangent`, ...) on buffers the tape made for the other transforms. Called on
values that an enclosing computation records, `grad` and `jacobian` record themselves as one
entry of it (`transforms.nested`).
"""
import functools
import numbers

import numpy as np

from . import compiled
from .nested import record_call
from .signature import arguments, count_leaves
from .spec import Schedule, Transform
from .tape import GuardError, directions
from .traced import (MAX_SIGNATURES, MAX_TAPES_PER_SIGNATURE, Traced, call_traced, drop_oldest,
                     is_traced_call)
from ..core import pytree, sweep
from ..eager.graph import state


# ---- grad and value_and_grad -----------------------------------------------------------------

class PlainGradient:
    """The gradient replay of one cached tape for plain-array arguments, resolved once.

    `value_and_grad` keeps one per tape and plain-array signature (every argument a float numpy
    array, so the tape's inputs are the arguments in order). Why everything is resolved once
    (input spans, gradient spans and dtypes, the tape's bound sweeps): in a function that streams
    large data, such as a logistic-regression loss on a large matrix, each sweep evicts the
    caches, so the Python around the compiled sweeps runs cold and each operation costs
    microseconds, not tens of nanoseconds. A call writes the inputs, runs the two sweeps
    (`core.sweep.Gradient`, which also spares zeroing the adjoints) and copies the gradients.

    A function of one array (the common case: a loss of its parameters) takes the sweeps
    in one compiled call instead (`compiled.plain_gradient`: the input written, both sweeps,
    the gradient copied out), from its second call on: binding it loads a generated module,
    which a one-off gradient should not pay for.
    """
    __slots__ = ("tape", "refresh", "inputs", "sweeps", "out", "grads", "single", "native")

    def __init__(self, tape, out, wrt, refresh, single):
        """`out`: the output slot; `wrt`: (input slot, the argument's dtype) of each gradient;
        `refresh`: None, or for `capture="call"` the `Traced.follow` that re-reads closed-over
        arrays at every call; `single`: return the one gradient, not a tuple (argnums an int)."""
        self.tape = tape
        self.refresh = refresh
        self.inputs = [(tape.offsets[s], tape.offsets[s] + tape.sizes[s])
                       for s in tape.input_slots]
        # the sweeps by want_value, bound at first use (`_bind`): the value needs every entry,
        # the gradient only those its VJPs (and the guards) read
        self.sweeps = [None, None]
        self.out = out
        self.grads = [(tape.offsets[s], tape.offsets[s] + tape.sizes[s],
                       None if len(tape.shapes[s]) == 1 else tape.shapes[s], dtype)
                      for s, dtype in wrt]
        self.single = single
        # (compiled call, t, k, whether x needs flattening), bound at the first call here;
        # False where the tape, the arguments or `capture` need the general sweeps
        self.native = None if refresh is None and len(wrt) == 1 and \
            len(tape.input_slots) == 1 and wrt[0][1] == tape.dtype else False

    def __call__(self, args, want_value):
        """(value or None, the gradients), or None when a guard fails."""
        native, tape = self.native, self.tape
        if native and sweep.checked is None:      # one compiled call (x: the key's shape)
            call, t, k, reshape = native
            V = getattr(tape._local, "V", None)
            if V is None:
                V = tape._buffer()
            G = call(t, k, V, args[0].reshape(-1) if reshape else args[0], want_value)
            if reshape:
                G = _scalar(G.reshape(self.grads[0][2]))
            value = _scalar(tape.view(V, self.out).copy()) if want_value else None
            return value, G if self.single else (G,)
        if native is None:
            self._bind_native()
            return self(args, want_value)
        if self.refresh is not None and not self.refresh(tape):
            return None               # stale: the general path retraces
        V = tape.load(args, True) if self.refresh is not None else self._load(args)
        try:
            G = (self.sweeps[want_value] or self._bind(want_value))(V)
        except GuardError:          # a nested transform's closure took another branch
            return None
        if G is None:
            return None
        G = G[0]
        grads = [G[lo:hi].astype(dtype) if shape is None else
                 _scalar(G[lo:hi].astype(dtype).reshape(shape))
                 for lo, hi, shape, dtype in self.grads]
        value = _scalar(tape.view(V, self.out).copy()) if want_value else None
        return value, grads[0] if self.single else tuple(grads)

    def _bind_native(self):
        """Bind `native` (False where `compiled.plain_gradient` refuses the tape)."""
        bound = compiled.plain_gradient(self.tape, self.out)
        self.native = False if bound is None else \
            bound + (len(self.tape.shapes[self.tape.input_slots[0]]) != 1,)

    def _load(self, args):
        """This thread's value buffer with the arguments written in (shapes checked by the key)."""
        V = self.tape._buffer()
        for (lo, hi), a in zip(self.inputs, args):
            V[lo:hi] = a.reshape(-1)
        return V

    def _bind(self, want_value):
        """`run(V)` -> adjoints for `want_value`: the tape's gradient sweeps, with its guards
        tested in between where it has any (None when one fails). Two threads may both bind:
        the same sweeps."""
        sweeps = self.tape.gradient_sweeps(self.out, not want_value)
        run = functools.partial(_guarded_run, self.tape, sweeps) if self.tape.guards else \
            sweeps.run
        self.sweeps[want_value] = run
        return run


def _guarded_run(tape, sweeps, V):
    """The adjoints from `sweeps` (the tape's `Gradient`), its guards tested between the forward
    and the reverse sweep; None when one fails."""
    sweeps.forward(V)
    if not tape.guards_hold(V):
        return None
    return sweeps.adjoints(V)


def _gradient_call(f, argnums, single, has_aux, traced):
    """`call(args, kwargs, want_value)` -> (value, or (value, aux) with `has_aux`; gradients),
    the value None unless `want_value`: the one path of `grad` and `value_and_grad`.

    Plain float arrays (`_array_key`) replay a `PlainGradient` of a cached tape; anything else
    is flattened once, recorded as a nested transform when an enclosing computation records
    its values, else replayed by `traced` (which traces it for a new signature or branch)."""
    # plain-array calls: shapes and dtypes -> [PlainGradient]; at most MAX_SIGNATURES keys, the
    # oldest inserted dropped first (hits do not reorder: nothing added to the hot path; a key
    # dropped while in use is added again by its next call, which replays through `traced`)
    plain = {}

    def call(args, kwargs, want_value):
        # inside an enclosing trace, no cached replay: f may close over that trace's values
        if kwargs or has_aux or state.tracing:
            key = None
        elif len(args) == 1:        # _array_key, written out for the common case
            a = args[0]
            key = ((a.shape, a.dtype),) if type(a) is np.ndarray and a.dtype.kind == "f" \
                else None
        else:
            key = _array_key(args)
        if key is not None:
            for replay in plain.get(key, ()):
                result = replay(args, want_value)
                if result is not None:
                    return result
        leaves, structure = pytree.flatten(arguments(args, kwargs))
        if is_traced_call(leaves):
            if has_aux:
                raise NotImplementedError("has_aux inside a traced computation")
            grads = record_call(f, leaves, structure, argnums, single, "grad")
            return (f(*args, **kwargs) if want_value else None), grads
        tape, V = traced.replay_flat(leaves, structure)
        if tape.implicit_slots:          # f closes over values an enclosing computation records
            if has_aux:
                raise NotImplementedError("has_aux inside a traced computation")
            grads = record_call(f, leaves, structure, argnums, single, "grad", tape)
            return (f(*args, **kwargs) if want_value else None), grads
        out_slots, aux = _split_aux(tape, V, has_aux)
        if len(out_slots) != 1 or tape.sizes[out_slots[0]] != 1:
            shapes = [tape.shapes[s] for s in out_slots]
            raise TypeError(f"grad requires a scalar output; use jacobian or vjp (the output "
                            f"has shape {shapes[0] if len(shapes) == 1 else shapes})")
        # the sweeps a PlainGradient of this tape binds too; adjoints: a prefix of the slots
        G = tape.gradient_sweeps(out_slots[0], not want_value).adjoints(V)
        value = _scalar(tape.view(V, out_slots[0]).copy()) if want_value else None
        wrt, groups = _wrt_groups(traced, tape, leaves, structure)
        grads = _per_argument(tape, wrt, groups, G[0], single)
        if key is not None and all(p.tape is not tape for p in plain.get(key, ())):
            dtypes = [(groups[i][1][0], args[i].dtype) for i in wrt]
            replays = plain.get(key)
            if replays is None:
                replays = plain[key] = []
                drop_oldest(plain, MAX_SIGNATURES)
            replays.append(PlainGradient(tape, out_slots[0], dtypes,
                                         traced.follow if traced.refresh else None, single))
            del replays[:-MAX_TAPES_PER_SIGNATURE]
        return ((value, aux) if has_aux else value), grads

    return call


def value_and_grad(f, argnums=0, has_aux=False, capture="trace"):
    """`f`'s value and its gradient with respect to `argnums`; `f` must return a scalar.

    Arrays `f` closes over are constants captured when `f` is traced: mutating them later is
    not seen (as with `jax.jit`), unless `capture="call"`, which re-reads them at every call and
    follows a variable, global or attribute rebound to a new array (`transforms.capture`).
    Keyword arguments are passed to `f` and traced, never differentiated."""
    argnums, single = _normalize_argnums(argnums)
    traced = Traced(f, argnums, capture, "value_and_grad", nests=True)
    call = _gradient_call(f, argnums, single, has_aux, traced)

    @_wraps(f, "value_and_grad")
    def value_and_grad_f(*args, **kwargs):
        return call(args, kwargs, True)

    value_and_grad_f.traced = traced
    value_and_grad_f._call = call
    value_and_grad_f.transform = Transform(Schedule.VALUE_AND_GRAD, f, argnums, single, has_aux,
                                           capture)
    return value_and_grad_f


def grad(f=None, argnums=0, has_aux=False, capture="trace"):
    """The gradient of scalar `f` with respect to `argnums` (usable as `@grad` and
    `@grad(argnums=...)`); see `value_and_grad` for `capture` and keyword arguments."""
    if f is None:
        return lambda fn: grad(fn, argnums, has_aux, capture)
    vg = value_and_grad(f, argnums, has_aux, capture)
    vg.traced.name = "grad"
    call = vg._call

    @_wraps(f, "grad")
    def grad_f(*args, **kwargs):
        value_aux, grads = call(args, kwargs, False)
        return (grads, value_aux[1]) if has_aux else grads

    grad_f.traced = vg.traced
    grad_f.transform = Transform(Schedule.GRAD, f, vg.traced.argnums, isinstance(argnums, int),
                                 has_aux, capture)
    return grad_f


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


# ---- vjp and jvp -------------------------------------------------------------------------------

def vjp(f, *primals, has_aux=False):
    """`(f(*primals), pullback)`; `pullback(cotangent)` returns one gradient per primal.

    `f` is traced once per input signature and replayed afterwards (see `call_traced`)."""
    traced = call_traced(f, "vjp", len(primals))
    leaves, structure = pytree.flatten(arguments(primals, {}))
    tape, V = traced.replay_flat(leaves, structure)
    V = V.copy()          # the pullback keeps its own values: later calls reuse the buffer
    out_slots, aux = _split_aux(tape, V, has_aux)
    main_structure = tape.out_structure[1][0] if has_aux else tape.out_structure
    out = pytree.unflatten(main_structure, [_scalar(tape.view(V, s).copy()) for s in out_slots])

    def pullback(cotangent):
        cot_leaves, cot_structure = pytree.flatten(cotangent)
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
        wrt, groups = _wrt_groups(traced, tape, leaves, structure)
        return _per_argument(tape, wrt, groups, G[0], False)

    return (out, pullback, aux) if has_aux else (out, pullback)


def jvp(f, primals, tangents):
    """`(f(*primals), directional derivative along tangents)` by one forward tangent sweep."""
    primals, tangents = tuple(primals), tuple(tangents)
    leaves, structure = pytree.flatten(arguments(primals, {}))
    t_leaves, t_structure = pytree.flatten(tangents)
    if structure[1][:-1] != t_structure[1]:
        raise ValueError("primals and tangents must have the same structure")
    traced = call_traced(f, "jvp", len(primals))
    traced.check_differentiable(leaves, structure)
    tape, V = traced.replay_flat(leaves, structure)
    T = np.zeros((1, V.size), V.dtype)
    for s, t, p in zip(tape.input_slots, t_leaves, leaves):
        t = np.asarray(t, V.dtype)
        if t.shape != np.shape(p):
            raise ValueError(f"tangent of shape {t.shape} for a primal of shape {np.shape(p)}")
        T[0, tape.offsets[s]:tape.offsets[s] + tape.sizes[s]] = t.reshape(-1)
    tape._tangent(V, T)
    out = tape.outputs(V)
    out_tangent = pytree.unflatten(tape.out_structure, [_scalar(tape.view(T[0], s).copy())
                                                        for s in tape.output_slots])
    return _scalar_tree(out), out_tangent


# ---- Jacobians -----------------------------------------------------------------------------------

def _jacobian(f, argnums, mode, has_aux=False, capture="trace"):
    argnums_t, single = _normalize_argnums(argnums)
    traced = Traced(f, argnums_t, capture, f"jac{mode}", nests=True)

    def jac_f(*args, **kwargs):
        leaves, structure = pytree.flatten(arguments(args, kwargs))
        if is_traced_call(leaves):
            if has_aux:
                raise NotImplementedError("has_aux inside a traced computation")
            return record_call(f, leaves, structure, argnums_t, single, "jac")
        tape, V = traced.replay_flat(leaves, structure)
        if tape.implicit_slots:          # f closes over values an enclosing computation records
            if has_aux:
                raise NotImplementedError("has_aux inside a traced computation")
            return record_call(f, leaves, structure, argnums_t, single, "jac", tape)
        traced.check_differentiable(leaves, structure)
        wrt, groups = _wrt_groups(traced, tape, leaves, structure)
        in_slots = [s for i in wrt for s in groups[i][1]]
        out_slots, aux = _split_aux(tape, V, has_aux)
        if mode == "rev":
            m = sum(tape.sizes[s] for s in out_slots)
            G = directions(tape, out_slots, V, tape.n_adjoint)
            tape._backward(V, G)
            J = np.concatenate([G[:, tape.offsets[s]:tape.offsets[s] + tape.sizes[s]]
                                for s in in_slots], axis=1) if in_slots else np.zeros((m, 0))
        else:
            T = directions(tape, in_slots, V)
            tape._tangent(V, T)
            J = np.concatenate([T[:, tape.offsets[s]:tape.offsets[s] + tape.sizes[s]]
                                for s in out_slots], axis=1).T
        blocks = _blocks(J, [tape.shapes[s] for s in out_slots], [tape.shapes[s] for s in in_slots])
        out_structure = tape.out_structure[1][0] if has_aux else tape.out_structure
        jac = pytree.unflatten(out_structure, [_by_argument(row, wrt, groups, single)
                                               for row in blocks])
        return (jac, aux) if has_aux else jac

    jac_f = _wraps(f, f"jac{mode}")(jac_f)
    jac_f.traced = traced
    jac_f.transform = Transform(Schedule.JACREV if mode == "rev" else Schedule.JACFWD, f, argnums_t,
                                single, has_aux, capture)
    return jac_f


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


def _by_argument(items, argnums, groups, single):
    """`items` (one per input leaf of the differentiated arguments, in order) arranged as the
    arguments: one tree per argument, a tuple of them unless argnums is an int."""
    k, out = 0, []
    for i in argnums:
        arg_structure, slots = groups[i]
        out.append(pytree.unflatten(arg_structure, items[k:k + len(slots)]))
        k += len(slots)
    return out[0] if single else tuple(out)


# ---- second order --------------------------------------------------------------------------------

def _second_order(traced, leaves, structure, directions_of, has_aux=False):
    """Forward-over-reverse: tangents of the gradient of scalar f along the directions that
    `directions_of(tape, input slots, V)` makes (and the aux tree when `has_aux`)."""
    tape, V = traced.replay_flat(leaves, structure)
    out_slots, aux = _split_aux(tape, V, has_aux)
    if len(out_slots) != 1 or tape.sizes[out_slots[0]] != 1:
        raise TypeError("hessian and hvp require a scalar output")
    wrt, groups = _wrt_groups(traced, tape, leaves, structure)
    in_slots = [s for i in wrt for s in groups[i][1]]
    T = directions_of(tape, in_slots, V)
    tape._tangent(V, T)
    G = np.zeros(V.size, V.dtype)
    G[tape.offsets[out_slots[0]]] = 1.0
    TG = np.zeros_like(T)
    tape._backward_tangent(V, T, G, TG)
    return tape, TG, in_slots, wrt, groups, aux


def hessian(f, argnums=0, has_aux=False, capture="trace"):
    """The Hessian of scalar `f`: n tangent directions carried through one reverse sweep.
    With `has_aux`, `f` returns (output, aux) and the result is (hessian, aux), as in JAX."""
    argnums_t, single = _normalize_argnums(argnums)
    traced = Traced(f, argnums_t, capture, "hessian")

    @_wraps(f, "hessian")
    def hessian_f(*args, **kwargs):
        leaves, structure = pytree.flatten(arguments(args, kwargs))
        traced.check_differentiable(leaves, structure)
        tape, TG, in_slots, wrt, groups, aux = _second_order(
            traced, leaves, structure, directions, has_aux)
        H = np.concatenate([TG[:, tape.offsets[s]:tape.offsets[s] + tape.sizes[s]]
                            for s in in_slots], axis=1)
        shapes = [tape.shapes[s] for s in in_slots]
        dtypes = _input_dtypes(tape)                    # a row is a gradient: its input's dtype
        rows = [_by_argument([b.astype(dtypes[s], copy=False) for b in row], wrt, groups, single)
                for s, row in zip(in_slots, _blocks(H, shapes, shapes))]
        hess = _by_argument(rows, wrt, groups, single)     # as JAX's jacfwd(jacrev(f))
        return (hess, aux) if has_aux else hess

    hessian_f.traced = traced
    hessian_f.transform = Transform(Schedule.HESSIAN, f, argnums_t, single, has_aux, capture)
    return hessian_f


def hvp(f, x, v):
    """Hessian-vector product H(x) v of scalar `f(x)`, in one tangent and one reverse sweep."""
    return _hvp(call_traced(f, "hvp", 1), (x,), v, "v")


def hessp(f, capture="trace"):
    """`hessp_f(x, p, *args)`: the Hessian of scalar `f(x, *args)` with respect to x, times p,
    in one tangent and one reverse sweep; the `hessp` of `scipy.optimize.minimize` (methods
    Newton-CG, trust-ncg, trust-krylov, trust-constr), which passes its `args` after p. Traced
    once per signature of (x, *args), like `grad`."""
    traced = Traced(f, (0,), capture, "hessp")

    @_wraps(f, "hessp")
    def hessp_f(x, p, *args):
        return _hvp(traced, (x,) + args, p, "p")

    hessp_f.traced = traced
    return hessp_f


def _hvp(traced, args, v, name):
    """H v of scalar f at `args`, differentiated with respect to the first argument, along v
    (named `name`), arranged like it."""
    leaves, structure = pytree.flatten(arguments(args, {}))
    traced.check_differentiable(leaves, structure)
    v_leaves, v_structure = pytree.flatten(v)
    x_structure = structure[1][0]
    if v_structure != x_structure:
        raise ValueError(f"{name} must have the structure of x")

    def along_v(tape, slots, V):
        T = np.zeros((1, V.size), V.dtype)
        for s, leaf in zip(slots, v_leaves):
            leaf = np.asarray(leaf, V.dtype)
            if leaf.size != tape.sizes[s]:
                raise ValueError(f"{name} of shape {leaf.shape} for x of shape "
                                 f"{tape.shapes[s]}")
            T[0, tape.offsets[s]:tape.offsets[s] + tape.sizes[s]] = leaf.reshape(-1)
        return T

    tape, TG, in_slots, _, _, _ = _second_order(traced, leaves, structure, along_v)
    return pytree.unflatten(x_structure, [_scalar(tape.view(TG[0], s).copy()) for s in in_slots])


# ---- arranging results -------------------------------------------------------------------------

def _is_index(i):
    return isinstance(i, numbers.Integral) and not isinstance(i, bool)


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


def _scalar_tree(tree):
    leaves, structure = pytree.flatten(tree)
    return pytree.unflatten(structure, [_scalar(x) for x in leaves])


def _per_argument(tape, wrt, groups, buffer, single):
    """Gradients arranged like the differentiated arguments `wrt` (a tuple unless argnums is an
    int), each in its argument's dtype (as JAX: float32 parameters get float32 gradients even
    where float64 data promoted the tape)."""
    dtypes = _input_dtypes(tape)
    out = []
    for i in wrt:
        arg_structure, slots = groups[i]
        out.append(pytree.unflatten(arg_structure, [
            _scalar(tape.view(buffer, s).astype(dtypes[s])) for s in slots]))
    return out[0] if single else tuple(out)


def _input_dtypes(tape):
    """{input slot: the dtype of the argument leaf it holds, as traced}."""
    return dict(zip(tape.input_slots, tape.input_dtypes))


def _split_aux(tape, V, has_aux):
    """Output leaves' slots, and the aux tree when `has_aux`."""
    if not has_aux:
        return tape.output_slots, None
    structure = tape.out_structure
    if structure is pytree.LEAF or structure[0] not in (tuple, list) or len(structure[1]) != 2:
        raise TypeError("has_aux=True requires the function to return a pair (output, aux)")
    n_main = count_leaves(structure[1][0])
    aux_slots = tape.output_slots[n_main:]
    aux = pytree.unflatten(structure[1][1], [_scalar(tape.view(V, s).copy()) for s in aux_slots])
    return tape.output_slots[:n_main], aux


def _wraps(f, kind):
    def decorate(g):
        functools.update_wrapper(g, f)
        g.__name__ = f"{kind}({getattr(f, '__name__', 'f')})"
        g.__qualname__ = g.__name__
        return g
    return decorate
