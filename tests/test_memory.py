"""Long eager sessions and threads: the recorded graph must not outlive the tensors that need it.

Nodes refer to their operands and nothing else refers to a node but the tensors computed from it
(no cycles, no global tape), so reference counting alone frees a graph as soon as its last tensor
goes. These tests hold tapegrad to that, and check that grad mode and backward are thread-safe.
"""
import gc
import os
import subprocess
import sys
import threading
import tracemalloc
import weakref

import numpy as np
import pytest

import tapegrad

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tutorial(x):
    y = x + 2
    z = y * y * 3
    return z.mean()


@pytest.fixture
def no_gc():
    """Reference counting only: what survives here would need the cycle collector (or leaks)."""
    gc.collect()
    gc.disable()
    yield
    gc.enable()


def test_long_session_keeps_memory_flat():
    x = tapegrad.ones(2, 2, requires_grad=True)
    for _ in range(20):                      # warm up: interpreters, caches, freelists
        tutorial(x).backward()
    n, marks = 3000, {}
    tracemalloc.start()
    try:
        for i in range(1, n + 1):
            x.grad = None
            out = tutorial(x)
            out.backward()
            if i in (1000, n):
                gc.collect()
                marks[i] = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    np.testing.assert_array_equal(x.grad.numpy(), np.full((2, 2), 4.5))
    # 2000 more iterations may not keep anything: a few kB of noise, not 2000 graphs (> 1 MB)
    assert marks[n] - marks[1000] < 32_000, marks


def test_accumulating_session_keeps_memory_flat():
    """The same with gradients accumulating into one .grad and the loss kept between steps."""
    w = tapegrad.tensor(np.linspace(-1, 1, 16), requires_grad=True)
    data = tapegrad.tensor(np.linspace(0, 2, 16))
    loss = None
    for _ in range(20):
        loss = ((w * data).tanh() - 0.5).pow(2).sum()
        loss.backward()
    tracemalloc.start()
    try:
        for i in range(1, 1501):
            loss = ((w * data).tanh() - 0.5).pow(2).sum()
            loss.backward()
            if i == 500:
                gc.collect()
                first = tracemalloc.get_traced_memory()[0]
        gc.collect()
        last = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert last - first < 32_000, (first, last)


@pytest.mark.parametrize("kind", ["grad", "value_and_grad with a guard", "jacobian"])
def test_transform_loop_keeps_memory_flat(kind):
    """A transform called over and over (fresh inputs each call, as in an optimisation loop)
    replays its cached tapes: 2000 more calls may not keep anything."""
    def loss(w, data):
        out = ((w * data).tanh() - 0.5) ** 2
        if kind.endswith("guard"):
            if out.sum() > 1.0:                  # both branches are taken: two cached tapes
                return out.sum() * 2
        return out.sum() if kind != "jacobian" else out
    transform = {"grad": tapegrad.grad, "jacobian": tapegrad.jacobian}.get(
        kind, tapegrad.value_and_grad)(loss)
    rng = np.random.default_rng(0)
    data = np.linspace(0, 2, 16)
    inputs = [rng.standard_normal(16) * (1 + (i % 2)) for i in range(8)]
    for i in range(20):
        transform(inputs[i % 8], data)
    n, marks = 3000, {}
    tracemalloc.start()
    try:
        for i in range(1, n + 1):
            result = transform(inputs[i % 8] + 1e-3 * i, data)
            if i in (1000, n):
                gc.collect()
                marks[i] = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert result is not None
    assert marks[n] - marks[1000] < 32_000, marks


