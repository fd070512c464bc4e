"""The validation boundary: every tape that reaches an interpreter has passed `validate_tape`.

* In-process tapes are valid by construction and marked where they are built (the eager graph's
  FlatTape and GraphTape by class, traced tapes when first swept, loaded tapes by the loader);
  the sweeps (`_sweep`) refuse anything not marked `validated`.
* Every mutation of a real tape's arrays that could make an interpreter read or write outside
  its buffers raises TapeFormatError with a message that names the problem.
* The validator's cost next to a replay is measured (printed; nothing timed is asserted).
"""
import copy
import time
import types

import numpy as np
import pytest

import tapegrad
from tapegrad import TapeFormatError
from tapegrad.core import sweep as _sweep
from tapegrad.transforms import io as _io
from tapegrad.core.registry import OPCODE, PRIMS
from tapegrad.transforms.tape import Tape


def program(x, w):
    """Most primitives: matmul, unary, gather, segment reductions, pack, where, a guard."""
    h = (x @ w).tanh()
    h2 = h[:, [0, 1, 1]]
    s = h2.sum(1)
    m = tapegrad.amax(h, 0)
    p = tapegrad.prod(h * 0.5 + 1, 1)
    c = tapegrad.cat([s, p])
    wh = tapegrad.where(c > 0, c, -c)
    if x.sum() > 0:
        return wh.sum() + m.sum()
    return wh.sum() - m.sum()


X = np.random.default_rng(0).random((3, 4))
W = np.random.default_rng(1).random((4, 2))


@pytest.fixture(scope="module")
def tape():
    t = tapegrad.trace(program, X, W)
    t(X, W)
    return t


@pytest.fixture
def arrays(tape):
    return copy.deepcopy(_io.to_arrays(tape))


def entry(arrays, name, k=0):
    """Index of the k-th entry of primitive `name`."""
    return int(np.flatnonzero(arrays["E"][:, 0] == OPCODE[name])[k])


def payload(arrays, e):
    off, n = arrays["E"][e, 5], arrays["E"][e, 6]
    return slice(off, off + n)


# ---- in-process tapes are marked ----------------------------------------------------------------

def test_traced_tapes_validate_and_are_marked(tape):
    assert tape.validated is True
    fresh = tapegrad.trace(program, X, W)
    assert tapegrad.validate_tape(fresh) is fresh and fresh.validated


def test_nested_transform_tapes_validate_in_process():
    inner = tapegrad.grad(lambda x, a: (a * x ** 3).sum())
    outer = tapegrad.grad(lambda a: inner(np.ones(3), a).sum())
    assert outer(np.array([1.0, 2.0, 3.0])).tolist() == [3.0, 3.0, 3.0]
    tape = tapegrad.trace(lambda a: inner(np.ones(3), a).sum(), np.array([1.0, 2.0, 3.0]))
    assert tape.calls
    tapegrad.validate_tape(tape, calls=tape.calls)
    with pytest.raises(TapeFormatError, match="nested transforms"):
        tapegrad.validate_tape(tape)            # a tape from arrays may not hold Python rules


def test_eager_tapes_are_valid_by_construction():
    from tapegrad.inspect.display import GraphTape
    from tapegrad.core.flat import FlatTape
    from tapegrad.eager.flatten import linearize
    x = tapegrad.tensor([1., 2.], requires_grad=True)
    y = (x * x).sum()
    flat = linearize((y,))
    assert FlatTape.validated is True and GraphTape.validated is True
    arrays = types.SimpleNamespace(E=flat.E, FC=flat.FC, IP=flat.IP, S=flat.S, NEED=flat.NEED,
                                   V0=flat.V, shapes=[v.shape for v in flat.values],
                                   input_slots=[], output_slots=[], guards=[])
    tapegrad.validate_tape(arrays)              # what construction promises, checked
    np.testing.assert_array_equal(y.tape.adjoints()[:2], [2., 4.])


