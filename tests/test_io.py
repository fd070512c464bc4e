"""Saving and loading tapes: round trips, and files that must never crash the loader.

`_io.save(tape, path)` writes a versioned .npz of plain arrays; `tapegrad.load(path)` returns a
validated Tape that replays like the original, or raises TapeFormatError for anything truncated,
corrupted or hostile. The loader is fuzzed with hypothesis: bit flips and truncations of real
files, and mutations of their arrays (out-of-range slots, negative and huge sizes, overlapping
spans, wrong dtypes and shapes); hand-made hostile files check that nothing is allocated before
its header is checked (huge declared shapes, zip bombs, pickled objects).
"""
import collections
import functools
import io
import os
import pickle
import tracemalloc
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import tapegrad
from tapegrad import GuardError, TapeFormatError
from tapegrad.transforms import io as _io

RNG = np.random.default_rng(11)
X = RNG.random((3, 4))
W = RNG.random((4, 2))

Pair = collections.namedtuple("Pair", ["loss", "h"])


def program(x, w):
    """Most primitives and a guard (see test_validate)."""
    h = (x @ w).tanh()
    s = h[:, [0, 1, 1]].sum(1)
    m = tapegrad.amax(h, 0)
    p = tapegrad.prod(h * 0.5 + 1, 1)
    c = tapegrad.cat([s, p])
    wh = tapegrad.where(c > 0, c, -c)
    if x.sum() > 0:
        return wh.sum() + m.sum()
    return wh.sum() - m.sum()


def tree_output(x, w):
    h = tapegrad.sigmoid(x @ w)
    return {"loss": (h * h).mean(), "parts": [h.sum(0), tapegrad.softmax(h, 1)],
            "const": 3.0}


def named_output(x, w):
    h = tapegrad.relu(x @ w - 0.5)
    return Pair((h ** 3).sum(), h)


def float32_program(x, w):
    return ((x @ w).exp() / 10).log1p().sum()


def scalar_inputs(x, a):
    return (tapegrad.sin(x * a) + a ** 2).sum()


CASES = {
    "program": (program, (X, W)),
    "tree_output": (tree_output, (X, W)),
    "named_output": (named_output, (X, W)),
    "float32": (float32_program, (X.astype(np.float32), W.astype(np.float32))),
    "scalar_inputs": (scalar_inputs, (X, 1.5)),
}


def _flat(tree):
    leaves, _ = tapegrad.core.pytree.flatten(tree)
    return [np.asarray(leaf) for leaf in leaves]


def _saved(tape, tmp_path, name="tape.npz"):
    path = tmp_path / name
    _io.save(tape, path)
    return path


@pytest.mark.parametrize("case", list(CASES))
def test_round_trip_replays_like_the_original(case, tmp_path):
    f, args = CASES[case]
    tape = tapegrad.trace(f, *args)
    loaded = tapegrad.load(_saved(tape, tmp_path))
    assert loaded.validated and len(loaded) == len(tape)
    for name in ("E", "FC", "IP", "S", "NEED", "V0"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(tape, name))
    assert loaded.V0.dtype == tape.V0.dtype
    for k in range(3):
        new = [a + 0.01 * k * RNG.standard_normal(np.shape(a)) if isinstance(a, np.ndarray)
               else a + 0.1 * k for a in args]
        new = [n.astype(a.dtype) if isinstance(a, np.ndarray) else n for n, a in zip(new, args)]
        mine, theirs = _flat(loaded(*new)), _flat(tape(*new))
        for m, t in zip(mine, theirs):
            np.testing.assert_array_equal(m, t)
    out = tape(*args)
    if isinstance(out, np.ndarray) and out.shape == ():
        for m, t in zip(loaded.gradient(*args), tape.gradient(*args)):
            np.testing.assert_array_equal(m, t)


