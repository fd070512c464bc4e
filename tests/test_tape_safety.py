"""What reaches the compiled interpreters through a `Tape` is checked, and stays as checked.

* The public sweep methods (`forward`, `backward`, `tangent`, `backward_tangent`, `load`,
  `__call__`, `gradient`) check the buffers and inputs they are given (type, dtype, shape,
  layout, writability) before any compiled code sees them: a wrong buffer is a ValueError or a
  TypeError naming the argument, never a crash (crashes are tested in a subprocess).
* The tape arrays (E, FC, IP, S, NEED, V0, and the eager path's shared structure arrays) are
  read-only for good, after tracing, loading, validating and unpickling alike.
* Every interpreter call passes them read-only: each interpreter compiles one signature per
  dtype, whatever the path (eager, transforms, vmap, Dask, a loaded tape, displays).
* A loaded tape refuses inputs of another shape or dtype as a traced tape does.
"""
import os
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import tapegrad as tg

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(tg.__file__)))   # the code under test


def run_python(code, timeout=900, env=None):
    """Run `code` in a fresh interpreter with this checkout importable; (returncode, output)."""
    environ = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    environ.update(env or {})
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=timeout, env=environ, cwd=ROOT)
    return done.returncode, done.stdout + done.stderr


def f(x):
    return (x.exp() * x).sum()


@pytest.fixture(scope="module")
def tape():
    return tg.trace(f, np.ones(5))


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    path = tmp_path_factory.mktemp("tapes") / "t.npz"
    tg.trace(lambda x: (x * x).sum(), np.ones((3, 2))).save(path)
    return tg.load(path)


# ---- the sweep methods check their buffers ---------------------------------------------------

_REPRODUCERS = '''
import numpy as np, tapegrad as tg
t = tg.trace(lambda x: (x.exp() * x).sum(), np.ones(200000))
V = t.load([np.ones(200000)])
t.forward(V)
n = V.size
cases = {
    "narrow seeds": lambda: t.backward(V, np.zeros((1, 4))),
    "short V": lambda: t.forward(np.zeros(3)),
    "narrow tangents": lambda: t.tangent(V, np.zeros((1, 5))),
    "int64 V": lambda: t.forward(np.zeros(n, np.int64)),
    "float32 V": lambda: t.forward(np.zeros(n, np.float32)),
    "list V": lambda: t.forward([0.0] * n),
    "2-d V": lambda: t.forward(np.zeros((1, n))),
    "strided V": lambda: t.forward(np.zeros(2 * n)[::2]),
    "read-only V": lambda: t.forward(np.broadcast_to(np.zeros(1), (n,))),
    "1-d seeds": lambda: t.backward(V, np.zeros(n)),
    "float32 seeds": lambda: t.backward(V, np.zeros((1, n), np.float32)),
    "Fortran seeds": lambda: t.backward(V, np.zeros((n, 2)).T),
    "short V for backward": lambda: t.backward(np.zeros(3), np.zeros((1, n))),
    "short G": lambda: t.backward_tangent(V, np.zeros((1, n)), np.zeros(3), np.zeros((1, n))),
    "TG rows": lambda: t.backward_tangent(V, np.zeros((2, n)), np.zeros(n), np.zeros((1, n))),
    "narrow T": lambda: t.backward_tangent(V, np.zeros((1, 3)), np.zeros(n), np.zeros((1, n))),
    "too few inputs": lambda: t.load([]),
    "input shape": lambda: t.load([np.ones(3)]),
}
for name, case in cases.items():
    try:
        case()
        print(name, "-> no error")
    except Exception as err:
        print(name, "->", type(err).__name__, err)
print("survived")
'''


