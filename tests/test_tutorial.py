"""PyTorch's autograd tutorial, run by tapegrad.

Every program of the tutorial is checked against hard-coded values (from PyTorch 2.13), so the
file runs without torch; where torch is importable, the same program also runs on torch and the
two are compared. tapegrad's default float is float64 (torch's is float32): numbers and prints
are compared, dtype names are not.
"""
import contextlib
import io
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import tapegrad
import tapegrad.__main__ as demo

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def torch():
    """torch with float64 as its default dtype (tapegrad's), restored afterwards."""
    torch = pytest.importorskip("torch")
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield torch
    torch.set_default_dtype(previous)


def tutorial(L, x):
    y = x + 2
    z = y * y * 3
    out = z.mean()
    return y, z, out


def values(t):
    return np.asarray(t.detach().numpy() if hasattr(t, "detach") else t, dtype=np.float64)


# ---- the first program -------------------------------------------------------------------------

def test_tutorial_prints():
    x = tapegrad.ones(2, 2, requires_grad=True)
    y, z, out = tutorial(tapegrad, x)
    assert str(x) == "tensor([[1., 1.],\n        [1., 1.]], requires_grad=True)"
    assert str(y) == "tensor([[3., 3.],\n        [3., 3.]], grad_fn=<AddBackward0>)"
    assert str(z) == "tensor([[27., 27.],\n        [27., 27.]], grad_fn=<MulBackward0>)"
    assert str(out) == "tensor(27., grad_fn=<MeanBackward0>)"
    assert re.fullmatch(r"<AddBackward0 object at 0x[0-9a-f]+>", repr(y.grad_fn))
    assert y.grad_fn.name() == "AddBackward0"


def test_tutorial_gradient_of_ones():
    x = tapegrad.ones(2, 2, requires_grad=True)
    out = tutorial(tapegrad, x)[2]
    assert out.backward() is None
    assert x.grad.shape == (2, 2) and x.grad.dtype == x.dtype
    np.testing.assert_array_equal(x.grad.numpy(), np.full((2, 2), 4.5))
    assert str(x.grad) == "tensor([[4.5000, 4.5000],\n        [4.5000, 4.5000]])"
    assert x.grad.requires_grad is False and x.grad.grad_fn is None


def test_tutorial_gradient_of_a_matrix():
    x = tapegrad.tensor([[1., 2.], [3., 4.]], requires_grad=True)
    tutorial(tapegrad, x)[2].backward()
    np.testing.assert_allclose(x.grad.numpy(), [[4.5, 6.0], [7.5, 9.0]], rtol=1e-15)


def test_tutorial_float32_stays_float32():
    x = tapegrad.ones(2, 2, dtype=tapegrad.float32, requires_grad=True)
    y, z, out = tutorial(tapegrad, x)
    assert y.dtype == z.dtype == out.dtype == np.float32
    out.backward()
    assert x.grad.dtype == np.float32
    np.testing.assert_array_equal(x.grad.numpy(), np.full((2, 2), 4.5, np.float32))
    assert str(out) == "tensor(27., dtype=tapegrad.float32, grad_fn=<MeanBackward0>)"


def test_tutorial_matches_torch(torch):
    for data in ([[1., 1.], [1., 1.]], [[1., 2.], [3., 4.]], [[-0.5, 0.25], [7.0, -3.0]]):
        results = []
        for L in (tapegrad, torch):
            x = L.tensor(data, requires_grad=True)
            y, z, out = tutorial(L, x)
            out.backward()
            results.append(([str(t) for t in (y, z, out)], values(x.grad)))
        assert results[0][0] == results[1][0]
        np.testing.assert_allclose(results[0][1], results[1][1], rtol=1e-15)


def test_tutorial_prints_match_torch_float32(torch):
    with_torch_default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)
    try:
        tx = torch.ones(2, 2, requires_grad=True)
        expected = [str(t) for t in tutorial(torch, tx)]
    finally:
        torch.set_default_dtype(with_torch_default)
    got = [str(t) for t in tutorial(tapegrad, tapegrad.ones(2, 2, requires_grad=True))]
    assert got == expected


# ---- requires_grad_ ------------------------------------------------------------------------------

def test_requires_grad_switched_on_later():
    tapegrad.manual_seed(0)
    a = tapegrad.randn(2, 2)
    a = (a * 3) / (a - 1)
    assert a.requires_grad is False and a.grad_fn is None and a.is_leaf
    assert a.requires_grad_(True) is a
    assert a.requires_grad is True and a.is_leaf
    b = (a * a).sum()
    assert b.grad_fn.name() == "SumBackward0"
    assert re.fullmatch(r"<SumBackward0 object at 0x[0-9a-f]+>", repr(b.grad_fn))
    assert re.fullmatch(r"<SumBackward0 object at 0x[0-9a-f]+>", str(b.grad_fn))
    b.backward()
    np.testing.assert_allclose(a.grad.numpy(), 2 * a.detach().numpy(), rtol=1e-15)


