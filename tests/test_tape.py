"""_tape.linearize: the flat tape of an eager graph, and its cache of graph structures."""
import numpy as np
import pytest

import tapegrad as tg
from tapegrad.eager import flatten as _tape
from tapegrad.eager.flatten import linearize


def _tutorial(x, k=3.0):
    return ((x + 2) * (x + 2) * k).mean()


def _rows(tape):
    return tape.E.tolist(), tape.S.tolist(), tape.NEED.tolist()


def test_same_structure_shares_the_integer_arrays():
    x1, x2 = tg.ones(2, 2, requires_grad=True), tg.full((2, 2), 5.0, requires_grad=True)
    t1, t2 = linearize((_tutorial(x1),)), linearize((_tutorial(x2),))
    assert t1.E is t2.E and t1.S is t2.S and t1.NEED is t2.NEED
    assert t1.V is not t2.V and t1.FC is not t2.FC
    assert t1.V[:4].tolist() == [1.0] * 4 and t2.V[:4].tolist() == [5.0] * 4


def test_cached_structure_equals_a_fresh_build(monkeypatch):
    x = tg.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    cached = linearize((_tutorial(x),))
    monkeypatch.setattr(_tape, "_STRUCTURES", {})
    fresh = linearize((_tutorial(x),))
    assert cached.E is not fresh.E
    assert _rows(cached) == _rows(fresh)
    assert cached.offsets == fresh.offsets and cached.sizes == fresh.sizes
    assert np.array_equal(cached.FC, fresh.FC) and np.array_equal(cached.V, fresh.V)


def test_other_shapes_dtypes_and_operand_sharing_are_other_structures():
    def key_of(out):
        return linearize((out,)).E

    x = tg.ones(2, 2, requires_grad=True)
    y = tg.ones(2, 2, requires_grad=True)
    base = key_of(x * x)
    assert key_of(tg.ones(2, 2, requires_grad=True) * tg.ones(2, 2, requires_grad=True)) \
        is not base                                                   # two leaves, not one
    assert key_of(x * y) is not base
    assert key_of(tg.ones(3, requires_grad=True) ** 1 * tg.ones(3, requires_grad=True)) \
        is not base
    xf = tg.ones(2, 2, dtype=tg.float32, requires_grad=True)
    assert linearize((xf * xf,)).V.dtype == np.float32
    assert key_of(tg.ones(2, 2, requires_grad=True) * tg.ones(2, 2, requires_grad=True)) is \
        key_of(tg.ones(2, 2, requires_grad=True) * tg.ones(2, 2, requires_grad=True))


def test_constants_are_read_per_graph_to_the_sign_of_zero():
    """Constants are not part of the structure: x * 0.0, x * -0.0 and x * 2.5 share one, and
    each tape holds its own constants, bit for bit."""
    tapes = [linearize(((tg.ones(3, requires_grad=True) * k).sum(),)) for k in (0.0, -0.0, 2.5)]
    assert tapes[0].E is tapes[1].E is tapes[2].E
    assert [np.signbit(t.FC[0, 0]) for t in tapes] == [False, True, False]
    assert tapes[2].FC[0, 0] == 2.5


def test_gradients_follow_the_values_through_a_reused_structure():
    for x0 in ([[1.0, 2.0], [3.0, 4.0]], [[-1.0, 0.5], [2.0, 7.0]], [[0.0, 0.0], [0.0, 0.0]]):
        for k in (3.0, 0.5):
            x = tg.tensor(x0, requires_grad=True)
            _tutorial(x, k).backward()
            assert np.allclose(x.grad.numpy(), 2 * k * (np.array(x0) + 2) / 4, rtol=1e-15)


def test_non_contiguous_values_fall_back_to_concatenate():
    """A transposed view cannot be joined as bytes: the structure switches to np.concatenate
    for good, and the values stay in C order."""
    for _ in range(3):
        a = tg.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], requires_grad=True)
        w = tg.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 0.0]])
        out = (a.T * w).sum()
        tape = linearize((out,))
        for s, value in enumerate(tape.values):
            assert np.array_equal(tape.view(tape.V, s), value)
        out.backward()
        assert a.grad.numpy().tolist() == w.numpy().T.tolist()


def test_mixed_dtypes_promote_the_buffer():
    a = tg.tensor([1.0, 2.0], dtype=tg.float32, requires_grad=True)
    b = tg.tensor([3.0, 4.0], dtype=tg.float64, requires_grad=True)
    for _ in range(2):
        tape = linearize(((a * b).sum(),))
        assert tape.V.dtype == np.float64
        assert tape.V[:4].tolist()[:2] in ([1.0, 2.0], [3.0, 4.0])
    (a * b).sum().backward()
    assert a.grad.dtype == np.float32 and a.grad.numpy().tolist() == [3.0, 4.0]
    assert b.grad.numpy().tolist() == [1.0, 2.0]


def test_variadic_entries_and_payloads_reuse_structures():
    for scale in (1.0, 2.0):
        a = tg.tensor([1.0, 2.0], requires_grad=True)
        b = tg.tensor([3.0], requires_grad=True)
        idx = np.array([2, 0, 0]) if scale == 1.0 else np.array([1, 1, 2])
        out = (tg.cat([a, b * scale])[idx] * tg.tensor([1.0, 10.0, 100.0])).sum()
        out.backward()
        expected = np.zeros(3)
        np.add.at(expected, idx, [1.0, 10.0, 100.0])
        assert a.grad.numpy().tolist() == expected[:2].tolist()
        assert b.grad.numpy().tolist() == [expected[2] * scale]


