"""Function transforms: grad, value_and_grad, vjp, jvp, jacrev, jacfwd, jacobian, hessian, hvp.

Every transform is checked against central finite differences and, when jax imports (with
x64), against JAX on the same functions: the table `SCALAR` (scalar functions: gradients and
Hessians) and `VECTOR` (jacobians, jvp, vjp). Each entry is written once against a namespace
`m`: plain numpy (the numpy protocol records on the tape), tapegrad's own namespace, or
`jax.numpy`. Results must match JAX's values and also its arrangement (pytree structure).
Then: composition, the number of sweeps each mode takes, errors, dtypes and threads.
"""
import collections
import functools
import threading

import numpy as np
import pytest

import tapegrad as tg
from tapegrad.core import pytree as _pytree
from tapegrad.core import sweep as _sweep
from tapegrad.core.codegen import assigns_first
from tapegrad.transforms import compiled as _compiled

from conftest import rng_for


# ---- helpers ------------------------------------------------------------------------------------

def leaves(tree):
    return _pytree.flatten(tree)[0]


def _perturbed(args, argnum, leaf_index, element, delta):
    arg_leaves, structure = _pytree.flatten(args[argnum])
    arg_leaves = [np.array(a, np.float64) for a in arg_leaves]
    arg_leaves[leaf_index][element] += delta
    new_arg = _pytree.unflatten(structure, [a if a.ndim else float(a) for a in arg_leaves])
    return args[:argnum] + (new_arg,) + args[argnum + 1:]


def fd_jacobian(f, args, argnum=0, eps=1e-6):
    """Central differences of f (any output tree) w.r.t. args[argnum] (any tree), arranged as
    JAX's jacobian: output tree of argument trees of blocks output shape + input shape."""
    out_leaves, out_structure = _pytree.flatten(f(*args))
    out_shapes = [np.shape(o) for o in out_leaves]
    arg_leaves, arg_structure = _pytree.flatten(args[argnum])
    blocks = [[np.zeros(o + np.shape(a)) for a in arg_leaves] for o in out_shapes]
    for k, a in enumerate(arg_leaves):
        for e in np.ndindex(np.shape(a)):
            plus = leaves(f(*_perturbed(args, argnum, k, e, eps)))
            minus = leaves(f(*_perturbed(args, argnum, k, e, -eps)))
            for j, (p, m) in enumerate(zip(plus, minus)):
                d = (np.asarray(p, np.float64) - np.asarray(m, np.float64)) / (2 * eps)
                blocks[j][k][(Ellipsis,) + e] = d
    rows = [_pytree.unflatten(arg_structure, row) for row in blocks]
    return _pytree.unflatten(out_structure, rows)


def assert_trees_close(actual, expected, rtol=1e-6, atol=1e-8):
    a, sa = _pytree.flatten(actual)
    e, se = _pytree.flatten(expected)
    assert sa == se, f"structure {_pytree.describe(sa)} != {_pytree.describe(se)}"
    for x, y in zip(a, e):
        assert np.shape(x) == np.shape(y)
        np.testing.assert_allclose(np.asarray(x, np.float64), np.asarray(y, np.float64),
                                   rtol=rtol, atol=atol)


def to_numpy(tree):
    """A JAX result as numpy (tuples, lists and dicts kept)."""
    import jax
    return jax.tree_util.tree_map(np.asarray, tree)


def to_jax(tree):
    import jax.numpy as jnp
    return _pytree.unflatten(_pytree.flatten(tree)[1],
                             [jnp.asarray(x) for x in _pytree.flatten(tree)[0]])


@pytest.fixture(scope="module")
def jax():
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    return jax


# ---- the tables ---------------------------------------------------------------------------------

_r = rng_for("test_transforms tables")
A = _r.standard_normal((8, 4))                       # data matrix of the logistic loss
LABELS = np.sign(_r.standard_normal(8))
X = _r.standard_normal((6, 3))                       # inputs of the MLP and the classifier
Y = _r.standard_normal((6, 2))
ONEHOT = np.eye(4)[_r.integers(0, 4, 6)]
WM = _r.standard_normal((3, 4))


def rosenbrock(m, x):
    return m.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


def logistic_loss(m, w):
    return m.mean(m.log1p(m.exp(-LABELS * (A @ w))))


def mlp(m, p):
    h = m.tanh(X @ p["W1"] + p["b1"])
    return m.mean((h @ p["W2"] + p["b2"] - Y) ** 2)


def softmax_cross_entropy(m, W):
    logits = X @ W
    top = m.max(logits, axis=1, keepdims=True)
    lse = top + m.log(m.sum(m.exp(logits - top), axis=1, keepdims=True))
    return -m.mean(m.sum(ONEHOT * (logits - lse), axis=1))


def logsumexp(m, x):
    top = m.max(x)
    return top + m.log(m.sum(m.exp(x - top)))


def norm(m, x):
    return m.sqrt(m.sum(x ** 2))


def products(m, x):
    return m.prod(x) + x[0] * x[1] * x[2] / (1.0 + x[3] ** 2)


def indexing(m, x):
    z = m.concatenate([x[:3], x[2:] ** 2])
    return m.sum(m.where(z > 0.5, z, 0.1 * z) * m.maximum(z, 0.3)) + x[-1] * x[0]


def two_arguments(m, x, y):
    return m.sum(m.sin(x) * y) + m.dot(x, y) ** 2 + m.sum(WM @ y)


def pytree_argument(m, p):
    return m.sum(p["a"] ** 2) * p["b"][0] + m.exp(p["b"][1]) * m.sum(p["a"])


def matvec(m, x):
    return m.sum(m.tanh(WM @ x)) + m.dot(x, x) * 0.5


def near(base, r, scale=0.05):
    """`base` with a small random perturbation (stays away from kinks)."""
    return base + scale * r.standard_normal(np.shape(base))


def _args(name):
    r = rng_for(name)
    return {
        "rosenbrock": lambda: (near(np.array([0.8, 1.1, -0.4, 0.3, 1.2]), r),),
        "logistic_loss": lambda: (r.standard_normal(4),),
        "mlp": lambda: ({"W1": 0.5 * r.standard_normal((3, 5)), "b1": 0.1 * r.standard_normal(5),
                         "W2": 0.5 * r.standard_normal((5, 2)), "b2": 0.1 * r.standard_normal(2)},),
        "softmax_cross_entropy": lambda: (r.standard_normal((3, 4)),),
        "logsumexp": lambda: (r.standard_normal(5),),
        "norm": lambda: (r.standard_normal(4),),
        "products": lambda: (near(np.array([1.2, -0.7, 0.9, 1.5]), r),),
        "indexing": lambda: (near(np.array([0.9, -0.7, 1.3, 0.15, 1.6]), r, 0.02),),
        "two_arguments": lambda: (0.5 * r.standard_normal(4), 0.5 * r.standard_normal(4)),
        "pytree_argument": lambda: ({"a": r.standard_normal(3), "b": (0.7, -0.3)},),
        "matvec": lambda: (r.standard_normal(4),),
    }[name]()


SCALAR = {f.__name__: f for f in (rosenbrock, logistic_loss, mlp, softmax_cross_entropy,
                                   logsumexp, norm, products, indexing, two_arguments,
                                   pytree_argument, matvec)}
# each function runs as written with plain numpy (np.* dispatch to tapegrad on traced values),
# and with tapegrad's namespace for the ones whose names tapegrad shares with numpy
NAMESPACES = {"numpy": np, "tapegrad": tg}


def argnums_of(name):
    return (0, 1) if name == "two_arguments" else 0


def bind(f, m):
    return functools.partial(f, m)