def test_requires_grad_switched_on_later_matches_torch(torch):
    data = np.random.default_rng(1).standard_normal((2, 2))
    names = []
    for L in (tapegrad, torch):
        a = L.tensor(data)
        a = (a * 3) / (a - 1)
        flags = [a.requires_grad]
        a.requires_grad_(True)
        flags.append(a.requires_grad)
        b = (a * a).sum()
        names.append((flags, b.grad_fn.name(), re.sub("0x[0-9a-f]+", "ADDR", repr(b.grad_fn))))
    assert names[0] == names[1] == ([False, True], "SumBackward0", "<SumBackward0 object at ADDR>")


# ---- vector-Jacobian products, scalars, accumulation ----------------------------------------------

def abc(L, a, b, c):
    a = L.tensor(a, requires_grad=True)
    b = L.tensor(b, requires_grad=True)
    c = L.tensor(c, requires_grad=True)
    return a, b, c, 3 * a + 2 * b * b + L.log(c)


def test_vector_jacobian_product():
    a, b, c, y = abc(tapegrad, [1., 2., 3.], [3., 4., 5.], [6., 7., 8.])
    assert y.grad_fn.name() == "AddBackward0"
    y.backward(tapegrad.tensor([0.1, 1.0, 0.0001]), retain_graph=True)
    np.testing.assert_allclose(a.grad.numpy(), [0.3, 3.0, 3e-4], rtol=1e-14)
    np.testing.assert_allclose(b.grad.numpy(), [1.2, 16.0, 2e-3], rtol=1e-14)
    np.testing.assert_allclose(c.grad.numpy(), [1 / 60, 1 / 7, 1.25e-5], rtol=1e-14)
    assert str(c.grad) == "tensor([1.6667e-02, 1.4286e-01, 1.2500e-05])"
    # retain_graph=True: a second product with another vector accumulates
    y.backward(tapegrad.tensor([1.0, 0.0, 0.0]))
    np.testing.assert_allclose(a.grad.numpy(), [3.3, 3.0, 3e-4], rtol=1e-14)


def test_vector_jacobian_product_matches_torch(torch):
    grads = []
    for L in (tapegrad, torch):
        a, b, c, y = abc(L, [1., 2., 3.], [3., 4., 5.], [6., 7., 8.])
        y.backward(L.tensor([0.1, 1.0, 0.0001]), retain_graph=True)
        grads.append([values(t.grad) for t in (a, b, c)] + [str(t.grad) for t in (a, b, c)])
    for mine, theirs in zip(*grads):
        if isinstance(mine, str):
            assert mine == theirs
        else:
            np.testing.assert_allclose(mine, theirs, rtol=1e-15)


def test_scalar_inputs():
    a, b, c, y = abc(tapegrad, 0.1, 1.0, 0.1)
    assert y.shape == () and y.ndim == 0
    y.backward()
    assert [t.grad.item() for t in (a, b, c)] == pytest.approx([3.0, 4.0, 10.0], rel=1e-14)
    assert all(t.grad.shape == () for t in (a, b, c))


def test_accumulation_and_zeroing():
    a, b, c, y = abc(tapegrad, 1.0, 1.0, 1.0)
    y.backward(retain_graph=True)
    assert [t.grad.item() for t in (a, b, c)] == [3.0, 4.0, 1.0]
    y.backward()
    assert [t.grad.item() for t in (a, b, c)] == [6.0, 8.0, 2.0]
    a.grad.zero_()
    b.grad = None
    assert a.grad.item() == 0.0 and b.grad is None
    y2 = 3 * a + 2 * b * b + tapegrad.log(c)
    y2.backward()
    assert [t.grad.item() for t in (a, b, c)] == [3.0, 4.0, 3.0]


def test_accumulation_matches_torch(torch):
    out = []
    for L in (tapegrad, torch):
        a, b, c, y = abc(L, 1.0, 1.0, 1.0)
        y.backward(retain_graph=True)
        first = [t.grad.item() for t in (a, b, c)]
        y.backward()
        out.append((first, [t.grad.item() for t in (a, b, c)]))
    assert out[0] == out[1] == ([3.0, 4.0, 1.0], [6.0, 8.0, 2.0])


# ---- errors --------------------------------------------------------------------------------------

FREED = ("Trying to backward through the graph a second time (or directly access saved tensors "
         "after they have already been freed). Saved intermediate values of the graph are freed "
         "when you call .backward() or autograd.grad(). Specify retain_graph=True if you need to "
         "backward through the graph a second time or if you need to access saved tensors after "
         "calling backward.")


