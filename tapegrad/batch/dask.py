"""`vmap` over dask arrays: a lazy dask array, the tape replayed block by block on the workers.

`tapegrad.vmap(fn)(X)` with `X` a `dask.array.Array` (any mapped argument one) lands here
(`_vmap.vmap`'s hook; dask is imported only then). The client traces `fn` and builds a graph:

    tapegrad-tapes-<token>          ONE key: a `Shipment`, every tape known for the call's
                                    signature as plain numpy arrays plus the driver's plan
    tapegrad-replay-<token>, i      per block i: the (points, rows) result of the tile driver
                                    (`interpreters(batched=True).run_tiles`, called by the
                                    numpy vmap's own `_replay_columns`) on that block
    tapegrad-out<j>-<token>, i      per block i and output leaf j: the leaf, batch axis first

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
  batch (up to `SAMPLE_POINTS`, 1024: the blocks that hold them) and runs the numpy `vmap` on
  them: this traces the function and every branch those points take.
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

from ..core import pytree as _pytree
from . import vmap as _vmap
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
_PLAN_ARRAYS = ("in_pos", "seeds", "dir_pos", "tin_pos", "read_v", "read_g", "read_t", "read_tg")


def _owned(a):
    """`a` as a writable C-contiguous array: the compiled driver is specialized for those (a
    read-only buffer, as unpickled from a transport's frames, would compile another version)."""
    a = np.asarray(a)
    return a if a.flags.c_contiguous and a.flags.writeable else np.array(a, order="C")


class ShippedTape:
    """One tape as the tile driver reads it: numpy arrays, no code.

    A `Tape` holds Python objects that do not travel (its per-thread buffers are a
    `threading.local`, its primitives hold functions, its structures hold singletons); a worker
    needs only this of it: the tape arrays, the value buffer `V` (constants and unmapped inputs
    in place), the guards and the plan of the driver (`_vmap._plan`: the positions it reads and
    writes). It has the attributes of a `Tape` that the batched replay reads (`E`, `FC`, `IP`,
    `S`, `NEED`, `offsets`, `sizes`, `guards`, `dtype`, ...) so that `_vmap._replay_columns`
    replays it with the very code the numpy vmap runs."""
    __slots__ = _TAPE_ARRAYS + ("plan", "offsets", "sizes")
    # copies of the arrays of a tape traced (so validated, see `_sweep`) on the client; they
    # travel inside the dask graph, a pickle, which is trusted as the graph itself is
    validated = True

    def __init__(self, tape, V, plan):
        self.E, self.FC, self.IP, self.S, self.NEED = tape.E, tape.FC, tape.IP, tape.S, tape.NEED
        self.V = np.array(V, copy=True)
        self.input_slots = np.asarray(tape.input_slots, np.int64)
        self.output_slots = np.asarray(tape.output_slots, np.int64)
        self.guard_slots = np.array([s for s, _ in tape.guards], np.int64)
        self.guard_vals = np.array([o for _, o in tape.guards], np.bool_)
        self.plan = {name: np.asarray(plan[name], np.int64) for name in _PLAN_ARRAYS}
        self.plan["second"] = bool(plan["second"])
        self.plan["rows"] = (list(plan["rows"][0]), list(plan["rows"][1]))
        self._own()

    def _own(self):
        for name in _TAPE_ARRAYS:
            setattr(self, name, _owned(getattr(self, name)))
        for name in _PLAN_ARRAYS:
            self.plan[name] = _owned(self.plan[name])
        self.offsets = np.ascontiguousarray(self.S[:, 0])     # derived, not shipped
        self.sizes = np.ascontiguousarray(self.S[:, 1])

    def __getstate__(self):
        state = {name: getattr(self, name) for name in _TAPE_ARRAYS}
        state["plan"] = self.plan
        return state

    def __setstate__(self, state):
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
                + sum(self.plan[name].nbytes for name in _PLAN_ARRAYS))

    def arrays(self):
        return ([getattr(self, name) for name in _TAPE_ARRAYS]
                + [self.plan[name] for name in _PLAN_ARRAYS]
                + [np.asarray([self.plan["second"]])]
                + [np.asarray(r, np.int64) for r in self.plan["rows"]])