def test_sweeps_refuse_unvalidated_tapes(tape):
    arrays = types.SimpleNamespace(E=tape.E, FC=tape.FC, IP=tape.IP, S=tape.S, NEED=tape.NEED,
                                   calls=[])
    V = tape.V0.copy()
    for sweep, args in ((_sweep.forward, (V,)), (_sweep.backward, (V, np.zeros((1, V.size)))),
                        (_sweep.tangent, (V, np.zeros((1, V.size)))),
                        (_sweep.backward_tangent, (V, np.zeros((1, V.size)), np.zeros(V.size),
                                                   np.zeros((1, V.size))))):
        with pytest.raises(TapeFormatError, match="has not been validated"):
            sweep(arrays, *args)
    arrays.validated = False
    with pytest.raises(TapeFormatError, match="SimpleNamespace that has not been validated"):
        _sweep.forward(arrays, V)


def test_a_tape_marked_invalid_is_refused_until_validated(tape):
    t = Tape(types.SimpleNamespace(E=tape.E.copy(), FC=tape.FC.copy(), IP=tape.IP.copy(),
                                   S=tape.S.copy(), NEED=tape.NEED.copy(), V=tape.V0.copy(),
                                   offsets=tape.offsets, sizes=tape.sizes,
                                   values=[types.SimpleNamespace(shape=s) for s in tape.shapes],
                                   calls=[]),
             tape.input_slots, tape.output_slots, tape.out_structure, tape.guards, [])
    t.validated = False
    with pytest.raises(TapeFormatError, match="Tape that has not been validated"):
        t(X, W)
    tapegrad.validate_tape(t)
    assert t(X, W) == tape(X, W)


def test_adjoint_prefix_must_cover_the_slots_that_need_adjoints(tape):
    """Traced tapes keep adjoints in a prefix of the buffer (`n_adjoint`): the reverse sweeps
    write the adjoints of NEED slots only, so every NEED slot must lie inside it."""
    t = copy.copy(tape)
    t.validated = None
    need = np.flatnonzero(tape.NEED)
    end = int(tape.S[need[-1], 0] + tape.S[need[-1], 1])
    t.n_adjoint = end
    tapegrad.validate_tape(t)
    t.n_adjoint = end - 1
    with pytest.raises(TapeFormatError, match="beyond the adjoint prefix"):
        tapegrad.validate_tape(t)
    t.n_adjoint = tape.V0.size + 1
    with pytest.raises(TapeFormatError, match="is not a size within the value buffer"):
        tapegrad.validate_tape(t)


def test_a_user_built_tape_is_refused_until_validated(tape):
    """A Tape built from arrays is refused by every sweep until the validator passed it; a bad
    one never passes, so it never runs."""
    E = tape.E.copy()
    E[0, 1] = 10 ** 6                            # an operand far outside the buffer
    t = Tape(types.SimpleNamespace(E=E, FC=tape.FC.copy(), IP=tape.IP.copy(), S=tape.S.copy(),
                                   NEED=tape.NEED.copy(), V=tape.V0.copy(), offsets=tape.offsets,
                                   sizes=tape.sizes,
                                   values=[types.SimpleNamespace(shape=s) for s in tape.shapes],
                                   calls=[]),
             tape.input_slots, tape.output_slots, tape.out_structure, tape.guards, [])
    with pytest.raises(TapeFormatError, match="has not been validated"):
        t(X, W)
    with pytest.raises(TapeFormatError, match="operand slot 1000000 out of range"):
        tapegrad.validate_tape(t)
    assert not getattr(t, "validated", False)


# ---- hostile arrays -----------------------------------------------------------------------------

def _set(name, index, value):
    def mutate(a):
        a[name][index] = value
    return mutate


def _replace(name, make):
    def mutate(a):
        a[name] = make(a[name])
    return mutate


def _unary_out_of(a):
    return entry(a, "tanh")


def _m(fn):
    return fn


