"""numpy's spectral linear algebra on tensors (`eager.numpy_api.linalg`): eigh, eigvalsh, svd,
the singular-value norms, pinv, qr.

* Forward: numpy's values, bit for bit, eager, at a replay (the flat interpreter calls LAPACK's
  routine with numpy's arguments) and under vmap (the column interpreter does too), for both
  UPLO and stacked matrices; eigenvectors' signs included.
* Derivatives: `gradcheck` (VJP, JVP, second order against finite differences) of functions of
  the symmetric part of the input (numpy reads one triangle; the gradient is the symmetric one,
  as HIPS autograd's and JAX's); first and second derivatives against HIPS autograd and JAX.
* Repeated eigenvalues and singular values: finite gradients of the values, inf/NaN where the
  vectors' derivative (through a nonzero coupling) or a second derivative meets them.
* vmap (interpreter tier; fuse=True keeps these tapes with the interpreter) against a loop.
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


def symmetric(rng, *shape, n=3):
    X = rng.standard_normal(shape + (n, n))
    return X + np.swapaxes(X, -1, -2)


def sym(A):
    """The symmetric part (numpy's eigh reads one triangle: finite differences of single
    entries see that triangle only, those of a function of sym(A) the symmetric gradient)."""
    return 0.5 * (A + np.swapaxes(A, -1, -2))


# ---- forward: numpy's values, bit for bit ----------------------------------------------------

FORWARD = {  # name -> (f returning a tuple of arrays, input shape)
    "eigh": (lambda A: tuple(np.linalg.eigh(A)), (4, 4)),
    "eigh-upper": (lambda A: tuple(np.linalg.eigh(A, UPLO="U")), (4, 4)),
    "eigh-batched": (lambda A: tuple(np.linalg.eigh(A, "u")), (2, 3, 5, 5)),
    "eigh-1x1": (lambda A: tuple(np.linalg.eigh(A)), (1, 1)),
    "eigvalsh": (lambda A: (np.linalg.eigvalsh(A),), (6, 6)),
    "eigvalsh-upper-batched": (lambda A: (np.linalg.eigvalsh(A, UPLO="U"),), (3, 4, 4)),
}


def _check_forward(f, shape, case):
    """f's arrays equal numpy's bit for bit: eager, at a replay (traced at another point) and
    under vmap (the interpreter tier)."""
    rng = rng_for(case)
    A, other = rng.standard_normal(shape), rng.standard_normal(shape)   # not symmetric
    for got, expected in zip(f(tg.tensor(A, requires_grad=True)), f(A)):
        np.testing.assert_array_equal(got.detach().numpy(), expected)
    traced = tg.value_and_grad(lambda A: (np.sum(f(A)[0]), f(A)), has_aux=True)
    traced(A)                                              # the trace
    (_, replayed), _ = traced(other)                       # a replay
    for got, expected in zip(replayed, f(other)):
        np.testing.assert_array_equal(got, expected)
    batch = np.stack([A, other, 2 * A])
    for got, expected in zip(tg.vmap(f, fuse=False)(batch), f(batch)):
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("case", list(FORWARD))
def test_forward_is_numpys_bit_for_bit(case):
    f, shape = FORWARD[case]
    _check_forward(f, shape, case)


def test_uplo_is_checked_as_numpy_does():
    with pytest.raises(ValueError, match="UPLO argument must be 'L' or 'U'"):
        np.linalg.eigh(tg.tensor(np.eye(2), requires_grad=True), UPLO="X")


# ---- derivatives ------------------------------------------------------------------------------

def _vectors_and_values(UPLO):
    weights = np.arange(1.0, 4.0)

    def f(A):
        w, V = np.linalg.eigh(sym(A), UPLO)
        return np.sum(np.sin(V) * weights) + np.sum(w ** 3)
    return f


DERIVATIVES = {
    "eigh-lower": (_vectors_and_values("L"), (3, 3)),
    "eigh-upper": (_vectors_and_values("U"), (3, 3)),
    "eigh-vectors-batched": (lambda A: np.linalg.eigh(sym(A))[1] ** 2, (2, 3, 3)),
    "eigvalsh": (lambda A: np.linalg.eigvalsh(sym(A)), (4, 4)),
    "eigvalsh-upper-batched": (lambda A: np.linalg.eigvalsh(sym(A), "U") ** 2, (2, 3, 3)),
}


@pytest.mark.parametrize("case", list(DERIVATIVES))
def test_gradcheck(case):
    f, shape = DERIVATIVES[case]
    gradcheck(f, [rng_for(case).standard_normal(shape)])


def _reference_functions(UPLO):
    """tapegrad, autograd and JAX versions of a scalar function of eigh; the JAX one is
    invariant under the eigenvectors' signs (JAX's LAPACK may choose others)."""
    weights = np.arange(1.0, 4.0)

    def f(A):
        w, V = np.linalg.eigh(sym(A), UPLO)
        return np.sum(np.sin(V) * weights) + np.sum(V ** 4 * weights) + np.sum(w ** 3)

    def fa(A):
        w, V = anp.linalg.eigh(0.5 * (A + A.T), UPLO)
        return anp.sum(anp.sin(V) * weights) + anp.sum(V ** 4 * weights) + anp.sum(w ** 3)

    def fj(A):
        w, V = jnp.linalg.eigh(0.5 * (A + A.T), UPLO)
        return jnp.sum(V ** 4 * weights) + jnp.sum(w ** 3)

    def f_invariant(A):
        w, V = np.linalg.eigh(sym(A), UPLO)
        return np.sum(V ** 4 * weights) + np.sum(w ** 3)
    return f, fa, fj, f_invariant


@pytest.mark.parametrize("UPLO", ["L", "U"])
def test_against_autograd_and_jax(UPLO):
    f, fa, fj, f_invariant = _reference_functions(UPLO)
    A = rng_for(f"reference {UPLO}").standard_normal((3, 3))
    np.testing.assert_allclose(tg.grad(f)(A), autograd.grad(fa)(A), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(tg.hessian(f)(A), autograd.hessian(fa)(A), rtol=1e-8,
                               atol=1e-10)
    np.testing.assert_allclose(tg.grad(f_invariant)(A), jax.grad(fj)(A), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(tg.hessian(f_invariant)(A), jax.hessian(fj)(A), rtol=1e-8,
                               atol=1e-10)


def test_eigvalsh_against_autograd_and_jax():
    A = rng_for("eigvalsh reference").standard_normal((4, 4))

    def f(A):
        return np.sum(np.exp(np.linalg.eigvalsh(sym(A))))
    # (autograd has no eigvalsh derivative: its eigh's eigenvalues)
    fa = lambda A: anp.sum(anp.exp(anp.linalg.eigh(0.5 * (A + A.T))[0]))   # noqa: E731
    fj = lambda A: jnp.sum(jnp.exp(jnp.linalg.eigvalsh(0.5 * (A + A.T))))   # noqa: E731
    np.testing.assert_allclose(tg.grad(f)(A), autograd.grad(fa)(A), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(tg.grad(f)(A), jax.grad(fj)(A), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(tg.hessian(f)(A), autograd.hessian(fa)(A), rtol=1e-8,
                               atol=1e-10)
    np.testing.assert_allclose(tg.hessian(f)(A), jax.hessian(fj)(A), rtol=1e-8, atol=1e-10)


# ---- repeated eigenvalues ----------------------------------------------------------------------

REPEATED = np.diag([1.0, 1.0, 2.0])


def test_eigenvalue_gradients_stay_finite_at_repeated_eigenvalues():
    for f in (lambda A: np.sum(np.linalg.eigvalsh(A) ** 2),
              lambda A: np.sum(np.linalg.eigh(A)[0] ** 2)):
        g = tg.grad(f)(REPEATED)
        np.testing.assert_allclose(g, 2 * REPEATED, atol=1e-15)        # d tr(A^2) = 2 A
    ga = autograd.grad(lambda A: anp.sum(anp.linalg.eigh(A)[0] ** 2))(REPEATED)
    np.testing.assert_allclose(ga, 2 * REPEATED, atol=1e-15)


COUPLING = np.arange(1.0, 10.0).reshape(3, 3)     # weights coupling the repeated pair


def test_eigenvector_derivatives_at_repeated_eigenvalues_are_not_finite_as_jaxs():
    g = tg.grad(lambda A: np.sum(np.linalg.eigh(A)[1] * COUPLING))(REPEATED)
    gj = jax.grad(lambda A: jnp.sum(jnp.linalg.eigh(A)[1] * COUPLING))(REPEATED)
    assert not np.isfinite(g).all() and not np.isfinite(gj).all()
    H = tg.hessian(lambda A: np.sum(np.linalg.eigvalsh(A) ** 3))(REPEATED)
    assert not np.isfinite(H).all()


def test_an_exactly_zero_coupling_at_repeated_eigenvalues_contributes_zero():
    """The eigenvectors' adjoint enters as F o (V^T gV): where an entry of V^T gV is exactly
    zero its product with F's infinity is taken as zero (JAX gives NaN)."""
    weights = np.arange(1.0, 4.0)
    g = tg.grad(lambda A: np.sum(np.linalg.eigh(A)[1] ** 4 * weights))(REPEATED)
    np.testing.assert_array_equal(g, np.zeros((3, 3)))