@pytest.mark.parametrize("ns", NAMESPACES)
@pytest.mark.parametrize("name", SCALAR)
def test_grad_matches_finite_differences(name, ns):
    f, args = bind(SCALAR[name], NAMESPACES[ns]), _args(name)
    for argnum in np.atleast_1d(argnums_of(name)):
        argnum = int(argnum)
        expected = fd_jacobian(lambda *a: SCALAR[name](np, *a), args, argnum)
        assert_trees_close(tg.grad(f, argnums=argnum)(*args), expected, rtol=1e-5, atol=1e-7)
        value, grads = tg.value_and_grad(f, argnums=argnum)(*args)
        assert value == pytest.approx(SCALAR[name](np, *args), rel=1e-13)
        assert_trees_close(grads, expected, rtol=1e-5, atol=1e-7)
        # jacobians of a scalar function are gradients too
        assert_trees_close(tg.jacrev(f, argnums=argnum)(*args), expected, rtol=1e-5, atol=1e-7)
        assert_trees_close(tg.jacfwd(f, argnums=argnum)(*args), expected, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", SCALAR)
def test_hessian_and_hvp_match_finite_differences(name):
    f, args = bind(SCALAR[name], np), _args(name)
    argnum = 0
    g = tg.grad(f, argnums=argnum)
    expected = fd_jacobian(lambda *a: g(*a), args, argnum, eps=1e-5)
    H = tg.hessian(f, argnums=argnum)(*args)
    assert_trees_close(H, expected, rtol=1e-5, atol=1e-6)
    assert_trees_close(tg.jacfwd(tg.jacrev(f, argnums=argnum), argnums=argnum)(*args), H,
                       rtol=1e-10, atol=1e-12)
    if name == "two_arguments":
        return
    v = _pytree.unflatten(_pytree.flatten(args[0])[1],
                          [np.ones_like(np.asarray(a)) * 0.5 for a in leaves(args[0])])
    x = args[0]
    hv = tg.hvp(f, x, v)
    v_plus = jax_free_add(x, v, 1e-5)
    v_minus = jax_free_add(x, v, -1e-5)
    fd_hv = _pytree.unflatten(_pytree.flatten(x)[1],
                              [(np.asarray(p) - np.asarray(m)) / 2e-5
                               for p, m in zip(leaves(g(v_plus)), leaves(g(v_minus)))])
    assert_trees_close(hv, fd_hv, rtol=1e-5, atol=1e-6)


def jax_free_add(x, v, scale):
    return _pytree.unflatten(_pytree.flatten(x)[1],
                             [np.asarray(a) + scale * np.asarray(b)
                              if np.ndim(a) else float(a + scale * b)
                              for a, b in zip(leaves(x), leaves(v))])


@pytest.mark.parametrize("name", SCALAR)
def test_scalar_functions_match_jax(jax, name):
    import jax.numpy as jnp
    args = _args(name)
    f, fj = bind(SCALAR[name], np), bind(SCALAR[name], jnp)
    argnums = argnums_of(name)
    jargs = to_jax(args)
    jvalue, jgrads = jax.jit(jax.value_and_grad(fj, argnums=argnums))(*jargs)
    assert_trees_close(tg.grad(f, argnums=argnums)(*args), to_numpy(jgrads), rtol=1e-10,
                       atol=1e-12)
    value, grads = tg.value_and_grad(f, argnums=argnums)(*args)
    assert value == pytest.approx(float(jvalue), rel=1e-12)
    assert_trees_close(grads, to_numpy(jgrads), rtol=1e-10, atol=1e-12)
    assert_trees_close(tg.hessian(f, argnums=argnums)(*args),
                       to_numpy(jax.jit(jax.hessian(fj, argnums=argnums))(*jargs)), rtol=1e-9,
                       atol=1e-11)
    if name != "two_arguments":
        v = jax.tree_util.tree_map(lambda a: np.full(np.shape(a), 0.3), args[0])
        _, jhv = jax.jit(lambda x, v: jax.jvp(jax.grad(fj), (x,), (v,)))(jargs[0], to_jax(v))
        assert_trees_close(tg.hvp(f, args[0], v), to_numpy(jhv), rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("name", ["rosenbrock", "mlp", "logistic_loss", "two_arguments"])
def test_float32_inputs_give_float32_results(jax, name):
    import jax.numpy as jnp
    args64 = _args(name)
    args32 = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float32), args64)
    f = bind(SCALAR[name], np)
    argnums = argnums_of(name)
    g32 = tg.grad(f, argnums=argnums)(*args32)
    assert all(np.asarray(x).dtype == np.float32 for x in leaves(g32))
    # as in JAX: float32 arguments get float32 gradients and Hessians, even where float64 data
    # (the closed-over A, X, WM) promotes the computation and the value to float64
    value, _ = tg.value_and_grad(f, argnums=argnums)(*args32)
    assert np.asarray(value).dtype == (np.float32 if name == "rosenbrock" else np.float64)
    assert all(h.dtype == np.float32 for h in leaves(tg.hessian(f, argnums=argnums)(*args32)))
    g64 = tg.grad(f, argnums=argnums)(*args64)
    assert_trees_close(g32, g64, rtol=2e-4, atol=2e-4)
    jg32 = jax.jit(jax.grad(bind(SCALAR[name], jnp), argnums=argnums))(*to_jax(args32))
    assert_trees_close(g32, to_numpy(jg32), rtol=2e-4, atol=2e-4)


# ---- vector-valued functions: jacobians, jvp, vjp ------------------------------------------------

def tanh_layer(m, x):
    return m.tanh(WM @ x)


def softmax(m, x):
    e = m.exp(x - m.max(x))
    return e / m.sum(e)


def pieces(m, x):
    return m.concatenate([x[:2] * x[1:3], m.sin(x)])


def tree_output(m, x):
    return {"square": x ** 2, "pair": (m.sum(x), x[0] * x)}


def matrix_input(m, W):
    return m.tanh(W @ np.array([0.5, -1.0, 2.0, 0.1]))


def two_in_two_out(m, x, y):
    return (x * y[:3], m.sum(m.exp(x)) * y)


VECTOR = {f.__name__: f for f in (tanh_layer, softmax, pieces, tree_output, matrix_input,
                                   two_in_two_out)}


def _vector_args(name):
    r = rng_for(name)
    if name == "matrix_input":
        return (r.standard_normal((3, 4)),)
    if name == "two_in_two_out":
        return (r.standard_normal(3), r.standard_normal(4))
    return (r.standard_normal(4),)


