"""Sparse Jacobians and Hessians: colors, replay time against the dense transforms, detection.

    python bench/sparse_derivatives.py [--quick]

(a) Jacobian of a 1-D finite-difference residual, n = 1000 (tridiagonal 1000 x 1000):
    F(u)_i = u_{i-1} - 2 u_i + u_{i+1} - h^2 (u_i^3 - 1), u_0 = u_{n+1} = 0.
    Colors (goal <= 3); `jacobian(F, sparsity="auto")` after the first call against the dense
    `jacrev` and `jacfwd` (goal >= 50x faster); equal to the dense Jacobian.
(b) Hessian of the chained Rosenbrock function, n = 10^4:
    f(x) = sum(100 (x[1:] - x[:-1]^2)^2 + (1 - x[:-1])^2).
    Colors (goal <= 5); `hessian(f, sparsity="auto")` after the first call against one
    gradient (goal <= 10x); equal to the dense Hessian on a smaller n (10^4 squared does not fit
    a dense check in a benchmark's time).
(c) Detection of the pattern (Jacobian of (a), Hessian of (b)) against one gradient of the
    same function (goal <= 5x).
(d) Detection against one gradient on workloads beyond the goals' two: a 2-D Poisson residual
    on a 100 x 100 grid (np.pad and 2-D slices: index maps, not stencils), squared differences
    of 4000 random pairs of 2000 points (a gather of pairs), the "Fastest Autograd in the West"
    graph of 1000 scalar operations (bench/faw.py: every entry a scalar or a 4-vector).

Times are the minimum over many rounds (each round times one batch of every function in turn,
interleaved): the machine is shared, so the minimum is the figure least disturbed by other
processes, and it is what is printed. Detection is timed in batches of as many calls as the
gradient it is compared with: the first call after another function's batch (a dense Jacobian
evicts the caches) is several times slower than the next ones, so batches of different lengths
would weigh that first call differently on the two sides of the ratio.
"""
import argparse
import os
import sys
import timeit

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

import tapegrad as tg  # noqa: E402
from tapegrad.transforms import sparsity  # noqa: E402

GOALS = {"jac_colors": 3, "jac_speedup": 50, "hess_colors": 5, "hess_vs_grad": 10,
         "detect_vs_grad": 5}


def residual(u):
    h2 = 1.0 / (u.size + 1) ** 2
    padded = np.concatenate([np.zeros(1), u, np.zeros(1)])
    return padded[:-2] - 2 * u + padded[2:] - h2 * (u ** 3 - 1.0)


def rosenbrock(x):
    return np.sum(100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)


def race(rounds, **timed):
    """{name: the minimum per-call time in seconds}: `timed` maps a name to (function, calls per
    batch); each round times one batch of every function in turn (interleaved, so that load
    from other processes hits them alike), `rounds` rounds."""
    best = dict.fromkeys(timed, float("inf"))
    for _ in range(rounds):
        for name, (fn, number) in timed.items():
            best[name] = min(best[name], timeit.timeit(fn, number=number) / number)
    return best


def plan_of(transform):
    tape = next(iter(transform.traced.cache.values()))[0]
    return tape, next(v for k, v in tape.derived.items() if k[0][0].startswith("sparse"))


def jacobian_case(repeat):
    n = 1000
    u = np.random.default_rng(0).normal(size=n)
    jac = tg.jacobian(residual, sparsity="auto")
    J = jac(u)
    rev, fwd = tg.jacrev(residual), tg.jacfwd(residual)
    dense = rev(u)
    assert np.allclose(J.toarray(), dense, rtol=0, atol=1e-12) and np.allclose(fwd(u), dense)
    tape, plan = plan_of(jac)
    gradient(u)
    t = race(repeat, sparse=(lambda: jac(u), 100), rev=(lambda: rev(u), 1),
             fwd=(lambda: fwd(u), 1), grad=(lambda: gradient(u), 100),
             detect=(lambda: sparsity.jacobian_pattern(tape, tape.input_slots,
                                                       tape.output_slots), 100))
    t_sparse, t_rev, t_fwd, t_detect, t_grad = (t[k] for k in ("sparse", "rev", "fwd", "detect",
                                                               "grad"))
    print(f"(a) residual Jacobian {n} x {n}: {plan.n_colors} colors ({plan.mode}; goal <= "
          f"{GOALS['jac_colors']}), {J.nnz} nonzeros, equal to the dense jacrev")
    print(f"    sparse {t_sparse * 1e6:9.1f} us   dense jacrev {t_rev * 1e6:9.1f} us "
          f"({t_rev / t_sparse:6.0f}x)   dense jacfwd {t_fwd * 1e6:9.1f} us "
          f"({t_fwd / t_sparse:6.0f}x; goal >= {GOALS['jac_speedup']}x)")
    print(f"    detection {t_detect * 1e6:9.1f} us = {t_detect / t_grad:5.1f}x one gradient "
          f"of sum(F^2) ({t_grad * 1e6:.1f} us; goal <= {GOALS['detect_vs_grad']}x)")


