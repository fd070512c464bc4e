"""CUDA backend of vmap (`tapegrad/_cuda.py`): kernels checked against the CPU vmap.

The kernel cases (`case_*`) run in ONE subprocess with NUMBA_ENABLE_CUDASIM=1, so that this
process (and the rest of the suite) keeps the real CPU path and no CUDA state; each case is
reported by its own test (`test_on_simulator[...]`). The simulator costs about 3 us per op per
thread: batches of 4-16 points, tapes of tens of entries. Every result is compared with the
CPU vmap on the same inputs: same pytree structure, shapes and dtypes, values to rounding.

The fallback and error paths run here without the simulator (device="auto" -> the CPU result,
device="cuda" -> RuntimeError with the reason). Tests that need a real GPU are marked `gpu`
and skipped without one.

    python tests/test_cuda.py [case ...]     # run the cases on the simulator, verbosely
"""
import functools
import json
import os
import re
import subprocess
import sys
import traceback

import numpy as np
import pytest

import tapegrad as tg
from tapegrad.core import pytree as _pytree

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SIMULATOR = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"


# ---- helpers ------------------------------------------------------------------------------------

def _host(x):
    return x.copy_to_host() if hasattr(x, "copy_to_host") else x


def assert_same(got, want, rtol=1e-12, atol=1e-12, on_device=False):
    g, sg = _pytree.flatten(got)
    w, sw = _pytree.flatten(want)
    assert sg == sw, f"structure {_pytree.describe(sg)} != {_pytree.describe(sw)}"
    for x, y in zip(g, w):
        if on_device:
            assert getattr(x, "__cuda_ndarray__", False), f"not a device array: {type(x)}"
            x = x.copy_to_host()
        else:
            assert isinstance(x, np.ndarray), type(x)
        assert x.shape == y.shape, (x.shape, y.shape)
        assert x.dtype == y.dtype, (x.dtype, y.dtype)
        np.testing.assert_allclose(x, y, rtol=rtol, atol=atol)


def check(fn, *args, in_axes=0, rtol=1e-12, atol=1e-12, on_device=False, device_args=None,
          **options):
    """vmap(fn) on the CUDA backend against the CPU backend. `device_args` (the same values as
    `args`, some on the device) are passed to the CUDA backend when given."""
    want = tg.vmap(fn, in_axes=in_axes, **options)(*args)
    got = tg.vmap(fn, in_axes=in_axes, device="cuda", **options)(
        *(args if device_args is None else device_args))
    assert_same(got, want, rtol=rtol, atol=atol, on_device=on_device)
    return got


def rng(name):
    import zlib
    return np.random.default_rng(zlib.crc32(name.encode()))


# ---- functions ----------------------------------------------------------------------------------

def rosenbrock(x):
    return tg.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


def every_elementwise(x):
    """Every unary and binary primitive of the registry (checked by case_registry_coverage)."""
    y = (x + 2.0) * 3.0 - (2.0 - x) / 3.0 + 3.0 / (x + 5.0) + x ** 2 + x ** 3.0 + 2.0 ** x
    y = y + (x + 5.0) ** 1.5
    y = y + tg.abs(x) + tg.exp(x) + tg.log(x + 5.0) + tg.log1p(x + 2.0) + tg.expm1(x)
    y = y + tg.sqrt(x + 5.0) + tg.sin(x) + tg.cos(x) + tg.tan(x / 4.0) + tg.tanh(x)
    y = y + tg.sigmoid(x) + tg.relu(x) + tg.clip(x, -0.5, 0.5) + x.reshape(2, 2).reshape(4)
    y = -y + tg.maximum(x, x[::-1]) - tg.minimum(x, 0.3) + x / (x * x + 1.0)
    y = y + (x + 3.0) ** (x * 0.1)
    y = y * tg.where(x > 0.0, x, 2.0 * x) + tg.where(x >= 0.2, x, 0.5 * x)
    y = y + tg.where(x < -0.2, x * x, x) + tg.where(x <= 0.1, 3.0 * x, x)
    y = y + tg.where(x == 0.05, x, 1.5 * x) + tg.where(x != 0.25, 0.5 * x, x)
    return tg.sum(y)


