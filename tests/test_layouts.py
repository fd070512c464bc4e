"""The kernel language and its layouts (`core.layouts`): one body per rule, three layouts.

* Kernel parity: for every primitive of the registry (but `call`, run in Python), one-entry
  tapes with random operands and edge values (zero factors for segprod, ties and NaN for
  segmax/segmin, operands of size 1 for binary primitives, empty segments, shared and constant
  matmul operands) run through the column interpreters (`interpreters(batched=True)`, buffers
  of (rows, tile)) and, point by point, through the flat ones (`interpreters()`): forward,
  backward, tangent and backward_tangent must give, column by column, what the flat sweeps give
  at that point, bitwise (matmul to rounding: the flat layout calls BLAS).
* The language is enforced: `layouts.source` refuses a body outside it with a message naming
  the problem, and compiles an accumulator carried across a loop (a row of its own, one value
  per point, in the column layout).
* The generated modules: CUDA device code allocates nothing and calls no view()/temp(); the
  flat and column modules compile.
"""
import re

import numba
import numpy as np
import pytest

from tapegrad.batch import codegen_cuda as _codegen_cuda
from tapegrad.core import codegen, layouts
from tapegrad.core.interp import interpreters
from tapegrad.core.primitive import view
from tapegrad.core.registry import BY_NAME, PRIMS

from conftest import rng_for
from test_registry import BINARY_CASES, SPECIAL, UNARY_CASES, _draw

POINTS = 5          # the tile: odd, so that no vector width divides it
DIRECTIONS = 2      # tangent directions of the tangent and backward_tangent sweeps
DTYPES = [np.float64, np.float32]


# ---- kernel parity: one entry, every sweep, both layouts ---------------------------------------

def one_entry(p, sizes, out_size, ip=(), c0=0.0, c1=0.0, need=None):
    """(E, FC, IP, S, NEED) of a tape of one entry of primitive p: operand slots 0..k-1 of
    `sizes`, then the output slot k (a variadic primitive's payload lists its operand slots;
    `ip` overrides it). `need`: the operands that need an adjoint (all by default). The
    entry must pass the primitive's shape rule, as the validator would have it."""
    k = len(sizes)
    if p.variadic:
        ip = list(ip) if len(ip) else list(range(k))
    IP = np.asarray(ip, np.int64)
    if p.structural:
        operand_sizes = [sizes[j] for j in ip] if p.variadic else sizes
        error = p.check(IP, out_size, operand_sizes)
        assert error is None, f"{p.name}: an invalid test entry ({error})"
    operands = [-1, -1, -1] if p.variadic else (list(range(k)) + [-1, -1, -1])[:3]
    E = np.array([[p.opcode, *operands, k, 0, IP.size, 0]], np.int64)
    FC = np.array([[c0, c1]], np.float64)
    all_sizes = np.array(list(sizes) + [out_size], np.int64)
    S = np.ascontiguousarray(np.stack([np.cumsum(all_sizes) - all_sizes, all_sizes], axis=1))
    NEED = np.ones(k + 1, np.int64)
    if need is not None:
        NEED[:k] = [j in need for j in range(k)]
    return E, FC, IP, S, NEED


def sweeps(m, tape, V, T, G, TG):
    """The four sweeps of interpreter module m, each from the same starting buffers: {sweep:
    its buffer after it} (backward_tangent from the tangent sweep's T). Flat: V and G (rows,),
    T and TG (directions, rows); column: each with a last axis of points, as the tile driver
    passes them (backward's G with a leading axis of seeds, one here)."""
    E, FC, IP, S, NEED = tape
    V = V.copy()
    m.forward(E, FC, IP, S, V, 0, 1)
    T = T.copy()
    m.tangent(E, FC, IP, S, V, T, 0, 1)
    G1 = G[None].copy()
    m.backward(E, FC, IP, S, NEED, V, G1, 0, 1)
    G2, TG = G.copy(), TG.copy()
    m.backward_tangent(E, FC, IP, S, NEED, V, T, G2, TG, 0, 1)
    return {"forward": V, "tangent": T, "backward": G1[0], "backward_tangent G": G2,
            "backward_tangent TG": TG}


