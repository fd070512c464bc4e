"""The CUDA backend of batched replay: the chunk replay in `numba.cuda` kernels.

`vmap(f, device="cuda")` replays the same tape as the CPU backend, with the same plan
(`plan.Plan`: which buffer rows are inputs, seeds, directions and outputs), the same guards
and the same retrace path for points that take another branch (the front, `vmap`); only the
chunk replay runs on the GPU, in kernels generated from the primitives' definitions
(`codegen_cuda`). Every schedule runs: values, one reverse sweep per seed, one tangent sweep
per direction, and forward-over-reverse (per direction one tangent and one reverse-tangent
sweep).

Nothing here imports `numba.cuda` at module level: `available()` tries it, so that `import
tapegrad` and `device="auto"` work on machines without CUDA, and `device="cuda"` can say why
it cannot run (`why_unavailable()`). With NUMBA_ENABLE_CUDASIM=1 numba's simulator counts as a
GPU (that is how the tests run the kernels).

Data: inputs and results keep the CPU backend's (points, inputs) and (points, results)
layouts. numpy inputs are copied in chunk by chunk (`Batch.rows`) and the results copied out.
Device inputs (numba device arrays, or anything with `__cuda_array_interface__`: CuPy arrays,
PyTorch CUDA tensors) stay on the device: a kernel gathers a chunk's (points, inputs) rows from
them, the results are numba device arrays (`cupy.asarray` / `torch.as_tensor` wrap them without
a copy), and only the per-point guard flags (a byte a point) and single points (to trace a
branch) come to the host. Mapped device inputs must have their batch axis first. Chunks are
sized from the free device memory (MEMORY_FRACTION of it) unless `chunk_size` is given, so
batches larger than the device are streamed.

Layout: one thread per point, whose value, tangent and adjoint buffers are columns of global
(rows, points) arrays (thread p owns column p). For one tape entry every thread of a warp reads
and writes the same row: 32 consecutive points are adjacent words, one coalesced transaction.
The tape is data, not code: one compile per dtype serves every tape of any size (a larger tape
only shrinks the chunk). Per-thread `cuda.local.array`s were the alternative: their size must
be a compile-time constant (a compile per buffer size), and the tape addresses slots at run
time, so they would live in the same device memory anyway, uncoalesced. One thread per point
replaying the same tape also keeps the `if op == k` chain warp-uniform (no divergence; the
tape is read at one address per warp).

Kernels: one per sweep, each compiled on first use (`cuda.jit(cache=True)` keeps them on disk):
registers are allocated for the largest branch of a kernel's dispatch chain, so one kernel
holding every sweep would run a gradient at the occupancy of the Hessian. Tangent and adjoint
columns are reused per direction and per seed, so a point takes 2 to 4 columns whatever the
number of directions: larger chunks. Blocks of THREADS points: registers, not threads, bound
the occupancy, and small blocks spread evenly. docs/design.md gives the measured registers and
compile times, and what is known and not known of the speed on a real GPU.

Differences from the CPU backend: matmul sums in a fixed loop order (no BLAS), so results agree
to rounding. Like the CPU sweeps (error_model="numpy"), a division by zero gives inf/nan.
Nested transforms (`call` entries) never reach here (the front loops over the points in
Python).
"""
import math
import threading
import warnings

import numpy as np

from . import points
from ..core import pytree
from ..core import sweep

THREADS = 128               # threads per block
MEMORY_FRACTION = 0.5       # of the free device memory, for one chunk's buffers

_lock = threading.Lock()
_state = {}


# ---- availability -------------------------------------------------------------------------------

def _probe():
    """None when a CUDA device (or the simulator) can run the kernels, else the reason."""
    try:
        import numba
        from numba import cuda
    except Exception as err:   # ImportError, or a broken install
        return (f"numba.cuda cannot be imported ({type(err).__name__}: {err}); "
                "install the CUDA target: pip install numba-cuda")
    if numba.config.ENABLE_CUDASIM:
        return None
    try:
        if cuda.is_available():
            return None
    except Exception as err:
        return f"the CUDA driver failed to initialise ({' '.join(str(err).split())})"
    try:
        cuda.current_context()   # raises with the driver's reason: no driver, no device, ...
    except Exception as err:
        return f"no usable CUDA GPU: {' '.join(str(err).split())}"
    return ("a CUDA GPU was found, but numba cannot compile for it (NVVM / CUDA toolkit "
            "libraries missing? pip install numba-cuda[cu12])")


def available():
    """Whether `device='cuda'` can run here (a GPU with numba.cuda, or the simulator)."""
    if "reason" not in _state:
        _state["reason"] = _probe()
    return _state["reason"] is None


