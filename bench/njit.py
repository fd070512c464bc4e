"""Gradients called from numba code: `tg.compiled(f, x).grad_into` inside an `@njit` loop.

    python bench/njit.py [--quick] [--json PATH]

Rosenbrock n=10, one gradient per loop iteration at each of P points, on one thread. Columns,
per point (nanoseconds):
  * `tg.compiled(f, x).grad_into(x, out)` called from an `@njit` loop (the interpreter's sweeps,
    called through their addresses);
  * `tg.compiled(f, x).fused_grad_into(x, out)` in the same loop (the fused tier's straight-line
    gradient, run for one point);
  * `tg.vmap(tg.grad(f), fuse=True)` at a large batch, divided by the batch size (the fused
    kernel: the tape compiled into straight-line code per point; numba limited to one thread);
  * a hand-written `@njit` gradient in the same loop;
  * the Python-level `tg.grad(f)(x)` call.
Goals: compiled <= 1.3x the fused kernel per point and <= 2x hand-written (printed for both
members).

Timing: the machine this was written on is shared and noisy, so each figure is the minimum
over many timed batches of the process's CPU time (not a median of wall time as in the other
scripts): the least disturbed run.
Every result is checked against the hand-written gradient before it is timed.
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as C  # noqa: E402  (first: it applies --threads before numpy loads)
import numpy as np  # noqa: E402

GOAL_VS_FUSED, GOAL_VS_HAND = 1.3, 2.0
N = 10


def rosenbrock(x):
    return np.sum(100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)


def fastest(fn, repeat, number=1):
    """The least CPU time of `repeat` batches of `number` calls of fn(), per call, in seconds
    (`time.process_time`: on a shared machine a batch preempted by other processes does not
    count their time; everything here runs on one thread)."""
    best = np.inf
    for _ in range(repeat):
        start = time.process_time()
        for _ in range(number):
            fn()
        best = min(best, (time.process_time() - start) / number)
    return best


def loops(grad_into):
    """@njit loops over the points of X: one through `grad_into`, one hand-written."""
    from numba import njit

    @njit
    def compiled_loop(X, G):
        for i in range(X.shape[0]):
            grad_into(X[i], G[i])

    @njit
    def hand_loop(X, G):
        n = X.shape[1]
        for i in range(X.shape[0]):
            x, g = X[i], G[i]
            g[:] = 0.0
            for j in range(n - 1):
                d = x[j + 1] - x[j] * x[j]
                g[j] += -400.0 * d * x[j] - 2.0 * (1.0 - x[j])
                g[j + 1] += 200.0 * d
    return compiled_loop, hand_loop


def main():
    args = C.options(__doc__.splitlines()[0])
    import numba
    import tapegrad as tg
    numba.set_num_threads(1)
    points = 2_000 if args.quick else 20_000
    batch = 100_000 if args.quick else 1_000_000
    repeat = 5 if args.quick else 40
    rng = np.random.default_rng(0)
    X = rng.uniform(-2, 2, (points, N))
    X_big = rng.uniform(-2, 2, (batch, N))

    c = tg.compiled(rosenbrock, X[0])
    compiled_loop, hand_loop = loops(c.grad_into)
    fused_member_loop, _ = loops(c.fused_grad_into)
    G_compiled, G_hand, G_member = np.empty_like(X), np.empty_like(X), np.empty_like(X)
    compiled_loop(X, G_compiled)
    hand_loop(X, G_hand)
    fused_member_loop(X, G_member)
    fused = tg.vmap(tg.grad(rosenbrock), fuse=True)
    python_grad = tg.grad(rosenbrock)
    for result in (G_compiled, G_member, fused(X), [python_grad(x) for x in X[:10]]):
        np.testing.assert_allclose(result, G_hand[:len(result)], rtol=1e-12, atol=1e-9)
    fused(X_big)

    per_point = {
        "compiled (njit loop)": fastest(lambda: compiled_loop(X, G_compiled), repeat) / points,
        "compiled fused member": fastest(lambda: fused_member_loop(X, G_member), repeat) / points,
        "vmap fused": fastest(lambda: fused(X_big), max(3, repeat // 4)) / batch,
        "hand-written njit": fastest(lambda: hand_loop(X, G_hand), repeat) / points,
        "tg.grad (Python)": fastest(lambda: python_grad(X[1]), repeat, 200),
    }
    print(C.load_note() if hasattr(C, "load_note") else "")
    print(f"Rosenbrock n={N}, one thread, minimum CPU time of {repeat} batches, ns per point:")
    for name, seconds in per_point.items():
        print(f"  {name:>22}: {seconds * 1e9:10.1f}")
    ratios = {}
    for member, label in (("compiled (njit loop)", "grad_into"),
                          ("compiled fused member", "fused_grad_into")):
        mine = per_point[member]
        ratios[label] = {"fused": mine / per_point["vmap fused"],
                         "hand": mine / per_point["hand-written njit"],
                         "python": mine / per_point["tg.grad (Python)"]}
        print(f"ratio tapegrad/fused ({label}) {ratios[label]['fused']:.1f}x "
              f"(goal <= {GOAL_VS_FUSED}x)")
        print(f"ratio tapegrad/hand ({label}) {ratios[label]['hand']:.1f}x "
              f"(goal <= {GOAL_VS_HAND}x)")
        print(f"ratio tapegrad/python ({label}) {ratios[label]['python']:.3f}x")
    if args.json:
        C.save_json(args.json, {"per_point_ns": {k: v * 1e9 for k, v in per_point.items()},
                                "ratios": ratios})


if __name__ == "__main__":
    main()
