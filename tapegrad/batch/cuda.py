"""CUDA backend of `vmap`: the batched replay in `numba.cuda` kernels.

`vmap(f, device="cuda")` replays the same tape as the CPU backend, with the same plan
(`_vmap._plan`: which buffer rows are inputs, seeds, directions and outputs), the same guards
and the same retrace path for points that take another branch (`_vmap._evaluate`); only the
chunk replay runs on the GPU (`replay_columns`, the twin of `_vmap._replay_columns`), in
kernels generated from the op registry (`_codegen_cuda`; structural primitives in
`_kernels_cuda`). Schedules: values, grad / value_and_grad, jacrev (one reverse sweep per
output element), jacfwd and jvp (one tangent sweep per direction) and hessian
(forward-over-reverse: per direction one tangent and one reverse-tangent sweep).

Nothing here imports `numba.cuda` at module level: `available()` tries it, so that `import
tapegrad` and `device="auto"` work on machines without CUDA, and `device="cuda"` can say why
it cannot run (`why_unavailable()`). With NUMBA_ENABLE_CUDASIM=1 numba's simulator counts as a
GPU (that is how the tests run the kernels).

Data: inputs and results keep `_vmap`'s (points, inputs) and (points, rows) layouts. numpy
inputs are copied in chunk by chunk (`_Batch.rows`) and the results copied out. Device inputs
(numba device arrays, or anything with `__cuda_array_interface__`: CuPy arrays, PyTorch CUDA
tensors) stay on the device: a kernel gathers a chunk's (points, inputs) rows from them, the
results are numba device arrays (`cupy.asarray` / `torch.as_tensor` wrap them without a copy),
and only the per-point guard flags (a byte a point) and single points (to trace a branch)
come to the host. Mapped device inputs must have their batch axis first. Chunks are sized
from `cuda.current_context().get_memory_info()` (MEMORY_FRACTION of the free memory) unless
`chunk_size` is given, so batches larger than the device are streamed.

Layout: one thread per point; global (rows, points) scratch, thread p owning column p
=====================================================================================
NOT MEASURED ON A GPU: none was lent while this was written. The choice is reasoned; it is
checked for correctness on the simulator (tests/test_cuda.py) and for compilation to sm_90 by
NVVM and ptxas (numba-cuda 0.30.4, CUDA 12.9 wheels; test_kernels_compile_for_a_real_gpu).

The two candidates (DESIGN.md: both matched the CPU gradients on the simulator):

1. per-thread `cuda.local.array(n_slots)`. Its size must be a compile-time constant, so every
   sweep kernel would be compiled once per buffer size, and these compiles are long (below):
   each new tape size would pay tens of seconds. It would not be faster either: the tape
   addresses slots with run-time indices, so the compiler cannot keep them in registers; local
   memory is device DRAM behind the same L1/L2 as global memory, interleaved across threads,
   so it coalesces exactly like (2). It also reserves size x (resident threads) of DRAM and
   caps a thread at 512 KiB of slots.
2. global (rows, B) buffers, thread p owning column p (chosen). For one tape entry every thread
   of a warp reads and writes the same row: 32 consecutive points are 32 adjacent words, one
   256-byte transaction in float64, fully coalesced. The tape is data, not code: one compile
   per dtype serves every tape of any size (a larger tape only shrinks the chunk). The sweeps
   keep their state in these buffers, so they can be separate kernels (below) at no cost.

One thread per point replaying the same tape also makes the `if op == k` chain warp-uniform
(every thread is at the same entry: no divergence; the tape arrays are read at one address per
warp, a broadcast); divergence is limited to the selects inside elementwise expressions. Each
interpreter receives its thread's column `V[:, p]` (a strided view), so the per-point rule
bodies `_codegen` writes from the registry run unchanged. Inputs and results are read and
written in the caller's (points, ...) layout, row q by thread q: not coalesced per instruction,
but each thread's row is contiguous, so whole sectors are used through L1/L2, and they are a
small share of the traffic (every entry reads and writes its slots). Expected bound: memory
bandwidth, as the CPU column layout is bound by L2.

Kernels and registers (ptxas -v for sm_90, float64; float32 within a few registers):
forward 76 registers, tangent 122, backward 112, forward-over-reverse 176; no spills. One
kernel holding every sweep took 255 registers with spills (registers go to the largest branch
of the chain, so a gradient would run at the occupancy of the Hessian): hence one kernel per
sweep, each compiled on first use. Tangent and adjoint columns are reused per direction and
per seed (T, G, TG are one column each), so a point takes 2 to 4 columns whatever the number
of directions: larger chunks. Blocks of THREADS = 128: registers, not threads, bound the
occupancy (at 112 registers, 4 blocks = 512 threads per SM), and small blocks spread evenly.
Compile time (NVVM + ptxas, on a busy 2-core CPU): forward 8 s, backward 14 s, tangent 16 s,
forward-over-reverse 57 s; `cuda.jit(cache=True)` keeps them on disk for later processes.

Found on the way (DESIGN.md said the CPU interpreter body compiles as a device function): it
does on the simulator only. Real CUDA code may not return an array view it made (`_v`), nor
allocate (`np.zeros`) or call `np.dot`; `_codegen_cuda` slices views inline and
`_kernels_cuda` has loop versions of the structural kernels.

Differences from the CPU backend: matmul sums in a fixed loop order (no BLAS), so results agree
to rounding. Like the CPU sweeps (error_model="numpy"), a division by zero gives inf/nan.
Nested transforms (`call` entries) never reach here (`_vmap` loops over the points in Python).
"""
import math
import threading
import warnings

