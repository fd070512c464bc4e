"""`vmap` over dask arrays: a lazy dask array, the tape replayed block by block on the workers.

`tapegrad.vmap(fn)(X)` with `X` a `dask.array.Array` (any mapped argument one) lands here
(dask is imported only then). The front (`vmap`) traces `fn` on the client; this module checks
the dask arguments (`Blocks`) and builds a graph:

    tapegrad-tapes-<token>          ONE key: a `Shipment`, every tape known for the call's
                                    signature as plain numpy arrays, each with its plan
    tapegrad-replay-<token>, i      per block i: the (points, results) rows that the CPU
                                    backend's replay (`cpu.CPU`, the tile driver) gives on
                                    that block
    tapegrad-out<j>-<token>, i      per block i and output leaf j: the leaf, batch axis first
                                    (the plan's `Results`, as the CPU backend arranges them)

so the graph grows linearly with the number of blocks and holds the tapes once; with
`distributed`, the shipment is one task result that a worker fetches once. Workers never trace
(the function need not be importable there): they only run the compiled driver on the shipped
arrays. Outputs keep the batch axis' blocks; a pytree output (value_and_grad, jacrev of
several arguments...) is the same pytree of dask arrays. Results equal the numpy `vmap` bit for
bit: it is the same driver on the same tapes, and every point is computed independently.

Rules (they are the documented behaviour of `vmap` on dask arrays):
* Tracing. When the vmapped function already knows tapes for the call's signature (argument
  structure, shapes, dtypes, static values: not the batch size), they are shipped as they are
  and building the graph computes nothing. Otherwise the client computes the first points of the
  batch (up to `SAMPLE_POINTS`, 1024: the blocks that hold them, `Blocks.sample`) and the front
  runs the numpy `vmap` on them: this traces the function and every branch those points take.
* Branches. On a worker, each block is replayed on the first shipped tape, then the points
  whose guards fail on the next shipped tape, and so on. A point that no shipped tape covers
  (a branch of `fn` the client never saw) raises `UncoveredBranchError` when the array is
  computed, never a wrong value; the error holds such points: evaluate the same vmapped function
  on them with numpy arrays (that traces their branch on the client), then build the dask
  computation again.
* Chunks. The batch axis may be chunked freely (blocks of any sizes, the output keeps them).
  Every other axis of a mapped argument must be a single chunk (a point must lie in one block):
  otherwise vmap raises a ValueError that names the `rechunk` to apply. It does not rechunk by
  itself (as `dask.array.apply_gufunc` without `allow_rechunk`): merging chunks may need much
  memory, the caller should decide. Mapped arguments whose batch chunks differ are rechunked to
  the first dask argument's batch chunks; numpy mapped arguments are split into those chunks.
* `chunk_size` bounds the points one driver call replays inside a block (as in the numpy
  vmap); `progress` is ignored (use dask's diagnostics); only `device="cpu"` is supported.
  Unmapped (in_axes=None) dask arguments are computed on the client: they are tape inputs.
* Functions containing nested transforms (grad inside the traced function) run in Python in
  the numpy vmap; they cannot be replayed on workers and raise NotImplementedError.
"""
import math
import threading

import numpy as np

from . import points
from .cpu import CPU, default_chunk
from .plan import Plan, Results, plan_for
from ..core import pytree
from ..core.interp import interpreters
from ..transforms.signature import arguments, is_dynamic, leaf_signature
from ..transforms.tape import GuardError

SAMPLE_POINTS = 1024        # points computed on the client to trace when no tape is known
ERROR_POINTS = 16           # uncovered points an UncoveredBranchError carries


class UncoveredBranchError(GuardError):
    """Points of a dask `vmap` take a branch that none of the shipped tapes records.

    `points`: a tuple with, for each mapped argument leaf, the values of (up to 16 of) these
    points, batch axis first. Call the same vmapped function on them with numpy arrays (it
    traces the missing branch on the client), then build the dask computation again."""

    def __init__(self, message, points=()):
        super().__init__(message)
        self.points = tuple(points)

    def __reduce__(self):          # pickles with its points (errors travel back from workers)
        return (type(self), (self.args[0], self.points))


# ---- what is shipped ---------------------------------------------------------------------------

_TAPE_ARRAYS = ("E", "FC", "IP", "S", "NEED", "V", "input_slots", "output_slots",
                "guard_slots", "guard_vals")


