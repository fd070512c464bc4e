"""grad's sweeps as programs (`core.programs`): a tape's scalar entries with their value offsets
resolved once, the other entries run by the flat interpreters' kernels.

* Every elementwise primitive, one-element entries of special and random values, float64 and
  float32, operands with and without adjoints (a sink takes what nobody needs): the program
  sweeps give the flat sweeps' values and adjoints bitwise.
* Whole functions (a graph of scalars as in the FAW benchmark, a scalar loop with constants,
  clips and powers, scalar code mixed with array operations, a guarded branch): `grad` and
  `value_and_grad` through programs give the flat sweeps' bits at every call, and HIPS
  autograd's gradient; the compiled members still equal them.
* Who takes programs: a tape with `MIN_SCALAR_ROWS` scalar entries does, one with fewer does
  not, and value_and_grad's one-call compiled path steps aside for them; anomaly mode still
  sweeps entry by entry.
"""
import autograd
import autograd.numpy as anp
import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

import tapegrad as tg
from tapegrad.core import programs
from tapegrad.core.interp import interpreters, program_sweeps
from tapegrad.core.registry import BY_NAME, PRIMS
from tapegrad.core.validate import read_only

from conftest import rng_for
from test_aliases import faw_graph
from test_layouts import _scalar_operands, one_entry
from test_registry import SPECIAL

ELEMENTWISE = [p.name for p in PRIMS if p.elementwise]
DTYPES = [np.float64, np.float32]


@pytest.fixture
def always(monkeypatch):
    """Every tape with a scalar entry takes programs."""
    monkeypatch.setattr(programs, "MIN_SCALAR_ROWS", 1)


# ---- one entry: the program sweeps against the flat ones ---------------------------------------

def _check_entry(p, operands, need, dtype):
    # read-only, as the sweeps' callers pass a tape's arrays: writable ones are another
    # signature, whose compile (about 95 s per sweep and dtype) a cold run would pay for this test
    E, FC, IP, S, NEED = (read_only(a, owned=True) for a in
                          one_entry(p, [1] * len(operands), 1, c0=2.0, c1=3.0, need=need))
    n = int(S[:, 1].sum())
    out = int(S[-1, 0])
    V0 = np.concatenate(operands + [np.zeros(1, dtype)])
    m, flat = program_sweeps(), interpreters()
    want_V, got_V = V0.copy(), V0.copy()
    flat.forward(E, FC, IP, S, want_V, 0, 1)
    m.forward(*programs.rows(E, S), E, FC, IP, S, got_V)
    assert_array_equal(got_V, want_V, err_msg=f"{p.name} forward")
    want_G = np.zeros((1, n), dtype)
    want_G[0, out] = 1.0
    flat.backward(E, FC, IP, S, NEED, want_V, want_G, 0, 1)
    got_G = np.full((1, n + 1), np.nan, dtype)      # the sweep zeroes it, the sink included
    m.backward(*programs.rows(E, S, NEED, sink=n), E, FC, IP, S, NEED, got_V, got_G, out)
    assert_array_equal(got_G[:, :n], want_G, err_msg=f"{p.name} backward, NEED {NEED}")
    for j in np.flatnonzero(NEED == 0):              # nothing written where no adjoint is needed
        assert got_G[0, S[j, 0]] == 0.0


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("name", ELEMENTWISE)
def test_one_element_rows_give_the_flat_sweeps_bits(name, dtype):
    p = BY_NAME[name]
    rng = rng_for(f"programs {name}")
    for trial in range(8):
        operands = [o[:, 0] for o in _scalar_operands(p, rng, dtype)]
        # which operands need an adjoint: all, or (binary) either one, or none
        patterns = [None, {1}, {0}, set()] if len(operands) == 2 else [None, set()]
        need = patterns[trial % len(patterns)]
        with np.errstate(all="ignore"):
            _check_entry(p, operands, need, dtype)


@pytest.mark.parametrize("name", [n for n in ELEMENTWISE if BY_NAME[n].kind == "binary"])
def test_binary_rows_at_special_pairs(name):
    with np.errstate(all="ignore"):
        for a in SPECIAL:
            for b in SPECIAL[::3]:
                _check_entry(BY_NAME[name], [np.array([a]), np.array([b])], None, np.float64)