def numpy_elementwise(x):
    """The elementwise primitives numpy code reaches (checked by case_registry_coverage)."""
    y = np.arcsin(x) + np.arccos(x) + np.arctan(x) + np.arcsinh(x) + np.arctanh(0.5 * x)
    y = y + np.arccosh(x + 2.0) + np.sinh(x) + np.cosh(x) + np.log2(x + 2.0) + np.log10(x + 2.0)
    y = y + np.arctan2(x, 0.5 - x) + np.hypot(x, 0.5) + np.logaddexp(x, -x) + np.sinc(x)
    y = y + np.logaddexp2(x, 0.3) + np.fmax(x, 0.1) * np.fmin(x, -0.2) + np.copysign(x, 0.2 - x)
    y = y + np.fmod(3.0 * x, 0.7) + np.remainder(3.0 * x, 0.7) + np.heaviside(x, 0.5) * x
    y = y + x * (np.floor(3.0 * x) + np.ceil(3.0 * x) + np.rint(3.0 * x) + np.trunc(3.0 * x))
    y = y + x * np.floor_divide(3.0 * x, 0.7) + np.nan_to_num(x * x)
    return np.sum(y)


def scans(x):
    """cumsum, cumprod and sort."""
    s = np.sort(np.sin(3.0 * x))
    return np.sum(np.cumsum(x * x) * s) + np.sum(np.cumprod(1.0 + 0.5 * x))


def structural(x, W):
    """gather, gather_diff, window, segsum, segsumsq, total, segmax, segmin, segprod, matmul,
    pack, where, softmax."""
    h = tg.tanh(W @ x)
    r = h.reshape(2, 2)
    rows = tg.sum(r, axis=1) + tg.sum(r * r, axis=1)          # a segsum and a segsumsq
    picked = h[np.array([3, 0, 0, 2])]                       # integer indexing: a gather
    pairs = h[np.array([0, 1, 1])] - h[np.array([2, 1, 3])]  # pair differences: gather_diff
    return tg.stack([tg.amax(h), tg.amin(h), tg.prod(h), rows[0],
                     rows[1] * tg.sum(x) + tg.sum(tg.softmax(h) * x),
                     tg.sum(tg.where(h > 0.0, h, 0.5 * h)) + tg.sum(picked * picked)
                     + tg.sum(pairs * pairs)])


def structural_scalar(x, W):
    return tg.sum(structural(x, W) * np.array([1.0, 2.0, 3.0, 0.5, 0.25, 1.5]))


def ties_and_zeros(x):
    """amax/amin with ties (the gradient is shared) and a product with zero factors."""
    m = tg.amax(tg.stack([x[0], x[0], x[1]]))
    n = tg.amin(tg.stack([x[2], x[2], x[1]]))
    p = tg.prod(tg.stack([x[0] * x[3], x[1], x[3] - x[3], x[2]]))     # one exact zero
    q = tg.prod(x[1:])                                                 # zeros: see the case
    return m * n + p + q * tg.sum(x) + tg.prod(x * x)


def piecewise(x):
    if x[0] > 0:
        return x[0] ** 2 * x[1] + 3.0 * x[1]
    return x[1] * x[1] * x[0] - x[0] / (x[1] * x[1] + 1.0)


def alternating(B, name):
    X = rng(name).standard_normal((B, 2))
    X[0::2, 0] = np.abs(X[0::2, 0]) + 0.1
    X[1::2, 0] = -np.abs(X[1::2, 0]) - 0.1
    return X


def mlp(x, W1, W2):
    return tg.sum(tg.tanh(W2 @ tg.tanh(W1 @ x)) ** 2)


# ---- kernel cases (run on the simulator, in the subprocess) --------------------------------------

def case_grad():
    X = rng("grad").standard_normal((8, 5))
    check(tg.grad(rosenbrock), X)


