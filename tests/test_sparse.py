"""Sparse Jacobians and Hessians: the dependence rules of every primitive, detection on tapes
(exact patterns on simple programs, and on random programs a pattern that holds every nonzero of
the dense derivative at several points), colorings and their recovery, the transforms
(`jacobian(f, sparsity=...)`, `hessian(f, sparsity=...)`) against the dense ones, caching,
branches and patterns given by the caller."""
import dataclasses
import subprocess
import sys
import warnings

import numpy as np
import pytest
import scipy.sparse

import tapegrad as tg
from tapegrad.core.primitive import ALL, CURVATURES, SAME
from tapegrad.core import registry
from tapegrad.core.registry import PRIMS
from tapegrad.transforms import coloring, sparsity
from tapegrad.inspect.display import operands, slot_value
from tapegrad.transforms.sparsity import SparsityWarning, hessian_pattern, jacobian_pattern


def _jac_pattern(f, x):
    tape = tg.trace(f, x)
    return jacobian_pattern(tape, tape.input_slots, tape.output_slots).toarray()


def _hess_pattern(f, x):
    tape = tg.trace(f, x)
    return hessian_pattern(tape, tape.input_slots, tape.output_slots[0]).toarray()


def _dense_nonzeros(f, points, hessian=False):
    mask = 0
    for x in points:
        D = (tg.hessian(f) if hessian else tg.jacobian(f))(x)
        mask = mask | (np.abs(np.reshape(D, (-1, x.size))) > 0)
    return mask


# ---- every primitive declares a rule --------------------------------------------------------

@pytest.mark.parametrize("p", PRIMS, ids=lambda p: p.name)
def test_every_primitive_declares_a_dependence_rule(p):
    coupling = p.coupling
    assert coupling is not None, f"{p.name} declares no curvature"
    assert coupling in ("diagonal", "nonlinear") or all(
        isinstance(pair, tuple) and len(pair) == 2 for pair in coupling)
    if p.elementwise:
        assert p.reads_elements is None and p.curvature is None, "derived from the row"
        return
    assert p.reads_elements is not None, f"{p.name} declares no reads_elements"
    assert p.curvature is None or p.curvature in CURVATURES
    if not p.linear:
        assert p.curvature is not None, f"nonlinear {p.name} must declare its curvature"


def test_elementwise_rules_come_from_the_rows():
    by = {p.name: p for p in PRIMS}
    assert by["sin"].element_reads(None, 3, [3], (None,)) == (SAME,)
    assert by["floor"].element_reads(None, 3, [3], (None,)) == (None,)
    assert by["gt"].element_reads(None, 3, [3, 3], (None, None)) == (None, None)
    assert by["mul"].coupling == ((0, 1),) and by["add"].coupling == ()
    assert by["div"].coupling == ((0, 1), (1, 1)) and by["relu"].coupling == ()
    assert by["square"].coupling == ((0, 0),)


# ---- exact patterns ----------------------------------------------------------------------------

N = 6
X = np.linspace(-1.0, 1.5, N)


def _band(n, lo, hi, m=None):
    m = n if m is None else m
    i, j = np.indices((m, n))
    return (j - i >= lo) & (j - i <= hi)


def test_elementwise_chain_is_diagonal():
    assert (_jac_pattern(lambda x: np.exp(np.sin(x) * 2.0) / (1 + x * x), X) == np.eye(N)).all()


def test_broadcast_scalar_operand_reads_everything_it_is_broadcast_from():
    P = _jac_pattern(lambda x: x * np.sum(x[:2]), X)
    expected = np.eye(N, dtype=bool)
    expected[:, :2] = True
    assert (P == expected).all()


def test_slices_and_diff_are_bands():
    assert (_jac_pattern(lambda x: np.diff(x), X) == _band(N, 0, 1, N - 1)).all()
    assert (_jac_pattern(lambda x: x[1:] * x[:-1], X) == _band(N, 0, 1, N - 1)).all()
    assert (_jac_pattern(lambda x: x[::2] + 0.0, X) == np.eye(N)[::2]).all()


def test_integer_indexing_and_flip_are_permutations():
    idx = np.array([3, 0, 0, 5])
    assert (_jac_pattern(lambda x: x[idx] * 1.0, X) == np.eye(N)[idx]).all()
    assert (_jac_pattern(lambda x: np.flip(x) * 1.0, X) == np.eye(N)[::-1]).all()


def test_sum_over_an_axis_and_total():
    P = _jac_pattern(lambda x: np.sum(x.reshape(2, 3), axis=1), X)
    assert (P == np.kron(np.eye(2), np.ones((1, 3)))).all()
    assert _jac_pattern(lambda x: np.sum(x), X).all()


def test_cumsum_is_a_lower_triangle():
    assert (_jac_pattern(lambda x: np.cumsum(x), X) == np.tril(np.ones((N, N)))).all()
    P = _jac_pattern(lambda x: np.cumsum(x.reshape(2, 3), axis=1).ravel(), X)
    assert (P == np.kron(np.eye(2), np.tril(np.ones((3, 3))))).all()


def test_matmul_with_a_constant_sparse_matrix_keeps_its_zeros():
    A = np.diag(np.arange(1.0, N + 1)) + np.diag(np.ones(N - 1), 2)[:N, :N]
    A[2, 2] = 0.0
    assert (_jac_pattern(lambda x: A @ x, X) == (A != 0)).all()
    assert (_jac_pattern(lambda x: x @ A, X) == (A.T != 0)).all()


def test_matmul_of_variable_operands_reads_rows_and_columns():
    P = _jac_pattern(lambda x: (x.reshape(2, 3) @ x.reshape(3, 2)).ravel(), X)
    expected = np.zeros((4, N), bool)
    for i in range(2):
        for j in range(2):
            expected[2 * i + j, 3 * i:3 * i + 3] = True       # row i of the first factor
            expected[2 * i + j, j::2] = True                  # column j of the second
    assert (P == expected).all()