def test_structure_survives(tmp_path):
    tape = tapegrad.trace(tree_output, X, W)
    out = tapegrad.load(_saved(tape, tmp_path))(X, W)
    assert sorted(out) == ["const", "loss", "parts"] and isinstance(out["parts"], list)
    named = tapegrad.load(_saved(tapegrad.trace(named_output, X, W), tmp_path, "n.npz"))(X, W)
    assert type(named) is tuple and len(named) == 2      # a namedtuple comes back as a tuple


@pytest.mark.parametrize("out", [
    lambda y: {(1, 2): y},
    lambda y: {(1, 2): y, (1, 3): 2 * y, (0, ("a", None)): y},
    lambda y: {1: y, 2: [y, y], -7: {"inner": y}},
    lambda y: {1.5: y, float("inf"): y, -0.25: y},
    lambda y: {True: y, False: 3 * y},
    lambda y: {None: y},
    lambda y: {"*": y, "tuple": (y,), "dict": {}},
    lambda y: ({(): y}, [{("x", 1.0, True): y}]),
], ids=["tuple key", "tuple keys", "int keys", "float keys", "bool keys", "None key",
        "keys like the format's words", "nested"])
def test_every_output_structure_round_trips(out, tmp_path):
    tape = tapegrad.trace(lambda x: out((x * x).sum()), np.ones(3))
    loaded = tapegrad.load(_saved(tape, tmp_path))
    assert loaded.out_structure == tape.out_structure
    got, want = loaded(np.full(3, 2.0)), tape(np.full(3, 2.0))
    assert repr(got) == repr(want)
    assert [type(k) for k in _keys(got)] == [type(k) for k in _keys(want)]


def _keys(tree):
    """Every dict key of `tree`, depth first."""
    if isinstance(tree, dict):
        return [k for key, value in tree.items() for k in [key] + _keys(value)]
    if isinstance(tree, (tuple, list)):
        return [k for item in tree for k in _keys(item)]
    return []


def test_numpy_scalar_keys_come_back_as_the_numbers_they_equal(tmp_path):
    tape = tapegrad.trace(lambda x: {np.int64(3): x.sum(), 4.5: x.sum()}, np.ones(3))
    got = tapegrad.load(_saved(tape, tmp_path))(np.ones(3))
    assert list(got) == [3, 4.5] and type(list(got)[0]) is int


def test_keys_that_cannot_be_written_are_refused_at_save(tmp_path):
    tape = tapegrad.trace(lambda x: {frozenset({1}): (x * x).sum()}, np.ones(3))
    with pytest.raises(TypeError, match=r"cannot save an output tree with a dict key of type "
                                        r"frozenset \(frozenset\(\{1\}\)\): keys are str, int, "
                                        r"float, bool, None or tuples of them"):
        _io.save(tape, tmp_path / "t.npz")
    assert not os.listdir(tmp_path)


@pytest.mark.parametrize("max_bytes, error, message", [
    ("10", TypeError, "max_bytes must be an int (the most bytes of arrays to read), got str '10'"),
    (10.0, TypeError, "got float 10.0"),
    (True, TypeError, "got bool True"),
    (None, TypeError, "got NoneType None"),
    (-1, ValueError, "max_bytes must be non-negative (the most bytes of arrays to read), got -1"),
])
def test_max_bytes_is_checked_before_the_file(max_bytes, error, message, tmp_path):
    path = _saved(tapegrad.trace(program, X, W), tmp_path)
    with pytest.raises(error) as info:
        tapegrad.load(path, max_bytes=max_bytes)
    assert message in str(info.value)
    assert tapegrad.load(path, max_bytes=np.int64(10 ** 6))(X, W) == tapegrad.load(path)(X, W)


def test_guards_are_kept(tmp_path):
    tape = tapegrad.trace(program, X, W)
    loaded = tapegrad.load(_saved(tape, tmp_path))
    assert loaded.guards == tape.guards
    with pytest.raises(GuardError):
        loaded(-X, W)