def check_layouts(p, operands, out_size, ip=(), c0=0.0, c1=0.0, need=None, constant=(),
                  seed="", dtype=np.float64):
    """Run one entry through both layouts' sweeps and compare column q with point q.

    `operands`: each operand's values at every point, (size, POINTS). Adjoint, tangent and
    adjoint-tangent buffers start random (the sweeps add into operand adjoints), the same in
    both layouts. `constant`: operands that are the same at every point (matmul's a_const,
    b_const), whose tangents are zero, as in a real tape."""
    sizes = [o.shape[0] for o in operands]
    tape = one_entry(p, sizes, out_size, ip, c0, c1, need)
    S = tape[3]
    n = int(S[:, 1].sum())
    rng = rng_for(f"layouts {p.name} {seed}")
    V = rng.standard_normal((n, POINTS)).astype(dtype)
    T = rng.standard_normal((DIRECTIONS, n, POINTS)).astype(dtype)
    G = rng.standard_normal((n, POINTS)).astype(dtype)
    TG = rng.standard_normal((DIRECTIONS, n, POINTS)).astype(dtype)
    for j, values in enumerate(operands):
        rows = slice(S[j, 0], S[j, 0] + S[j, 1])
        V[rows] = values
        if j in constant:
            assert (values == values[:, :1]).all(), "a constant operand is the same everywhere"
            T[:, rows] = 0.0
    columns = sweeps(interpreters(batched=True), tape, V, T, G, TG)
    out = slice(S[-1, 0], S[-1, 0] + S[-1, 1])
    # the batched reverse sweep clears each output adjoint once its VJP has read it
    np.testing.assert_array_equal(columns["backward"][out], 0.0)
    flat = interpreters()
    for q in range(POINTS):
        at_q = sweeps(flat, tape, V[:, q], T[..., q], G[:, q], TG[..., q])
        at_q["backward"][out] = 0.0
        for sweep, buffer in at_q.items():
            message = f"{p.name}, {sweep}, point {q}"
            if p.name == "matmul":
                # the flat layout's BLAS sums in its own order (with FMAs); the column one in
                # index order
                tol = 64 * np.finfo(dtype).eps
                scale = 1.0 + float(np.abs(buffer).max(initial=0))
                np.testing.assert_allclose(columns[sweep][..., q], buffer, rtol=tol,
                                           atol=tol * scale, err_msg=message)
            else:
                np.testing.assert_array_equal(columns[sweep][..., q], buffer, err_msg=message)


# ---- the cases --------------------------------------------------------------------------------

def _normal(rng, size, dtype):
    return rng.standard_normal((size, POINTS)).astype(dtype)


def _same_everywhere(rng, size, dtype):
    return np.repeat(rng.standard_normal((size, 1)), POINTS, axis=1).astype(dtype)


def _small_integers(rng, size, dtype):
    """Values in {-1, 0, 1}: ties within a segment at most points."""
    return rng.integers(-1, 2, (size, POINTS)).astype(dtype)


def _far_apart(rng, size, dtype):
    """Values of hundreds: exp overflows without the maximum subtracted (softmax)."""
    return (300.0 * rng.standard_normal((size, POINTS))).astype(dtype)


def _with_infinities(rng, size, dtype):
    """+inf at one point, -inf everywhere at another, -inf once at a third."""
    x = _normal(rng, size, dtype)
    x[1, 0] = np.inf
    x[:, 2] = -np.inf
    x[0, 4] = -np.inf
    return x


def _with_nan(rng, size, dtype):
    x = _small_integers(rng, size, dtype)
    x[0, 1] = x[size - 1, 3] = np.nan
    return x


def _zero_factors(rng, size, dtype):
    """Per point, segments [0, 0, 0, 1, 1, 2] get 0, 1, 2 or 3 zero factors."""
    x = rng.uniform(0.5, 2.0, (size, POINTS)) * rng.choice([-1.0, 1.0], (size, POINTS))
    x[0, 1] = 0.0                                # one zero in segment 0
    x[0, 2] = x[2, 2] = x[4, 2] = 0.0            # two in segment 0, one in segment 1
    x[:3, 3] = 0.0                               # segment 0 all zero
    x[3, 4] = x[4, 4] = x[5, 4] = 0.0            # segments 1 and 2 all zero
    return x.astype(dtype)


