"""Tests for tapegrad.eager.format: PyTorch-identical tensor reprs.

The first half uses expected strings copied from real PyTorch 2.13 output
(with ``torch.set_default_dtype(torch.float64)``, tapegrad's default, and
``torch.`` renamed ``tapegrad.``), so it runs without torch.  The second
half compares against torch directly when it is importable.
"""

import re
import sys

import numpy as np
import pytest

from tapegrad.eager import format as _format
from tapegrad.eager.format import (
    format_html,
    format_tensor,
    get_printoptions,
    printoptions,
    set_printoptions,
)

nan, inf = np.nan, np.inf


@pytest.fixture(autouse=True)
def _reset_printoptions():
    """Every test starts and ends with default options (ours and torch's)."""
    set_printoptions(profile="default")
    yield
    set_printoptions(profile="default")
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_printoptions(profile="default")
        torch.set_default_dtype(torch.float32)


# ---------------------------------------------------------------------------
# Hard-coded PyTorch output
# ---------------------------------------------------------------------------

CASES = [
    # basic floats
    (np.full((2, 2), 3.0), "tensor([[3., 3.],\n        [3., 3.]])"),
    (np.array(27.0), "tensor(27.)"),
    (np.array([1e-8, 1.0]), "tensor([1.0000e-08, 1.0000e+00])"),
    # max/min == 1e4 > 1e3, so torch switches to scientific here
    (np.array([0.1, 1.0, 0.0001]), "tensor([1.0000e-01, 1.0000e+00, 1.0000e-04])"),
    (np.array([0.1, 1.0, 0.001]), "tensor([0.1000, 1.0000, 0.0010])"),
    (np.array([1e-300, 1e300]), "tensor([1.0000e-300, 1.0000e+300])"),
    (np.array([1.0, 1e9]), "tensor([1.0000e+00, 1.0000e+09])"),
    # ints and bools
    (np.arange(5), "tensor([0, 1, 2, 3, 4])"),
    (np.array([[-100, 2], [3, 40000]]), "tensor([[ -100,     2],\n        [    3, 40000]])"),
    (np.array([1, -2, 3], dtype=np.int32), "tensor([ 1, -2,  3], dtype=tapegrad.int32)"),
    (np.array([0, 255], dtype=np.uint8), "tensor([  0, 255], dtype=tapegrad.uint8)"),
    (np.array([True, False, True]), "tensor([ True, False,  True])"),
    (np.array([[True], [False]]), "tensor([[ True],\n        [False]])"),
    # nan / inf / negative zero
    (np.array([nan, inf, -inf, 1.0]), "tensor([nan, inf, -inf, 1.])"),
    (np.array([1.5, nan, -2.25]), "tensor([ 1.5000,     nan, -2.2500])"),
    (
        np.array([1e-5, nan, 1e5, -inf]),
        "tensor([1.0000e-05,        nan, 1.0000e+05,       -inf])",
    ),
    (np.array([nan, 0.0]), "tensor([nan, 0.])"),
    (np.array(-0.0), "tensor(-0.)"),
    (np.array([-0.0, 1.5]), "tensor([-0.0000, 1.5000])"),
    (np.array([-0.0, 2.0]), "tensor([-0., 2.])"),
    # other float dtypes
    (np.array([1.0, 2.5], dtype=np.float32), "tensor([1.0000, 2.5000], dtype=tapegrad.float32)"),
    (np.array([1.0, 2.0], dtype=np.float16), "tensor([1., 2.], dtype=tapegrad.float16)"),
    # empty
    (np.zeros(0), "tensor([])"),
    (np.zeros((0, 3)), "tensor([], size=(0, 3))"),
    (np.zeros(0, dtype=np.int64), "tensor([], dtype=tapegrad.int64)"),
    (np.zeros((2, 0), dtype=bool), "tensor([], size=(2, 0), dtype=tapegrad.bool)"),
    # summarization
    (
        np.arange(2000.0),
        "tensor([0.0000e+00, 1.0000e+00, 2.0000e+00,  ..., 1.9970e+03, 1.9980e+03,\n"
        "        1.9990e+03])",
    ),
    (np.arange(1001), "tensor([   0,    1,    2,  ...,  998,  999, 1000])"),
    (
        np.arange(1200.0).reshape(40, 30) / 7,
        "tensor([[0.0000e+00, 1.4286e-01, 2.8571e-01,  ..., 3.8571e+00, 4.0000e+00,\n"
        "         4.1429e+00],\n"
        "        [4.2857e+00, 4.4286e+00, 4.5714e+00,  ..., 8.1429e+00, 8.2857e+00,\n"
        "         8.4286e+00],\n"
        "        [8.5714e+00, 8.7143e+00, 8.8571e+00,  ..., 1.2429e+01, 1.2571e+01,\n"
        "         1.2714e+01],\n"
        "        ...,\n"
        "        [1.5857e+02, 1.5871e+02, 1.5886e+02,  ..., 1.6243e+02, 1.6257e+02,\n"
        "         1.6271e+02],\n"
        "        [1.6286e+02, 1.6300e+02, 1.6314e+02,  ..., 1.6671e+02, 1.6686e+02,\n"
        "         1.6700e+02],\n"
        "        [1.6714e+02, 1.6729e+02, 1.6743e+02,  ..., 1.7100e+02, 1.7114e+02,\n"
        "         1.7129e+02]])",
    ),
    # long rows wrap, continuation aligned after "tensor(["
    (
        np.arange(30.0) * 1.5,
        "tensor([ 0.0000,  1.5000,  3.0000,  4.5000,  6.0000,  7.5000,  9.0000, 10.5000,\n"
        "        12.0000, 13.5000, 15.0000, 16.5000, 18.0000, 19.5000, 21.0000, 22.5000,\n"
        "        24.0000, 25.5000, 27.0000, 28.5000, 30.0000, 31.5000, 33.0000, 34.5000,\n"
        "        36.0000, 37.5000, 39.0000, 40.5000, 42.0000, 43.5000])",
    ),
    (
        np.arange(100, 140),
        "tensor([100, 101, 102, 103, 104, 105, 106, 107, 108, 109, 110, 111, 112, 113,\n"
        "        114, 115, 116, 117, 118, 119, 120, 121, 122, 123, 124, 125, 126, 127,\n"
        "        128, 129, 130, 131, 132, 133, 134, 135, 136, 137, 138, 139])",
    ),
    # 3-d / 4-d: d-1 newlines between slices
    (
        np.arange(24.0).reshape(2, 3, 4),
        "tensor([[[ 0.,  1.,  2.,  3.],\n"
        "         [ 4.,  5.,  6.,  7.],\n"
        "         [ 8.,  9., 10., 11.]],\n"
        "\n"
        "        [[12., 13., 14., 15.],\n"
        "         [16., 17., 18., 19.],\n"
        "         [20., 21., 22., 23.]]])",
    ),
    (
        np.arange(8).reshape(2, 2, 1, 2),
        "tensor([[[[0, 1]],\n\n         [[2, 3]]],\n\n\n        [[[4, 5]],\n\n         [[6, 7]]]])",
    ),
    # "tapegrad." is 2 chars longer than "torch.": torch's own _add_suffixes
    # wraps this dtype suffix (torch.int32 would still fit on the line).
    (
        np.arange(100, 110, dtype=np.int32).reshape(1, 10),
        "tensor([[100, 101, 102, 103, 104, 105, 106, 107, 108, 109]],\n"
        "       dtype=tapegrad.int32)",
    ),
]