def test_save_writes_exactly_the_path_and_atomically(tmp_path):
    tape = tapegrad.trace(program, X, W)
    path = tmp_path / "no-suffix"
    _io.save(tape, str(path))
    assert os.listdir(tmp_path) == ["no-suffix"]
    assert tapegrad.load(path)(X, W) == tape(X, W)
    buffer = io.BytesIO()
    _io.save(tape, buffer)
    buffer.seek(0)
    assert tapegrad.load(buffer)(X, W) == tape(X, W)


def test_nested_transforms_cannot_be_saved(tmp_path):
    inner = tapegrad.grad(lambda x, a: (a * x ** 3).sum())
    tape = tapegrad.trace(lambda a: inner(np.ones(3), a).sum(), np.ones(3))
    with pytest.raises(TypeError, match="nested transforms"):
        _io.save(tape, tmp_path / "t.npz")
    assert not os.listdir(tmp_path)


def test_missing_files_raise_the_usual_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        tapegrad.load(tmp_path / "nothing.npz")
    with pytest.raises(IsADirectoryError):
        tapegrad.load(tmp_path)


# ---- fuzzing ------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def real_file(case):
    """(bytes of the saved tape, arguments) of a case (not a fixture: hypothesis would print
    it with every failing example)."""
    f, args = CASES[case]
    buffer = io.BytesIO()
    _io.save(tapegrad.trace(f, *args), buffer)
    return buffer.getvalue(), args


def _replay(tape, args):
    """Run a tape that loaded: any outcome but a crash is fine (the values may be garbage)."""
    with np.errstate(all="ignore"):
        for replay in (tape, tape.gradient):
            try:
                replay(*args)
            except (GuardError, ZeroDivisionError):
                pass
            except (TypeError, ValueError) as err:      # inputs that no longer fit the tape
                assert "input" in str(err) or "scalar" in str(err) or "shape" in str(err), err


def _load_bytes(data):
    return tapegrad.load(io.BytesIO(data))


