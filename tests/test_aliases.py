"""The transforms replay copies (windows of step 1 or one element, `copy`) as aliases of their
operand's values (`core.aliases`): the same gradients as the tape swept as recorded (to
rounding: the adjoint sums are reassociated) and as HIPS autograd; the same bits at every call
of a gradient, in `Tape.gradient`, the compiled members, vjp and jacobian; the values of the
slots read by their own offsets (outputs, aux outputs) untouched; the tape's own sweeps on a
caller's buffers still write every slot."""
import autograd
import autograd.numpy as anp
import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

import tapegrad as tg
from tapegrad.core import aliases, sweep
from tapegrad.core.registry import OPCODE


def rosenbrock(np):
    return lambda x: np.sum(100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)


def chained(np):        # a window of a window, overlapping operands, a reshape, element reads
    def f(x):
        y = x[1:]
        z = y[:-1] * x[:-2]
        m = x.reshape(2, -1)
        return np.sum(z * z) + np.sum(np.tanh(m[1])) + x[0] * x[5] + np.sum(y[2:4] ** 3)
    return f


def parent_read_directly(np):   # the aliased operand read directly too (shared adjoint)
    return lambda x: np.sum(np.sin(x) * x[2]) + np.sum(x[1:4] * x[0:3]) + np.sum(x ** 2)


def over_a_constant(np):        # windows of a constant (no adjoint) and of the input
    c = np.arange(1.0, 48.0)
    return lambda x: np.sum(x[:5] * c[2:7]) + np.sum(np.exp(x[1:]) * c[1:x.shape[0]])


CASES = [rosenbrock, chained, parent_read_directly, over_a_constant]
X = np.linspace(-0.9, 1.1, 6)
# 40 values: entries of 32 or more assign their first writes (`core.sweep.FIRST_WRITE_MIN`)
SIZES = [6, 40]


def plain_gradient(tape, x):
    """The gradient by the tape's own arrays (no aliases), zeroed adjoints and `backward`."""
    V = tape.load([x])
    tape.forward(V)
    G = np.zeros((1, tape.n_adjoint))
    G[0, tape.offsets[tape.output_slots[0]]] = 1.0
    tape.backward(V, G)
    return tape.view(G[0], tape.input_slots[0]).copy()


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.__name__)
def test_copies_become_aliases_and_gradients_agree(case, n):
    f = case(np)
    X = np.linspace(-0.9, 1.1, n)
    tape = tg.trace(f, X)
    arrays, _ = tape._aliased()
    copies = np.isin(tape.E[:, 0], [OPCODE["window"], OPCODE["copy"]])
    assert len(arrays.E) < len(tape.E) and not np.isin(arrays.E[:, 0], [OPCODE["copy"]]).any()
    assert len(tape.E) - len(arrays.E) <= copies.sum()
    want = autograd.grad(case(anp))(X)
    g = tg.grad(f)
    first, second, third = g(X), g(X), g(X)
    if case is rosenbrock:      # the traced call: grad's sweeps too, on the trace's values
        assert_array_equal(first, second)   # (numpy's: its exp, sin, tanh may differ by an ulp)
    assert_array_equal(second, third)
    assert_allclose(second, want, rtol=1e-13, atol=1e-13)
    assert_allclose(second, plain_gradient(tape, X), rtol=1e-14, atol=1e-14)
    assert_array_equal(tape.gradient(X), second)
    vg = tg.value_and_grad(f)
    vg(X)
    value, grad = vg(X)
    assert value == f(X) or np.isclose(value, f(X), rtol=1e-15)
    assert_array_equal(grad, second)
    c = tg.compiled(f, X)
    assert_array_equal(c.grad(X), second)
    assert_array_equal(c.value_and_grad(X)[1], second)