def _conditions(rng, size, dtype):
    """Zeros (both signs), NaN (not zero: true) and other values, shuffled per point."""
    base = np.array([0.0, 1.0, -0.0, np.nan, 2.0, 0.0])
    return np.stack([rng.permutation(base) for _ in range(POINTS)], axis=1).astype(dtype)


def _matmul(batch, m, k, n, sa, sb, a_const=0, b_const=0):
    a_size = (batch - 1) * sa + m * k if sa else m * k
    b_size = (batch - 1) * sb + k * n if sb else k * n
    operands = [(a_size, _same_everywhere if a_const else _normal),
                (b_size, _same_everywhere if b_const else _normal)]
    constant = [j for j, flag in enumerate((a_const, b_const)) if flag]
    return dict(p="matmul", operands=operands, out=batch * m * n,
                ip=(batch, m, k, n, sa, sb, a_const, b_const), constant=constant)


def _matrices(batch, n, positive_definite):
    """Values of `batch` n x n matrices per point: well-conditioned (diagonally dominated),
    or symmetric positive definite (for cholesky)."""
    def make(rng, size, dtype):
        X = rng.standard_normal((POINTS, batch, n, n))
        X = X @ np.swapaxes(X, -1, -2) if positive_definite else X
        return (X + n * np.eye(n)).reshape(POINTS, size).T.astype(dtype)
    return make


