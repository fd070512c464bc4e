"""`vmap`: record once, replay at many points.

`vmap(fn)(X)` traces `fn` at one point and replays its tape at every point of the batch. What
is computed per point is the schedule of sweeps of what `fn` is (its `.transform`, see
`transforms.spec`):

    plain function          forward                      -> outputs
    grad / value_and_grad   forward, reverse (one seed)   -> gradient (and value)
    jacrev                  forward, reverse (one seed per output element)
    jacfwd                  forward, tangent (one direction per input element)
    partial(jvp, f)         forward, tangent (the per-point tangents)
    hessian                 forward, tangent, reverse-tangent (forward-over-reverse)

This module is the front: it checks the options and arguments, picks a backend (`cpu.CPU`,
`cuda.CUDA`), and runs the batch chunk by chunk through the backend seam (`Backend`: `batch`,
`prepare`, `replay`, `arrange`; docs/design.md, "Batched replay"), resolving guards: points
that take another branch than the traced one are evaluated on the tape of their own branch
(traced for the first of them), so a batch with mixed branches is still exact. Chunks keep
memory bounded for any batch size (outputs aside). Arguments that are dask arrays give a lazy
result: the front traces on the client, and `dask` builds a graph whose blocks the CPU backend
replays on the workers.
"""
import contextlib
import functools
import math
import typing

import numpy as np

from . import cuda
from . import dask
from .cpu import CPU
from .plan import plan_for
from .points import Batch, check_in_axes, check_tangents, is_axis, jvp_arguments
from ..core import pytree
from ..core.primitive import NoGPURule
from ..transforms.gradients import jvp
from ..transforms.spec import Schedule, Transform
from ..transforms.traced import Traced


class Backend(typing.Protocol):
    """What the front needs of a backend: the seam that `cpu.CPU` and `cuda.CUDA` implement."""
    name: str

    def batch(self, args, in_axes):
        """The call's arguments as a `points.Batch` (the backend decides where inputs live)."""

    def prepare(self, tape, V, plan, batch, chunk_size):
        """(the call's output, taking `output[q] = row` for a point evaluated by the function
        itself; the points per chunk, `chunk_size` or the backend's choice when None)."""

    def replay(self, tape, V, plan, batch, index, output):
        """Replay `tape` (values V after its forward sweep at the traced point) by `plan` at
        the points `index` (a slice or an index array); write the output where the guards hold
        and return where they do (a bool array on the host)."""

    def arrange(self, output, plan):
        """The transform's outputs, batch axis first (`plan.results` says where they lie)."""


