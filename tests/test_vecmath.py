"""The vectorisable math of the CPU interpreters (`tapegrad.core.vecmath`): accuracy in ulps against
an extended-precision reference, IEEE special values, float32, vectorisation, and its use by the
code generator (CPU only: the CUDA source keeps the registry's `math` calls).

The reference is numpy's long double (x87 80-bit on x86-64 Linux: 11 bits beyond float64, so a
reference error below 0.001 ulp); where long double is float64 the accuracy tests are skipped.
"""
import math
import platform
import re

import numba
import numpy as np
import pytest

from tapegrad.batch import codegen_cuda as _codegen_cuda
from tapegrad.core import codegen as _codegen, vecmath as _vecmath
from tapegrad.core.registry import PRIMS

NAMES = list(_vecmath.__all__)
EXTENDED = np.finfo(np.longdouble).nmant >= 63
needs_extended = pytest.mark.skipif(not EXTENDED, reason="long double is not extended precision")

# Largest error in ulps measured on 10^6 - 10^7 points per function (`SAMPLE` below with larger
# n; tanh 10^8): exp and sigmoid round subnormal results twice (<= 0.75 ulp); elsewhere
# 0.56 - 0.72 (tanh 0.57).
MAX_ULP = {"exp": 0.76, "expm1": 0.75, "log": 0.7, "log1p": 0.7, "tanh": 0.6, "sigmoid": 0.76}


def _reference(name, x):
    x = x.astype(np.longdouble)
    with np.errstate(all="ignore"):
        if name == "sigmoid":
            return 1 / (1 + np.exp(-x))
        return getattr(np, name)(x)


def _loop(fn):
    @numba.njit(error_model="numpy")
    def run(x, y):
        for i in range(x.size):
            y[i] = fn(x[i])
    return run


_LOOPS = {}


def evaluate(name, x, out_dtype=np.float64):
    """The function applied elementwise in a compiled loop, as the interpreters call it."""
    if name not in _LOOPS:
        _LOOPS[name] = _loop(getattr(_vecmath, name))
    y = np.empty(x.shape, out_dtype)
    _LOOPS[name](x, y)
    return y


def ulp_error(y, ref, dtype=np.float64):
    """|y - ref| in units of the last place of ref (in `dtype`, subnormal spacing below its
    smallest normal); inf where y and ref differ in kind (finite, inf, nan)."""
    info = np.finfo(dtype)
    with np.errstate(all="ignore"):
        rounded = ref.astype(dtype)
        _, e = np.frexp(ref)
        ulp = np.ldexp(np.longdouble(1), np.maximum(e - info.nmant - 1, info.minexp - info.nmant))
        err = np.abs(y.astype(np.longdouble) - ref) / ulp
    same = (y == rounded) | (np.isnan(y) & np.isnan(rounded))
    finite = np.isfinite(rounded) & np.isfinite(y)
    return np.where(finite, err, np.where(same, 0.0, np.inf)).astype(np.float64)


def _signed(rng, magnitudes):
    return magnitudes * rng.choice([-1.0, 1.0], magnitudes.size)


def _tanh_seams(rng, n):
    """Points within 1e-6 of the seams of tanh's reduction, |x| = (j + 1/2) ln2/2 (k changes)."""
    j = rng.integers(0, 56, n)
    return (j + 0.5) * (math.log(2) / 2) + rng.uniform(-1e-6, 1e-6, n)


def sample(name, n, seed=0):
    """Points spanning the function's whole domain, denser where it is hard to get right."""
    rng = np.random.default_rng(seed)
    any_double = rng.integers(1, 0x7FF0000000000000, n, dtype=np.int64).view(np.float64)
    near_zero = _signed(rng, 10.0 ** rng.uniform(-310, 0, n))
    parts = {
        "exp": [rng.uniform(-746, 710, n), rng.uniform(-2, 2, n), rng.uniform(-746, -708, n)],
        "expm1": [rng.uniform(-40, 710, n), rng.uniform(-2, 2, n), near_zero],
        "log": [any_double, rng.uniform(0.5, 2, n), rng.uniform(0.99, 1.01, n)],
        "log1p": [any_double, -rng.uniform(0, 1, n), rng.uniform(-0.3, 0.42, n), near_zero],
        "tanh": [rng.uniform(-25, 25, n), rng.uniform(-1, 1, n), near_zero,
                 _signed(rng, rng.uniform(18, 20, n)), _signed(rng, _tanh_seams(rng, n))],
        "sigmoid": [rng.uniform(-800, 800, n), rng.uniform(-25, 25, n), near_zero],
    }[name]
    return np.concatenate(parts)


