"""numpy's linear algebra on tensors (`eager.numpy_api.linalg`): solve, inv, det, slogdet,
cholesky, norm.

* Forward: the eager (traced) value is numpy's, bit for bit; a replay (a transform's second call,
  the compiled flat interpreter) agrees with numpy to rounding (the kernels are not LAPACK).
* Derivatives: `gradcheck` (VJP, JVP, second order against finite differences) at random
  well-conditioned inputs, single and stacked matrices with broadcast leading axes; first and
  second derivatives against HIPS autograd and JAX (the Hessian of slogdet, of a Gaussian
  log-likelihood through cholesky and solve); norms against JAX (autograd has no gradient of
  the 1, inf and matrix 1/inf norms).
* Singular inputs: numpy's LinAlgError, with numpy's message, when tracing and when replaying;
  inf/NaN under vmap; vmap(device="cuda") refused by name.
* vmap (the batched interpreter, fuse=False) against a loop over points.
"""
import warnings

import autograd
import autograd.numpy as anp
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tapegrad as tg
from tapegrad.core import codegen
from tapegrad.core.registry import BY_NAME
from tapegrad.testing import gradcheck

from conftest import rng_for

jax.config.update("jax_enable_x64", True)


def spd(rng, *shape, n=3):
    """Symmetric positive definite matrices of `shape` + (n, n), well conditioned."""
    X = rng.standard_normal(shape + (n, n))
    return X @ np.swapaxes(X, -1, -2) + n * np.eye(n)


def general(rng, *shape, n=3):
    """Well-conditioned non-symmetric matrices."""
    return rng.standard_normal(shape + (n, n)) + 3 * np.eye(n)


# ---- forward: numpy's value -----------------------------------------------------------------

FORWARD = {
    "solve-vector": (lambda A, b: np.linalg.solve(A, b),
                     lambda r: (general(r), r.standard_normal(3))),
    "solve-matrix": (lambda A, B: np.linalg.solve(A, B),
                     lambda r: (general(r), r.standard_normal((3, 2)))),
    "solve-broadcast": (lambda A, B: np.linalg.solve(A, B),
                        lambda r: (general(r, 2, 1), r.standard_normal((4, 3, 2)))),
    "solve-shared-a": (lambda A, B: np.linalg.solve(A, B),
                       lambda r: (general(r), r.standard_normal((2, 3, 1)))),
    "solve-batched-vector": (lambda A, b: np.linalg.solve(A, b),
                             lambda r: (general(r, 2), r.standard_normal(3))),
    "inv": (np.linalg.inv, lambda r: (general(r),)),
    "inv-batched": (np.linalg.inv, lambda r: (general(r, 2, 2),)),
    "det": (np.linalg.det, lambda r: (general(r),)),
    "det-batched": (np.linalg.det, lambda r: (general(r, 4),)),
    "det-negative": (np.linalg.det, lambda r: (general(r) @ np.diag([1.0, -1.0, 1.0]),)),
    "slogdet-logdet": (lambda A: np.linalg.slogdet(A)[1], lambda r: (general(r, 2),)),
    "slogdet-sign": (lambda A: np.linalg.slogdet(A).sign,
                     lambda r: (general(r, 2) @ np.diag([1.0, -1.0, 1.0]),)),
    "cholesky": (np.linalg.cholesky, lambda r: (spd(r),)),
    "cholesky-batched": (np.linalg.cholesky, lambda r: (spd(r, 2, 3, n=4),)),
    "cholesky-upper": (lambda A: np.linalg.cholesky(A, upper=True), lambda r: (spd(r),)),
}


@pytest.mark.parametrize("case", list(FORWARD))
def test_forward_is_numpys(case):
    f, make = FORWARD[case]
    args = make(rng_for(case))
    expected = f(*args)
    eager = f(*(tg.tensor(a, requires_grad=True) for a in args))
    np.testing.assert_array_equal(eager.detach().numpy(), expected)
    traced = tg.value_and_grad(lambda *xs: np.sum(f(*xs) * 1.5))
    traced(*args)                              # the trace
    other = make(rng_for(case + " replay"))
    value, _ = traced(*other)                  # a replay
    np.testing.assert_allclose(value, np.sum(f(*other) * 1.5), rtol=1e-12, atol=1e-12)


V, M, T = (5,), (3, 4), (2, 3, 4)
NORMS = [  # (shape, ord, axis, keepdims)
    (V, None, None, False), (V, 2, None, False), (V, 1, None, False), (V, np.inf, None, False),
    (V, -np.inf, None, True), (V, 3, None, False), (V, 0.5, None, False), (V, -1, None, False),
    (M, None, None, False), (T, None, None, True), (M, None, 1, True), (M, 1, 0, False),
    (M, np.inf, -1, True), (T, 4, 1, False), (M, "fro", None, False), (T, "fro", (2, 0), True),
    (M, 1, None, False), (M, 1, (0, 1), False), (M, -1, (1, 0), False),
    (T, np.inf, (1, 2), True), (M, -np.inf, (1, 0), False), (M, None, (0, 1), False),
    (M, np.inf, None, False),
]


