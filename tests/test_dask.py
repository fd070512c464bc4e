"""`vmap` over dask arrays (`tapegrad/_dask.py`): lazy results, replayed on the workers.

Every result is compared with the numpy vmap on the same inputs, bit for bit. The distributed
tests use one loopback LocalCluster per module (processes and threads), 2 workers x 1 thread;
the worker-failure test starts a cluster of its own (it kills one of its worker processes).
"""
import functools
import os
import pickle
import pickletools
import subprocess
import sys
import textwrap
import zlib

import numpy as np
import pytest

da = pytest.importorskip("dask.array")
import dask  # noqa: E402

import tapegrad as tg  # noqa: E402
from tapegrad.batch import dask as _dask  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# a LocalCluster's scheduler serves HTTP on port 8787 even without a dashboard: another cluster
# on the machine holding it only moves it elsewhere
pytestmark = pytest.mark.filterwarnings("ignore:Port .* is already in use")


def rosenbrock(x):
    return tg.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


def piecewise(x):
    """Two branches on the inputs: each point's value comes from the tape of its branch."""
    if tg.sum(x) > 0:
        return tg.sum(x * x) + tg.exp(x[0])
    return tg.sum(tg.sin(x)) * x[1]


def two_outputs(x, a):
    return {"s": tg.sum(x * a), "v": tg.tanh(x) * a[0]}


def same(a, b):
    """Bit-for-bit equality of two pytrees of arrays (dask leaves are computed)."""
    la = tg.core.pytree.flatten(a)[0]
    lb = tg.core.pytree.flatten(b)[0]
    assert len(la) == len(lb)
    for x, y in zip(la, lb):
        x = x.compute() if isinstance(x, da.Array) else x
        assert x.shape == y.shape and x.dtype == y.dtype
        assert np.array_equal(x, y, equal_nan=True), np.abs(x - y).max()


def leaves(tree):
    return tg.core.pytree.flatten(tree)[0]


@pytest.fixture
def rng(request):
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))


@pytest.fixture
def X(rng):
    return rng.standard_normal((1000, 10))


# ---- the threaded scheduler ------------------------------------------------------------------

def test_grad_is_lazy_and_keeps_blocks(X):
    Xd = da.from_array(X, chunks=(300, 10))
    G = tg.vmap(tg.grad(rosenbrock))(Xd)
    assert isinstance(G, da.Array)
    assert G.chunks == ((300, 300, 300, 100), (10,))
    with dask.config.set(scheduler="threads"):
        same(G, tg.vmap(tg.grad(rosenbrock))(X))


@pytest.mark.parametrize("name", ["value_and_grad", "jacrev", "jacfwd", "hessian", "jvp",
                                  "jvp_shared_tangent", "pytree", "float32", "in_axes"])
def test_transforms_match_numpy(name, X):
    f, args, axes = tg.value_and_grad(rosenbrock), (X,), 0
    if name == "jacrev":
        f = tg.jacrev(lambda x: tg.tanh(x[:3]) * x[3:6])
    elif name == "jacfwd":
        f = tg.jacfwd(lambda x: tg.sin(x[:4]) * tg.sum(x))
    elif name == "hessian":
        f = tg.hessian(rosenbrock)
    elif name == "jvp":
        f, args = functools.partial(tg.jvp, rosenbrock), ((X,), (np.cos(X),))
    elif name == "jvp_shared_tangent":
        f, args, axes = functools.partial(tg.jvp, rosenbrock), ((X,), (np.cos(X[0]),)), (0, None)
    elif name == "pytree":
        f, args, axes = two_outputs, (X, np.linspace(0.5, 1.5, 10)), (0, None)
    elif name == "float32":
        f, args = tg.grad(rosenbrock), (X.astype(np.float32),)
    elif name == "in_axes":
        f = tg.grad(lambda x, y: tg.sum(x[:3] * tg.exp(y)))
        args, axes = (X.T, X[:, :3].copy()), (1, 0)
    expected = tg.vmap(f, in_axes=axes)(*args)

    def lazy(a, axis):
        chunks = [-1] * a.ndim
        chunks[axis] = 256
        return da.from_array(a, chunks=tuple(chunks))

    if name == "jvp":
        dargs = ((lazy(X, 0),), (lazy(np.cos(X), 0),))
    elif name == "jvp_shared_tangent":
        dargs = ((lazy(X, 0),), (np.cos(X[0]),))
    else:
        axes_t = axes if isinstance(axes, tuple) else (axes,) * len(args)
        dargs = tuple(a if ax is None else lazy(a, ax) for a, ax in zip(args, axes_t))
    out = tg.vmap(f, in_axes=axes)(*dargs)
    assert all(isinstance(leaf, da.Array) for leaf in leaves(out))
    assert all(leaf.chunks[0] == (256, 256, 256, 232) for leaf in leaves(out))
    same(out, expected)