def test_wrong_buffers_are_refused_not_crashes():
    code, out = run_python(_REPRODUCERS)
    assert code == 0 and "survived" in out, out
    lines = dict(line.split(" -> ", 1) for line in out.splitlines() if " -> " in line)
    n = 600001          # x, exp(x), x * exp(x) and the sum
    assert lines["narrow seeds"] == f"ValueError seeds must have shape (k, {n}), got (1, 4)"
    assert lines["short V"] == f"ValueError V must have shape ({n},), got (3,)"
    assert lines["narrow tangents"] == f"ValueError T must have shape (k, {n}), got (1, 5)"
    assert lines["int64 V"] == "TypeError V must have dtype float64 (the tape's), got int64"
    assert lines["float32 V"] == "TypeError V must have dtype float64 (the tape's), got float32"
    assert lines["list V"].startswith("TypeError V must be a numpy.ndarray of shape")
    assert lines["2-d V"] == f"ValueError V must have shape ({n},), got (1, {n})"
    for name in ("strided V", "read-only V", "Fortran seeds"):
        assert lines[name].startswith("ValueError") and "C-contiguous, aligned and writable" \
            in lines[name], lines[name]
    assert lines["1-d seeds"] == f"ValueError seeds must have shape (k, {n}), got ({n},)"
    assert lines["float32 seeds"].startswith("TypeError seeds must have dtype float64")
    assert lines["short V for backward"].startswith("ValueError V must have shape")
    assert lines["short G"] == f"ValueError G must have shape ({n},), got (3,)"
    assert lines["TG rows"] == f"ValueError TG must have shape (2, {n}), got (1, {n})"
    assert lines["narrow T"].startswith("ValueError T must have shape")
    assert lines["too few inputs"] == "TypeError the tape has 1 inputs; got 0"
    assert lines["input shape"].startswith("ValueError input 0 (array of shape (3,)")


def test_adjoint_buffers_may_be_the_prefix_or_the_whole_buffer():
    """A tape of a function of a large constant keeps adjoints in a prefix (`n_adjoint`):
    seeds of either width give the same gradient; anything between is refused."""
    data = np.arange(1.0, 7.0)
    t = tg.trace(lambda x: (x * data).sum() + (x * x).sum(), np.ones(6))
    assert t.n_adjoint < t.V0.size
    V = t.load([np.full(6, 2.0)])
    t.forward(V)
    out = t.offsets[t.output_slots[0]]
    grads = []
    for width in (t.n_adjoint, t.V0.size):
        G = np.zeros((1, width))
        G[0, out] = 1.0
        t.backward(V, G)
        grads.append(t.view(G[0], t.input_slots[0]).copy())
    np.testing.assert_array_equal(grads[0], data + 4.0)
    np.testing.assert_array_equal(grads[1], data + 4.0)
    with pytest.raises(ValueError, match=rf"seeds must have shape \(k, {t.n_adjoint}\) or "
                                         rf"\(k, {t.V0.size}\), got \(1, {t.n_adjoint + 1}\)"):
        t.backward(V, np.zeros((1, t.n_adjoint + 1)))


def test_second_order_sweep_through_the_public_methods(tape):
    x = np.linspace(0.1, 0.5, 5)
    V = tape.load([x])
    tape.forward(V)
    T = np.zeros((1, V.size))
    T[0, tape.offsets[tape.input_slots[0]]:][:5] = 1.0
    tape.tangent(V, T)
    G = np.zeros(tape.n_adjoint)
    G[tape.offsets[tape.output_slots[0]]] = 1.0
    TG = tape.backward_tangent(V, T, G, np.zeros((1, tape.n_adjoint)))
    hvp = tape.view(TG[0], tape.input_slots[0])
    np.testing.assert_allclose(hvp, np.exp(x) * (x + 2), rtol=1e-12)    # (x e^x)'' = e^x (x+2)


# ---- tape arrays are read-only for good ------------------------------------------------------

_ARRAYS = ("E", "FC", "IP", "S", "NEED", "V0")


def _assert_read_only(arrays):
    for name, a in arrays.items():
        assert not a.flags.writeable, name
        with pytest.raises(ValueError, match="read-only"):
            a[...] = 0
        with pytest.raises(ValueError):
            a.flags.writeable = True          # not even on purpose through the flags


def test_traced_loaded_and_unpickled_tapes_are_read_only(tape, loaded):
    clone = pickle.loads(pickle.dumps(tape))
    for t in (tape, loaded, clone):
        _assert_read_only({name: getattr(t, name) for name in _ARRAYS})
        assert isinstance(t.offsets, tuple) and isinstance(t.sizes, tuple)
    np.testing.assert_array_equal(clone(np.full(5, 0.5)), tape(np.full(5, 0.5)))


def test_validated_arrays_are_frozen_copies():
    """`validate_tape` checks read-only copies of arrays someone else may still write."""
    import types
    t = tg.trace(lambda x: x.exp().sum(), np.ones(2))
    E = np.array(t.E)
    probe = types.SimpleNamespace(E=E, FC=np.array(t.FC), IP=np.array(t.IP), S=np.array(t.S),
                                  NEED=np.array(t.NEED), V0=np.array(t.V0), shapes=t.shapes,
                                  input_slots=t.input_slots, output_slots=t.output_slots,
                                  guards=[])
    tg.validate_tape(probe)
    assert probe.E is not E and E.flags.writeable
    E[0, 1] = 99                       # the caller's array: the validated copy is unchanged
    assert probe.E[0, 1] == t.E[0, 1]
    _assert_read_only({name: getattr(probe, name) for name in _ARRAYS})