@pytest.mark.parametrize("shape, ord, axis, keepdims", NORMS,
                         ids=[f"{len(s)}d-{o}-{a}-{k}" for s, o, a, k in NORMS])
def test_norm(shape, ord, axis, keepdims):
    x = rng_for(f"norm {ord} {axis} {shape}").standard_normal(shape) + 0.5

    def f(x):
        return np.linalg.norm(x, ord=ord, axis=axis, keepdims=keepdims)
    expected = f(x)
    np.testing.assert_array_equal(f(tg.tensor(x, requires_grad=True)).detach().numpy(), expected)
    gradcheck(f, [x])
    grad = jax.grad(lambda x: jnp.sum(jnp.linalg.norm(x, ord=ord, axis=axis,
                                                      keepdims=keepdims)))
    np.testing.assert_allclose(tg.grad(lambda x: np.sum(f(x)))(x), grad(x), rtol=1e-10)


def test_norm_refuses_a_vector_order_for_a_matrix_as_numpy_does():
    with pytest.raises(ValueError, match="Invalid norm order for matrices"):
        np.linalg.norm(tg.tensor(np.ones((2, 2)), requires_grad=True), ord=3)


def test_norm_zero_order_is_a_count():
    x = np.array([0.0, 1.5, -2.0, 0.0])
    y = np.linalg.norm(tg.tensor(x, requires_grad=True), ord=0)
    assert float(y.detach().numpy()) == 2.0
    np.testing.assert_array_equal(tg.grad(lambda x: np.linalg.norm(x, ord=0) + np.sum(x))(x),
                                  np.ones(4))


def test_norm_of_zero_vector_has_nan_gradient_like_autograd():
    g = tg.grad(lambda x: np.linalg.norm(x))(np.zeros(3))
    assert np.isnan(g).all()
    assert np.isnan(autograd.grad(anp.linalg.norm)(np.zeros(3))).all()


# ---- derivatives: finite differences, autograd, JAX --------------------------------------------

def _gaussian_loglik(K, y):
    """log N(y; 0, K) through cholesky and solve (the GP marginal likelihood)."""
    L = np.linalg.cholesky(K)
    alpha = np.linalg.solve(L, y)
    diagonal = np.arange(y.shape[-1])
    return -0.5 * np.sum(alpha * alpha) - np.sum(np.log(L[diagonal, diagonal]))


DERIVATIVES = {
    "solve": (lambda A, b: np.linalg.solve(A, b), lambda r: (general(r), r.standard_normal(3))),
    "solve-matrix-broadcast": (lambda A, B: np.linalg.solve(A, B),
                               lambda r: (general(r, 2, 1), r.standard_normal((3, 3, 2)))),
    "solve-shared-b": (lambda A, b: np.linalg.solve(A, b),
                       lambda r: (general(r, 2), r.standard_normal((3, 1)))),
    "inv": (np.linalg.inv, lambda r: (general(r),)),
    "inv-batched": (np.linalg.inv, lambda r: (general(r, 2),)),
    "det": (np.linalg.det, lambda r: (general(r),)),
    "det-batched": (np.linalg.det, lambda r: (general(r, 2) @ np.diag([1.0, -1.0, 1.0]),)),
    "slogdet": (lambda A: np.linalg.slogdet(A)[1], lambda r: (general(r, 2),)),
    "slogdet-sign": (lambda A: np.linalg.slogdet(A)[0] * np.linalg.slogdet(A)[1],
                     lambda r: (general(r) @ np.diag([1.0, -1.0, 1.0]),)),
    "cholesky-symmetrised": (lambda A: np.linalg.cholesky(0.5 * (A + A.transpose(-1, -2))),
                             lambda r: (spd(r, 2),)),
    "cholesky-upper": (lambda A: np.linalg.cholesky(A + A.transpose(-1, -2), upper=True),
                       lambda r: (0.5 * spd(r),)),
    "gaussian-loglik": (lambda K, y: _gaussian_loglik(_sym(K), y),
                        lambda r: (spd(r, n=4), r.standard_normal(4))),
}


@pytest.mark.parametrize("case", list(DERIVATIVES))
def test_gradcheck(case):
    f, make = DERIVATIVES[case]
    gradcheck(f, list(make(rng_for(case))))


def _a_gaussian_loglik(K, y):
    L = anp.linalg.cholesky(K)
    alpha = anp.linalg.solve(L, y)
    diagonal = np.arange(y.shape[-1])      # (anp.diagonal has no second derivative)
    return -0.5 * anp.sum(alpha * alpha) - anp.sum(anp.log(L[diagonal, diagonal]))