def case_value():
    X = rng("value").standard_normal((6, 4))
    check(lambda x: (tg.sin(x) * x, tg.sum(x * x)), X)


def case_value_and_grad_argnums():
    X = rng("vag").standard_normal((6, 3))
    Y = rng("vag y").standard_normal((6, 3))
    f = lambda x, y: tg.sum(x * y * y + tg.exp(x - y))                        # noqa: E731
    check(tg.value_and_grad(f, argnums=(0, 1)), X, Y)
    check(tg.grad(f, argnums=1), X, Y)


def case_every_elementwise_primitive():
    X = rng("every").uniform(-0.9, 0.9, (5, 4))
    X[0] = [0.05, 0.25, -0.3, 0.6]         # the eq / ne branches of `where`
    check(tg.grad(every_elementwise), X, rtol=1e-11)
    check(tg.hessian(every_elementwise), X[:3], rtol=1e-10, atol=1e-10)
    X[0] = [0.05, 0.27, -0.3, 0.61]        # away from the jumps of floor, fmod and friends
    check(tg.grad(numpy_elementwise), X, rtol=1e-11)
    check(tg.hessian(numpy_elementwise), X[:3], rtol=1e-10, atol=1e-10)


def case_scans():
    X = rng("scans").uniform(-0.9, 0.9, (5, 4))
    X[0] = [0.2, 0.2, -0.4, 0.6]           # a tie in the sort
    check(tg.grad(scans), X, rtol=1e-11)
    check(tg.hessian(scans), X[:3], rtol=1e-10, atol=1e-10)


def case_registry_coverage():
    """The functions of these cases record every primitive of the registry but `call` and those
    the GPU does not run (`cuda=False`: vmap with device="cuda" refuses them)."""
    from tapegrad.core.registry import PRIMS
    x = np.array([0.3, -0.7, 0.9, 0.05])
    W = rng("coverage").standard_normal((4, 4))
    seen = {p.name for p in tg.trace(every_elementwise, x).prims}
    seen |= {p.name for p in tg.trace(numpy_elementwise, x).prims}
    seen |= {p.name for p in tg.trace(scans, x).prims}
    seen |= {p.name for p in tg.trace(structural, x, W).prims}
    missing = sorted(p.name for p in PRIMS
                     if p.name not in seen and p.kind != "call" and p.cuda)
    assert not missing, f"primitives no CUDA case records: {missing}"


def case_structural_jacobians():
    X = rng("struct").standard_normal((5, 4))
    W = rng("struct W").standard_normal((4, 4))
    check(tg.jacrev(structural), X, W, in_axes=(0, None))
    check(tg.jacfwd(structural, argnums=(0, 1)), X, W, in_axes=(0, None))
    check(tg.grad(structural_scalar, argnums=(0, 1)), X, W, in_axes=(0, None))


def case_structural_hessian():
    X = rng("struct h").standard_normal((4, 4))
    W = rng("struct h W").standard_normal((4, 4))
    check(tg.hessian(structural_scalar), X, W, in_axes=(0, None), rtol=1e-10, atol=1e-10)


def case_ties_and_zeros():
    X = rng("ties").standard_normal((6, 4))
    X[1, 1] = 0.0                            # one zero factor in q's product at point 1
    X[3, 1] = X[3, 2] = 0.0                  # two at point 3
    X[2, 0] = X[2, 1] = 0.7                  # a tie between the three elements of the max
    check(tg.grad(ties_and_zeros), X)
    check(tg.jacfwd(ties_and_zeros), X)
    check(tg.hessian(ties_and_zeros), X, rtol=1e-10, atol=1e-10)


def case_matmul_mlp():
    X = rng("mlp").standard_normal((6, 3))
    W1 = rng("mlp W1").standard_normal((5, 3))
    W2 = rng("mlp W2").standard_normal((2, 5))
    check(tg.grad(mlp, argnums=(0, 1, 2)), X, W1, W2, in_axes=(0, None, None))
    W1s = np.stack([W1 + 0.1 * k for k in range(6)])                       # per-point weights
    check(tg.grad(mlp, argnums=(1, 2)), X, W1s, W2, in_axes=(0, 0, None))