def _owned(a):
    """`a` as a writable C-contiguous array: the compiled driver is specialized for those (a
    read-only buffer, as unpickled from a transport's frames, would compile another version)."""
    a = np.asarray(a)
    return a if a.flags.c_contiguous and a.flags.writeable else np.array(a, order="C")


class ShippedTape:
    """One tape as the CPU backend replays it: numpy arrays, no code.

    A `Tape` holds Python objects that do not travel (its per-thread buffers are a
    `threading.local`, its primitives hold functions, its structures hold singletons); a worker
    needs only this of it: the tape arrays, the value buffer `V` (constants and unmapped inputs
    in place), the guards and the plan (`plan.Plan`: the positions the driver reads and
    writes; it travels as plain data and is made again on arrival). It has the attributes of a
    `Tape` that the batched replay reads (`E`, `FC`, `IP`, `S`, `NEED`, `offsets`, `sizes`,
    `guards`, `dtype`, ...) so that the CPU backend replays it with the very code the numpy
    vmap runs."""
    __slots__ = _TAPE_ARRAYS + ("plan", "offsets", "sizes")
    # copies of the arrays of a tape traced (so validated, see `core.sweep`) on the client; they
    # travel inside the dask graph, a pickle, which is trusted as the graph itself is
    validated = True

    def __init__(self, tape, V, plan):
        self.E, self.FC, self.IP, self.S, self.NEED = tape.E, tape.FC, tape.IP, tape.S, tape.NEED
        self.V = np.array(V, copy=True)
        self.input_slots = np.asarray(tape.input_slots, np.int64)
        self.output_slots = np.asarray(tape.output_slots, np.int64)
        self.guard_slots = np.array([s for s, _ in tape.guards], np.int64)
        self.guard_vals = np.array([o for _, o in tape.guards], np.bool_)
        self.plan = Plan.from_arrays(*plan.arrays())     # without the client's state
        self._own()

    def _own(self):
        for name in _TAPE_ARRAYS:
            setattr(self, name, _owned(getattr(self, name)))
        self.offsets = np.ascontiguousarray(self.S[:, 0])     # derived, not shipped
        self.sizes = np.ascontiguousarray(self.S[:, 1])

    def __getstate__(self):
        state = {name: getattr(self, name) for name in _TAPE_ARRAYS}
        state["plan"] = self.plan.arrays()
        return state

    def __setstate__(self, state):
        self.plan = Plan.from_arrays(*state.pop("plan"))
        for name, value in state.items():
            setattr(self, name, value)
        self._own()

    def __len__(self):
        return len(self.E)

    @property
    def dtype(self):
        return self.V.dtype

    @property
    def V0(self):
        return self.V

    @property
    def guards(self):
        return list(zip(self.guard_slots.tolist(), self.guard_vals.tolist()))

    @property
    def nbytes(self):
        return (sum(getattr(self, name).nbytes for name in _TAPE_ARRAYS)
                + sum(a.nbytes for a in self.plan.arrays()[1].values()))

    def arrays(self):
        schedule, positions, leaves = self.plan.arrays()
        return ([getattr(self, name) for name in _TAPE_ARRAYS] + list(positions.values())
                + [np.asarray([schedule])] + [np.asarray(r, np.int64) for r in leaves])


class Shipment:
    """Everything the workers get, once: the tapes of one signature and how to lay out a block.

    `leaf_ids`: the leaf number (in the flattened arguments) of each mapped leaf, in the order
    of the blocks a task receives; `n_leaves`: how many leaves the arguments have; `n_rows`,
    `dtype`: the driver's results per point; `out_maps`: for each output leaf, the column of
    the results holding each of its elements (the first tape's plan's `Results`)."""
    __slots__ = ("tapes", "leaf_ids", "n_leaves", "n_rows", "dtype", "chunk_size", "out_maps",
                 "results")

    def __init__(self, tapes, leaf_ids, n_leaves, n_rows, dtype, chunk_size, out_maps):
        self.tapes = list(tapes)
        self.leaf_ids, self.n_leaves = [int(k) for k in leaf_ids], int(n_leaves)
        self.n_rows, self.dtype, self.chunk_size = int(n_rows), np.dtype(dtype), int(chunk_size)
        self.out_maps = [np.asarray(m, np.int64) for m in out_maps]
        self.results = Results(None, self.out_maps, self.n_rows)

    def __getstate__(self):
        return {name: getattr(self, name) for name in self.__slots__ if name != "results"}

    def __setstate__(self, state):
        for name, value in state.items():
            setattr(self, name, value)
        self.results = Results(None, self.out_maps, self.n_rows)

    @property
    def nbytes(self):
        return sum(t.nbytes for t in self.tapes) + sum(m.nbytes for m in self.out_maps)

    def arrays(self):
        """Every array and number shipped (the graph's token)."""
        out = [np.asarray([self.n_rows, self.chunk_size, self.n_leaves] + self.leaf_ids),
               np.asarray([str(self.dtype)])]
        for t in self.tapes:
            out += t.arrays()
        return out + self.out_maps


