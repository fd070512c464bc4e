"""Function transforms (JAX's names): grad, value_and_grad, vjp, jvp, jacrev, jacfwd, jacobian,
hessian, hvp.

A transformed function traces the user's function once per input signature onto a `Tape`
(`_trace`) and afterwards only replays the tape in the compiled interpreters. Each mode is one
sweep: reverse mode seeds several adjoints at once (so `jacrev` of a small-output function is one
sweep), forward mode carries several tangent directions at once (`jacfwd` is one sweep), and
second order runs tangents through the reverse sweep (forward-over-reverse: `hessian`, `hvp`).
"""
import functools

import numpy as np

from . import _pytree
from ._trace import is_dynamic, leaf_signature, trace

MAX_TAPES_PER_SIGNATURE = 8


class Traced:
    """A function with its tapes: one list per input signature, guards pick the tape."""

    def __init__(self, f, argnums, capture="trace"):
        if capture not in ("trace", "call"):
            raise ValueError("capture must be 'trace' (closed-over arrays are constants) or "
                             "'call' (re-read at every call)")
        self.f = f
        self.argnums = argnums
        self.refresh = capture == "call"
        self.cache = {}

    def replay(self, args, kwargs):
        """(tape, value buffer after the forward sweep, argument leaves, structure)."""
        leaves, structure = _pytree.flatten(tuple(args))
        key = (structure, tuple(map(leaf_signature, leaves)),
               tuple(sorted(kwargs.items())) if kwargs else ())
        inputs = [leaf for leaf in leaves if is_dynamic(leaf)]
        tapes = self.cache.get(key)
        if tapes:
            for tape in tapes:
                V = tape.load(inputs, self.refresh)
                tape.forward(V)
                if tape.guards_hold(V):
                    return tape, V, leaves, structure
        else:
            tapes = self.cache[key] = []
        self._check_differentiable(args)
        tape, _ = trace(self.f, args, kwargs, self.argnums)
        tapes.append(tape)
        if len(tapes) > MAX_TAPES_PER_SIGNATURE:
            tapes.pop(0)
        return tape, tape.load(inputs), leaves, structure

    def _check_differentiable(self, args):
        for i in self.argnums:
            if i >= len(args) or i < -len(args):
                raise TypeError(f"differentiating with respect to argnums={self.argnums} requires "
                                f"at least {i + 1} positional arguments, got {len(args)}")
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


def _count_leaves(structure):
    if structure is _pytree.LEAF:
        return 1
    children = structure[2] if structure[0] is dict else structure[1]
    return sum(_count_leaves(c) for c in children)


def _normalize_argnums(argnums):
    if isinstance(argnums, int):
        return (argnums,), True
    argnums = tuple(argnums)
    if not argnums or not all(isinstance(i, int) for i in argnums):
        raise TypeError(f"argnums must be an int or a non-empty tuple of ints, got {argnums!r}")
    return argnums, False


def _scalar(x):
    return x[()] if isinstance(x, np.ndarray) and x.ndim == 0 else x


def _per_argument(traced, tape, leaves, structure, buffer, single):
    """Gradients arranged like the differentiated arguments (a tuple unless argnums is an int)."""
    groups = traced.input_groups(tape, leaves, structure)
    out = []
    for i in traced.argnums:
        arg_structure, slots = groups[i % len(groups)]
        out.append(_pytree.unflatten(arg_structure, [_scalar(tape.view(buffer, s).copy())
                                                     for s in slots]))
    return out[0] if single else tuple(out)


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


def value_and_grad(f, argnums=0, has_aux=False, capture="trace"):
    """`f`'s value and its gradient with respect to `argnums`; `f` must return a scalar."""
    argnums, single = _normalize_argnums(argnums)
    traced = Traced(f, argnums, capture)

    @_wraps(f, "value_and_grad")
    def value_and_grad_f(*args, **kwargs):
        tape, V, leaves, structure = traced.replay(args, kwargs)
        out_slots, aux = _split_aux(tape, V, has_aux)
        if len(out_slots) != 1 or tape.sizes[out_slots[0]] != 1:
            shapes = [tape.shapes[s] for s in out_slots]
            raise TypeError(f"grad requires a scalar output; use jacobian or vjp (the output "
                            f"has shape {shapes[0] if len(shapes) == 1 else shapes})")
        G = np.zeros((1, V.size), V.dtype)
        G[0, tape.offsets[out_slots[0]]] = 1.0
        tape.backward(V, G)
        value = _scalar(tape.view(V, out_slots[0]).copy())
        grads = _per_argument(traced, tape, leaves, structure, G[0], single)
        return ((value, aux), grads) if has_aux else (value, grads)

    value_and_grad_f.traced = traced
    return value_and_grad_f