def case_jvp():
    X = rng("jvp").standard_normal((6, 3))
    T = rng("jvp t").standard_normal((6, 3))
    f = lambda x: (tg.sin(x) * tg.sum(x * x), tg.sum(tg.exp(x)))            # noqa: E731
    check(functools.partial(tg.jvp, f), (X,), (T,))


def case_jacfwd_jacrev():
    X = rng("jac").standard_normal((5, 3))
    f = lambda x: tg.stack([x[0] * x[1], tg.sin(x[2]), tg.sum(x ** 3.0)])   # noqa: E731
    check(tg.jacfwd(f), X)
    check(tg.jacrev(f), X)


def case_hessian():
    X = rng("hessian").standard_normal((5, 4))
    check(tg.hessian(rosenbrock), X, rtol=1e-10, atol=1e-9)


def case_float32():
    X = rng("f32").standard_normal((6, 4)).astype(np.float32)
    got = check(tg.grad(rosenbrock), X, rtol=1e-5, atol=1e-5)
    assert got.dtype == np.float32


def case_mixed_branches():
    for transform in ("value", "grad", "value_and_grad", "jacfwd", "jacrev", "hessian"):
        fn = piecewise if transform == "value" else getattr(tg, transform)(piecewise)
        X = alternating(9, f"alternating {transform}")
        check(fn, X)
        check(fn, X, chunk_size=4)          # branches across chunk boundaries


def case_three_branches_traced_on_demand():
    def three(x):
        if x[0] > 1.0:
            return x[0] * x[1] * x[1]
        elif x[0] > -1.0:
            return x[1] ** 2 * 0.5 + x[0] * x[0] * x[0]
        return (x[0] - x[1]) * (x[0] + 2.0) * x[1]
    X = np.array([[2.0, 0.3], [0.5, 1.0], [-3.0, 0.2], [2.5, -1.0], [0.1, 0.1], [-2.0, 2.0]])
    check(tg.grad(three), X)
    check(tg.grad(three), X, chunk_size=2)


def case_empty_batch():
    from numba import cuda
    X = np.zeros((0, 5))
    assert check(tg.grad(rosenbrock), X).shape == (0, 5)
    assert check(tg.value_and_grad(rosenbrock), X, device_args=(cuda.to_device(X),),
                 on_device=True)[1].shape == (0, 5)


def case_device_inputs_stay_on_device():
    from numba import cuda
    X = rng("device").standard_normal((8, 5))
    Xd = cuda.to_device(X)
    copied = []
    real_copy = type(Xd).copy_to_host

    def spy(self, *args, **kwargs):
        out = real_copy(self, *args, **kwargs)
        copied.append((out.shape, out.dtype))
        return out
    type(Xd).copy_to_host = spy
    try:
        got = check(tg.grad(rosenbrock), X, device_args=(Xd,), on_device=True)
        vg = check(tg.value_and_grad(rosenbrock), X, device_args=(Xd,), on_device=True)
    finally:
        type(Xd).copy_to_host = real_copy
    assert got.shape == (8, 5) and vg[0].shape == (8,)
    # copied to the host: a point (to trace), the guard flags, and what check() compares
    big = [s for s, d in copied if d == np.float64 and int(np.prod(s)) >= X.size]
    assert big == [(8, 5), (8, 5)], copied      # the two gradients, by check() itself


def case_device_and_host_arguments_mixed():
    from numba import cuda
    X = rng("mixed").standard_normal((6, 3))
    Y = rng("mixed y").standard_normal((6, 3))
    Z = rng("mixed z").standard_normal(3)
    f = lambda x, y, z: tg.sum(x * y * z + x * x)                         # noqa: E731
    check(tg.grad(f, argnums=(0, 1)), X, Y, Z, in_axes=(0, 0, None),
          device_args=(cuda.to_device(X), Y, cuda.to_device(Z)), on_device=True)