def test_piecewise_primitives_keep_their_reads_where_the_derivative_is_zero_here():
    x = np.array([-1.0, 2.0, -3.0, 4.0])           # relu'(x) = 0 at half the points
    assert (_jac_pattern(lambda x: np.maximum(x, 0.0), x) == np.eye(4)).all()
    assert (_jac_pattern(lambda x: tg.relu(x), x) == np.eye(4)).all()
    eye = np.eye(4, dtype=bool)
    rolled = eye | eye[np.roll(np.arange(4), 1)]           # y[i] reads x[i] and x[i - 1]
    assert (_jac_pattern(lambda x: np.where(x > 0, x * 2.0, np.roll(x, 1)), x) == rolled).all()
    assert (_jac_pattern(lambda x: np.maximum(x, np.roll(x, 1)), np.zeros(4)) == rolled).all()


def test_constants_and_comparisons_read_nothing():
    assert not _jac_pattern(lambda x: np.floor(x) + np.ones(N), X).any()


def test_hessian_patterns():
    rosen = lambda x: np.sum(100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)
    assert (_hess_pattern(rosen, X) == _band(N, -1, 1)).all()
    assert (_hess_pattern(lambda x: np.sum(x * x), X) == np.eye(N)).all()
    assert (_hess_pattern(lambda x: np.sum(x[1:] * x[:-1]), X) ==
            (_band(N, -1, 1) & ~np.eye(N, dtype=bool))).all()
    assert not _hess_pattern(lambda x: np.sum(np.maximum(2 * x, 1.0)) + np.sum(x), X).any()
    arrow = _hess_pattern(lambda x: np.sum(x) ** 2 + np.sum(np.sin(x)), X)
    assert arrow.all()
    # an element the result does not read couples nothing: sin(x)[1:] is not live
    expected = np.zeros((N, N), bool)
    expected[0, 0] = expected[1, 2] = expected[2, 1] = True
    assert (_hess_pattern(lambda x: np.sin(x)[0] + x[1] * x[2], X) == expected).all()


# ---- random programs: the pattern holds every nonzero, at several points ----------------------

def _program(rng, n):
    """A random function of x (n,) built from a pool of primitives, and its Hessian-ready
    scalar form."""
    A = np.where(rng.random((n, n)) < 0.25, rng.normal(size=(n, n)), 0.0)
    idx = rng.integers(0, n, n)
    unary = [np.sin, np.tanh, lambda v: np.exp(-v * v), lambda v: np.maximum(v, 0.1),
             lambda v: np.roll(v, 1), lambda v: np.flip(v), lambda v: np.cumsum(v) * 0.1,
             lambda v: v[idx], lambda v: A @ v, lambda v: np.sort(v), lambda v: v * np.max(v),
             lambda v: np.concatenate([v[:1], np.diff(v)]), lambda v: np.cumprod(v * 0.5 + 1),
             lambda v: v * np.prod(v[:2] + 2), lambda v: np.abs(v) + v[::-1] ** 3]
    binary = [lambda a, b: a * b, lambda a, b: a / (1 + b * b), lambda a, b: a - 2 * b,
              lambda a, b: np.where(a > b, a, b * b), lambda a, b: np.minimum(a, b),
              lambda a, b: np.arctan2(a, b + 3.0)]
    steps = []
    for _ in range(6):
        if rng.random() < 0.6:
            steps.append((0, rng.integers(len(unary)), rng.integers(0, len(steps) + 1)))
        else:
            steps.append((1, rng.integers(len(binary)), rng.integers(0, len(steps) + 1),
                          rng.integers(0, len(steps) + 1)))

    def f(x):
        values = [x]
        for step in steps:
            if step[0] == 0:
                values.append(unary[step[1]](values[step[2]]))
            else:
                values.append(binary[step[1]](values[step[2]], values[step[3]]))
        return np.concatenate([values[-1], values[-2]])

    def scalar(x):
        out = f(x)
        return np.sum(out * out[::-1]) + np.sum(np.sin(out))

    return f, scalar


@pytest.mark.parametrize("seed", range(12))
def test_random_programs_patterns_hold_every_nonzero(seed):
    rng = np.random.default_rng(seed)
    n = 7
    f, scalar = _program(rng, n)
    points = [rng.normal(size=n) for _ in range(3)]
    J = _jac_pattern(f, points[0])
    assert not (_dense_nonzeros(f, points) & ~J).any()
    H = _hess_pattern(scalar, points[0])
    assert not (_dense_nonzeros(scalar, points, hessian=True) & ~H).any()
    assert (H == H.T).all()
    x = points[1]
    assert np.allclose(tg.jacobian(f, sparsity="auto")(x).toarray(), tg.jacobian(f)(x),
                       rtol=1e-12, atol=1e-12)
    assert np.allclose(tg.hessian(scalar, sparsity="auto")(x).toarray(), tg.hessian(scalar)(x),
                       rtol=1e-10, atol=1e-10)


@pytest.fixture
def with_rule(monkeypatch):
    """with_rule(tape, name, **changes): the tape, with primitive `name` given another
    definition (a test's wrong or missing rule) in the registry for the test's duration."""
    def redefine(tape, name, **changes):
        prims = list(registry.PRIMS)
        op = next(p.opcode for p in prims if p.name == name)
        prims[op] = dataclasses.replace(prims[op], **changes)
        monkeypatch.setattr(registry, "PRIMS", tuple(prims))
        monkeypatch.setattr(sparsity, "_TABLES", {})      # the per-opcode tables, rebuilt
        tape.prims = [prims[p.opcode] for p in tape.prims]
        return tape
    return redefine


