"""The op registry is consistent, and the generated interpreters agree with the eager forward.

Eager tensors compute values with each primitive's numpy function; replays (function
transforms, batched evaluation) compute them with the compiled interpreter generated from the
primitive's scalar expression. Both must give the same numbers, so a traced function returns
what the eager one did.
"""
import ast
import collections
import inspect
import math

import numpy as np
import pytest

from tapegrad.core import codegen as _codegen
from tapegrad.core.primitive import LAYOUTS, Prim
from tapegrad.core.registry import BY_NAME, OPCODE, PRIMS, SAVES

from conftest import rng_for

ELEMENTWISE = [p for p in PRIMS if p.kind in ("unary", "binary")]
KERNELS = [p for p in PRIMS if p.kind == "kernel"]
INTERPRETERS = ("forward", "backward", "tangent", "backward_tangent")
# The calling convention of kernel rules (core.primitive.SIGNATURES): rule -> parameter names.
CONVENTION = {
    "fwd": "V S a b c o ip c0 c1",
    "vjp": "V G S NEED a b c o ip c0 c1",
    "jvp": "V T S a b c o ip c0 c1",
    "vjp_jvp": "V T G TG S NEED a b c o ip c0 c1",
}


# ---- the table ----------------------------------------------------------------------------

def test_opcodes_are_positions():
    assert [p.opcode for p in PRIMS] == list(range(len(PRIMS)))
    assert OPCODE == {p.name: i for i, p in enumerate(PRIMS)}
    assert all(BY_NAME[p.name] is p for p in PRIMS)


def test_names_unique():
    names = [p.name for p in PRIMS]
    repeated = [n for n, k in collections.Counter(names).items() if k > 1]
    assert not repeated, repeated
    assert all(n.isidentifier() for n in names)


def test_fields():
    for p in PRIMS:
        assert isinstance(p, Prim)
        assert p.kind in ("unary", "binary", "kernel", "call"), p
        if p.differentiable:
            assert p.grad_fn.endswith(tuple(f"Backward{i}" for i in range(10))), p.name
        else:
            assert p.kind == "binary" and p.grad_fn == "", p.name
    np.testing.assert_array_equal(SAVES, [p.saves for p in PRIMS])


_ALLOWED = {
    "unary": {"x", "y", "c0", "c1", "math", "_sigmoid", "abs"},
    "binary": {"a", "b", "y", "math", "abs"},
}


def _names(expr):
    tree = ast.parse(expr, mode="eval")
    return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}


@pytest.mark.parametrize("p", ELEMENTWISE, ids=[p.name for p in ELEMENTWISE])
def test_elementwise_rules(p):
    """f/d/d2 have the arity of the kind, parse, and only read the names the loops define."""
    arity = {"unary": (1, 1), "binary": (2, 3)}[p.kind]
    assert (len(p.d), len(p.d2)) == arity
    assert not p.rules and callable(p.numpy)
    for expr in (p.f, *p.d, *p.d2):
        assert isinstance(expr, str) and expr.strip()
        names = _names(expr)
        assert names <= _ALLOWED[p.kind], (p.name, expr, names - _ALLOWED[p.kind])
    assert "y" not in _names(p.f), "the forward expression cannot read its own output"
    sig = inspect.signature(p.numpy)
    assert len(sig.parameters) >= (1 if p.kind == "unary" else 2)


def _convention(fn):
    return " ".join(inspect.signature(fn).parameters)


def _rules(p):
    """The kernels a structural primitive writes: all four, or fwd and vjp when it is linear
    (the code generator derives its jvp and vjp_jvp)."""
    return {r: c for r, c in CONVENTION.items() if not p.linear or r in ("fwd", "vjp")}


@pytest.mark.parametrize("p", KERNELS, ids=[p.name for p in KERNELS])
def test_kernel_families(p):
    """Every structural primitive defines its rules, in the calling convention, named as the
    generated code names them; a linear one does not write the two the code generator derives,
    and a layout's override keeps the convention too."""
    assert not p.f and not p.d and not p.d2 and p.numpy is None
    assert callable(p.check), f"{p.name} has no shape rule"
    if p.linear:
        assert "jvp" not in p.rules and "vjp_jvp" not in p.rules
    for rule, params in _rules(p).items():
        fn = p.rules.get(rule)
        assert fn is not None, f"{p.name} has no {rule} rule"
        assert fn.__name__ == f"{p.name}_{rule}"
        assert _convention(fn) == params, f"{p.name}_{rule}({_convention(fn)}) is not ({params})"
    for (rule, layout), fn in p.overrides.items():
        assert layout in LAYOUTS
        if rule in CONVENTION:
            assert _convention(fn) == CONVENTION[rule], (p.name, rule, layout)


# ---- the generated source -----------------------------------------------------------------