def case_device_inputs_every_schedule():
    """Every schedule's results arranged on the device (pytrees, jacobian blocks)."""
    from numba import cuda
    X = rng("device schedules").standard_normal((5, 3))
    T = rng("device tangents").standard_normal((5, 3))
    Xd, Td = cuda.to_device(X), cuda.to_device(T)
    f = lambda x: (tg.sin(x) * tg.sum(x * x), tg.sum(tg.exp(x)))           # noqa: E731
    g = lambda x: tg.stack([x[0] * x[1], tg.sin(x[2]), tg.sum(x ** 3.0)])  # noqa: E731
    check(f, X, device_args=(Xd,), on_device=True)
    check(functools.partial(tg.jvp, f), (X,), (T,), device_args=((Xd,), (Td,)), on_device=True)
    check(functools.partial(tg.jvp, f), (X,), (T,), device_args=((Xd,), (T,)), on_device=True)
    check(tg.jacfwd(g), X, device_args=(Xd,), on_device=True)
    check(tg.jacrev(g), X, device_args=(Xd,), on_device=True)
    check(tg.hessian(rosenbrock), X, device_args=(Xd,), on_device=True, rtol=1e-10, atol=1e-9)


def case_device_inputs_with_mixed_branches_and_chunks():
    from numba import cuda
    X = alternating(10, "device branches")
    check(tg.hessian(piecewise), X, device_args=(cuda.to_device(X),), on_device=True,
          chunk_size=3)


def case_chunked_streaming():
    X = rng("chunks").standard_normal((11, 4))
    for chunk_size in (1, 3, 4, 11, 64):
        check(tg.grad(rosenbrock), X, chunk_size=chunk_size)


def case_chunks_sized_from_device_memory():
    """The default chunk comes from the free device memory (faked here: a few kilobytes)."""
    from numba import cuda
    from tapegrad.batch import cuda as _cuda
    seen = []
    real_evaluate = tg.batch.vmap.evaluate

    def spy(traced, transform, tape, V, plan, batch, index, output, backend, fn):
        if backend.name == "cuda" and isinstance(index, slice):
            seen.append(index.stop - index.start)
        return real_evaluate(traced, transform, tape, V, plan, batch, index, output, backend, fn)

    class Context:
        def get_memory_info(self):
            return (4_000, 80_000)
    real_context = cuda.current_context
    cuda.current_context = lambda *a: Context()
    tg.batch.vmap.evaluate = spy
    try:
        X = rng("memory").standard_normal((12, 5))
        check(tg.grad(rosenbrock), X)
    finally:
        cuda.current_context = real_context
        tg.batch.vmap.evaluate = real_evaluate
    assert len(seen) > 1 and max(seen) < 12, seen
    assert _cuda.MEMORY_FRACTION * 4_000 >= max(seen) * 8 * 40     # 40+ rows a point


def case_cpu_only_primitives():
    """np.linalg's primitives have no GPU rules: device="cuda" says so, device="auto" (the GPU
    where it runs the tape) replays on the CPU, with the CPU's result."""
    def f(x):
        A = np.outer(x, x) + np.eye(3) * 2.0
        return np.linalg.slogdet(A)[1] + np.sum(np.linalg.solve(A, x))
    from numba import cuda
    X = rng("cpu only").standard_normal((4, 3))
    with pytest.raises(NotImplementedError, match="slogdet primitive has no GPU"):
        tg.vmap(tg.grad(f), device="cuda")(X)
    got = tg.vmap(tg.grad(f), device="auto")(X)
    assert_same(got, tg.vmap(tg.grad(f))(X), rtol=0, atol=0)
    with pytest.raises(NotImplementedError, match="no GPU"):      # device arrays stay an error
        tg.vmap(tg.grad(f), device="auto")(cuda.to_device(X))


def case_in_axes_one():
    X = rng("axes").standard_normal((3, 6))
    check(tg.grad(rosenbrock), X, in_axes=1)