SEGMENTS = [0, 2, 2, 1, 0, 2, 1]
EXTREMES = [0, 0, 0, 1, 1, 2, 2, 2]           # segment 3 is empty
# id -> (primitive, [(operand size, values)], output size, payload, c0, constant operands)
STRUCTURAL = {
    "gather": dict(p="gather", operands=[(5, _normal)], out=6, ip=[4, 0, 0, 2, 4, 1]),
    "gather_diff": dict(p="gather_diff", operands=[(5, _normal)], out=4,
                        ip=[0, 1, 1, 3, 2, 2, 0, 4]),
    "window": dict(p="window", operands=[(5, _normal)], out=3, ip=[1, 1]),
    "window-step2": dict(p="window", operands=[(5, _normal)], out=3, ip=[0, 2]),
    "window-backwards": dict(p="window", operands=[(5, _normal)], out=3, ip=[4, -2]),
    "window-broadcast": dict(p="window", operands=[(5, _normal)], out=4, ip=[2, 0]),
    # one element: the flat sweeps' inline path (`window.scalar`)
    "window-element": dict(p="window", operands=[(5, _normal)], out=1, ip=[3, -1]),
    "window-element-of-one": dict(p="window", operands=[(1, _normal)], out=1, ip=[0, 0]),
    "segsum": dict(p="segsum", operands=[(7, _normal)], out=3, ip=SEGMENTS, c0=0.5),
    "segsum-empty-segment": dict(p="segsum", operands=[(7, _normal)], out=4, ip=SEGMENTS,
                                 c0=-1.5),
    "segsumsq": dict(p="segsumsq", operands=[(7, _normal)], out=3, ip=SEGMENTS, c0=0.5),
    "segsumsq-empty-segment": dict(p="segsumsq", operands=[(7, _normal)], out=4, ip=SEGMENTS,
                                   c0=3.0),
    "total": dict(p="total", operands=[(7, _normal)], out=1, c0=1.0 / 7.0),
    "total-empty": dict(p="total", operands=[(0, _normal)], out=1, c0=2.0),
    # numpy's order: eight partial sums of a run (8..128 values), and runs halved above 128
    "total-block": dict(p="total", operands=[(45, _normal)], out=1, c0=1.0),
    "total-halves": dict(p="total", operands=[(1031, _normal)], out=1, c0=0.5),
    "segmax-ties": dict(p="segmax", operands=[(8, _small_integers)], out=4, ip=EXTREMES),
    "segmax-nan": dict(p="segmax", operands=[(8, _with_nan)], out=4, ip=EXTREMES),
    "segmin-ties": dict(p="segmin", operands=[(8, _small_integers)], out=4, ip=EXTREMES),
    "segmin-nan": dict(p="segmin", operands=[(8, _with_nan)], out=4, ip=EXTREMES),
    # the extreme of everything: its ties counted without scratch
    "segmax-all-ties": dict(p="segmax", operands=[(8, _small_integers)], out=1, ip=[0] * 8),
    "segmin-all-nan": dict(p="segmin", operands=[(8, _with_nan)], out=1, ip=[0] * 8),
    "segmax-all-nan": dict(p="segmax", operands=[(8, _with_nan)], out=1, ip=[0] * 8),
    "segmin-all-ties": dict(p="segmin", operands=[(8, _small_integers)], out=1, ip=[0] * 8),
    "segmax-of-four": dict(p="segmax", operands=[(4, _normal)], out=1, ip=[0] * 4),
    "segprod": dict(p="segprod", operands=[(6, _normal)], out=3, ip=[0, 0, 0, 1, 1, 2]),
    "segprod-zeros": dict(p="segprod", operands=[(6, _zero_factors)], out=3,
                          ip=[0, 0, 0, 1, 1, 2]),
    # softmax: a few values (one float64 accumulator), numpy's pairwise sum (8..128, halves
    # above), ties of the maximum, NaN, values far apart, one value
    "softmax": dict(p="softmax", operands=[(4, _normal)], out=4),
    "softmax-block": dict(p="softmax", operands=[(45, _normal)], out=45),
    "softmax-halves": dict(p="softmax", operands=[(300, _normal)], out=300),
    "softmax-ties": dict(p="softmax", operands=[(6, _small_integers)], out=6),
    "softmax-nan": dict(p="softmax", operands=[(8, _with_nan)], out=8),
    "softmax-far-apart": dict(p="softmax", operands=[(9, _far_apart)], out=9),
    "softmax-one": dict(p="softmax", operands=[(1, _normal)], out=1),
    "softmax-infinities": dict(p="softmax", operands=[(5, _with_infinities)], out=5),
    # tapegrad.softmax's: a maximum that is not finite replaced by 0
    "softmax-infinities-torch": dict(p="softmax", operands=[(5, _with_infinities)], out=5,
                                     c0=1.0),
    "matmul": _matmul(1, 2, 3, 2, 6, 6),
    "matmul-batched": _matmul(2, 2, 2, 3, 4, 6),
    "matmul-shared-b": _matmul(3, 2, 2, 2, 4, 0),
    "matmul-shared-a": _matmul(2, 1, 3, 2, 0, 6),
    "matmul-row-vector": _matmul(1, 1, 3, 2, 3, 6),
    "matmul-column-vector": _matmul(1, 3, 2, 1, 6, 2),
    "matmul-constant-a": _matmul(1, 2, 3, 2, 6, 6, a_const=1),
    "matmul-constant-b": _matmul(2, 2, 3, 2, 6, 0, b_const=1),
    "matmul-empty-k": _matmul(1, 2, 0, 2, 0, 0),
    "pack": dict(p="pack", operands=[(2, _normal), (3, _normal), (1, _normal)], out=6),
    "pack-repeated": dict(p="pack", operands=[(2, _normal), (3, _normal)], out=7,
                          ip=[0, 1, 0]),
    "where": dict(p="where", operands=[(6, _conditions), (6, _normal), (6, _normal)], out=6),
    # scans of a (2, 3) array along each axis: each value's predecessor, or -1
    "cumsum-axis0": dict(p="cumsum", operands=[(6, _normal)], out=6, ip=[-1, -1, -1, 0, 1, 2]),
    "cumsum-axis1": dict(p="cumsum", operands=[(6, _normal)], out=6, ip=[-1, 0, 1, -1, 3, 4]),
    "cumprod": dict(p="cumprod", operands=[(6, _normal)], out=6, ip=[-1, 0, 1, -1, 3, 4]),
    "cumprod-zeros": dict(p="cumprod", operands=[(6, _zero_factors)], out=6,
                          ip=[-1, 0, 1, -1, 3, 4]),
    "cumprod-zeros-axis0": dict(p="cumprod", operands=[(6, _zero_factors)], out=6,
                                ip=[-1, -1, 0, 1, 2, 3]),
    # sorts: (lane length, inner, descending); ties and NaN differ from point to point
    "sort-ties": dict(p="sort", operands=[(8, _small_integers)], out=8, ip=[4, 2, 0]),
    "sort-nan": dict(p="sort", operands=[(8, _with_nan)], out=8, ip=[8, 1, 0]),
    "sort-nan-descending": dict(p="sort", operands=[(8, _with_nan)], out=8, ip=[8, 1, 1]),
    "sort-lanes": dict(p="sort", operands=[(6, _normal)], out=6, ip=[3, 1, 0]),
    "sort-zeros": dict(p="sort", operands=[(6, _conditions)], out=6, ip=[6, 1, 0]),
    "cholesky": dict(p="cholesky", operands=[(18, _matrices(2, 3, True))], out=18, ip=[2, 3]),
    "solve": dict(p="solve", operands=[(18, _matrices(2, 3, False)), (12, _normal)], out=12,
                  ip=[2, 3, 2, 9, 6]),
    "solve-shared-a": dict(p="solve", operands=[(9, _matrices(1, 3, False)), (6, _normal)],
                           out=6, ip=[2, 3, 1, 0, 3]),
    "solve-shared-b": dict(p="solve", operands=[(18, _matrices(2, 3, False)), (9, _normal)],
                           out=18, ip=[2, 3, 3, 9, 0]),
    "slogdet": dict(p="slogdet", operands=[(18, _matrices(2, 3, False))], out=4, ip=[2, 3]),
    "eigh": dict(p="eigh", operands=[(18, _matrices(2, 3, False))], out=24, ip=[2, 3, 0, 0]),
    "eigvalsh-upper": dict(p="eigh", operands=[(18, _matrices(2, 3, False))], out=24,
                           ip=[2, 3, 1, 1]),
    "svd-tall": dict(p="svd", operands=[(24, _normal)], out=48, ip=[2, 4, 3, 0]),
    "svd-wide-values": dict(p="svd", operands=[(10, _normal)], out=16, ip=[1, 2, 5, 1]),
    "qr": dict(p="qr", operands=[(24, _normal)], out=42, ip=[2, 4, 3]),
}
NEEDS = {"every operand": None, "not the first": "not first"}


