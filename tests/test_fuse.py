"""The fused tier of vmap (`_fuse`): a tape compiled into one loop body per point.

Each case runs `vmap(fn, fuse=True)` and checks it against the Python loop of the unbatched
function (as test_vmap does) and against the interpreter (`fuse=False`), and checks that the
tape was really fused (or, for what the tier does not handle, that it was not, and that the
interpreter's results come back). Then the "auto" policy, and the generated source itself.
"""
import numpy as np
import pytest

import tapegrad as tg
from tapegrad.batch import fuse as _fuse
from tapegrad.batch.plan import plans_of

from conftest import rng_for
from test_vmap import (assert_same, check, lj_configurations, lj_energy, lj_forces_by_hand,
                       mlp, mlp_input_grad_by_hand, mlp_weights, piecewise, alternating)


def tiers(vmapped):
    """The state of every plan of the vmapped function's tapes: a kernel, a Candidate not yet
    compiled, or False (cannot be fused)."""
    states = []
    for tapes in vmapped._traced.cache.values():
        for tape in tapes:
            states += [plan.state.fused for plan in plans_of(tape)]
    return states


def fused(vmapped):
    return [s for s in tiers(vmapped) if isinstance(s, _fuse.Fused)]


def check_fused(fn, *args, in_axes=0, rtol=1e-12, atol=1e-12, exact=False):
    """vmap(fn, fuse=True) against the loop and the interpreter; the tape must be fused."""
    vmapped = tg.vmap(fn, in_axes=in_axes, fuse=True)
    got = vmapped(*args)
    assert fused(vmapped), f"not fused: {tiers(vmapped)}"
    interpreted = tg.vmap(fn, in_axes=in_axes, fuse=False)(*args)
    assert_same(got, interpreted, rtol=rtol, atol=atol, exact=exact)
    check(fn, *args, in_axes=in_axes, rtol=rtol, atol=atol, exact=exact, fuse=True)
    return got


# ---- workloads ----------------------------------------------------------------------------------

def rosenbrock(x):
    return tg.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


@pytest.mark.parametrize("transform", ["value", "grad", "value_and_grad"])
def test_rosenbrock(transform):
    fn = rosenbrock if transform == "value" else getattr(tg, transform)(rosenbrock)
    X = rng_for(f"fuse rosenbrock {transform}").uniform(-1.5, 1.5, (1500, 10))
    check_fused(fn, X, rtol=1e-13, atol=1e-12)