def test_rows_resolve_offsets_and_leave_other_entries_to_the_kernels():
    tape = tg.trace(lambda x: faw_graph(np, 24, x), X)
    arrays, _ = tape._aliased()
    E, S, NEED = arrays.E, arrays.S, arrays.NEED
    P, K = programs.rows(E, S)
    assert K.size == 0
    assert not P.flags.writeable and P.dtype == np.int64 and len(P) == len(E)
    scalar = P[:, 0] >= 0
    assert scalar.any() and (~scalar).any()          # pack and softmax entries stay entries
    e = P[scalar, 1]
    assert_array_equal(P[scalar, 0], E[e, 0])
    assert_array_equal(P[scalar, 2], S[E[e, 1], 0])
    assert_array_equal(P[scalar, 4], S[E[e, 4], 0])
    R, _ = programs.rows(E, S, NEED, sink=tape.n_adjoint)
    assert (NEED[E[R[:, 1], 4]] == 1).all()
    assert len(R) == int(NEED[E[:, 4]].sum())
    # softplus, logaddexp(0, x): the constant's values are read where they are, its adjoint
    # goes to the sink
    rs = R[R[:, 0] >= 0]
    assert_array_equal(rs[:, 2], S[E[rs[:, 1], 1], 0])
    no_adjoint = NEED[E[rs[:, 1], 1]] == 0
    assert no_adjoint.any() and (rs[no_adjoint, 5] == tape.n_adjoint).all()
    assert_array_equal(rs[~no_adjoint, 5], rs[~no_adjoint, 2])


def test_packs_of_scalars_are_copy_rows_in_the_packs_order():
    tape = tg.trace(packs(np), X[:14])
    arrays, _ = tape._aliased()
    E, IP, S, NEED = arrays.E, arrays.IP, arrays.S, arrays.NEED
    sink = tape.n_adjoint
    P, _ = programs.rows(E, S, IP=IP)
    R, _ = programs.rows(E, S, NEED, sink=sink, IP=IP)
    pack = BY_NAME["pack"].opcode
    for table, reverse in ((P, False), (R, True)):
        assert (np.diff(table[:, 1]) >= 0).all()          # rows in their entries' order
        scalar_packs = mixed_packs = 0
        for e in np.flatnonzero(E[:, 0] == pack):
            if reverse and not NEED[E[e, 4]]:
                assert e not in table[:, 1]
                continue
            operands = IP[E[e, 5]:E[e, 5] + E[e, 6]]
            mine = table[table[:, 1] == e]
            if (S[operands, 1] > 1).any():          # run by the kernel, as recorded
                assert_array_equal(mine[:, 0], [-1])
                mixed_packs += 1
                continue
            scalar_packs += 1
            order = slice(None, None, -1) if reverse else slice(None)
            assert_array_equal(mine[:, 0], BY_NAME["copy"].opcode)
            assert_array_equal(mine[order, 2], S[operands, 0])
            assert_array_equal(mine[order, 4], S[E[e, 4], 0] + np.arange(operands.size))
            if reverse:
                need = NEED[operands].astype(bool)
                assert_array_equal(mine[order, 5], np.where(need, S[operands, 0], sink))
                assert (~need).any() or operands.size < 6
        assert scalar_packs == 36 and mixed_packs == 12
    # without the payload, packs stay entries
    assert (programs.rows(E, S)[0][:, 0][E[:, 0] == pack] == -1).all()


def _fused(tape):
    arrays, _ = tape._aliased()
    return arrays, programs.fusible(arrays, tape._read_by_offset())


def test_a_pack_read_only_by_the_next_softmax_is_left_out():
    """FAW's packs feed their softmax alone: no pack runs, each softmax reads the scalars
    where they are (a gathered row, K holding their value and adjoint offsets)."""
    tape = tg.trace(lambda x: faw_graph(np, 60, x), X)
    arrays, fused = _fused(tape)
    E, IP, S, NEED = arrays.E, arrays.IP, arrays.S, arrays.NEED
    pack, softmax = BY_NAME["pack"].opcode, BY_NAME["softmax"].opcode
    packs = np.flatnonzero(E[:, 0] == pack)
    assert_array_equal(np.sort(fused), np.sort(E[packs, 4]))
    for table, K, reverse in ((*programs.rows(E, S, IP=IP, fused=fused), False),
                              (*programs.rows(E, S, NEED, sink=tape.n_adjoint, IP=IP,
                                              fused=fused), True)):
        assert not np.isin(table[:, 1], packs).any()
        gathered = table[table[:, 0] == -2]
        assert_array_equal(E[gathered[:, 1], 0], softmax)
        assert len(gathered) == packs.size
        for (_, e, ka, k, *_), q in zip(gathered, packs):
            assert e == q + 1 and k == 4
            operands = IP[E[q, 5]:E[q, 5] + 4]
            assert_array_equal(K[ka:ka + 4], S[operands, 0])
            if reverse:
                need = NEED[operands].astype(bool)
                assert_array_equal(K[ka + 4:ka + 8], np.where(need, S[operands, 0],
                                                              tape.n_adjoint))