def test_every_primitive_has_a_case():
    covered = {c["p"] for c in STRUCTURAL.values()} | {c[0] for c in UNARY_CASES} \
        | {c[0] for c in BINARY_CASES}
    assert covered == {p.name for p in PRIMS if p.kind != "call"}


def _need(operands, pattern):
    return None if pattern is None else set(range(1, len(operands)))


# The linear-algebra kernels carry per-point scalars (pivots, sums) that the column layout keeps
# in float64 rows and the flat layout in registers of the operands' type: in float32 the two
# differ by an ulp, so their parity is checked in float64 only.
FLOAT64_ONLY = {"cholesky", "solve", "slogdet", "eigh", "svd", "qr"}


def _structural_params():
    for case, spec in STRUCTURAL.items():
        for dtype, name in zip(DTYPES, ("f64", "f32")):
            if dtype is np.float64 or spec["p"] not in FLOAT64_ONLY:
                yield pytest.param(case, dtype, id=f"{case}-{name}")


@pytest.mark.parametrize("need", list(NEEDS.values()), ids=list(NEEDS))
@pytest.mark.parametrize("case, dtype", list(_structural_params()))
def test_structural_kernels_agree_across_layouts(case, need, dtype):
    spec = STRUCTURAL[case]
    rng = rng_for(f"layouts {case}")
    operands = [make(rng, size, dtype) for size, make in spec["operands"]]
    check_layouts(BY_NAME[spec["p"]], operands, spec["out"], spec.get("ip", ()),
                  spec.get("c0", 0.0), need=_need(operands, need),
                  constant=spec.get("constant", ()), seed=case, dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("name, c0, c1, domain", UNARY_CASES,
                         ids=[f"{c[0]}[{c[1]:g},{c[2]:g}]" for c in UNARY_CASES])
def test_unary_kernels_agree_across_layouts(name, c0, c1, domain, dtype):
    rng = rng_for(f"layouts {name} {c0} {c1}")
    x = _draw(rng, domain, 7 * POINTS, dtype).reshape(7, POINTS)
    x[:3, 0] = np.clip([0.0, -0.0, 1.0], *domain)     # exact points inside the domain
    check_layouts(BY_NAME[name], [x], 7, c0=c0, c1=c1, seed=f"{c0} {c1}", dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("broadcast", [None, "a", "b"])
@pytest.mark.parametrize("name, da, db", BINARY_CASES, ids=[c[0] for c in BINARY_CASES])
def test_binary_kernels_agree_across_layouts(name, da, db, broadcast, dtype):
    """Including an operand of size 1, broadcast inside the kernel; ties for maximum and
    minimum (small integers); the second operand alone needing an adjoint."""
    rng = rng_for(f"layouts {name} {broadcast}")
    a = _draw(rng, da, (1 if broadcast == "a" else 6) * POINTS, dtype).reshape(-1, POINTS)
    b = _draw(rng, db, (1 if broadcast == "b" else 6) * POINTS, dtype).reshape(-1, POINTS)
    for need in NEEDS.values():
        check_layouts(BY_NAME[name], [a, b], 6, need=_need([a, b], need),
                      seed=f"{broadcast} {need}", dtype=dtype)


ELEMENTWISE_SPECIAL = [p.name for p in PRIMS if p.elementwise]


@pytest.mark.parametrize("name", ELEMENTWISE_SPECIAL)
def test_special_values_agree_across_layouts(name):
    """Infinities, NaN, signed zeros and extremes, every elementwise primitive, every sweep
    (c0 = 2, c1 = 3 where a unary primitive reads them)."""
    p = BY_NAME[name]
    rng = rng_for(f"layouts special {name}")
    if p.kind == "unary":
        x = np.stack([rng.permutation(SPECIAL) for _ in range(POINTS)], axis=1)
        operands = [x]
    else:
        a, b = np.meshgrid(SPECIAL, SPECIAL)
        order = [rng.permutation(a.size) for _ in range(POINTS)]
        operands = [np.stack([v.ravel()[k] for k in order], axis=1) for v in (a, b)]
    with np.errstate(all="ignore"):
        check_layouts(p, operands, operands[0].shape[0], c0=2.0, c1=3.0, seed="special")


# ---- the flat interpreters' scalar fast path --------------------------------------------------
# An elementwise entry of one element runs inline in the flat interpreters (core.codegen's
# scalar path), from its own copy of the expressions: it must give the loops' bits, which the
# column layout (always the loops) gives.

def _scalar_operands(p, rng, dtype):
    """Each operand of one element, at every point: special values and random ones."""
    k = 1 if p.kind == "unary" else 2
    values = np.concatenate([SPECIAL, rng.standard_normal(12)])
    with np.errstate(over="ignore"):        # float32: the extremes overflow to infinities
        return [rng.choice(values, (1, POINTS)).astype(dtype) for _ in range(k)]


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("name", ELEMENTWISE_SPECIAL)
def test_one_element_entries_agree_across_layouts(name, dtype):
    p = BY_NAME[name]
    rng = rng_for(f"layouts scalar {name}")
    for trial in range(6):
        operands = _scalar_operands(p, rng, dtype)
        need = None if trial % 2 == 0 else _need(operands, "not first")
        with np.errstate(all="ignore"):
            check_layouts(p, operands, 1, c0=2.0, c1=3.0, need=need, seed=f"scalar {trial}",
                          dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("name", [p.name for p in PRIMS if p.elementwise and p.differentiable])
def test_one_element_first_writes_equal_additions(name, dtype):
    """backward_first's scalar path: where an entry writes an operand's adjoint first it
    assigns what backward adds to a zero adjoint; elsewhere it adds as backward does."""
    from tapegrad.core.interp import reverse_first
    p = BY_NAME[name]
    rng = rng_for(f"layouts first {name}")
    for trial in range(6):
        operands = [o[:, 0] for o in _scalar_operands(p, rng, dtype)]
        E, FC, IP, S, NEED = one_entry(p, [1] * len(operands), 1, c0=2.0, c1=3.0)
        V = np.concatenate(operands + [np.zeros(1, dtype)])
        with np.errstate(all="ignore"):
            interpreters().forward(E, FC, IP, S, V, 0, 1)
            G = rng.standard_normal((1, V.size)).astype(dtype)
            for first in range(1 << len(operands)):
                want = G.copy()
                want[0, [j for j in range(len(operands)) if first >> j & 1]] = 0.0
                interpreters().backward(E, FC, IP, S, NEED, V, want, 0, 1)
                got = G.copy()
                reverse_first().backward_first(E, FC, IP, S, NEED, np.array([first]),
                                               np.zeros((0, 2), np.int64), V, got, 0, 1)
                np.testing.assert_array_equal(got, want, err_msg=f"{name}, FIRST {first}")


ONE_ELEMENT_PAYLOADS = {"window": [2, 1], "segmax": [0] * 5, "segmin": [0] * 5}


@pytest.mark.parametrize("name", [p.name for p in PRIMS if p.scalar])
def test_one_element_structural_forms_add_in_backward_first(name):
    """A structural one-element form assigns no first write: backward_first adds as backward
    does (`core.sweep._first_writes` zeroes the adjoint first)."""
    from tapegrad.core.interp import reverse_first
    p = BY_NAME[name]
    E, FC, IP, S, NEED = one_entry(p, [5], 1, ip=ONE_ELEMENT_PAYLOADS[name])
    rng = rng_for(f"layouts first {name}")
    V = rng.standard_normal(6)
    V[3] = V[2]                             # ties
    interpreters().forward(E, FC, IP, S, V, 0, 1)
    G = rng.standard_normal((2, 6))
    want, got = G.copy(), G.copy()
    interpreters().backward(E, FC, IP, S, NEED, V, want, 0, 1)
    reverse_first().backward_first(E, FC, IP, S, NEED, np.zeros(1, np.int64),
                                   np.zeros((0, 2), np.int64), V, got, 0, 1)
    np.testing.assert_array_equal(got, want)
    assert (want[:, :5] != G[:, :5]).any()


# ---- the language is enforced ------------------------------------------------------------------
# Bodies outside the kernel language, each breaking one rule (core.layouts' docstring).

def indexes_by_a_value(V, S, a, b, c, o, ip, c0, c1):
    x = view(V, S, a)
    y = view(V, S, o)
    j = x[0]
    y[0] = x[j]


def loop_bounded_by_a_value(V, S, a, b, c, o, ip, c0, c1):
    x = view(V, S, a)
    y = view(V, S, o)
    for i in range(int(x[0])):
        y[i] = x[i]


def loop_in_a_condition_on_values(V, S, a, b, c, o, ip, c0, c1):
    x = view(V, S, a)
    y = view(V, S, o)
    if x[0] > 0.0:
        for i in range(y.size):
            y[i] = x[i]


def while_on_a_value(V, S, a, b, c, o, ip, c0, c1):
    x = view(V, S, a)
    y = view(V, S, o)
    i = 0
    while x[i] > 0.0:
        y[0] = x[i]


def copies_a_view_into_a_slice(V, S, a, b, c, o, ip, c0, c1):
    x = view(V, S, a)
    y = view(V, S, o)
    y[0:2] = x[0:2]


def assigns_a_view(V, S, a, b, c, o, ip, c0, c1):
    x = view(V, S, a)
    y = view(V, S, o)
    y[:] = x


def fills_with_a_value(V, S, a, b, c, o, ip, c0, c1):
    x = view(V, S, a)
    y = view(V, S, o)
    y[:] = x[0]


def numpy_on_a_view(V, S, a, b, c, o, ip, c0, c1):
    x = view(V, S, a)
    y = view(V, S, o)
    y[0] = np.sum(x)


def unbound_view(V, S, a, b, c, o, ip, c0, c1):
    y = view(V, S, o)
    y[0] = view(V, S, a)[0]


def returns_a_value(V, S, a, b, c, o, ip, c0, c1):
    x = view(V, S, a)
    return x[0]


REFUSED = {
    indexes_by_a_value: r"the index of x\[j\] depends on values",
    loop_bounded_by_a_value: r"a loop bound depends on values",
    loop_in_a_condition_on_values: r"a condition on values may not contain a loop",
    while_on_a_value: r"a loop condition depends on values",
    copies_a_view_into_a_slice: r"a view may be filled with a uniform scalar, not assigned "
                                r"values: copy element by element",
    assigns_a_view: r"a view may be filled with a uniform scalar",
    fills_with_a_value: r"a view may be filled with a uniform scalar",
    numpy_on_a_view: r"numpy call on values \(np\.sum\)",
    unbound_view: r"bind view\(\) to a name",
    returns_a_value: r"a returned value depends on values",
}


@pytest.mark.parametrize("layout", ["flat", "column", "cuda"])
@pytest.mark.parametrize("body", list(REFUSED), ids=lambda f: f.__name__)
def test_a_body_outside_the_language_is_refused(body, layout):
    """Refused in every layout, with the body's name, the line and the problem."""
    with pytest.raises(layouts.KernelError, match=REFUSED[body]) as info:
        layouts.source(body, layout, "k")
    assert body.__name__ in str(info.value) and "(line " in str(info.value)


def running_sum(V, S, a, b, c, o, ip, c0, c1):
    """y[i] = c0 * (x[0] + ... + x[i]): an accumulator carried across the loop's iterations."""
    x = view(V, S, a)
    y = view(V, S, o)
    acc = 0.0
    for i in range(x.size):
        acc += x[i]
        y[i] = c0 * acc


def normalised(V, S, a, b, c, o, ip, c0, c1):
    """y = x / sum(x * x): an accumulator read by a later loop."""
    x = view(V, S, a)
    y = view(V, S, o)
    acc = 0.0
    for i in range(x.size):
        acc += x[i] * x[i]
    for i in range(y.size):
        y[i] = x[i] / acc


def _compiled(body, layout):
    """`body` rewritten for `layout`, compiled by numba; and its source."""
    text = layouts.source(body, layout, body.__name__)
    namespace = {"np": np}
    exec(compile(text, f"<{layout} {body.__name__}>", "exec"), namespace)
    return numba.njit(namespace[body.__name__]), text


@pytest.mark.parametrize("body", [running_sum, normalised], ids=lambda f: f.__name__)
def test_an_accumulator_is_a_row_in_the_column_layout(body):
    flat, flat_text = _compiled(body, "flat")
    column, column_text = _compiled(body, "column")
    # flat (and CUDA): a register; column: one value per point of the tile, in float64 as the
    # register is (a float32 sum is rounded once, at the store, in every layout)
    assert "acc = 0.0" in flat_text and "acc[" not in flat_text
    assert re.search(r"acc = np\.empty\(V\.shape\[1\], np\.float64\)", column_text), column_text
    assert "acc[p] +=" in column_text and "for p in range(_P)" in column_text
    cuda_text = layouts.source(body, "cuda", body.__name__)
    assert "np." not in cuda_text and "acc[" not in cuda_text
    S = np.array([[0, 4], [4, 4]], np.int64)
    V = rng_for(f"accumulator {body.__name__}").standard_normal((8, POINTS))
    column(V, S, 0, -1, -1, 1, np.zeros(0, np.int64), 0.5, 0.0)
    for q in range(POINTS):
        point = V[:, q].copy()
        point[4:] = np.nan
        flat(point, S, 0, -1, -1, 1, np.zeros(0, np.int64), 0.5, 0.0)
        np.testing.assert_array_equal(V[:, q], point)
    x = V[:4]
    expected = 0.5 * np.cumsum(x, axis=0) if body is running_sum else \
        x / (x * x).sum(axis=0)
    np.testing.assert_allclose(V[4:], expected, rtol=1e-14)


# ---- the generated modules ---------------------------------------------------------------------

def test_cuda_device_code_allocates_nothing():
    """One thread per point: no numpy call at all (the import aside), views sliced inline,
    scratch rows instead of temporaries; and the module compiles (as Python)."""
    source = _codegen_cuda.generate()
    numpy_lines = [line for line in source.splitlines()
                   if re.search(r"\bnp\.", line) and line != "import numpy as np"]
    assert not numpy_lines, numpy_lines[:5]
    assert not re.search(r"\b(view|temp)\(", source)
    assert "V.shape[0] -" in source       # temps: scratch rows at the end of the value column
    compile(source, "cuda_generated.py", "exec")


@pytest.mark.parametrize("batched", [False, True], ids=["flat", "column"])
def test_cpu_modules_compile(batched):
    source = codegen.generate(batched)
    assert not re.search(r"\b(view|temp)\(", source)
    compile(source, "generated.py", "exec")
    for p in PRIMS:
        if p.structural:
            for rule in ("fwd", "vjp") if p.linear else ("fwd", "vjp", "jvp", "vjp_jvp"):
                assert f"def {p.name}_{rule}(" in source


def test_the_first_write_module_compiles():
    source = codegen.generate_first("_gen_interp", "_vecmath")
    assert not re.search(r"\b(view|temp)\(", source)
    compile(source, "generated_first.py", "exec")