def test_a_wrong_rule_is_caught_by_the_subset_check(with_rule):
    f = lambda x: x[1:] * 2.0
    x = np.random.default_rng(0).normal(size=N)
    wrong = lambda ip, n_out, sizes, consts: ((np.arange(n_out), np.arange(n_out)),)
    tape = with_rule(tg.trace(f, x), "window", reads_elements=wrong)
    P = jacobian_pattern(tape, tape.input_slots, tape.output_slots).toarray()
    assert (_dense_nonzeros(f, [x]) & ~P).any()


@pytest.mark.parametrize("rule", [
    lambda ip, n_out, sizes, consts: ((None, np.arange(n_out) + 100),),
    lambda ip, n_out, sizes, consts: ((np.arange(n_out) + 100, np.arange(n_out)),),
    lambda ip, n_out, sizes, consts: ((np.arange(n_out), np.arange(n_out + 1)),),
    lambda ip, n_out, sizes, consts: ((None, range(-1, n_out - 1)),),
    lambda ip, n_out, sizes, consts: ((None, range(n_out + 1)),),
    lambda ip, n_out, sizes, consts: ((range(1, n_out + 1), range(n_out)),),
    lambda ip, n_out, sizes, consts: ((None, range(n_out - 1, -2, -2)),)],
    ids=["gather", "rows", "shapes", "range-low", "range-shape", "range-rows", "range-step"])
def test_a_rule_reading_out_of_range_is_refused_before_compiled_code(rule, with_rule):
    tape = with_rule(tg.trace(lambda x: x[1:] * x[:-1], X), "window", reads_elements=rule)
    with pytest.raises(RuntimeError, match="a dependence rule"):
        jacobian_pattern(tape, tape.input_slots, tape.output_slots)


def test_a_primitive_without_a_rule_is_dense_with_a_warning(with_rule):
    f = lambda x: x[1:] * 2.0
    tape = with_rule(tg.trace(f, X), "window", reads_elements=None)
    with pytest.warns(SparsityWarning, match="window declares no dependence rule"):
        P = jacobian_pattern(tape, tape.input_slots, tape.output_slots).toarray()
    assert P.all()
    tape = with_rule(tg.trace(lambda x: np.sum(np.sort(x) ** 2), X), "sort",
                      reads_elements=None, curvature=None)
    with pytest.warns(SparsityWarning):
        assert hessian_pattern(tape, tape.input_slots, tape.output_slots[0]).toarray().all()


# ---- the compiled pass against a dense reference ---------------------------------------------

def _reference(tape, in_slots, out_slots=None, hess_slot=None):
    """The patterns by dense boolean propagation of the same rules: each read a dense (output
    elements, operand elements) matrix, a slot's pattern their boolean product with the
    operands' (the semantics the compiled pass must reproduce exactly)."""
    sizes = tape.sizes
    n = sum(sizes[s] for s in in_slots)
    P, col = [None] * len(sizes), 0
    for s in in_slots:
        block = np.zeros((sizes[s], n), bool)
        block[np.arange(sizes[s]), col + np.arange(sizes[s])] = True
        P[s] = block if P[s] is None else P[s] | block
        col += sizes[s]
    varies = np.zeros(len(sizes), bool)
    varies[list(tape.input_slots) + list(tape.implicit_slots)] = True
    maps = {}
    for e, prim in enumerate(tape.prims):
        ops, o = operands(tape, e), int(tape.E[e, 4])
        varies[o] = varies[ops].any() if ops else False
        if all(P[s] is None for s in ops):
            continue
        ip = tape.IP[tape.E[e, 5]:tape.E[e, 5] + tape.E[e, 6]]
        consts = tuple(None if varies[s] else slot_value(tape, tape.V0, s).ravel() for s in ops)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rule = prim.element_reads(ip, sizes[o], [sizes[s] for s in ops], consts)
        rule = (ALL,) * len(ops) if rule is None else rule
        maps[e] = [(s, None if r is None or P[s] is None else _dense_read(r, sizes[o], sizes[s]))
                   for s, r in zip(ops, rule)]
        for s, M in maps[e]:
            if M is not None:
                R = (M.astype(float) @ P[s].astype(float)) > 0
                P[o] = R if P[o] is None else P[o] | R
    if hess_slot is None:
        return np.concatenate([np.zeros((sizes[s], n), bool) if P[s] is None else P[s]
                               for s in out_slots])
    H = np.zeros((n, n), bool)
    live = [None] * len(sizes)
    live[hess_slot] = np.ones(sizes[hess_slot], bool)
    for e in sorted(maps, reverse=True):
        o = int(tape.E[e, 4])
        lo = live[o]
        if lo is None or not lo.any() or P[o] is None:
            continue
        coupling = tape.prims[e].coupling
        coupling = "nonlinear" if coupling is None else coupling
        rows = [None if M is None else (M.astype(float) @ P[s].astype(float)) > 0
                for s, M in maps[e]]
        if coupling == "nonlinear":
            pairs = [(P[o], P[o], lo)]
        elif coupling == "diagonal":
            s, M0 = maps[e][0]
            pairs = [] if M0 is None else [(P[s], P[s], (M0.T.astype(float) @ lo) > 0)]
        else:
            pairs = [(rows[i], rows[j], lo) for i, j in coupling
                     if rows[i] is not None and rows[j] is not None]
        for A, B, mask in pairs:
            for r in np.flatnonzero(mask):
                H |= np.outer(A[r], B[r]) | np.outer(B[r], A[r])
        for s, M in maps[e]:
            if M is not None:
                ls = (M.T.astype(float) @ lo) > 0
                live[s] = ls if live[s] is None else live[s] | ls
    return H


