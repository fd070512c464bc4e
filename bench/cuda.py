"""Batched gradients on the GPU: `tg.vmap(tg.grad(f), device="cuda")` against JAX.

    python bench/cuda.py [--quick] [--json PATH] [--threads N] [--points B]

Workloads (the batched ones of bench/run.py), float64, B points (default 100,000):
(a) Rosenbrock n=10:  f(x) = sum(100 (x[1:] - x[:-1]**2)**2 + (1 - x[:-1])**2)
(b) MLP 8-16-tanh:    f(x) = sum(W2 @ tanh(W1 @ x + b1)), weights closed over (constants)
Columns, per batch (µs per call, and ns per point in the ratio lines):
* tapegrad cuda, device in/out: the batch is a numba device array, the gradients stay on the
  device (`cuda.synchronize()` ends each call);
* tapegrad cuda, numpy in/out: host arrays copied in and out by vmap;
* tapegrad cpu: the CPU backend (column-layout interpreters, all cores);
* JAX jit(vmap(grad)) on its GPU backend (x64, device arrays, `.block_until_ready()`), when
  JAX sees a GPU.
Every result is checked against the CPU vmap before it is timed. The first call of the CUDA
backend (kernel compile, or load from numba's cache) is timed separately.

Without a GPU the script says why and exits 0: nothing to measure.
"""
if __name__ != "__main__":
    # Run as a script, bench/ leads sys.path, and a peer's optional `import cuda` (PyTorch looks
    # for NVIDIA's cuda-python bindings) would find this file: refuse, as a missing package.
    raise ImportError("bench/cuda.py is a benchmark script, not NVIDIA's cuda package")

import os  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common as C  # noqa: E402  (first: it applies --threads before numpy loads)
import numpy as np  # noqa: E402

N_ROSENBROCK = 10
MLP_IN, MLP_HIDDEN = 8, 16


def _points_from_argv(default):
    for i, a in enumerate(sys.argv):
        if a == "--points" and i + 1 < len(sys.argv):
            value = int(sys.argv[i + 1])
            del sys.argv[i:i + 2]
            return value
    return default


def data(B):
    rng = np.random.default_rng(0)
    X10 = rng.standard_normal((B, N_ROSENBROCK))
    X8 = rng.standard_normal((B, MLP_IN))
    W1 = rng.standard_normal((MLP_HIDDEN, MLP_IN)) / np.sqrt(MLP_IN)
    b1 = 0.1 * rng.standard_normal(MLP_HIDDEN)
    W2 = rng.standard_normal((1, MLP_HIDDEN)) / np.sqrt(MLP_HIDDEN)
    return X10, X8, W1, b1, W2


def tapegrad_functions(tg, W1, b1, W2):
    def rosenbrock(x):
        return tg.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)

    def mlp(x):
        return tg.sum(W2 @ tg.tanh(W1 @ x + b1))

    return rosenbrock, mlp


def jax_functions(jax, W1, b1, W2):
    import jax.numpy as jnp
    W1j, b1j, W2j = jnp.asarray(W1), jnp.asarray(b1), jnp.asarray(W2)

    def rosenbrock(x):
        return jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)

    def mlp(x):
        return jnp.sum(W2j @ jnp.tanh(W1j @ x + b1j))

    return jax.jit(jax.vmap(jax.grad(rosenbrock))), jax.jit(jax.vmap(jax.grad(mlp)))


def jax_gpu():
    """(jax, its first GPU device) or (None, reason)."""
    jax = C.optional("jax")
    if jax is None:
        return None, "jax is not installed"
    try:
        jax.config.update("jax_enable_x64", True)
        devices = jax.devices("gpu")
    except Exception as err:                       # noqa: BLE001 - no GPU backend
        return None, f"JAX has no GPU backend ({type(err).__name__})"
    return (jax, devices[0]) if devices else (None, "JAX sees no GPU")