def test_scalar_points_and_sample_across_small_blocks(rng):
    t = rng.standard_normal(3000)
    f = tg.value_and_grad(lambda s: tg.sin(s) * s if s > 0.5 else s * s * s)
    out = tg.vmap(f)(da.from_array(t, chunks=50))        # the sample spans 21 blocks
    assert out[0].chunks == (((50,) * 60),)
    same(out, tg.vmap(f)(t))


@pytest.mark.parametrize("chunks,chunk_size", [(1000, None), (137, None), (1, None),
                                               ((5, 600, 395), 64), (250, 7)])
def test_chunk_sizes(X, chunks, chunk_size):
    Xd = da.from_array(X[:40] if chunks == 1 else X, chunks=(chunks, 10))
    f = tg.value_and_grad(rosenbrock)
    out = tg.vmap(f, chunk_size=chunk_size)(Xd)
    assert out[1].chunks[0] == Xd.chunks[0]
    same(out, tg.vmap(f)(X[:40] if chunks == 1 else X))


def test_mixed_numpy_and_dask_arguments_with_other_chunks(X, rng):
    Y = rng.standard_normal((1000, 3))
    f = tg.grad(lambda x, y, z: tg.sum(x[:3] * y * z), argnums=(0, 1))
    Xd = da.from_array(X, chunks=(100, 10))
    Yd = da.from_array(Y, chunks=(333, 3))                 # rechunked to X's batch chunks
    Z = da.from_array(np.arange(1.0, 4.0), chunks=2)       # unmapped: computed on the client
    out = tg.vmap(f, in_axes=(0, 0, None))(Xd, Yd, Z)
    assert out[1].chunks[0] == Xd.chunks[0]
    same(out, tg.vmap(f, in_axes=(0, 0, None))(X, Y, np.arange(1.0, 4.0)))
    # only an unmapped argument is a dask array: computed, and the numpy vmap runs
    eager = tg.vmap(f, in_axes=(0, 0, None))(X, Y, Z)
    assert isinstance(eager[0], np.ndarray)
    same(eager, tg.vmap(f, in_axes=(0, 0, None))(X, Y, Z.compute()))


def test_feature_axis_chunks_raise_with_the_rechunk(X):
    Xd = da.from_array(X, chunks=(250, 5))
    with pytest.raises(ValueError, match=r"chunked along axis 1 .*rechunk\(\{1: -1\}\)"):
        tg.vmap(tg.grad(rosenbrock))(Xd)
    same(tg.vmap(tg.grad(rosenbrock))(Xd.rechunk({1: -1})), tg.vmap(tg.grad(rosenbrock))(X))
    # with in_axes=1 the batch axis is 1: chunking it is fine, chunking axis 0 is not
    same(tg.vmap(tg.grad(rosenbrock), in_axes=1)(da.from_array(X.T, chunks=(10, 128))),
         tg.vmap(tg.grad(rosenbrock))(X))
    with pytest.raises(ValueError, match=r"axis 0 .*batch axis 1"):
        tg.vmap(tg.grad(rosenbrock), in_axes=1)(da.from_array(X.T, chunks=(5, 128)))


def test_unknown_chunk_sizes_raise_with_the_fix(X):
    Xd = da.from_array(X, chunks=(250, 10))
    filtered = Xd[Xd[:, 0] > 0]                     # boolean indexing: chunk sizes unknown
    with pytest.raises(ValueError, match=r"unknown chunk sizes .*X\.compute_chunk_sizes\(\)"):
        tg.vmap(tg.grad(rosenbrock))(filtered)
    same(tg.vmap(tg.grad(rosenbrock))(filtered.compute_chunk_sizes()),
         tg.vmap(tg.grad(rosenbrock))(X[X[:, 0] > 0]))