# ---- vmap ------------------------------------------------------------------------------------

VMAPPED = {
    "eigh": _vectors_and_values("L"),
    "eigvalsh-upper": lambda A: np.sum(np.linalg.eigvalsh(sym(A), "U") ** 3),
}


@pytest.mark.parametrize("case", list(VMAPPED))
@pytest.mark.parametrize("fuse", [False, True])
def test_vmap_of_the_gradient_matches_a_loop(case, fuse):
    g = tg.grad(VMAPPED[case])
    A = rng_for(f"vmap {case}").standard_normal((7, 3, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("error")          # fuse=True: these tapes stay interpreted
        got = tg.vmap(g, fuse=fuse)(A)
    np.testing.assert_allclose(got, np.array([g(a) for a in A]), rtol=1e-10, atol=1e-12)


def test_vmap_of_second_order_matches_a_loop():
    h = tg.hessian(VMAPPED["eigvalsh-upper"])
    A = rng_for("vmap hessian").standard_normal((3, 3, 3))
    np.testing.assert_allclose(tg.vmap(h, fuse=False)(A), np.array([h(a) for a in A]),
                               rtol=1e-9, atol=1e-12)


def test_the_gpu_refuses_eigh_by_name():
    with pytest.raises(NotImplementedError, match="the eigh primitive has no GPU"):
        codegen.scratch_rows([BY_NAME["add"], BY_NAME["eigh"]], [4, 4])


def test_portable_forward_agrees_with_numpy_up_to_signs():
    """The Jacobi forward (the GPU's and the fused tier's body, run here as Python)."""
    A = rng_for("portable eigh").standard_normal((2, 4, 4))
    V = np.concatenate([A.ravel(), np.zeros(2 * 20)])
    S = np.array([[0, 32], [32, 40]])
    with np.errstate(over="ignore"):          # a rotation's angle from a tiny entry
        BY_NAME["eigh"].rules["fwd"](V, S, 0, -1, -1, 1, np.array([2, 4, 1, 0]), 0.0, 0.0)
    out = V[32:].reshape(2, 20)
    w, v = np.linalg.eigh(A, "U")
    np.testing.assert_allclose(out[:, :4], w, rtol=1e-12, atol=1e-12)
    vectors = out[:, 4:].reshape(2, 4, 4)
    signs = np.sign(np.sum(vectors * v, axis=-2, keepdims=True))
    np.testing.assert_allclose(vectors * signs, v, atol=1e-10)


def test_a_replay_where_lapack_does_not_converge_raises_numpys_error_and_vmap_gives_nan():
    """(numpy's LAPACK raises at a NaN matrix of 3 x 3 or more, and returns NaN below: the
    replay raises at any NaN result.)"""
    f = lambda A: np.sum(np.linalg.eigh(A, "U")[1] * COUPLING)        # noqa: E731
    good, bad = np.diag([1.0, 2.0, 3.0]), np.full((3, 3), np.nan)
    with pytest.raises(np.linalg.LinAlgError, match="Eigenvalues did not converge"):
        np.linalg.eigh(bad)                                 # numpy's own
    g = tg.grad(f)
    g(good)
    with pytest.raises(np.linalg.LinAlgError, match="Eigenvalues did not converge"):
        g(bad)
    got = tg.vmap(tg.grad(f), fuse=False)(np.stack([good, bad]))
    np.testing.assert_allclose(got[0], g(good))
    assert np.isnan(got[1]).all()


# ---- svd ---------------------------------------------------------------------------------------

SVD_FORWARD = {  # name -> (f returning a tuple of arrays, input shape)
    "svd-square-full": (lambda A: tuple(np.linalg.svd(A)), (4, 4)),
    "svd-tall-reduced": (lambda A: tuple(np.linalg.svd(A, full_matrices=False)), (5, 3)),
    "svd-wide-reduced-batched": (lambda A: tuple(np.linalg.svd(A, full_matrices=False)),
                                 (2, 3, 5)),
    "svd-values": (lambda A: (np.linalg.svd(A, compute_uv=False),), (6, 4)),
    "svd-values-batched": (lambda A: (np.linalg.svd(A, compute_uv=False),), (3, 3, 5)),
    "svd-1x1": (lambda A: tuple(np.linalg.svd(A)), (1, 1)),
}


@pytest.mark.parametrize("case", list(SVD_FORWARD))
def test_svd_forward_is_numpys_bit_for_bit(case):
    f, shape = SVD_FORWARD[case]
    _check_forward(f, shape, case)


def _svd_of(full_matrices):
    weights = np.linspace(0.5, 1.5, 3)

    def f(A):
        U, s, Vh = np.linalg.svd(A, full_matrices=full_matrices)
        return np.sum(np.sin(U[..., :3]) * weights) + np.sum(np.cos(Vh[..., :3, :])) \
            + np.sum(s ** 3)
    return f


SVD_DERIVATIVES = {
    "square": (_svd_of(True), (3, 3)),
    "tall": (_svd_of(False), (5, 3)),
    "wide": (_svd_of(False), (3, 4)),
    "wide-batched": (_svd_of(False), (2, 3, 5)),
    "values-tall": (lambda A: np.linalg.svd(A, compute_uv=False) ** 2, (4, 3)),
    "values-wide-batched": (lambda A: np.linalg.svd(A, compute_uv=False), (2, 2, 3)),
}


@pytest.mark.parametrize("case", list(SVD_DERIVATIVES))
def test_svd_gradcheck(case):
    f, shape = SVD_DERIVATIVES[case]
    gradcheck(f, [rng_for(case).standard_normal(shape)])


def _svd_references(shape, values_only):
    weights = np.linspace(0.5, 1.5, min(shape))

    def f(A):
        if values_only:
            return np.sum(np.exp(np.linalg.svd(A, compute_uv=False)))
        U, s, Vh = np.linalg.svd(A, full_matrices=False)
        return np.sum(U ** 4 @ weights) + np.sum(weights @ Vh ** 4) + np.sum(s ** 3)

    def fa(A):
        if values_only:
            return anp.sum(anp.exp(anp.linalg.svd(A, compute_uv=False)))
        U, s, Vh = anp.linalg.svd(A, full_matrices=False)
        return anp.sum(anp.dot(U ** 4, weights)) + anp.sum(anp.dot(weights, Vh ** 4)) \
            + anp.sum(s ** 3)

    def fj(A):
        if values_only:
            return jnp.sum(jnp.exp(jnp.linalg.svd(A, compute_uv=False)))
        U, s, Vh = jnp.linalg.svd(A, full_matrices=False)
        return jnp.sum(U ** 4 @ weights) + jnp.sum(weights @ Vh ** 4) + jnp.sum(s ** 3)
    return f, fa, fj


@pytest.mark.parametrize("shape", [(3, 3), (4, 2), (2, 4)])
@pytest.mark.parametrize("values_only", [False, True], ids=["vectors", "values"])
def test_svd_against_autograd_and_jax(shape, values_only):
    f, fa, fj = _svd_references(shape, values_only)
    A = rng_for(f"svd reference {shape}").standard_normal(shape)
    g, H = tg.grad(f)(A), tg.hessian(f)(A)
    for grad, hessian in ((autograd.grad, autograd.hessian), (jax.grad, jax.hessian)):
        reference = fa if grad is autograd.grad else fj
        np.testing.assert_allclose(g, grad(reference)(A), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(H, hessian(reference)(A), rtol=1e-7, atol=1e-9)


def test_svd_full_matrices_of_a_rectangular_matrix_is_refused_when_recording():
    A = np.ones((3, 2))
    with pytest.raises(NotImplementedError, match="use full_matrices=False"):
        np.linalg.svd(tg.tensor(A, requires_grad=True))
    U, s, Vh = np.linalg.svd(tg.tensor(A))                 # not recording: numpy's
    np.testing.assert_array_equal(U.numpy(), np.linalg.svd(A)[0])


def test_singular_value_gradients_stay_finite_at_repeated_singular_values():
    A = np.diag([2.0, 2.0, 1.0])[:, :3]
    g = tg.grad(lambda A: np.sum(np.linalg.svd(A, compute_uv=False) ** 2))(A)
    np.testing.assert_allclose(g, 2 * A, atol=1e-15)                  # d |A|_F^2 = 2 A
    g = tg.grad(lambda A: np.sum(np.linalg.svd(A)[0] * COUPLING))(A)
    assert not np.isfinite(g).all()


MATRIX_NORMS = [((3, 4), 2, None, False), ((4, 3), -2, None, True), ((3, 3), "nuc", None, False),
                ((2, 3, 4), 2, (2, 0), True), ((2, 3, 4), "nuc", (1, 2), False),
                ((2, 4, 3), -2, (-1, -2), False)]


@pytest.mark.parametrize("shape, ord, axis, keepdims", MATRIX_NORMS,
                         ids=[f"{len(s)}d-{o}-{a}-{k}" for s, o, a, k in MATRIX_NORMS])
def test_singular_value_norms(shape, ord, axis, keepdims):
    x = rng_for(f"norm {ord} {axis} {shape}").standard_normal(shape)

    def f(x):
        return np.linalg.norm(x, ord=ord, axis=axis, keepdims=keepdims)
    np.testing.assert_array_equal(f(tg.tensor(x, requires_grad=True)).detach().numpy(), f(x))
    gradcheck(f, [x])
    grad = jax.grad(lambda x: jnp.sum(jnp.linalg.norm(x, ord=ord, axis=axis,
                                                      keepdims=keepdims)))
    np.testing.assert_allclose(tg.grad(lambda x: np.sum(f(x)))(x), grad(x), rtol=1e-10)


def test_nuclear_norm_against_autograd_second_order():
    x = rng_for("nuc autograd").standard_normal((3, 4))
    H = tg.hessian(lambda x: np.linalg.norm(x, "nuc"))(x)
    np.testing.assert_allclose(H, autograd.hessian(lambda x: anp.linalg.norm(x, "nuc"))(x),
                               rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("fuse", [False, True])
def test_vmap_of_svd_gradients_matches_a_loop(fuse):
    g = tg.grad(_svd_of(False))
    A = rng_for("vmap svd").standard_normal((6, 4, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = tg.vmap(g, fuse=fuse)(A)
    np.testing.assert_allclose(got, np.array([g(a) for a in A]), rtol=1e-10, atol=1e-12)
    h = tg.hessian(lambda A: np.linalg.norm(A, "nuc"))
    np.testing.assert_allclose(tg.vmap(h, fuse=False)(A[:3]), np.array([h(a) for a in A[:3]]),
                               rtol=1e-9, atol=1e-12)


def test_portable_svd_forward_agrees_with_numpy_up_to_signs():
    for m, n in ((4, 3), (2, 5)):
        A = rng_for(f"portable svd {m} {n}").standard_normal((m, n))
        k = min(m, n)
        size = k * (1 + m + n)
        V = np.concatenate([A.ravel(), np.zeros(size)])
        S = np.array([[0, m * n], [m * n, size]])
        with np.errstate(over="ignore"):
            BY_NAME["svd"].rules["fwd"](V, S, 0, -1, -1, 1, np.array([1, m, n, 0]), 0.0, 0.0)
        U, s, Vh = np.linalg.svd(A, full_matrices=False)
        out = V[m * n:]
        np.testing.assert_allclose(out[:k], s, rtol=1e-12)
        got_U = out[k:k + m * k].reshape(m, k)
        signs = np.sign(np.sum(got_U * U, axis=0))
        np.testing.assert_allclose(got_U * signs, U, atol=1e-10)
        np.testing.assert_allclose(out[k + m * k:].reshape(k, n) * signs[:, None], Vh,
                                   atol=1e-10)


# ---- pinv ------------------------------------------------------------------------------------

PINV = {"square": (3, 3), "tall": (4, 2), "wide-batched": (2, 2, 3)}


@pytest.mark.parametrize("case", list(PINV))
def test_pinv(case):
    shape = PINV[case]
    rng = rng_for(f"pinv {case}")
    A, other = rng.standard_normal(shape), rng.standard_normal(shape)
    np.testing.assert_allclose(np.linalg.pinv(tg.tensor(A, requires_grad=True)).detach().numpy(),
                               np.linalg.pinv(A), rtol=1e-13, atol=1e-14)
    f = tg.value_and_grad(lambda A: np.sum(np.sin(np.linalg.pinv(A))))
    f(A)
    value, _ = f(other)                                       # a replay
    np.testing.assert_allclose(value, np.sum(np.sin(np.linalg.pinv(other))), rtol=1e-13)
    gradcheck(lambda A: np.linalg.pinv(A), [A])
    if len(shape) == 2:
        fa = lambda A: anp.sum(anp.sin(anp.linalg.pinv(A)))   # noqa: E731
        g = lambda A: np.sum(np.sin(np.linalg.pinv(A)))       # noqa: E731
        np.testing.assert_allclose(tg.grad(g)(A), autograd.grad(fa)(A), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(tg.hessian(g)(A), autograd.hessian(fa)(A), rtol=1e-7,
                                   atol=1e-9)


def test_pinv_of_a_rank_deficient_matrix_discards_small_singular_values_at_each_replay():
    rank_one = np.outer([1.0, 2.0, 3.0], [1.0, -1.0])
    f = tg.value_and_grad(lambda A: np.sum(np.linalg.pinv(A) ** 2))
    f(rng_for("pinv full rank").standard_normal((3, 2)))      # traced at a full-rank matrix
    value, g = f(rank_one)
    np.testing.assert_allclose(value, np.sum(np.linalg.pinv(rank_one) ** 2), rtol=1e-12)
    ga = autograd.grad(lambda A: anp.sum(anp.linalg.pinv(A) ** 2))(rank_one)
    assert np.isfinite(g).all()
    np.testing.assert_allclose(g, ga, rtol=1e-8, atol=1e-10)
    got = tg.vmap(f, fuse=False)(np.stack([rank_one, 2 * rank_one]))
    np.testing.assert_allclose(got[1][1], f(2 * rank_one)[1], rtol=1e-10)


# ---- qr --------------------------------------------------------------------------------------

QR_FORWARD = {
    "qr-square": (lambda A: tuple(np.linalg.qr(A)), (4, 4)),
    "qr-tall-batched": (lambda A: tuple(np.linalg.qr(A)), (2, 5, 3)),
    "qr-r": (lambda A: (np.linalg.qr(A, mode="r"),), (4, 2)),
}


@pytest.mark.parametrize("case", list(QR_FORWARD))
def test_qr_forward_is_numpys_bit_for_bit(case):
    f, shape = QR_FORWARD[case]
    _check_forward(f, shape, case)


QR_DERIVATIVES = {
    "square": (lambda A: np.sum(np.sin(np.linalg.qr(A)[0])) + np.sum(np.linalg.qr(A)[1] ** 2),
               (3, 3)),
    "tall-batched": (lambda A: np.linalg.qr(A)[0] * np.sum(np.linalg.qr(A)[1]), (2, 4, 2)),
    "r": (lambda A: np.linalg.qr(A, "r") ** 3, (3, 2)),
}


@pytest.mark.parametrize("case", list(QR_DERIVATIVES))
def test_qr_gradcheck(case):
    f, shape = QR_DERIVATIVES[case]
    gradcheck(f, [rng_for(f"qr {case}").standard_normal(shape)])


@pytest.mark.parametrize("shape", [(3, 3), (4, 2)])
def test_qr_against_jax(shape):
    def f(A):
        Q, R = np.linalg.qr(A)
        return np.sum(np.sin(Q)) + np.sum(R ** 3)

    def fa(A):
        Q, R = anp.linalg.qr(A)
        return anp.sum(anp.sin(Q)) + anp.sum(R ** 3)

    def fj(A):
        Q, R = jnp.linalg.qr(A)
        return jnp.sum(jnp.sin(Q)) + jnp.sum(R ** 3)
    A = rng_for(f"qr reference {shape}").standard_normal(shape)
    with pytest.raises(NotImplementedError, match="VJP of qr"):
        autograd.grad(fa)(A)                       # HIPS autograd has no qr derivative
    np.testing.assert_allclose(tg.grad(f)(A), jax.grad(fj)(A), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(tg.hessian(f)(A), jax.hessian(fj)(A), rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("mode, shape", [("complete", (3, 2)), ("raw", (2, 2)),
                                         ("reduced", (2, 3))])
def test_qr_refuses_what_it_cannot_differentiate(mode, shape):
    A = np.ones(shape)
    with pytest.raises(NotImplementedError, match=f"np.linalg.qr\\(mode='{mode}'\\)"):
        np.linalg.qr(tg.tensor(A, requires_grad=True), mode)
    np.testing.assert_array_equal(np.linalg.qr(tg.tensor(A), mode)[0].numpy(),
                                  np.linalg.qr(A, mode)[0])     # not recording: numpy's


def test_vmap_of_qr_gradients_matches_a_loop():
    g = tg.grad(QR_DERIVATIVES["square"][0])
    A = rng_for("vmap qr").standard_normal((5, 3, 3))
    np.testing.assert_allclose(tg.vmap(g, fuse=False)(A), np.array([g(a) for a in A]),
                               rtol=1e-10, atol=1e-12)
