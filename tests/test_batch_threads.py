"""Threads of a batched launch: by the work's size and the cores free now (`batch.threads`).

The machine's state is faked (files in the layout of /proc, a monkeypatched count): these
tests check the decisions, never a timing."""
import numba
import numpy as np
import pytest

import tapegrad as tg
from tapegrad.batch import cpu, fuse as fused_tier, threads


@pytest.fixture(autouse=True)
def _fresh_count(monkeypatch):
    monkeypatch.setattr(threads, "_last", (-1.0, 1))


def _task(root, tid, name, state):
    (root / str(tid)).mkdir()
    (root / str(tid) / "stat").write_bytes(f"{tid} ({name}) {state} 1 2 3 4\n".encode())


def test_runnable_threads_of_the_machine_from_loadavg(tmp_path):
    path = tmp_path / "loadavg"
    path.write_bytes(b"0.52 0.41 0.30 3/121 4242\n")
    assert threads._runnable_threads(str(path)) == 3
    path.write_bytes(b"garbage\n")
    assert threads._runnable_threads(str(path)) is None
    assert threads._runnable_threads(str(tmp_path / "missing")) is None


def test_own_runnable_threads_read_the_state_after_the_command_name(tmp_path):
    _task(tmp_path, 11, "python", "R")
    _task(tmp_path, 12, "numba ) R worker", "S")     # a name that holds ") R": sleeping
    _task(tmp_path, 13, "omp worker", "R")
    _task(tmp_path, 14, "python", "D")
    assert threads._own_runnable_threads(str(tmp_path)) == 2
    assert threads._own_runnable_threads(str(tmp_path / "missing")) == 1


@pytest.mark.parametrize("cores, running, own, free", [
    (2, 1, 1, 2),        # an idle machine: every core
    (2, 2, 1, 1),        # one busy process elsewhere: the other core
    (2, 3, 2, 1),        # ... while two of ours (spinning workers) are counted
    (2, 5, 1, 1),        # oversubscribed: one thread, never zero
    (8, 3, 1, 6),
    (4, None, 1, 4),     # no count (not Linux): every core
])
def test_free_cores(monkeypatch, cores, running, own, free):
    monkeypatch.setattr(threads, "_cores", lambda: cores)
    monkeypatch.setattr(threads, "_runnable_threads", lambda: running)
    monkeypatch.setattr(threads, "_own_runnable_threads", lambda: own)
    assert threads.free_cores() == free


def test_the_count_is_reused_for_a_moment(monkeypatch):
    calls = []
    monkeypatch.setattr(threads, "_count_free_cores", lambda: calls.append(1) or 3)
    assert threads.free_cores() == threads.free_cores() == 3
    assert len(calls) == 1
    monkeypatch.setattr(threads, "_last", (-1.0, 3))
    threads.free_cores()
    assert len(calls) == 2


def test_small_work_runs_on_one_thread_and_large_on_the_free_cores(monkeypatch):
    monkeypatch.setattr(threads, "free_cores", lambda: 1)
    assert threads.for_work(threads.SERIAL_WORK - 1) == 1
    assert threads.for_work(10 * threads.SERIAL_WORK) == 1
    monkeypatch.setattr(threads, "free_cores", lambda: 64)
    assert threads.for_work(10 * threads.SERIAL_WORK) == numba.get_num_threads()
    assert threads.for_work(0) == 1


def test_limited_sets_numba_s_count_for_the_region_and_restores_it():
    before = numba.get_num_threads()
    with threads.limited(1):
        assert numba.get_num_threads() == 1
    assert numba.get_num_threads() == before
    with pytest.raises(RuntimeError):
        with threads.limited(1):
            raise RuntimeError("the count is restored on the way out")
    assert numba.get_num_threads() == before
    with threads.limited(before + 5):          # more than numba has: left as it is
        assert numba.get_num_threads() == before


def rosenbrock(x):
    return np.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


@pytest.mark.parametrize("fuse", [False, True])
def test_a_busy_machine_replays_on_one_thread_with_the_same_results(monkeypatch, fuse):
    X = np.random.default_rng(5).standard_normal((4000, 12))
    g = tg.vmap(tg.grad(rosenbrock), fuse=fuse)
    want = g(X)
    seen = []
    real_launch = cpu.launch

    def spy(kernel, *args):
        # numba's count in the region; the tile driver's n_workers (the fused kernel has none)
        seen.append((numba.get_num_threads(), args[-2] if len(args) > 3 else 1))
        return real_launch(kernel, *args)
    monkeypatch.setattr(cpu, "launch", spy)
    monkeypatch.setattr(fused_tier, "launch", spy)
    monkeypatch.setattr(threads, "free_cores", lambda: 1)
    got = g(X)
    np.testing.assert_array_equal(got, want)
    assert seen and all(n == 1 and workers == 1 for n, workers in seen)
    monkeypatch.setattr(threads, "free_cores", lambda: numba.get_num_threads())
    np.testing.assert_array_equal(g(X), want)