def _sources():
    yield "interp", _codegen.generate()
    if "batched" in inspect.signature(_codegen.generate).parameters:
        yield "batched", _codegen.generate(batched=True)


def _scalar_head(fn):
    """The flat interpreters' scalar fast path in `fn` (the `if _SCALAR[op] ...` block at the
    head of its loop), or None."""
    for node in ast.walk(fn):
        if isinstance(node, ast.If) and "_SCALAR[op]" in ast.unparse(node.test):
            return node
    return None


def _dispatched_opcodes(fn):
    """The constants k of every `op == k` test in an interpreter function (or block)."""
    found = []
    for node in ast.walk(fn):
        if (isinstance(node, ast.Compare) and isinstance(node.left, ast.Name)
                and node.left.id == "op" and len(node.ops) == 1
                and isinstance(node.ops[0], ast.Eq)
                and isinstance(node.comparators[0], ast.Constant)):
            found.append(node.comparators[0].value)
    return found


@pytest.mark.parametrize("name, source", list(_sources()), ids=lambda v: v if len(v) < 20 else "")
def test_generated_source_dispatches_every_opcode_once(name, source):
    tree = ast.parse(source)
    functions = {f.name: f for f in tree.body if isinstance(f, ast.FunctionDef)}
    for fn in INTERPRETERS:
        assert fn in functions, f"{name}: no interpreter function {fn}"
        counts = collections.Counter(_dispatched_opcodes(functions[fn]))
        head = _scalar_head(functions[fn])
        if head is not None:
            # the scalar fast path runs one-element elementwise entries (and those of the
            # structural primitives with one-element forms), each opcode once; the general
            # chain after it dispatches every opcode once
            scalar = collections.Counter(_dispatched_opcodes(head))
            assert sorted(scalar) == sorted(p.opcode for p in PRIMS
                                            if p.elementwise or p.scalar), (name, fn)
            assert set(scalar.values()) == {1}, (name, fn, scalar)
            counts -= scalar
        assert sorted(counts) == list(range(len(PRIMS))), (name, fn, sorted(counts))
        assert set(counts.values()) == {1}, (name, fn, {k: v for k, v in counts.items() if v > 1})
    # Each elementwise primitive gets its four loops, each kernel primitive is called by name.
    for p in ELEMENTWISE:
        for rule in CONVENTION:
            assert f"{p.name}_{rule}" in functions, (name, p.name, rule)
    for p in KERNELS:
        for rule in _rules(p):
            assert f"{p.name}_{rule}" in functions, (name, p.name, rule)
            assert f"{p.name}_{rule}(" in source, (name, p.name, rule)
        if p.linear:    # the derived rules: the forward on tangents, the VJP on their adjoints
            assert f"{p.name}_fwd(T[d]," in source and f"{p.name}_vjp(V, TG[d]," in source


# ---- the compiled forward agrees with the eager (numpy) forward ---------------------------

def _forward(m, E, FC, IP, S, V):
    """Run the forward interpreter over a whole tape (whatever its range arguments)."""
    params = inspect.signature(m.forward.py_func).parameters
    extra = (0, len(E)) if len(params) > 5 else ()
    m.forward(E, FC, IP, S, V, *extra)


def _run_entry(m, p, operands, c0, c1, out_size, dtype):
    """A one-entry tape: operand slots, then the output slot; returns the compiled output."""
    sizes = [o.size for o in operands] + [out_size]
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    S = np.stack([offsets, np.array(sizes, np.int64)], axis=1)
    slots = list(range(len(operands))) + [-1] * (3 - len(operands))
    E = np.array([[p.opcode, *slots, len(operands), 0, 0, 0]], np.int64)
    FC = np.array([[c0, c1]], np.float64)
    IP = np.zeros(0, np.int64)
    V = np.zeros(sum(sizes), dtype)
    for o, off in zip(operands, offsets):
        V[off:off + o.size] = o.ravel()
    _forward(m, E, FC, IP, S, V)
    return V[offsets[-1]:]