MUTATIONS = {
    "unknown opcode": (lambda a: a["E"].__setitem__((0, 0), len(PRIMS) + 5), "unknown opcode"),
    "negative opcode": (lambda a: a["E"].__setitem__((0, 0), -1), "unknown opcode -1"),
    "operand out of range": (lambda a: a["E"].__setitem__((entry(a, "tanh"), 1), 10 ** 9),
                             "operand slot 1000000000 out of range"),
    "negative operand": (lambda a: a["E"].__setitem__((entry(a, "tanh"), 1), -2),
                         "operand slot -2 out of range"),
    "huge operand": (lambda a: a["E"].__setitem__((entry(a, "tanh"), 1), 2 ** 63 - 1),
                     "out of range"),
    "output out of range": (lambda a: a["E"].__setitem__((0, 4), len(a["S"])),
                            "output slot is out of range"),
    "read before written": (lambda a: a["E"].__setitem__((entry(a, "tanh"), 1),
                                                         a["E"][entry(a, "neg"), 4]),
                            "is read before entry"),
    "written twice": (lambda a: a["E"].__setitem__((-1, 4), a["guards"][0, 0]),
                      "is written twice"),
    "writes its own operand": (lambda a: a["E"].__setitem__((entry(a, "tanh"), slice(1, 5, 3)),
                                                            0), "writes its own operand"),
    "extra operand": (lambda a: a["E"].__setitem__((entry(a, "tanh"), 2), 0),
                      "tanh takes 1 operand"),
    "pack with inline operands": (lambda a: a["E"].__setitem__((entry(a, "pack"), 1), 0),
                                  "pack takes its operands from the payload"),
    "payload past IP": (lambda a: a["E"].__setitem__((entry(a, "gather"), 5), a["IP"].size),
                        "outside IP"),
    "negative payload offset": (lambda a: a["E"].__setitem__((entry(a, "gather"), 5), -3),
                                "outside IP"),
    "negative payload length": (lambda a: a["E"].__setitem__((entry(a, "gather"), 6), -1),
                                "outside IP"),
    "huge payload span": (lambda a: a["E"].__setitem__((entry(a, "gather"), 6), 2 ** 62),
                          "outside IP"),
    "gather index out of range": (lambda a: a["IP"].__setitem__(
        payload(a, entry(a, "gather")).start, 10 ** 6), "gather index out of range"),
    "negative gather index": (lambda a: a["IP"].__setitem__(
        payload(a, entry(a, "gather")).start, -1), "gather index out of range"),
    "short gather payload": (lambda a: a["E"].__setitem__((entry(a, "gather"), 6),
                                                          a["E"][entry(a, "gather"), 6] - 1),
                             "gather needs a payload of 9 integers, got 8"),
    "segment id out of range": (lambda a: a["IP"].__setitem__(
        payload(a, entry(a, "segsum")).start, 3), "segsum index out of range"),
    "segmax id negative": (lambda a: a["IP"].__setitem__(
        payload(a, entry(a, "segmax")).start, -5), "segmax index out of range"),
    "matmul dimensions": (lambda a: a["IP"].__setitem__(payload(a, entry(a, "matmul")).start + 1,
                                                        4), "matmul"),
    "matmul negative batch": (lambda a: a["IP"].__setitem__(
        payload(a, entry(a, "matmul")).start, -1), "matmul dimensions"),
    "matmul huge k": (lambda a: a["IP"].__setitem__(payload(a, entry(a, "matmul")).start + 2,
                                                    2 ** 40), "matmul"),
    "matmul constant flag": (lambda a: a["IP"].__setitem__(
        payload(a, entry(a, "matmul")).start + 6, 7), "matmul dimensions"),
    "pack operand swapped": (lambda a: a["IP"].__setitem__(payload(a, entry(a, "pack")).start, 3),
                             "pack operands do not add up"),
    "unary size mismatch": (lambda a: a["E"].__setitem__((entry(a, "tanh"), 1), 0),
                            "tanh maps 12 values to 6"),
    "binary operand size": (lambda a: a["E"].__setitem__((entry(a, "gt"), 1), 0),
                            "gt operand of size 12 for an output of 6"),
    "where operand size": (lambda a: a["E"].__setitem__((entry(a, "where"), 2), 1),
                           "where needs operands of the output's size 6"),
    "nested transform entry": (lambda a: a["E"].__setitem__((entry(a, "pack"), 0), OPCODE["call"]),
                               "nested-transform entry cannot be loaded"),
    "slot gap": (lambda a: a["S"].__setitem__((3, 0), a["S"][3, 0] + 1),
                 "contiguous, non-negative spans"),
    "negative size": (lambda a: a["S"].__setitem__((3, 1), -1), "contiguous, non-negative spans"),
    "overlapping spans": (lambda a: a["S"].__setitem__((3, 0), a["S"][3, 0] - 1),
                          "contiguous, non-negative spans"),
    "huge size": (lambda a: a["S"].__setitem__((3, 1), 2 ** 62), "contiguous, non-negative"),
    "negative offset": (lambda a: a["S"].__setitem__((0, 0), -4), "contiguous, non-negative"),
    "buffer too short": (_replace("V0", lambda v: v[:-1].copy()), "tile the value buffer"),
    "buffer too long": (_replace("V0", lambda v: np.append(v, 0.0)),
                        lambda a: f"the slot table covers {a['V0'].size} values but the buffer "
                                  f"holds {a['V0'].size + 1}"),
    "NEED not a flag": (lambda a: a["NEED"].__setitem__(2, 2), "NEED must hold 0 or 1"),
    "E as float": (_replace("E", lambda e: e.astype(np.float64)), "E must be int64"),
    "E as int32": (_replace("E", lambda e: e.astype(np.int32)), "E must be int64, got int32"),
    "E big-endian": (_replace("E", lambda e: e.astype(">i8")), "E must be int64, got >i8"),
    "E Fortran order": (_replace("E", np.asfortranarray), "C-contiguous"),
    "E with 7 columns": (_replace("E", lambda e: e[:, :7].copy()), "inconsistent array shapes"),
    "E as 1-d": (_replace("E", lambda e: e.ravel().copy()), "E must have 2 dimension"),
    "FC as int": (_replace("FC", lambda f: f.astype(np.int64)), "FC must have dtype float64"),
    "FC rows": (_replace("FC", lambda f: f[:-1].copy()), "inconsistent array shapes"),
    "S as int32": (_replace("S", lambda s: s.astype(np.int32)), "S must be int64"),
    "V0 as int": (_replace("V0", lambda v: v.astype(np.int64)), "1-d float32 or float64"),
    "V0 as float16": (_replace("V0", lambda v: v.astype(np.float16)), "1-d float32 or float64"),
    "V0 as 2-d": (_replace("V0", lambda v: v.reshape(2, -1).copy()), "1-d float32 or float64"),
    "V0 as strings": (_replace("V0", lambda v: v.astype(str)), "1-d float32 or float64"),
    "shape product": (lambda a: a["shape_dims"].__setitem__(0, 5), "slot 0: shape (5, 4)"),
    "negative dimension": (lambda a: a["shape_dims"].__setitem__(0, -3), "shape (-3, 4)"),
    "shape count": (_replace("shape_ndim", lambda n: n[:-1].copy()),
                    lambda a: f"{len(a['S']) - 1} shapes for {len(a['S'])} slots"),
    "huge ndim": (lambda a: a["shape_ndim"].__setitem__(0, 2 ** 62), "malformed slot shapes"),
    "ndim sum wraps": (lambda a: a["shape_ndim"].__setitem__(slice(0, 2), 2 ** 62 + 1),
                       "malformed slot shapes"),
    "input slot out of range": (lambda a: a["inputs"].__setitem__(0, 10 ** 6),
                                "input slot 1000000 out of range"),
    "input written by an entry": (lambda a: a["inputs"].__setitem__(0, a["E"][0, 4]),
                                  "is overwritten by an entry"),
    "input listed twice": (lambda a: a["inputs"].__setitem__(1, a["inputs"][0]), "listed twice"),
    "output slot negative": (lambda a: a["outputs"].__setitem__(0, -1), "output slot -1"),
    "guard slot out of range": (lambda a: a["guards"].__setitem__((0, 0), 99),
                                "guard slot 99 out of range"),
    "guard of a vector": (lambda a: a["guards"].__setitem__((0, 0), a["E"][entry(a, "neg"), 4]),
                          "holds 6 values, not one"),
    "guard outcome 2": (lambda a: a["guards"].__setitem__((0, 1), 2), "malformed guards"),
    "guards with NaN": (_replace("guards", lambda g: np.full(g.shape, np.nan)),
                        "guards must be int64, got float64"),
    "guards 1-d": (_replace("guards", lambda g: g.ravel().copy()), "malformed guards"),
    "format name": (_replace("format", lambda f: np.array("pickle")), "not a tapegrad tape file"),
    "format as bytes": (_replace("format", lambda f: np.array(b"tapegrad-tape")),
                        "not a tapegrad tape file"),
    "newer version": (_replace("version", lambda v: np.array(2)), "unsupported tape format"),
    "version as float": (_replace("version", lambda v: np.array(1.0)), "unsupported tape format"),
    "missing array": (lambda a: a.pop("IP"), "missing array 'IP'"),
    "array as a list": (_replace("S", lambda s: s.tolist()), "S must be a numpy array"),
    "structure mismatch": (_replace("structure", lambda s: np.array('["*"]')),
                           "malformed output structure"),
    "structure of two": (_replace("structure", lambda s: np.array('{"tuple": ["*", "*"]}')),
                         "does not match the outputs"),
    "structure not JSON": (_replace("structure", lambda s: np.array("{tuple")),
                           "malformed output structure"),
    "structure as number": (_replace("structure", lambda s: np.array(3)),
                            "malformed output structure"),
    "deep structure": (_replace("structure", lambda s: np.array('{"list": [' * 150 + '"*"'
                                                                + "]}" * 150)),
                       "nested too deeply"),
    "very deep JSON": (_replace("structure", lambda s: np.array("[" * 100000 + "]" * 100000)),
                       "malformed output structure"),
    "dict with list keys": (_replace("structure", lambda s: np.array(
        '{"dict": [[1]], "items": ["*"]}')), "malformed dict"),
}