def case_device_array_mapped_along_axis_one_is_refused():
    from numba import cuda
    Xd = cuda.to_device(rng("axis").standard_normal((3, 6)))
    with pytest.raises(NotImplementedError, match="axis 0"):
        tg.vmap(tg.grad(rosenbrock), in_axes=1, device="cuda")(Xd)


def case_auto_selects_the_simulator():
    X = rng("auto").standard_normal((4, 3))
    got = tg.vmap(tg.grad(rosenbrock), device="auto")(X)
    assert_same(got, tg.vmap(tg.grad(rosenbrock))(X))
    from tapegrad.batch import cuda as _cuda
    assert _cuda.available() and _cuda.why_unavailable() is None


def case_division_by_zero_is_ieee():
    """Both backends follow IEEE (numba's numpy error model): 1/0 is inf, not an exception."""
    X = np.array([[1.0, 0.0], [2.0, 4.0], [-0.0, 1.0]])
    out = check(lambda x: tg.sum(1.0 / x), X)
    assert np.isposinf(out[0]) and np.isneginf(out[2]) and out[1] == 0.75


CASES = sorted(name for name, obj in list(globals().items())
               if name.startswith("case_") and callable(obj))


def _run_cases(names):
    """Run the cases here (the simulator subprocess); {name: None or the traceback}."""
    results = {}
    for name in names:
        try:
            globals()[name]()
            results[name] = None
        except BaseException:     # noqa: B902 - pytest.fail/skip raise BaseException
            results[name] = traceback.format_exc()
    return results


# ---- the cases, on the simulator ----------------------------------------------------------------

@pytest.fixture(scope="module")
def simulator_results():
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1",
               PYTHONPATH=os.pathsep.join([ROOT] + [p for p in os.environ.get(
                   "PYTHONPATH", "").split(os.pathsep) if p]))
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--json"], env=env,
                          cwd=ROOT, capture_output=True, text=True, timeout=1800)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        pytest.fail(f"the simulator subprocess failed (exit {proc.returncode}):\n"
                    f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return json.loads(lines[-1])


@pytest.mark.skipif(SIMULATOR, reason="this process is the simulator subprocess")
@pytest.mark.parametrize("case", CASES)
def test_on_simulator(case, simulator_results):
    error = simulator_results.get(case, "not run")
    if error:
        pytest.fail(f"{case} on the CUDA simulator:\n{error}", pytrace=False)


# ---- no GPU: fallback and errors (this process, no simulator) -----------------------------------

def test_import_does_not_load_numba_cuda():
    code = ("import numpy as np, sys, tapegrad as tg\n"
            "assert 'numba.cuda' not in sys.modules\n"
            "tg.vmap(tg.grad(lambda x: tg.sum(x * x)))(np.ones((3, 2)))\n"
            "assert 'numba.cuda' not in sys.modules, 'the CPU vmap imported numba.cuda'\n")
    env = dict(os.environ, PYTHONPATH=ROOT)
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=ROOT)


@pytest.fixture
def no_gpu(monkeypatch):
    """The CUDA backend as on a machine without a GPU, whatever this machine has."""
    from tapegrad.batch import cuda as _cuda
    monkeypatch.setitem(_cuda._state, "reason", "no usable CUDA GPU: (test) no device")


@pytest.mark.skipif(SIMULATOR, reason="the simulator is always available")
def test_auto_falls_back_to_the_cpu(no_gpu):
    X = rng("fallback").standard_normal((5, 4))
    got = tg.vmap(tg.grad(rosenbrock), device="auto")(X)
    assert_same(got, tg.vmap(tg.grad(rosenbrock))(X), rtol=0, atol=0)


@pytest.mark.skipif(SIMULATOR, reason="the simulator is always available")
def test_cuda_without_a_gpu_raises_with_the_reason(no_gpu):
    with pytest.raises(RuntimeError, match=r"device='cuda': no usable CUDA GPU: \(test\)"):
        tg.vmap(tg.grad(rosenbrock), device="cuda")


def test_bad_device_name():
    with pytest.raises(ValueError, match="device must be"):
        tg.vmap(rosenbrock, device="gpu")


