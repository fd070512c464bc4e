"""`python -m tapegrad`: the three uses of tapegrad in one run, each labelled.

1. Eager tensors: PyTorch's autograd tutorial. Each program is shown as an interactive
   session: the statements, then what they print. The same lines run unchanged with
   `import torch as tapegrad` and print the same, apart from the random numbers and the
   default float dtype (float64 here, float32 in PyTorch).
2. A transformed function: `grad` of the Rosenbrock function, traced at its first call and
   replayed by the compiled interpreters at later ones, with the time of a replayed call.
3. Batched replay: `vmap(grad(f), fuse=True)` at a million points, with its throughput. The
   fused tier, not the default's batched interpreter: its compile takes a second where the
   batched interpreter's takes minutes, and the demo's first run should not wait for that.

The header says where the compiled code is cached. A cold cache makes the first run compile
the interpreters (a minute or two, once): a line says so before each compile, so that the
pause is explained.
"""
import os
import sys
import timeit

import numpy as np

import tapegrad

SECTIONS = [
    ("Tensors record the operations that produce them", """\
x = tapegrad.ones(2, 2, requires_grad=True)
x
y = x + 2
y
y.grad_fn
z = y * y * 3
out = z.mean()
z
out"""),
    ("requires_grad_ turns recording on for an existing tensor", """\
tapegrad.manual_seed(0)
a = tapegrad.randn(2, 2)
a = (a * 3) / (a - 1)
a.requires_grad
a.requires_grad_(True)
a.requires_grad
b = (a * a).sum()
b.grad_fn"""),
    ("Gradients: out = mean(3 (x + 2)^2), so d(out)/dx = 1.5 (x + 2)", """\
out.backward()
x.grad
x = tapegrad.tensor([[1., 2.], [3., 4.]], requires_grad=True)
((x + 2) * (x + 2) * 3).mean().backward()
x.grad"""),
    ("Vector-Jacobian product: a non-scalar output takes the vector v", """\
a = tapegrad.tensor([1., 2., 3.], requires_grad=True)
b = tapegrad.tensor([3., 4., 5.], requires_grad=True)
c = tapegrad.tensor([6., 7., 8.], requires_grad=True)
y = 3 * a + 2 * b * b + tapegrad.log(c)
v = tapegrad.tensor([0.1, 1.0, 0.0001])
y.backward(v, retain_graph=True)
a.grad
b.grad
c.grad"""),
    ("Scalar inputs: dy/da = 3, dy/db = 4 b, dy/dc = 1 / c", """\
a = tapegrad.tensor(0.1, requires_grad=True)
b = tapegrad.tensor(1.0, requires_grad=True)
c = tapegrad.tensor(0.1, requires_grad=True)
y = 3 * a + 2 * b * b + tapegrad.log(c)
y.backward()
a.grad, b.grad, c.grad"""),
    ("Gradients accumulate: zero them between steps", """\
a = tapegrad.tensor(1., requires_grad=True)
b = tapegrad.tensor(1., requires_grad=True)
c = tapegrad.tensor(1., requires_grad=True)
y = 3 * a + 2 * b * b + tapegrad.log(c)
y.backward(retain_graph=True)
a.grad, b.grad, c.grad
y.backward()
a.grad, b.grad, c.grad
a.grad.zero_()
b.grad = None
a.grad, b.grad"""),
    ("Stop recording: no_grad, detach, autograd.grad", """\
with tapegrad.no_grad():
    print((x * 2).requires_grad)
x.detach().requires_grad
w = tapegrad.tensor([1., 2.], requires_grad=True)
tapegrad.autograd.grad((w * w).sum(), w)
w.grad is None"""),
]


def _run(source, namespace, write):
    """Echo `source` as an interactive session would, one statement at a time."""
    lines = source.splitlines()
    i = 0
    while i < len(lines):
        block = [lines[i]]
        i += 1
        while i < len(lines) and lines[i].startswith((" ", "\t")):
            block.append(lines[i])
            i += 1
        write(">>> " + block[0] + "\n")
        for line in block[1:]:
            write("... " + line + "\n")
        text = "\n".join(block)
        try:
            code = compile(text, "<tutorial>", "eval")
        except SyntaxError:
            exec(compile(text, "<tutorial>", "exec"), namespace)
        else:
            value = eval(code, namespace)
            if value is not None:
                write(repr(value) + "\n")