def _dense_read(rule, n_out, size):
    M = np.zeros((n_out, size), bool)
    if isinstance(rule, str) and rule == SAME:
        M[np.arange(n_out), np.arange(n_out) if size == n_out else 0] = True
    elif isinstance(rule, str) and rule == ALL:
        M[:] = True
    else:
        rows, cols = rule
        rows = np.arange(n_out) if rows is None else np.asarray(rows, int)
        M[rows, np.asarray(cols, int)] = True
    return M


def _more_programs(rng, n):
    """Random programs over a wider pool than `_program`: slices with steps, stacks, pads,
    sums over axes, where, products with constant sparse matrices, outer products, scans."""
    B = np.where(rng.random((n, n)) < 0.3, 1.0, 0.0)
    pool = [lambda v: v[::-2].sum() * v, lambda v: np.pad(v[1:], (1, 0)) * v,
            lambda v: np.stack([v, v ** 2]).sum(axis=0), lambda v: B @ np.cos(v),
            lambda v: np.outer(v[:2], v).ravel()[:v.size], lambda v: np.cumsum(v[::-1]) * v,
            lambda v: np.where(v > 0.3, np.sin(v), v[::-1] * v), lambda v: np.exp(v) / np.sum(v * v),
            lambda v: np.concatenate([v[2:], v[:2] * 3.0]), lambda v: v * 0.0 + v[0],
            lambda v: np.maximum(v, v[::-1]) ** 2, lambda v: np.sort(v) * v[::-1]]
    picks = rng.integers(0, len(pool), 4)

    def f(x):
        v = x
        for k in picks:
            v = pool[k](v) + 0.1 * v
        return v

    return f, lambda x: np.sum(np.tanh(f(x)) * f(x)[::-1])


@pytest.mark.parametrize("seed", range(16))
def test_compiled_pass_equals_the_dense_reference_on_random_programs(seed):
    rng = np.random.default_rng(100 + seed)
    n = int(rng.integers(1, 9))
    f, scalar = (_program if seed % 2 else _more_programs)(rng, n)
    x = rng.normal(size=n)
    tape = tg.trace(f, x)
    J = jacobian_pattern(tape, tape.input_slots, tape.output_slots).toarray()
    assert np.array_equal(J, _reference(tape, tape.input_slots, tape.output_slots))
    tape = tg.trace(scalar, x)
    H = hessian_pattern(tape, tape.input_slots, tape.output_slots[0]).toarray()
    assert np.array_equal(H, _reference(tape, tape.input_slots, hess_slot=tape.output_slots[0]))


def _stencil_programs(rng, n, dtype):
    """Random programs of what stencils describe (windows of several steps, shifts padded by
    concatenation, elementwise chains) mixed with what turns them into rows (broadcast scalars,
    reductions, gathers, products with a sparse constant, flips), every value of length n."""
    B = np.where(rng.random((n, n)) < 0.3, 1.0, 0.0).astype(dtype)
    idx = rng.integers(0, max(n, 1), n)
    k = int(rng.integers(0, n + 1))
    pad = lambda v, before, after: np.concatenate([np.zeros(before, dtype), v,
                                                   np.zeros(after, dtype)])
    unary = [lambda v: pad(v[:-1], 1, 0) * 2.0 + v if v.size else v,
             lambda v: pad(v, 2, 2)[1:1 + v.size] - pad(v, 2, 2)[3:3 + v.size],
             lambda v: pad(v[::2], 0, v.size - v[::2].size) * v,
             lambda v: pad(v[1::3] ** 2, v.size - v[1::3].size, 0),
             lambda v: np.concatenate([v[:k] ** 2, np.sin(v[k:])]),
             lambda v: np.tanh(v) + np.exp(v * 0.1) * v, lambda v: v * np.sum(v[:1]),
             lambda v: v + np.sum(v ** 2), lambda v: v[idx] * v, lambda v: B @ np.cos(v),
             lambda v: np.flip(v) * v, lambda v: pad(v[2:], 1, 1)[:v.size] ** 3]
    binary = [lambda a, b: a * b, lambda a, b: a - 2.0 * b, lambda a, b: a / (1.0 + b * b)]
    steps = [(int(rng.integers(len(unary))), int(rng.integers(len(binary))),
              int(rng.integers(0, s + 1))) for s in range(4)]

    def f(x):
        values = [x]
        for u, b, j in steps:
            values.append(binary[b](unary[u](values[-1]), values[j]))
        return values[-1]

    return f, lambda x: np.sum(f(x) ** 2) + np.sum(np.sin(f(x)[1:]) * f(x)[:-1])


@pytest.mark.parametrize("seed", range(24))
def test_stencils_equal_rows_and_the_reference_on_random_programs(seed):
    rng = np.random.default_rng(300 + seed)
    n = [0, 1, 2, 5, 9, 13][seed % 6]
    dtype = np.float32 if seed % 4 == 3 else np.float64
    f, scalar = _stencil_programs(rng, n, dtype)
    x = rng.normal(size=n).astype(dtype)
    tape = tg.trace(f, x)
    args = tape.input_slots, tape.output_slots
    J = jacobian_pattern(tape, *args)
    assert J.has_sorted_indices
    assert np.array_equal(J.toarray(), jacobian_pattern(tape, *args, stencils=False).toarray())
    assert np.array_equal(J.toarray(), _reference(tape, *args))
    tape = tg.trace(scalar, x)
    args = tape.input_slots, tape.output_slots[0]
    H = hessian_pattern(tape, *args)
    assert H.has_sorted_indices
    assert np.array_equal(H.toarray(), hessian_pattern(tape, *args, stencils=False).toarray())
    assert np.array_equal(H.toarray(), _reference(tape, tape.input_slots, hess_slot=args[1]))


