"""`vmap`: record once, replay at many points in the column-layout interpreters.

`vmap(fn)(X)` traces `fn` at one point and replays its tape over the batch in tiles: the
values of a tile are a (buffer rows, tile) array whose innermost loop runs over points, and
tiles run in parallel (`prange`). What is computed per point is a schedule of sweeps chosen by
what `fn` is:

    plain function          forward                      -> outputs
    grad / value_and_grad   forward, reverse (one seed)   -> gradient (and value)
    jacrev                  forward, reverse (one seed per output element)
    jacfwd                  forward, tangent (one direction per input element)
    partial(jvp, f)         forward, tangent (the per-point tangents)
    hessian                 forward, tangent, reverse-tangent (forward-over-reverse)

Guards are checked per point: points that take another branch than the traced one are
evaluated on the tape of their own branch (traced for the first of them), so a batch with
mixed branches is still exact. Batches are processed in chunks, so memory stays bounded for
any batch size (outputs aside); inputs are transposed to (inputs, points) chunk by chunk.
"""
import contextlib
import functools
import math
import numbers
import time
import warnings
import weakref

import numpy as np

from . import columns as _columns
from . import fuse as _fuse
from ..core import pytree as _pytree
from ..core import sweep as _sweep
from ..core.interp import interpreters
from .launch import launch
from ..transforms.gradients import jvp as _jvp
from ..transforms.signature import is_dynamic
from ..transforms.traced import Traced



def _l2_bytes(path="/sys/devices/system/cpu/cpu0/cache/index2/size", default=1 << 20):
    """This machine's per-core L2 cache size (Linux sysfs), the budget for a tile's buffers;
    1 MiB where it cannot be read (or reads as something implausible)."""
    try:
        with open(path) as fh:
            text = fh.read().strip()
        scale = {"K": 1 << 10, "M": 1 << 20}.get(text[-1:].upper(), 1)
        size = int(text.rstrip("KkMm")) * scale
        return size if (1 << 18) <= size <= (1 << 26) else default
    except (OSError, ValueError):
        return default


L2_BYTES = _l2_bytes()      # per-core cache budget for a tile's buffers
MAX_TILE, MIN_TILE = 128, 8
CHUNK_BYTES = 64 << 20      # inputs + outputs of one chunk


def _schedule_of(fn):
    """(kind, function traced, argnums, single argnum, has_aux) for a transform or function."""
    spec = getattr(fn, "_transform", None)
    if spec is not None:
        return spec
    if isinstance(fn, functools.partial) and fn.func is _jvp and len(fn.args) == 1 \
            and not fn.keywords:
        return ("jvp", fn.args[0], None, False, False)
    return ("value", fn, None, False, False)


def _threads():
    """numba's thread count (numba is imported here, not by `import tapegrad`: 150 ms)."""
    import numba
    return numba.get_num_threads()