def test_eager_structure_arrays_are_read_only():
    from tapegrad.eager import flatten as _tape
    x = tg.tensor([1.0, 2.0], requires_grad=True)
    y = (x * x)[[0, 1]].sum()
    flat = _tape.linearize((y,))
    _assert_read_only({"E": flat.E, "S": flat.S, "NEED": flat.NEED})
    for a in (flat.FC, flat.IP):
        assert not a.flags.writeable
    graph = tg.tape_of(y)
    _assert_read_only({name: getattr(graph, name) for name in ("E", "FC", "IP", "S", "NEED", "V")})
    y.backward()
    np.testing.assert_array_equal(x.grad.numpy(), [2.0, 4.0])


_EDITS = '''
import numpy as np, tapegrad as tg, os, tempfile
t = tg.trace(lambda x: (x.exp() * x).sum(), np.ones(1000))
path = os.path.join(tempfile.mkdtemp(), "t.npz")
t.save(path)
loaded = tg.load(path)
S = loaded.S
edits = {
    "IP": lambda: t.IP.__setitem__(slice(None), 10 ** 12),
    "E": lambda: t.E.__setitem__((0, 1), 10 ** 9),
    "S of a loaded tape": lambda: S.__setitem__((-1, 0), 10 ** 9),
    "writeable flag": lambda: setattr(t.IP.flags, "writeable", True),
    "offsets": lambda: t.offsets.__setitem__(0, 10 ** 9),
}
for name, edit in edits.items():
    try:
        edit()
        print(name, "-> edited")
    except (ValueError, TypeError, AttributeError):
        print(name, "-> refused")
x = np.full(1000, 0.5)
print("value", float(t(x)), float(loaded(x)), float(np.sum(np.exp(x) * x)))
print("survived")
'''


def test_editing_tape_arrays_is_refused_not_a_crash():
    code, out = run_python(_EDITS)
    assert code == 0 and "survived" in out, out
    assert out.count("-> refused") == 5, out
    values = [float(v) for v in out.split("value ")[1].split()[:3]]
    assert values[0] == values[1] and abs(values[0] - values[2]) < 1e-9


# ---- each interpreter compiles once per dtype -------------------------------------------------

_PATHS = '''
import numpy as np, os, sys, tempfile, warnings
import tapegrad as tg
from tapegrad.core import interp as _interp

def rosen(x):
    return tg.sum(100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)

def branchy(x):
    s = (x * x).sum()
    return s.exp() if s > 1 else s

for dtype in (np.float64, np.float32):
    x = np.linspace(0.1, 1, 6).astype(dtype)
    t = tg.tensor(x, requires_grad=True)
    ((t * t).exp().sum() + tg.amax(t) + t[[0, 1]].sum()).backward()
    tg.autograd.grad((t.sin() * t).sum(), [t])
    tg.grad(rosen)(x)
    tg.value_and_grad(branchy)(x)
    pullback = tg.vjp(lambda a: a.tanh() * 2, x)[1]
    pullback(np.ones_like(x))
    tg.jvp(lambda a: a.tanh() * 2, (x,), (np.ones_like(x),))
    tg.jacrev(lambda a: a.tanh() @ np.ones((6, 2), dtype))(x)
    tg.jacfwd(lambda a: a.tanh() @ np.ones((6, 2), dtype))(x)
    tg.hessian(rosen)(x)
    inner = tg.grad(lambda y, a: (a * y ** 3).sum())
    tg.grad(lambda a: inner(np.ones(6, dtype), a).sum())(x)
    traced = tg.trace(rosen, x)
    traced(x)
    traced.gradient(x)
    str(traced.table(values=True, adjoints=True))
    str(tg.tape_of((t * t).sum()).table(adjoints=True))
    with tg.detect_anomaly():
        t2 = tg.tensor(x, requires_grad=True)
        (t2 * t2).sum().backward()
    X = np.random.default_rng(0).random((40, 6)).astype(dtype)
    tg.vmap(tg.grad(rosen), fuse=False)(X)
    tg.vmap(tg.hessian(rosen), fuse=False)(X)
    tg.vmap(tg.grad(rosen), fuse=True)(X)
    path = os.path.join(tempfile.mkdtemp(), "t.npz")
    traced.save(path)
    loaded = tg.load(path)
    loaded(x)
    loaded.gradient(x)
    import pickle
    pickle.loads(pickle.dumps(traced)).gradient(x)
    if "cuda" in sys.argv:
        tg.vmap(tg.grad(rosen), device="cuda")(X)
    if "dask" in sys.argv:
        import dask, dask.array as da
        with dask.config.set(scheduler="threads"):
            tg.vmap(tg.grad(rosen), fuse=False)(da.from_array(X, chunks=(20, 6))).compute()

functions = [getattr(_interp.interpreters(), name)
             for name in ("forward", "backward", "tangent", "backward_tangent")]
functions.append(_interp.reverse_first().backward_first)
functions.append(_interp.interpreters(batched=True).run_tiles)
for fn in functions:
    for sig in fn.signatures:
        print("signature", fn.__name__, " | ".join(str(a) for a in sig))
'''
_TAPE_ARGUMENTS = {"forward": 4, "tangent": 4, "backward": 5, "backward_tangent": 5,
                   "backward_first": 5, "run_tiles": 5}     # E, FC, IP, S (and NEED) first