def test_windows_and_padding_take_the_stencil_path():
    residual = lambda u: np.concatenate([np.zeros(1), u[:-1]]) - 2.0 * u + \
        np.concatenate([u[1:], np.zeros(1)]) - 0.1 * u ** 3
    rosenbrock = lambda x: np.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)
    for f, hessian in ((residual, False), (rosenbrock, True)):
        tape = tg.trace(f, np.linspace(0.1, 1.0, 30))
        pattern = hessian_pattern(tape, tape.input_slots, tape.output_slots[0]) if hessian \
            else jacobian_pattern(tape, tape.input_slots, tape.output_slots)
        assert sparsity._workspace.cur[3] > 0       # stencil terms were written
        assert np.array_equal(pattern.toarray(), _band(30, -1, 1))


STENCIL_EDGES = [
    ("stride two", lambda x: np.sum(x[::2][:4] * x[1::2][:4]) + np.sum(x[::3] ** 2)),
    ("broadcast element", lambda x: np.sum(np.sin(x) * x[0]) + np.sum(x[1:] * x[:1])),
    ("gather mixed in", lambda x: np.sum(x[[2, 0, 1, 3, 8, 7, 6, 5, 4]] * np.tanh(x[1:-1]).sum())),
    ("one operand twice", lambda x: np.sum(np.concatenate([x, x[::-1], x[2:]]) ** 3)),
    ("more terms than a stencil holds",
     lambda x: np.sum(sum(np.concatenate([0 * x, x, 0 * x])[k:k + 9] for k in range(19)) ** 2)),
    ("live elements not a range", lambda x: np.sum(np.sin(x)[:2]) + np.sum(np.cos(x)[5:] ** 2)),
    ("a sum of pieces with a gap",
     lambda x: np.sum(np.concatenate([x[:2], x[5:]])) * np.sum(np.concatenate([x[6:], x[:1]]))),
    ("flip then shift", lambda x: np.sum(np.flip(x)[1:] * x[:-1]) + np.sum(np.cumsum(x) ** 2)),
]


@pytest.mark.parametrize("name,f", STENCIL_EDGES, ids=[e[0] for e in STENCIL_EDGES])
def test_stencil_fallbacks_equal_rows_and_the_reference(name, f):
    x = np.linspace(0.2, 1.4, 9)
    tape = tg.trace(f, x)
    args = tape.input_slots, tape.output_slots[0]
    H = hessian_pattern(tape, *args).toarray()
    assert np.array_equal(H, hessian_pattern(tape, *args, stencils=False).toarray())
    assert np.array_equal(H, _reference(tape, tape.input_slots, hess_slot=args[1]))
    g = lambda x: f(x) * np.concatenate([x[1:], x[:1]])
    tape = tg.trace(g, x)
    J = jacobian_pattern(tape, tape.input_slots, tape.output_slots).toarray()
    assert np.array_equal(J, _reference(tape, tape.input_slots, tape.output_slots))


def test_the_csr_built_without_its_constructor_is_scipys(monkeypatch):
    tape = tg.trace(lambda x: np.cumsum(x[1:]) * x[:-1] + np.sin(x[::-1][1:]), X)
    args = tape.input_slots, tape.output_slots
    M = jacobian_pattern(tape, *args)
    reference = scipy.sparse.csr_matrix((np.ones(M.nnz, bool), M.indices, M.indptr),
                                        shape=M.shape)
    reference.check_format(full_check=True)
    M.check_format(full_check=True)
    assert type(M) is scipy.sparse.csr_matrix and M.shape == reference.shape
    assert M.indices.dtype == reference.indices.dtype and M.has_sorted_indices
    assert (M != reference).nnz == 0 and np.array_equal((M @ X), reference @ X)
    assert vars(M).keys() >= vars(reference).keys()
    monkeypatch.setattr(sparsity, "_CSR_STATE", [None])     # scipy's constructor instead
    assert (jacobian_pattern(tape, *args) != M).nnz == 0


HOSTILE = [
    ("empty input", lambda x: np.sin(x) * 2.0, np.zeros(0)),
    ("scalar output", lambda x: np.sum(x[1:] * x[:-1]), np.arange(1.0, 6.0)),
    ("scalar input", lambda x: x * np.ones(4) + x ** 2, np.array(0.5)),
    ("broadcast", lambda x: x * np.sum(x[:2]) + np.max(x), np.arange(1.0, 6.0)),
    ("constants that cancel", lambda x: np.diag([1.0, 0.0, 2.0]) @ x + x * 0.0,
     np.arange(1.0, 4.0)),
    ("constant output part", lambda x: np.concatenate([np.ones(2), x[::2], np.floor(x)]),
     np.arange(1.0, 6.0)),
    ("gather twice", lambda x: x[[0, 0, 2]] * x[[2, 0, 0]], np.arange(1.0, 4.0)),
]