def test_packs_that_others_read_are_kept(monkeypatch):
    """A pack another entry reads too, a pack read through one of its elements (an alias of
    its values), a pack the function returns (read by its offset) stay: their values are
    written; the gradients and the returned pack are those of the flat sweeps."""
    def f(x):
        total = 0.0
        kept = []
        for i in range(8):
            a, b = x[i], x[i + 1]
            v = np.stack([a, b, a * b])
            e = np.exp(v - np.max(v))
            p = e / np.sum(e)                        # v: fusible
            u = np.stack([b, a * a])
            eu = np.exp(u - np.max(u))
            pu = eu / np.sum(eu)
            total = total + p[0] * b + pu[1] * np.sum(u * x[i:i + 2])   # u: read twice
            w = np.stack([a * b, b])
            ew = np.exp(w - np.max(w))
            total = total + (ew / np.sum(ew))[0] * w[1]        # w: read by an alias too
            kept.append(v)
        return total, kept[3]

    tape = tg.trace(f, X[:10])
    _, fused = _fused(tape)
    assert fused.size == 7          # the v of every step but the returned one
    results = []
    for rows in (10 ** 9, 1):
        monkeypatch.setattr(programs, "MIN_SCALAR_ROWS", rows)
        vg = tg.value_and_grad(f, has_aux=True)
        vg(X[:10])
        results.append(vg(X[:10] * 0.7))
    ((want_value, want_aux), want), ((value, aux), got) = results
    assert value == want_value
    assert_array_equal(aux, want_aux)
    x = X[:10] * 0.7
    assert_allclose(aux, [x[3], x[4], x[3] * x[4]], rtol=1e-15)
    assert_array_equal(got, want)


def test_inlined_kernels_are_the_flat_kernels_statements():
    """softmax and pack run inline in the program sweeps: their flat kernels' statements with
    the loop's names, no call and no slice of the payload."""
    from tapegrad.core import codegen
    for name in ("softmax", "pack"):
        p = BY_NAME[name]
        assert p.inline
        for rule in ("fwd", "vjp"):
            text = codegen.inline_rule(p, rule)
            assert f"{name}_{rule}(" not in text and "ip = " not in text
            assert "S[sa, 0]" in text or "S[IP[ip0 + " in text
    source = codegen.generate_programs("interp", "vecmath")
    assert "softmax_fwd(" not in source and "pack_vjp(" not in source
    assert "matmul_fwd(V, S, sa, sb, sc, so, ip, c0, c1)" in source     # called, not inlined


def test_a_kernel_that_cannot_run_inline_is_refused():
    from tapegrad.core import codegen
    from tapegrad.core.primitive import structural, view
    p = structural(250, "refused", "NoneBackward", lambda *args: None, inline=True)

    @p.fwd
    def refused_fwd(V, S, a, b, c, o, ip, c0, c1):
        y = view(V, S, o)
        x = view(V, S, a)
        if c0 > 0.0:
            return
        y[0] = x[0]

    @p.vjp
    def refused_vjp(V, G, S, NEED, a, b, c, o, ip, c0, c1):
        a = b
        gx = view(G, S, a)
        gx[0] += 1.0

    with pytest.raises(ValueError, match="refused_fwd: a kernel run inline may not return"):
        codegen.inline_rule(p, "fwd")
    with pytest.raises(ValueError, match=r"may not assign its parameters \['a'\]"):
        codegen.inline_rule(p, "vjp")


# ---- whole functions -------------------------------------------------------------------------

def scalar_loop(np):
    """Scalar code with constants on either side, clips, powers and maxima against constants
    (operands without adjoints), a reciprocal and a hyperbolic tangent."""
    def f(x):
        s = 0.0
        for i in range(x.shape[0]):
            a, b = x[i], x[(i + 1) % x.shape[0]]
            s = s + np.sin(a) * b / (1.0 + a * a) + 2.0 ** np.clip(a, -0.5, 0.5)
            s = s + np.maximum(b, 0.25) * np.tanh(a - 1.5) + 3.0 / (2.0 + b * b) + (a * a) ** 1.5
        return s * 0.5 - x[0]
    return f