@pytest.mark.parametrize("extra", [[], ["dask"], ["cuda"]], ids=["cpu", "dask", "cuda simulator"])
def test_every_path_compiles_one_signature_per_dtype(extra):
    """numba types a read-only array apart from a writable one: a path that passed the tape
    arrays writable would compile every interpreter again (minutes), and leave a second
    signature behind."""
    if "dask" in extra:
        pytest.importorskip("dask")
    env = {"NUMBA_ENABLE_CUDASIM": "1"} if "cuda" in extra else {}
    code, out = run_python(f"import sys\nsys.argv += {extra!r}\n" + textwrap.dedent(_PATHS),
                           env=env)
    assert code == 0, out
    signatures = {}
    for line in out.splitlines():
        if line.startswith("signature "):
            _, name, args = line.split(" ", 2)
            signatures.setdefault(name, []).append(args.split(" | "))
    assert set(signatures) == set(_TAPE_ARGUMENTS), out
    for name, sigs in signatures.items():
        assert len(sigs) == 2, (name, sigs)        # float64 and float32 values
        for args in sigs:
            n = _TAPE_ARGUMENTS[name]
            assert all(a.startswith("readonly array") for a in args[:n]), (name, args)
            assert not args[n].startswith("readonly"), (name, args)   # V (or V0): writable


# ---- a loaded tape takes the inputs a traced tape takes ---------------------------------------

@pytest.mark.parametrize("bad, error, message", [
    (np.ones((2, 3)), ValueError, r"\(array of shape \(2, 3\) and dtype float64\) does not match"),
    (np.ones((3, 2)) + 1j, TypeError, "complex numbers are not supported"),
    (np.ones((3, 2), np.int64), ValueError, "dtype int64"),
    (np.ones((3, 2), bool), ValueError, "dtype bool"),
    (np.ones((3, 2), object), ValueError, "dtype object"),
    (np.ones((3, 2), np.float32), ValueError, "dtype float32"),
    (np.ones(6), ValueError, r"shape \(6,\)"),
])
def test_loaded_and_traced_tapes_refuse_the_same_inputs(loaded, bad, error, message):
    traced = tg.trace(lambda x: (x * x).sum(), np.ones((3, 2)))
    for t in (loaded, traced):
        for replay in (t, t.gradient):
            with pytest.raises(error, match=message):
                replay(bad)
        with pytest.raises(error, match=message):
            t.load([bad])
    np.testing.assert_array_equal(loaded.gradient(np.full((3, 2), 2.0)), np.full((3, 2), 4.0))


def test_a_loaded_tape_keeps_the_inputs_of_python_numbers(tmp_path):
    t = tg.trace(lambda x, a: (x * a).sum(), np.ones(3), 2.0)
    t.save(tmp_path / "t.npz")
    loaded = tg.load(tmp_path / "t.npz")
    assert float(loaded(np.ones(3), 3.0)) == float(t(np.ones(3), 3.0)) == 9.0
    with pytest.raises(TypeError, match="complex numbers are not supported"):
        loaded(np.ones(3), 3.0 + 1j)
    with pytest.raises(TypeError, match="complex numbers are not supported"):
        t(np.ones(3), 3.0 + 1j)