def test_mlp_gradient():
    rng = rng_for("fuse mlp")
    weights = mlp_weights(rng)
    X = rng.standard_normal((700, 8))
    g = check_fused(tg.grad(lambda x: mlp(x, *weights)), X, rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(g, mlp_input_grad_by_hand(X, *weights), rtol=1e-12, atol=1e-12)


def test_mlp_gradient_with_respect_to_shared_weights():
    """An argument with in_axes None that is differentiated: its gradient is per point."""
    rng = rng_for("fuse mlp weights")
    weights = mlp_weights(rng)
    X = rng.standard_normal((300, 8))
    check_fused(tg.grad(mlp, argnums=(0, 1, 4)), X, *weights, in_axes=(0, None, None, None, None),
                rtol=1e-13, atol=1e-14)


def test_lennard_jones_forces():
    X = lj_configurations(rng_for("fuse lj"), 400)
    forces = -check_fused(tg.grad(lj_energy), X, rtol=1e-11, atol=1e-9)
    want = np.stack([lj_forces_by_hand(x) for x in X])
    np.testing.assert_allclose(forces, want, rtol=1e-9, atol=1e-9)


def zoo(x):
    """Every elementwise rule and the structural kernels that fuse, on one point."""
    a, b = x[:3], x[3:6]
    m = tg.reshape(x[:6], (2, 3))
    parts = [
        tg.abs(a) * b, tg.relu(b) + tg.clip(a, -0.5, 0.5), tg.maximum(a, b), tg.minimum(a, 0.2 * b),
        tg.sqrt(a * a + 1.0), tg.sin(a) * tg.cos(b), tg.tan(0.3 * a), tg.exp(a) - tg.expm1(b),
        tg.log(a * a + 0.5) + tg.log1p(b * b), tg.sigmoid(a) * tg.tanh(b),
        tg.abs(b) ** 2.5 + b ** 3, tg.abs(a) ** 1.5, 2.0 ** a, (tg.abs(a) + 0.5) ** b,
        a / (b * b + 1.0), 1.0 / (a * a + 2.0), 3.0 - a,
        -b, tg.mean(m, 0), tg.sum(m, 1), tg.mean(m * m, 1), tg.reshape(m @ tg.transpose(m), (-1,)),
        tg.cat([a[::-1], b[[0, 0, 2]]]), tg.reshape(tg.stack([a, b], 1), (-1,)),
        tg.reshape(m.T, (-1,)) * x[6],
    ]
    return tg.sum(tg.cat(parts) * tg.cat(parts)) + x[7] * x[8]


@pytest.mark.parametrize("transform", ["value", "grad", "value_and_grad"])
def test_every_fusable_rule(transform):
    X = rng_for(f"fuse zoo {transform}").standard_normal((257, 9))
    X[:5, :6] = 0.0              # abs, relu, clip and max at their kinks, ties of maximum
    X[5, 3:6] = X[5, :3]
    fn = zoo if transform == "value" else getattr(tg, transform)(zoo)
    check_fused(fn, X, rtol=1e-12, atol=1e-12)


def test_vector_outputs_of_a_plain_function():
    def f(x, y):
        return {"s": tg.sin(x) * y, "t": tg.sum(x * y)}
    rng = rng_for("fuse plain")
    check_fused(f, rng.standard_normal((100, 4)), rng.standard_normal(4), in_axes=(0, None))


@pytest.mark.parametrize("transform", ["value", "grad"])
def test_guards_checked_per_point(transform):
    fn = piecewise if transform == "value" else tg.grad(piecewise)
    X = alternating(301, rng_for(f"fuse guards {transform}"))
    check_fused(fn, X, exact=True)


def test_product_with_zero_factors():
    """prod's kernel only multiplies: it fuses, and reverse mode through the products gives
    the product of the other factors where one or two factors are zero."""
    X = rng_for("fuse prod").standard_normal((60, 4))
    X[:20, 1] = 0.0
    X[:10, 2] = 0.0
    check_fused(tg.grad(lambda x: tg.prod(x) + tg.sum(tg.prod(tg.reshape(x, (2, 2)), 0))), X)


# ---- what stays with the interpreter ------------------------------------------------------------

@pytest.mark.parametrize("name,f", [
    ("max", lambda x: tg.max(x) * x[0]),
    ("where", lambda x: tg.sum(tg.where(x > 0.0, x ** 2, -x))),
])
def test_data_dependent_kernels_stay_interpreted(name, f):
    vmapped = tg.vmap(tg.grad(f), fuse=True)
    X = rng_for(f"unfused {name}").standard_normal((50, 4))
    assert_same(vmapped(X), tg.vmap(tg.grad(f), fuse=False)(X))
    assert tiers(vmapped) == [False]


@pytest.mark.parametrize("jac", ["jacrev", "jacfwd"])
def test_per_point_jacobians_in_both_modes(jac):
    """jacrev: one reverse sweep per output element; jacfwd: one tangent sweep per input
    element; each in one body."""
    def f(x):
        return tg.stack([tg.sum(tg.tanh(x) * x), x[0] * x[1] - tg.exp(x[2]), tg.sqrt(x[3] ** 2)])
    X = rng_for(f"fuse {jac}").standard_normal((200, 5))
    transform = getattr(tg, jac)
    check_fused(transform(f), X, rtol=1e-13, atol=1e-14)
    check_fused(transform(lambda x, y: tg.sin(x) * y[0] + y[1], argnums=(0, 1)), X[:, :3],
                X[:, 3:], rtol=1e-13, atol=1e-14)
    check_fused(transform(lambda x, y: tg.sin(x) * y[0], argnums=1), X[:, :3], X[0, 3:],
                in_axes=(0, None), rtol=1e-13, atol=1e-14)


def test_float32_and_second_order_schedules_stay_interpreted():
    X = rng_for("unfused f32").standard_normal((40, 10))
    for fn, args in [(tg.grad(rosenbrock), (X.astype(np.float32),)),
                     (tg.hessian(rosenbrock), (X,))]:
        vmapped = tg.vmap(fn, fuse=True)
        assert_same(vmapped(*args), tg.vmap(fn, fuse=False)(*args))
        assert tiers(vmapped) == [False]


# ---- the "auto" policy --------------------------------------------------------------------------

def test_auto_interprets_until_the_compile_would_have_paid(monkeypatch):
    monkeypatch.setattr(_fuse.Candidate, "cached", lambda self: False)
    monkeypatch.setattr(_fuse.Candidate, "compile_estimate_s", lambda self: 1e9)
    scale = 1.0 + rng_for("auto policy").random()     # a tape of its own
    f = tg.grad(lambda x: tg.sum(tg.sin(x) * scale))
    vmapped = tg.vmap(f)
    X = rng_for("auto X").standard_normal((64, 3))
    for _ in range(3):
        vmapped(X)
    (state,) = tiers(vmapped)
    assert isinstance(state, _fuse.Candidate)
    monkeypatch.setattr(_fuse.Candidate, "compile_estimate_s", lambda self: 0.0)
    assert_same(vmapped(X), np.cos(X) * scale)
    assert len(fused(vmapped)) == 1


def test_fuse_false_never_fuses_and_a_bad_value_is_refused():
    vmapped = tg.vmap(tg.grad(rosenbrock), fuse=False)
    vmapped(np.ones((10, 4)))
    assert tiers(vmapped) == [None]          # never looked at
    with pytest.raises(ValueError, match="fuse must be"):
        tg.vmap(rosenbrock, fuse="yes")


def test_capture_call_constants_are_not_baked_in():
    """With capture='call' closed-over arrays are re-read at every call: a fused body, which
    holds them as literals, would go stale."""
    w = np.array([1.0, 2.0, 3.0])
    g = tg.grad(lambda x: tg.sum(x * w), capture="call")
    vmapped = tg.vmap(g, fuse=True)
    X = np.zeros((5, 3))
    assert_same(vmapped(X), np.tile(w, (5, 1)))
    w[:] = [4.0, 5.0, 6.0]
    assert_same(vmapped(X), np.tile(w, (5, 1)))
    for transform in (tg.jacrev, tg.jacfwd, tg.hessian):       # vmap keeps their capture too
        f = transform(lambda x: tg.sum(x * x * w), capture="call")
        vmapped = tg.vmap(f)
        w[:] = [1.0, 2.0, 3.0]
        first = vmapped(X + 1.0)
        w *= 4.0
        assert_same(vmapped(X + 1.0), 4.0 * first)


# ---- the generated source -----------------------------------------------------------------------

def test_source_is_straight_line_code_with_one_call_site_per_math_function():
    weights = mlp_weights(rng_for("fuse source"))
    f = tg.grad(lambda x: mlp(x, *weights))
    vmapped = tg.vmap(f, fuse=False)
    X = np.zeros((3, 8))
    vmapped(X)
    (tape,) = next(iter(vmapped._traced.cache.values()))
    (plan,) = plans_of(tape)
    text = _fuse.source(tape, tape.V0, plan)
    assert text.count("_vm.tanh(") == 1          # 16 hidden units, one loop
    assert "if " not in text.replace(" if ", "")  # no statement-level branches


def test_too_many_statements_is_not_fusable(monkeypatch):
    monkeypatch.setattr(_fuse, "MAX_STATEMENTS", 50)
    vmapped = tg.vmap(tg.grad(rosenbrock), fuse=True)
    X = rng_for("fuse limit").standard_normal((20, 30))
    assert_same(vmapped(X), tg.vmap(tg.grad(rosenbrock), fuse=False)(X))
    assert tiers(vmapped) == [False]


def test_the_kernel_checks_its_arrays():
    """The generated loops index with the counts they were written for: a wrong shape, dtype
    or layout is refused before it reaches them."""
    f = tg.vmap(tg.grad(rosenbrock), fuse=True)
    f(np.ones((4, 3)))
    (kernel,) = fused(f)
    X, Y, OK = np.ones((4, 3)), np.empty((4, 3)), np.empty(4, bool)
    kernel(X, Y, OK)
    np.testing.assert_array_equal(Y, tg.vmap(tg.grad(rosenbrock), fuse=False)(X))
    for bad in [(np.ones((4, 2)), Y, OK), (X, np.empty((4, 2)), OK), (X, Y, np.empty(3, bool)),
                (X.astype(np.float32), Y, OK), (np.ones((3, 4)).T, Y, OK),
                (X, Y, np.empty(4))]:
        with pytest.raises(ValueError, match="fused kernel"):
            kernel(*bad)


def test_a_failure_of_the_fused_tier_falls_back_to_the_interpreter(monkeypatch):
    def broken(*args):
        raise RuntimeError("simulated defect")
    monkeypatch.setattr(_fuse, "source", broken)
    vmapped = tg.vmap(tg.grad(rosenbrock), fuse=True)
    X = rng_for("fuse broken").standard_normal((30, 4))
    with pytest.warns(RuntimeWarning, match="simulated defect"):
        got = vmapped(X)
    assert_same(got, tg.vmap(tg.grad(rosenbrock), fuse=False)(X))
    assert tiers(vmapped) == [False]


def test_special_constants_are_written_exactly():
    """Constants become literals of the generated source: signed zeros, infinities and NaN
    must keep their meaning (a bare -0.0 ** 2 would parse as -(0.0 ** 2))."""
    for value, text in [(1.5, "1.5"), (-1.5, "(-1.5)"), (-0.0, "(-0.0)"), (np.inf, "math.inf"),
                        (-np.inf, "(-math.inf)"), (np.nan, "math.nan"), (5e-324, "5e-324")]:
        assert _fuse._literal(value) == text
    c = np.array([-0.0, -np.inf, 0.5, 3.0])

    def f(x):
        return tg.sum(tg.maximum(x, c) * tg.minimum(x, 1.0) + (c[0] * x) ** 2.0)
    X = rng_for("fuse constants").standard_normal((40, 4))
    X[0] = 0.0
    check_fused(tg.value_and_grad(f), X, exact=True)
