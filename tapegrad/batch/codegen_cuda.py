"""Generate the CUDA interpreters from the op registry (the CUDA twin of `core.codegen`).

Nothing here lists primitives: the module is assembled from the pieces `core.codegen` writes
for the CPU interpreters, with every rule in the CUDA layout of `core.layouts` (one thread per
point: slot views sliced inline, fills as loops, temporaries in scratch rows at the end of the
thread's value column, no allocation):

* the header (`math`, the `_sigmoid` helper the expressions call) with `jit` bound to
  `cuda.jit(device=True)`, so its helpers become device functions;
* the rules of every primitive the GPU runs (`cuda=True`) and their helpers
  (`core.codegen.rules_module("cuda")`; the others dispatch to nothing: vmap refuses them);
* the four interpreters `forward`, `backward`, `tangent`, `backward_tangent` with the CPU's
  signatures, loop and `if op == k` chain;
* the driver kernels (below, one per sweep): one thread per point, the twin of `run_tiles`.

Each thread works on its own column of the (rows, points) buffers: the interpreters receive
`V[:, p]`, a strided 1-d view. The source goes to a real file named by a hash of everything it
depends on (as `core.codegen.load` does), so that `cuda.jit(cache=True)` can cache the compiled
kernel and a change of any rule compiles afresh.
"""
from ..core import cache, codegen


def device(fn=None, **options):
    """`cuda.jit(device=True)`; the generated CUDA module binds `jit` to this."""
    from numba import cuda
    if fn is None:
        return lambda f: device(f, **options)
    return cuda.jit(device=True)(fn)


def generate():
    """The source text of the CUDA interpreter module."""
    return (codegen.header("from numba import cuda\n"
                           "from tapegrad.batch.codegen_cuda import device as jit")
            + codegen.rules_module("cuda") + codegen.interpreters_source(cuda=True) + _DRIVER)