def mixed(np):
    """Scalar entries around array operations (sums, products of arrays, a matrix product)."""
    M = np.arange(1.0, 1.0 + 100.0).reshape(10, 10) / 50.0
    def f(x):
        y = np.tanh(M @ x[:10])
        s = np.sum(y * x[10:20]) + np.prod(np.cos(x[20:24]))
        for i in range(30):
            s = s * 0.9 + np.exp(-x[i] * x[i + 1]) - x[i + 2] / (1.0 + s * s)
        return s
    return f


def packs(np):
    """Packs of scalars (an operand twice, constants, which need no adjoint), a concatenation
    of arrays and packs (a pack with operands of several elements), softmaxes of 6 and of 10
    values (past 8, numpy's pairwise order of summation)."""
    def f(x):
        s = x[0]
        for i in range(12):
            a, b = x[i], x[i + 1]
            v = np.stack([a, b * s, a, np.cos(a), 0.5 * np.ones(()), np.sin(0.3) * np.ones(())])
            e = np.exp(v - np.max(v))
            p = e / np.sum(e)
            w = np.concatenate([x[i:i + 4], np.stack([p[0] * b, s]), p[3:6], np.stack([a])])
            e10 = np.exp(w - np.max(w))
            q = e10 / np.sum(e10)
            s = s * 0.9 + p[1] * w[5] - np.sum(q * w) + p[2] * q[8]
        return s
    return f


CASES = {"faw": lambda np: lambda x: faw_graph(np, 60, x), "scalar loop": scalar_loop,
         "mixed": mixed, "packs": packs}
X = np.cos(np.arange(100.0)) * 0.8


def _gradients(make, x):
    """Three calls each of grad and value_and_grad of a fresh function."""
    f = make(np)
    g, vg = tg.grad(f), tg.value_and_grad(make(np))
    return [g(x) for _ in range(3)], [vg(x) for _ in range(3)]


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("case", CASES)
def test_functions_through_programs_give_the_flat_sweeps_bits(case, dtype, monkeypatch):
    make, x = CASES[case], X.astype(dtype)
    monkeypatch.setattr(programs, "MIN_SCALAR_ROWS", 10 ** 9)
    flat_g, flat_vg = _gradients(make, x)
    monkeypatch.setattr(programs, "MIN_SCALAR_ROWS", 1)
    prog_g, prog_vg = _gradients(make, x)
    for k in (1, 2):        # the first, traced call sweeps the trace's (numpy's) values
        assert_array_equal(prog_g[k], flat_g[k])
        assert prog_vg[k][0] == flat_vg[k][0]
        assert_array_equal(prog_vg[k][1], flat_vg[k][1])
        assert_array_equal(prog_vg[k][1], prog_g[k])
    assert prog_g[0].dtype == dtype
    want = autograd.grad(make(anp))(X)
    tol = 1e-12 if dtype == np.float64 else 2e-4
    assert_allclose(prog_g[2], want, rtol=tol, atol=tol)


@pytest.mark.parametrize("special", [np.inf, -np.inf, np.nan, 1e308, -1e308, 0.0, -0.0, 5e-324])
def test_packs_and_softmaxes_at_special_values_give_the_flat_sweeps_bits(special, monkeypatch):
    """Infinities, NaN, huge and subnormal values inside the packs and softmaxes (a NaN
    maximum, exp overflowing, sums of infinities): the inlined kernels and copy rows give the
    flat sweeps' values and gradients, NaN where they have NaN."""
    def f(x):           # the packs of `packs`, each step's terms summed, not chained
        total = 0.0
        for i in range(10):
            a, b = x[i], x[i + 1]
            v = np.stack([a, b * a, a, np.cos(b), 0.5 * np.ones(())])
            e = np.exp(v - np.max(v))
            p = e / np.sum(e)
            w = np.concatenate([x[i:i + 4], np.stack([p[0] * b, a]), p[2:5], np.stack([b])])
            e10 = np.exp(w - np.max(w))
            q = e10 / np.sum(e10)
            total = total + p[1] * w[5] + np.sum(q * w) * 0.5 + p[2] * q[8]
        return total

    x = X[:14].copy()
    x[2] = special
    results = []
    for rows in (10 ** 9, 1):
        monkeypatch.setattr(programs, "MIN_SCALAR_ROWS", rows)
        vg = tg.value_and_grad(f)
        with np.errstate(all="ignore"):
            vg(X[:14])
            results.append(vg(x))
    (want_value, want), (value, got) = results
    assert_array_equal(value, want_value)
    assert_array_equal(got, want)
    assert np.isfinite(got[6:]).all()        # steps away from the special value


