"""Threads: recording is per thread; eight threads running eager programs and transforms at once
(a shared `tapegrad.grad(f)` object too) each get correct gradients.

What is per thread: grad mode and the tracing state (`_graph.state`), a traced tape's value
buffers (`Tape._local`). What is shared: a transform's cache of tapes (a shared object retraces
when a thread's inputs take another branch, while other threads replay), the compiled
interpreters (loaded once under a lock). Anomaly mode is global, as in PyTorch. Under numba's
workqueue threading layer, which is not thread-safe, parallel kernel launches take turns.
"""
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

import tapegrad

N_THREADS = 8
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(worker, n=N_THREADS, rounds=30):
    errors, barrier = [], threading.Barrier(n)

    def target(k):
        try:
            barrier.wait()                       # start together: maximal overlap
            for i in range(rounds):
                worker(k, i)
        except Exception as err:   # noqa: BLE001 (reported by the main thread)
            errors.append(f"thread {k}: {type(err).__name__}: {err}")
    threads = [threading.Thread(target=target, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


# f(x, w) = sum(tanh(x @ w) ** 2) + 0.5 * sum(w ** 2), with gradients by hand
def f(x, w):
    return ((x @ w).tanh() ** 2).sum() + 0.5 * (w * w).sum()


def f_grads(x, w):
    t = np.tanh(x @ w)
    g = 2 * t * (1 - t * t)
    return g @ w.T, x.T @ g + w


def branchy(x):
    """A guard: the branch depends on the input, so a shared transform holds two tapes."""
    if x.sum() > 0:
        return (x * x * x).sum()
    return (x.sin() * 2).sum()


def branchy_grad(x):
    return 3 * x * x if x.sum() > 0 else 2 * np.cos(x)


def _data(k, i):
    rng = np.random.default_rng(1000 * k + i)
    return rng.standard_normal((4, 3)), rng.standard_normal((3, 2))


def test_eager_programs_in_eight_threads():
    def worker(k, i):
        x, w = _data(k, i)
        X = tapegrad.tensor(x, requires_grad=True)
        Wt = tapegrad.tensor(w, requires_grad=True)
        if i % 3 == 0:
            with tapegrad.no_grad():              # this thread's mode only
                assert not (X * 2).requires_grad
        loss = f(X, Wt)
        assert tapegrad.is_grad_enabled()
        loss.backward()
        gx, gw = f_grads(x, w)
        np.testing.assert_allclose(X.grad.numpy(), gx, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(Wt.grad.numpy(), gw, rtol=1e-10, atol=1e-12)
    _run(worker)


def test_a_shared_grad_object():
    g = tapegrad.grad(f, argnums=(0, 1))
    vg = tapegrad.value_and_grad(branchy)

    def worker(k, i):
        x, w = _data(k, i)
        gx, gw = g(x, w)
        ex, ew = f_grads(x, w)
        np.testing.assert_allclose(gx, ex, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(gw, ew, rtol=1e-10, atol=1e-12)
        xb = x.ravel() * (1 if (k + i) % 2 else -1) + (0.5 if (k + i) % 2 else -0.5)
        value, grad = vg(xb)                      # threads take both branches at once
        np.testing.assert_allclose(grad, branchy_grad(xb), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(value, branchy(tapegrad.tensor(xb)).item(), rtol=1e-10, atol=1e-12)
    _run(worker)


def test_eager_and_transforms_mixed_with_tracing_in_other_threads():
    """A thread tracing a function records nothing from another thread's eager program (and
    vice versa): each tape holds exactly its own function's entries."""
    shared = tapegrad.grad(lambda x: (x.exp() * x).sum())
    lengths = set()

    def worker(k, i):
        x, w = _data(k, i)
        if k % 2:
            tape = tapegrad.trace(lambda a: (a.sin() * a).sum(), x)
            lengths.add(len(tape))
            np.testing.assert_allclose(tape.gradient(x), np.cos(x) * x + np.sin(x), rtol=1e-10, atol=1e-12)
        else:
            X = tapegrad.tensor(x, requires_grad=True)
            (X.sin() * X).sum().backward()
            np.testing.assert_allclose(X.grad.numpy(), np.cos(x) * x + np.sin(x), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(shared(x), np.exp(x) * (x + 1), rtol=1e-10, atol=1e-12)
    _run(worker, rounds=20)
    assert lengths == {3}                        # sin, mul, total


def test_other_transforms_in_threads():
    jac = tapegrad.jacobian(lambda x: x.tanh() * 2)
    hess = tapegrad.hessian(lambda x: (x ** 4).sum())
    batched = tapegrad.vmap(tapegrad.grad(lambda x: (x * x).sum()))

    def worker(k, i):
        x = np.random.default_rng(k * 100 + i).standard_normal(3)
        np.testing.assert_allclose(jac(x), np.diag(2 * (1 - np.tanh(x) ** 2)), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(hess(x), np.diag(12 * x ** 2), rtol=1e-10, atol=1e-12)
        X = np.random.default_rng(k).standard_normal((50, 3))
        np.testing.assert_allclose(batched(X), 2 * X, rtol=1e-14)
    _run(worker, rounds=10)


def test_a_shared_tape_replays_in_threads():
    tape = tapegrad.trace(f, *_data(0, 0))

    def worker(k, i):
        x, w = _data(k, i)
        gx, gw = tape.gradient(x, w)
        ex, ew = f_grads(x, w)
        np.testing.assert_allclose(gx, ex, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(gw, ew, rtol=1e-10, atol=1e-12)
    _run(worker)


@pytest.mark.parametrize("inplace", [False, True])
def test_in_place_version_checks_in_threads(inplace):
    """The version registries are shared: each thread sees its own tensors' writes only."""
    def worker(k, i):
        x = tapegrad.tensor([1.0, 2.0], requires_grad=True)
        c = tapegrad.tensor([3.0, float(k)])
        y = (c * x).sum()
        if inplace and i % 2:
            c.add_(1)
            with pytest.raises(RuntimeError, match="modified by an inplace operation"):
                y.backward()
        else:
            y.backward()
            assert x.grad.tolist() == [3.0, float(k)]
    _run(worker)


def test_generated_modules_materialize_in_threads(tmp_path, monkeypatch):
    """Threads that write the same generated module at once each use their own temporary file
    (the fused tier once failed here: one thread renamed the other's file away)."""
    from tapegrad.core import cache
    monkeypatch.setattr(cache, "cache_dir", lambda: str(tmp_path))
    barrier = threading.Barrier(8)
    errors = []

    def write(k):
        try:
            barrier.wait()
            module = cache.materialize("_gen_thread_probe", "VALUE = 42\n")
            assert module.VALUE == 42
        except BaseException as err:     # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=write, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    sys.modules.pop("tapegrad._gen_thread_probe", None)
    assert not errors
    # the module and its bytecode (Python's or the cache's own), no temporary file left over
    files = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert files[-1:] == ["_gen_thread_probe.py"], files
    assert all(f.startswith("__pycache__/_gen_thread_probe.") and f.endswith(".pyc")
               for f in files[:-1]), files


WORKQUEUE = """
import sys, threading
import numpy as np
import tapegrad

fuse = {fuse!r}
batched = tapegrad.vmap(tapegrad.grad(lambda x: (x * x * x).sum()), fuse=fuse)
X = np.random.default_rng(0).standard_normal((20000, 3))
barrier, errors = threading.Barrier(8), []

def work():
    try:
        barrier.wait()
        for _ in range(15):
            np.testing.assert_allclose(batched(X), 3 * X * X, rtol=1e-14)
    except Exception as err:
        errors.append(repr(err))

if {dask!r}:        # dask's threaded scheduler: eight threads replay blocks at once
    import dask.array as da
    for _ in range(3):
        G = batched(da.from_array(X, chunks=(500, 3))).compute(scheduler="threads", num_workers=8)
        np.testing.assert_allclose(G, 3 * X * X, rtol=1e-14)
else:
    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads: t.start()
    for t in threads: t.join()
import numba
from tapegrad.batch import launch as _launch
print(numba.threading_layer(), _launch._serialize, errors)
sys.exit(1 if errors else 0)
"""


@pytest.mark.parametrize("fuse, dask", [(False, False), (True, False), (False, True)],
                         ids=["interpreter", "fused", "dask"])
def test_eight_threads_share_a_vmap_under_the_workqueue_layer(fuse, dask):
    """numba's workqueue layer (its fallback without OpenMP or TBB) aborts the process when
    two threads launch parallel kernels at once: tapegrad's launches take turns there."""
    env = dict(os.environ, NUMBA_THREADING_LAYER="workqueue",
               PYTHONPATH=os.pathsep.join([ROOT] + [p for p in os.environ.get(
                   "PYTHONPATH", "").split(os.pathsep) if p]))
    if dask:
        pytest.importorskip("dask.array")
    run = subprocess.run([sys.executable, "-c", WORKQUEUE.format(fuse=fuse, dask=dask)], env=env,
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr[-3000:]
    assert run.stdout.split() == ["workqueue", "True", "[]"], run.stdout


def test_thread_safe_layers_launch_concurrently():
    """Under tbb or omp (what numba picks when installed) launches do not take the lock."""
    import numba                  # (imported once tapegrad has: not by `import tapegrad`)
    from tapegrad.batch import launch as _launch
    tapegrad.vmap(tapegrad.grad(lambda x: (x * x).sum()), fuse=False)(np.ones((64, 3)))
    assert _launch._serialize is (numba.threading_layer() not in ("tbb", "omp"))