# ---- worker side -------------------------------------------------------------------------------

_load_lock = threading.Lock()
_state = {}
_REPLAY = CPU(fuse=False)     # workers interpret: a fused kernel would compile on every worker


def _load():
    """Load the batched interpreters once per process, under a lock: concurrent first loads
    from several scheduler threads could see the generated module half-imported. (Replays from
    several scheduler threads are serialised where numba's threading layer requires it, by
    `launch`, as for the numpy vmap.)"""
    if "loaded" not in _state:
        with _load_lock:
            if "loaded" not in _state:
                interpreters(batched=True)
                _state["loaded"] = True


def replay_block(shipment, *blocks):
    """The driver's (points, results) rows on one block of every mapped leaf: each point from
    the first shipped tape whose guards hold there."""
    _load()
    batch = points.Batch.of_blocks(shipment.n_leaves, shipment.leaf_ids, blocks)
    n = batch.size
    Y = np.empty((n, shipment.n_rows), shipment.dtype)
    step = max(1, shipment.chunk_size)
    for start in range(0, n, step):
        stop = min(n, start + step)
        remaining = None
        for tape in shipment.tapes:
            if remaining is None:
                ok = _REPLAY.replay(tape, tape.V, tape.plan, batch, slice(start, stop), Y)
                remaining = start + np.flatnonzero(~ok)
            else:
                ok = _REPLAY.replay(tape, tape.V, tape.plan, batch, remaining, Y)
                remaining = remaining[~ok]
            if remaining.size == 0:
                break
        else:
            _uncovered(shipment, blocks, remaining, n)
    return Y


def _uncovered(shipment, blocks, remaining, n):
    points_at = tuple(np.array(b[remaining[:ERROR_POINTS]]) for b in blocks)
    k = len(shipment.tapes)
    raise UncoveredBranchError(
        f"vmap on dask: {remaining.size} of the {n} points of a block (the first at row "
        f"{remaining[0]} of the block) take a branch of the function that none of the {k} "
        f"shipped tape{'' if k == 1 else 's'} records. The function branches on its inputs "
        "(if/while on a value, max, abs...), and workers replay tapes: they never trace. Trace "
        "the missing branch on the client: call the same vmapped function on such points with "
        f"numpy arrays (this error's `.points`: for each mapped argument leaf, up to "
        f"{ERROR_POINTS} of them, batch axis first), then build the dask computation again; "
        "every tape the vmapped function knows for this signature is shipped.", points_at)


def take_leaf(Y, shipment, j):
    """Output leaf j of a block, batch axis first, from the driver's (points, results) rows."""
    return shipment.results.leaf(Y, j)


# ---- client side -------------------------------------------------------------------------------

def is_dask_array(x):
    if not type(x).__module__.startswith("dask"):
        return False
    import dask.array as da
    return isinstance(x, da.Array)


def has_dask_leaf(args):
    """Whether an argument leaf is a dask array (dask is imported only if a leaf's type is
    from a dask module)."""
    return any(is_dask_array(leaf) for leaf in pytree.flatten(tuple(args))[0])


