"""Sparse Jacobians and Hessians: `jacobian(f, sparsity=...)` and `hessian(f, sparsity=...)`.

With `sparsity="auto"` the pattern is detected from the tape the call replays
(`transforms.sparsity`), colored (`transforms.coloring`), and the derivative computed by ONE
batched replay seeded with the coloring instead of the identity: a tangent sweep carrying one
direction per color (forward), a reverse sweep carrying one seed per color (reverse, when the
rows need fewer colors), or a forward-over-reverse sweep carrying one direction per color
(Hessians, star coloring). Each entry of the result is then read from the compressed sweep
at a position computed once. The pattern, the coloring and those positions are cached with the
tape (`Tape.derived`): a later call only replays and gathers. A function whose control flow
takes another branch replays (or traces) another tape, which has its own pattern.

The result is a `scipy.sparse.csr_matrix` of the output elements (all output leaves, end to
end) by the differentiated input elements (all differentiated argument leaves, end to end),
with the pattern's entries stored (a structurally possible entry that is zero at this point
is stored as a zero). Without `sparsity` both transforms are the dense ones of
`transforms.gradients`; this module adds the keyword and keeps those as they are.

A pattern given by the caller (a scipy sparse matrix or a boolean array, nonzero where the
derivative may be) replaces detection; it is checked for shape, and a Hessian's is made
symmetric. An entry outside a given pattern is not computed: it must hold at every point.
"""
import threading

import numpy as np

from . import gradients
from .signature import arguments
from .tape import columns
from .traced import Traced, is_traced_call
from ..core import pytree


def jacobian(f, argnums=0, mode=None, has_aux=False, capture="trace", sparsity=None):
    """`jacrev` (mode="rev", the default) or `jacfwd` (mode="fwd"); with `sparsity` ("auto",
    or a pattern: a scipy sparse matrix or boolean array of shape (outputs, inputs)), the
    Jacobian as a `scipy.sparse.csr_matrix` from one compressed sweep, forward or reverse by
    the fewer colors unless `mode` says which."""
    if sparsity is None:
        return gradients.jacobian(f, argnums, "rev" if mode is None else mode, has_aux, capture)
    if mode not in (None, "rev", "fwd"):
        raise ValueError(f"mode must be 'rev' or 'fwd', got {mode!r}")
    given = _given_pattern(sparsity)
    argnums_t, _ = gradients._normalize_argnums(argnums)
    traced = Traced(f, argnums_t, capture, "jacobian", nests=True)
    key = ("sparse jacobian", mode, "auto" if given is None else id(given))

    def sparse_jacobian_f(*args, **kwargs):
        tape, V, in_slots, out_slots, aux = _replay(traced, args, kwargs, has_aux)
        plan = tape.derived.get((key, tuple(in_slots), tuple(out_slots)))
        if plan is None:
            plan = _JacobianPlan(tape, in_slots, out_slots, mode, given, not traced.refresh)
            tape.derived[(key, tuple(in_slots), tuple(out_slots))] = plan
        J = plan(tape, V)
        return (J, aux) if has_aux else J

    sparse_jacobian_f = gradients._wraps(f, "jacobian")(sparse_jacobian_f)
    sparse_jacobian_f.traced = traced
    return sparse_jacobian_f


def hessian(f, argnums=0, has_aux=False, capture="trace", sparsity=None):
    """The Hessian of scalar `f` (see `gradients.hessian`); with `sparsity` ("auto", or a
    pattern of shape (inputs, inputs)), as a `scipy.sparse.csr_matrix` from one
    forward-over-reverse sweep carrying one direction per color of a star coloring."""
    if sparsity is None:
        return gradients.hessian(f, argnums, has_aux, capture)
    given = _given_pattern(sparsity)
    argnums_t, _ = gradients._normalize_argnums(argnums)
    traced = Traced(f, argnums_t, capture, "hessian")
    key = ("sparse hessian", "auto" if given is None else id(given))

    def sparse_hessian_f(*args, **kwargs):
        tape, V, in_slots, out_slots, aux = _replay(traced, args, kwargs, has_aux)
        if len(out_slots) != 1 or tape.sizes[out_slots[0]] != 1:
            raise TypeError("hessian and hvp require a scalar output")
        plan = tape.derived.get((key, tuple(in_slots), out_slots[0]))
        if plan is None:
            plan = _HessianPlan(tape, in_slots, out_slots[0], given, not traced.refresh)
            tape.derived[(key, tuple(in_slots), out_slots[0])] = plan
        H = plan(tape, V)
        return (H, aux) if has_aux else H

    sparse_hessian_f = gradients._wraps(f, "hessian")(sparse_hessian_f)
    sparse_hessian_f.traced = traced
    return sparse_hessian_f


def _replay(traced, args, kwargs, has_aux):
    """(tape, values after the forward sweep, differentiated input slots, output slots, aux)."""
    leaves, structure = pytree.flatten(arguments(args, kwargs))
    if is_traced_call(leaves):
        raise NotImplementedError(
            f"{traced.name} with sparsity of values that an enclosing computation records: a "
            "sparse matrix cannot be a traced value; use the dense transform inside a "
            "differentiated function")
    traced.check_differentiable(leaves, structure)
    tape, V = traced.replay_flat(leaves, structure)
    wrt, groups = gradients._wrt_groups(traced, tape, leaves, structure)
    in_slots = [s for i in wrt for s in groups[i][1]]
    out_slots, aux = gradients._split_aux(tape, V, has_aux)
    return tape, V, in_slots, list(out_slots), aux