inf = math.inf
# (primitive, c0, c1, domain of x or of (a, b)); every elementwise primitive appears.
UNARY_CASES = [
    ("copy", 0.0, 0.0, (-5, 5)),
    ("neg", 0.0, 0.0, (-5, 5)),
    ("add_const", 1.5, 0.0, (-5, 5)),
    ("mul_const", -2.5, 0.0, (-5, 5)),
    ("rsub_const", 0.75, 0.0, (-5, 5)),
    ("div_const", 3.0, 0.0, (-5, 5)),
    ("rdiv_const", 2.0, 0.0, (0.1, 5)),
    ("square", 2.0, 0.0, (-5, 5)),
    ("cube", 3.0, 0.0, (-5, 5)),
    ("pow_const", 3.0, 0.0, (-3, 3)),
    ("pow_const", 2.5, 0.0, (0, 5)),
    ("pow_const", -1.5, 0.0, (0.1, 5)),
    ("pow_const", 0.0, 0.0, (-3, 3)),
    ("rpow_const", 2.0, 0.0, (-10, 10)),
    ("rpow_const", 0.5, 0.0, (-10, 10)),
    ("abs", 0.0, 0.0, (-5, 5)),
    ("exp", 0.0, 0.0, (-30, 30)),
    ("log", 0.0, 0.0, (1e-3, 1e3)),
    ("log1p", 0.0, 0.0, (-0.99, 10)),
    ("expm1", 0.0, 0.0, (-5, 5)),
    ("sqrt", 0.0, 0.0, (0, 100)),
    ("sin", 0.0, 0.0, (-10, 10)),
    ("cos", 0.0, 0.0, (-10, 10)),
    ("tan", 0.0, 0.0, (-1.4, 1.4)),
    ("tanh", 0.0, 0.0, (-10, 10)),
    ("sigmoid", 0.0, 0.0, (-40, 40)),
    ("relu", 0.0, 0.0, (-5, 5)),
    ("clip", -0.5, 0.5, (-2, 2)),
    ("clip", -inf, 0.2, (-2, 2)),
    ("clip", 1.0, 0.0, (-2, 2)),     # lo > hi: hi everywhere (PyTorch)
    ("floor", 0.0, 0.0, (-5, 5)),
    ("ceil", 0.0, 0.0, (-5, 5)),
    ("trunc", 0.0, 0.0, (-5, 5)),
    ("rint", 0.0, 0.0, (-5, 5)),
    ("arcsin", 0.0, 0.0, (-1, 1)),
    ("arccos", 0.0, 0.0, (-1, 1)),
    ("arctan", 0.0, 0.0, (-10, 10)),
    ("arcsinh", 0.0, 0.0, (-10, 10)),
    ("arccosh", 0.0, 0.0, (1, 10)),
    ("arctanh", 0.0, 0.0, (-1, 1)),
    ("sinh", 0.0, 0.0, (-10, 10)),
    ("cosh", 0.0, 0.0, (-10, 10)),
    ("log2", 0.0, 0.0, (1e-3, 1e3)),
    ("log10", 0.0, 0.0, (1e-3, 1e3)),
    ("sinc", 0.0, 0.0, (-0.5, 0.5)),   # float32: numpy rounds pi x; small x keeps it in 2 ulp
    ("nan_to_num", 7.0, -7.0, (-5, 5)),
]
BINARY_CASES = [
    ("add", (-5, 5), (-5, 5)),
    ("sub", (-5, 5), (-5, 5)),
    ("mul", (-5, 5), (-5, 5)),
    ("div", (-5, 5), (0.1, 5)),
    ("pow", (0.01, 5), (-3, 3)),
    ("maximum", "ints", "ints"),
    ("minimum", "ints", "ints"),
    ("gt", "ints", "ints"),
    ("ge", "ints", "ints"),
    ("lt", "ints", "ints"),
    ("le", "ints", "ints"),
    ("eq", "ints", "ints"),
    ("ne", "ints", "ints"),
    ("floor_divide", (-5, 5), (0.1, 5)),
    ("arctan2", (-5, 5), (-5, 5)),
    ("hypot", (-5, 5), (-5, 5)),
    ("logaddexp", (-30, 30), (-30, 30)),
    ("logaddexp2", (-30, 30), (-30, 30)),
    ("fmax", "ints", "ints"),
    ("fmin", "ints", "ints"),
    ("remainder", (-5, 5), (-5, 5)),
    ("fmod", (-5, 5), (-5, 5)),
    ("copysign", (-5, 5), (-5, 5)),
    ("heaviside", "ints", (-5, 5)),
]


def test_every_elementwise_prim_has_a_forward_case():
    covered = {c[0] for c in UNARY_CASES} | {c[0] for c in BINARY_CASES}
    assert covered == {p.name for p in ELEMENTWISE}


def _draw(rng, domain, n, dtype):
    if domain == "ints":   # small integers: ties and equalities occur
        return rng.integers(-2, 3, n).astype(dtype)
    lo, hi = domain
    return rng.uniform(lo, hi, n).astype(dtype)


def _assert_close_ulps(actual, expected, dtype, maxulp, what):
    expected = np.asarray(expected)
    assert actual.dtype == dtype
    if expected.dtype == bool:
        expected = expected.astype(dtype)
    assert expected.dtype == dtype, f"{what}: numpy forward gives {expected.dtype}"
    np.testing.assert_array_equal(np.isnan(actual), np.isnan(expected.ravel()), err_msg=what)
    ok = ~np.isnan(actual)
    np.testing.assert_array_max_ulp(actual[ok], expected.ravel()[ok], maxulp=maxulp, dtype=dtype)