@pytest.mark.parametrize("case", CASES)
def test_the_transforms_and_compiled_members_agree_with_programs(case, always):
    """Each transform's first call sweeps the trace's values (numpy's), later calls the
    interpreters': a scalar function's vjp and Jacobian are its gradient to the bit."""
    f = CASES[case](np)
    g = tg.grad(f)
    first = g(X)
    _, pullback = tg.vjp(f, X)
    assert_array_equal(np.ravel(pullback(1.0)), first)
    assert_array_equal(np.ravel(tg.jacobian(f, mode="rev")(X)), first)
    want = g(X)
    tape = tg.trace(f, X)
    assert tape.gradient_sweeps(tape.output_slots[0]).programs
    assert_array_equal(tape.gradient(X), want)
    assert_array_equal(tg.compiled(f, X).grad(X), want)


def test_a_guarded_branch_through_programs(always):
    def f(x):
        s = 0.0
        for i in range(20):
            s = s + (x[i] * x[i + 1] if x[i] > 0 else np.exp(x[i]) - x[i + 1])
        return s

    def fa(x):
        return sum(x[i] * x[i + 1] if x[i] > 0 else anp.exp(x[i]) - x[i + 1] for i in range(20))

    g, vg = tg.grad(f), tg.value_and_grad(f)
    for x in (X[:21], -X[:21], X[1:22]):
        want = autograd.grad(fa)(x)
        for _ in range(3):
            assert_allclose(g(x), want, rtol=1e-13, atol=1e-14)
            value, grad = vg(x)
            assert_allclose(grad, want, rtol=1e-13, atol=1e-14)
            assert np.isclose(value, fa(x), rtol=1e-14)


def test_who_takes_programs(monkeypatch):
    monkeypatch.setattr(programs, "MIN_SCALAR_ROWS", 50)

    def chain(n):
        def f(x):
            s = x[0]
            for i in range(n):
                s = s * x[1] + 0.5      # two scalar entries per step
            return s
        return f

    def kind(n):
        tape = tg.trace(chain(n), X[:2])
        return tape.gradient_sweeps(tape.output_slots[0]).programs     # every entry

    assert kind(25) and not kind(24)
    # value_and_grad's one-call compiled path steps aside for a tape that takes programs
    from tapegrad.transforms import compiled
    for n, takes in ((25, True), (24, False)):
        tape = tg.trace(chain(n), X[:2])
        assert (compiled.plain_gradient(tape, tape.output_slots[0]) is None) == takes
    vg = tg.value_and_grad(chain(25))
    for _ in range(3):
        value, grad = vg(X[:2])
    assert_allclose(grad, autograd.grad(chain(25))(X[:2]), rtol=1e-13)


@pytest.mark.filterwarnings("ignore:Anomaly Detection has been enabled")
def test_anomaly_mode_sweeps_entry_by_entry_on_a_program_tape(always):
    def f(x):
        s = 0.0
        for i in range(10):
            s = s + np.log(x[i])       # NaN at a negative input
        return s

    g = tg.grad(f)
    x = np.abs(X[:10]) + 0.1
    g(x)
    g(x)
    x[3] = -1.0
    with tg.detect_anomaly():
        with pytest.raises(RuntimeError, match="^Function 'LogBackward0' returned nan values "
                                               "in its forward output"):
            g(x)


def test_a_saved_and_loaded_tape_takes_programs(tmp_path, always):
    """A loaded tape (validated when loaded) binds programs too, with the recorded tape's bits."""
    tape = tg.trace(CASES["scalar loop"](np), X[:30])
    tape.save(tmp_path / "t.npz")
    loaded = tg.load(tmp_path / "t.npz")
    assert loaded.gradient_sweeps(loaded.output_slots[0]).programs
    assert_array_equal(loaded.gradient(X[:30]), tape.gradient(X[:30]))
    assert_allclose(loaded.gradient(X[:30]), autograd.grad(scalar_loop(anp))(X[:30]),
                    rtol=1e-12, atol=1e-12)


def test_threads_share_a_program(always):
    """Threads calling one gradient share its program (read-only) and keep their own value
    buffers and adjoints: each gets the single-threaded bits."""
    import threading
    vg = tg.value_and_grad(CASES["faw"](np))
    points = [X * (1.0 + 0.1 * k) for k in range(4)]
    want = [vg(p) for p in points]
    want = [vg(p) for p in points]          # after the traced call: the sweeps' bits
    errors = []

    def work(k):
        for _ in range(30):
            value, grad = vg(points[k])
            if value != want[k][0] or not np.array_equal(grad, want[k][1]):
                errors.append(k)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