# Plan positions, end to end in one int64 array PL with offsets PO (see `cuda.plan_arrays`).
_DRIVER = '''


# One kernel per sweep, each compiled on first use: registers are allocated for the largest
# branch of a kernel's `if op == k` chain, so a kernel holding every sweep would run all of them
# at the occupancy of the worst, and a gradient would compile sweeps it never runs. The sweeps
# share nothing but the global buffers, which outlive a launch.
#
# Common arguments: the tape (E, FC, IP, S, NEED); the plan positions PL with offsets PO (in
# the order of cuda.plan_arrays); n points, thread q < n owning column q of V (rows, >= n) and
# of T, G, TG (1, rows, >= n); X (n, inputs) and XT (n, tangent inputs) the points' values in
# the caller's layout; Y (n, rows) their results, in run_tiles' order: values read_v,
# adjoints read_g (per seed), tangents read_t (per direction), second-order tangents read_tg
# (per direction); row_g, row_t, row_tg where those start. V has scratch rows after the
# n_total rows of the slots (the primitives' temporaries, see `core.layouts`).


@cuda.jit(cache=True)
def forward_points(E, FC, IP, S, V0, PL, PO, X, OK, Y, V, n):
    """Values at every point; guards -> OK[q]; the values read_v -> Y."""
    q = cuda.grid(1)
    if q >= n:
        return
    in_pos = PL[PO[0]:PO[1]]
    guard_pos = PL[PO[1]:PO[2]]
    guard_val = PL[PO[2]:PO[3]]
    read_v = PL[PO[6]:PO[7]]
    v = V[:, q]
    for r in range(V0.size):
        v[r] = V0[r]
    for r in range(in_pos.size):
        v[in_pos[r]] = X[q, r]
    forward(E, FC, IP, S, v, 0, E.shape[0])
    ok = 1
    for j in range(guard_pos.size):
        if (v[guard_pos[j]] != 0.0) != (guard_val[j] != 0):
            ok = 0
    OK[q] = ok
    for r in range(read_v.size):
        Y[q, r] = v[read_v[r]]


@cuda.jit(device=True)
def _seed_direction(PL, PO, XT, t, q, d, n_total):
    """t = the direction d at point q: per-point tangents XT, or the unit vector at dir_pos[d]."""
    dir_pos = PL[PO[4]:PO[5]]
    tin_pos = PL[PO[5]:PO[6]]
    for r in range(n_total):
        t[r] = 0.0
    if tin_pos.size > 0:
        for r in range(tin_pos.size):
            t[tin_pos[r]] = XT[q, r]
    elif d < dir_pos.size:
        t[dir_pos[d]] = 1.0


@cuda.jit(cache=True)
def tangent_points(E, FC, IP, S, PL, PO, XT, Y, V, T, n, n_total, n_dir, row_t):
    """Tangents, one direction after the other in one column; read_t -> Y."""
    q = cuda.grid(1)
    if q >= n:
        return
    read_t = PL[PO[8]:PO[9]]
    v = V[:, q]
    t = T[:, :, q]
    for d in range(n_dir):
        _seed_direction(PL, PO, XT, t[0], q, d, n_total)
        tangent(E, FC, IP, S, v, t, 0, E.shape[0])
        for r in range(read_t.size):
            Y[q, row_t + d * read_t.size + r] = t[0, read_t[r]]


@cuda.jit(cache=True)
def backward_points(E, FC, IP, S, NEED, PL, PO, Y, V, G, n, n_total, row_g):
    """Adjoints, one seed after the other in one column; read_g -> Y."""
    q = cuda.grid(1)
    if q >= n:
        return
    seeds = PL[PO[3]:PO[4]]
    read_g = PL[PO[7]:PO[8]]
    v = V[:, q]
    g = G[:, :, q]
    for j in range(seeds.size):
        for r in range(n_total):
            g[0, r] = 0.0
        g[0, seeds[j]] = 1.0
        backward(E, FC, IP, S, NEED, v, g, 0, E.shape[0])
        for r in range(read_g.size):
            Y[q, row_g + j * read_g.size + r] = g[0, read_g[r]]


@cuda.jit(cache=True)
def second_points(E, FC, IP, S, NEED, PL, PO, XT, Y, V, T, G, TG, n, n_total, n_dir, row_g,
                  row_t, row_tg):
    """Forward-over-reverse from seeds[0], per direction: tangent, then one backward-tangent
    sweep (adjoints and their tangents); read_g (once), read_t and read_tg -> Y."""
    q = cuda.grid(1)
    if q >= n:
        return
    seeds = PL[PO[3]:PO[4]]
    read_g = PL[PO[7]:PO[8]]
    read_t = PL[PO[8]:PO[9]]
    read_tg = PL[PO[9]:PO[10]]
    v = V[:, q]
    t = T[:, :, q]
    g = G[0, :, q]
    tg = TG[:, :, q]
    n_sweeps = n_dir if n_dir > 0 else 1     # (max() of ints fails in numba's built-in CUDA)
    for d in range(n_sweeps):
        _seed_direction(PL, PO, XT, t[0], q, d, n_total)
        if d < n_dir:
            tangent(E, FC, IP, S, v, t, 0, E.shape[0])
        for r in range(n_total):
            g[r] = 0.0
            tg[0, r] = 0.0
        g[seeds[0]] = 1.0
        backward_tangent(E, FC, IP, S, NEED, v, t, g, tg, 0, E.shape[0])
        if d == 0:
            for r in range(read_g.size):
                Y[q, row_g + r] = g[read_g[r]]
        if d < n_dir:
            for r in range(read_t.size):
                Y[q, row_t + d * read_t.size + r] = t[0, read_t[r]]
            for r in range(read_tg.size):
                Y[q, row_tg + d * read_tg.size + r] = tg[0, read_tg[r]]


@cuda.jit(cache=True)
def take_rows(src, start, idx, n, X, col0):
    """X[i, col0 + j] = src[q, j] for the chunk's points q = start + i (start >= 0) or idx[i]."""
    i = cuda.grid(1)
    if i < n:
        q = start + i if start >= 0 else idx[i]
        for j in range(src.shape[1]):
            X[i, col0 + j] = src[q, j]


@cuda.jit(cache=True)
def put_rows(out, OK, start, idx, n, Y):
    """Y[q] = out[i] for the chunk's points whose guards hold."""
    i = cuda.grid(1)
    if i < n and OK[i]:
        q = start + i if start >= 0 else idx[i]
        for r in range(Y.shape[1]):
            Y[q, r] = out[i, r]


@cuda.jit(cache=True)
def set_row(Y, q, row):
    for r in range(row.size):
        Y[q, r] = row[r]


@cuda.jit(cache=True)
def gather_results(Y, rowmap, dst, B):
    """dst[q, j] = Y[q, rowmap[j]]: one output leaf of every point, one thread per point."""
    q = cuda.grid(1)
    if q < B:
        for j in range(rowmap.size):
            dst[q, j] = Y[q, rowmap[j]]
'''


def load():
    """Import the generated CUDA module, writing it first if this version is new (through
    `core.cache`: the file is named by a hash of everything its code depends on)."""
    import numba
    from numba import cuda
    source = generate()
    key = cache.digest(source, cache.salt(), str(getattr(cuda, "implementation", "")),
                       str(numba.config.ENABLE_CUDASIM))
    return cache.materialize(f"_gen_cuda_{key}", source)