@pytest.mark.parametrize("name", list(MUTATIONS))
def test_hostile_arrays_are_refused(arrays, name):
    mutate, message = MUTATIONS[name]
    if callable(message):               # a message that counts the sample tape's slots
        message = message(arrays)
    mutate(arrays)
    with pytest.raises(TapeFormatError) as info:
        _io.from_arrays(arrays)
    assert message in str(info.value)


def test_read_only_arrays_load_and_stay_read_only(arrays):
    """Arrays someone else can still write (here a read-only view of a writable array) are
    validated as read-only copies: the tape never shares memory another reference writes."""
    E = arrays["E"]
    arrays["E"] = np.lib.stride_tricks.as_strided(E, writeable=False)
    t = _io.from_arrays(arrays)
    assert not np.shares_memory(t.E, E) and not t.E.flags.writeable
    E[0, 1] = 10 ** 6                        # after validation: the tape's copy is unchanged
    np.testing.assert_allclose(t(X, W), program(tapegrad.tensor(X), tapegrad.tensor(W)).item(),
                               rtol=1e-14)


def test_unmutated_arrays_load(arrays):
    t = _io.from_arrays(arrays)
    np.testing.assert_allclose(t(X, W), program(tapegrad.tensor(X), tapegrad.tensor(W)).item(),
                               rtol=1e-14)