def _j_gaussian_loglik(K, y):
    L = jnp.linalg.cholesky(K)
    alpha = jnp.linalg.solve(L, y)
    return -0.5 * jnp.sum(alpha * alpha) - jnp.sum(jnp.log(jnp.diagonal(L)))


def _sym(A):
    """The symmetric part of a matrix (numpy's cholesky reads only the lower triangle)."""
    return 0.5 * (A + A.T)


# name -> (tapegrad/numpy f, autograd f, jax f, inputs); each f returns a scalar
REFERENCES = {
    "slogdet": (lambda A: np.linalg.slogdet(A)[1], lambda A: anp.linalg.slogdet(A)[1],
                lambda A: jnp.linalg.slogdet(A)[1], lambda r: (general(r),)),
    "slogdet-batched": (lambda A: np.sum(np.linalg.slogdet(A)[1] ** 2),
                        lambda A: anp.sum(anp.linalg.slogdet(A)[1] ** 2),
                        lambda A: jnp.sum(jnp.linalg.slogdet(A)[1] ** 2),
                        lambda r: (general(r, 2),)),
    "det": (np.linalg.det, anp.linalg.det, jnp.linalg.det, lambda r: (general(r),)),
    "inv": (lambda A: np.sum(np.linalg.inv(A) ** 2), lambda A: anp.sum(anp.linalg.inv(A) ** 2),
            lambda A: jnp.sum(jnp.linalg.inv(A) ** 2), lambda r: (general(r),)),
    "solve": (lambda A, b: np.sum(np.sin(np.linalg.solve(A, b))),
              lambda A, b: anp.sum(anp.sin(anp.linalg.solve(A, b))),
              lambda A, b: jnp.sum(jnp.sin(jnp.linalg.solve(A, b))),
              lambda r: (general(r), r.standard_normal(3))),
    "cholesky": (lambda A: np.sum(np.sin(np.linalg.cholesky(_sym(A)))),
                 lambda A: anp.sum(anp.sin(anp.linalg.cholesky(_sym(A)))),
                 lambda A: jnp.sum(jnp.sin(jnp.linalg.cholesky(_sym(A)))),
                 lambda r: (spd(r),)),
    "gaussian-loglik": (_gaussian_loglik, _a_gaussian_loglik, _j_gaussian_loglik,
                        lambda r: (spd(r, n=4), r.standard_normal(4))),
}