class Shipment:
    """Everything the workers get, once: the tapes of one signature and how to lay out a block.

    `kind`: the schedule (`_vmap`); `leaf_ids`: the leaf number (in the flattened arguments)
    of each mapped leaf, in the order of the blocks a task receives; `n_leaves`: how many
    leaves the arguments have; `n_rows`, `dtype`: the driver's result per point; `out_maps`:
    for each output leaf, the row of the driver's result holding each of its elements."""
    __slots__ = ("tapes", "kind", "leaf_ids", "n_leaves", "n_rows", "dtype", "chunk_size",
                 "out_maps")

    def __init__(self, tapes, kind, leaf_ids, n_leaves, n_rows, dtype, chunk_size, out_maps):
        self.tapes = list(tapes)
        self.kind = str(kind)
        self.leaf_ids, self.n_leaves = [int(k) for k in leaf_ids], int(n_leaves)
        self.n_rows, self.dtype, self.chunk_size = int(n_rows), np.dtype(dtype), int(chunk_size)
        self.out_maps = [np.asarray(m, np.int64) for m in out_maps]

    def __getstate__(self):
        return {name: getattr(self, name) for name in self.__slots__}

    def __setstate__(self, state):
        for name, value in state.items():
            setattr(self, name, value)

    @property
    def nbytes(self):
        return sum(t.nbytes for t in self.tapes) + sum(m.nbytes for m in self.out_maps)

    def arrays(self):
        """Every array and number shipped (the graph's token)."""
        out = [np.asarray([self.n_rows, self.chunk_size, self.n_leaves] + self.leaf_ids),
               np.asarray([self.kind, str(self.dtype)])]
        for t in self.tapes:
            out += t.arrays()
        return out + self.out_maps


# ---- worker side -------------------------------------------------------------------------------

_load_lock = threading.Lock()
_state = {}


def _load():
    """Load the batched interpreters once per process, under a lock: concurrent first loads
    from several scheduler threads could see the generated module half-imported. (Replays from
    several scheduler threads are serialised where numba's threading layer requires it, by
    `_launch`, as for the numpy vmap.)"""
    if "loaded" not in _state:
        with _load_lock:
            if "loaded" not in _state:
                interpreters(batched=True)
                _state["loaded"] = True


def _replay(tape, batch, index, Y, kind):
    _load()
    return _vmap._replay_columns(tape, tape.V, tape.plan, batch, index, Y, kind)


def _block_batch(shipment, blocks):
    """The block of every mapped leaf as the numpy vmap's `_Batch` (what the replay reads)."""
    batch = _vmap._Batch.__new__(_vmap._Batch)
    batch.leaves = [None] * shipment.n_leaves
    for k, block in zip(shipment.leaf_ids, blocks):
        batch.leaves[k] = block
    batch.batched = list(shipment.leaf_ids)
    batch.axis_of_leaf = [0 if k in shipment.leaf_ids else None
                          for k in range(shipment.n_leaves)]
    batch.structure = None
    batch.size = blocks[0].shape[0]
    return batch


def replay_block(shipment, *blocks):
    """The driver's (points, rows) result on one block of every mapped leaf: each point from
    the first shipped tape whose guards hold there."""
    batch = _block_batch(shipment, blocks)
    n = batch.size
    Y = np.empty((n, shipment.n_rows), shipment.dtype)
    step = max(1, shipment.chunk_size)
    for start in range(0, n, step):
        stop = min(n, start + step)
        remaining = None
        for tape in shipment.tapes:
            if remaining is None:
                ok = _replay(tape, batch, slice(start, stop), Y, shipment.kind)
                remaining = start + np.flatnonzero(~ok)
            else:
                ok = _replay(tape, batch, remaining, Y, shipment.kind)
                remaining = remaining[~ok]
            if remaining.size == 0:
                break
        else:
            _uncovered(shipment, blocks, remaining, n)
    return Y


def _uncovered(shipment, blocks, remaining, n):
    points = tuple(np.array(b[remaining[:ERROR_POINTS]]) for b in blocks)
    k = len(shipment.tapes)
    raise UncoveredBranchError(
        f"vmap on dask: {remaining.size} of the {n} points of a block (the first at row "
        f"{remaining[0]} of the block) take a branch of the function that none of the {k} "
        f"shipped tape{'' if k == 1 else 's'} records. The function branches on its inputs "
        "(if/while on a value, max, abs...), and workers replay tapes: they never trace. Trace "
        "the missing branch on the client: call the same vmapped function on such points with "
        f"numpy arrays (this error's `.points`: for each mapped argument leaf, up to "
        f"{ERROR_POINTS} of them, batch axis first), then build the dask computation again; "
        "every tape the vmapped function knows for this signature is shipped.", points)


def take_leaf(Y, shipment, j):
    """Output leaf j of a block, batch axis first, from the driver's (points, rows) result:
    a view where the leaf's elements are consecutive rows (grad, value), else a gather."""
    index = shipment.out_maps[j]
    first = int(index.flat[0]) if index.size else 0
    if index.size and np.array_equal(index.ravel(), np.arange(first, first + index.size)):
        return Y[:, first:first + index.size].reshape((Y.shape[0],) + index.shape)
    return np.ascontiguousarray(Y[:, index])


# ---- client side -------------------------------------------------------------------------------