def _minimal(sizes, shapes, entries=()):
    """Arrays of a tape with the given slot sizes (a value buffer of their int64 sum)."""
    S = np.zeros((len(sizes), 2), np.int64)
    S[:, 1] = sizes
    S[1:, 0] = np.cumsum(S[:-1, 1])
    total = int(S[-1, 0] + S[-1, 1])
    E = np.array(entries, np.int64).reshape(-1, 8)
    return dict(format=np.array("tapegrad-tape"), version=np.array(1), E=E,
                FC=np.zeros((len(E), 2)), IP=np.zeros(0, np.int64), S=S,
                NEED=np.zeros(len(sizes), np.int64), V0=np.zeros(max(total, 0)),
                shape_ndim=np.array([len(s) for s in shapes], np.int64),
                shape_dims=np.array([d for s in shapes for d in s], np.int64),
                inputs=np.array([0], np.int64), outputs=np.array([len(sizes) - 1], np.int64),
                guards=np.zeros((0, 2), np.int64), structure=np.array('"*"'))


def test_slot_sizes_that_wrap_int64_are_refused():
    """Three sizes near 2**63 add up (modulo 2**64) to 2: the buffer's size."""
    big = 2 ** 63 - 1
    with np.errstate(over="ignore"):
        arrays = _minimal([big, big, 4], [(big,), (big,), (4,)])
    assert arrays["V0"].size == 2 or arrays["V0"].size == 0
    arrays["V0"] = np.zeros(2)
    with pytest.raises(TapeFormatError, match="contiguous, non-negative spans"):
        _io.from_arrays(arrays)