def why_unavailable():
    """The reason `available()` is False (None when it is True)."""
    available()
    return _state["reason"]


def _cuda():
    from numba import cuda
    return cuda


def _module():
    """The generated kernels (written and imported once)."""
    module = _state.get("module")
    if module is None:
        with _lock:
            module = _state.get("module")
            if module is None:
                from .codegen_cuda import load
                module = _state["module"] = load()
    return module


def _launch(kernel, n, *args):
    from numba.core.errors import NumbaPerformanceWarning
    with warnings.catch_warnings():     # small batches under-fill the GPU: expected, not news
        warnings.simplefilter("ignore", NumbaPerformanceWarning)
        threads = max(1, min(THREADS, n))    # a small batch: one block of n threads
        kernel[(n + threads - 1) // threads or 1, threads](*args)


# ---- device arrays as vmap inputs ---------------------------------------------------------------

def is_device_array(x):
    """A numba device array or anything with `__cuda_array_interface__` (CuPy, torch.cuda)."""
    if getattr(x, "__cuda_ndarray__", False):
        return True
    try:
        return hasattr(x, "__cuda_array_interface__")
    except Exception:
        return False


def _as_device(x):
    if getattr(x, "__cuda_ndarray__", False):
        return x
    return _cuda().as_cuda_array(x)


def _proxy(array):
    """A host array of the device array's shape and dtype that takes no memory: it stands in
    for the device array where the front and the plan read shapes and dtypes."""
    return np.lib.stride_tricks.as_strided(np.zeros(1, array.dtype), shape=array.shape,
                                           strides=(0,) * len(array.shape), writeable=False)


def _host(x):
    return x.copy_to_host() if hasattr(x, "copy_to_host") else x


class Batch(points.Batch):
    """A `points.Batch` whose leaves may be device arrays.

    Device leaves are replaced by zero-memory host proxies in `leaves` (so that the front and
    the plan see their shapes and dtypes) and kept in `device`; `point(q)` copies one point to
    the host (tracing), `device_rows` builds a chunk's (points, inputs) array on the device."""

    def __init__(self, args, in_axes):
        leaves, structure = pytree.flatten(tuple(args))
        found = {k: _as_device(leaf) for k, leaf in enumerate(leaves) if is_device_array(leaf)}
        if found:
            args = pytree.unflatten(structure, [_proxy(found[k]) if k in found else leaf
                                                for k, leaf in enumerate(leaves)])
        super().__init__(args, in_axes)
        self.device = {}
        for k, array in found.items():
            axis = self.axis_of_leaf[k]
            if axis is None:                  # not mapped: a constant of the trace
                self.leaves[k] = array.copy_to_host()
            elif axis % len(array.shape) != 0:
                raise NotImplementedError(
                    f"vmap(device='cuda'): a device array must be mapped along axis 0 "
                    f"(in_axes={axis}); move the batch axis first")
            else:
                if not _c_contiguous(array):    # strided (a transposed tensor): copied once
                    array = _cuda().to_device(np.ascontiguousarray(array.copy_to_host()))
                self.device[k] = array
        self.on_device = bool(self.device)

    def point(self, q):
        if not self.size:            # an empty batch: zeros of a point's shapes
            return super().point(q)
        leaves = list(self.leaves)
        for k in self.batched:
            leaves[k] = _host(self.device[k][int(q)]) if k in self.device else leaves[k][q]
        return pytree.unflatten(self.structure, leaves)

    def device_rows(self, leaves, index, dtype):
        """The batched leaves `leaves` at the points `index` as one device (points, inputs)
        array (`rows` on the device)."""
        cuda, m = _cuda(), _module()
        start, idx, n = _index_arrays(index)
        sizes = [int(np.prod(self.leaves[k].shape[1:], dtype=np.int64)) for k in leaves]
        X = cuda.device_array((max(1, n), max(1, sum(sizes))), dtype)
        col = 0
        for k, size in zip(leaves, sizes):
            if k in self.device:
                src, src_start, src_idx = self.device[k], start, idx
                src = src.reshape(src.shape[0], size)
            else:   # a host leaf next to device ones: copy the chunk's points only
                block = self.leaves[k][index]
                src = cuda.to_device(np.ascontiguousarray(block.reshape(n, size)))
                src_start, src_idx = 0, _dummy_index()
            if size and n:
                _launch(m.take_rows, n, src, src_start, src_idx, n, X, col)
            col += size
        return X


def _c_contiguous(array):
    flag = getattr(array, "is_c_contiguous", None)
    return flag() if callable(flag) else bool(array.flags["C_CONTIGUOUS"])


def _dummy_index():
    return _cuda().to_device(np.zeros(1, np.int64))


def _index_arrays(index):
    """(start, device index array, n) of a slice (start >= 0) or of an index array (start -1)."""
    if isinstance(index, slice):
        return index.start, _dummy_index(), index.stop - index.start
    index = np.ascontiguousarray(index, np.int64)
    return -1, _cuda().to_device(index if index.size else np.zeros(1, np.int64)), index.size


# ---- the backend: one call's outputs and buffers, the chunk replay, the results ------------

class CUDA:
    """The CUDA backend (see the module)."""
    name = "cuda"

    def batch(self, args, in_axes):
        return Batch(args, in_axes)     # device arrays stay on the device

    def prepare(self, tape, V, plan, batch, chunk_size):
        """(the call's `Output`, on the host or, for device inputs, on the device; the chunk
        size: from the free device memory unless given)."""
        on_device = getattr(batch, "on_device", False)
        output = Output((batch.size, plan.n_results), tape.dtype, on_device)
        if chunk_size is None:
            chunk_size = _chunk_points(tape, V, plan) or batch.size
        return output, max(1, int(chunk_size))

    def replay(self, tape, V, plan, batch, index, output):
        """Replay at the points `index`, write the output where the guards hold, return (on
        the host) where they do."""
        sweep.check(tape)        # the validation boundary: kernels do not bounds-check
        plan.check_width(output.shape[1])
        plan.check_rows(batch.width(plan.x_leaves), batch.width(plan.xt_leaves))
        m = _module()
        start, idx, n = _index_arrays(index)
        E, FC, IP, S, NEED, V0 = output.cached(tape, lambda: _tape_arrays(tape, V))
        PL, PO = output.cached(plan, lambda: plan_arrays(tape, plan))
        X, XT = (_rows(batch, leaves, index, tape.dtype)
                 for leaves in (plan.x_leaves, plan.xt_leaves))
        out, OK = _sweeps(m, output, tape, V, plan, n, (E, FC, IP, S, NEED, V0, PL, PO), X, XT)
        ok = OK.copy_to_host()[:n].astype(bool)
        if output.host is not None:
            result = out.copy_to_host()[:n, :output.shape[1]]
            points_at = np.arange(index.start, index.stop) if isinstance(index, slice) else index
            output.host[points_at[ok]] = result[ok]
        elif output.dev is not None and n:
            _launch(m.put_rows, n, out, OK, start, idx, n, output.dev)
        return ok

    def arrange(self, output, plan):
        """The outputs: numpy arrays for host inputs; for device inputs, numba device arrays,
        each output leaf gathered from the results by a kernel (the plan's `Results` say which
        columns make it)."""
        if output.host is not None:
            return plan.results.take(output.host)
        cuda, m = _cuda(), _module()
        B = output.shape[0]
        out = []
        for j, rows in enumerate(plan.results.rows):
            shape, dtype = (B,) + rows.shape, plan.results.dtype(j, output.dtype)
            if rows.size == 0 or B == 0:
                out.append(cuda.device_array(shape, dtype))
                continue
            dst = cuda.device_array((B, rows.size), dtype)        # the gather casts
            rowmap = cuda.to_device(np.ascontiguousarray(rows.reshape(-1)))
            _launch(m.gather_results, B, output.dev, rowmap, dst, B)
            out.append(dst.reshape(shape))
        return pytree.unflatten(plan.results.structure, out)


class Output:
    """The results of one call, (B, results) on the host or on the device, and the device
    buffers of this call (tape arrays, plan arrays, scratch), reused from chunk to chunk."""

    def __init__(self, shape, dtype, on_device):
        self.shape, self.dtype = shape, np.dtype(dtype)
        self.host = None if on_device else np.empty(shape, dtype)
        self.dev = _cuda().device_array(shape, dtype) if on_device and 0 not in shape \
            else None
        self.cache = {}       # id(object) -> (object, device arrays): tapes and plans
        self.scratch = {}     # name -> device array

    def __setitem__(self, q, value):
        """`output[q] = row`: a point that the front computed with the function itself."""
        if self.host is not None:
            self.host[q] = value
        elif self.dev is not None:
            row = _cuda().to_device(np.ascontiguousarray(value, self.dtype).reshape(-1))
            _module().set_row[1, 1](self.dev, int(q), row)

    def cached(self, obj, make):
        hit = self.cache.get(id(obj))
        if hit is None or hit[0] is not obj:
            hit = self.cache[id(obj)] = (obj, make())
        return hit[1]

    def buffer(self, name, shape, dtype):
        """A device array of at least `shape` (reused while large enough)."""
        old = self.scratch.get(name)
        if old is not None and old.dtype == dtype and len(old.shape) == len(shape) and all(
                a >= b for a, b in zip(old.shape, shape)):
            return old
        if old is not None and old.dtype == dtype and len(old.shape) == len(shape):
            shape = tuple(max(a, b) for a, b in zip(old.shape, shape))
        self.scratch.pop(name, None)
        new = self.scratch[name] = _cuda().device_array(shape, dtype)
        return new


def scratch_rows(tape):
    """Rows after the slots of a value column for the primitives' temporaries (the most any
    entry's primitive declares, see `core.primitive`). (`core.codegen` imports numba: it is
    imported here, where the kernels run, not by `import tapegrad`.)"""
    from ..core import codegen
    return codegen.scratch_rows(tape.prims, tape.S[tape.E[:, 4], 1])


def _needs(plan):
    """(tangent, adjoint, second-order tangent) buffers the schedule uses."""
    second = plan.second
    return plan.n_directions > 0 or second, len(plan.seeds) > 0 or second, second


def _chunk_points(tape, V, plan):
    """Points per chunk: MEMORY_FRACTION of the free device memory over the bytes a point
    takes (value, tangent, adjoint columns, inputs, outputs); None when unknown (simulator)."""
    try:
        free = _cuda().current_context().get_memory_info()[0]
    except Exception:
        return None
    if not math.isfinite(free):
        return None
    t, g, tg = _needs(plan)
    rows = V.size + scratch_rows(tape) + V.size * (t + g + tg) + plan.n_inputs + plan.n_results
    per_point = rows * V.itemsize + 16
    return max(1, int(free * MEMORY_FRACTION) // per_point)


def _tape_arrays(tape, V):
    cuda = _cuda()
    IP = tape.IP if tape.IP.size else np.zeros(1, np.int64)
    return tuple(cuda.to_device(np.ascontiguousarray(a)) for a in (
        tape.E, tape.FC, IP, tape.S, tape.NEED, V))


def plan_arrays(tape, plan):
    """The plan's positions end to end (PL) with offsets (PO), in the order the kernels read."""
    parts = [plan.in_pos, [tape.offsets[s] for s, _ in tape.guards],
             [int(bool(o)) for _, o in tape.guards], plan.seeds, plan.dir_pos,
             plan.tin_pos, plan.read_v, plan.read_g, plan.read_t, plan.read_tg]
    parts = [np.asarray(p, np.int64).reshape(-1) for p in parts]
    PO = np.concatenate([[0], np.cumsum([p.size for p in parts])]).astype(np.int64)
    PL = np.concatenate(parts + [np.zeros(1, np.int64)])
    cuda = _cuda()
    return cuda.to_device(PL), cuda.to_device(PO)


def _sweeps(m, output, tape, V, plan, n, arrays, X, XT):
    """Launch the schedule's sweeps on n points; (the device results (points, results), the
    device guard flags)."""
    E, FC, IP, S, NEED, V0, PL, PO = arrays
    dtype, n_total = tape.dtype, V.size
    t, g, tg = _needs(plan)
    w = max(1, n)
    Vs = output.buffer("V", (n_total + scratch_rows(tape), w), dtype)
    Ts = output.buffer("T", (1, n_total, w), dtype) if t else None
    Gs = output.buffer("G", (1, n_total, w), dtype) if g else None
    TGs = output.buffer("TG", (1, n_total, w), dtype) if tg else None
    out = output.buffer("out", (w, max(1, output.shape[1])), dtype)
    OK = output.buffer("ok", (w,), np.dtype(np.uint8))
    n_dir, row_g, row_t, row_tg = plan.n_directions, plan.row_g, plan.row_t, plan.row_tg
    if n:
        _launch(m.forward_points, n, E, FC, IP, S, V0, PL, PO, X, OK, out, Vs, n)
        if plan.second:
            _launch(m.second_points, n, E, FC, IP, S, NEED, PL, PO, XT, out, Vs, Ts, Gs, TGs,
                    n, n_total, n_dir, row_g, row_t, row_tg)
        else:
            if n_dir:
                _launch(m.tangent_points, n, E, FC, IP, S, PL, PO, XT, out, Vs, Ts, n, n_total,
                        n_dir, row_t)
            if len(plan.seeds):
                _launch(m.backward_points, n, E, FC, IP, S, NEED, PL, PO, out, Vs, Gs, n,
                        n_total, row_g)
    return out, OK


def _rows(batch, leaves, index, dtype):
    """A chunk's (points, inputs) array on the device (a 1x1 dummy when there are none)."""
    if not leaves:
        return _cuda().device_array((1, 1), dtype)
    if getattr(batch, "on_device", False):
        return batch.device_rows(leaves, index, dtype)
    X = batch.rows(leaves, index, dtype)
    if X is None or X.size == 0:
        return _cuda().device_array((1, 1), dtype)
    return _cuda().to_device(np.ascontiguousarray(X, dtype))