CACHE_LOOP = """
import gc, itertools, sys
import numpy as np
import tapegrad as tg

def rss():
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * 4096

def compositions(n):
    # every ordered way of writing 2**n as a product of powers of two: 2**(n-1) shapes, one size
    for cuts in itertools.product((False, True), repeat=n - 1):
        shape, run = [], 1
        for cut in cuts:
            run += 1
            if cut:
                shape.append(2 ** (run - 1)); run = 1
        shape.append(2 ** run)
        yield tuple(shape)

x = np.full(3, 0.5)
kind, n = sys.argv[1], int(sys.argv[2])
if kind == "grad with static ints":
    g = tg.grad(lambda v, k: (v * v).sum() * k)
    step = lambda i: g(x, i)
elif kind == "grad with shapes":
    g = tg.grad(lambda v: (v * v).sum())
    shapes = list(compositions(11))
    step = lambda i: g(np.full(shapes[i % len(shapes)], 0.5))
elif kind == "vjp of fresh functions":
    step = lambda i: tg.vjp(lambda v: v * 2.0, x)[1](x)
elif kind == "jvp of fresh functions":
    step = lambda i: tg.jvp(lambda v: v * 2.0, (x,), (x,))
elif kind == "hvp of fresh functions":
    step = lambda i: tg.hvp(lambda v: (v * v * v).sum(), x, x)
elif kind == "vmap with static ints":
    g = tg.vmap(tg.grad(lambda v, k: (v * v).sum() * k), in_axes=(0, None), fuse=False)
    X = np.ones((16, 3))
    step = lambda i: g(X, i)
marks = {}
for i in range(n):
    step(i)
    if i + 1 in (n // 2, n):
        gc.collect()
        marks[i + 1] = rss()
print((marks[n] - marks[n // 2]) / 1e6)
"""


@pytest.mark.parametrize("kind, n", [("grad with static ints", 2000), ("grad with shapes", 1024),
                                     ("vjp of fresh functions", 2000),
                                     ("jvp of fresh functions", 2000),
                                     ("hvp of fresh functions", 2000),
                                     ("vmap with static ints", 1500)])
def test_transform_caches_are_bounded(kind, n):
    """Tapes are cached per signature and per function: a loop over new static values, new
    shapes (here 1024 of one size) or new functions keeps the most recent signatures only
    (`_transforms.MAX_SIGNATURES`, 256), and the call-style transforms release a function that
    is gone. Over the second half of the loop the process may not grow (it grew by 5 KB a call
    with small functions, and by a tape a call with new shapes)."""
    run = subprocess.run([sys.executable, "-c", CACHE_LOOP, kind, str(n)], cwd=ROOT,
                         capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, PYTHONPATH=ROOT))
    assert run.returncode == 0, run.stderr[-3000:]
    growth_mb = float(run.stdout.split()[-1])
    assert growth_mb < 1.0, f"{kind}: the process grew by {growth_mb} MB over {n // 2} calls"


def test_the_call_style_cache_keeps_neither_functions_nor_objects():
    """vjp/jvp/hvp replay per function (a bound method per object) without keeping either."""
    class Model:
        calls = 0

        def loss(self, v):
            Model.calls += 1
            return (v * v * v).sum()

    model, x = Model(), np.full(3, 0.5)
    for _ in range(3):
        np.testing.assert_allclose(tapegrad.hvp(model.loss, x, x), 6 * x * x)
    assert Model.calls == 1                  # replayed: one method object per access, one trace
    f = lambda v: v * 2.0
    tapegrad.vjp(f, x)
    gone = [weakref.ref(model), weakref.ref(f)]
    del model, f
    gc.collect()
    assert [r() for r in gone] == [None, None]


def test_signature_cache_evicts_the_least_recently_used():
    from tapegrad.transforms.traced import SignatureCache
    cache = SignatureCache(limit=3)
    for k in "abc":
        cache[k] = k
    assert cache.get("a") == "a"             # now the most recent
    cache["d"] = "d"
    assert list(cache) == ["c", "a", "d"] and cache.get("b") is None


def test_fused_modules_beyond_the_bound_are_unimported(monkeypatch):
    """Each fused tape has a generated module; only the MAX_MODULES most recently used stay
    imported. A plan that holds an un-imported module's kernel keeps working."""
    from tapegrad.batch import fuse as _fuse
    monkeypatch.setattr(_fuse, "MAX_MODULES", 2)
    X = np.linspace(0.0, 1.0, 12).reshape(4, 3)
    batched, names = [], []
    for k in range(4):              # a constant of its own each: four sources, four modules
        scale = 1.25 + k
        batched.append(tapegrad.vmap(tapegrad.grad(lambda x, s=scale: (x * x).sum() * s),
                                     fuse=True))
        np.testing.assert_allclose(batched[-1](X), 2 * scale * X, rtol=1e-14)
        names.append(next(reversed(_fuse._MODULES)))
    assert len(set(names)) == 4
    imported = [f"tapegrad.{name}" in sys.modules for name in names]
    assert imported == [False, False, True, True] and len(_fuse._MODULES) == 2
    np.testing.assert_allclose(batched[0](X), 2 * 1.25 * X, rtol=1e-14)