def test_shape_products_are_exact():
    """A (2**32, 2**32) shape multiplies to 0 in int64: it must not pass for an empty slot."""
    arrays = _minimal([1, 0, 1], [(1,), (2 ** 32, 2 ** 32), ()])
    with pytest.raises(TapeFormatError, match=r"slot 1: shape \(4294967296, 4294967296\) does "
                                              r"not hold 0 values"):
        _io.from_arrays(arrays)


def test_total_has_one_output_value():
    arrays = _minimal([2, 2], [(2,), (2,)], [(OPCODE["total"], 0, -1, -1, 1, 0, 0, 0)])
    with pytest.raises(TapeFormatError, match="entry 0: total has one output value, not 2"):
        _io.from_arrays(arrays)
    arrays = _minimal([2, 1], [(2,), ()], [(OPCODE["total"], 0, -1, -1, 1, 0, 0, 0)])
    assert _io.from_arrays(arrays)(np.array([1.0, 2.0])) == 0.0     # c0 = 0: a valid tape


def test_nan_and_inf_constants_are_values_not_errors(arrays):
    """Constants and values may be anything: they are data, never indices."""
    arrays["FC"][:] = np.nan
    arrays["V0"][:] = np.inf
    t = _io.from_arrays(arrays)
    with np.errstate(all="ignore"):
        for replay in (t, t.gradient):
            try:
                replay(X, W)
            except tapegrad.GuardError:
                pass


@pytest.mark.parametrize("mutate, message", [
    (lambda ip: ip.__setitem__(0, 10 ** 6), "gather_diff index out of range"),
    (lambda ip: ip.__setitem__(-1, -1), "gather_diff index out of range"),
])
def test_pair_difference_indices_are_checked(mutate, message):
    I, J = np.array([0, 0, 1]), np.array([1, 2, 2])
    arrays = _io.to_arrays(tapegrad.trace(lambda x: (x[I] - x[J]).sum(), np.ones(3)))
    e = entry(arrays, "gather_diff")
    loaded = _io.from_arrays(copy.deepcopy(arrays))         # valid as recorded, and replays
    x = np.array([1.0, 4.0, 9.0])
    np.testing.assert_allclose(loaded(x), (x[I] - x[J]).sum())
    mutate(arrays["IP"][payload(arrays, e)])
    with pytest.raises(TapeFormatError, match=message):
        _io.from_arrays(arrays)
    arrays["E"][e, 6] -= 1
    with pytest.raises(TapeFormatError, match="gather_diff needs a payload of 6 integers"):
        _io.from_arrays(arrays)