def test_jvp_tangent_shapes_and_in_axes_are_checked_on_the_client(X):
    Xd = da.from_array(X, chunks=(250, 10))
    f = functools.partial(tg.jvp, lambda x: np.sin(x) * x)
    with pytest.raises(ValueError, match=r"tangent of shape \(3,\) for a primal of shape \(10,\)"):
        tg.vmap(f)((Xd,), (Xd[:, :3],))
    with pytest.raises(ValueError, match=r"tangent of shape \(1,\) for a primal of shape \(10,\)"):
        tg.vmap(f, in_axes=(0, None))((Xd,), (np.ones(1),))
    with pytest.raises(ValueError, match=r"in_axes=2 for an argument of shape \(1000, 10\)"):
        tg.vmap(tg.grad(rosenbrock), in_axes=2)(Xd)
    with pytest.raises(TypeError, match=r"in_axes\[0\] is 0\.5"):
        tg.vmap(tg.grad(rosenbrock), in_axes=(0.5,))(Xd)
    same(tg.vmap(f, in_axes=(0, None))((Xd,), (np.ones(10),)),
         tg.vmap(f, in_axes=(0, None))((X,), (np.ones(10),)))


def test_in_axes_trees(X, rng):
    Xd = da.from_array(X, chunks=(250, 10))
    w = rng.standard_normal(10)
    g = tg.vmap(tg.grad(lambda p: np.sum(np.sin(p["x"]) * p["w"])),
                in_axes=({"x": 0, "w": None},))
    same(g({"x": Xd, "w": w}), g({"x": X, "w": w}))


def test_capture_call_follows_a_rebound_closure_variable(X):
    w = np.linspace(1.0, 2.0, 10)
    v = tg.vmap(tg.grad(lambda x: np.sum(w * x * x), capture="call"))
    Xd = da.from_array(X, chunks=(250, 10))
    same(v(Xd), v(X))
    w = w * 3.0                                       # rebound: the next graph ships it
    np.testing.assert_allclose(v(Xd).compute(), 2 * w * X, rtol=1e-14)
    w = np.ones(11)                                   # another shape: retraced at new inputs
    np.testing.assert_allclose(v(da.ones((40, 11), chunks=(10, 11))).compute(),
                               np.full((40, 11), 2.0))


# ---- the graph: one tape, linear in the blocks -----------------------------------------------

def _graph(arr):
    return dict(arr.__dask_graph__())


def _shipments(graph):
    """The Shipment objects held in a graph's data nodes."""
    found = []
    for task in graph.values():
        value = getattr(task, "value", None)
        if isinstance(value, _dask.Shipment):
            found.append(value)
    return found