def test_holding_the_final_loss_keeps_only_its_graph(no_gc):
    x = tapegrad.tensor([1., 2.], requires_grad=True)
    nodes, tensors = [], []
    loss = None
    for i in range(50):
        y = x + i
        z = y * y * 3
        loss = z.mean()
        nodes.append(weakref.ref(loss.grad_fn))
        tensors.append(weakref.ref(y))
    del y, z
    alive = [i for i, r in enumerate(nodes) if r() is not None]
    assert alive == [49]
    assert [i for i, r in enumerate(tensors) if r() is not None] == [49]  # an operand of z
    loss.backward()
    np.testing.assert_allclose(x.grad.numpy(), 3 * (x.detach().numpy() + 49))


def test_a_graph_is_freed_with_its_last_tensor(no_gc):
    x = tapegrad.tensor([1., 2.], requires_grad=True)
    out = tutorial(x)
    out.backward(retain_graph=True)
    walk, stack = {}, [out.grad_fn]
    while stack:
        fn = stack.pop()
        if fn is not None and hasattr(fn, "inputs") and id(fn) not in walk:
            walk[id(fn)] = weakref.ref(fn)
            stack.extend(f for f, _ in fn.next_functions)
    walk = list(walk.values())
    assert len(walk) == 4         # mean, mul, mul, add
    del fn, stack
    del out
    assert all(r() is None for r in walk)
    assert x.grad is not None        # the leaf and its gradient stay


def test_detached_state_lets_old_steps_go(no_gc):
    """The recurrent pattern: carry a state, detach it each step; old graphs are released."""
    w = tapegrad.tensor([0.5, -0.5], requires_grad=True)
    h = tapegrad.zeros(2)
    steps = []
    for _ in range(30):
        h = (h * w + 1).tanh()
        h.sum().backward()
        steps.append(weakref.ref(h.grad_fn))
        h = h.detach()
    assert all(r() is None for r in steps)


def test_non_detached_state_keeps_the_history_like_torch(no_gc):
    """Without detach the history is reachable from the state (as in PyTorch): not a leak."""
    w = tapegrad.tensor([0.5, -0.5], requires_grad=True)
    h = tapegrad.zeros(2)
    steps = []
    for _ in range(10):
        h = (h * w + 1).tanh()
        steps.append(weakref.ref(h.grad_fn))
    assert all(r() is not None for r in steps)
    h.sum().backward()
    del h
    assert all(r() is None for r in steps)


# ---- threads ----------------------------------------------------------------------------------

def _tutorial_worker(k, errors, rounds=200):
    try:
        expected = np.array([[4.5, 6.0], [7.5, 9.0]]) + 1.5 * k
        for i in range(rounds):
            x = tapegrad.tensor([[1., 2.], [3., 4.]], requires_grad=True)
            if i % 2:
                with tapegrad.no_grad():      # another thread's mode is not affected
                    assert not (x * 2).requires_grad
            out = tutorial(x + k)
            out.backward()
            np.testing.assert_allclose(x.grad.numpy(), expected, rtol=1e-15)
            assert tapegrad.is_grad_enabled()
    except Exception as err:   # noqa: BLE001 (reported by the main thread)
        errors.append(f"thread {k}: {err!r}")


def test_threads_run_the_tutorial():
    errors = []
    threads = [threading.Thread(target=_tutorial_worker, args=(k, errors)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


COLD_START = """
import sys, threading
sys.path.insert(0, {root!r})
from tests.test_memory import _tutorial_worker
errors = []
threads = [threading.Thread(target=_tutorial_worker, args=(k, errors, 20)) for k in range(4)]
for t in threads: t.start()
for t in threads: t.join()
print(errors)
sys.exit(1 if errors else 0)
"""


def test_threads_from_a_cold_start():
    """Four threads whose first backward loads the compiled interpreters at the same time."""
    run = subprocess.run([sys.executable, "-c", COLD_START.format(root=ROOT)], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