def grad(f=None, argnums=0, has_aux=False, capture="trace"):
    """The gradient of scalar `f` with respect to `argnums` (usable as `@grad`)."""
    if f is None:
        return lambda fn: grad(fn, argnums, has_aux, capture)
    vg = value_and_grad(f, argnums, has_aux, capture)

    @_wraps(f, "grad")
    def grad_f(*args, **kwargs):
        (value_aux, grads) = vg(*args, **kwargs)
        return (grads, value_aux[1]) if has_aux else grads

    grad_f.traced = vg.traced
    return grad_f


def vjp(f, *primals, has_aux=False):
    """`(f(*primals), pullback)`; `pullback(cotangent)` returns one gradient per primal."""
    traced = Traced(f, tuple(range(len(primals))))
    tape, V, leaves, structure = traced.replay(primals, {})
    V = V.copy()          # the pullback keeps its own values: later calls reuse the buffer
    out_slots, aux = _split_aux(tape, V, has_aux)
    main_structure = tape.out_structure[1][0] if has_aux else tape.out_structure
    out = _pytree.unflatten(main_structure, [_scalar(tape.view(V, s).copy()) for s in out_slots])

    def pullback(cotangent):
        cot_leaves, cot_structure = _pytree.flatten(cotangent)
        if cot_structure != main_structure or len(cot_leaves) != len(out_slots):
            raise ValueError("the cotangent must have the structure of the output")
        G = np.zeros((1, V.size), V.dtype)
        for s, c in zip(out_slots, cot_leaves):
            c = np.asarray(c, V.dtype)
            if c.shape != tape.shapes[s]:
                raise ValueError(f"cotangent of shape {c.shape} for an output of shape "
                                 f"{tape.shapes[s]}")
            G[0, tape.offsets[s]:tape.offsets[s] + tape.sizes[s]] = c.reshape(-1)
        tape.backward(V, G)
        return _per_argument(traced, tape, leaves, structure, G[0], False)

    return (out, pullback, aux) if has_aux else (out, pullback)


def jvp(f, primals, tangents):
    """`(f(*primals), directional derivative along tangents)` by one forward tangent sweep."""
    primals, tangents = tuple(primals), tuple(tangents)
    p_leaves, p_structure = _pytree.flatten(primals)
    t_leaves, t_structure = _pytree.flatten(tangents)
    if p_structure != t_structure:
        raise ValueError("primals and tangents must have the same structure")
    traced = Traced(f, tuple(range(len(primals))))
    traced._check_differentiable(primals)
    tape, V, leaves, structure = traced.replay(primals, {})
    T = np.zeros((1, V.size), V.dtype)
    for s, t, p in zip(tape.input_slots, t_leaves, p_leaves):
        t = np.asarray(t, V.dtype)
        if t.shape != np.shape(p):
            raise ValueError(f"tangent of shape {t.shape} for a primal of shape {np.shape(p)}")
        T[0, tape.offsets[s]:tape.offsets[s] + tape.sizes[s]] = t.reshape(-1)
    tape.tangent(V, T)
    out = tape.outputs(V)
    out_tangent = _pytree.unflatten(tape.out_structure, [_scalar(tape.view(T[0], s).copy())
                                                         for s in tape.output_slots])
    return _scalar_tree(out), out_tangent


def _scalar_tree(tree):
    leaves, structure = _pytree.flatten(tree)
    return _pytree.unflatten(structure, [_scalar(x) for x in leaves])


def _directions(tape, slots, V):
    """Identity tangents: one direction per element of the inputs in `slots`."""
    n = sum(tape.sizes[s] for s in slots)
    T = np.zeros((n, V.size), V.dtype)
    row = 0
    for s in slots:
        for i in range(tape.sizes[s]):
            T[row, tape.offsets[s] + i] = 1.0
            row += 1
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