def test_graph_holds_one_tape_and_grows_linearly(X):
    X = X[:64]
    big = np.linspace(0.0, 1.0, 50_000)        # a 400 kB constant: the tape is heavy

    def heavy(x):
        return tg.sum(x * x) + tg.sum(tg.tensor(big) * x[0])

    v = tg.vmap(tg.value_and_grad(heavy))
    sizes, pickled = {}, {}
    for n_blocks in (2, 4, 8, 16):
        Xd = da.from_array(X, chunks=(64 // n_blocks, 10))
        value, grad = v(Xd)
        graph = {**_graph(value), **_graph(grad)}
        ships = _shipments(graph)
        assert len(ships) == 1 and len(ships[0].tapes) == 1
        assert ships[0].nbytes > big.nbytes
        assert sum(str(k).startswith("tapegrad-tapes-") for k in graph) == 1
        sizes[n_blocks] = len(graph)
        pickled[n_blocks] = len(pickle.dumps(graph))
    per_block = (sizes[16] - sizes[8]) / 8
    assert per_block == (sizes[4] - sizes[2]) / 2 <= 5     # tasks per block, no tape copies
    assert pickled[16] - pickled[2] < big.nbytes / 10     # 14 more blocks, no second tape
    same((value, grad), tg.vmap(tg.value_and_grad(heavy))(X))


def test_shipment_pickles_small_and_without_code(X):
    v = tg.vmap(tg.grad(rosenbrock))
    G = v(da.from_array(X, chunks=(500, 10)))
    (ship,) = _shipments(_graph(G))
    data = pickle.dumps(ship, protocol=pickle.HIGHEST_PROTOCOL)
    assert len(data) < ship.nbytes + 4096
    strings = {arg for _, arg, _ in pickletools.genops(data) if isinstance(arg, str)}
    modules = {m for m in strings if "." in m}
    assert all(m == "tapegrad.batch.dask" or m.startswith("numpy.") for m in modules), modules
    assert not any("rosenbrock" in m for m in strings)
    back = pickle.loads(data)
    tape = back.tapes[0]
    assert all(isinstance(getattr(tape, n), np.ndarray) for n in _dask._TAPE_ARRAYS)
    Y = _dask.replay_block(back, X[:10])
    assert np.array_equal(_dask.take_leaf(Y, back, 0), v(X[:10]))


def test_building_the_graph_computes_nothing_once_traced(X):
    v = tg.vmap(tg.grad(rosenbrock))
    v(X[:5])                                   # the tape is known for this signature

    def boom(block):
        raise AssertionError("computed while building the graph")

    Xd = da.from_array(X, chunks=(100, 10)).map_blocks(boom, dtype=X.dtype)
    G = v(Xd)                                  # no compute: the known tape is shipped
    assert G.shape == X.shape
    with pytest.raises(AssertionError, match="computed while building"):
        G.compute()


# ---- branches --------------------------------------------------------------------------------

def test_both_branches_in_the_first_block(rng):
    X = rng.standard_normal((2000, 4))
    assert 0 < (X.sum(1) > 0).mean() < 1
    f = tg.value_and_grad(piecewise)
    out = tg.vmap(f)(da.from_array(X, chunks=(400, 4)))
    (ship,) = _shipments({**_graph(out[0]), **_graph(out[1])})
    assert len(ship.tapes) == 2
    same(out, tg.vmap(f)(X))


def test_branch_no_shipped_tape_covers_raises_then_warm_up(rng):
    X = np.abs(rng.standard_normal((2000, 4)))
    X[1500:1550] *= -1                         # the other branch, beyond the traced sample
    assert _dask.SAMPLE_POINTS <= 1500
    v = tg.vmap(tg.grad(piecewise))
    G = v(da.from_array(X, chunks=(300, 4)))
    with pytest.raises(_dask.UncoveredBranchError, match="none of the 1 shipped tape") as err:
        G.compute(scheduler="sync")
    (points,) = err.value.points
    assert points.shape == (16, 4) and np.all(points.sum(1) < 0)
    v(points)                                  # traces the missing branch on the client
    G = v(da.from_array(X, chunks=(300, 4)))
    (ship,) = _shipments(_graph(G))
    assert len(ship.tapes) == 2
    same(G, tg.vmap(tg.grad(piecewise))(X))


def test_nested_transforms_are_refused(X):
    inner = tg.grad(rosenbrock)
    with pytest.raises(NotImplementedError, match="nested transforms"):
        tg.vmap(lambda x: tg.sum(inner(x)))(da.from_array(X, chunks=(500, 10)))


def test_import_tapegrad_does_not_import_dask():
    code = ("import sys, numpy as np, tapegrad as tg\n"
            "tg.vmap(lambda x: tg.sum(x * x))(np.ones((4, 3)))\n"
            "assert not [m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed')]")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=120)


# ---- dask.distributed ------------------------------------------------------------------------

@pytest.fixture(scope="module", params=[True, False], ids=["processes", "threads"])
def client(request):
    distributed = pytest.importorskip("distributed")
    # tcp on the loopback for both (in-process workers would default to the inproc transport,
    # which takes no host and does not serialize): the graph is pickled as for remote workers
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1,
                                  processes=request.param, host="127.0.0.1", protocol="tcp://",
                                  dashboard_address=None, silence_logs=40) as cluster, \
            distributed.Client(cluster) as client:
        yield client


def test_distributed_matches_numpy(client, rng):
    X = rng.standard_normal((3000, 10))
    X[::7] *= -1
    f = tg.value_and_grad(piecewise)
    out = tg.vmap(f)(da.from_array(X, chunks=(250, 10)))
    same(client.compute(out, sync=True), tg.vmap(f)(X))
    G = tg.vmap(tg.grad(rosenbrock))(da.from_array(X, chunks=(500, 10)))
    same(G.compute(), tg.vmap(tg.grad(rosenbrock))(X))      # the client is the default