@pytest.mark.parametrize("name,f,x", HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_programs_equal_the_reference(name, f, x):
    tape = tg.trace(f, x)
    J = jacobian_pattern(tape, tape.input_slots, tape.output_slots).toarray()
    assert np.array_equal(J, _reference(tape, tape.input_slots, tape.output_slots))
    assert not (_dense_nonzeros(f, [x + 0.1, x - 0.3]) & ~J).any() if x.size else True
    g = lambda x: np.sum(f(x) ** 2)
    tape = tg.trace(g, x)
    H = hessian_pattern(tape, tape.input_slots, tape.output_slots[0]).toarray()
    assert np.array_equal(H, _reference(tape, tape.input_slots, hess_slot=tape.output_slots[0]))


def test_an_argument_passed_twice_reads_both_columns():
    tape = tg.trace(lambda x: x[1:] * x[:-1], X)
    s = tape.input_slots[0]
    J = jacobian_pattern(tape, [s, s], tape.output_slots).toarray()
    assert J.shape == (N - 1, 2 * N)
    assert np.array_equal(J, np.hstack([_band(N, 0, 1, N - 1)] * 2))
    assert np.array_equal(J, _reference(tape, [s, s], tape.output_slots))
    tape = tg.trace(lambda x: np.sum(x[1:] * x[:-1]), X)
    s = tape.input_slots[0]
    H = hessian_pattern(tape, [s, s], tape.output_slots[0]).toarray()
    assert np.array_equal(H, _reference(tape, [s, s], hess_slot=tape.output_slots[0]))


def test_the_workspace_is_reused_across_sizes_and_threads():
    import threading
    cases = [(lambda x: np.cumsum(x[::-1]) * x[1:].sum(), n) for n in (150, 5, 400, 40)]
    tapes = [tg.trace(f, np.linspace(0.1, 1.0, n)) for f, n in cases]
    expected = [_reference(t, t.input_slots, t.output_slots) for t in tapes]
    results = {}

    def detect(k):
        results[k] = [jacobian_pattern(t, t.input_slots, t.output_slots).toarray()
                      for t in tapes * 2]
    threads = [threading.Thread(target=detect, args=(k,)) for k in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    detect("main")
    for got in results.values():
        assert all(np.array_equal(g, e) for g, e in zip(got, expected * 2))


def test_long_and_short_rows_come_sorted():
    perm = np.random.default_rng(8).permutation(80)
    for f in (lambda x: np.cumsum(x[perm]) * x[::-1], lambda x: np.sum(x[perm] * x) ** 2):
        tape = tg.trace(f, np.linspace(0.1, 1.0, 80))
        for M in (jacobian_pattern(tape, tape.input_slots, tape.output_slots),
                  hessian_pattern(tape, tape.input_slots, tape.output_slots[0])
                  if tape.sizes[tape.output_slots[0]] == 1 else None):
            if M is None:
                continue
            rows = np.split(M.indices, M.indptr[1:-1])
            assert max(map(len, rows)) > 32 and all((np.diff(r) > 0).all() for r in rows)
            assert M.has_sorted_indices


def test_a_coupling_naming_an_operand_the_rule_left_out_is_conservative(with_rule):
    # mul redefined as a kernel whose rule reads only its first operand (x[1:]) while its
    # curvature couples operands 0 and 1: every pair an output element reads is coupled
    tape = with_rule(tg.trace(lambda x: np.sum(x[1:] * x[:-1]), X), "mul", kind="kernel",
                      reads_elements=lambda ip, n_out, sizes, consts: (SAME,),
                      curvature="bilinear")
    H = hessian_pattern(tape, tape.input_slots, tape.output_slots[0]).toarray()
    assert np.array_equal(H, np.diag(np.arange(N) > 0))


# ---- colorings ------------------------------------------------------------------------------

def _random_symmetric(rng, n, density):
    M = rng.random((n, n)) < density
    M = M | M.T | np.eye(n, dtype=bool)
    return scipy.sparse.csr_matrix(M)


@pytest.mark.parametrize("seed", range(6))
def test_star_coloring_recovers_every_entry(seed):
    rng = np.random.default_rng(seed)
    P = _random_symmetric(rng, 40, 0.08)
    H = np.where(P.toarray(), rng.normal(size=P.shape), 0.0)
    H = H + H.T
    graph = scipy.sparse.csr_matrix(P.toarray() & ~np.eye(40, dtype=bool))
    colors = coloring.star_coloring(graph)
    assert colors.max() < 40
    assert not (graph.toarray() & (colors[:, None] == colors[None, :])).any(), "distance-1"
    B = H @ coloring.seeds(colors).T                     # (n, colors)
    color, row = coloring.star_recovery(P, colors)
    assert np.array_equal(B[row, color], H[P.nonzero()])


def test_colorings_of_bands_and_arrows():
    tri = scipy.sparse.csr_matrix(_band(1000, -1, 1))
    side, colors = coloring.jacobian_coloring(tri)
    assert colors.max() + 1 == 3
    graph = scipy.sparse.csr_matrix(_band(1000, -1, 1) & ~np.eye(1000, dtype=bool))
    assert coloring.star_coloring(graph).max() + 1 <= 3
    arrow = np.zeros((50, 50), bool)
    arrow[0, 1:] = arrow[1:, 0] = True
    assert coloring.star_coloring(scipy.sparse.csr_matrix(arrow)).max() + 1 == 2


def test_jacobian_coloring_picks_the_side_with_fewer_colors():
    dense_row = np.eye(30, dtype=bool)
    dense_row[0] = True                                  # a row reading every column
    side, colors = coloring.jacobian_coloring(scipy.sparse.csr_matrix(dense_row))
    assert side == "rev" and colors.max() + 1 == 2
    side, _ = coloring.jacobian_coloring(scipy.sparse.csr_matrix(dense_row), "fwd")
    assert side == "fwd"


def test_detection_colors_the_tridiagonal_residual_with_three():
    residual = lambda u: np.concatenate([u[:1], u[2:] - 2 * u[1:-1] + u[:-2] - u[1:-1] ** 3,
                                         u[-1:]])
    u = np.random.default_rng(1).normal(size=200)
    jac = tg.jacobian(residual, sparsity="auto")
    J = jac(u)
    tape = jac.traced.cache and next(iter(jac.traced.cache.values()))[0]
    (plan,) = [v for k, v in tape.derived.items() if k[0][0] == "sparse jacobian"]
    assert plan.n_colors == 3
    assert np.allclose(J.toarray(), tg.jacobian(residual)(u), rtol=0, atol=1e-12)


# ---- the transforms ---------------------------------------------------------------------------

def _pde(u):
    """A finite-difference residual of -u'' + u^3 = 1 on a grid of 12 x 12 (2-D Laplacian)."""
    h = 1.0 / 13
    U = u.reshape(12, 12)
    P = np.pad(U, 1)
    lap = (P[:-2, 1:-1] + P[2:, 1:-1] + P[1:-1, :-2] + P[1:-1, 2:] - 4 * U) / h ** 2
    return (-lap + U ** 3 - 1.0).ravel()


CASES = [
    ("elementwise", lambda x: np.tanh(x) * np.exp(x) - x ** 2, 30),
    ("broadcast", lambda x: x * np.sum(x[:3]) + np.mean(x), 30),
    ("slices", lambda x: x[2:] * x[:-2] - x[1:-1], 30),
    ("diff", lambda x: np.diff(x) ** 2, 30),
    ("sums", lambda x: np.sum(x.reshape(5, 6) ** 2, axis=0), 30),
    ("matmul", lambda x: np.diag(np.arange(30.0)) @ np.sin(x) + np.eye(30, k=3) @ x, 30),
    ("cumsum", lambda x: np.cumsum(x) * x, 30),
    ("where", lambda x: np.where(x > 0, x, 0.1 * x) + np.maximum(x, x[::-1]), 30),
    ("pde", _pde, 144),
]


@pytest.mark.parametrize("name,f,n", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("mode", [None, "fwd", "rev"])
def test_sparse_jacobian_equals_the_dense(name, f, n, mode):
    x = np.random.default_rng(3).normal(size=n)
    J = tg.jacobian(f, sparsity="auto", mode=mode)(x)
    assert isinstance(J, scipy.sparse.csr_matrix) and J.has_sorted_indices
    J.check_format(full_check=True)
    assert np.allclose(J.toarray(), tg.jacobian(f)(x), rtol=1e-12, atol=1e-10)


@pytest.mark.parametrize("name,f,n", CASES, ids=[c[0] for c in CASES])
def test_sparse_hessian_equals_the_dense(name, f, n):
    g = lambda x: np.sum(f(x) ** 2) + np.sum(np.cos(x))
    x = np.random.default_rng(4).normal(size=n)
    hessian = tg.hessian(g, sparsity="auto")
    H = hessian(x)
    assert isinstance(H, scipy.sparse.csr_matrix) and H.has_sorted_indices
    H.check_format(full_check=True)
    assert np.allclose(H.toarray(), tg.hessian(g)(x), rtol=1e-10, atol=1e-8)
    H.indices[:] = 0        # the caller's to change: the next call's matrix is its own
    assert np.allclose(hessian(x).toarray(), tg.hessian(g)(x), rtol=1e-10, atol=1e-8)


def test_later_calls_replay_the_cached_plan(monkeypatch):
    rosen = lambda x: np.sum(100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)
    hess = tg.hessian(rosen, sparsity="auto")
    x = np.random.default_rng(5).normal(size=50)
    hess(x)
    monkeypatch.setattr(sparsity, "hessian_pattern", None)       # detection would fail now
    monkeypatch.setattr(coloring, "star_coloring", None)
    for _ in range(2):
        x = np.random.default_rng(6).normal(size=50)
        assert np.allclose(hess(x).toarray(), tg.hessian(rosen)(x))


def test_branches_have_their_own_patterns():
    def f(x):
        if np.sum(x) > 0:
            return x[1:] * x[:-1]
        return np.cumsum(x)[1:]
    jac = tg.jacobian(f, sparsity="auto")
    for x in (np.ones(8), -np.ones(8), np.arange(8.0), -np.arange(8.0)):
        J = jac(x)
        assert np.allclose(J.toarray(), tg.jacobian(f)(x))
    assert jac(np.ones(8)).nnz == 14 and jac(-np.ones(8)).nnz == 35


def test_argnums_has_aux_and_float32():
    def f(x, y):
        return np.sum(x ** 2 * y[:3]) + np.sum(y ** 3), {"y": y}
    x, y = np.ones(3, np.float32), np.arange(4, dtype=np.float32)
    H, aux = tg.hessian(f, argnums=(0, 1), has_aux=True, sparsity="auto")(x, y)
    dense = tg.hessian(lambda x, y: f(x, y)[0], argnums=(0, 1))(x, y)
    full = np.block([[dense[0][0], dense[0][1]], [dense[1][0], dense[1][1]]])
    assert H.shape == (7, 7) and H.dtype == np.float32 and np.allclose(H.toarray(), full)
    assert np.array_equal(aux["y"], y)
    J = tg.jacobian(lambda x, y: x * y[1:], argnums=1, sparsity="auto")(x, y)
    assert np.allclose(J.toarray(), tg.jacobian(lambda x, y: x * y[1:], argnums=1)(x, y))


def test_a_given_pattern_is_used_and_checked():
    f = lambda x: x[1:] - x[:-1] ** 2
    x = np.random.default_rng(7).normal(size=6)
    pattern = _band(6, 0, 1, 5)
    for given in (pattern, scipy.sparse.csr_matrix(pattern), scipy.sparse.coo_matrix(pattern)):
        J = tg.jacobian(f, sparsity=given)(x)
        assert np.allclose(J.toarray(), tg.jacobian(f)(x)) and J.nnz == 10
    H = tg.hessian(lambda x: np.sum(x[1:] * x[:-1] ** 2), sparsity=np.triu(_band(6, -1, 1)))(x)
    assert np.allclose(H.toarray(), tg.hessian(lambda x: np.sum(x[1:] * x[:-1] ** 2))(x))
    with pytest.raises(ValueError, match=r"sparsity has shape \(6, 6\), but the Jacobian has "
                                         r"shape \(5, 6\)"):
        tg.jacobian(f, sparsity=np.eye(6, dtype=bool))(x)
    with pytest.raises(TypeError, match="sparsity must be None, 'auto', a scipy sparse matrix "
                                        "or a 2-d boolean array, got an array of shape"):
        tg.jacobian(f, sparsity=np.eye(6))
    with pytest.raises(ValueError, match="sparsity must be None, 'auto'"):
        tg.hessian(f, sparsity="yes")


def test_inside_a_traced_computation_it_refuses():
    inner = tg.jacobian(lambda y: y * 2.0, sparsity="auto")
    with pytest.raises(NotImplementedError, match="sparse matrix cannot be a traced value"):
        tg.grad(lambda x: np.sum(inner(x).toarray()))(np.ones(3))


def test_import_stays_light():
    code = "import sys, tapegrad; print('scipy' in sys.modules, 'numba' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.split() == ["False", "False"], out.stderr


def test_arrays_re_read_per_call_are_not_taken_as_constants():
    A = np.eye(4)
    jac = tg.jacobian(lambda x: A @ x, sparsity="auto", capture="call")
    assert np.array_equal(jac(np.ones(4)).toarray(), A)
    A[0, 1] = 5.0                       # a zero of the traced A is not in the pattern's way
    assert np.array_equal(jac(np.ones(4)).toarray(), A)


def test_trees_of_inputs_and_outputs_are_flattened_end_to_end():
    def f(d):
        return d["a"][1:] * d["b"], np.sum(d["a"] ** 2)
    d = {"a": np.arange(4.0), "b": np.ones(3)}
    J = tg.jacobian(f, sparsity="auto")(d)
    D = tg.jacobian(f)(d)
    full = np.block([[D[0]["a"], D[0]["b"]], [D[1]["a"][None], D[1]["b"][None]]])
    assert J.shape == (4, 7) and np.array_equal(J.toarray(), full)


# ---- the description: compiled forms of the rules against the numpy rules ---------------------

RULE_CASES = [
    ("window and broadcast element", lambda x: x[1:] * x[0] + x[::-2].sum(), 7),
    ("stack and concatenate", lambda x: np.stack([x, x ** 2]).ravel()[2:] * 2.0, 5),
    ("sums and extremes over an axis", lambda x: np.max(x.reshape(2, 3), axis=1) *
     np.sum(x.reshape(2, 3), axis=0)[:2] + np.min(x.reshape(3, 2), axis=0), 6),
    ("gather and diff", lambda x: x[[2, 0, 1, 1]] * np.diff(x)[:4], 5),
    ("where", lambda x: np.where(x > 0.1, np.sin(x), x * x), 6),
    ("solve", lambda x: np.linalg.solve(np.diag(x[:3] + 3.0) + 0.5, x[3:]), 6),
    ("empty pieces", lambda x: np.concatenate([x[:0], x, x[3:3]]) * np.sum(x[:0]), 4),
]


def _rule_tapes():
    rng = np.random.default_rng(7)
    for name, f, n in RULE_CASES:
        yield name, tg.trace(f, np.linspace(-0.7, 1.3, n))
    for seed in range(8):
        n = int(rng.integers(1, 9))
        f, scalar = (_program if seed % 2 else _more_programs)(rng, n)
        x = rng.normal(size=n)
        yield f"random {seed}", tg.trace(f, x)
        yield f"random scalar {seed}", tg.trace(scalar, x)
        f, scalar = _stencil_programs(rng, n, np.float64)
        yield f"stencils {seed}", tg.trace(scalar, x)
    for name, f, x in HOSTILE:
        yield name, tg.trace(f, x)


def test_the_compiled_rules_describe_as_the_numpy_rules():
    seen = set()
    for name, tape in _rule_tapes():
        seen.update(p.reads_elements for p in tape.prims)
        for fixed in (True, False):
            fast = sparsity._describe(tape, tape.input_slots, fixed)
            slow = sparsity._describe(tape, tape.input_slots, fixed, compiled_rules=False)
            assert np.array_equal(fast[3], slow[3]) and np.array_equal(fast[5], slow[5]), name
            assert _decoded(fast) == _decoded(slow), name
    assert seen >= set(sparsity._RULE_IDS)      # every compiled form compared


def _decoded(description):
    """The reads with their index maps in place of offsets into the shared buffer (which the
    two describers fill in different orders)."""
    entries, reads, maps = description[3], description[4], description[6].tolist()
    out = []
    for o, n_out, first, count, *_ in entries.tolist():
        for s, kind, p0, p1, p2, p3, size in reads[first:first + count].tolist():
            if kind == sparsity._GATHER:
                p0 = tuple(maps[p0:p0 + n_out])
            elif kind == sparsity._PAIRS:
                p0, p1 = tuple(maps[p0:p0 + p2]), tuple(maps[p1:p1 + p2])
            out.append((o, s, kind, p0, p1, p2, p3, size))
    return out


@pytest.mark.parametrize("payload,message", [
    ((9, 1), "read outside an operand"), ((-1, 1), "read outside an operand"),
    ((0, 3), "read outside an operand"), ((7, 0), "read outside an operand")])
def test_a_compiled_rule_refuses_a_payload_out_of_range(payload, message):
    tape = tg.trace(lambda x: np.sin(x[1:]) * 2.0, X)
    e = next(e for e, p in enumerate(tape.prims) if p.name == "window")
    IP = tape.IP.copy()
    IP[tape.E[e, 5]:tape.E[e, 5] + 2] = payload
    tape.IP = IP
    with pytest.raises(RuntimeError, match=f"a dependence rule {message}"):
        jacobian_pattern(tape, tape.input_slots, tape.output_slots)