class Blocks:
    """The arguments of a vmap call with dask arrays among them, checked: each mapped dask
    leaf with its batch axis first and chunked along it only, the mapped numpy leaves split
    into the same blocks, the unmapped dask leaves computed (they are tape inputs).

    `computed`: when no mapped leaf is a dask array (only unmapped ones were, now computed),
    the numpy `points.Batch` to run eagerly, else None; `key`: the signature the tapes are
    cached under (no values: zeros stand for points); `sample()`: the first points, computed;
    `graph(...)`: the lazy result."""

    def __init__(self, args, in_axes, schedule):
        self.schedule = schedule
        if schedule.given_tangents:
            args = points.jvp_arguments(args)
        leaves, self.structure = pytree.flatten(tuple(args))
        axes = points.leaf_axes(args, in_axes)
        if schedule.given_tangents:
            points.check_tangents(leaves, axes, len(pytree.flatten(args[0])[0]))
        _compute_unmapped(leaves, axes)
        self.leaves = leaves
        self.mapped = [k for k, a in enumerate(axes) if a is not None]
        self.computed = None
        if not any(is_dask_array(leaves[k]) for k in self.mapped):
            self.computed = points.Batch(pytree.unflatten(self.structure, leaves), in_axes)
            if schedule.given_tangents:
                self.computed.broadcast_tangents(len(pytree.flatten(args[0])[0]))
            return
        self.arrays = _batch_axis_first(leaves, axes, self.mapped)
        self._share_blocks(args, axes)
        # the arguments' tree of axes: 0 for every mapped leaf (batch axis first now), else None
        self.point_axes = pytree.unflatten(self.structure, [0 if k in self.mapped else None
                                                            for k in range(len(leaves))])
        self.proxy = self.batch_of([np.zeros((1,) + self.arrays[k].shape[1:],
                                             self.arrays[k].dtype) for k in self.mapped])
        self.point_leaves, point_structure = pytree.flatten(
            arguments(self.proxy.traced_point(0, schedule), {}))
        self.key = (point_structure, tuple(map(leaf_signature, self.point_leaves)))

    def _share_blocks(self, args, axes):
        """Every mapped leaf in the first dask argument's batch chunks (a jvp's shared tangents
        too: the drivers read a jvp's tangents from batched leaves only)."""
        import dask.array as da
        sizes = {self.arrays[k].shape[0] for k in self.mapped}
        if len(sizes) > 1:
            raise ValueError(f"vmap got inconsistent batch sizes {sorted(sizes)}")
        first = next(self.arrays[k] for k in self.mapped if is_dask_array(self.arrays[k]))
        chunks = first.chunks[0]
        if self.schedule.given_tangents:
            for k in range(len(pytree.flatten(args[0])[0]), len(self.leaves)):
                if axes[k] is None:
                    leaf = np.asarray(getattr(self.leaves[k], "data", self.leaves[k]))
                    self.arrays[k] = da.broadcast_to(leaf, (first.shape[0],) + leaf.shape,
                                                     chunks=(chunks,) + leaf.shape)
                    self.mapped.append(k)
        for k in self.mapped:
            a = self.arrays[k]
            if not is_dask_array(a):
                self.arrays[k] = da.from_array(a, chunks=(chunks,) + a.shape[1:])
            elif a.chunks[0] != chunks:
                self.arrays[k] = a.rechunk({0: chunks})

    def batch_of(self, mapped_values):
        """A numpy `points.Batch` with these values (batch axis first) for the mapped leaves."""
        proxy = list(self.leaves)
        for k, v in zip(self.mapped, mapped_values):
            proxy[k] = v
        return points.Batch(pytree.unflatten(self.structure, proxy), self.point_axes)

    def sample(self):
        """The first points of the batch (up to SAMPLE_POINTS: only the blocks holding them are
        computed) as a numpy `points.Batch`, to trace the function and its branches at."""
        import dask
        sample = dask.compute(*[self.arrays[k][:SAMPLE_POINTS] for k in self.mapped])
        batch = self.batch_of([np.asarray(s) for s in sample])
        if batch.size == 0:
            raise ValueError("vmap of an empty dask batch: no point to trace the function at")
        return batch

    def graph(self, tapes, traced, transform, chunk_size):
        """The lazy outputs: every block replayed by the CPU backend on the workers, from the
        tapes `tapes` (those of this signature, traced on the client)."""
        import dask
        import dask.array as da
        from dask.base import tokenize
        shipment, out_structure, dtypes = _shipment(tapes, traced, transform, self, chunk_size)
        token = tokenize(*shipment.arrays())
        ship = dask.delayed(shipment, name=f"tapegrad-tapes-{token}", pure=True, traverse=False)
        inputs = [self.arrays[k] for k in self.mapped]
        graph_token = tokenize(token, [a.name for a in inputs])
        block_args = []
        for j, a in enumerate(inputs):
            block_args += [a, ("b",) + tuple(f"p{j}_{i}" for i in range(1, a.ndim))]
        Y = da.blockwise(replay_block, ("b", "r"), ship, None, *block_args,
                         new_axes={"r": shipment.n_rows}, concatenate=True,
                         dtype=shipment.dtype, meta=np.empty((0, 0), shipment.dtype),
                         name=f"tapegrad-replay-{graph_token}")
        outs = []
        for j, index in enumerate(shipment.out_maps):
            axes = tuple(f"o{i}" for i in range(index.ndim))
            outs.append(da.blockwise(
                take_leaf, ("b",) + axes, Y, ("b", "r"), ship, None, j, None,
                new_axes=dict(zip(axes, index.shape)), concatenate=True, dtype=shipment.dtype,
                meta=np.empty((0,) * (1 + index.ndim), shipment.dtype),
                name=f"tapegrad-out{j}-{graph_token}"))
        return pytree.unflatten(out_structure, [
            out.astype(dtype) if dtype is not None else out
            for out, dtype in zip(outs, dtypes)])