def test_distributed_function_not_importable_on_workers(client, tmp_path, rng):
    """The function lives in a module the workers cannot import: only tapes travel."""
    (tmp_path / "secret_objective.py").write_text(textwrap.dedent("""
        import tapegrad as tg

        def objective(x):
            if x[0] > 0.5:
                return tg.sum(tg.log1p(x * x))
            return tg.sum(x ** 3)
    """))
    sys.path.insert(0, str(tmp_path))
    try:
        import secret_objective
    finally:
        sys.path.remove(str(tmp_path))
    X = rng.standard_normal((800, 6))
    v = tg.vmap(tg.grad(secret_objective.objective))
    G = v(da.from_array(X, chunks=(100, 6)))
    same(client.compute(G, sync=True), tg.vmap(tg.grad(secret_objective.objective))(X))
    # and an uncovered branch fails clearly on a worker, its points coming back
    v2 = tg.vmap(tg.grad(secret_objective.objective))
    Z = np.full((2000, 6), -1.0)
    Z[1900:] = 1.0                             # beyond the traced sample
    with pytest.raises(_dask.UncoveredBranchError) as err:
        client.compute(v2(da.from_array(Z, chunks=(500, 6))), sync=True)
    assert np.all(err.value.points[0] == 1.0)
    del sys.modules["secret_objective"]


def _count_batched_loads(on):
    """On a worker (or, with in-process workers, here): count the loads of the batched
    interpreters from now on (`on`), or stop counting. `_interp.interpreters` imports
    `_codegen.load` when it loads a module, so the counter sees every load."""
    from tapegrad.core import codegen as _codegen
    load = _codegen.load
    if on and not hasattr(load, "calls"):
        def counted(batched=False):
            counted.calls += bool(batched)
            return counted.wrapped(batched)
        counted.calls, counted.wrapped = 0, load
        _codegen.load = counted
    elif not on and hasattr(load, "calls"):
        _codegen.load = load.wrapped


def _interpreter_state():
    """On a worker: its process, the batched interpreter module it holds, how often it loaded
    one since counting began, and what numba did for the tile driver (overloads, and how many
    were compiled here or loaded from numba's on-disk cache)."""
    from tapegrad.core import codegen as _codegen, interp as _interp
    module = _interp._modules.get(True)
    generated = [m for m in sys.modules if m.startswith("tapegrad._gen_batched_")]
    state = dict(pid=os.getpid(), loads=getattr(_codegen.load, "calls", None),
                 generated=sorted(m for m in generated if "kernels" not in m))
    if module is not None:
        stats = module.run_tiles.stats
        state.update(module=(id(module), module.__name__),
                     signatures=sorted(map(str, module.run_tiles.signatures)),
                     compiled=sum(stats.cache_misses.values()),
                     from_disk=sum(stats.cache_hits.values()), cache_path=stats.cache_path)
    return state


def test_distributed_workers_load_and_compile_interpreters_once(client, rng):
    """Worker processes load the batched interpreters once per process, not per task, and
    compile nothing that numba's on-disk cache holds; a second computation loads nothing."""
    in_process = set(client.run(os.getpid).values()) == {os.getpid()}
    X = rng.standard_normal((4000, 10))
    v = tg.vmap(tg.grad(rosenbrock))
    expected = v(X)                            # compiled (or loaded from disk) here first
    if not in_process:
        client.restart()                       # fresh worker processes: nothing loaded yet
    client.run(_count_batched_loads, True)
    try:
        before = client.run(_interpreter_state)
        same(client.compute(v(da.from_array(X, chunks=(250, 10))), sync=True), expected)
        first = client.run(_interpreter_state)
        # another computation: other blocks (32), other keys, same signature
        same(client.compute(v(da.from_array(X, chunks=(125, 10))), sync=True), expected)
        second = client.run(_interpreter_state)
    finally:
        client.run(_count_batched_loads, False)
    assert set(first) == set(second) == set(before)           # no worker was replaced
    assert all(s["loads"] in (0, 1) for s in second.values()), second
    ran = [w for w, s in first.items() if "module" in s]
    assert ran, first
    client_cache = tg.core.interp.interpreters(batched=True).run_tiles.stats.cache_path
    for w in ran:
        s = first[w]
        assert s["pid"] == before[w]["pid"] == second[w]["pid"]
        # one generated module per process, loaded once: 16 blocks did not load it 16 times
        assert s["generated"] == [s["module"][1]]
        assert s["loads"] == (0 if "module" in before[w] else 1), (w, s)
        # every overload of the tile driver obtained once (compiled or read from disk)
        assert s["compiled"] + s["from_disk"] == len(s["signatures"]) >= 1, s
        if not in_process and s["cache_path"] == client_cache \
                and "tapegrad-numba-" not in str(client_cache):
            # a shared on-disk cache: a fresh worker process reads the code compiled here
            assert s["compiled"] == 0, s
        # the second computation (other blocks, other keys) loaded and compiled nothing
        assert second[w] == s, (second[w], s)