@needs_extended
@pytest.mark.parametrize("name", NAMES)
def test_accuracy_below_one_ulp(name):
    x = sample(name, 100_000)
    err = ulp_error(evaluate(name, x), _reference(name, x))
    worst = int(np.argmax(err))
    assert err[worst] <= MAX_ULP[name], f"{name}({x[worst]!r}): {err[worst]:.3f} ulp"


_MAX = np.finfo(np.float64).max
_SUB = 5e-324
SPECIAL = {
    "exp": [0.0, -0.0, np.inf, -np.inf, np.nan, 1.0, _SUB, -_SUB, 709.782712893384,
            np.nextafter(709.782712893384, np.inf), -708.3964185322641, -745.1332191019411,
            -745.1332191019412, -746.0, 1000.0, -1000.0],
    "expm1": [0.0, -0.0, np.inf, -np.inf, np.nan, _SUB, -_SUB, 1e-310, 2.0 ** -1022, 1e-20,
              -1e-20, 709.782712893384, np.nextafter(709.782712893384, np.inf), -40.0, -1e3],
    "log": [0.0, -0.0, -1.0, -np.inf, np.inf, np.nan, 1.0, 2.0, 0.5, _SUB, 1e-310,
            2.0 ** -1022, _MAX, -_SUB],
    "log1p": [0.0, -0.0, -1.0, -1.5, -np.inf, np.inf, np.nan, _SUB, -_SUB, 1e-300, -1e-300,
              _MAX, np.nextafter(-1.0, 0.0), 1.0],
    "tanh": [0.0, -0.0, np.inf, -np.inf, np.nan, -np.nan, _SUB, -_SUB, 1e-300, -1e-300,
             2.0 ** -1022, 1e-9, -1e-9, 19.0, 20.0, -20.0, 1e300, -1e300, 0.35, -0.35,
             math.log(2) / 4, -math.log(2) / 4, 18.19, 18.2, 19.06, 19.07, -19.07, 19.5,
             np.nextafter(19.5, 0), np.nextafter(19.5, np.inf), _MAX, -_MAX],
    "sigmoid": [0.0, -0.0, np.inf, -np.inf, np.nan, _SUB, -_SUB, 40.0, -40.0, -745.0, -800.0,
                800.0],
}


@needs_extended
@pytest.mark.parametrize("name", NAMES)
def test_special_values(name):
    """Exactly the correctly rounded result, sign of zero included, at the edges of the domain:
    zeros, infinities, NaN, subnormals, overflow and underflow thresholds, poles."""
    x = np.array(SPECIAL[name])
    got = evaluate(name, x)
    with np.errstate(over="ignore"):
        want = _reference(name, x).astype(np.float64)
    for xi, g, w in zip(x, got, want):
        same = (np.isnan(g) and np.isnan(w)) or (g == w and np.signbit(g) == np.signbit(w))
        assert same, f"{name}({xi!r}) = {g!r}, want {w!r}"