@pytest.mark.parametrize("array,expected", CASES, ids=[str(i) for i in range(len(CASES))])
def test_known_output(array, expected):
    assert format_tensor(array) == expected


def test_summarized_3d():
    got = format_tensor(np.arange(2000).reshape(10, 10, 20))
    blocks = got[len("tensor(") : -1].split(",\n\n        ")
    assert len(blocks) == 7 and blocks[3] == "..."
    assert blocks[0] == (
        "[[[   0,    1,    2,  ...,   17,   18,   19],\n"
        "         [  20,   21,   22,  ...,   37,   38,   39],\n"
        "         [  40,   41,   42,  ...,   57,   58,   59],\n"
        "         ...,\n"
        "         [ 140,  141,  142,  ...,  157,  158,  159],\n"
        "         [ 160,  161,  162,  ...,  177,  178,  179],\n"
        "         [ 180,  181,  182,  ...,  197,  198,  199]]"
    )
    assert blocks[-1].endswith("[1980, 1981, 1982,  ..., 1997, 1998, 1999]]]")


def test_suffixes():
    x = np.arange(12.0).reshape(3, 4) / 3
    assert format_tensor(x, ["requires_grad=True"]) == (
        "tensor([[0.0000, 0.3333, 0.6667, 1.0000],\n"
        "        [1.3333, 1.6667, 2.0000, 2.3333],\n"
        "        [2.6667, 3.0000, 3.3333, 3.6667]], requires_grad=True)"
    )
    assert format_tensor(x * 2, ["grad_fn=<MulBackward0>"]) == (
        "tensor([[0.0000, 0.6667, 1.3333, 2.0000],\n"
        "        [2.6667, 3.3333, 4.0000, 4.6667],\n"
        "        [5.3333, 6.0000, 6.6667, 7.3333]], grad_fn=<MulBackward0>)"
    )