@pytest.mark.parametrize("case", list(REFERENCES))
def test_against_autograd_and_jax(case):
    f, fa, fj, make = REFERENCES[case]
    args = make(rng_for(case))
    for i in range(len(args)):
        got = tg.grad(f, argnums=i)(*args)
        np.testing.assert_allclose(got, autograd.grad(fa, i)(*args), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(got, jax.grad(fj, i)(*args), rtol=1e-9, atol=1e-12)
    H = tg.hessian(f)(*args)
    np.testing.assert_allclose(H, autograd.hessian(fa)(*args), rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(H, jax.hessian(fj)(*args), rtol=1e-8, atol=1e-10)


def test_hessian_of_gaussian_loglik_in_y_and_cross_terms():
    K, y = spd(rng_for("ll cross"), n=3), rng_for("ll y").standard_normal(3)
    H = tg.hessian(_gaussian_loglik, argnums=(0, 1))(K, y)
    J = jax.hessian(_j_gaussian_loglik, argnums=(0, 1))(K, y)
    for i in range(2):
        for j in range(2):
            np.testing.assert_allclose(H[i][j], J[i][j], rtol=1e-8, atol=1e-10)


# ---- singular inputs ---------------------------------------------------------------------------

SINGULAR = np.array([[1.0, 2.0], [2.0, 4.0]])
NOT_PD = np.array([[1.0, 2.0], [2.0, 1.0]])


@pytest.mark.parametrize("f, A, message", [
    (lambda A: np.sum(np.linalg.solve(A, np.ones(2))), SINGULAR, "Singular matrix"),
    (lambda A: np.sum(np.linalg.inv(A)), SINGULAR, "Singular matrix"),
    (lambda A: np.sum(np.linalg.cholesky(A)), NOT_PD, "Matrix is not positive definite"),
], ids=["solve", "inv", "cholesky"])
def test_singular_input_raises_numpys_error_when_tracing_and_replaying(f, A, message):
    with pytest.raises(np.linalg.LinAlgError, match=message):
        np.asarray(f(A))                                  # numpy's own
    with pytest.raises(np.linalg.LinAlgError, match=message):
        tg.grad(f)(A)                                     # at the trace
    g = tg.grad(f)
    g(np.eye(2) * 2.0)                                    # traced at a regular matrix
    with pytest.raises(np.linalg.LinAlgError, match=message):
        g(A)                                              # the replay


def test_slogdet_and_det_of_a_singular_matrix_are_numpys_and_their_gradient_raises():
    sign, logdet = np.linalg.slogdet(tg.tensor(SINGULAR, requires_grad=True))
    assert float(sign.detach().numpy()) == 0.0 and float(logdet.detach().numpy()) == -np.inf
    assert float(np.linalg.det(tg.tensor(SINGULAR, requires_grad=True)).detach().numpy()) == 0.0
    g = tg.value_and_grad(lambda A: np.linalg.slogdet(A)[1])
    g(np.eye(2) * 2.0)
    with pytest.raises(np.linalg.LinAlgError, match="Singular matrix"):
        g(SINGULAR)
    with pytest.raises(np.linalg.LinAlgError, match="Singular matrix"):
        tg.grad(np.linalg.det)(SINGULAR)


def test_eager_backward_of_solve():
    rng = rng_for("eager solve")
    A, b = general(rng), rng.standard_normal(3)
    At, bt = tg.tensor(A, requires_grad=True), tg.tensor(b, requires_grad=True)
    np.sum(np.linalg.solve(At, bt) ** 2).backward()
    ga, gb = autograd.grad(lambda A, b: anp.sum(anp.linalg.solve(A, b) ** 2), (0, 1))(A, b)
    np.testing.assert_allclose(At.grad.numpy(), ga, rtol=1e-10)
    np.testing.assert_allclose(bt.grad.numpy(), gb, rtol=1e-10)


# ---- vmap ------------------------------------------------------------------------------------

VMAPPED = {
    "solve": lambda A, b: np.sum(np.linalg.solve(A, b) ** 2),
    "inv-det": lambda A, b: np.sum(np.linalg.inv(A) @ b) * np.linalg.det(A),
    "gaussian-loglik": lambda A, b: _gaussian_loglik(A @ A.T + 3 * np.eye(3), b),
}


@pytest.mark.parametrize("case", list(VMAPPED))
@pytest.mark.parametrize("transform", ["value", "grad"])
def test_vmap_interpreter_matches_a_loop(case, transform):
    f = VMAPPED[case]
    fn = f if transform == "value" else tg.grad(f, argnums=(0, 1))
    rng = rng_for(f"vmap {case}")
    A, b = general(rng, 7), rng.standard_normal((7, 3))
    got = tg.vmap(fn, fuse=False)(A, b)
    loop = [fn(A[p], b[p]) for p in range(7)]
    if transform == "value":
        np.testing.assert_allclose(got, np.array(loop), rtol=1e-12)
    else:
        for j in range(2):
            np.testing.assert_allclose(got[j], np.array([g[j] for g in loop]), rtol=1e-10)


def test_vmap_fuse_true_keeps_linalg_tapes_with_the_interpreter_without_a_warning():
    f = VMAPPED["inv-det"]
    rng = rng_for("vmap fused")
    A, b = general(rng, 5), rng.standard_normal((5, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = tg.vmap(tg.grad(f), fuse=True)(A, b)
    np.testing.assert_allclose(got, np.array([tg.grad(f)(A[p], b[p]) for p in range(5)]),
                               rtol=1e-10)


def test_vmap_at_a_singular_point_gives_nan_not_an_error():
    f = tg.grad(lambda A: np.sum(np.linalg.solve(A, np.ones(2))))
    A = np.stack([np.eye(2) * 2.0, SINGULAR, np.eye(2)])
    g = tg.vmap(f, fuse=False)(A)
    np.testing.assert_allclose(g[0], f(A[0]))
    np.testing.assert_allclose(g[2], f(A[2]))
    assert not np.isfinite(g[1]).all()


def test_vmap_of_slogdet_and_det_at_a_singular_point_gives_numpys_values():
    A = np.stack([np.eye(2) * 2.0, SINGULAR, -np.eye(2)])
    sign, logdet = tg.vmap(lambda A: np.linalg.slogdet(A), fuse=False)(A)
    expected = np.linalg.slogdet(A)
    np.testing.assert_array_equal(sign, expected.sign)
    np.testing.assert_allclose(logdet, expected.logabsdet, rtol=1e-15)
    np.testing.assert_allclose(tg.vmap(np.linalg.det, fuse=False)(A), np.linalg.det(A),
                               rtol=1e-15)


@pytest.mark.parametrize("name", ["solve", "slogdet", "cholesky"])
def test_the_gpu_refuses_linalg_primitives_by_name(name):
    with pytest.raises(NotImplementedError, match=f"the {name} primitive has no GPU"):
        codegen.scratch_rows([BY_NAME["add"], BY_NAME[name]], [4, 4])