def test_second_backward_without_retain_graph_raises():
    x = tapegrad.ones(2, 2, requires_grad=True)
    out = tutorial(tapegrad, x)[2]
    out.backward()
    with pytest.raises(RuntimeError) as info:
        out.backward()
    assert str(info.value) == FREED
    np.testing.assert_array_equal(x.grad.numpy(), np.full((2, 2), 4.5))   # untouched
    a, b, c, y = abc(tapegrad, 1.0, 1.0, 1.0)
    y.backward()
    with pytest.raises(RuntimeError, match="backward through the graph a second time"):
        y.backward()
    # a new graph built on a freed part needs the freed values too
    with pytest.raises(RuntimeError, match="backward through the graph a second time"):
        (y * 2).backward()


# Whether a second backward works, per expression, as PyTorch 2.13 decides: only where the path
# holds a saved tensor (PyTorch saves the wrapped number of x * 2 and x / 2).
SECOND_BACKWARD = [
    ("x + 2", True), ("2 + x", True), ("x - 2", True), ("2 - x", True), ("-x", True),
    ("x + x", True), ("x - x", True), ("x.sum()", True), ("x.mean()", True), ("x[0]", True),
    ("x[0:1]", True), ("x.reshape(2, 1)", True), ("x.unsqueeze(0)", True), ("x.sum(0)", True),
    ("L.cat([x, x])", True), ("L.stack([x, x])", True),
    ("x * 2", False), ("2 * x", False), ("x / 2", False), ("2 / x", False), ("x ** 2", False),
    ("2 ** x", False), ("x * x", False), ("x / x", False), ("x.exp()", False), ("x.log()", False),
    ("x.tanh()", False), ("x.sigmoid()", False), ("x.relu()", False), ("x.abs()", False),
    ("x.clamp(0, 1)", False), ("x.amax()", False), ("x.prod()", False), ("x @ x", False),
    ("x[[0, 1]]", False), ("L.maximum(x, x)", False), ("L.where(x > 0, x, x)", False),
]


def second_backward(L, expr):
    x = L.tensor([1., 2.], requires_grad=True)
    y = eval(expr).sum()
    y.backward()
    try:
        y.backward()
    except RuntimeError as err:
        assert str(err) == FREED
        return False, values(x.grad)
    return True, values(x.grad)


@pytest.mark.parametrize("expr,works", SECOND_BACKWARD)
def test_second_backward_where_torch_allows_it(expr, works):
    ok, grad = second_backward(tapegrad, expr)
    assert ok is works


@pytest.mark.parametrize("expr,works", SECOND_BACKWARD)
def test_second_backward_matches_torch(torch, expr, works):
    mine, theirs = second_backward(tapegrad, expr), second_backward(torch, expr)
    assert mine[0] == theirs[0] == works
    np.testing.assert_allclose(mine[1], theirs[1], rtol=1e-15)


def test_retain_graph_allows_many_backwards():
    a, b, c, y = abc(tapegrad, 1.0, 1.0, 1.0)
    for _ in range(3):
        y.backward(retain_graph=True)
    y.backward()
    assert [t.grad.item() for t in (a, b, c)] == [12.0, 16.0, 4.0]


def test_implicit_gradient_needs_a_scalar():
    a, b, c, y = abc(tapegrad, [1., 2., 3.], [3., 4., 5.], [6., 7., 8.])
    with pytest.raises(RuntimeError) as info:
        y.backward()
    assert str(info.value) == "grad can be implicitly created only for scalar outputs"
    # one element is fine, whatever the shape
    x = tapegrad.tensor([[2.]], requires_grad=True)
    (x * x).backward()
    assert x.grad.tolist() == [[4.0]]


def test_gradient_of_the_wrong_shape():
    a, b, c, y = abc(tapegrad, [1., 2., 3.], [3., 4., 5.], [6., 7., 8.])
    with pytest.raises(RuntimeError) as info:
        y.backward(tapegrad.tensor([1., 2.]))
    assert str(info.value) == ("Mismatch in shape: grad_output[0] has a shape of "
                               "tapegrad.Size([2]) and output[0] has a shape of "
                               "tapegrad.Size([3]).")
    assert a.grad is None


def test_error_messages_match_torch(torch):
    def messages(L):
        a, b, c, y = abc(L, [1., 2., 3.], [3., 4., 5.], [6., 7., 8.])
        found = []
        for call in (lambda: y.backward(), lambda: y.backward(L.tensor([1., 2.])),
                     lambda: y.backward(L.ones(1, 3))):
            with pytest.raises(RuntimeError) as info:
                call()
            found.append(str(info.value).replace("torch.", "tapegrad."))
        y.sum().backward()
        with pytest.raises(RuntimeError) as info:
            y.sum().backward()
        found.append(str(info.value))
        return found
    assert messages(tapegrad) == messages(torch)