def transform_of(fn):
    """The `Transform` that `fn` is: its own (`grad(f)`...), a jvp of `functools.partial(jvp,
    f)`, or the plain values of any other function."""
    spec = getattr(fn, "transform", None)
    if isinstance(spec, Transform):
        return spec
    if isinstance(fn, functools.partial) and fn.func is jvp and len(fn.args) == 1 \
            and not fn.keywords:
        return Transform(Schedule.JVP, fn.args[0])
    return Transform(Schedule.VALUE, fn)


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
    results of the per-point shapes, as in JAX. `device`: "cpu"; "cuda" (the GPU, or an error
    saying why not); "auto" (the GPU where there is one and it runs the tape: a tape with a
    primitive the GPU does not run, such as np.linalg's, replays on the CPU).

    `fuse` (CPU): whether the tape of a value, grad, value_and_grad, jacrev or jacfwd is
    compiled into one loop body per point (`fuse`), several times faster than the interpreter
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
    transform = transform_of(fn)
    if transform.has_aux:
        raise NotImplementedError("vmap of a transform with has_aux=True")
    schedule = transform.schedule
    # a transform made with capture="call" re-reads closed-over arrays at every call: so do we
    # (and a fused body, which holds them as literals, would go stale)
    traced = Traced(transform.fn, transform.argnums if schedule.differentiates else None,
                    transform.capture)
    backend = _backend(device, fuse if transform.capture == "trace" else False)
    # a vmapped function is called at each point (itself a batch): tracing it would not see
    # the replay it runs, which reads its arguments' values
    nested = getattr(fn, "vmapped", None) is not None

    @functools.wraps(fn)
    def batched(*args, **kwargs):
        if kwargs:
            raise TypeError(f"a vmapped function takes positional arguments only (got "
                            f"{', '.join(map(repr, kwargs))}): pass them positionally, with "
                            "in_axes None for unmapped ones, or bind them with functools.partial")
        if nested:
            return _loop(fn, backend.batch(args, in_axes))
        if dask.has_dask_leaf(args):     # a lazy result, replayed on the workers
            return _lazy(traced, transform, args, in_axes, fn, chunk_size, backend)
        try:
            return call(backend, args)
        except NoGPURule:
            # "auto" means the GPU where it can run the tape: a primitive without GPU rules
            # (linalg) sends host arguments to the CPU; device arrays stay an error
            if device != "auto" or backend.name != "cuda" or \
                    any(map(cuda.is_device_array, pytree.flatten(tuple(args))[0])):
                raise
            return call(CPU(fuse if transform.capture == "trace" else False), args)

    def call(backend, args):
        if schedule.given_tangents:
            primals, tangents = jvp_arguments(args)
            batch = backend.batch((primals, tangents), in_axes)
            n_primal = len(pytree.flatten(primals)[0])
            check_tangents(batch.leaves, [0 if k in batch.batched else None
                                          for k in range(len(batch.leaves))], n_primal)
            batch.broadcast_tangents(n_primal)
        else:
            batch = backend.batch(args, in_axes)
        return run(traced, transform, batch, fn, backend, chunk_size, progress)

    batched.vmapped = fn
    batched.transform = None        # not `fn`'s, which functools.wraps copied: not a transform
    batched._traced = traced        # its tapes (introspection, tests)
    return batched


def _check_out_axes(out_axes):
    if out_axes is not None and not is_axis(out_axes):
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
    if not is_axis(chunk_size):
        raise TypeError(f"vmap chunk_size must be a positive int or None, got {chunk_size!r} "
                        f"({type(chunk_size).__name__})")
    if chunk_size <= 0:
        raise ValueError(f"vmap chunk_size must be a positive int or None (the points "
                         f"processed at once), got {chunk_size}")
    return int(chunk_size)


def _backend(device, fuse):
    """The backend of `device`: "cpu", "cuda" (the GPU, or an error saying why not), "auto"
    (the GPU where there is one)."""
    if device == "cpu":
        return CPU(fuse)
    if device in ("cuda", "auto"):
        if cuda.available():
            return cuda.CUDA()
        if device == "cuda":
            raise RuntimeError(f"device='cuda': {cuda.why_unavailable()}")
        return CPU(fuse)
    raise ValueError(f"device must be 'cpu', 'cuda' or 'auto', got {device!r}")


def run(traced, transform, batch, fn, backend, chunk_size=None, progress=False):
    """The transform at every point of `batch` on `backend`, chunk by chunk: trace at the first
    point, plan, then replay each chunk (`evaluate`) and arrange the results."""
    schedule = transform.schedule
    with np.errstate(all="ignore") if not batch.size else contextlib.nullcontext():
        tape, V, _, _ = traced.replay(batch.traced_point(0, schedule), {})
    if tape.calls:     # nested transforms run in Python: no batched replay, loop instead
        return _loop(fn, batch)
    plan = plan_for(tape, traced, transform, batch)
    output, chunk_size = backend.prepare(tape, V, plan, batch, chunk_size)
    B = batch.size
    chunks = range(0, B, chunk_size)
    if progress:
        try:
            from tqdm.auto import tqdm
            chunks = tqdm(chunks, total=math.ceil(B / chunk_size), unit="chunk")
        except ImportError:
            pass
    for start in chunks:
        evaluate(traced, transform, tape, V, plan, batch, slice(start, min(B, start + chunk_size)),
                 output, backend, fn)
    return backend.arrange(output, plan)


def evaluate(traced, transform, tape, V, plan, batch, index, output, backend, fn):
    """Fill the output at the points `index` (a slice): replay on `tape`, then the points whose
    guards fail on their own tape.

    The first failing point selects (or traces) the tape of its branch, which then runs on all
    the failing points; a point that fails even on the tape traced at it (a comparison that
    rounds differently in numpy and in the interpreter) is evaluated alone by `fn`.
    """
    ok = backend.replay(tape, V, plan, batch, index, output)
    if ok.all():                          # the common case: no index arrays to build
        return
    remaining = np.flatnonzero(~ok) + index.start
    while remaining.size:
        # the tape of the first failing point's branch runs on every failing point at once
        # (they already failed on the previous tape: no second replay there)
        first = remaining[0]
        tape, V, _, _ = traced.replay(batch.traced_point(first, transform.schedule), {})
        plan = plan_for(tape, traced, transform, batch)
        ok = backend.replay(tape, V, plan, batch, remaining, output)
        if not ok[0]:
            output[first] = plan.results.flat(fn(*batch.point(first)))
            ok[0] = True
        remaining = remaining[~ok]


def _lazy(traced, transform, args, in_axes, fn, chunk_size, backend):
    """`vmap(fn)(*args)` where arguments are dask arrays: a lazy result (see `dask`). Tapes are
    traced here, on the client: at the first points of the batch when none is known for the
    call's signature yet (every branch those points take); the workers only replay them."""
    if backend.name != "cpu":
        raise NotImplementedError(f"vmap on dask arrays replays on the CPU; got the "
                                  f"{backend.name!r} backend (device='cpu')")
    blocks = dask.Blocks(args, in_axes, transform.schedule)
    if blocks.computed is not None:      # only unmapped arguments were dask arrays
        return run(traced, transform, blocks.computed, fn, backend, chunk_size)
    if not traced.current(blocks.key):
        sample = blocks.sample()
        tape, _, _, _ = traced.replay(sample.traced_point(0, transform.schedule), {})
        dask.refuse_calls(tape)
        run(traced, transform, sample, fn, CPU(fuse=False), chunk_size)
    return blocks.graph(traced.current(blocks.key), traced, transform, chunk_size)


def _loop(fn, batch):
    """The batch as a Python loop of the unbatched function (nested transforms); an empty
    batch evaluates `fn` once, at zeros, for the shapes of the (empty) results."""
    results = [fn(*batch.point(q)) for q in range(batch.size)]
    if not results:
        with np.errstate(all="ignore"):
            leaves0, structure = pytree.flatten(fn(*batch.point(0)))
        empty = [np.zeros((0,) + np.shape(leaf), np.asarray(leaf).dtype) for leaf in leaves0]
        return pytree.unflatten(structure, empty)
    leaves0, structure = pytree.flatten(results[0])
    stacked = [np.stack([np.asarray(pytree.flatten(r)[0][j]) for r in results])
               for j in range(len(leaves0))]
    return pytree.unflatten(structure, stacked)