GRAD_SESSION = """\
def rosenbrock(x):
    return tapegrad.sum(100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)
grad_rosenbrock = tapegrad.grad(rosenbrock)       # JAX-style: a function of x, as rosenbrock
grad_rosenbrock(np.zeros(5))                      # the first call traces rosenbrock to a tape
grad_rosenbrock(np.ones(5))                       # later calls of that signature only replay it"""

BATCHED_POINTS = 1_000_000
BATCHED_SESSION = f"""\
batched = tapegrad.vmap(grad_rosenbrock, fuse=True)   # one tape, fused into a loop over rows
X = np.random.default_rng(0).random(({BATCHED_POINTS:_}, 10))
G = batched(X)
G.shape
np.allclose(G[7], grad_rosenbrock(X[7]))"""

COLD_FLAT = "compiling the interpreters: about a minute the first time, cached afterwards"
COLD_FIRST = ("compiling the sweeps of replayed gradients: under a minute the "
              "first time, cached afterwards")


def _cached(dispatcher):
    """Whether numba's on-disk cache holds compiled code for `dispatcher` (its index file
    exists); False when it cannot tell, e.g. where caching is impossible."""
    index = getattr(getattr(getattr(dispatcher, "_cache", None), "_cache_file", None),
                    "_index_path", None)
    return index is not None and os.path.exists(index)


def _cache_lines(dispatcher):
    """Where the generated interpreters and numba's compiled code of them live."""
    from tapegrad.core import cache
    numba_dir = getattr(getattr(dispatcher, "_cache", None), "_cache_path", None)
    return (f"compiled code is cached in {cache.cache_dir()} (the generated interpreters)\n"
            f"  and {numba_dir or 'nowhere: caching is impossible here'} (numba's cache of "
            "them);\n  set TAPEGRAD_CACHE_DIR and NUMBA_CACHE_DIR to move them\n")


def _duration(seconds):
    """`seconds` with a unit that keeps three significant digits readable (ASCII only)."""
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


def _best(call, number, repeat):
    """The best time of one call of `call`, over `repeat` runs of `number` calls each."""
    return min(timeit.repeat(call, number=number, repeat=repeat)) / number


def _time_gradient(rosenbrock, n=1000):
    """Lines: the first call of a fresh `grad` (traced, then replayed) against later ones."""
    grad = tapegrad.grad(rosenbrock)
    x = np.linspace(-2.0, 2.0, n)
    first = _best(lambda: grad(x), number=1, repeat=1)
    replay = _best(lambda: grad(x), number=2000, repeat=5)
    return (f"timing at n = {n}:\n"
            f"  the first call (trace, then replay): {_duration(first)}\n"
            f"  a replayed call:                     {_duration(replay)} "
            "(best of 5 runs of 2000 calls)\n")


def _time_batched(batched, X):
    """Lines: the throughput of `batched` (a vmap) at the rows of `X`."""
    import numba
    seconds = _best(lambda: batched(X), number=1, repeat=10)
    return (f"timing at {X.shape[0]:,} points: {_duration(seconds)} per call, "
            f"{X.shape[0] / seconds / 1e6:.3g} million points per second "
            f"(best of 10 calls, {numba.get_num_threads()} threads)\n"
            "(fuse=True compiles the tape into one loop body per point at the first call; the\n"
            " default, fuse=\"auto\", first replays it in the batched interpreter, then fuses it\n"
            " once that has taken as long as compiling would)\n")


def main(write=sys.stdout.write):
    from tapegrad.core.interp import interpreters, reverse_first
    flat = interpreters().forward
    write(f"tapegrad {tapegrad.__version__}: eager tensors, transforms and batched replay on "
          "one flat tape\n")
    write(_cache_lines(flat))

    write("\n== 1. Eager tensors: PyTorch's autograd tutorial ==\n")
    if not _cached(flat):
        write(COLD_FLAT + "\n")
    namespace = {"tapegrad": tapegrad, "np": np}
    for title, source in SECTIONS:
        write(f"\n# {title}\n")
        _run(source, namespace, write)

    write("\n== 2. A transformed function: grad, traced once and replayed compiled ==\n\n")
    if not _cached(reverse_first().backward_first):
        write(COLD_FIRST + "\n")
    _run(GRAD_SESSION, namespace, write)
    write(_time_gradient(namespace["rosenbrock"]))

    write("\n== 3. Batched replay: vmap(grad(f)) at every row of X ==\n\n")
    _run(BATCHED_SESSION, namespace, write)
    write(_time_batched(namespace["batched"], namespace["X"]))


if __name__ == "__main__":
    main()