# ---- python -m tapegrad --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def main_run():
    """`python -m tapegrad`, run once for the tests of its output."""
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    run = subprocess.run([sys.executable, "-m", "tapegrad"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    return run


def test_main_prints_the_tutorial(main_run):
    out = main_run.stdout
    for expected in [
        ">>> x = tapegrad.ones(2, 2, requires_grad=True)",
        "tensor([[3., 3.],\n        [3., 3.]], grad_fn=<AddBackward0>)",
        "tensor([[27., 27.],\n        [27., 27.]], grad_fn=<MulBackward0>)",
        "tensor(27., grad_fn=<MeanBackward0>)",
        ">>> out.backward()\n>>> x.grad\ntensor([[4.5000, 4.5000],\n        [4.5000, 4.5000]])",
        "tensor([[4.5000, 6.0000],\n        [7.5000, 9.0000]])",
        ">>> a.requires_grad\nFalse",
        ">>> a.requires_grad\nTrue",
        "<SumBackward0 object at 0x",
        ">>> c.grad\ntensor([1.6667e-02, 1.4286e-01, 1.2500e-05])",
        "(tensor(3.), tensor(4.), tensor(10.))",
        "(tensor(6.), tensor(8.), tensor(2.))",
        "(tensor([2., 4.]),)",
    ]:
        assert expected in out
    assert main_run.stderr == ""


def test_main_prints_the_three_uses_in_order(main_run):
    """Each use under its label: the tutorial, a transformed function replayed (with the time
    of a replayed call), vmap(grad(f)) (with its throughput); and where the cache is."""
    out = main_run.stdout
    labels = ["== 1. Eager tensors: PyTorch's autograd tutorial ==",
              "== 2. A transformed function: grad, traced once and replayed compiled ==",
              "== 3. Batched replay: vmap(grad(f)) at every row of X =="]
    assert [out.count(label) for label in labels] == [1, 1, 1]
    first, second, third = (out.index(label) for label in labels)
    assert first < out.index(">>> out.backward()") < second
    grad_part, batched_part = out[second:third], out[third:]
    assert ">>> grad_rosenbrock(np.zeros(5))" in grad_part
    assert "array([-2., -2., -2., -2.,  0.])" in grad_part
    assert re.search(r"a replayed call: +[0-9.]+ (ns|us|ms) ", grad_part)
    assert "(1000000, 10)" in batched_part and ">>> np.allclose(G[7]" in batched_part
    assert re.search(r"timing at 1,000,000 points: [0-9.]+ (ms|s) per call, [0-9.]+ million "
                     r"points per second", batched_part)
    from tapegrad.core import cache
    assert f"compiled code is cached in {cache.cache_dir()} (" in out[:first]


_CACHE_PROBE = """
import sys
from tapegrad.__main__ import _cache_lines, _cached
sys.path.insert(0, sys.argv[1])
import probe_module
print(_cached(probe_module.f), " ".join(_cache_lines(probe_module.f).split()))
probe_module.f(1.0)
print(_cached(probe_module.f))
"""


def test_main_knows_whether_compiled_code_is_cached(tmp_path):
    """The demo's cold-cache note is printed when numba's cache has no code for a function
    yet, not once it has (a function of a module of its own, with a private numba cache)."""
    (tmp_path / "probe_module.py").write_text(
        "import numba\n@numba.njit(cache=True)\ndef f(x):\n    return x + 1.0\n")
    numba_cache = tmp_path / "numba-cache"
    env = dict(os.environ, NUMBA_CACHE_DIR=str(numba_cache), TAPEGRAD_CACHE_DIR=str(tmp_path),
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    run = subprocess.run([sys.executable, "-c", _CACHE_PROBE, str(tmp_path)], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    before, after = run.stdout.splitlines()
    assert before.startswith(f"False compiled code is cached in {tmp_path} ")
    assert f" and {numba_cache}{os.sep}" in before and "(numba's cache of them)" in before
    assert after == "True"


def _session(namespace, sections):
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        for title, source in sections:
            demo._run(source, namespace, buffer.write)
    return re.sub(r"0x[0-9a-f]+", "0x...", buffer.getvalue())


def test_main_sessions_run_unchanged_on_torch(torch):
    """The demo's lines are PyTorch code: run on torch, they print the same (the randn section
    is left out: the generators differ)."""
    sections = [s for s in demo.SECTIONS if "randn" not in s[1]]
    assert len(sections) == len(demo.SECTIONS) - 1
    assert _session({"tapegrad": tapegrad}, sections) == _session({"tapegrad": torch}, sections)