def test_cache_is_bounded(monkeypatch):
    monkeypatch.setattr(_tape, "_STRUCTURES", {})
    monkeypatch.setattr(_tape, "_STRUCTURES_MAX", 40)
    monkeypatch.setattr(_tape.Structure, "tokens", 0)
    for n in range(1, 30):
        x = tg.ones(n, requires_grad=True)
        y = x
        for _ in range(n % 5 + 1):
            y = y * 2.0
        y.sum().backward()
        assert x.grad.numpy().tolist() == [2.0 ** (n % 5 + 1)] * n
        assert _tape.Structure.tokens <= 40
        assert sum(len(k) for k in _tape._STRUCTURES) == _tape.Structure.tokens


def test_extra_leaves_get_slots_first():
    x = tg.ones(2, requires_grad=True)
    unused = tg.ones(3, requires_grad=True)
    tape = linearize(((x * 2.0).sum(),), [unused])
    assert tape.slot_of(unused) == 0 and tape.slot_of(x) == 1
    assert tape.S.tolist()[:2] == [[0, 3], [3, 2]]


@pytest.mark.parametrize("n", [0, 1])
def test_graph_without_entries(n):
    x = tg.ones(2, requires_grad=True)
    tape = linearize((x,), [x])
    assert tape.E.shape == (0, 8) and tape.FC.shape == (0, 2)
    assert tape.V.tolist() == [1.0, 1.0]


def _large_loss(w, x):
    return ((x @ w).clamp(min=0) - 1.0).pow(2).sum()


def _large_inputs(seed):
    rng = np.random.default_rng(seed)
    x = tg.tensor(rng.standard_normal((64, 300)))
    w = tg.tensor(rng.standard_normal((300, 200)), requires_grad=True)
    return x, w


def _expected_grad(x, w):
    h = x.numpy() @ w.detach().numpy()
    return x.numpy().T @ (2 * (np.maximum(h, 0) - 1.0) * (h > 0))


def test_large_buffers_are_reused_between_backwards():
    x, w = _large_inputs(0)
    _large_loss(w, x).backward()
    tape = linearize((_large_loss(w, x),))           # takes one of the two spares (V, G)
    structure = tape.structure
    assert structure.size >= _tape._REUSED and len(structure.spares) == 1
    tape.release(tape.V)
    del tape
    spares = {id(b) for b in structure.spares}
    assert len(spares) == 2
    w.grad = None
    _large_loss(w, x).backward()
    assert {id(b) for b in structure.spares} == spares
    np.testing.assert_allclose(w.grad.numpy(), _expected_grad(x, w), rtol=1e-12)


def test_a_buffer_still_referenced_is_not_reused():
    """A kept tape (or a view of its values) keeps its buffer out of reuse: the next tape of
    the same structure gets a new one, and the kept values stay as they were."""
    x, w = _large_inputs(1)
    _large_loss(w, x).backward()
    kept = linearize((_large_loss(w, x),))
    view = kept.V[:10].copy()
    structure = kept.structure
    structure.release(kept.V)
    for _ in range(3):
        w2 = tg.tensor(np.full((300, 200), 0.5), requires_grad=True)
        tape = linearize((_large_loss(w2, x),))
        assert tape.V is not kept.V
        del tape
    np.testing.assert_array_equal(kept.V[:10], view)


def test_reused_buffers_across_threads():
    import concurrent.futures
    cases = [_large_inputs(seed) for seed in range(4)]

    def run(case):
        x, w = case
        out = []
        for _ in range(5):
            w.grad = None
            _large_loss(w, x).backward()
            out.append(w.grad.numpy().copy())
        return out

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        results = list(pool.map(run, cases))
    for (x, w), grads in zip(cases, results):
        for g in grads:
            np.testing.assert_allclose(g, _expected_grad(x, w), rtol=1e-12)


def test_autograd_grad_reuses_and_returns_copies():
    x, w = _large_inputs(2)
    first = tg.autograd.grad(_large_loss(w, x), w)[0]
    second = tg.autograd.grad(_large_loss(w, x), w)[0]
    np.testing.assert_array_equal(first.numpy(), second.numpy())
    np.testing.assert_allclose(first.numpy(), _expected_grad(x, w), rtol=1e-12)


def test_spare_buffers_are_bounded(monkeypatch):
    x, w = _large_inputs(3)
    _large_loss(w, x).backward()
    structure = linearize((_large_loss(w, x),)).structure
    assert len(structure.spares) <= 2
    kept = _tape.Structure.spare_bytes
    assert kept == sum(b.nbytes for s in _tape._STRUCTURES.values() for b in s.spares)
    monkeypatch.setattr(_tape, "_SPARE_BYTES", kept)        # no room for more
    x2 = tg.tensor(np.ones((64, 301)))
    w2 = tg.tensor(np.ones((301, 200)), requires_grad=True)
    _large_loss(w2, x2).backward()
    other = linearize((_large_loss(w2, x2),)).structure
    assert other is not structure and other.spares == []
    assert _tape.Structure.spare_bytes <= kept
    np.testing.assert_allclose(w2.grad.numpy(), _expected_grad(x2, w2))