@pytest.mark.skipif(SIMULATOR, reason="probes the real driver")
def test_reasons_reported_by_the_probe(monkeypatch):
    """Without numba.cuda: install numba-cuda. Without a driver/GPU: the driver's words."""
    import numba
    from tapegrad.batch import cuda as _cuda
    monkeypatch.delattr(numba, "cuda", raising=False)
    monkeypatch.setitem(sys.modules, "numba.cuda", None)     # `from numba import cuda` fails
    reason = _cuda._probe()
    assert "numba.cuda cannot be imported" in reason and "pip install numba-cuda" in reason
    monkeypatch.undo()
    reason = _cuda._probe()
    if reason is None:
        pytest.skip("runs only without a CUDA GPU (this machine has a usable one)")
    assert reason.startswith(("no usable CUDA GPU", "the CUDA driver", "a CUDA GPU was found"))


@pytest.mark.skipif(SIMULATOR, reason="probes the real driver")
def test_auto_on_this_machine_matches_the_cpu():
    """No GPU here: the CPU result; a GPU: the CUDA result, equal to rounding."""
    X = rng("auto here").standard_normal((5, 4))
    got = tg.vmap(tg.grad(rosenbrock), device="auto")(X)
    assert_same(got, tg.vmap(tg.grad(rosenbrock))(X))


def test_generated_kernels_cover_the_registry():
    """The CUDA module is generated from the registry: one device function per elementwise
    rule, and the interpreters dispatch every opcode (no hand-kept list of ops)."""
    pytest.importorskip("numba.cuda")
    from tapegrad.batch import codegen_cuda as _codegen_cuda
    from tapegrad.core.registry import PRIMS
    source = _codegen_cuda.generate()
    for p in PRIMS:
        assert f"op == {p.opcode}:  # {p.name}" in source
        if p.kind in ("unary", "binary"):
            for rule in ("fwd", "vjp", "jvp", "vjp_jvp"):
                assert f"def {p.name}_{rule}(" in source
    # views are sliced inline: no call of a view helper `_v(...)`
    assert not [line for line in source.splitlines() if re.search(r"(?<!\w)_v\(", line)]
    compile(source, "cuda_generated.py", "exec")


# NVVM and ptxas without a GPU: numba-cuda asks the current device for its compute capability
# when it compiles a device function; this script pretends one of cc 9.0 exists (a test-only
# patch, in a subprocess) and compiles every sweep kernel to PTX for sm_90.
_COMPILE_CHECK = r"""
import sys, types
import numba.cuda.dispatcher as D
D.get_current_device = lambda: types.SimpleNamespace(compute_capability=(9, 0))
from numba import cuda, float64, int64, uint8
from tapegrad.batch.codegen_cuda import load
m = load()
A1, A2, A3, I1, I2 = float64[::1], float64[:, ::1], float64[:, :, ::1], int64[::1], int64[:, ::1]
tape = (I2, A2, I1, I2)
sigs = {
    "forward_points": tape + (A1, I1, I1, A2, uint8[::1], A2, A2, int64),
    "tangent_points": tape + (I1, I1, A2, A2, A2, A3, int64, int64, int64, int64),
    "backward_points": tape + (I1, I1, I1, A2, A2, A3, int64, int64, int64),
    "second_points": tape + (I1, I1, I1, A2, A2, A2, A3, A3, A3) + (int64,) * 6,
    "take_rows": (A2, int64, I1, int64, A2, int64),
    "put_rows": (A2, uint8[::1], int64, I1, int64, A2),
    "set_row": (A2, int64, A1),
    "gather_results": (A2, I1, A2, int64),
}
only = sys.argv[1:]
for name, sig in sigs.items():
    if only and name not in only:
        continue
    ptx, _ = cuda.compile_ptx(getattr(m, name).py_func, sig, cc=(9, 0))
    assert ".entry" in ptx
    print("compiled", name, len(ptx), flush=True)
"""