def test_suffix_wraps_to_new_line():
    y = np.arange(40.0).reshape(5, 8) / 3
    assert format_tensor(y * 2, ["grad_fn=<MulBackward0>"]) == (
        "tensor([[ 0.0000,  0.6667,  1.3333,  2.0000,  2.6667,  3.3333,  4.0000,  4.6667],\n"
        "        [ 5.3333,  6.0000,  6.6667,  7.3333,  8.0000,  8.6667,  9.3333, 10.0000],\n"
        "        [10.6667, 11.3333, 12.0000, 12.6667, 13.3333, 14.0000, 14.6667, 15.3333],\n"
        "        [16.0000, 16.6667, 17.3333, 18.0000, 18.6667, 19.3333, 20.0000, 20.6667],\n"
        "        [21.3333, 22.0000, 22.6667, 23.3333, 24.0000, 24.6667, 25.3333, 26.0000]],\n"
        "       grad_fn=<MulBackward0>)"
    )
    assert format_tensor(np.linspace(0, 1, 15), ["requires_grad=True"]) == (
        "tensor([0.0000, 0.0714, 0.1429, 0.2143, 0.2857, 0.3571, 0.4286, 0.5000, 0.5714,\n"
        "        0.6429, 0.7143, 0.7857, 0.8571, 0.9286, 1.0000], requires_grad=True)"
    )


def test_dtype_and_requires_grad_suffixes():
    z = np.arange(12.0, dtype=np.float32).reshape(3, 4)
    assert format_tensor(z, ["requires_grad=True"]) == (
        "tensor([[ 0.,  1.,  2.,  3.],\n"
        "        [ 4.,  5.,  6.,  7.],\n"
        "        [ 8.,  9., 10., 11.]], dtype=tapegrad.float32, requires_grad=True)"
    )
    z = (np.arange(10.0) / 3).astype(np.float32)
    assert format_tensor(z, ["requires_grad=True"]) == (
        "tensor([0.0000, 0.3333, 0.6667, 1.0000, 1.3333, 1.6667, 2.0000, 2.3333, 2.6667,\n"
        "        3.0000], dtype=tapegrad.float32, requires_grad=True)"
    )


def test_default_float_parameter():
    a32 = np.array([1.0, 2.5], dtype=np.float32)
    a64 = a32.astype(np.float64)
    assert format_tensor(a32, default_float="float32") == "tensor([1.0000, 2.5000])"
    assert format_tensor(a64, default_float="float32") == (
        "tensor([1.0000, 2.5000], dtype=tapegrad.float64)"
    )
    assert format_tensor(a64, default_float=np.float64) == "tensor([1.0000, 2.5000])"
    # int64 and bool never need a suffix unless empty
    assert format_tensor(np.array([1, 2])) == "tensor([1, 2])"


def test_prefix_sets_indentation():
    got = format_tensor(np.full((2, 2), 3.0), prefix="Parameter(")
    assert got == "Parameter([[3., 3.],\n           [3., 3.]])"