def _jacobian(f, argnums, mode):
    argnums_t, single = _normalize_argnums(argnums)
    traced = Traced(f, argnums_t)

    def jac_f(*args, **kwargs):
        tape, V, leaves, structure = traced.replay(args, kwargs)
        traced._check_differentiable(args)
        groups = traced.input_groups(tape, leaves, structure)
        in_slots = [s for i in argnums_t for s in groups[i % len(groups)][1]]
        out_slots = tape.output_slots
        if mode == "rev":
            m = sum(tape.sizes[s] for s in out_slots)
            G = _directions(tape, out_slots, V)
            tape.backward(V, G)
            J = np.concatenate([G[:, tape.offsets[s]:tape.offsets[s] + tape.sizes[s]]
                                for s in in_slots], axis=1) if in_slots else np.zeros((m, 0))
        else:
            T = _directions(tape, in_slots, V)
            tape.tangent(V, T)
            J = np.concatenate([T[:, tape.offsets[s]:tape.offsets[s] + tape.sizes[s]]
                                for s in out_slots], axis=1).T
        blocks = _blocks(J, [tape.shapes[s] for s in out_slots], [tape.shapes[s] for s in in_slots])
        return _arrange(blocks, traced, tape, leaves, structure, single)

    return _wraps(f, f"jac{mode}")(jac_f)


def _arrange(blocks, traced, tape, leaves, structure, single):
    """Jacobian blocks arranged as output tree of (argument tuple of argument trees)."""
    groups = traced.input_groups(tape, leaves, structure)
    per_output = []
    for row in blocks:
        k, args_out = 0, []
        for i in traced.argnums:
            arg_structure, slots = groups[i % len(groups)]
            args_out.append(_pytree.unflatten(arg_structure, row[k:k + len(slots)]))
            k += len(slots)
        per_output.append(args_out[0] if single else tuple(args_out))
    return _pytree.unflatten(tape.out_structure, per_output)


def jacrev(f, argnums=0):
    """Jacobian by reverse mode: all output seeds in one reverse sweep."""
    return _jacobian(f, argnums, "rev")


def jacfwd(f, argnums=0):
    """Jacobian by forward mode: all input directions in one tangent sweep."""
    return _jacobian(f, argnums, "fwd")


def jacobian(f, argnums=0, mode="rev"):
    if mode not in ("rev", "fwd"):
        raise ValueError(f"mode must be 'rev' or 'fwd', got {mode!r}")
    return _jacobian(f, argnums, mode)


def _second_order(traced, args, kwargs, directions):
    """Forward-over-reverse: tangents of the gradient of scalar f along `directions`."""
    tape, V, leaves, structure = traced.replay(args, kwargs)
    if len(tape.output_slots) != 1 or tape.sizes[tape.output_slots[0]] != 1:
        raise TypeError("hessian and hvp require a scalar output")
    groups = traced.input_groups(tape, leaves, structure)
    in_slots = [s for i in traced.argnums for s in groups[i % len(groups)][1]]
    T = directions(tape, in_slots, V)
    tape.tangent(V, T)
    G = np.zeros(V.size, V.dtype)
    G[tape.offsets[tape.output_slots[0]]] = 1.0
    TG = np.zeros_like(T)
    tape.backward_tangent(V, T, G, TG)
    return tape, TG, in_slots, leaves, structure


def hessian(f, argnums=0):
    """The Hessian of scalar `f`: n tangent directions carried through one reverse sweep."""
    argnums_t, single = _normalize_argnums(argnums)
    traced = Traced(f, argnums_t)

    @_wraps(f, "hessian")
    def hessian_f(*args, **kwargs):
        traced._check_differentiable(args)
        tape, TG, in_slots, leaves, structure = _second_order(traced, args, kwargs, _directions)
        H = np.concatenate([TG[:, tape.offsets[s]:tape.offsets[s] + tape.sizes[s]]
                            for s in in_slots], axis=1)
        shapes = [tape.shapes[s] for s in in_slots]
        rows = _blocks(H, shapes, shapes)
        if single and len(in_slots) == 1:
            return rows[0][0]
        return tuple(tuple(r) for r in rows) if not single else rows

    return hessian_f


def hvp(f, x, v):
    """Hessian-vector product H(x) v of scalar `f(x)`, in one tangent and one reverse sweep."""
    traced = Traced(f, (0,))
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

    tape, TG, in_slots, _, _ = _second_order(traced, (x,), {}, along_v)
    return _pytree.unflatten(x_structure, [_scalar(tape.view(TG[0], s).copy()) for s in in_slots])


def trace_function(f, *example_args, **kwargs):
    """The `Tape` of `f` at arguments like `example_args` (inspect it, replay it, reuse it)."""
    tape, _ = trace(f, example_args, kwargs, None)
    return tape