gradient = tg.grad(lambda u: np.sum(residual(u) ** 2))


def hessian_case(repeat):
    n = 10_000
    x = np.random.default_rng(1).normal(size=n)
    small = x[:300]
    assert np.allclose(tg.hessian(rosenbrock, sparsity="auto")(small).toarray(),
                       tg.hessian(rosenbrock)(small), rtol=1e-12, atol=1e-9)
    hess = tg.hessian(rosenbrock, sparsity="auto")
    H = hess(x)
    grad = tg.grad(rosenbrock)
    g = grad(x)
    assert np.allclose(H @ np.ones(n), tg.hvp(rosenbrock, x, np.ones(n)), rtol=1e-12,
                       atol=1e-8) and g.shape == (n,)
    tape, plan = plan_of(hess)
    t = race(repeat, hess=(lambda: hess(x), 10), grad=(lambda: grad(x), 50),
             detect=(lambda: sparsity.hessian_pattern(tape, tape.input_slots,
                                                      tape.output_slots[0]), 50))
    t_hess, t_grad, t_detect = t["hess"], t["grad"], t["detect"]
    print(f"(b) chained Rosenbrock Hessian, n = {n}: {plan.n_colors} colors (goal <= "
          f"{GOALS['hess_colors']}), {H.nnz} nonzeros, equal to the dense at n = 300 and to "
          "hvp at n = 10^4")
    print(f"    sparse {t_hess * 1e6:9.1f} us = {t_hess / t_grad:5.1f}x one gradient "
          f"({t_grad * 1e6:.1f} us; goal <= {GOALS['hess_vs_grad']}x)")
    print(f"    detection {t_detect * 1e6:9.1f} us = {t_detect / t_grad:5.1f}x one gradient "
          f"(goal <= {GOALS['detect_vs_grad']}x)")


def poisson_2d(u):
    n = int(round(u.size ** 0.5))
    U = u.reshape(n, n)
    P = np.pad(U, 1)
    return (P[:-2, 1:-1] + P[2:, 1:-1] + P[1:-1, :-2] + P[1:-1, 2:] - 4 * U
            + 0.01 * np.exp(U)).ravel()


def pair_differences(n):
    rng = np.random.default_rng(2)
    i, j = rng.integers(0, n, 2 * n), rng.integers(0, n, 2 * n)
    return lambda x: (x[i] - x[j]) ** 2


def other_detections(repeat):
    import faw
    cases = [("2-D Poisson residual, 100 x 100", poisson_2d, 10_000),
             ("squared differences of 4000 random pairs", pair_differences(2000), 2000),
             ("FAW graph, N = 1000 scalar operations", faw.numpy_function(1000), None)]
    print("(d) detection (Jacobian pattern) against one gradient of the sum of squares, other "
          "workloads")
    for name, f, n in cases:
        x = faw.start_point() if n is None else np.random.default_rng(3).normal(size=n) * 0.1
        tape = tg.trace(f, x)
        grad = tg.grad(lambda x: np.sum(f(x) ** 2))
        grad(x)
        detect = lambda: sparsity.jacobian_pattern(tape, tape.input_slots, tape.output_slots)
        nnz = detect().nnz
        t = race(repeat, grad=(lambda: grad(x), 20), detect=(detect, 20))
        print(f"    {name:42s} {len(tape):5d} entries, {nnz:6d} nonzeros: detection "
              f"{t['detect'] * 1e6:8.1f} us = {t['detect'] / t['grad']:5.1f}x one gradient "
              f"({t['grad'] * 1e6:.1f} us)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few repetitions (smoke test)")
    repeat = 3 if parser.parse_args().quick else 30
    print(f"minimum over {repeat} interleaved rounds (a shared machine: the least disturbed figure)"
          f"; load average {os.getloadavg()[0]:.1f}")
    jacobian_case(repeat)
    hessian_case(repeat)
    other_detections(max(3, repeat // 3))


if __name__ == "__main__":
    main()