def _given_pattern(sparsity):
    """None for "auto", else the caller's pattern as a boolean CSR matrix."""
    if isinstance(sparsity, str):
        if sparsity != "auto":
            raise ValueError(f"sparsity must be None, 'auto', a scipy sparse matrix or a 2-d "
                             f"boolean array, got {sparsity!r}")
        return None
    if hasattr(sparsity, "tocsr") and getattr(sparsity, "ndim", 2) == 2:
        M = sparsity.tocsr()
    elif isinstance(sparsity, np.ndarray) and sparsity.dtype == bool and sparsity.ndim == 2:
        import scipy.sparse
        M = scipy.sparse.csr_matrix(sparsity)
    else:
        raise TypeError(f"sparsity must be None, 'auto', a scipy sparse matrix or a 2-d boolean "
                        f"array, got {_describe(sparsity)}")
    M = (M != 0).tocsr()
    M.sort_indices()
    return M


def _describe(x):
    if isinstance(x, np.ndarray):
        return f"an array of shape {x.shape} and dtype {x.dtype}"
    return type(x).__name__


def _off_diagonal(pattern):
    import scipy.sparse
    coo = pattern.tocoo()
    keep = coo.row != coo.col
    return scipy.sparse.csr_matrix((coo.data[keep], (coo.row[keep], coo.col[keep])),
                                   shape=pattern.shape)


def _check_shape(pattern, shape, what):
    if pattern.shape != shape:
        raise ValueError(f"sparsity has shape {pattern.shape}, but the {what} has shape {shape} "
                         "(output elements, differentiated input elements)" if what == "Jacobian"
                         else f"sparsity has shape {pattern.shape}, but the {what} has shape "
                         f"{shape} (differentiated input elements, twice)")


class _JacobianPlan:
    """The pattern, coloring and gather positions of one tape's sparse Jacobian."""

    def __init__(self, tape, in_slots, out_slots, mode, given, fixed_constants):
        from . import coloring, sparsity
        m = sum(tape.sizes[s] for s in out_slots)
        n = sum(tape.sizes[s] for s in in_slots)
        if given is None:
            pattern = sparsity.jacobian_pattern(tape, in_slots, out_slots, fixed_constants)
        else:
            _check_shape(given, (m, n), "Jacobian")
            pattern = given
        self.pattern = pattern
        self.mode, self.colors = coloring.jacobian_coloring(pattern, mode)
        self.n_colors = int(self.colors.max(initial=-1)) + 1
        rows = np.repeat(np.arange(m, dtype=np.int64), np.diff(pattern.indptr))
        cols = pattern.indices.astype(np.int64)
        width = tape.V0.size
        in_pos, out_pos = columns(tape, in_slots), columns(tape, out_slots)
        self.seed = np.zeros((self.n_colors, width), tape.V0.dtype)
        if self.mode == "fwd":      # directions on the inputs, read at the outputs
            self.seed[self.colors, in_pos] = 1.0
            self.gather = self.colors[cols] * width + out_pos[rows]
        else:                       # seeds on the outputs, adjoints read at the inputs
            self.seed[self.colors, out_pos] = 1.0
            self.gather = self.colors[rows] * width + in_pos[cols]
        self.shape = (m, n)
        self.local = threading.local()

    def __call__(self, tape, V):
        B = getattr(self.local, "B", None)
        if B is None:           # this thread's sweep buffer, kept: fresh pages cost a fault each
            B = self.local.B = self.seed.copy()
        if self.n_colors:
            if self.mode == "fwd":      # rewrites every slot's tangent but the seeded inputs'
                tape._tangent(V, B)
            else:                       # adds adjoints into the seeds
                B[...] = self.seed
                tape._backward(V, B)
        return _csr(self, B.reshape(-1)[self.gather])


class _HessianPlan:
    """The pattern, star coloring and gather positions of one tape's sparse Hessian."""

    def __init__(self, tape, in_slots, out_slot, given, fixed_constants):
        from . import coloring, sparsity
        n = sum(tape.sizes[s] for s in in_slots)
        if given is None:
            pattern = sparsity.hessian_pattern(tape, in_slots, out_slot, fixed_constants)
        else:
            _check_shape(given, (n, n), "Hessian")
            pattern = (given + given.T).tocsr()
            pattern.sort_indices()
        self.pattern = pattern
        self.colors = coloring.star_coloring(_off_diagonal(pattern))
        self.n_colors = int(self.colors.max(initial=-1)) + 1
        width = tape.V0.size
        in_pos = columns(tape, in_slots)
        self.seed = np.zeros((self.n_colors, width), tape.V0.dtype)
        self.seed[self.colors, in_pos] = 1.0
        color, row = coloring.star_recovery(pattern, self.colors)
        self.gather = color * width + in_pos[row]
        self.out_pos = tape.offsets[out_slot]
        self.shape = (n, n)
        self.local = threading.local()

    def __call__(self, tape, V):
        buffers = getattr(self.local, "buffers", None)
        if buffers is None:     # this thread's sweep buffers, kept (see _JacobianPlan)
            buffers = self.local.buffers = (self.seed.copy(), np.zeros_like(self.seed),
                                            np.zeros(V.size, V.dtype))
        T, TG, G = buffers
        if self.n_colors:
            tape._tangent(V, T)         # rewrites every slot's tangent but the seeded inputs'
            TG.fill(0.0)                # the reverse sweep adds into TG and G
            G.fill(0.0)
            G[self.out_pos] = 1.0
            tape._backward_tangent(V, T, G, TG)
        return _csr(self, TG.reshape(-1)[self.gather])


def _csr(plan, data):
    """The derivative's values `data`, in the order of the plan's pattern (sorted rows), as a
    CSR matrix of its own index arrays (the caller may change them)."""
    from .sparsity import _scipy_csr
    p = plan.pattern
    return _scipy_csr(p.indptr.copy(), p.indices.copy(), True, plan.shape, data)