@pytest.mark.parametrize("mode", ["rev", "fwd"])
@pytest.mark.parametrize("name", VECTOR)
def test_jacobians_match_finite_differences(name, mode):
    f, args = bind(VECTOR[name], np), _vector_args(name)
    for argnum in range(len(args)):
        expected = fd_jacobian(f, args, argnum)
        J = tg.jacobian(f, argnums=argnum, mode=mode)(*args)
        assert_trees_close(J, expected, rtol=1e-6, atol=1e-8)
    if len(args) == 2:           # argnums=(0, 1): output tree of (d/dx, d/dy) pairs
        both = tg.jacobian(f, argnums=(0, 1), mode=mode)(*args)
        pairs = zip(leaves(fd_jacobian(f, args, 0)), leaves(fd_jacobian(f, args, 1)))
        expected = _pytree.unflatten(_pytree.flatten(f(*args))[1], list(pairs))
        assert_trees_close(both, expected, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("name", VECTOR)
def test_jvp_and_vjp_match_finite_differences(name):
    f, args = bind(VECTOR[name], np), _vector_args(name)
    r = rng_for(name + " directions")
    tangents = tuple(r.standard_normal(np.shape(a)) for a in args)
    out, tangent_out = tg.jvp(f, args, tangents)
    assert_trees_close(out, f(*args), rtol=1e-14)
    eps = 1e-6
    plus = f(*(a + eps * t for a, t in zip(args, tangents)))
    minus = f(*(a - eps * t for a, t in zip(args, tangents)))
    fd = _pytree.unflatten(_pytree.flatten(plus)[1],
                           [(p - m) / (2 * eps) for p, m in zip(leaves(plus), leaves(minus))])
    assert_trees_close(tangent_out, fd, rtol=1e-6, atol=1e-8)

    out, pullback = tg.vjp(f, *args)
    assert_trees_close(out, f(*args), rtol=1e-14)
    cotangent = _pytree.unflatten(_pytree.flatten(out)[1],
                                  [r.standard_normal(np.shape(o)) for o in leaves(out)])
    grads = pullback(cotangent)
    assert isinstance(grads, tuple) and len(grads) == len(args)
    for k in range(len(args)):
        J = fd_jacobian(f, args, k)
        expected = sum(np.tensordot(c, j, axes=np.ndim(c))
                       for c, j in zip(leaves(cotangent), leaves(J)))
        np.testing.assert_allclose(grads[k], expected, rtol=1e-6, atol=1e-8)
    # <cotangent, J t> == <J^T cotangent, t>
    lhs = sum(np.sum(c * t) for c, t in zip(leaves(cotangent), leaves(tangent_out)))
    rhs = sum(np.sum(g * t) for g, t in zip(grads, tangents))
    assert lhs == pytest.approx(rhs, rel=1e-10)


@pytest.mark.parametrize("name", VECTOR)
def test_vector_functions_match_jax(jax, name):
    import jax.numpy as jnp
    args = _vector_args(name)
    f, fj = bind(VECTOR[name], np), bind(VECTOR[name], jnp)
    jargs = to_jax(args)
    argnums = tuple(range(len(args))) if len(args) > 1 else 0
    for ours, theirs in ((tg.jacrev, jax.jacrev), (tg.jacfwd, jax.jacfwd)):
        assert_trees_close(ours(f, argnums=argnums)(*args),
                           to_numpy(jax.jit(theirs(fj, argnums=argnums))(*jargs)),
                           rtol=1e-10, atol=1e-12)
    tangents = tuple(np.full(np.shape(a), 0.7) for a in args)
    out, tout = tg.jvp(f, args, tangents)
    jout, jtout = jax.jit(lambda p, t: jax.jvp(fj, p, t))(jargs, to_jax(tangents))
    assert_trees_close(out, to_numpy(jout), rtol=1e-12)
    assert_trees_close(tout, to_numpy(jtout), rtol=1e-10, atol=1e-12)
    out, pullback = tg.vjp(f, *args)
    jout, jpullback = jax.vjp(fj, *jargs)
    cot = jax.tree_util.tree_map(lambda o: np.linspace(-1, 1, np.size(o)).reshape(np.shape(o)),
                                 to_numpy(jout))
    assert_trees_close(pullback(cot), to_numpy(jpullback(to_jax(cot))), rtol=1e-10, atol=1e-12)


# ---- composition --------------------------------------------------------------------------------

def cubic_sum(x):
    return np.sum(np.sin(x) * x ** 3)


def grad_inside(x):
    """A function that uses a gradient, itself differentiated (argument passed explicitly)."""
    g = tg.grad(lambda v, w: np.sum(np.sin(v) * w ** 2), argnums=0)(x, x)
    return np.sum(g ** 2) + np.sum(x)


def grad_inside_jax(jax, jnp):
    def f(x):
        g = jax.grad(lambda v, w: jnp.sum(jnp.sin(v) * w ** 2), argnums=0)(x, x)
        return jnp.sum(g ** 2) + jnp.sum(x)
    return f


def test_grad_of_grad_scalar():
    f = lambda x: np.sin(x) * x ** 3
    d2 = lambda x: -np.sin(x) * x ** 3 + 6 * np.cos(x) * x ** 2 + 6 * x * np.sin(x)
    for x in (0.3, 1.7, -2.2):
        assert tg.grad(tg.grad(f))(x) == pytest.approx(d2(x), rel=1e-12)
    assert tg.grad(tg.grad(lambda x: x ** 3))(2.0) == 12.0


def test_compositions_match_hessian_and_finite_differences():
    x = np.array([0.3, -1.1, 0.8])
    H = tg.hessian(cubic_sum)(x)
    expected = fd_jacobian(tg.grad(cubic_sum), (x,), eps=1e-5)
    np.testing.assert_allclose(H, expected, rtol=1e-6, atol=1e-7)
    for composed in (tg.jacfwd(tg.jacrev(cubic_sum)), tg.jacrev(tg.jacrev(cubic_sum)),
                     tg.jacfwd(tg.grad(cubic_sum)), tg.jacrev(tg.grad(cubic_sum)),
                     tg.jacfwd(tg.jacfwd(cubic_sum)), tg.jacrev(tg.jacfwd(cubic_sum))):
        np.testing.assert_allclose(composed(x), H, rtol=1e-12, atol=1e-12)


def test_second_derivatives_of_vector_functions():
    f = lambda x: np.tanh(WM @ x)
    x = np.array([0.2, -0.5, 0.9, 0.1])
    jac = tg.jacrev(f)
    expected = fd_jacobian(jac, (x,), eps=1e-5)
    for composed in (tg.jacfwd(tg.jacrev(f)), tg.jacrev(tg.jacrev(f)), tg.jacrev(tg.jacfwd(f))):
        T = composed(x)
        assert T.shape == (3, 4, 4)
        np.testing.assert_allclose(T, expected, rtol=1e-6, atol=1e-7)


def test_grad_used_inside_a_differentiated_function():
    x = np.array([0.4, -0.9, 1.3])
    expected = fd_jacobian(grad_inside, (x,))
    np.testing.assert_allclose(tg.grad(grad_inside)(x), expected, rtol=1e-6, atol=1e-8)
    value, grads = tg.value_and_grad(grad_inside)(x)
    assert value == pytest.approx(grad_inside(x), rel=1e-13)
    np.testing.assert_allclose(grads, expected, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(tg.jacfwd(grad_inside)(x), expected, rtol=1e-6, atol=1e-8)


def test_compositions_match_jax(jax):
    import jax.numpy as jnp
    x = np.array([0.4, -0.9, 1.3])
    fj = lambda x: jnp.sum(jnp.sin(x) * x ** 3)
    jx = jnp.asarray(x)
    H = np.asarray(jax.jit(jax.hessian(fj))(jx))
    np.testing.assert_allclose(tg.jacfwd(tg.jacrev(cubic_sum))(x), H, rtol=1e-12)
    np.testing.assert_allclose(tg.jacrev(tg.jacrev(cubic_sum))(x), H, rtol=1e-12)
    np.testing.assert_allclose(tg.jacfwd(tg.grad(cubic_sum))(x), H, rtol=1e-12)
    expected = np.asarray(jax.jit(jax.grad(grad_inside_jax(jax, jnp)))(jx))
    np.testing.assert_allclose(tg.grad(grad_inside)(x), expected, rtol=1e-12)
    g2 = jax.grad(jax.grad(lambda s: jnp.sin(s) * s ** 3))(1.7)
    assert tg.grad(tg.grad(lambda s: np.sin(s) * s ** 3))(1.7) == pytest.approx(float(g2),
                                                                                rel=1e-13)
    # a gradient inside a function of two arguments, differentiated w.r.t. both
    f2 = lambda a, b: tg.grad(lambda u, v: u ** 2 * v + np.sin(u * v), argnums=1)(a, b) * b
    f2j = lambda a, b: jax.grad(lambda u, v: u ** 2 * v + jnp.sin(u * v), argnums=1)(a, b) * b
    ours = tg.grad(f2, argnums=(0, 1))(0.7, -1.2)
    theirs = jax.jit(jax.grad(f2j, argnums=(0, 1)))(0.7, -1.2)
    assert_trees_close(ours, to_numpy(theirs), rtol=1e-12)
    # pytree Hessian arrangement
    p = {"a": 0.5, "b": np.array([0.3, -0.2])}
    fp = lambda p: p["a"] ** 2 * np.sum(np.sin(p["b"])) + np.prod(p["b"])
    fpj = lambda p: p["a"] ** 2 * jnp.sum(jnp.sin(p["b"])) + jnp.prod(p["b"])
    Hp = to_numpy(jax.jit(jax.hessian(fpj))(to_jax(p)))
    assert_trees_close(tg.hessian(fp)(p), Hp, rtol=1e-12)
    assert_trees_close(tg.jacfwd(tg.jacrev(fp))(p), Hp, rtol=1e-12)


def test_same_value_passed_as_two_inner_arguments():
    # d/da of grad_x(s * x**3)(a, s=a) = d/da 3 a**3 = 9 a**2: both inner arguments carry `a`
    f = lambda a: tg.grad(lambda x, s: s * x ** 3)(a, a)
    assert tg.grad(f)(2.0) == pytest.approx(36.0)
    assert tg.jacrev(f)(2.0) == pytest.approx(36.0)
    assert tg.jacfwd(f)(2.0) == pytest.approx(36.0)
    g = lambda a: tg.grad(lambda x, s=1.0: s * x ** 3)(a, s=a)      # a keyword argument too
    assert tg.grad(g)(2.0) == pytest.approx(36.0)


def test_eager_tensors_through_grad():
    x = tg.tensor([1.0, 2.0], requires_grad=True)
    g = tg.grad(lambda v: (v ** 3).sum())(x)
    np.testing.assert_allclose(g.detach().numpy(), [3.0, 12.0])
    g.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [6.0, 12.0])


def test_third_order_raises_a_clear_error():
    f = lambda x: x ** 4
    with pytest.raises(NotImplementedError, match="third-order"):
        tg.grad(tg.grad(tg.grad(f)))(2.0)
    with pytest.raises(NotImplementedError, match="third-order"):
        tg.hessian(lambda x: np.sum(tg.grad(lambda y: np.sum(y ** 3))(x)))(np.ones(2))
    with pytest.raises(NotImplementedError, match="third-order"):
        tg.hvp(lambda x: np.sum(tg.grad(lambda y: np.sum(y ** 3))(x)), np.ones(2), np.ones(2))


@pytest.mark.parametrize("inner", ["vjp", "jvp", "hessian", "hvp"])
def test_transforms_that_do_not_nest_raise_instead_of_freezing(inner):
    calls = {
        "vjp": lambda x: tg.vjp(lambda y: y ** 2, x)[0],
        "jvp": lambda x: tg.jvp(lambda y: y ** 2, (x,), (np.ones(2),))[1],
        "hessian": lambda x: tg.hessian(lambda y: np.sum(y ** 3))(x),
        "hvp": lambda x: tg.hvp(lambda y: np.sum(y ** 3), x, np.ones(2)),
    }
    f = lambda x: np.sum(calls[inner](x))
    with pytest.raises(NotImplementedError, match=inner):
        tg.grad(f)(np.array([1.0, 2.0]))


# ---- one sweep per mode -------------------------------------------------------------------------

@pytest.fixture
def sweeps(monkeypatch):
    """Counts of the compiled sweeps and the directions (rows) each carried."""
    log = collections.defaultdict(list)
    for name in ("forward", "forward_entries", "backward", "tangent", "backward_tangent"):
        original = getattr(_sweep, name)

        def counted(tape, V, *rest, _name=name, _original=original):
            rows = rest[0].shape[0] if rest and rest[0].ndim == 2 and _name != "forward_entries" \
                else 1
            log[_name.replace("_entries", "")].append(rows)
            return _original(tape, V, *rest)
        monkeypatch.setattr(_sweep, name, counted)
    original_gradient = _sweep.Gradient

    class CountedGradient:                      # grad's sweeps: a forward, then a reverse
        def __init__(self, tape, out, entries=None, aliased=None, read_by_offset=()):
            self.sweeps = original_gradient(tape, out, entries, aliased, read_by_offset)

        def forward(self, V):
            log["forward"].append(1)
            self.sweeps.forward(V)

        def adjoints(self, V):
            G = self.sweeps.adjoints(V)
            log["backward"].append(G.shape[0])
            return G

        def run(self, V):
            self.forward(V)
            return self.adjoints(V)
    monkeypatch.setattr(_sweep, "Gradient", CountedGradient)
    original_plain = _compiled.plain_gradient

    def counted_plain(tape, out):               # grad's two sweeps in one compiled call
        bound = original_plain(tape, out)
        if bound is None:
            return None
        call, t, k = bound

        def counted_call(*args):
            log["forward"].append(1)
            log["backward"].append(1)
            return call(*args)
        return counted_call, t, k
    monkeypatch.setattr(_compiled, "plain_gradient", counted_plain)
    return log


def test_each_mode_is_one_sweep(sweeps):
    f = lambda x: np.tanh(WM @ x) * np.sum(x)          # R^4 -> R^3
    s = lambda x: np.sum(f(x) ** 2)
    x = np.array([0.1, 0.2, -0.3, 0.4])
    jacfwd, jacrev, grad, hessian = tg.jacfwd(f), tg.jacrev(f), tg.grad(s), tg.hessian(s)
    for transform in (jacfwd, jacrev, grad, hessian):
        transform(x)                                    # traced: the trace gives the values
    assert not sweeps["forward"]
    sweeps.clear()
    jacfwd(x)
    assert sweeps == {"forward": [1], "tangent": [4]}               # 4 directions, one sweep
    sweeps.clear()
    jacrev(x)
    assert sweeps == {"forward": [1], "backward": [3]}              # 3 seeds, one sweep
    sweeps.clear()
    grad(x)
    assert sweeps == {"forward": [1], "backward": [1]}
    sweeps.clear()
    hessian(x)                                                      # forward-over-reverse
    assert sweeps == {"forward": [1], "tangent": [4], "backward_tangent": [4]}
    sweeps.clear()
    tg.hvp(s, x, x)
    assert sweeps["tangent"] == [1] and sweeps["backward_tangent"] == [1]
    assert not sweeps["backward"]
    sweeps.clear()
    tg.jvp(f, (x,), (x,))
    assert sweeps["tangent"] == [1] and not sweeps["backward"]


def test_a_gradient_skips_values_no_vjp_reads():
    """grad's forward sweep runs only the entries whose values the reverse sweep (or a guard)
    reads: here exp's output (its VJP reads it) but neither log1p's nor the mean's."""
    f = lambda w: np.mean(np.log1p(np.exp(-w * 3.0)))
    tape = tg.trace(f, np.ones(4))
    E, _ = tape._gradient_entries()
    assert [tape.prims[e].name for e in range(len(tape))
            if any((row == tape.E[e]).all() for row in E)] == ["neg", "mul_const", "exp"]
    g = tg.grad(f)
    for w in (np.linspace(-1, 1, 4), np.linspace(0, 2, 4)):
        g(w)
        np.testing.assert_allclose(g(w), -0.75 / (1 + np.exp(3 * w)), rtol=1e-13)
        assert tg.value_and_grad(f)(w)[0] == pytest.approx(f(w), rel=1e-14)
    piecewise = lambda x: np.sum(x ** 2) if np.sum(x) > 0 else np.sum(np.sin(x))
    g = tg.grad(piecewise)
    for x in (np.ones(3), -np.ones(3), np.ones(3), -np.ones(3)):      # guards still read
        np.testing.assert_allclose(g(x), 2 * x if x.sum() > 0 else np.cos(x), rtol=1e-14)


def _first_flags(tape):
    """{entry's primitive name: FIRST bits} of grad's reverse sweep (see _codegen)."""
    first, zero = _sweep._first_writes(tape, tape.output_slots[0])
    return [(tape.prims[e].name, int(first[e])) for e in range(len(tape))], zero.tolist()


def test_the_reverse_sweep_assigns_first_writes_only():
    """grad's reverse sweep (`backward_first`) assigns an adjoint at its first write instead of
    zeroing the whole buffer: only where the write covers all of it (no broadcast), once per slot
    (the second operand of x * x adds), and the adjoints nothing assigns are zeroed (inputs,
    unused ones). Checked against the general sweep (zeroed buffer, adding) over repeated calls,
    whose uninitialised buffers would show any element left unwritten."""
    def square(x):
        e = np.exp(x)
        return np.sum(e * e)

    cases = {
        "square of a shared value": square,
        "fan-out": lambda x: np.sum(np.sin(x) + np.cos(x) * x),
        "broadcast operand": lambda x: np.sum(np.tanh(x) * x[1]),
        "mean of a chain": lambda x: np.mean(np.log1p(np.exp(-2.0 * x))),
    }
    for name, f in cases.items():
        g, tape = tg.grad(f), tg.trace(f, np.ones(5))
        for k in range(4):
            x = np.linspace(-1, 1, 5) + 0.3 * k
            np.testing.assert_allclose(g(x), tape.gradient(x), rtol=1e-14, atol=1e-15,
                                       err_msg=name)
    big = np.ones(_sweep.FIRST_WRITE_MIN)
    flags, zero = _first_flags(tg.trace(square, big))
    assert flags == [("exp", 1), ("mul", 1), ("total", 1)]   # a assigns, b (the same slot) adds
    assert zero == []                                         # exp assigns the input's too
    flags, zero = _first_flags(tg.trace(square, big[:3]))     # small: zeroed, the _vjp kernels
    assert flags == [("exp", 0), ("mul", 0), ("total", 0)]
    assert sum(hi - lo for lo, hi in zero) == 9
    flags, zero = _first_flags(tg.trace(lambda x: np.sum(x[0] * np.exp(x[1])), big))
    assert flags[-3:] == [("exp", 1), ("mul", 3), ("total", 0)]   # the scalar path assigns
    W = np.ones((_sweep.FIRST_WRITE_MIN, 3))
    flags, zero = _first_flags(tg.trace(lambda x: np.sum(np.exp(W @ x)), np.ones(3)))
    assert zero == [[0, 3]]                                   # matmul adds to the input's
    flags, _ = _first_flags(tg.trace(lambda x: np.sum(np.tanh(x) * x[1]), big))
    assert ("mul", 1) in flags                                # x[1] is broadcast: it adds
    unused = tg.grad(lambda x, y: np.sum(2.0 * x), argnums=(0, 1))
    for _ in range(3):
        gx, gy = unused(np.ones(3), np.full(2, 7.0))
        np.testing.assert_array_equal(gx, 2.0)
        np.testing.assert_array_equal(gy, 0.0)


def test_replays_do_not_call_the_function():
    calls = []

    def f(x, y):
        calls.append(1)
        return np.sum(x * y) ** 2

    transforms = [tg.grad(f), tg.value_and_grad(f, argnums=(0, 1)), tg.jacrev(f),
                  tg.jacfwd(f, argnums=1), tg.hessian(f)]
    r = rng_for("replays")
    for t in transforms:
        t(r.standard_normal(3), r.standard_normal(3))
    assert len(calls) == len(transforms)
    for _ in range(3):
        for t in transforms:
            t(r.standard_normal(3), r.standard_normal(3))
    assert len(calls) == len(transforms)


def _plain_replays(transformed):
    """The `PlainGradient`s that `grad` or `value_and_grad` keeps (white box: which path ran)."""
    call = next(c.cell_contents for c in transformed.__closure__
                if getattr(c.cell_contents, "__name__", "") == "call")
    plain = next(c.cell_contents for c in call.__closure__ if isinstance(c.cell_contents, dict))
    return [p for replays in plain.values() for p in replays]


def _rosenbrock(x):
    return np.sum(100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)


@pytest.mark.parametrize("case", ["1-d", "2-d", "strided", "reversed", "fortran", "read-only",
                                  "float32"])
def test_one_compiled_call_per_gradient_gives_the_general_paths_bits(case):
    """From its second call, the gradient of a function of one array is one compiled call
    (`compiled.plain_gradient`): the same bits as the first call (the general sweeps), whatever
    the argument's layout, and the value of value_and_grad too."""
    r = rng_for(f"one call {case}")
    dtype = np.float32 if case == "float32" else np.float64
    shape = (4, 6) if case in ("2-d", "fortran") else (24,)
    f = (lambda x: _rosenbrock(x.reshape(-1))) if len(shape) == 2 else _rosenbrock

    def argument():
        x = r.standard_normal(shape).astype(dtype)
        if case == "strided":
            x = np.repeat(x, 2)[::2]
        if case == "reversed":
            x = x[::-1]
        if case == "fortran":
            x = np.asfortranarray(x)
        if case == "read-only":
            x.flags.writeable = False
        return x

    g, vg = tg.grad(f), tg.value_and_grad(f)
    for _ in range(3):
        x = argument()
        expected_g = tg.grad(f)(x)           # a fresh transform: its first call, general path
        expected_vg = tg.value_and_grad(f)(x)[1]
        got, (value, got_vg) = g(x), vg(x)
        assert got.dtype == dtype and got.shape == shape and value.dtype == dtype
        np.testing.assert_array_equal(got, expected_g)
        np.testing.assert_array_equal(got_vg, expected_vg)
        assert value == tg.trace(f, x)(x)            # the interpreter's forward sweep
        if dtype == np.float64:                      # numpy's sums: its value, to the bit
            assert value == f(x)
    assert all(p.native for p in _plain_replays(g) + _plain_replays(vg))


def test_gradients_needing_more_than_two_sweeps_keep_the_general_path():
    """Guards, two arguments, a float32 argument on a float64 tape, capture="call" and anomaly
    mode: no single compiled call, and the results of a fresh transform's first call."""
    r = rng_for("general path")
    data = r.standard_normal(5)
    cases = {   # name: (f, grad's keyword arguments, the arguments of a call)
        "guards": (lambda x: np.sum(x ** 2) if x[0] > 0 else np.sum(x ** 3), {},
                   lambda: (np.abs(r.standard_normal(5)),)),
        "two arguments": (lambda x, y: np.sum(x * y ** 2), dict(argnums=(0, 1)),
                          lambda: (r.standard_normal(5), r.standard_normal(5))),
        "promoted": (lambda x: np.sum(x * data), {},
                     lambda: (r.standard_normal(5).astype(np.float32),)),
        "capture call": (lambda x: np.sum(x * data), dict(capture="call"),
                         lambda: (r.standard_normal(5),)),
    }
    for name, (f, options, arguments) in cases.items():
        g = tg.grad(f, **options)
        for _ in range(3):
            args = arguments()
            for got, expected in zip(leaves(g(*args)), leaves(tg.grad(f, **options)(*args))):
                np.testing.assert_array_equal(got, expected, err_msg=name)
        assert _plain_replays(g) and not any(p.native for p in _plain_replays(g)), name
    g = tg.grad(_rosenbrock)
    x = r.standard_normal(8)
    g(x), g(x)
    assert _plain_replays(g)[0].native
    with tg.detect_anomaly():
        np.testing.assert_array_equal(g(x), tg.grad(_rosenbrock)(x))


def test_call_style_transforms_replay_per_function():
    """vjp, jvp and hvp keep the tapes of each function: later calls only replay them, and
    guards still pick the branch (a piecewise function across its breakpoint)."""
    calls = []

    def f(x):
        calls.append(1)
        return np.sum(x ** 3) if np.sum(x) > 0 else np.sum(np.sin(x))

    r = rng_for("call-style")
    for _ in range(4):
        x, v = np.abs(r.standard_normal(3)), r.standard_normal(3)
        out, pullback = tg.vjp(f, x)
        np.testing.assert_allclose(pullback(1.0)[0], 3 * x ** 2, rtol=1e-12)
        np.testing.assert_allclose(tg.jvp(f, (x,), (v,))[1], np.sum(3 * x ** 2 * v), rtol=1e-12)
        np.testing.assert_allclose(tg.hvp(f, x, v), 6 * x * v, rtol=1e-12)
    assert len(calls) == 3                       # one trace per transform
    x = -np.abs(r.standard_normal(3))            # the other branch: retraced, then replayed
    for _ in range(2):
        np.testing.assert_allclose(tg.jvp(f, (x,), (v,))[1], np.sum(np.cos(x) * v), rtol=1e-12)
        np.testing.assert_allclose(tg.hvp(f, x, v), -np.sin(x) * v, rtol=1e-12)
    assert len(calls) == 5
    assert tg.jvp(np.sin, (1.0,), (1.0,))[1] == np.cos(1.0)   # not weakly referenceable: traced


def test_a_call_flattens_its_arguments_once(monkeypatch):
    """A call of a transform on a tree of arguments flattens them once, on its first call (which
    traces) as on the next ones (which replay): the leaves and structure go everywhere after."""
    seen = []
    original = _pytree.flatten

    def counted(tree):
        if any(leaf is w for leaf in original(tree)[0]):
            seen.append(1)
        return original(tree)
    monkeypatch.setattr(_pytree, "flatten", counted)
    f = lambda p, x: np.sum(np.tanh(p["w"] * x) + p["b"]) ** 2
    w, x = np.linspace(0.1, 0.5, 3), np.array([1.0, -2.0, 0.5])
    p = {"w": w, "b": 0.5}
    g, vg, jr, h = tg.grad(f), tg.value_and_grad(f), tg.jacrev(f), tg.hessian(f)

    def inner(w):
        return np.tanh(w) * x

    def scalar(w):
        return np.sum(np.tanh(w) * x)

    calls = {"grad": lambda: g(p, x), "value_and_grad": lambda: vg(p, x),
             "jacrev": lambda: jr(p, x), "hessian": lambda: h(p, x),
             "vjp": lambda: tg.vjp(inner, w), "jvp": lambda: tg.jvp(inner, (w,), (x,)),
             "hvp": lambda: tg.hvp(scalar, w, x)}
    for name, call in calls.items():
        for _ in range(3):
            seen.clear()
            call()
            assert len(seen) == 1, f"{name} flattened its arguments {len(seen)} times"


# ---- the API ------------------------------------------------------------------------------------

def test_grad_as_a_decorator():
    @tg.grad
    def g(x):
        return x ** 3

    @tg.grad(argnums=1)
    def h(x, y):
        return x * y ** 2

    assert g(2.0) == 12.0
    assert h(2.0, 3.0) == 12.0
    assert g.__name__ == "grad(g)" and g.__wrapped__.__name__ == "g"


def test_argnums_int_tuple_and_negative():
    f = lambda x, y, z: x * y ** 2 * z ** 3
    assert tg.grad(f)(1.0, 2.0, 3.0) == 108.0
    assert tg.grad(f, argnums=(0,))(1.0, 2.0, 3.0) == (108.0,)
    assert tg.grad(f, argnums=(2, 0))(1.0, 2.0, 3.0) == (108.0, 108.0)
    assert tg.grad(f, argnums=-1)(1.0, 2.0, 3.0) == 108.0
    assert tg.grad(f, argnums=(-2, -1))(1.0, 2.0, 3.0) == (108.0, 108.0)
    assert tg.grad(f, argnums=np.int64(1))(1.0, 2.0, 3.0) == 108.0
    J = tg.jacrev(lambda x, y: x * y, argnums=-1)(np.ones(2), np.array([2.0, 3.0]))
    np.testing.assert_allclose(J, np.eye(2))
    H = tg.hessian(lambda x, y: x * y ** 3, argnums=-1)(2.0, 1.0)
    assert H == 12.0


@pytest.mark.parametrize("argnums", [2, -3, (0, 2)])
def test_argnums_out_of_range(argnums):
    f = lambda x, y: x * y
    for transform in (tg.grad, tg.value_and_grad, tg.jacrev, tg.jacfwd, tg.hessian):
        with pytest.raises(TypeError, match="out of range"):
            transform(f, argnums=argnums)(1.0, 2.0)


@pytest.mark.parametrize("argnums", [(), "0", 1.0, [0, "1"], True])
def test_argnums_of_the_wrong_type(argnums):
    with pytest.raises(TypeError, match="argnums"):
        tg.grad(lambda x: x, argnums=argnums)


def test_arguments_of_every_kind():
    x = np.array([1.0, 2.0])
    P = collections.namedtuple("P", "w b")
    assert tg.grad(lambda s: s ** 2)(3.0) == 6.0
    assert tg.grad(lambda s: s ** 2)(np.float32(3.0)) == np.float32(6.0)
    assert tg.grad(lambda s: s ** 2)(np.array(3.0)) == 6.0
    np.testing.assert_allclose(tg.grad(lambda a: np.sum(a ** 2))(x), 2 * x)
    g = tg.grad(lambda t: t[0] * np.sum(t[1]))((2.0, x))
    assert isinstance(g, tuple) and g[0] == 3.0
    np.testing.assert_allclose(g[1], [2.0, 2.0])
    g = tg.grad(lambda l: l[0] * l[1])([2.0, 3.0])
    assert isinstance(g, list) and g == [3.0, 2.0]
    g = tg.grad(lambda d: d["a"] * np.sum(d["nested"]["b"] ** 2))(
        {"a": 2.0, "nested": {"b": x}})
    assert g["a"] == 5.0
    np.testing.assert_allclose(g["nested"]["b"], 4 * x)
    g = tg.grad(lambda p: np.sum(p.w ** 2) * p.b)(P(x, 2.0))
    assert isinstance(g, P) and g.b == 5.0
    np.testing.assert_allclose(g.w, 4 * x)
    # a static argument between differentiated ones
    assert tg.grad(lambda a, n, b: a ** n * b, argnums=(0, 2))(2.0, 3, 1.5) == (18.0, 8.0)


def test_has_aux():
    f = lambda x: (np.sum(x ** 2), {"double": x * 2, "n": 3.0})
    x = np.array([1.0, 2.0])
    g, aux = tg.grad(f, has_aux=True)(x)
    np.testing.assert_allclose(g, 2 * x)
    np.testing.assert_allclose(aux["double"], 2 * x)
    assert aux["n"] == 3.0
    (value, aux), g = tg.value_and_grad(f, has_aux=True)(x)
    assert value == 5.0 and aux["n"] == 3.0
    out, pullback, aux = tg.vjp(f, x, has_aux=True)
    assert out == 5.0
    np.testing.assert_allclose(pullback(1.0)[0], 2 * x)
    np.testing.assert_allclose(aux["double"], 2 * x)
    h = lambda x: (x ** 2, np.sum(x))
    for jac in (tg.jacrev, tg.jacfwd):
        J, aux = jac(h, has_aux=True)(x)
        np.testing.assert_allclose(J, np.diag(2 * x))
        assert aux == 3.0
    H, aux = tg.hessian(lambda x: (np.sum(x ** 3), {"sum": np.sum(x)}), has_aux=True)(x)
    np.testing.assert_allclose(H, np.diag(6 * x))
    assert aux == {"sum": 3.0}
    with pytest.raises(TypeError, match="pair"):
        tg.grad(lambda x: x ** 2, has_aux=True)(1.0)
    with pytest.raises(TypeError, match="pair"):
        tg.hessian(lambda x: np.sum(x ** 2), has_aux=True)(x)


def test_has_aux_matches_jax(jax):
    import jax.numpy as jnp
    x = np.array([0.5, -1.5])
    ours = tg.value_and_grad(lambda x: (np.sum(np.exp(x)), x[0] * 3.0), has_aux=True)(x)
    theirs = jax.value_and_grad(lambda x: (jnp.sum(jnp.exp(x)), x[0] * 3.0), has_aux=True)(
        jnp.asarray(x))
    assert_trees_close(ours, to_numpy(theirs), rtol=1e-13)
    f = lambda x: (np.sum(np.exp(x) * x[0]), x * 2.0)
    ours = tg.hessian(f, has_aux=True)(x)
    theirs = jax.hessian(lambda x: (jnp.sum(jnp.exp(x) * x[0]), x * 2.0), has_aux=True)(
        jnp.asarray(x))
    assert_trees_close(ours, to_numpy(theirs), rtol=1e-13)


def test_keyword_arguments_are_passed_not_differentiated():
    f = lambda x, *, scale=1.0, power=2: scale * np.sum(x ** power)
    x = np.array([1.0, 2.0])
    np.testing.assert_allclose(tg.grad(f)(x, scale=3.0), 6 * x)
    np.testing.assert_allclose(tg.grad(f)(x, scale=3.0, power=3), 9 * x ** 2)
    np.testing.assert_allclose(tg.jacfwd(lambda x, *, w: w * x)(x, w=np.array([2.0, 5.0])),
                               np.diag([2.0, 5.0]))
    np.testing.assert_allclose(tg.hessian(f)(x, scale=0.5, power=3), np.diag(3 * x))


def test_value_and_grad_values():
    value, g = tg.value_and_grad(lambda a, b: a * b, argnums=(0, 1))(2.0, 3.0)
    assert value == 6.0 and g == (3.0, 2.0)
    assert isinstance(value, (float, np.floating))


def test_vjp_pullback_is_reusable_and_independent():
    f = lambda x: np.sin(x) * x
    x1, x2 = np.array([0.1, 0.2]), np.array([1.0, 2.0])
    out1, pull1 = tg.vjp(f, x1)
    out2, pull2 = tg.vjp(f, x2)
    d = lambda x: np.cos(x) * x + np.sin(x)
    for _ in range(2):           # the first pullback kept its own values
        np.testing.assert_allclose(pull1(np.ones(2))[0], d(x1))
        np.testing.assert_allclose(pull2(np.array([1.0, 0.0]))[0], [d(x2)[0], 0.0])
    with pytest.raises(ValueError, match="shape"):
        pull1(np.ones(3))
    with pytest.raises(ValueError, match="structure"):
        pull1((np.ones(2), np.ones(2)))


REPEATED_OUTPUTS = {
    # f, point, its outputs' derivative (one per output position), every position holds one value
    "input twice": (lambda x: (x, x), np.array([1.0, -2.0]), lambda x: [1.0, 1.0]),
    "sin twice": (lambda x: [np.sin(x)] * 2, np.array([0.0, 0.5]),
                  lambda x: [np.cos(x), np.cos(x)]),
    "input and value": (lambda x: {"a": x, "b": x * 3, "c": x}, np.array([0.3, 0.7]),
                        lambda x: [1.0, 3.0, 1.0]),
}


@pytest.mark.parametrize("name", REPEATED_OUTPUTS)
def test_a_value_at_several_output_positions_sums_its_cotangents(name):
    """The pullback of a function returning one value (or an input) at several positions adds
    the cotangents of every position; jacrev (eager, vmapped, fused) keeps one row per position."""
    f, x, derivatives = REPEATED_OUTPUTS[name]
    out, pullback = tg.vjp(f, x)
    cotangents = [np.full(x.shape, k + 1.0) for k in range(len(leaves(out)))]
    (g,) = pullback(_pytree.unflatten(_pytree.flatten(out)[1], cotangents))
    expected = sum(c * d for c, d in zip(cotangents, derivatives(x)))
    np.testing.assert_allclose(g, expected, rtol=1e-14)
    scalar, scalar_pullback = tg.vjp(f, 0.5)          # the issue's own form, on a number
    n = len(leaves(scalar))
    (gs,) = scalar_pullback(_pytree.unflatten(_pytree.flatten(scalar)[1], [1.0 + k for k in range(n)]))
    assert gs == pytest.approx(sum((1.0 + k) * np.asarray(d) for k, d in
                                   enumerate(derivatives(np.asarray(0.5)))))
    jac = [np.asarray(j) for j in leaves(tg.jacrev(f)(x))]
    for j, d in zip(jac, derivatives(x)):
        np.testing.assert_allclose(j, np.diag(np.broadcast_to(d, x.shape)), rtol=1e-14)
    X = np.stack([x, x + 1.0, x - 1.0])
    for fuse in (False, True):
        batched = [np.asarray(j) for j in leaves(tg.vmap(tg.jacrev(f), fuse=fuse)(X))]
        for j, d_of in zip(batched, zip(*[derivatives(p) for p in X])):
            for q in range(len(X)):
                np.testing.assert_allclose(j[q], np.diag(np.broadcast_to(d_of[q], x.shape)),
                                           rtol=1e-14)


def test_a_nested_jacobian_with_repeated_outputs():
    """A jacrev inside a differentiated function (a `CallRule` entry) whose inner function returns
    one value twice: each output position has its own rows."""
    def outer(x):
        first, second = tg.jacrev(lambda y: [y * y] * 2)(x)
        return np.sum(first * 1.0) + np.sum(second * 3.0)
    np.testing.assert_allclose(tg.grad(outer)(np.array([0.5, 2.0])), [8.0, 8.0], rtol=1e-14)


def test_jvp_errors():
    f = lambda x, y: x * y
    with pytest.raises(ValueError, match="structure"):
        tg.jvp(f, (1.0, 2.0), (1.0,))
    with pytest.raises(ValueError, match="shape"):
        tg.jvp(lambda x: x * 2, (np.ones(2),), (np.ones(3),))
    with pytest.raises(TypeError, match="floating point"):
        tg.jvp(lambda n: n * 2, (2,), (1,))


def test_hvp_errors():
    with pytest.raises(ValueError, match="structure"):
        tg.hvp(lambda p: p[0] * p[1], (1.0, 2.0), [1.0, 1.0])
    with pytest.raises(ValueError, match="shape"):
        tg.hvp(lambda x: np.sum(x ** 3), np.ones(2), np.ones(3))
    with pytest.raises(TypeError, match="scalar output"):
        tg.hvp(lambda x: x ** 3, np.ones(2), np.ones(2))


def test_grad_requires_a_scalar_output():
    message = "grad requires a scalar output; use jacobian or vjp"
    with pytest.raises(TypeError, match=message):
        tg.grad(lambda x: x * 2)(np.ones(3))
    with pytest.raises(TypeError, match=message):
        tg.value_and_grad(lambda x: (x, x))(1.0)
    with pytest.raises(TypeError, match=message):        # nested, too
        tg.grad(lambda x: np.sum(tg.grad(lambda y: y * 2)(x)))(np.ones(3))
    with pytest.raises(TypeError, match="scalar output"):
        tg.hessian(lambda x: x * 2)(np.ones(3))


@pytest.mark.parametrize("bad", [2, np.arange(3), np.array([True, False]), "x", 1 + 2j],
                         ids=["int", "int array", "bool array", "str", "complex"])
def test_differentiating_non_float_inputs_raises(bad):
    f = lambda x: x * 2 if isinstance(x, str) else np.sum(x * 2)
    for transform in (tg.grad, tg.value_and_grad, tg.jacrev, tg.jacfwd, tg.hessian):
        with pytest.raises(TypeError, match="floating point"):
            transform(f)(bad)
    with pytest.raises(TypeError, match="floating point"):
        tg.vjp(f, bad)
    with pytest.raises(TypeError, match="floating point"):
        tg.hvp(f, bad, bad)


def test_wrong_number_of_arguments():
    g = tg.grad(lambda x, y: x * y)
    assert g(2.0, 3.0) == 3.0
    with pytest.raises(TypeError):
        g(2.0)
    with pytest.raises(TypeError):
        g(2.0, 3.0, 4.0)
    assert g(2.0, 5.0) == 5.0


def test_a_new_shape_retraces():
    calls = []

    def f(x):
        calls.append(x.shape)
        return np.sum(x ** 3)

    for transform in (tg.grad(f), tg.jacrev(f), tg.hessian(f)):
        calls.clear()
        for n in (2, 3, 2, 5, 3):
            result = transform(np.ones(n))
            assert result.shape[0] == n
        assert len(calls) == 3


def test_jacobian_mode_must_be_rev_or_fwd():
    with pytest.raises(ValueError, match="mode"):
        tg.jacobian(lambda x: x, mode="central")


def test_jacobian_with_a_tree_output_and_several_arguments():
    f = lambda x, y: {"xy": x * y, "s": (np.sum(x), y ** 2)}
    x, y = np.array([1.0, 2.0]), np.array([3.0, 4.0])
    for mode in ("rev", "fwd"):
        J = tg.jacobian(f, argnums=(0, 1), mode=mode)(x, y)
        np.testing.assert_allclose(J["xy"][0], np.diag(y))
        np.testing.assert_allclose(J["xy"][1], np.diag(x))
        np.testing.assert_allclose(J["s"][0][0], [1.0, 1.0])
        np.testing.assert_allclose(J["s"][0][1], [0.0, 0.0])
        np.testing.assert_allclose(J["s"][1][1], np.diag(2 * y))


def test_float32_everywhere():
    x = np.array([0.5, -1.0, 2.0], np.float32)
    f = lambda x: np.sum(np.tanh(x) * x ** 2)
    v = lambda x: np.sin(x) * x
    checks = {
        "grad": tg.grad(f)(x),
        "value": tg.value_and_grad(f)(x)[0],
        "jacrev": tg.jacrev(v)(x),
        "jacfwd": tg.jacfwd(v)(x),
        "hessian": tg.hessian(f)(x),
        "hvp": tg.hvp(f, x, np.ones(3, np.float32)),
        "jvp": tg.jvp(v, (x,), (np.ones(3, np.float32),))[1],
        "vjp": tg.vjp(v, x)[1](np.ones(3, np.float32))[0],
        "grad(grad)": tg.grad(tg.grad(lambda s: s ** 3))(np.float32(2.0)),
        "jacfwd(jacrev)": tg.jacfwd(tg.jacrev(f))(x),
    }
    for name, result in checks.items():
        assert np.asarray(result).dtype == np.float32, name
    np.testing.assert_allclose(checks["hessian"], tg.hessian(f)(x.astype(np.float64)),
                               rtol=1e-5, atol=1e-5)
    value, mixed = tg.value_and_grad(lambda a, b: np.sum(a) * np.sum(b), argnums=(0, 1))(
        x, x.astype(np.float64))
    assert np.asarray(value).dtype == np.float64                 # promoted, as numpy does
    assert [g.dtype for g in mixed] == [np.float32, np.float64]  # each argument's, as JAX


def test_transforms_are_thread_safe():
    def f(x, n):
        if np.sum(x) > 0:
            return np.sum(np.tanh(x) ** 2) * n
        return np.sum(x ** 3) * n

    def expected(x, n):
        t = np.tanh(x)
        return (2 * t * (1 - t ** 2) if np.sum(x) > 0 else 3 * x ** 2) * n

    g = tg.grad(f)
    h = tg.hessian(f)
    jac = tg.jacfwd(tg.grad(f))
    barrier = threading.Barrier(4)
    failures = []

    def work(k):
        barrier.wait()                                   # first calls race for the cache
        r = rng_for(f"thread {k}")
        for j in range(40):
            x = r.standard_normal(2 + (j + k) % 3) + (0.8 if (j + k) % 2 else -0.8)
            n = 1 + j % 2
            if not np.allclose(g(x, n), expected(x, n), rtol=1e-12):
                failures.append(("grad", k, j))
            if j % 5 == 0 and not np.allclose(h(x, n), jac(x, n), rtol=1e-10, atol=1e-12):
                failures.append(("hessian", k, j))

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures


def _first_writes_by_walking(tape, out):
    """`backward_first`'s (FIRST, ZERO) by walking the reverse sweep entry by entry: the
    definition that `core.sweep._first_writes` computes with array operations."""
    E, NEED = tape.E.tolist(), tape.NEED.tolist()
    first, written, assigned = [0] * len(E), [False] * len(NEED), [False] * len(NEED)
    written[out] = assigned[out] = bool(NEED[out])
    for e in range(len(E) - 1, -1, -1):
        op, a, b, c, o, at, length, _ = E[e]
        prim = tape.prims[e]
        if not NEED[o]:
            continue
        operands = tape.IP[at:at + length].tolist() if prim.variadic else (a, b, c)
        for j, s in enumerate(operands):
            if s < 0 or not NEED[s] or written[s]:
                continue
            written[s] = True
            scalar_path = prim.elementwise and tape.sizes[o] == 1
            if j < 2 and assigns_first(prim) and (prim.kind != "binary"
                                                  or tape.sizes[s] == tape.sizes[o]) and \
                    (scalar_path or tape.sizes[s] >= _sweep.FIRST_WRITE_MIN):
                first[e] |= 1 << j
                assigned[s] = True
    spans = []
    for s, need in enumerate(NEED):
        if need and not assigned[s]:
            lo, hi = tape.offsets[s], tape.offsets[s] + tape.sizes[s]
            if spans and spans[-1][1] == lo:
                spans[-1][1] = hi
            else:
                spans.append([lo, hi])
    return first, spans


@pytest.mark.parametrize("name", ["shared square", "stack of elements", "broadcast", "unused input",
                                  "pack reading one value twice", "scalar graph", "constant",
                                  "matmul", "several outputs", "large and small"])
def test_first_writes_agree_with_a_walk_of_the_reverse_sweep(name):
    W = np.arange(12.0).reshape(3, 4) / 10

    def scalar_graph(x):
        nodes = [x[i] for i in range(6)]
        for k in range(40):
            a, b = nodes[-3], nodes[-5]
            nodes.append(np.logaddexp(0.0, a) if k % 3 == 0 else a * b if k % 3 == 1 else
                         sum(nodes[-6:-1:2]))
        return nodes[-1]

    f = {"shared square": lambda x: np.sum(np.exp(x) * np.exp(x)),
         "stack of elements": lambda x: np.sum(np.stack([x[0] * x[1], x[2], x[0]]) ** 2),
         "broadcast": lambda x: np.sum(np.tanh(x) * x[1] + x[:, None] * x[None, :]),
         "unused input": lambda x, y: np.sum(2.0 * x),
         "pack reading one value twice": lambda x: np.sum(np.concatenate([x, x, np.sin(x)])),
         "scalar graph": scalar_graph,
         "constant": lambda x: np.float64(3.0) + 0 * np.sum(x),
         "matmul": lambda x: np.sum(np.exp(W @ x[:4])),
         "several outputs": lambda x: (np.sum(x ** 3), np.prod(x[:3])),
         "large and small": lambda x: np.sum(np.exp(x) * np.sin(x)) * np.sum(x[:4] ** 2)
         + np.sum(x[None, :] * x[:5, None])}[name]
    args = (np.linspace(0.5, 1.5, 6), np.ones(2)) if name == "unused input" else \
        (np.linspace(0.5, 1.5, 40 if name == "large and small" else 6),)
    tape = tg.trace(f, *args)
    for out in tape.output_slots:
        first, zero = _sweep._first_writes(tape, out)
        want_first, want_zero = _first_writes_by_walking(tape, out)
        assert first.tolist() == want_first and zero.tolist() == want_zero
        assert first.dtype == np.int64 and zero.dtype == np.int64 and zero.shape[1:] == (2,)