def test_printoptions():
    set_printoptions(precision=2)
    assert format_tensor(np.array([1.12345, 2.0])) == "tensor([1.12, 2.00])"
    set_printoptions(profile="short")
    assert format_tensor(np.arange(1001.0) / 3) == "tensor([  0.00,   0.33,  ..., 333.00, 333.33])"
    set_printoptions(profile="default", sci_mode=True)
    assert format_tensor(np.array([1.5, 2.0])) == "tensor([1.5000e+00, 2.0000e+00])"
    set_printoptions(sci_mode=False)
    assert format_tensor(np.array([1e-8, 1.0])) == "tensor([0.0000, 1.0000])"
    set_printoptions(threshold=5)
    assert format_tensor(np.arange(10)) == "tensor([0, 1, 2,  ..., 7, 8, 9])"
    set_printoptions(profile="default", edgeitems=0, threshold=3)
    assert format_tensor(np.arange(10.0).reshape(2, 5)) == "tensor([...], size=(2, 5))"
    set_printoptions(profile="full")
    assert get_printoptions()["threshold"] == inf
    assert "..." not in format_tensor(np.arange(5000))
    set_printoptions(profile="default", linewidth=30)
    assert format_tensor(np.arange(20.0)) == (
        "tensor([ 0.,  1.,  2.,  3.,\n"
        "         4.,  5.,  6.,  7.,\n"
        "         8.,  9., 10., 11.,\n"
        "        12., 13., 14., 15.,\n"
        "        16., 17., 18., 19.])"
    )


def test_printoptions_semantics():
    set_printoptions(sci_mode=True, precision=6)
    set_printoptions(precision=3)  # like torch: omitting sci_mode resets it
    assert get_printoptions() == dict(
        precision=3, threshold=1000, edgeitems=3, linewidth=80, sci_mode=None
    )
    with printoptions(precision=1):
        assert format_tensor(np.array([0.25])) == "tensor([0.2])"
    assert get_printoptions()["precision"] == 3
    with pytest.raises(ValueError):
        set_printoptions(profile="bogus")


def test_format_html():
    out = format_html(np.array([1.0, 2.0]), ["grad_fn=<AddBackward0>"])
    assert out == "<pre>tensor([1., 2.], grad_fn=&lt;AddBackward0&gt;)</pre>"


def test_unsupported_dtype():
    with pytest.raises(TypeError):
        format_tensor(np.array([1 + 2j], np.clongdouble))
    with pytest.raises(TypeError):
        format_tensor(np.array(["a"]))


def test_complex():
    assert format_tensor(np.array([1 + 2j, -0.5 - 1j])) == "tensor([ 1.0000+2.j, -0.5000-1.j])"
    assert format_tensor(np.array(3j, np.complex64)) == "tensor(0.+3.j, dtype=tapegrad.complex64)"


# ---------------------------------------------------------------------------
# Comparison with real torch
# ---------------------------------------------------------------------------