def _nvvm_works():
    code = ("from numba import cuda, float64\n"
            "def k(a):\n    a[0] = 1.0\n"
            "cuda.compile_ptx(k, (float64[::1],), cc=(9, 0))\n")
    env = dict(os.environ)
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          timeout=300).returncode == 0


@pytest.mark.slow
@pytest.mark.skipif(SIMULATOR, reason="compiles for a real GPU")
def test_kernels_compile_for_a_real_gpu():
    """NVVM compiles every generated kernel for sm_90, no GPU needed (with numba-cuda and the
    CUDA wheels: pip install "numba-cuda[cu12]"). The simulator runs any Python, so only this
    catches device code that real CUDA rejects. A few minutes (the Hessian kernel is large)."""
    if not _nvvm_works():
        pytest.skip("NVVM is not installed (pip install 'numba-cuda[cu12]')")
    env = dict(os.environ, PYTHONPATH=ROOT)
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    proc = subprocess.run([sys.executable, "-c", _COMPILE_CHECK], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-5000:]
    assert proc.stdout.count("compiled") == 8, proc.stdout


def test_bench_skips_without_a_gpu(no_gpu_subprocess_env):
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "cuda.py"), "--quick"],
                          env=no_gpu_subprocess_env, cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    if "skipped" not in proc.stdout:
        pytest.skip("runs only without a CUDA GPU (this machine has one: bench/cuda.py "
                    "measured)")


@pytest.fixture
def no_gpu_subprocess_env():
    env = dict(os.environ, PYTHONPATH=ROOT)
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    return env


# ---- a real GPU ---------------------------------------------------------------------------------

@pytest.fixture
def needs_gpu():
    """Skip without a real GPU (probed when a gpu test runs, not when the module loads)."""
    from tapegrad.batch import cuda as _cuda
    if SIMULATOR or not _cuda.available():
        pytest.skip("needs a real CUDA GPU")


@pytest.mark.gpu
@pytest.mark.parametrize("case", [c for c in CASES if c not in (
    "case_auto_selects_the_simulator", "case_chunks_sized_from_device_memory")])
def test_case_on_gpu(case, needs_gpu):
    globals()[case]()


@pytest.mark.gpu
def test_large_batch_on_gpu(needs_gpu):
    X = rng("large").standard_normal((200_000, 10))
    check(tg.grad(rosenbrock), X, rtol=1e-10, atol=1e-10)
    check(tg.hessian(rosenbrock), X[:20_000], rtol=1e-9, atol=1e-9)


@pytest.mark.gpu
def test_cuda_array_interface_inputs_on_gpu(needs_gpu):
    """CuPy arrays or PyTorch CUDA tensors are read in place (whichever is installed)."""
    X = rng("cai").standard_normal((1000, 6))
    want = tg.vmap(tg.grad(rosenbrock))(X)
    tried = 0
    try:
        import cupy
        got = tg.vmap(tg.grad(rosenbrock), device="cuda")(cupy.asarray(X))
        np.testing.assert_allclose(cupy.asnumpy(cupy.asarray(got)), want, rtol=1e-12)
        tried += 1
    except ImportError:
        pass
    try:
        import torch
        if torch.cuda.is_available():
            got = tg.vmap(tg.grad(rosenbrock), device="cuda")(torch.as_tensor(X, device="cuda"))
            np.testing.assert_allclose(torch.as_tensor(got, device="cuda").cpu().numpy(), want,
                                       rtol=1e-12)
            tried += 1
    except ImportError:
        pass
    if not tried:
        pytest.skip("needs a real CUDA GPU and cupy or a CUDA build of torch (neither is "
                    "here)")


if __name__ == "__main__":
    args = sys.argv[1:]
    as_json = "--json" in args
    names = [a for a in args if not a.startswith("--")] or CASES
    results = _run_cases(names)
    if as_json:
        print(json.dumps(results))
    else:
        for name, error in results.items():
            print(f"{'ok  ' if error is None else 'FAIL'} {name}")
            if error:
                print(error)
    sys.exit(0)