@pytest.mark.parametrize("n", SIZES)
def test_first_writes_leave_shared_adjoints_to_zeroing(n):
    tape = tg.trace(chained(np), np.linspace(-0.9, 1.1, n))
    arrays, _ = tape._aliased()
    FIRST, ZERO = sweep._first_writes(arrays, tape.output_slots[0])
    zeroed = np.zeros(tape.n_adjoint, bool)
    for lo, hi in ZERO:
        zeroed[lo:hi] = True
    E = arrays.E
    for e in range(len(E)):
        for j in range(3):
            s = E[e, 1 + j]
            if FIRST[e] >> j & 1:
                assert not arrays.shared[s]
    for s in np.flatnonzero(arrays.shared & (arrays.NEED != 0)):
        lo, n = arrays.S[s]
        assert zeroed[lo:lo + n].all()          # an alias's values lie inside its operand's
    assert arrays.alias.sum() == len(tape.E) - len(E)


def test_outputs_and_aux_outputs_are_never_aliased():
    def f(x):
        return np.sum(x[1:] ** 2), (x[2:4], x[0])
    tape = tg.trace(f, X)
    _, _, outputs, _ = aliases.copies(tape.E, tape.IP, tape.S, set(tape.output_slots))
    _, _, unprotected, _ = aliases.copies(tape.E, tape.IP, tape.S)
    assert set(tape.output_slots) & set(unprotected.tolist())       # x[2:4], x[0]: copies
    assert not set(tape.output_slots) & set(outputs.tolist())
    g = tg.value_and_grad(f, has_aux=True)
    for _ in range(3):
        (value, (window, element)), grad = g(X * 1.5)
        assert_array_equal(window, (X * 1.5)[2:4])
        assert element == X[0] * 1.5
        assert_allclose(grad, 2 * np.r_[0.0, (X * 1.5)[1:]], rtol=1e-15)


def test_guarded_tapes_replay_aliases():
    def f(x):
        if x[0] > 0:
            return np.sum(x[1:] * x[:-1])
        return np.sum(x[1:] ** 3)
    g = tg.grad(f)
    for x in (X, -X, X, -X):
        want = autograd.grad(lambda v: anp.sum(v[1:] * v[:-1]) if v[0] > 0
                             else anp.sum(v[1:] ** 3))(x)
        assert_allclose(g(x), want, rtol=1e-14)


def test_float32_and_a_saved_tape(tmp_path):
    f = rosenbrock(np)
    x32 = X.astype(np.float32)
    g32 = tg.grad(f)(x32)
    assert g32.dtype == np.float32
    assert_allclose(g32, autograd.grad(rosenbrock(anp))(X), rtol=1e-5)
    tape = tg.trace(f, X)
    tape.save(tmp_path / "t.npz")
    loaded = tg.load(tmp_path / "t.npz")
    assert loaded._aliased() is not None
    assert_array_equal(loaded.gradient(X), tape.gradient(X))


def faw_graph(np, n_ops, x):
    """The "Fastest Autograd in the West" graph (bench/faw.py): element reads of the inputs and
    of each softmax's four values, sums of four nodes (Python's sum: 0 + ...), products."""
    def softmax4(four):
        v = np.stack(four)
        e = np.exp(v - np.max(v))
        s = e / np.sum(e)
        return [s[i] for i in range(4)]
    nodes = [x[i] for i in range(x.shape[0])]
    for op in range(n_ops):
        kind = op % 4
        if kind == 0:
            nodes.append(np.logaddexp(0.0, nodes[-10]))
        elif kind == 1:
            nodes.append(sum(nodes[-30:-10:5]))
        elif kind == 2:
            nodes.append(nodes[-20] * nodes[-10])
        else:
            nodes.extend(softmax4(nodes[-4:]))
    return nodes[-1]