def _random_arrays():
    """Deterministic arrays covering the formatter's branches."""
    rng = np.random.default_rng(1234)
    shapes = [(), (1,), (5,), (7, 3), (2, 3, 4), (2, 1, 3, 2), (13, 9), (40,),
              (1001,), (34, 30), (3, 400), (11, 10, 10), (3, 4, 5, 20)]
    out = []
    for shape in shapes:
        n = int(np.prod(shape))
        for exp in range(-10, 11, 2):  # normal noise at scales 1e-10 .. 1e10
            out.append((f"normal1e{exp}-{shape}", rng.normal(size=shape) * 10.0**exp))
        out.append((f"mixedscale-{shape}", (rng.normal(size=n) * 10.0 ** rng.integers(-12, 12, n)).reshape(shape)))
        out.append((f"intvalued-{shape}", np.round(rng.normal(size=shape) * 1000)))
        special = rng.choice([0.0, -0.0, nan, inf, -inf, 1.5, 3.0, -2.0, 1e-5, 1e9], size=n)
        out.append((f"special-{shape}", special.reshape(shape)))
        some_nan = np.round(rng.normal(size=n) * 3)
        some_nan[rng.random(n) < 0.3] = nan
        out.append((f"intnan-{shape}", some_nan.reshape(shape)))
        out.append((f"zeros-{shape}", np.zeros(shape)))
        ints = rng.integers(-(10**9), 10**9, size=shape)
        out.append((f"int64-{shape}", ints))
        out.append((f"int32-{shape}", (ints // 7).astype(np.int32)))
        out.append((f"int8-{shape}", rng.integers(-128, 128, size=shape).astype(np.int8)))
        out.append((f"uint8-{shape}", rng.integers(0, 256, size=shape).astype(np.uint8)))
        out.append((f"bool-{shape}", rng.random(shape) > 0.5))
        out.append((f"float16-{shape}", (rng.normal(size=shape) * 100).astype(np.float16)))
        parts = rng.normal(size=shape) + 1j * np.round(rng.normal(size=shape) * 10)
        out.append((f"complex128-{shape}", parts))
        out.append((f"complex64-{shape}", (parts * 1e-5).astype(np.complex64)))
    for shape in [(0,), (0, 3), (2, 0), (1, 0, 2)]:
        for dt in (np.float32, np.float64, np.int64, np.int32, np.bool_):
            out.append((f"empty-{np.dtype(dt).name}-{shape}", np.zeros(shape, dtype=dt)))
    return out


ARRAYS = _random_arrays()
FLOAT_ARRAYS = [(name, a) for name, a in ARRAYS if a.dtype.kind == "f"]


def _variants(a):
    """float32 and float64 versions of float data; ints/bools as they are."""
    a = np.asarray(a)
    if a.dtype.kind != "f" or a.dtype == np.float16:
        return [a]
    with np.errstate(over="ignore"):
        return [a.astype(np.float32), a.astype(np.float64)]


def _torch_repr(a, requires_grad=False):
    torch = pytest.importorskip("torch")
    t = torch.from_numpy(np.array(a))  # a writable copy; keeps 0-d
    if requires_grad:
        t.requires_grad_()
    return repr(t)


@pytest.fixture
def torch_names(monkeypatch):
    """Print dtypes as ``torch.<name>`` so the comparison is byte for byte,
    line-wrapping of suffixes included."""
    monkeypatch.setattr(_format, "_DTYPE_PREFIX", "torch.")


def _unwrap(s):
    return re.sub(r",\n *", ", ", s)


@pytest.mark.parametrize("name,array", ARRAYS, ids=[n for n, _ in ARRAYS])
def test_matches_torch(name, array, torch_names):
    for a in _variants(array):
        assert format_tensor(a, default_float="float32") == _torch_repr(a)


@pytest.mark.parametrize("name,array", ARRAYS, ids=[n for n, _ in ARRAYS])
def test_matches_torch_tapegrad_names(name, array):
    # Literal renaming can only differ in where a suffix wraps (see CASES).
    for a in _variants(array):
        expected = _torch_repr(a).replace("torch.", "tapegrad.")
        got = format_tensor(a, default_float="float32")
        assert _unwrap(got) == _unwrap(expected)


@pytest.mark.parametrize("name,array", FLOAT_ARRAYS, ids=[n for n, _ in FLOAT_ARRAYS])
def test_matches_torch_requires_grad(name, array, torch_names):
    for a in _variants(array):
        expected = _torch_repr(a, requires_grad=True)
        assert format_tensor(a, ["requires_grad=True"], default_float="float32") == expected


def test_matches_torch_grad_fn(torch_names):
    torch = pytest.importorskip("torch")
    for name, array in FLOAT_ARRAYS[::7]:
        for a in _variants(array):
            t = torch.from_numpy(np.array(a)).requires_grad_() * 2
            got = format_tensor(a * 2, ["grad_fn=<MulBackward0>"], default_float="float32")
            assert got == repr(t), name


def test_matches_torch_float64_default(torch_names):
    """tapegrad's own default (float64) matches torch with float64 default."""
    torch = pytest.importorskip("torch")
    torch.set_default_dtype(torch.float64)
    for name, array in ARRAYS[::3]:
        for a in _variants(array):
            assert format_tensor(a) == _torch_repr(a), name


PRINT_OPTIONS = [
    dict(precision=2),
    dict(precision=0),
    dict(precision=7, linewidth=120),
    dict(linewidth=40),
    dict(linewidth=0),
    dict(threshold=5, edgeitems=1),
    dict(threshold=0),
    dict(edgeitems=0, threshold=10),
    dict(sci_mode=True),
    dict(sci_mode=False),
    dict(profile="short"),
    dict(profile="full"),
]


@pytest.mark.parametrize("opts", PRINT_OPTIONS, ids=[str(o) for o in PRINT_OPTIONS])
def test_matches_torch_printoptions(opts, torch_names):
    torch = pytest.importorskip("torch")
    torch.set_printoptions(**opts)
    set_printoptions(**opts)
    for name, array in ARRAYS[::5]:
        if opts.get("profile") == "full" and array.size > 2000:
            continue
        for a in _variants(array):
            rg = a.dtype.kind == "f"
            expected = _torch_repr(a, requires_grad=rg)
            got = format_tensor(a, ["requires_grad=True"] if rg else (), default_float="float32")
            assert got == expected, name