def _tile_for(n_total, n_dir, itemsize):
    """Points per tile: the largest power of two whose buffers fit the cache budget, at most
    MAX_TILE. Measured single-threaded (ns per point, vmap(grad)): Rosenbrock n=10 (74 rows)
    47 at 128, 51 at 256, 54 at 512; MLP 8-16-1 (220 rows) 348 at 64, 334 at 128, 339 at 256;
    Lennard-Jones 16 atoms (2,209 rows) 1,645 at 8, 1,399 at 16, 1,447 at 32, 1,680 at 64;
    after gather_diff (1,537 rows) 971 at 16, 958 at 32, 972 at 64, and on two threads 497-622
    at 16, 479-499 at 32, 483-500 at 64 (the 2 MiB L2 here gives 32)."""
    per_point = n_total * itemsize * (3 + 2 * n_dir)
    tile = 1 << max(0, int(math.log2(max(1, L2_BYTES // max(per_point, 1)))))
    return int(min(MAX_TILE, max(MIN_TILE, tile)))


def _positions(tape, slots):
    if not slots:
        return np.zeros(0, np.int64)
    return np.concatenate([np.arange(tape.offsets[s], tape.offsets[s] + tape.sizes[s])
                           for s in slots]).astype(np.int64)


def _is_axis(axis):
    """An int, numpy's too, not a bool (a plain int answers first: this runs at every call)."""
    return type(axis) is int or (isinstance(axis, numbers.Integral) and not isinstance(axis, bool))


def check_in_axes(in_axes):
    """Refuse an `in_axes` that is not an int, None, or a tuple/list (one entry per positional
    argument) whose entries are ints, None, or tuples/lists/dicts of them (a tree prefix of the
    argument, as in JAX): checked when vmap is called, before any argument is seen."""
    if in_axes is None or _is_axis(in_axes):
        return
    if not isinstance(in_axes, (tuple, list)):
        raise TypeError(f"vmap in_axes must be an int, None, or a tuple with one entry per "
                        f"positional argument, got {in_axes!r} ({type(in_axes).__name__})")
    for path, leaf in _axes_leaves(in_axes, "in_axes"):
        if leaf is not None and not _is_axis(leaf):
            raise TypeError(f"vmap in_axes must be an int, None, or a (nested) tuple/list/dict "
                            f"of them, got {in_axes!r}: {path} is {leaf!r} "
                            f"({type(leaf).__name__})")


def _axes_leaves(tree, path):
    """(path, leaf) of every leaf of an axes tree, with its path as written (in_axes[1]['w'])."""
    if isinstance(tree, (tuple, list)):
        for i, child in enumerate(tree):
            yield from _axes_leaves(child, f"{path}[{i}]")
    elif isinstance(tree, dict):
        for key, child in tree.items():
            yield from _axes_leaves(child, f"{path}[{key!r}]")
    else:
        yield path, tree


def leaf_axes(args, in_axes):
    """The batch axis (or None) of every leaf of `args` (flattened in `_pytree` order): an int
    or None applies to every leaf; a tuple has one entry per argument, each an int, None, or a
    tree of them that is a prefix of the argument's tree."""
    if in_axes is None or _is_axis(in_axes):
        return [in_axes] * len(_pytree.flatten(tuple(args))[0])
    if len(in_axes) != len(args):
        raise ValueError(f"vmap in_axes has {len(in_axes)} entries for {len(args)} positional "
                         f"argument{'' if len(args) == 1 else 's'}: give one per argument "
                         "(None for an argument that is not mapped)")
    axes = []
    for i, (arg, axis) in enumerate(zip(args, in_axes)):
        axes += _prefix_axes(axis, arg, f"in_axes[{i}]")
    return axes


def _prefix_axes(axes, tree, path):
    """`axes` (an axis, None, or a container matching `tree`'s) for every leaf of `tree`."""
    if axes is None or _is_axis(axes):
        return [axes] * len(_pytree.flatten(tree)[0])
    if isinstance(axes, dict) and isinstance(tree, dict) and set(axes) == set(tree):
        return [a for k in sorted(tree) for a in _prefix_axes(axes[k], tree[k], f"{path}[{k!r}]")]
    if isinstance(axes, (tuple, list)) and isinstance(tree, (tuple, list)) and \
            len(axes) == len(tree):
        return [a for i, (sub, child) in enumerate(zip(axes, tree))
                for a in _prefix_axes(sub, child, f"{path}[{i}]")]
    raise ValueError(f"vmap {path} is {axes!r}, which does not match the structure of its "
                     f"argument, {_pytree.describe(_pytree.flatten(tree)[1])}: give an int or "
                     "None for the whole argument, or a tree of them with its structure")


def _shape(leaf):
    """The shape of an argument leaf (an array of any kind, a Tensor, a number)."""
    shape = getattr(leaf, "shape", None)
    return tuple(np.shape(leaf) if shape is None else shape)


def _point_shape(leaf, axis):
    """The shape of one point of an argument leaf: its shape without the batch axis."""
    shape = _shape(leaf)
    return shape if axis is None else shape[:axis % len(shape)] + shape[axis % len(shape) + 1:]


def _check_axis(leaf, axis):
    """Refuse a batch axis that the mapped leaf does not have."""
    shape = _shape(leaf)
    if not shape:
        raise ValueError(f"vmap: in_axes={axis} for a scalar argument (nothing to map)")
    if not -len(shape) <= axis < len(shape):
        raise ValueError(f"vmap: in_axes={axis} for an argument of shape {shape} ({len(shape)} "
                         f"ax{'is' if len(shape) == 1 else 'es'}: in_axes must be in "
                         f"[{-len(shape)}, {len(shape) - 1}] or None)")


def check_tangents(leaves, axes, n_primal):
    """For vmap(partial(jvp, f)): each tangent leaf has its primal's shape at every point (the
    batched replay reads as many tangent values per point as the primal has)."""
    for k in range(n_primal):
        primal = _point_shape(leaves[k], axes[k])
        tangent = _point_shape(leaves[n_primal + k], axes[n_primal + k])
        if primal != tangent:
            raise ValueError(f"vmap(partial(jvp, f)): tangent of shape {tangent} for a primal of "
                             f"shape {primal} at each point (primal leaf {k}; shapes without "
                             "the batch axis)")


class _Batch:
    """The batched arguments of one call, split into leaves with the batch axis first."""

    def __init__(self, args, in_axes):
        self.leaves, self.structure = _pytree.flatten(tuple(args))
        self.axis_of_leaf = [in_axes] * len(self.leaves) if in_axes is None or \
            _is_axis(in_axes) else leaf_axes(args, in_axes)
        sizes = set()
        self.batched = []
        for k, (leaf, axis) in enumerate(zip(self.leaves, self.axis_of_leaf)):
            if axis is None:
                continue
            leaf = np.asarray(getattr(leaf, "data", leaf))
            if not -leaf.ndim <= axis < leaf.ndim:
                _check_axis(leaf, axis)          # raises, saying what is wrong
            leaf = np.moveaxis(leaf, axis, 0)
            if not is_dynamic(leaf):
                raise TypeError(f"vmap maps over floating-point arrays; got {leaf.dtype}")
            self.leaves[k] = leaf
            self.batched.append(k)
            sizes.add(leaf.shape[0])
        if not sizes:
            raise ValueError("vmap needs at least one argument with a batch axis (in_axes)")
        if len(sizes) > 1:
            raise ValueError(f"vmap got inconsistent batch sizes {sorted(sizes)}")
        self.size = sizes.pop()

    def point(self, q):
        """The arguments at point q; for an empty batch, zeros of a point's shapes (what the
        tape is traced at then: only the shapes of the results are read)."""
        leaves = list(self.leaves)
        for k in self.batched:
            leaves[k] = leaves[k][q] if self.size else np.zeros(leaves[k].shape[1:],
                                                                  leaves[k].dtype)
        return _pytree.unflatten(self.structure, leaves)

    def rows(self, leaves, index, dtype):
        """The batched input leaves `leaves` at the points `index` (a slice or an index array)
        as one (points, inputs) array; a view of the caller's array where it can be (the tile
        driver transposes each tile into the column layout itself)."""
        blocks = [self.leaves[k][index] for k in leaves]
        blocks = [b.reshape(b.shape[0], -1) for b in blocks]
        if not blocks:
            return None
        block = blocks[0] if len(blocks) == 1 else np.concatenate(blocks, axis=1)
        return np.ascontiguousarray(block, dtype=dtype)


def vmap(fn, in_axes=0, out_axes=0, *, chunk_size=None, progress=False, device="cpu",
         fuse="auto"):
    """Vectorize `fn` (a function or a transform of one) over a batch axis of its arguments.

    `in_axes`: an int, or one entry per positional argument: an int, None (not mapped), or a
    tree of them that is a prefix of the argument's tree (as in JAX: `({"x": 0, "w": None},)`).
    Outputs carry the batch axis first (`out_axes=0`). `chunk_size` (a positive int) bounds the
    points processed at once (default: from the memory the chunk's inputs and outputs take);
    `progress=True` shows a progress bar (tqdm) over chunks. Every option is checked here, and
    the arguments' shapes at each call (a jvp's tangents must have its primals' shapes at each
    point), before anything reaches compiled code. Points of size 0 and empty batches give empty
    results of the per-point shapes, as in JAX. `device`: "cpu"; "cuda" and "auto" select the GPU
    backend where it exists.

    `fuse` (CPU): whether the tape of a value, grad, value_and_grad, jacrev or jacfwd is
    compiled into one loop body per point (`_fuse`), several times faster than the interpreter
    on small tapes but compiled per tape (about 0.5 s for a hundred statements, seconds for
    thousands; kept in the on-disk code cache). "auto" interprets a tape until the interpreter
    has spent the compile time an estimate gives on it (or its compiled kernel is already
    cached), then switches; True compiles at the first call; False never does.
    """
    check_in_axes(in_axes)
    _check_out_axes(out_axes)
    chunk_size = _checked_chunk_size(chunk_size)
    if not isinstance(progress, (bool, np.bool_)):
        raise TypeError(f"vmap progress must be True or False, got {progress!r}")
    if not (isinstance(fuse, (bool, np.bool_)) or (isinstance(fuse, str) and fuse == "auto")):
        raise ValueError(f"vmap fuse must be 'auto', True or False, got {fuse!r}")
    fuse = fuse if isinstance(fuse, str) else bool(fuse)
    backend = _backend(device)
    kind, f, argnums, single, has_aux = _schedule_of(fn)
    if has_aux:
        raise NotImplementedError("vmap of a transform with has_aux=True")
    # a transform made with capture="call" re-reads closed-over arrays at every call: so do we
    capture = "call" if getattr(getattr(fn, "traced", None), "refresh", False) else "trace"
    traced = Traced(f, argnums if kind != "jvp" else None, capture)

    @functools.wraps(fn)
    def batched(*args, **kwargs):
        if kwargs:
            raise TypeError(f"a vmapped function takes positional arguments only (got "
                            f"{', '.join(map(repr, kwargs))}): pass them positionally, with "
                            "in_axes None for unmapped ones, or bind them with functools.partial")
        if _has_dask_leaf(args):     # a lazy dask result, replayed on the workers (_dask)
            from . import dask as _dask
            return _dask.vmap_dask(traced, kind, argnums, single, args, in_axes, fn, chunk_size,
                                   backend)
        make_batch = _Batch
        if backend == "cuda":
            from .cuda import Batch as make_batch     # device arrays stay on the device
        if kind == "jvp":
            primals, tangents = _jvp_arguments(args)
            batch = make_batch((primals, tangents), in_axes)
            n_primal = len(_pytree.flatten(primals)[0])
            check_tangents(batch.leaves, [0 if k in batch.batched else None
                                          for k in range(len(batch.leaves))], n_primal)
            _broadcast_tangents(batch, n_primal)
        else:
            batch = make_batch(args, in_axes)
        return _run(traced, kind, argnums, single, batch, fn, chunk_size, progress, backend,
                    fuse)

    batched.vmapped = fn
    batched._traced = traced        # its tapes (introspection, tests)
    return batched


def _check_out_axes(out_axes):
    if out_axes is not None and not _is_axis(out_axes):
        raise TypeError(f"vmap out_axes must be an int, got {out_axes!r} "
                        f"({type(out_axes).__name__})")
    if out_axes != 0:
        raise NotImplementedError(f"vmap supports out_axes=0 (the batch axis first), got "
                                  f"out_axes={out_axes!r}; move the axis afterwards "
                                  "(np.moveaxis)")


def _checked_chunk_size(chunk_size):
    """chunk_size as an int, or None: a positive number of points."""
    if chunk_size is None:
        return None
    if not _is_axis(chunk_size):
        raise TypeError(f"vmap chunk_size must be a positive int or None, got {chunk_size!r} "
                        f"({type(chunk_size).__name__})")
    if chunk_size <= 0:
        raise ValueError(f"vmap chunk_size must be a positive int or None (the points "
                         f"processed at once), got {chunk_size}")
    return int(chunk_size)


def _jvp_arguments(args):
    """(primals, tangents) of a call of vmap(partial(jvp, f)), as tuples of one structure."""
    if len(args) != 2:
        raise TypeError("vmap(partial(jvp, f)) takes (primals, tangents)")
    primals, tangents = tuple(args[0]), tuple(args[1])
    if _pytree.flatten(primals)[1] != _pytree.flatten(tangents)[1]:
        raise ValueError("vmap(partial(jvp, f)): primals and tangents must have the same "
                         "structure")
    return primals, tangents


def _broadcast_tangents(batch, n_primal):
    """Tangents shared by every point (in_axes None) as batched leaves of stride 0: the tile
    driver reads a jvp's tangents from the batched leaves only (the others would be ignored)."""
    for k in range(n_primal, len(batch.leaves)):
        if k not in batch.batched:
            leaf = np.asarray(getattr(batch.leaves[k], "data", batch.leaves[k]))
            batch.leaves[k] = np.broadcast_to(leaf, (batch.size,) + leaf.shape)
            batch.batched.append(k)
    batch.batched.sort()


def _has_dask_leaf(args):
    """Whether an argument leaf is a dask array (dask is imported only if a leaf's type is
    from a dask module)."""
    for leaf in _pytree.flatten(tuple(args))[0]:
        if type(leaf).__module__.startswith("dask"):
            from .dask import is_dask_array
            if is_dask_array(leaf):
                return True
    return False


def _backend(device):
    if device == "cpu":
        return "cpu"
    if device in ("cuda", "auto"):
        from . import cuda as _cuda  # imported lazily: numba.cuda is only loaded for a CUDA path
        if _cuda.available():
            return "cuda"
        if device == "cuda":
            raise RuntimeError(f"device='cuda': {_cuda.why_unavailable()}")
        return "cpu"
    raise ValueError(f"device must be 'cpu', 'cuda' or 'auto', got {device!r}")


def _point_args(kind, batch, q):
    point = batch.point(q)
    return point[0] if kind == "jvp" else point


_PLANS = weakref.WeakKeyDictionary()    # tape -> {call shape: plan}: a tape never changes


def _plan_for(tape, traced, kind, batch, argnums):
    """`_plan`, cached per tape and per shape of the call (which arguments are batched, and
    their tree): a replay's Python work is then a few lookups (~25 µs less per call)."""
    key = (kind, argnums, batch.structure, tuple(batch.batched))
    plans = _PLANS.get(tape)
    if plans is None:
        plans = _PLANS[tape] = {}
    plan = plans.get(key)
    if plan is None:
        plan = plans[key] = _plan(tape, traced, kind, batch, argnums)
    return plan


def _plan(tape, traced, kind, batch, argnums):
    """Positions the tile driver reads and writes, for this tape (cached by `_plan_for`: its
    entries are never changed; `_positions_in` adds their translation to the layout)."""
    leaves, structure = batch.leaves, batch.structure
    if kind == "jvp":
        primal_leaves = _pytree.flatten(batch.point(0)[0])[0]
        n_primal = len(primal_leaves)
        batched_primals = [k for k in batch.batched if k < n_primal]
        batched_tangents = [k for k in batch.batched if k >= n_primal]
        dyn_index = {k: j for j, k in enumerate(k for k in range(n_primal)
                                                 if is_dynamic(primal_leaves[k]))}
        in_slots = [tape.input_slots[dyn_index[k]] for k in batched_primals]
        tangent_slots = [tape.input_slots[dyn_index[k - n_primal]] for k in batched_tangents]
        wrt_slots = []
        rows = (batched_primals, batched_tangents)
    else:
        dyn = [k for k, leaf in enumerate(leaves) if is_dynamic(leaf)]   # (a dtype test)
        dyn_index = {k: j for j, k in enumerate(dyn)}
        in_slots = [tape.input_slots[dyn_index[k]] for k in batch.batched]
        tangent_slots = []
        if argnums is not None:
            groups = traced.input_groups(tape, _pytree.flatten(batch.point(0))[0], structure)
            wrt_slots = [s for i in argnums for s in groups[i % len(groups)][1]]
        else:
            wrt_slots = []
        rows = (batch.batched, [])
    out_slots = tape.output_slots
    scalar_out = len(out_slots) == 1 and tape.sizes[out_slots[0]] == 1
    if kind in ("grad", "value_and_grad", "hessian") and not scalar_out:
        raise TypeError("grad requires a scalar output; use jacobian or vjp")
    none = np.zeros(0, np.int64)
    plan = dict(in_pos=_positions(tape, in_slots), seeds=none, dir_pos=none,
                tin_pos=_positions(tape, tangent_slots), second=False, read_v=none,
                read_g=none, read_t=none, read_tg=none, rows=rows)
    out_pos, wrt_pos = _positions(tape, out_slots), _positions(tape, wrt_slots)
    if kind in ("value", "value_and_grad", "jvp"):
        plan["read_v"] = out_pos
    if kind in ("grad", "value_and_grad", "jacrev"):
        plan["seeds"], plan["read_g"] = out_pos, wrt_pos
    if kind == "jacfwd":
        plan["dir_pos"], plan["read_t"] = wrt_pos, out_pos
    if kind == "jvp":
        plan["read_t"] = out_pos
    if kind == "hessian":
        plan.update(dir_pos=wrt_pos, seeds=out_pos, second=True, read_tg=wrt_pos)
    return plan


def _run(traced, kind, argnums, single, batch, fn, chunk_size, progress, backend, fuse=False):
    with np.errstate(all="ignore") if not batch.size else contextlib.nullcontext():
        tape, V, _, _ = traced.replay(_point_args(kind, batch, 0), {})
    if tape.calls:     # nested transforms run in Python: no batched replay, loop instead
        return _loop(fn, kind, batch)
    plan = _plan_for(tape, traced, kind, batch, argnums)
    n_dir = 1 if kind == "jvp" else len(plan["dir_pos"])
    n_rows = (len(plan["read_v"]) + len(plan["seeds"]) * len(plan["read_g"]) * (not plan["second"])
              + len(plan["read_g"]) * plan["second"] + n_dir * len(plan["read_t"])
              + n_dir * len(plan["read_tg"]) * plan["second"])
    n_in = len(plan["in_pos"]) + len(plan["tin_pos"])
    B = batch.size
    arrange = _arrange
    if backend == "cuda":      # results on the host or the device; chunks from device memory
        from . import cuda as _cuda
        Y, chunk_size, arrange = _cuda.prepare(tape, V, plan, batch, n_rows, n_in, chunk_size,
                                               kind)
    else:
        if chunk_size is None:
            chunk_size = max(1024, CHUNK_BYTES // (8 * max(1, n_rows + n_in)))
        Y = np.empty((B, n_rows), tape.dtype)
    chunks = range(0, B, chunk_size)
    if progress:
        try:
            from tqdm.auto import tqdm
            chunks = tqdm(chunks, total=math.ceil(B / chunk_size), unit="chunk")
        except ImportError:
            pass
    for start in chunks:
        stop = min(B, start + chunk_size)
        _evaluate(traced, kind, tape, V, plan, batch, slice(start, stop), Y, backend, fn,
                  fuse)
    return arrange(Y, tape, kind, plan, traced, batch, argnums, single)


def _evaluate(traced, kind, tape, V, plan, batch, index, Y, backend, fn, fuse=False):
    """Fill Y[:, index]: replay on `tape`, then the points whose guards fail on their own tape.

    The first failing point selects (or traces) the tape of its branch, which then runs on all
    the failing points; a point that fails even on the tape traced at it (a comparison that
    rounds differently in numpy and in the interpreter) is evaluated alone by `fn`.
    """
    replay = functools.partial(_replay_columns, fuse=False if traced.refresh else fuse)
    if backend == "cuda":
        from .cuda import replay_columns as replay
    ok = replay(tape, V, plan, batch, index, Y, kind)
    if ok.all():                          # the common case: no index arrays to build
        return
    remaining = np.flatnonzero(~ok) + index.start
    while remaining.size:
        # the tape of the first failing point's branch runs on every failing point at once
        # (they already failed on the previous tape: no second replay there)
        first = remaining[0]
        tape, V, _, _ = traced.replay(_point_args(kind, batch, first), {})
        plan = _plan_for(tape, traced, kind, batch, traced.argnums if kind != "jvp" else None)
        ok = replay(tape, V, plan, batch, remaining, Y, kind)
        if not ok[0]:
            Y[first] = _flat_result(fn(*batch.point(first)), Y.shape[1], kind, tape)
            ok[0] = True
        remaining = remaining[~ok]


def _replay_columns(tape, V, plan, batch, index, Y, kind, fuse=False):
    """Run the tile driver (or the tape's fused kernel, see `_fused`) on the points `index` (a
    slice or an index array); write Y where guards hold and return where they do."""
    _sweep.check(tape)        # the validation boundary: the driver does not bounds-check
    n = index.stop - index.start if isinstance(index, slice) else index.size
    fused = _fused(tape, V, plan, kind, fuse) if fuse and n else None
    X = batch.rows(plan["rows"][0], index, tape.dtype)
    if fused is not None:
        ok = np.empty(n, np.bool_)
        out = Y[index] if isinstance(index, slice) else np.empty((n, Y.shape[1]), tape.dtype)
        fused(X, out, ok)
        if not isinstance(index, slice):
            Y[index[ok]] = out[ok]
        return ok
    started = time.perf_counter()
    XT = batch.rows(plan["rows"][1], index, tape.dtype)
    X = np.zeros((n, 0), tape.dtype) if X is None else X
    XT = np.zeros((n, 0), tape.dtype) if XT is None else XT
    check_rows(X.shape[1], XT.shape[1], plan)
    ok = np.empty(n, np.bool_)
    out = Y[index] if isinstance(index, slice) else np.empty((n, Y.shape[1]), tape.dtype)
    cols = _columns.layout(tape)        # copies as views: fewer entries and rows
    pos = _positions_in(cols, tape, plan)
    n_dir = 1 if kind == "jvp" else len(plan["dir_pos"])
    V = cols.values(V)
    tile = _tile_for(V.size, n_dir, V.itemsize)
    launch(interpreters(batched=True).run_tiles,
        cols.E, cols.FC, cols.IP, cols.S, cols.NEED, V, pos["in_pos"], X, pos["guard_pos"],
        pos["guard_val"], ok, pos["seeds"], pos["dir_pos"], pos["tin_pos"], XT,
        plan["second"], pos["read_v"], pos["read_g"], pos["read_t"], pos["read_tg"], out, tile,
        max(1, min(_threads(), -(-n // tile))),
        cols.need_spans if plan["second"] else cols.leaf_spans)
    if not isinstance(index, slice):
        Y[index[ok]] = out[ok]
    plan["interpreted_s"] = plan.get("interpreted_s", 0.0) + time.perf_counter() - started
    return ok


def check_rows(n_in, n_tangent, plan):
    """The drivers read X[q, r] for every input position r of the plan and XT[q, r] for every
    tangent position, unchecked: a chunk's (points, values) arrays must have exactly those
    columns, `n_in` and `n_tangent` (two comparisons; `_Batch` and `check_tangents` say what was
    wrong in the caller's terms first)."""
    if n_in != len(plan["in_pos"]) or n_tangent != len(plan["tin_pos"]):
        raise ValueError(f"vmap: the batched arguments give {n_in} input and {n_tangent} tangent "
                         f"values per point; the traced function takes {len(plan['in_pos'])} "
                         f"and {len(plan['tin_pos'])}")


def _fused(tape, V, plan, kind, fuse):
    """The fused kernel of this plan, when it has one or it is time to build it; else None.

    With fuse="auto" a plan is compiled once the interpreter has spent on it as long as the
    compile is estimated to take (the break-even rule of a rent-or-buy choice: never more than
    twice the cost of the better choice made in hindsight), or at once when the compiled
    kernel is already in the code cache. The kernel's source is generated at the first call
    (milliseconds); None means the tape cannot be fused."""
    state = plan.get("fused")
    try:
        if state is None:
            state = plan["fused"] = _fuse.Candidate.of(tape, V, plan, kind)
        if isinstance(state, _fuse.Candidate) and (
                fuse != "auto" or state.cached()
                or plan.get("interpreted_s", 0.0) >= state.compile_estimate_s()):
            state = plan["fused"] = state.build()
    except Exception as err:      # a defect of the fused tier must not cost a working replay
        warnings.warn(f"tapegrad: the fused tier failed on this tape ({type(err).__name__}: "
                      f"{err}); it stays with the interpreter", RuntimeWarning, stacklevel=2)
        state = plan["fused"] = False
    return state if isinstance(state, _fuse.Fused) else None


_POSITION_KEYS = ("in_pos", "seeds", "dir_pos", "tin_pos", "read_v", "read_g", "read_t",
                  "read_tg")


def _positions_in(cols, tape, plan):
    """The plan's positions (and the guards') as rows of the layout `cols`, kept in the plan
    for the next replay with the same layout."""
    cached = plan.get("columns")
    if cached is not None and cached[0] is cols:
        return cached[1]
    pos = {k: cols.positions(plan[k]) for k in _POSITION_KEYS}
    pos["guard_pos"] = cols.positions(np.array([tape.offsets[s] for s, _ in tape.guards],
                                               np.int64))
    pos["guard_val"] = np.array([o for _, o in tape.guards], np.bool_)
    plan["columns"] = (cols, pos)
    return pos


def _flat_result(result, n_rows, kind, tape):
    """A per-point result as one row of Y, in the order the tile driver writes: jacobians as
    one (outputs, inputs) matrix, jacfwd's transposed (its rows run over input directions
    first), everything else as flattened."""
    leaves = [np.ravel(getattr(x, "data", x)) for x in _pytree.flatten(result)[0]]
    if kind in ("jacfwd", "jacrev"):
        m = sum(tape.sizes[s] for s in tape.output_slots)
        n_blocks = len(leaves) // len(tape.output_slots)
        rows = []
        for o, so in enumerate(tape.output_slots):
            blocks = leaves[o * n_blocks:(o + 1) * n_blocks]
            rows.append(np.concatenate([b.reshape(tape.sizes[so], -1) for b in blocks], axis=1))
        J = np.concatenate(rows, axis=0).reshape(m, -1)
        leaves = [J.T if kind == "jacfwd" else J]
    flat = np.concatenate([leaf.ravel() for leaf in leaves])
    if flat.size != n_rows:
        raise RuntimeError("vmap: a branch changed the output's size")
    return flat


def _arrange(Y, tape, kind, plan, traced, batch, argnums, single):
    """Split the rows of Y into the outputs of the transform, batch axis first."""
    B = Y.shape[0]
    row = [0]          # the next row of Y to take

    def take(slots):
        """A (B,) + shape array of the next rows for each slot (a view when it is all of Y)."""
        out = []
        for s in slots:
            first, size = row[0], tape.sizes[s]
            row[0] += size
            block = Y[:, first:first + size]
            out.append((block if block.shape[1] == Y.shape[1] else block.copy())
                       .reshape((B,) + tape.shapes[s]))
        return out

    reads_values = kind in ("value", "value_and_grad", "jvp")
    values = take(tape.output_slots) if reads_values else None
    if kind in ("value",):
        return _pytree.unflatten(tape.out_structure, values)
    groups = None
    if argnums is not None:
        point_leaves = _pytree.flatten(batch.point(0))[0]
        groups = traced.input_groups(tape, point_leaves, batch.structure)

    def per_argument(arrays):
        it = iter(arrays)
        out = [_pytree.unflatten(groups[i % len(groups)][0],
                                 [next(it) for _ in groups[i % len(groups)][1]])
               for i in argnums]
        return out[0] if single else tuple(out)

    wrt_slots = [s for i in (argnums or ()) for s in groups[i % len(groups)][1]] if groups else []
    if kind in ("grad", "value_and_grad"):
        grads = per_argument(take(wrt_slots))
        if kind == "grad":
            return grads
        return _pytree.unflatten(tape.out_structure, values), grads
    if kind == "jvp":
        tangents = take(tape.output_slots)
        return (_pytree.unflatten(tape.out_structure, values),
                _pytree.unflatten(tape.out_structure, tangents))
    if kind in ("jacrev", "jacfwd"):      # rows: (seed, input) for jacrev, (input, output)
        first = len(plan["read_v"])       # for jacfwd; views of Y, no per-column copies
        if kind == "jacrev":
            m, n = len(plan["seeds"]), len(plan["read_g"])
            J = Y[:, first:first + m * n].reshape(B, m, n)
        else:
            n, m = len(plan["dir_pos"]), len(plan["read_t"])
            J = Y[:, first:first + m * n].reshape(B, n, m).transpose(0, 2, 1)
        return _jac_blocks(J, tape, wrt_slots, per_argument)
    if kind == "hessian":      # rows: (direction, gradient element), after the gradient
        n = len(plan["dir_pos"])
        first = len(plan["read_v"]) + len(plan["read_g"])
        H = Y[:, first:first + n * n].reshape(B, n, n)
        blocks, r = [], 0        # arranged as the unbatched hessian: arguments of arguments
        for si in wrt_slots:
            row_blocks, c = [], 0
            for sj in wrt_slots:
                block = H[:, r:r + tape.sizes[si], c:c + tape.sizes[sj]].copy()
                row_blocks.append(block.reshape((B,) + tape.shapes[si] + tape.shapes[sj]))
                c += tape.sizes[sj]
            blocks.append(per_argument(row_blocks))
            r += tape.sizes[si]
        return per_argument(blocks)
    raise AssertionError(kind)


def _jac_blocks(J, tape, wrt_slots, per_argument):
    """J is (B, outputs, inputs): one array (B,) + out_shape + in_shape per block (a copy
    unless it is all of J, so that a small block does not keep the whole buffer alive)."""
    B = J.shape[0]
    per_output, r = [], 0
    for so in tape.output_slots:
        osize, c, arrays = tape.sizes[so], 0, []
        for s in wrt_slots:
            block = J[:, r:r + osize, c:c + tape.sizes[s]]
            block = block if block.shape == J.shape else block.copy()
            arrays.append(block.reshape((B,) + tape.shapes[so] + tape.shapes[s]))
            c += tape.sizes[s]
        per_output.append(per_argument(arrays))
        r += osize
    return _pytree.unflatten(tape.out_structure, per_output)


def _loop(fn, kind, batch):
    """The batch as a Python loop of the unbatched function (nested transforms); an empty
    batch evaluates `fn` once, at zeros, for the shapes of the (empty) results."""
    results = [fn(*batch.point(q)) for q in range(batch.size)]
    if not results:
        with np.errstate(all="ignore"):
            leaves0, structure = _pytree.flatten(fn(*batch.point(0)))
        empty = [np.zeros((0,) + np.shape(leaf), np.asarray(leaf).dtype) for leaf in leaves0]
        return _pytree.unflatten(structure, empty)
    leaves0, structure = _pytree.flatten(results[0])
    stacked = [np.stack([np.asarray(_pytree.flatten(r)[0][j]) for r in results])
               for j in range(len(leaves0))]
    return _pytree.unflatten(structure, stacked)