# float64 differences of a couple of ulps come from different libm implementations (numpy's
# SIMD loops vs LLVM/libm); float32 ones also from numba evaluating float32 input with float64
# constants (a more accurate result rounded once).
MAXULP = {np.float64: 2, np.float32: 2}


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("name, c0, c1, domain", UNARY_CASES,
                         ids=[f"{c[0]}[{c[1]:g},{c[2]:g}]" for c in UNARY_CASES])
def test_unary_forward_matches_numpy(interp, name, c0, c1, domain, dtype):
    p = BY_NAME[name]
    x = _draw(rng_for(f"{name}{c0}{c1}"), domain, 257, dtype)
    x[:3] = np.clip([0.0, -0.0, 1.0], *domain)   # a few exact points inside the domain
    expected = p.numpy(x, c0, c1)
    actual = _run_entry(interp, p, [x], c0, c1, x.size, dtype)
    _assert_close_ulps(actual, expected, dtype, MAXULP[dtype], name)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("broadcast", [None, "a", "b"])
@pytest.mark.parametrize("name, da, db", BINARY_CASES, ids=[c[0] for c in BINARY_CASES])
def test_binary_forward_matches_numpy(interp, name, da, db, broadcast, dtype):
    """Including an operand of size 1, which the compiled loop broadcasts inline."""
    p = BY_NAME[name]
    rng = rng_for(f"{name}{broadcast}")
    a = _draw(rng, da, 1 if broadcast == "a" else 129, dtype)
    b = _draw(rng, db, 1 if broadcast == "b" else 129, dtype)
    expected = np.asarray(p.numpy(a, b))
    actual = _run_entry(interp, p, [a, b], 0.0, 0.0, expected.size, dtype)
    _assert_close_ulps(actual, expected, dtype, MAXULP[dtype], name)


SPECIAL = np.array([0.0, -0.0, 1.0, -1.0, inf, -inf, np.nan, 1e300, -1e300, 5e-324])


@pytest.mark.parametrize("name, c0, c1", [
    ("copy", 0, 0), ("neg", 0, 0), ("abs", 0, 0), ("relu", 0, 0), ("exp", 0, 0),
    ("expm1", 0, 0), ("tanh", 0, 0), ("sigmoid", 0, 0), ("clip", -0.5, 0.5),
    ("clip", -inf, inf), ("clip", 1.0, 0.0), ("add_const", 1.0, 0), ("mul_const", 2.0, 0),
    ("square", 2.0, 0), ("cube", 3.0, 0), ("pow_const", 0.0, 0),
    ("arcsin", 0, 0), ("arccos", 0, 0), ("arctan", 0, 0), ("arcsinh", 0, 0), ("arccosh", 0, 0),
    ("arctanh", 0, 0), ("sinh", 0, 0), ("cosh", 0, 0), ("log2", 0, 0), ("log10", 0, 0),
    ("sinc", 0, 0), ("nan_to_num", 7.0, -7.0),
])
def test_unary_special_values(interp, name, c0, c1):
    """Infinities, NaN (passes through relu and clip), signed zeros, extremes."""
    p = BY_NAME[name]
    with np.errstate(all="ignore"):
        expected = p.numpy(SPECIAL, c0, c1)
    actual = _run_entry(interp, p, [SPECIAL.copy()], c0, c1, SPECIAL.size, np.float64)
    _assert_same_specials(actual, expected, name)


def _assert_same_specials(actual, expected, what):
    """NaN, infinities and signed zeros exactly; finite values within 2 ulp (libm)."""
    np.testing.assert_array_equal(np.isnan(actual), np.isnan(expected), err_msg=what)
    exact = np.isinf(expected) | (expected == 0)
    np.testing.assert_array_equal(actual[exact], expected[exact], err_msg=what)
    np.testing.assert_array_equal(np.signbit(actual[exact]), np.signbit(expected[exact]),
                                  err_msg=f"{what}: sign of zero")
    finite = np.isfinite(expected) & ~exact
    np.testing.assert_array_max_ulp(actual[finite], expected[finite], maxulp=2)


@pytest.mark.parametrize("name", ["maximum", "minimum", "add", "mul", "sub", "arctan2", "hypot",
                                  "logaddexp", "logaddexp2", "fmax", "fmin", "remainder", "fmod",
                                  "copysign", "heaviside"])
def test_binary_special_values(interp, name):
    p = BY_NAME[name]
    a, b = np.meshgrid(SPECIAL, SPECIAL)
    a, b = a.ravel(), b.ravel()
    with np.errstate(all="ignore"):
        expected = p.numpy(a, b)
    actual = _run_entry(interp, p, [a, b], 0.0, 0.0, a.size, np.float64)
    _assert_same_specials(actual, expected, name)