def test_sum_of_squares_segments_are_checked():
    f = lambda x: tapegrad.sum(tapegrad.sum(x * x, 1))
    arrays = _io.to_arrays(tapegrad.trace(f, np.ones((3, 2))))
    e = entry(arrays, "segsumsq")
    x = np.arange(6.0).reshape(3, 2)
    assert _io.from_arrays(copy.deepcopy(arrays))(x) == np.sum(x * x)
    arrays["IP"][payload(arrays, e)][0] = 3                  # a segment past the output's 3
    with pytest.raises(TapeFormatError, match="segsumsq index out of range"):
        _io.from_arrays(copy.deepcopy(arrays))
    arrays["E"][e, 6] -= 1
    with pytest.raises(TapeFormatError, match="segsumsq needs a payload of 6 integers"):
        _io.from_arrays(arrays)


def test_every_primitive_is_covered_by_a_shape_rule():
    """Every structural primitive's definition has a shape rule, which the validator runs."""
    for p in PRIMS:
        if p.kind in ("unary", "binary", "call"):
            continue
        assert callable(p.check), p.name


# ---- cost ---------------------------------------------------------------------------------------

def _median(fn, repeat):
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def _chain(x):
    for _ in range(1000):
        x = (x * 1.0001 + 0.001).tanh()
    return x.sum()


def _mlp(x, w1, w2, w3):
    h = (x @ w1).tanh()
    h = (h @ w2).tanh()
    return ((h @ w3) ** 2).mean()


@pytest.mark.parametrize("case", ["scalar chain (3001 entries)", "MLP 64-128-128-10, batch 32",
                                  "test program (18 entries)"])
def test_validator_cost_next_to_a_replay(case, record_property, capsys):
    rng = np.random.default_rng(5)
    if case.startswith("scalar"):
        args = (np.array(0.3),)
        f = _chain
    elif case.startswith("MLP"):
        args = (rng.standard_normal((32, 64)), rng.standard_normal((64, 128)) * 0.1,
                rng.standard_normal((128, 128)) * 0.1, rng.standard_normal((128, 10)) * 0.1)
        f = _mlp
    else:
        args, f = (X, W), program
    tape = tapegrad.trace(f, *args)
    tape(*args)
    tape.gradient(*args)
    repeat = 30
    validate = _median(lambda: tapegrad.validate_tape(tape), repeat)
    replay = _median(lambda: tape(*args), repeat)
    gradient = _median(lambda: tape.gradient(*args), repeat)
    arrays = _io.to_arrays(tape)
    load = _median(lambda: _io.from_arrays(arrays), repeat)
    line = (f"validator cost, {case}: {len(tape)} entries: validate {validate * 1e6:.0f} us, "
            f"forward replay {replay * 1e6:.0f} us ({validate / replay:.1f}x), value and "
            f"gradient {gradient * 1e6:.0f} us ({validate / gradient:.1f}x), from_arrays "
            f"{load * 1e6:.0f} us")
    record_property("cost", line)
    with capsys.disabled():
        print("\n" + line)


def test_softmax_entries_are_checked():
    """A softmax entry of another operand size, or with a payload, is refused (its kernels
    read the operand at the output's indices)."""
    def f(x, w):
        e = np.exp(x - np.max(x))
        return np.sum(e / np.sum(e) * np.arange(3.0)) + np.sum(w)

    x, w = np.array([0.5, -1.0, 2.0]), np.array([1.0, 2.0])
    tape = tapegrad.trace(f, x, w)
    arrays = _io.to_arrays(tape)
    e = entry(arrays, "softmax")
    np.testing.assert_allclose(_io.from_arrays(copy.deepcopy(arrays))(x, w), f(x, w),
                               rtol=1e-14)
    bad = copy.deepcopy(arrays)
    bad["IP"] = np.zeros(1, np.int64)                      # a payload of one integer
    bad["E"][e, 5:7] = (0, 1)
    with pytest.raises(TapeFormatError, match="softmax takes no payload"):
        _io.from_arrays(bad)
    bad = copy.deepcopy(arrays)
    bad["E"][e, 1] = tape.input_slots[1]                    # w: an operand of two values
    with pytest.raises(TapeFormatError, match="softmax needs an operand of the output's size 3"):
        _io.from_arrays(bad)