def main():
    B = _points_from_argv(100_000)
    args = C.options(__doc__.splitlines()[0])
    import tapegrad as tg
    from tapegrad.batch import cuda as _cuda
    if not _cuda.available():
        print(f"bench/cuda.py: skipped, no GPU to measure on: {_cuda.why_unavailable()}")
        return 0
    from numba import cuda
    simulated = bool(getattr(cuda, "simulator_enabled", False)) or \
        os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
    if simulated:
        B = min(B, 64)
        print("bench/cuda.py: NUMBA_ENABLE_CUDASIM=1, the CPU simulator: a smoke run of "
              f"{B} points, not a measurement")
    print(C.load_note())
    X10, X8, W1, b1, W2 = data(B)
    rosenbrock, mlp = tapegrad_functions(tg, W1, b1, W2)
    jx, gpu = jax_gpu()
    if jx is None:
        print(f"JAX column blank: {gpu}")
    else:
        jax_rosen, jax_mlp = jax_functions(jx, W1, b1, W2)

    results, first_call = {}, {}
    for name, f, X, jf in (("Rosenbrock n=10", rosenbrock, X10, jx and jax_rosen),
                           ("MLP 8-16-tanh", mlp, X8, jx and jax_mlp)):
        want = tg.vmap(tg.grad(f))(X)
        check = C.close(want, atol=1e-9, rtol=1e-9)
        on_gpu = tg.vmap(tg.grad(f), device="cuda")
        Xd = cuda.to_device(X)
        t = time.perf_counter()
        on_gpu(Xd)
        cuda.synchronize()
        first_call[name] = time.perf_counter() - t

        def device_in_out(on_gpu=on_gpu, Xd=Xd):
            g = on_gpu(Xd)
            cuda.synchronize()
            return g

        cases = {
            "tapegrad cuda (device)": (device_in_out, lambda g, check=check: check(
                g.copy_to_host())),
            "tapegrad cuda (numpy)": (lambda on_gpu=on_gpu, X=X: on_gpu(X), check),
            "tapegrad cpu": (lambda f=f, X=X: tg.vmap(tg.grad(f))(X), check),
            "JAX jit(vmap(grad)) gpu": None,
        }
        if jx is not None:
            Xj = jx.device_put(X, gpu)
            cases["JAX jit(vmap(grad)) gpu"] = (
                lambda jf=jf, Xj=Xj: jf(Xj).block_until_ready(),
                lambda g, check=check: check(np.asarray(g)))
        results[name] = C.measure_all(cases, args)

    columns = ["tapegrad cuda (device)", "tapegrad cuda (numpy)", "tapegrad cpu",
               "JAX jit(vmap(grad)) gpu", "tg cuda/JAX"]
    rows = []
    for name, r in results.items():
        cells = dict(r)
        cells["tg cuda/JAX"] = C.fmt_ratio(C.ratio(r["tapegrad cuda (device)"],
                                                   r.get("JAX jit(vmap(grad)) gpu")))
        rows.append((name, cells))
    C.table(f"batched grad, B = {B:,} points", columns, rows, unit="µs per batch")
    ratios = []
    for name, r in results.items():
        for column in ("tapegrad cuda (device)", "JAX jit(vmap(grad)) gpu"):
            if r.get(column) is not None:
                print(f"{name}, {column}: {r[column] * 1e3 / B:.3g} ns per point")
        ratios.append(C.ratio_line(f"tapegrad cuda / JAX gpu, {name}",
                                   C.ratio(r["tapegrad cuda (device)"],
                                           r.get("JAX jit(vmap(grad)) gpu"))))
        ratios.append(C.ratio_line(f"tapegrad cuda / tapegrad cpu, {name}",
                                   C.ratio(r["tapegrad cuda (device)"], r["tapegrad cpu"])))
    for name, seconds in first_call.items():
        print(f"first CUDA call, {name} (kernel compile or cache load): {C.fmt_ms(seconds)} ms")
    C.save_json(args.json, {
        "benchmark": "cuda", "quick": args.quick, "points": B, "simulated": simulated,
        "machine": C.machine(), "load": C.load_note(),
        "device": None if simulated else str(cuda.get_current_device().name),
        "versions": C.versions("numpy", "numba", "numba-cuda", "jax", "jaxlib"),
        "unit": "us per batch", "results": results, "first_call_s": first_call,
        "ratios": ratios})
    return 0


if __name__ == "__main__":
    sys.exit(main())