def _compute_unmapped(leaves, axes):
    """Unmapped dask leaves are tape inputs (or statics): their values, on the client."""
    import dask
    unmapped = [k for k, a in enumerate(axes) if a is None and is_dask_array(leaves[k])]
    if unmapped:
        for k, v in zip(unmapped, dask.compute(*[leaves[k] for k in unmapped])):
            leaves[k] = np.asarray(v)


def _batch_axis_first(leaves, axes, mapped):
    """{leaf: its array with the batch axis first} of the mapped leaves, checked."""
    import dask.array as da
    arrays = {}
    for k in mapped:
        leaf, axis = leaves[k], axes[k]
        if not is_dask_array(leaf):
            leaf = np.asarray(getattr(leaf, "data", leaf))
        points.check_axis(leaf, axis)
        if np.dtype(leaf.dtype).kind != "f":
            raise TypeError(f"vmap maps over floating-point arrays; got {leaf.dtype}")
        if is_dask_array(leaf):
            _check_known_chunks(leaf)
            axis = axis % leaf.ndim
            split = [a for a in range(leaf.ndim) if a != axis and len(leaf.chunks[a]) > 1]
            if split:
                fix = ", ".join(f"{a}: -1" for a in split)
                raise ValueError(
                    f"vmap on a dask array chunked along axis {split[0]} (chunks "
                    f"{leaf.chunks[split[0]]}), which is not its batch axis {axis}: each point "
                    "must lie in one block. Rechunk it so that only the batch axis is split, "
                    f"e.g. X.rechunk({{{fix}}}) (vmap does not merge chunks by itself: that may "
                    "need much memory)")
            leaf = da.moveaxis(leaf, axis, 0)
        else:
            leaf = np.moveaxis(leaf, axis, 0)
        arrays[k] = leaf
    return arrays


def _check_known_chunks(leaf):
    """Refuse a dask array whose chunk sizes are unknown (NaN, as after boolean indexing): the
    blocks' numbers of points are needed to lay out the result and to sample points."""
    if any(math.isnan(size) for sizes in leaf.chunks for size in sizes):
        raise ValueError(
            f"vmap on a dask array with unknown chunk sizes (chunks {leaf.chunks}), as after "
            "boolean indexing or a filter: vmap needs the number of points in every block. "
            "Compute them first: X = X.compute_chunk_sizes() (this evaluates X once; for a "
            "dask dataframe, df.to_dask_array(lengths=True))")


def refuse_calls(tape):
    """Refuse a tape with nested transforms: they run in Python, not on workers."""
    if tape.calls:
        raise NotImplementedError(
            "vmap on dask arrays: the function contains nested transforms (grad or jacobian "
            "inside the traced function), which run in Python and cannot be replayed on "
            "workers; use the numpy vmap on computed blocks (dask's map_blocks) instead")


def _shipment(tapes, traced, transform, blocks, chunk_size):
    """The Shipment of the tapes of one signature (the first one fixes the output layout),
    and the structure of the output."""
    dynamic = [leaf for leaf in blocks.point_leaves if is_dynamic(leaf)]
    shipped, first = [], None
    for tape in tapes:
        refuse_calls(tape)
        plan = plan_for(tape, traced, transform, blocks.proxy)
        if first is None:
            first = plan
        plan.check_width(first.n_results)
        V = tape.load(dynamic, traced.refresh)     # constants and unmapped inputs in place
        shipped.append(ShippedTape(tape, V, plan))
    chunk_size = default_chunk(first) if chunk_size is None else chunk_size
    shipment = Shipment(shipped, blocks.proxy.batched, len(blocks.proxy.leaves), first.n_results,
                        tapes[0].dtype, chunk_size, first.results.rows)
    return shipment, first.results.structure, first.results.dtypes