def test_faw_graph_element_reads():
    n = 60
    x = np.random.default_rng(0).standard_normal(100)
    f = lambda v: faw_graph(np, n, v)            # noqa: E731
    tape = tg.trace(f, x)
    arrays, _ = tape._aliased()
    windows = tape.E[:, 0] == OPCODE["window"]
    assert tape.E[-1, 0] == OPCODE["window"]      # the output, an element read: kept
    assert len(tape.E) - len(arrays.E) == windows.sum() - 1
    g = tg.value_and_grad(f)
    g(x)              # traced: its values are numpy's (exp, log1p), the interpreters' may differ
    (value, grad), (value2, grad2) = g(x), g(x)
    assert_array_equal(grad, grad2)
    assert value2 == pytest.approx(f(x), rel=1e-14)
    want = autograd.grad(lambda v: faw_graph(anp, n, v))(x)
    assert np.count_nonzero(np.abs(want) > 1e-5) >= 10      # not a vanishing gradient
    assert_allclose(grad2, want, rtol=1e-12, atol=1e-18)
    assert_allclose(grad2, plain_gradient(tape, x), rtol=1e-13, atol=1e-19)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.__name__)
def test_every_transform_sweeps_the_aliases(case):
    """vjp, jacobian, jvp, hvp and hessian sweep grad's arrays too: a scalar function's vjp and
    Jacobian are its gradient to the bit, the others its derivatives."""
    f = case(np)
    x = np.linspace(-0.9, 1.1, 40)
    v = np.cos(np.arange(40.0))
    gx = tg.grad(f)(x)      # each transform's first call: on the trace's values (numpy's)
    out, pullback = tg.vjp(f, x)
    assert_array_equal(np.ravel(pullback(1.0)), gx)
    assert_array_equal(np.ravel(tg.jacobian(f, mode="rev")(x)), gx)
    _, tangent = tg.jvp(f, (x,), (v,))
    assert tangent == pytest.approx(float(gx @ v), rel=1e-13, abs=1e-13)
    want_h = autograd.hessian(case(anp))(x)
    assert_allclose(tg.hvp(f, x, v), want_h @ v, rtol=1e-12, atol=1e-12)
    assert_allclose(tg.hessian(f)(x), want_h, rtol=1e-12, atol=1e-12)


def test_the_tapes_own_sweeps_give_every_slot():
    """Tape.forward / tangent / backward on the caller's buffers sweep the entries as recorded:
    every slot's value and tangent is there to read, the copies' too."""
    tape = tg.trace(chained(np), X)
    V = tape.load([X])
    tape.forward(V)
    T = np.zeros((1, V.size))
    T[0, tape.offsets[tape.input_slots[0]]:][:X.size] = 1.0
    tape.tangent(V, T)
    for e in np.flatnonzero(tape.E[:, 0] == OPCODE["window"]):
        a, o = tape.E[e, 1], tape.E[e, 4]
        start, step = tape.IP[tape.E[e, 5]:tape.E[e, 5] + 2]
        n = tape.sizes[o]
        for buffer in (V, T[0]):
            window = buffer[tape.offsets[a] + start + step * np.arange(n)]
            assert_array_equal(buffer[tape.offsets[o]:tape.offsets[o] + n], window)


def test_an_alias_outside_its_operand_is_refused():
    """`resolve` checks every alias against its operand's values whatever built the arrays (the
    validator's window rule makes it hold for every tape that reaches it)."""
    S = np.array([[0, 3], [3, 2], [5, 1]], np.int64)
    NEED = np.array([1, 0, 0], np.int64)
    ok = S.copy()
    aliases.resolve(ok, NEED.copy(), np.array([0, 1]), np.array([1, 2]), np.array([1, 1]))
    assert ok[1].tolist() == [1, 2] and ok[2].tolist() == [2, 1]        # a chain: x[1:][1]
    with pytest.raises(AssertionError, match="outside"):
        aliases.resolve(S.copy(), NEED.copy(), np.array([0]), np.array([1]), np.array([2]))
    with pytest.raises(AssertionError, match="each other"):
        aliases.resolve(S.copy(), NEED.copy(), np.array([2, 1]), np.array([1, 2]),
                        np.array([0, 0]))