def test_known_results():
    """The IEEE results that the reference also gives, spelled out."""
    assert math.copysign(1, evaluate("tanh", np.array([-0.0]))[0]) == -1
    assert evaluate("log1p", np.array([-1.0]))[0] == -np.inf
    assert np.isnan(evaluate("log", np.array([-1.0]))[0])
    assert evaluate("exp", np.array([709.782712893384, 709.7827128933841])).tolist() == [
        1.7976931348622732e308, np.inf]
    assert evaluate("exp", np.array([-745.1332191019411, -745.1332191019412])).tolist() == [
        5e-324, 0.0]
    tiny = np.array([1e-300, -1e-300, 5e-324])
    for name in ("expm1", "log1p", "tanh"):
        assert evaluate(name, tiny).tolist() == tiny.tolist(), name
    # tanh(x) = x once rounded below 2^-26.5 (the next term, x^3/3, is under half an ulp)
    x = np.concatenate([np.geomspace(1e-300, 1e-8, 2000), np.geomspace(5e-324, 2e-308, 50)])
    assert (evaluate("tanh", x) == x).all() and (evaluate("tanh", -x) == -x).all()
    # saturation: 1 from 19.0615... (1 - tanh < 2^-54) on, never above 1; odd everywhere
    y = evaluate("tanh", np.linspace(19.07, 800, 1000))
    assert (y == 1.0).all() and (evaluate("tanh", -np.linspace(19.07, 800, 1000)) == -1.0).all()
    x = np.random.default_rng(2).uniform(-25, 25, 10_000)
    assert (evaluate("tanh", -x) == -evaluate("tanh", x)).all()
    assert (np.abs(evaluate("tanh", x)) <= 1.0).all()


@needs_extended
@pytest.mark.parametrize("name", NAMES)
def test_float32_keeps_float32_accuracy(name):
    """A float32 argument, computed in float64 and stored as float32: rounded once but for
    double rounding (at most 0.5 ulp + 2^-29 relative)."""
    with np.errstate(all="ignore"):
        x = sample(name, 20_000, seed=1).astype(np.float32)
    err = ulp_error(evaluate(name, x, np.float32), _reference(name, x), np.float32)
    assert err.max() <= 0.5001, f"{name}: {err.max():.4f} ulp (float32)"


def _has_avx2():
    try:
        from llvmlite import binding
        return platform.machine() in ("x86_64", "AMD64") and \
            "+avx2" in binding.get_host_cpu_features().flatten()
    except Exception:   # noqa: BLE001 - no feature list: nothing to check against
        return False


@pytest.mark.skipif(not _has_avx2(), reason="checks x86-64 AVX2 vector instructions")
@pytest.mark.parametrize("name", NAMES)
def test_loops_vectorise(name):
    """Inlined, and the loop body in packed double-precision instructions on 256/512-bit
    registers: no call left (a libm call would keep the loop scalar)."""
    evaluate(name, np.ones(8))
    run = _LOOPS[name]
    asm = run.inspect_asm(run.signatures[0])
    packed = re.findall(r"\bv(?:fmadd|fnmadd|fmsub|mul|add|sub)\w*pd\s[^\n]*%[yz]mm", asm)
    assert len(packed) >= 10, f"{name}: {len(packed)} packed instructions"
    assert not re.search(rf"_vecmath\d*{name}", "\n".join(re.findall(r"call\w*\s[^\n]*", asm)))


@pytest.mark.skipif(not _has_avx2(), reason="checks x86-64 AVX2 vector instructions")
def test_tanh_one_path_one_division():
    """tanh is one formula for every x: no compare-and-blend between two paths in its loop and
    one packed division (the vector loop's; the scalar remainder loop has its own)."""
    evaluate("tanh", np.ones(8))
    run = _LOOPS["tanh"]
    asm = run.inspect_asm(run.signatures[0])
    assert len(re.findall(r"\bvdivpd\s[^\n]*%[yz]mm", asm)) == 1
    assert not re.findall(r"\bv(?:cmp\w*pd|blendv?pd|blendmpd)\s[^\n]*%[yz]mm", asm)


def test_cpu_generator_calls_vecmath_and_cuda_keeps_math():
    """The registry's elementwise expressions say `math.exp(x)`, `_sigmoid(x)`: the CPU
    interpreters call `core.vecmath` for each function it has (codegen._VECMATH), the CUDA ones
    keep the text. (Structural kernels keep libm's math, as numpy's linalg does: slogdet's log.)"""
    cuda = _codegen_cuda.generate()
    assert set(_codegen._VECMATH.values()) == set(_vecmath.__all__)
    assert "_vm." not in cuda
    for layout in ("flat", "column"):
        rules = "".join(code for p in PRIMS if p.elementwise
                        for code in _codegen.elementwise_rules(p, layout))
        for call, name in _codegen._VECMATH.items():
            assert f"_vm.{name}(" in rules
            assert re.search(rf"(?<![\w.]){re.escape(call)}\(", rules) is None
            assert f"{call}(" in cuda
