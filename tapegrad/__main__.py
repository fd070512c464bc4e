"""`python -m tapegrad`: PyTorch's autograd tutorial, run by tapegrad.

Each program is shown as an interactive session: the statements, then what they print. The
same lines run unchanged with `import torch as tapegrad` and print the same, apart from the
random numbers and the default float dtype (float64 here, float32 in PyTorch).
"""
import sys

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


def main(write=sys.stdout.write):
    write(f"tapegrad {tapegrad.__version__}: PyTorch's autograd tutorial on a flat tape\n")
    namespace = {"tapegrad": tapegrad}
    for title, source in SECTIONS:
        write(f"\n# {title}\n")
        _run(source, namespace, write)


if __name__ == "__main__":
    main()