def _slow(x):
    """About 100 us a point on one thread (300 tape nodes of 50 entries): blocks take a while,
    results do not depend on timing."""
    y = x
    for _ in range(100):
        y = tg.tanh(y) + 0.5 * x
    return tg.sum(y * y)


def test_distributed_worker_killed_mid_computation_is_recomputed(rng):
    """A worker process killed (SIGKILL) while blocks run and after others finished: its
    in-flight and stored blocks are recomputed, the result is complete and bit-for-bit the
    numpy vmap's; the nanny starts a new worker process."""
    distributed = pytest.importorskip("distributed")
    import signal
    import time
    X = rng.standard_normal((8000, 50))       # 3.2 MB: the graph carries it
    v = tg.vmap(tg.grad(_slow))
    expected = v(X)                            # traces on the client, warms the disk cache
    with dask.config.set({"distributed.scheduler.allowed-failures": 10}), \
            distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                     host="127.0.0.1", dashboard_address=None,
                                     silence_logs=50) as cluster, \
            distributed.Client(cluster) as client:
        pids = client.run(os.getpid)
        G = client.persist(v(da.from_array(X, chunks=(200, 50))))       # 40 blocks
        futures = distributed.futures_of(G)
        n = len(futures)
        deadline = time.monotonic() + 60
        while True:                            # some blocks done, one running on a worker
            done = sum(f.status == "finished" for f in futures)
            busy = [w for w, keys in client.processing().items()
                    if w in pids and any("tapegrad-replay" in str(k) for k in keys)]
            if done >= n // 4 and busy:
                break
            assert done < n and time.monotonic() < deadline, "finished before the kill"
            time.sleep(0.005)
        # of the workers running a block, the one that stores most finished blocks
        held = client.who_has(futures)
        victim = max(busy, key=lambda w: sum(list(ws) == [w] for ws in held.values()))
        os.kill(pids[victim], signal.SIGKILL)
        assert 0 < done < n
        out = G.compute()                      # lost blocks are recomputed
        assert out.shape == expected.shape and np.all(np.isfinite(out))
        assert np.array_equal(out, expected)
        assert all(f.status == "finished" for f in futures)
        client.wait_for_workers(2, timeout=30)     # the nanny restarted the killed process
        now = client.run(os.getpid)
        assert pids[victim] not in now.values() and len(now) == 2


@pytest.mark.slow           # about 15 s: three LocalClusters start, and the model's runs
def test_bench_quick(tmp_path):
    out = tmp_path / "dask.json"
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "dask_scaling.py"),
                           "--quick", "--repeat", "1", "--json", str(out)],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert "scaling 1 -> 2 single-threaded workers" in proc.stdout
    assert "a MODEL, not measurements" in proc.stdout
    import json
    result = json.loads(out.read_text())
    rows = result["rows"]
    assert len(rows) == 6 and all(r["points_per_s"] > 0 for r in rows)
    model = result["model"]
    assert "not a measurement" in model["note"]
    params = model["parameters"]
    assert all(params[k] > 0 for k in ("r", "o", "c_task", "t_ship", "F"))
    predicted = {p["workers"]: p for p in model["predictions"]}
    assert sorted(predicted) == [1, 2, 4, 8, 16]
    assert "measured_points_per_s" in predicted[2] and "measured_points_per_s" not in predicted[4]
    for p in predicted.values():
        low, high = p["points_per_s"]
        assert 0 < low <= high and 0 < p["efficiency"][0] <= p["efficiency"][1] <= 1


def test_promoted_float32_gradients_keep_the_argument_dtype():
    """A float32 argument promoted by float64 constants: a lazy value_and_grad declares and
    computes the numpy result's dtypes (value float64, gradient float32)."""
    X = np.random.default_rng(3).standard_normal((6, 3)).astype(np.float32)
    f = tg.value_and_grad(lambda x: np.sum(np.tanh(x * np.array([1.0, -2.0, 0.5]))))
    lazy = tg.vmap(f)(da.from_array(X, chunks=(2, 3)))
    want = tg.vmap(f)(X)
    assert [a.dtype for a in lazy] == [a.dtype for a in want] == [np.float64, np.float32]
    for a, b in zip(dask.compute(*lazy), want):
        assert a.dtype == b.dtype
        np.testing.assert_allclose(a, b, rtol=1e-6)