import numpy as np

from ..core import pytree as _pytree
from ..core import sweep as _sweep
from . import vmap as _vmap

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
    for the device array where `_vmap` reads shapes and dtypes."""
    return np.lib.stride_tricks.as_strided(np.zeros(1, array.dtype), shape=array.shape,
                                           strides=(0,) * len(array.shape), writeable=False)


def _host(x):
    return x.copy_to_host() if hasattr(x, "copy_to_host") else x


class Batch(_vmap._Batch):
    """`_vmap._Batch` whose leaves may be device arrays.

    Device leaves are replaced by zero-memory host proxies in `leaves` (so `_vmap` sees their
    shapes and dtypes) and kept in `device`; `point(q)` copies one point to the host (tracing),
    `device_rows` builds a chunk's (points, inputs) array on the device."""

    def __init__(self, args, in_axes):
        leaves, structure = _pytree.flatten(tuple(args))
        found = {k: _as_device(leaf) for k, leaf in enumerate(leaves) if is_device_array(leaf)}
        if found:
            args = _pytree.unflatten(structure, [_proxy(found[k]) if k in found else leaf
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
        if not self.size:            # an empty batch: zeros of a point's shapes (`_vmap`)
            return super().point(q)
        leaves = list(self.leaves)
        for k in self.batched:
            leaves[k] = _host(self.device[k][int(q)]) if k in self.device else leaves[k][q]
        return _pytree.unflatten(self.structure, leaves)

    def device_rows(self, leaves, index, dtype):
        """The batched leaves `leaves` at the points `index` as one device (points, inputs)
        array (`_vmap._Batch.rows` on the device)."""
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


# ---- one vmap call: outputs, buffers, chunks ----------------------------------------------------

class _Output:
    """`Y` for `_vmap._evaluate`: the (B, rows) results on the host or on the device, and the
    device buffers of this call (tape arrays, plan arrays, scratch), reused from chunk to chunk."""

    def __init__(self, shape, dtype, on_device):
        self.shape, self.dtype = shape, np.dtype(dtype)
        self.host = None if on_device else np.empty(shape, dtype)
        self.dev = _cuda().device_array(shape, dtype) if on_device and 0 not in shape \
            else None
        self.cache = {}       # id(object) -> (object, device arrays): tapes and plans
        self.scratch = {}     # name -> device array

    def __setitem__(self, q, value):
        """`Y[q] = row`: a point that `_vmap._evaluate` computed with the function itself."""
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
    entry's primitive declares, see `core.primitive`)."""
    from ..core.codegen import scratch_rows as rows
    return rows(tape.prims, tape.S[tape.E[:, 4], 1])


def _needs(plan, kind):
    """(tangent, adjoint, second-order tangent) buffers the schedule uses."""
    n_dir = 1 if kind == "jvp" else len(plan["dir_pos"])
    second = bool(plan["second"])
    return n_dir > 0 or second, len(plan["seeds"]) > 0 or second, second


def _chunk_points(tape, V, plan, kind, n_rows, n_in):
    """Points per chunk: MEMORY_FRACTION of the free device memory over the bytes a point
    takes (value, tangent, adjoint columns, inputs, outputs); None when unknown (simulator)."""
    try:
        free = _cuda().current_context().get_memory_info()[0]
    except Exception:
        return None
    if not math.isfinite(free):
        return None
    t, g, tg = _needs(plan, kind)
    rows = V.size + scratch_rows(tape) + V.size * (t + g + tg) + n_in + n_rows
    per_point = rows * V.itemsize + 16
    return max(1, int(free * MEMORY_FRACTION) // per_point)


def prepare(tape, V, plan, batch, n_rows, n_in, chunk_size, kind):
    """(Y, chunk size, arrange) for `_vmap._run` on the CUDA backend."""
    on_device = getattr(batch, "on_device", False)
    Y = _Output((batch.size, n_rows), tape.dtype, on_device)
    if chunk_size is None:
        chunk_size = _chunk_points(tape, V, plan, kind, n_rows, n_in) or batch.size
    return Y, max(1, int(chunk_size)), (_arrange_device if on_device else _arrange_host)


def _arrange_host(Y, *args):
    return _vmap._arrange(Y.host, *args)


def _arrange_device(Y, tape, kind, plan, traced, batch, argnums, single):
    """`_vmap._arrange` on the device: arranging one point whose results are their own row
    numbers says which row of Y each output element takes (whatever the schedule and pytree);
    a kernel then gathers them into (B, ...) device arrays."""
    cuda, m = _cuda(), _module()
    B = Y.shape[0]
    rows = np.arange(Y.shape[1], dtype=np.int64)[None, :]
    tree = _vmap._arrange(rows, tape, kind, plan, traced, batch, argnums, single)
    leaves, structure = _pytree.flatten(tree)
    out = []
    for leaf in leaves:
        leaf = np.asarray(leaf)
        rowmap = np.ascontiguousarray(leaf.reshape(-1), np.int64)
        shape = (B,) + leaf.shape[1:]
        if rowmap.size == 0 or B == 0:
            out.append(cuda.device_array(shape, Y.dtype))
            continue
        dst = cuda.device_array((B, rowmap.size), Y.dtype)
        _launch(m.gather_results, B, Y.dev, cuda.to_device(rowmap), dst, B)
        out.append(dst.reshape(shape))
    return _pytree.unflatten(structure, out)


# ---- the chunk replay ---------------------------------------------------------------------------

def _tape_arrays(tape, V):
    cuda = _cuda()
    IP = tape.IP if tape.IP.size else np.zeros(1, np.int64)
    return tuple(cuda.to_device(np.ascontiguousarray(a)) for a in (
        tape.E, tape.FC, IP, tape.S, tape.NEED, V))


def plan_arrays(tape, plan):
    """The plan's positions end to end (PL) with offsets (PO), in the order the kernels read."""
    parts = [plan["in_pos"], [tape.offsets[s] for s, _ in tape.guards],
             [int(bool(o)) for _, o in tape.guards], plan["seeds"], plan["dir_pos"],
             plan["tin_pos"], plan["read_v"], plan["read_g"], plan["read_t"], plan["read_tg"]]
    parts = [np.asarray(p, np.int64).reshape(-1) for p in parts]
    PO = np.concatenate([[0], np.cumsum([p.size for p in parts])]).astype(np.int64)
    PL = np.concatenate(parts + [np.zeros(1, np.int64)])
    cuda = _cuda()
    return cuda.to_device(PL), cuda.to_device(PO)


def replay_columns(tape, V, plan, batch, index, Y, kind):
    """The CUDA twin of `_vmap._replay_columns`: replay at the points `index`, write Y where
    the guards hold, return (on the host) where they do."""
    _sweep.check(tape)        # the validation boundary: kernels do not bounds-check
    m = _module()
    start, idx, n = _index_arrays(index)
    dtype = tape.dtype
    E, FC, IP, S, NEED, V0 = Y.cached(tape, lambda: _tape_arrays(tape, V))
    PL, PO = Y.cached(plan, lambda: plan_arrays(tape, plan))
    _vmap.check_rows(*(_width(batch, leaves) for leaves in plan["rows"]), plan)
    X, XT = (_rows(batch, leaves, index, dtype) for leaves in plan["rows"])
    n_total = V.size
    t, g, tg = _needs(plan, kind)
    w = max(1, n)
    Vs = Y.buffer("V", (n_total + scratch_rows(tape), w), dtype)
    Ts = Y.buffer("T", (1, n_total, w), dtype) if t else None
    Gs = Y.buffer("G", (1, n_total, w), dtype) if g else None
    TGs = Y.buffer("TG", (1, n_total, w), dtype) if tg else None
    n_rows = Y.shape[1]
    out = Y.buffer("out", (w, max(1, n_rows)), dtype)
    OK = Y.buffer("ok", (w,), np.dtype(np.uint8))
    second = bool(plan["second"])
    n_dir = 1 if len(plan["tin_pos"]) else len(plan["dir_pos"])
    row_g = len(plan["read_v"])
    row_t = row_g + len(plan["read_g"]) * (1 if second else len(plan["seeds"]))
    row_tg = row_t + n_dir * len(plan["read_t"])
    if n:
        _launch(m.forward_points, n, E, FC, IP, S, V0, PL, PO, X, OK, out, Vs, n)
        if second:
            _launch(m.second_points, n, E, FC, IP, S, NEED, PL, PO, XT, out, Vs, Ts, Gs, TGs,
                    n, n_total, n_dir, row_g, row_t, row_tg)
        else:
            if n_dir:
                _launch(m.tangent_points, n, E, FC, IP, S, PL, PO, XT, out, Vs, Ts, n, n_total,
                        n_dir, row_t)
            if len(plan["seeds"]):
                _launch(m.backward_points, n, E, FC, IP, S, NEED, PL, PO, out, Vs, Gs, n,
                        n_total, row_g)
    ok = OK.copy_to_host()[:n].astype(bool)
    if Y.host is not None:
        result = out.copy_to_host()[:n, :n_rows]
        if isinstance(index, slice):
            points = np.arange(index.start, index.stop)
        else:
            points = index
        Y.host[points[ok]] = result[ok]
    elif Y.dev is not None and n:
        _launch(m.put_rows, n, out, OK, start, idx, n, Y.dev)
    return ok


def _width(batch, leaves):
    """Values per point of the batched leaves `leaves` (the columns of their `_rows`)."""
    return sum(int(np.prod(batch.leaves[k].shape[1:], dtype=np.int64)) for k in leaves)


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