def is_dask_array(x):
    if not type(x).__module__.startswith("dask"):
        return False
    import dask.array as da
    return isinstance(x, da.Array)


def vmap_dask(traced, kind, argnums, single, args, in_axes, fn, chunk_size, backend):
    """`vmap(fn)(*args)` where mapped arguments are dask arrays: a lazy result (see the module)."""
    import dask
    import dask.array as da
    from dask.base import tokenize

    if backend != "cpu":
        raise NotImplementedError(f"vmap on dask arrays replays on the CPU; got the {backend!r} "
                                  "backend (device='cpu')")
    if kind == "jvp":
        args = _vmap._jvp_arguments(args)
    leaves, structure = _pytree.flatten(tuple(args))
    axis_of_leaf = _vmap.leaf_axes(args, in_axes)
    if kind == "jvp":
        _vmap.check_tangents(leaves, axis_of_leaf, len(_pytree.flatten(args[0])[0]))

    # unmapped dask leaves are tape inputs (or statics): their values, on the client
    unmapped = [k for k, a in enumerate(axis_of_leaf) if a is None and is_dask_array(leaves[k])]
    if unmapped:
        values = dask.compute(*[leaves[k] for k in unmapped])
        for k, v in zip(unmapped, values):
            leaves[k] = np.asarray(v)

    mapped = [k for k, a in enumerate(axis_of_leaf) if a is not None]
    if not any(is_dask_array(leaves[k]) for k in mapped):
        # only unmapped arguments were dask arrays (now computed): the numpy vmap
        batch = _vmap._Batch(_pytree.unflatten(structure, leaves), in_axes)
        return _vmap._run(traced, kind, argnums, single, batch, fn, chunk_size, False, backend)
    arrays = {}
    for k in mapped:
        leaf, axis = leaves[k], axis_of_leaf[k]
        if not is_dask_array(leaf):
            leaf = np.asarray(getattr(leaf, "data", leaf))
        _vmap._check_axis(leaf, axis)
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
    sizes = {arrays[k].shape[0] for k in mapped}
    if len(sizes) > 1:
        raise ValueError(f"vmap got inconsistent batch sizes {sorted(sizes)}")
    first = next(arrays[k] for k in mapped if is_dask_array(arrays[k]))
    batch_chunks = first.chunks[0]
    if kind == "jvp":
        # tangents shared by every point: batched leaves of the batch's blocks (the driver reads
        # a jvp's tangents from batched leaves only), as the numpy vmap broadcasts them
        for k in range(len(_pytree.flatten(args[0])[0]), len(leaves)):
            if axis_of_leaf[k] is not None:
                continue
            leaf = np.asarray(getattr(leaves[k], "data", leaves[k]))
            arrays[k] = da.broadcast_to(leaf, (first.shape[0],) + leaf.shape,
                                        chunks=(batch_chunks,) + leaf.shape)
            mapped.append(k)
    for k in mapped:
        a = arrays[k]
        if not is_dask_array(a):
            arrays[k] = da.from_array(a, chunks=(batch_chunks,) + a.shape[1:])
        elif a.chunks[0] != batch_chunks:
            arrays[k] = a.rechunk({0: batch_chunks})

    # the arguments' tree of axes: 0 for every mapped leaf (batch axis first now), else None
    point_axes = _pytree.unflatten(structure, [0 if k in mapped else None
                                               for k in range(len(leaves))])

    def batch_of(mapped_values):
        """A numpy `_Batch` with these values (batch axis first) for the mapped leaves."""
        proxy = list(leaves)
        for k, v in zip(mapped, mapped_values):
            proxy[k] = v
        return _vmap._Batch(_pytree.unflatten(structure, proxy), point_axes)

    # the signature (what the tapes are cached under) needs no values: zeros stand for points
    proxy = batch_of([np.zeros((1,) + arrays[k].shape[1:], arrays[k].dtype) for k in mapped])
    point_leaves, point_structure = _pytree.flatten(arguments(_vmap._point_args(kind, proxy, 0),
                                                              {}))
    key = (point_structure, tuple(map(leaf_signature, point_leaves)))
    if not traced.current(key):
        _discover(traced, kind, argnums, single, fn, [arrays[k] for k in mapped], batch_of,
                  chunk_size)
    shipment, out_structure = _shipment(traced.current(key), traced, kind, argnums,
                                        single, proxy, point_leaves, chunk_size)

    token = tokenize(*shipment.arrays())
    ship = dask.delayed(shipment, name=f"tapegrad-tapes-{token}", pure=True, traverse=False)
    inputs = [arrays[k] for k in mapped]
    graph_token = tokenize(token, [a.name for a in inputs])
    block_args = []
    for j, a in enumerate(inputs):
        block_args += [a, ("b",) + tuple(f"p{j}_{i}" for i in range(1, a.ndim))]
    Y = da.blockwise(replay_block, ("b", "r"), ship, None, *block_args,
                     new_axes={"r": shipment.n_rows}, concatenate=True, dtype=shipment.dtype,
                     meta=np.empty((0, 0), shipment.dtype),
                     name=f"tapegrad-replay-{graph_token}")
    outs = []
    for j, index in enumerate(shipment.out_maps):
        axes = tuple(f"o{i}" for i in range(index.ndim))
        outs.append(da.blockwise(
            take_leaf, ("b",) + axes, Y, ("b", "r"), ship, None, j, None,
            new_axes=dict(zip(axes, index.shape)), concatenate=True, dtype=shipment.dtype,
            meta=np.empty((0,) * (1 + index.ndim), shipment.dtype),
            name=f"tapegrad-out{j}-{graph_token}"))
    return _pytree.unflatten(out_structure, outs)