FUZZ = settings(max_examples=int(os.environ.get("TAPEGRAD_FUZZ_EXAMPLES", 150)), deadline=None,
                suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(case=st.sampled_from(["program", "tree_output", "float32"]), data=st.data())
def test_bit_flips(case, data):
    raw, args = real_file(case)
    flipped = bytearray(raw)
    for _ in range(data.draw(st.integers(1, 8))):
        bit = data.draw(st.integers(0, 8 * len(raw) - 1))
        flipped[bit // 8] ^= 1 << (bit % 8)
    try:
        tape = _load_bytes(bytes(flipped))
    except TapeFormatError:
        return
    _replay(tape, args)


@FUZZ
@given(case=st.sampled_from(["program", "tree_output", "float32"]), data=st.data())
def test_truncations(case, data):
    raw, _ = real_file(case)
    n = data.draw(st.integers(0, len(raw) - 1))
    with pytest.raises(TapeFormatError):
        _load_bytes(raw[:n])


def _arrays_of(raw):
    with np.load(io.BytesIO(raw)) as f:
        return {k: f[k] for k in f.files}


INTERESTING = [-1, 0, 1, 2, 3, 7, 2 ** 31 - 1, 2 ** 31, 2 ** 32, 2 ** 62, 2 ** 63 - 1, -2 ** 63,
               -2 ** 31]


@FUZZ
@given(case=st.sampled_from(["program", "tree_output", "float32"]), data=st.data())
def test_array_mutations(case, data):
    """Mutate the arrays themselves (the zip's CRC no longer protects anything)."""
    raw, args = real_file(case)
    arrays = _arrays_of(raw)
    for _ in range(data.draw(st.integers(1, 3))):
        name = data.draw(st.sampled_from(sorted(arrays)))
        a = arrays[name]
        how = data.draw(st.sampled_from(["value", "value", "value", "dtype", "shape"]))
        if how == "value" and a.size and a.dtype.kind in "iuf":
            a = a.copy()
            flat = a.reshape(-1)
            i = data.draw(st.integers(0, flat.size - 1))
            if a.dtype.kind == "f":
                with np.errstate(over="ignore"):     # 1e308 into float32 is inf: intended
                    flat[i] = data.draw(st.sampled_from([np.nan, np.inf, -np.inf, 0.0, -1.0,
                                                         1e308, 5e-324]))
            else:
                value = data.draw(st.one_of(st.sampled_from(INTERESTING),
                                            st.integers(-10, 200)))
                flat[i] = value if a.dtype == np.int64 else np.asarray(value).astype(a.dtype)
        elif how == "dtype":
            target = data.draw(st.sampled_from(["<i4", ">i8", "<f8", "<f4", "<f2", "|b1",
                                                "<U3"]))
            try:
                with np.errstate(over="ignore", invalid="ignore"):   # lossy casts: intended
                    a = a.astype(target)
            except ValueError:          # "tapegrad-tape" as a number
                continue
        elif how == "shape" and a.ndim:
            a = a.reshape(-1)[:data.draw(st.integers(0, a.size))].copy() \
                if data.draw(st.booleans()) else np.concatenate([a.reshape(-1)] * 2)
        arrays[name] = a
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    try:
        tape = _load_bytes(buffer.getvalue())
    except TapeFormatError:
        return
    _replay(tape, args)


# ---- hand-made hostile files --------------------------------------------------------------------

def _zip(members, compression=zipfile.ZIP_STORED):
    """An .npz whose members are given as raw bytes (name -> bytes) or arrays."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as z:
        for name, member in members.items():
            if isinstance(member, np.ndarray):
                b = io.BytesIO()
                np.lib.format.write_array(b, member, allow_pickle=True)
                member = b.getvalue()
            z.writestr(name + ".npy", member)
    return buffer.getvalue()


def _good_members():
    return _arrays_of(_io_bytes())


def _io_bytes():
    buffer = io.BytesIO()
    _io.save(tapegrad.trace(program, X, W), buffer)
    return buffer.getvalue()


def _header(shape, descr="<i8", fortran=False, version=(1, 0)):
    b = io.BytesIO()
    header = {"descr": descr, "fortran_order": fortran, "shape": shape}
    if version == (1, 0):
        np.lib.format.write_array_header_1_0(b, header)
    else:
        np.lib.format.write_array_header_2_0(b, header)
    return b.getvalue()


def _peak(fn):
    tracemalloc.start()
    try:
        fn()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


def test_huge_declared_shape_allocates_nothing():
    members = _good_members()
    members["E"] = _header((2 ** 40, 8)) + b"\0" * 64
    data = _zip(members)

    def load():
        with pytest.raises(TapeFormatError, match=r"array 'E' declares \(1099511627776, 8\)"):
            _load_bytes(data)
    assert _peak(load) < 10_000_000


def test_zip_bomb_is_refused_before_inflating():
    members = _good_members()
    members["V0"] = np.zeros(40_000_000)                    # 320 MB of zeros, ~300 kB deflated
    data = _zip(members, zipfile.ZIP_DEFLATED)
    assert len(data) < 2_000_000

    def load():
        with pytest.raises(TapeFormatError, match=r"holds more than max_bytes=1000000 bytes of "
                                                  r"arrays \(array 'V0': 320000128 bytes\)"):
            tapegrad.load(io.BytesIO(data), max_bytes=1_000_000)
    assert _peak(load) < 10_000_000


def test_max_bytes_limits_legitimate_files_too():
    with pytest.raises(TapeFormatError, match="max_bytes"):
        tapegrad.load(io.BytesIO(_io_bytes()), max_bytes=100)


def test_pickled_objects_are_never_unpickled():
    class Boom:
        def __reduce__(self):
            return (os.system, ("echo pwned",))
    members = _good_members()
    members["structure"] = np.array([Boom()], dtype=object)
    with pytest.raises(TapeFormatError, match="plain numbers only"):
        _load_bytes(_zip(members))
    with pytest.raises(TapeFormatError, match="not a tape file"):
        _load_bytes(pickle.dumps({"E": np.zeros(3)}))


@pytest.mark.parametrize("name, data, message", [
    ("empty file", b"", "not a tape file"),
    ("random bytes", bytes(RNG.integers(0, 256, 4096, dtype=np.uint8)), "not a tape file"),
    ("text", b"E,FC,IP\n1,2,3\n", "not a tape file"),
    ("an .npy, not an .npz", _header((3,)) + b"\0" * 24, "not a tape file"),
    ("an empty zip", _zip({}), "missing array 'format'"),
])
def test_not_a_tape(name, data, message):
    with pytest.raises(TapeFormatError, match=message):
        _load_bytes(data)


def _with(name, raw):
    members = _good_members()
    members[name] = raw
    return _zip(members)


def _slots():
    """The number of slots of the sample tape (a hostile S keeps its shape)."""
    return len(_good_members()["S"])


@pytest.mark.parametrize("case, data, message", [
    ("short data", lambda: _with("E", _header((18, 8)) + b"\0" * 100), "declares"),
    ("short header", lambda: _with("E", _header((18, 8))[:20]), "corrupted tape file"),
    ("unknown npy version", lambda: _with("E", b"\x93NUMPY\x09\x00" + b"\0" * 64),
     "unknown .npy version"),
    ("structured dtype", lambda: _with("S", np.zeros(3, "i8,i8")), "plain numbers only"),
    ("void dtype", lambda: _with("S", np.zeros(3, "V8")), "plain numbers only"),
    ("complex dtype", lambda: _with("V0", np.zeros(3, complex)), "plain numbers only"),
    ("huge header", lambda: _with("E", b"\x93NUMPY\x02\x00" + (10 ** 6).to_bytes(4, "little")
                                  + b" " * 100), "corrupted tape file"),
    ("NaN guards", lambda: _with("guards", np.full((1, 2), np.nan)), "guards must be int64"),
    ("deep JSON", lambda: _with("structure", np.array("[" * 10 ** 5 + "]" * 10 ** 5)),
     "malformed output structure"),
    ("negative sizes", lambda: _with("S", np.array([[0, -1]] * _slots(), np.int64)),
     "contiguous, non-negative spans"),
    ("overlapping spans", lambda: _with("S", np.array([[0, 12]] * _slots(), np.int64)),
     "contiguous, non-negative spans"),
    ("out-of-range slots", lambda: _with("inputs", np.array([0, 99], np.int64)),
     "input slot 99 out of range"),
    ("float E", lambda: _with("E", np.zeros((18, 8))), "E must be int64, got float64"),
])
def test_hostile_members(case, data, message):
    with pytest.raises(TapeFormatError, match=message):
        _load_bytes(data())


def test_fortran_order_arrays_are_read_in_c_order():
    members = _good_members()
    e = members["E"]
    members["E"] = _header(e.shape, fortran=True) + np.asfortranarray(e).tobytes(order="F")
    tape = _load_bytes(_zip(members))
    assert tape.E.flags.c_contiguous
    np.testing.assert_allclose(tape(X, W), program(tapegrad.tensor(X), tapegrad.tensor(W)).item(),
                               rtol=1e-14)


def test_encrypted_members_are_refused():
    data = bytearray(_io_bytes())
    # set the "encrypted" flag bit of the first local and central headers
    local = data.find(b"PK\x03\x04")
    central = data.find(b"PK\x01\x02")
    data[local + 6] |= 1
    data[central + 8] |= 1
    with pytest.raises(TapeFormatError):
        _load_bytes(bytes(data))