def _check_known_chunks(leaf):
    """Refuse a dask array whose chunk sizes are unknown (NaN, as after boolean indexing): the
    blocks' numbers of points are needed to lay out the result and to sample points."""
    if any(math.isnan(size) for sizes in leaf.chunks for size in sizes):
        raise ValueError(
            f"vmap on a dask array with unknown chunk sizes (chunks {leaf.chunks}), as after "
            "boolean indexing or a filter: vmap needs the number of points in every block. "
            "Compute them first: X = X.compute_chunk_sizes() (this evaluates X once; for a "
            "dask dataframe, df.to_dask_array(lengths=True))")


def _discover(traced, kind, argnums, single, fn, inputs, batch_of, chunk_size):
    """Trace on the client at the first points of the batch (up to SAMPLE_POINTS: only the
    blocks holding them are computed), and every branch they take: the numpy vmap on them."""
    import dask
    sample = dask.compute(*[a[:SAMPLE_POINTS] for a in inputs])
    batch = batch_of([np.asarray(s) for s in sample])
    if batch.size == 0:
        raise ValueError("vmap of an empty dask batch: no point to trace the function at")
    tape, _, _, _ = traced.replay(_vmap._point_args(kind, batch, 0), {})
    _refuse_calls(tape)
    _vmap._run(traced, kind, argnums, single, batch, fn, chunk_size, False, "cpu")


def _refuse_calls(tape):
    if tape.calls:
        raise NotImplementedError(
            "vmap on dask arrays: the function contains nested transforms (grad or jacobian "
            "inside the traced function), which run in Python and cannot be replayed on "
            "workers; use the numpy vmap on computed blocks (dask's map_blocks) instead")


def _n_rows(plan, kind):
    n_dir = 1 if kind == "jvp" else len(plan["dir_pos"])
    return (len(plan["read_v"]) + len(plan["seeds"]) * len(plan["read_g"]) * (not plan["second"])
            + len(plan["read_g"]) * plan["second"] + n_dir * len(plan["read_t"])
            + n_dir * len(plan["read_tg"]) * plan["second"])


def _shipment(tapes, traced, kind, argnums, single, proxy, point_leaves, chunk_size):
    """The Shipment of the tapes of one signature (the first one fixes the output layout),
    and the structure of the output."""
    dynamic = [leaf for leaf in point_leaves if is_dynamic(leaf)]
    shipped, n_rows = [], None
    for tape in tapes:
        _refuse_calls(tape)
        plan = _vmap._plan(tape, traced, kind, proxy, traced.argnums if kind != "jvp" else None)
        if n_rows is None:
            n_rows, plan0, tape0 = _n_rows(plan, kind), plan, tape
        elif _n_rows(plan, kind) != n_rows:
            raise RuntimeError("vmap: a branch changed the output's size")
        V = tape.load(dynamic, traced.refresh)     # constants and unmapped inputs in place
        shipped.append(ShippedTape(tape, V, plan))
    n_in = len(plan0["in_pos"]) + len(plan0["tin_pos"])
    if chunk_size is None:
        chunk_size = max(1024, _vmap.CHUNK_BYTES // (8 * max(1, n_rows + n_in)))
    # where each output element sits in the driver's result: arrange a one-point result whose
    # values are the row numbers
    rows_as_values = np.arange(n_rows, dtype=np.float64)[None, :]
    arranged = _vmap._arrange(rows_as_values, tape0, kind, plan0, traced, proxy, argnums, single)
    out_leaves, out_structure = _pytree.flatten(arranged)
    out_maps = [np.asarray(leaf)[0].astype(np.int64) for leaf in out_leaves]
    shipment = Shipment(shipped, kind, proxy.batched, len(proxy.leaves), n_rows, tape0.dtype,
                        chunk_size, out_maps)
    return shipment, out_structure
