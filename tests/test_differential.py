"""Differential testing: random programs over the registry's ops, gradients from every path.

A hypothesis strategy draws a program: one to three float64 inputs of small shapes made to
broadcast against each other, then a sequence of operations over the values computed so far
(unary functions, binary operations with broadcasting, reductions over an axis or all of them,
softmax and friends, matmul, basic and integer-array indexing, where, reshapes, permutes, cat
and stack). Its scalar output weighs the last values with fixed random weights. The gradient
with respect to every input is computed by

* tapegrad eager mode (`backward()` over the recorded graph),
* the `tapegrad.grad` transform (a traced tape replayed by the compiled interpreters),
* central finite differences of tapegrad's own eager forward (programs without kinks only),
* PyTorch and JAX (float64), where installed,

and all must agree. Domains are kept smooth and finite by construction (`log(x*x + 1)`,
`(x*x + 0.5) ** -0.5`, `tan(tanh(x))`); operations with kinks (abs, relu, clamp, maximum,
minimum, amax, amin, where) are compared with PyTorch and JAX only, whose conventions tapegrad
follows (relu'(0) = 0, ties share the gradient), and where PyTorch and JAX differ from each
other the comparison follows PyTorch.

Layout parity (the last section): each program's gradients by eager backward, the flat replay
(`grad`), `vmap(grad)` in the column layout and in the fused tier, second order (`hessian`
against `vmap(hessian)`), float32 tapes, and on a small fixed sample the CUDA layout on the
simulator (in a subprocess) must agree, per point of a small batch: bitwise where a tier runs
the flat replay's arithmetic.

In CI: `max_examples` 100 (TAPEGRAD_DIFF_EXAMPLES overrides it, e.g. 5000; the parity tests
take a share of it). With
TAPEGRAD_DIFF_SURVEY=path, mismatches are appended to that JSON-lines file instead of failing
(to count them over a long run); every mismatch message carries the program as code.
"""
import json
import os
import subprocess
import sys
import traceback

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, example, given, settings, strategies as st

import tapegrad
from tapegrad.batch import columns as _columns
from tapegrad.batch import fuse as _fuse
from tapegrad.core import pytree as _pytree
from tapegrad.core.registry import PRIMS

from test_fuse import tiers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = int(os.environ.get("TAPEGRAD_DIFF_EXAMPLES", 100))
SURVEY = os.environ.get("TAPEGRAD_DIFF_SURVEY")


# ---- the libraries, behind one interface ------------------------------------------------------

class TG:
    name = "tapegrad"
    m = tapegrad

    def const(self, a):
        return tapegrad.tensor(a)

    def __getattr__(self, op):          # exp, log, sin, ..., where, maximum, matmul
        return getattr(self.m, op)

    def clamp(self, x, lo, hi):
        return self.m.clamp(x, lo, hi)

    def reduce(self, kind, x, dim, keepdim):
        fn = {"sum": self.m.sum, "mean": self.m.mean, "prod": self.m.prod,
              "amax": self.m.amax, "amin": self.m.amin, "logsumexp": self.m.logsumexp}[kind]
        if dim is None:
            if kind == "logsumexp":
                return fn(x, tuple(range(x.ndim)), keepdim)
            return fn(x, None, keepdim)
        return fn(x, dim, keepdim)

    def softmax(self, kind, x, dim):
        return getattr(self.m, kind)(x, dim)

    def index(self, x, key):
        return x[key]

    def reshape(self, x, shape):
        return x.reshape(shape)

    def permute(self, x, dims):
        return x.permute(dims)

    def unsqueeze(self, x, dim):
        return self.m.unsqueeze(x, dim)

    def squeeze(self, x):
        return self.m.squeeze(x)

    def cat(self, xs, dim):
        return self.m.cat(xs, dim)

    def stack(self, xs, dim):
        return self.m.stack(xs, dim)

    def const_like(self, a, x):
        """A constant in x's dtype (a float32 program stays float32)."""
        return self.const(np.asarray(a, x.dtype))

    linalg_module = np.linalg       # numpy code: tapegrad records np.linalg and np.cumsum

    def scan(self, kind, x, dim):
        return getattr(np, kind)(x, axis=dim)

    def sort(self, x, dim):
        return np.sort(x, axis=dim)

    def linalg(self, kind, x):
        """cholesky, solve or slogdet of the positive definite A = x x^T + m I (x: (..., m, n))."""
        nd, m = x.ndim, x.shape[-2]
        A = self.matmul(x, self.permute(x, tuple(range(nd - 2)) + (nd - 1, nd - 2))) \
            + self.const_like(m * np.eye(m), x)
        la = self.linalg_module
        if kind == "solve":
            return la.solve(A, x)
        if kind == "slogdet":
            return la.slogdet(A)[1]
        if kind == "eigvalsh":            # parity programs only: degenerate eigenvalues (x x^T of
            return la.eigvalsh(A)         # low rank) have no unique eigenvectors to compare
        if kind == "eigh":
            return la.eigh(A)[1]
        if kind == "svdvals":
            return la.svd(x, compute_uv=False)
        if kind == "qr_r":
            return la.qr(x)[1]
        return la.cholesky(A)


class Torch(TG):
    name = "torch"

    def __init__(self, torch):
        self.m = torch

    def const(self, a):
        return self.m.tensor(a, dtype=self.m.float64)

    def reduce(self, kind, x, dim, keepdim):
        m = self.m
        if kind == "logsumexp":
            return m.logsumexp(x, tuple(range(x.ndim)) if dim is None else dim, keepdim)
        fn = {"sum": m.sum, "mean": m.mean, "prod": m.prod, "amax": m.amax, "amin": m.amin}[kind]
        if dim is None:
            out = fn(x)
            return out.reshape((1,) * x.ndim) if keepdim else out
        return fn(x, dim, keepdim)

    def softmax(self, kind, x, dim):
        return getattr(self.m, kind)(x, dim)

    def const_like(self, a, x):
        return self.const(a)

    @property
    def linalg_module(self):
        return self.m.linalg

    def scan(self, kind, x, dim):
        return getattr(self.m, kind)(x, dim)

    def sort(self, x, dim):
        return self.m.sort(x, dim).values

    def index(self, x, key):
        return x[tuple(self.m.as_tensor(k) if isinstance(k, np.ndarray) else k for k in key)] \
            if isinstance(key, tuple) else x[self.m.as_tensor(key) if isinstance(key, np.ndarray)
                                             else key]


class Jax(TG):
    name = "jax"

    def __init__(self, jax):
        import jax.numpy as jnp
        self.jax, self.m = jax, jnp

    def const(self, a):
        return self.m.asarray(a)

    def relu(self, x):
        return self.jax.nn.relu(x)

    def sigmoid(self, x):
        return self.jax.nn.sigmoid(x)

    def clamp(self, x, lo, hi):
        # PyTorch's clamp: the gradient flows at the bounds (jnp.clip splits it at a tie)
        return self.m.where((x >= lo) & (x <= hi), x, self.m.clip(x, lo, hi))

    def reduce(self, kind, x, dim, keepdim):
        if kind == "logsumexp":
            from jax.scipy.special import logsumexp
            return logsumexp(x, axis=dim, keepdims=keepdim)
        fn = {"sum": self.m.sum, "mean": self.m.mean, "prod": self.m.prod, "amax": self.m.max,
              "amin": self.m.min}[kind]
        return fn(x, axis=dim, keepdims=keepdim)

    def softmax(self, kind, x, dim):
        return getattr(self.jax.nn, kind)(x, axis=dim)

    def reshape(self, x, shape):
        return self.m.reshape(x, shape)

    def permute(self, x, dims):
        return self.m.transpose(x, dims)

    def unsqueeze(self, x, dim):
        return self.m.expand_dims(x, dim)

    def squeeze(self, x):
        return self.m.squeeze(x)

    def cat(self, xs, dim):
        return self.m.concatenate(xs, dim)

    def stack(self, xs, dim):
        return self.m.stack(xs, dim)

    @property
    def linalg_module(self):
        return self.m.linalg

    def scan(self, kind, x, dim):
        return getattr(self.m, kind)(x, axis=dim)

    def sort(self, x, dim):
        return self.m.sort(x, axis=dim)


# ---- operations -------------------------------------------------------------------------------
# Each is a function of the library and its operand values; KINKS lists those that are not
# differentiable everywhere (compared with the peers only).

UNARY = {
    "neg": lambda L, x: -x,
    "exp": lambda L, x: L.exp(x),
    "log": lambda L, x: L.log(x * x + 1.0),
    "log1p": lambda L, x: L.log1p(x * x),
    "expm1": lambda L, x: L.expm1(x),
    "sqrt": lambda L, x: L.sqrt(x * x + 0.25),
    "sin": lambda L, x: L.sin(x),
    "cos": lambda L, x: L.cos(x),
    "tan": lambda L, x: L.tan(L.tanh(x)),
    "tanh": lambda L, x: L.tanh(x),
    "sigmoid": lambda L, x: L.sigmoid(x),
    "square": lambda L, x: x ** 2,
    "cube": lambda L, x: x ** 3,
    "pow_frac": lambda L, x: (x * x + 1.0) ** 1.5,
    "pow_neg": lambda L, x: (x * x + 0.5) ** -0.5,
    "rdiv": lambda L, x: 1.0 / (x * x + 1.0),
    "rsub": lambda L, x: 2.0 - x,
    "affine": lambda L, x: x * 0.7 + 0.3,
    "div_const": lambda L, x: x / 3.0,
    "rpow": lambda L, x: 2.0 ** x,
    "abs": lambda L, x: L.abs(x),
    "relu": lambda L, x: L.relu(x),
    "clamp": lambda L, x: L.clamp(x, -0.5, 0.5),
}
BINARY = {
    "add": lambda L, a, b: a + b,
    "sub": lambda L, a, b: a - b,
    "mul": lambda L, a, b: a * b,
    "div": lambda L, a, b: a / (b * b + 1.0),
    "pow": lambda L, a, b: (a * a + 1.0) ** b,
    "maximum": lambda L, a, b: L.maximum(a, b),
    "minimum": lambda L, a, b: L.minimum(a, b),
}
REDUCTIONS = ["sum", "mean", "prod", "amax", "amin", "logsumexp"]
SOFTMAXES = ["softmax", "log_softmax"]
SCANS = ["cumsum", "cumprod"]
LINALG = ["cholesky", "solve", "slogdet"]       # of x x^T + m I: positive definite
KINKS = {"abs", "relu", "clamp", "maximum", "minimum", "amax", "amin", "where"}


def _broadcast(*shapes):
    try:
        return tuple(np.broadcast_shapes(*shapes))
    except ValueError:
        return None


def _matmul_shape(a, b):
    try:
        return np.matmul(np.zeros(a), np.zeros(b)).shape
    except ValueError:
        return None


@st.composite
def programs(draw):
    """(input shapes, operations, seed): operations refer to values by index (inputs first)."""
    base = draw(st.lists(st.integers(1, 3), min_size=0, max_size=3))
    shapes = [tuple(base)]
    for _ in range(draw(st.integers(0, 2))):
        shape = [d if draw(st.booleans()) else 1 for d in base]
        drop = draw(st.integers(0, len(shape)))
        shapes.append(tuple(shape[drop:]))
    pool = list(shapes)
    ops = []
    for _ in range(draw(st.integers(1, 8))):
        kind = draw(st.sampled_from(["unary"] * 4 + ["binary"] * 3 + [
            "reduce", "reduce", "softmax", "matmul", "index", "where", "reshape", "permute",
            "unsqueeze", "squeeze", "cat", "stack", "scan", "linalg"]))
        i = draw(st.integers(0, len(pool) - 1))
        x = pool[i]
        op, out = None, None
        if kind == "unary":
            op, out = ("unary", draw(st.sampled_from(sorted(UNARY))), i), x
        elif kind == "binary":
            j = draw(st.integers(0, len(pool) - 1))
            out = _broadcast(x, pool[j])
            if out is not None:
                op = ("binary", draw(st.sampled_from(sorted(BINARY))), i, j)
        elif kind == "reduce" and len(x):
            dim = draw(st.one_of(st.none(), st.integers(-len(x), len(x) - 1)))
            keep = draw(st.booleans())
            name = draw(st.sampled_from(REDUCTIONS))
            if dim is None:
                out = (1,) * len(x) if keep else ()
            else:
                out = tuple(1 if k == dim % len(x) else d for k, d in enumerate(x)) if keep \
                    else tuple(d for k, d in enumerate(x) if k != dim % len(x))
            op = ("reduce", name, i, dim, keep)
        elif kind == "reduce":
            op, out = ("reduce", draw(st.sampled_from(["sum", "mean", "prod"])), i, None,
                       False), ()
        elif kind == "softmax" and len(x):
            dim = draw(st.integers(-len(x), len(x) - 1))
            op, out = ("softmax", draw(st.sampled_from(SOFTMAXES)), i, dim), x
        elif kind == "matmul" and len(x):
            partners = [j for j, y in enumerate(pool) if len(y) and _matmul_shape(x, y)]
            if partners:
                j = draw(st.sampled_from(partners))
                op, out = ("matmul", i, j), _matmul_shape(x, pool[j])
            elif len(x) >= 2:        # x @ x.mT always fits
                op, out = ("matmul_t", i), x[:-1] + (x[-2],)
        elif kind == "index" and len(x):
            choice = draw(st.sampled_from(["int", "slice", "array", "column"]))
            n = x[0]
            if choice == "int":
                k = draw(st.integers(-n, n - 1))
                key, out = k, x[1:]
            elif choice == "slice":
                a = draw(st.integers(0, n - 1))
                b = draw(st.integers(a + 1, n))
                key, out = slice(a, b), (b - a,) + x[1:]
            elif choice == "array":
                idx = draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=4))
                key, out = np.array(idx), (len(idx),) + x[1:]
            elif len(x) >= 2:
                k = draw(st.integers(0, x[1] - 1))
                key, out = (slice(None), k), (x[0],) + x[2:]
            else:
                key = None
            if key is not None:
                op = ("index", i, key)
        elif kind == "where":
            j = draw(st.integers(0, len(pool) - 1))
            k = draw(st.integers(0, len(pool) - 1))
            out = _broadcast(x, pool[j], pool[k])
            if out is not None:
                op = ("where", i, draw(st.sampled_from([-0.3, 0.0, 0.4])), j, k)
        elif kind == "scan" and len(x):
            dim = draw(st.integers(-len(x), len(x) - 1))
            op, out = ("scan", draw(st.sampled_from(SCANS)), i, dim), x
        elif kind == "linalg" and len(x) >= 2:
            name = draw(st.sampled_from(LINALG))
            out = {"cholesky": x[:-1] + (x[-2],), "solve": x, "slogdet": x[:-2]}[name]
            op = ("linalg", name, i)
        elif kind == "reshape":
            op, out = ("reshape", i, (-1,)), (int(np.prod(x)),)
        elif kind == "permute" and len(x) >= 2:
            dims = tuple(draw(st.permutations(range(len(x)))))
            op, out = ("permute", i, dims), tuple(x[d] for d in dims)
        elif kind == "unsqueeze":
            dim = draw(st.integers(0, len(x)))
            op, out = ("unsqueeze", i, dim), x[:dim] + (1,) + x[dim:]
        elif kind == "squeeze" and 1 in x:
            op, out = ("squeeze", i), tuple(d for d in x if d != 1)
        elif kind == "cat" and len(x):
            dim = draw(st.integers(0, len(x) - 1))
            partners = [j for j, y in enumerate(pool)
                        if len(y) == len(x) and all(a == b for k, (a, b) in enumerate(zip(x, y))
                                                    if k != dim)]
            j = draw(st.sampled_from(partners))
            op = ("cat", i, j, dim)
            out = tuple(d + pool[j][k] if k == dim else d for k, d in enumerate(x))
        elif kind == "stack":
            partners = [j for j, y in enumerate(pool) if y == x]
            j = draw(st.sampled_from(partners))
            dim = draw(st.integers(0, len(x)))
            op, out = ("stack", i, j, dim), x[:dim] + (2,) + x[dim:]
        if op is None:
            op, out = ("unary", draw(st.sampled_from(sorted(UNARY))), i), x
        if int(np.prod(out)) > 64:
            op, out = ("reduce", "sum", i, None, False), ()
        ops.append(op)
        pool.append(tuple(out))
    return shapes, ops, draw(st.integers(0, 2 ** 31 - 1))


def _apply(L, op, values):
    kind = op[0]
    if kind == "unary":
        return UNARY[op[1]](L, values[op[2]])
    if kind == "binary":
        return BINARY[op[1]](L, values[op[2]], values[op[3]])
    if kind == "reduce":
        return L.reduce(op[1], values[op[2]], op[3], op[4])
    if kind == "softmax":
        return L.softmax(op[1], values[op[2]], op[3])
    if kind == "matmul":
        return L.matmul(values[op[1]], values[op[2]])
    if kind == "matmul_t":
        x = values[op[1]]
        nd = x.ndim
        return L.matmul(x, L.permute(x, tuple(range(nd - 2)) + (nd - 1, nd - 2)))
    if kind == "index":
        return L.index(values[op[1]], op[2])
    if kind == "where":
        return L.where(values[op[1]] > op[2], values[op[3]], values[op[4]])
    if kind == "scan":
        return L.scan(op[1], values[op[2]], op[3])
    if kind == "sort":
        return L.sort(values[op[1]], op[2])
    if kind == "linalg":
        return L.linalg(op[1], values[op[2]])
    if kind == "reshape":
        return L.reshape(values[op[1]], op[2])
    if kind == "permute":
        return L.permute(values[op[1]], op[2])
    if kind == "unsqueeze":
        return L.unsqueeze(values[op[1]], op[2])
    if kind == "squeeze":
        return L.squeeze(values[op[1]])
    if kind == "cat":
        return L.cat([values[op[1]], values[op[2]]], op[3])
    if kind == "stack":
        return L.stack([values[op[1]], values[op[2]]], op[3])
    raise AssertionError(op)


def _weights(program):
    shapes, ops, seed = program
    rng = np.random.default_rng(seed)
    values = [np.zeros(s) for s in shapes]
    for op in ops:                    # shapes of every value, by numpy on zeros
        values.append(np.asarray(_apply(NP, op, values)))
    last = list(range(len(values)))[-2:] if ops else [0]
    inputs = [rng.uniform(-1.5, 1.5, s) for s in shapes]
    return inputs, [(k, rng.uniform(-1, 1, values[k].shape)) for k in last]


def run(L, program, xs, weights):
    """The program's scalar output: the last values weighed by fixed weights."""
    shapes, ops, _ = program
    values = list(xs)
    for op in ops:
        values.append(_apply(L, op, values))
    out = None
    for k, w in weights:
        term = (values[k] * L.const(w)).sum()
        out = term if out is None else out + term
    return out


class _NumpyShapes(TG):
    """numpy stand-in used only to compute the shapes of values (on zeros)."""
    name = "numpy"

    def __init__(self):
        self.m = np

    def const(self, a):
        return np.asarray(a)

    def exp(self, x):
        return np.exp(np.clip(x, -50, 50))

    def relu(self, x):
        return np.maximum(x, 0)

    def sigmoid(self, x):
        return 1 / (1 + np.exp(-x))

    def clamp(self, x, lo, hi):
        return np.clip(x, lo, hi)

    def reduce(self, kind, x, dim, keepdim):
        fn = {"sum": np.sum, "mean": np.mean, "prod": np.prod, "amax": np.max, "amin": np.min,
              "logsumexp": np.sum}[kind]
        return fn(x, axis=dim, keepdims=keepdim)

    def softmax(self, kind, x, dim):
        return x

    def permute(self, x, dims):
        return np.transpose(x, dims)

    def unsqueeze(self, x, dim):
        return np.expand_dims(x, dim)

    def squeeze(self, x):
        return np.squeeze(x)

    def reshape(self, x, shape):
        return np.reshape(x, shape)

    def cat(self, xs, dim):
        return np.concatenate(xs, dim)

    def stack(self, xs, dim):
        return np.stack(xs, dim)


NP = _NumpyShapes()


def describe(program):
    """The program as Python code over a library `L` (for reports and reproducers)."""
    shapes, ops, seed = program
    lines = [f"# inputs x0..x{len(shapes) - 1} of shapes {shapes}, seed {seed}"]
    for n, op in enumerate(ops, len(shapes)):
        lines.append(f"v{n} = {op!r}")
    return "\n".join(lines)


# ---- gradients by every path --------------------------------------------------------------------

def grads_eager(program, xs, weights):
    ts = [tapegrad.tensor(x, requires_grad=True) for x in xs]
    out = run(TG(), program, ts, weights)
    out.backward()
    return out.item(), [t.grad.numpy() if t.grad is not None else np.zeros_like(x)
                        for t, x in zip(ts, xs)]


def grads_transform(program, xs, weights):
    def f(*args):
        return run(TG(), program, args, weights)
    value, grads = tapegrad.value_and_grad(f, argnums=tuple(range(len(xs))))(*xs)
    return float(value), [np.asarray(g) for g in grads]


def grads_torch(torch, program, xs, weights):
    ts = [torch.tensor(x, dtype=torch.float64, requires_grad=True) for x in xs]
    out = run(Torch(torch), program, ts, weights)
    out.backward()
    return out.item(), [t.grad.numpy() if t.grad is not None else np.zeros_like(x)
                        for t, x in zip(ts, xs)]


def grads_jax(jax, program, xs, weights):
    L = Jax(jax)

    def f(*args):
        return run(L, program, args, weights)
    value, grads = jax.value_and_grad(f, argnums=tuple(range(len(xs))))(
        *[L.m.asarray(x) for x in xs])
    return float(value), [np.asarray(g) for g in grads]


def grads_fd(program, xs, weights, h=1e-6):
    def value(args):
        with tapegrad.no_grad():
            return run(TG(), program, [tapegrad.tensor(a) for a in args], weights).item()
    grads = []
    for i, x in enumerate(xs):
        g = np.zeros_like(x)
        for k in np.ndindex(x.shape):
            step = h * max(1.0, abs(x[k]))
            plus = [a.copy() for a in xs]
            minus = [a.copy() for a in xs]
            plus[i][k] += step
            minus[i][k] -= step
            g[k] = (value(plus) - value(minus)) / (2 * step)
        grads.append(g)
    return grads


def _peers():
    peers = {}
    try:
        import torch
        peers["torch"] = torch
    except ImportError:
        pass
    try:
        import jax
        jax.config.update("jax_enable_x64", True)
        peers["jax"] = jax
    except ImportError:
        pass
    return peers


PEERS = _peers()


def _close(a, b, rtol, atol):
    return all(np.allclose(x, y, rtol=rtol, atol=atol, equal_nan=True) for x, y in zip(a, b))


def has_kinks(program):
    """Whether the program has an operation that is not differentiable everywhere (KINKS)."""
    return any(op[1] in KINKS if op[0] in ("unary", "binary", "reduce") else op[0] in KINKS
               for op in program[1])


def _in_domain(value, grads):
    """Whether a value and its gradients are finite and moderate (the generator's domain)."""
    return bool(np.isfinite(value) and all(np.isfinite(g).all() for g in grads)
                and abs(value) < 1e8 and all(np.abs(g).max(initial=0) < 1e8 for g in grads))


def compare(program):
    """Every path's gradients; returns the list of disagreements (empty when all agree)."""
    xs, weights = _weights(program)
    with np.errstate(all="ignore"):
        value, eager = grads_eager(program, xs, weights)
    if not _in_domain(value, eager):
        return None                   # outside the generator's domain: discarded
    scale = 1.0 + max(float(np.abs(g).max(initial=0)) for g in eager)
    problems = []
    tvalue, transform = grads_transform(program, xs, weights)
    if not (np.isclose(tvalue, value, rtol=1e-12, atol=1e-12 * scale)
            and _close(transform, eager, 1e-10, 1e-12 * scale)):
        problems.append(("transform", tvalue, transform))
    results = {}
    for name, module in PEERS.items():
        results[name] = (grads_torch if name == "torch" else grads_jax)(module, program, xs,
                                                                         weights)
    kinks = has_kinks(program)
    for name, (pvalue, grads) in results.items():
        same = np.isclose(pvalue, value, rtol=1e-9, atol=1e-9 * (1 + abs(value))) and \
            _close(grads, eager, 1e-7, 1e-9 * scale)
        if not same:
            if name == "jax" and "torch" in results and not _close(
                    results["torch"][1], grads, 1e-7, 1e-9 * scale):
                continue              # the peers disagree: a convention, tapegrad follows torch
            problems.append((name, pvalue, grads))
    if not kinks:
        fd = grads_fd(program, xs, weights)
        if not _close(fd, eager, 1e-5, 1e-6 * (1 + abs(value)) * scale):
            problems.append(("finite differences", value, fd))
    if not problems:
        return []
    return [f"{name}: value {v!r}, gradients {[np.round(g, 10).tolist() for g in gs]}; tapegrad "
            f"eager: value {value!r}, gradients {[np.round(g, 10).tolist() for g in eager]}"
            for name, v, gs in problems]


@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                 HealthCheck.data_too_large])
@given(program=programs())
def test_random_programs(program):
    problems = compare(program)
    assume(problems is not None)
    if problems and SURVEY:
        with open(SURVEY, "a") as fh:
            fh.write(json.dumps({"program": describe(program), "problems": problems}) + "\n")
        return
    assert not problems, describe(program) + "\n" + "\n".join(problems)


# ---- the generator itself ---------------------------------------------------------------------

def test_generator_reaches_every_operation():
    """Over a fixed sample, every kind of operation and every unary/binary op is drawn."""
    seen = set()

    @settings(max_examples=1500, deadline=None, database=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(program=programs())
    def collect(program):
        for op in program[1]:
            seen.add(op[0])
            if op[0] in ("unary", "binary", "reduce", "softmax", "scan", "linalg"):
                seen.add(op[1])
    collect()
    expected = {"unary", "binary", "reduce", "softmax", "index", "where", "reshape", "permute",
                "unsqueeze", "squeeze", "cat", "stack", "scan", "linalg"} | set(UNARY) \
        | set(BINARY) | set(REDUCTIONS) | set(SOFTMAXES) | set(SCANS) | set(LINALG)
    assert expected <= seen, expected - seen
    assert "matmul" in seen or "matmul_t" in seen


def test_a_known_program_agrees():
    program = ([(2, 3), (3,)], [("binary", "mul", 0, 1), ("unary", "tanh", 2),
                                ("matmul_t", 3), ("reduce", "logsumexp", 4, 1, False),
                                ("index", 0, np.array([1, 1, 0])), ("where", 6, 0.0, 6, 1)], 7)
    assert compare(program) == []


def test_the_harness_notices_a_wrong_gradient(monkeypatch):
    """A gradient off by 0.1% in one path is reported by every other path."""
    program = ([(3,)], [("unary", "tanh", 0), ("unary", "exp", 1)], 3)
    right = grads_eager
    monkeypatch.setattr(sys.modules[__name__], "grads_eager", lambda *args: (
        right(*args)[0], [g * 1.001 for g in right(*args)[1]]))
    problems = compare(program)
    names = {p.split(":")[0] for p in problems}
    assert {"transform", "finite differences"} <= names, problems
    assert set(PEERS) <= names


@pytest.mark.skipif("torch" not in PEERS, reason="PyTorch is not installed")
def test_torch_adapter_is_used():
    xs, weights = _weights(([(2,)], [("unary", "exp", 0)], 1))
    value, grads = grads_torch(PEERS["torch"], ([(2,)], [("unary", "exp", 0)], 1), xs, weights)
    (k0, w0), (k1, w1) = weights                     # the input and exp(input), weighed
    assert (k0, k1) == (0, 1)
    np.testing.assert_allclose(grads[0], w0 + np.exp(xs[0]) * w1, rtol=1e-14)


# ---- layout parity: every tier of the batched replay agrees with the flat one -----------------
# The flat interpreters (`tg.grad`, `tg.hessian`) replay a tape point by point; `vmap` replays
# it in the column layout (fuse=False), in one fused kernel per tape (fuse=True) or on the GPU
# (device="cuda"). Every layout is generated from the same kernel bodies (`core.layouts`), so
# each must give the flat replay's result at every point of the batch: bitwise where it runs
# the same arithmetic (`same_arithmetic`), to rounding (`ROUNDING`) where it may not.

PARITY = dict(max_examples=EXAMPLES, deadline=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                     HealthCheck.data_too_large])
SECOND_ORDER_EXAMPLES = max(5, EXAMPLES // 2)
# The fused tier compiles each tape (0.3-3 s): its sample is derandomized, so that a second run
# finds the kernels in the code cache.
FUSED_EXAMPLES = max(3, EXAMPLES // 10)
FLOAT32_EXAMPLES = max(5, EXAMPLES // 5)
CUDA_PROGRAMS = 8                            # the simulator: ~3 us per operation and thread
# Where the tiers' arithmetic differs (sums reassociated, products rounded in another order,
# BLAS's FMAs, libm against core.vecmath), results differ by rounding: measured, at most about
# one ulp of the largest magnitude at a point; allowed, 256 ulps of it.
ROUNDING = {np.dtype(np.float64): 256 * np.finfo(np.float64).eps,
            np.dtype(np.float32): 256 * np.finfo(np.float32).eps}
# the fused tier refuses them (NotFusable: their kernels branch on values)
BRANCHING_KERNELS = {"segmax", "segmin", "where", "sort", "cholesky", "solve", "slogdet", "eigh",
                     "svd", "qr"}


# Run by every parity test on top of its draws: between them, every structural primitive (the
# draws reach matmul, prod or a pair difference in a few percent of programs only).
PARITY_PROGRAMS = [
    ([(2, 3), (3, 2)], [("matmul", 0, 1), ("unary", "tanh", 2)], 11),
    ([(2, 3)], [("matmul_t", 0), ("reduce", "logsumexp", 1, 1, False)], 12),
    ([(2, 3)], [("reduce", "amax", 0, 1, False), ("reduce", "prod", 0, 1, False),
                ("binary", "add", 1, 2), ("reduce", "amin", 0, 0, False)], 13),
    ([(3, 2), (3, 2)], [("where", 0, 0.0, 0, 1), ("cat", 0, 1, 1), ("stack", 0, 1, 0)], 14),
    ([(4,)], [("index", 0, np.array([0, 1, 3])), ("index", 0, np.array([2, 2, 0])),
              ("binary", "sub", 1, 2), ("index", 0, slice(1, 3))], 15),
    ([(2, 3)], [("unary", "square", 0), ("reduce", "sum", 1, 1, False),
                ("reduce", "mean", 0, 0, False)], 16),
    ([(2, 3)], [("scan", "cumsum", 0, 1), ("scan", "cumprod", 1, 0), ("sort", 2, -1)], 17),
    ([(2, 3, 2)], [("linalg", "cholesky", 0), ("linalg", "solve", 1),
                   ("linalg", "slogdet", 0)], 18),
    ([(2, 3, 3)], [("linalg", "qr_r", 0), ("linalg", "eigh", 1), ("binary", "add", 1, 2),
                   ("linalg", "svdvals", 3), ("linalg", "eigvalsh", 3)], 19),
    # the softmax of a whole array: one softmax entry
    ([(4,)], [("softmax", "softmax", 0, 0), ("softmax", "log_softmax", 0, -1),
              ("binary", "mul", 1, 2)], 20),
]


def with_parity_programs(test):
    """`test` runs PARITY_PROGRAMS as explicit examples (below @given)."""
    for program in reversed(PARITY_PROGRAMS):
        test = example(program=program)(test)
    return test


def parity_points(xs, seed, dtype=np.float64):
    """The drawn inputs and three variants of them: perturbed; rounded to integers (ties for
    amax, amin, maximum and minimum; values at `where`'s threshold 0); about half of the
    entries zero (zero factors of prod). All arrays of `dtype`: a transform traces once per
    signature of its arguments, and a numpy scalar would be another one."""
    rng = np.random.default_rng(seed)
    variants = [xs, [x + rng.uniform(-0.1, 0.1, np.shape(x)) for x in xs],
                [np.round(x) for x in xs],
                [np.where(rng.random(np.shape(x)) < 0.5, 0.0, x) for x in xs]]
    return [[np.asarray(x, dtype) for x in point] for point in variants]


def batched(points):
    """Every input of every point, stacked along a leading batch axis (in_axes 0 for all)."""
    return [np.stack([point[i] for point in points]) for i in range(len(points[0]))]


def flat_replays(transform, points):
    """`transform` at every point by the flat replay. Its first call traces the function and
    returns what the eager forward (numpy's math: other roundings) computed, so it is made
    first and set aside."""
    transform(*points[0])
    return [transform(*point) for point in points]


def the_tape(vmapped):
    """The one tape a vmapped function replayed (the programs have no guards)."""
    (tape,) = [tape for tapes in vmapped._traced.cache.values() for tape in tapes]
    return tape


def same_arithmetic(tape):
    """Whether the column layout replays the flat replay's arithmetic exactly: it kept every
    entry as recorded (`_columns` may alias copies and windows, whose adjoints then add up in
    another order, replay x * x as a square and fold a constant factor into a sum), and no entry
    is a matmul (the flat layout calls BLAS, which sums in its own order, with FMAs)."""
    cols = _columns.layout(tape)
    return np.array_equal(cols.E, tape.E) and np.array_equal(cols.FC, tape.FC) and \
        "matmul" not in {p.name for p in tape.prims}


def assert_parity(got, want, exact, what):
    """A tier's results `got` (leaves with the batch axis first) against the flat replays `want`
    (one tree per point): bitwise when `exact`, else to ROUNDING of the largest magnitude of
    the point's results."""
    leaves, structure = _pytree.flatten(got)
    for q, tree in enumerate(want):
        expected, expected_structure = _pytree.flatten(tree)
        assert structure == expected_structure, what
        expected = [np.asarray(e) for e in expected]
        scale = 1.0 + max(float(np.abs(e[np.isfinite(e)]).max(initial=0)) for e in expected)
        for k, (batch, e) in enumerate(zip(leaves, expected)):
            a = np.asarray(batch[q])
            message = f"{what}: point {q}, result {k}"
            assert a.shape == e.shape and a.dtype == e.dtype, (message, a.shape, e.shape,
                                                               a.dtype, e.dtype)
            if exact:
                np.testing.assert_array_equal(a, e, err_msg=message)
            else:
                tol = ROUNDING[e.dtype]
                np.testing.assert_allclose(a, e, rtol=tol, atol=tol * scale, equal_nan=True,
                                           err_msg=message)


def assert_identical(got, want, what):
    """Two batched results, bitwise (the same tier computed both)."""
    (a, sa), (b, sb) = _pytree.flatten(got), _pytree.flatten(want)
    assert sa == sb, what
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y, err_msg=what)


def _setup(program, dtype=np.float64):
    """(f, points, argnums, weights) of a program, computing in `dtype`; None when its drawn
    inputs are outside the generator's domain."""
    xs, weights = _weights(program)
    with np.errstate(all="ignore"):
        value, eager = grads_eager(program, xs, weights)
    if not _in_domain(value, eager):
        return None
    weights = [(k, w.astype(dtype)) for k, w in weights]

    def f(*args):
        return run(TG(), program, args, weights)
    return f, parity_points(xs, program[2], dtype), tuple(range(len(xs))), weights


@settings(**PARITY)
@given(program=programs())
@with_parity_programs
def test_layout_parity(program):
    """Per point, the gradient with respect to every input: eager backward and the flat replay
    (`grad`) agree; vmap(grad) in the column layout gives the flat replay's."""
    setup = _setup(program)
    assume(setup is not None)
    f, points, argnums, weights = setup
    what = describe(program)
    grad = tapegrad.grad(f, argnums=argnums)
    vmapped = tapegrad.vmap(tapegrad.grad(f, argnums=argnums), fuse=False)
    with np.errstate(all="ignore"):
        flat = flat_replays(grad, points)
        columns = vmapped(*batched(points))
    assert_parity(columns, flat, same_arithmetic(the_tape(vmapped)), f"column layout\n{what}")
    # eager: numpy's forward, its own roundings; where the program has a kink, a rounding can
    # take the other side of it, so only the drawn point (kept off kinks by its draw)
    for q, point in enumerate(points if not has_kinks(program) else points[:1]):
        with np.errstate(all="ignore"):
            value, eager = grads_eager(program, point, weights)
        if _in_domain(value, eager):
            scale = 1.0 + max(float(np.abs(g).max(initial=0)) for g in eager)
            assert _close(eager, flat[q], 1e-10, 1e-12 * scale), f"eager, point {q}\n{what}"


@settings(**dict(PARITY, max_examples=SECOND_ORDER_EXAMPLES))
@given(program=programs())
@with_parity_programs
def test_layout_parity_second_order(program):
    """hessian: the column layout's forward-over-reverse sweep gives the flat replay's."""
    setup = _setup(program)
    assume(setup is not None)
    f, points, argnums, _ = setup
    vmapped = tapegrad.vmap(tapegrad.hessian(f, argnums=argnums), fuse=False)
    with np.errstate(all="ignore"):
        flat = flat_replays(tapegrad.hessian(f, argnums=argnums), points)
        columns = vmapped(*batched(points))
    assert_parity(columns, flat, same_arithmetic(the_tape(vmapped)),
                  f"column layout, hessian\n{describe(program)}")


def _both_tiers(program, dtype):
    """(tape, fused tier's states, flat replays, vmap(grad) with fuse=True, with fuse=False)
    at the program's points, computing in `dtype`; None outside the generator's domain."""
    setup = _setup(program, dtype)
    if setup is None:
        return None
    f, points, argnums, _ = setup
    vmapped = tapegrad.vmap(tapegrad.grad(f, argnums=argnums), fuse=True)
    X = batched(points)
    with np.errstate(all="ignore"):
        flat = flat_replays(tapegrad.grad(f, argnums=argnums), points)
        fused = vmapped(*X)
        interpreted = tapegrad.vmap(tapegrad.grad(f, argnums=argnums), fuse=False)(*X)
    return the_tape(vmapped), tiers(vmapped), flat, fused, interpreted


@settings(**dict(PARITY, max_examples=FUSED_EXAMPLES, derandomize=True, database=None))
@given(program=programs())
@with_parity_programs
def test_layout_parity_fused(program):
    """vmap(grad, fuse=True): the fused kernel gives the flat replay's gradients to rounding (it
    reassociates); a tape with a kernel that branches on values is refused and replayed by the
    interpreter, whose results come back unchanged."""
    tiers_ = _both_tiers(program, np.float64)
    assume(tiers_ is not None)
    tape, states, flat, fused, interpreted = tiers_
    what = describe(program)
    if BRANCHING_KERNELS & {p.name for p in tape.prims}:
        assert states == [False], f"{states}: not refused\n{what}"
        assert_identical(fused, interpreted, f"refused\n{what}")
    else:
        assert len(states) == 1 and isinstance(states[0], _fuse.Fused), f"{states}\n{what}"
    assert_parity(fused, flat, False, f"fused tier\n{what}")


@settings(**dict(PARITY, max_examples=FLOAT32_EXAMPLES))
@given(program=programs())
@with_parity_programs
def test_layout_parity_float32(program):
    """float32 tapes: the column layout gives the flat replay's gradients (bitwise where it runs
    the same arithmetic: accumulators are float64 in both layouts); the fused tier refuses them
    (it computes in float64) and the interpreter's results come back."""
    tiers_ = _both_tiers(program, np.float32)
    assume(tiers_ is not None)
    tape, states, flat, got, interpreted = tiers_
    what = describe(program)
    assert states == [False], f"{states}: not refused\n{what}"
    assert_identical(got, interpreted, f"float32, refused\n{what}")
    assert_parity(got, flat, same_arithmetic(tape), f"float32\n{what}")


# The CUDA layout runs on the simulator, in a subprocess (NUMBA_ENABLE_CUDASIM=1; this process
# keeps the real CPU path and no CUDA state, as in test_cuda), on a small fixed sample.

def cuda_sample(n=CUDA_PROGRAMS, draws=1000):
    """(programs, primitives): n programs of PARITY_PROGRAMS and a derandomized draw, in the
    generator's domain, chosen greedily to record the most primitives between them (structural
    ones first, the smaller tape first)."""
    candidates = []

    def consider(program):
        xs, weights = _weights(program)
        with np.errstate(all="ignore"):
            value, eager = grads_eager(program, xs, weights)
        if _in_domain(value, eager):
            tape = tapegrad.trace(lambda *args: run(TG(), program, args, weights), *xs)
            if not all(p.cuda for p in tape.prims):     # linalg: vmap(device="cuda") refuses
                return
            candidates.append((program, {p.name for p in tape.prims}, tape.V0.size))

    @settings(max_examples=draws, deadline=None, database=None, derandomize=True,
              suppress_health_check=PARITY["suppress_health_check"])
    @given(program=programs())
    def collect(program):
        consider(program)
    collect()
    for program in PARITY_PROGRAMS:         # the draws reach a few primitives rarely
        consider(program)
    elementwise = {p.name for p in PRIMS if p.elementwise}
    chosen, seen = [], set()
    for _ in range(min(n, len(candidates))):
        best = max(candidates, key=lambda c: (len(c[1] - seen - elementwise),
                                              len(c[1] - seen), -c[2]))
        candidates.remove(best)
        chosen.append(best[0])
        seen |= best[1]
    return chosen, seen


def cuda_parity():
    """In the simulator process: vmap(grad, device="cuda") against the flat replay on the
    sample. (program as code, None or the traceback) per program, and the primitives seen."""
    programs_, seen = cuda_sample()
    results = []
    for program in programs_:
        what = describe(program)
        try:
            f, points, argnums, _ = _setup(program)        # the sample is in the domain
            vmapped = tapegrad.vmap(tapegrad.grad(f, argnums=argnums), device="cuda")
            with np.errstate(all="ignore"):
                flat = flat_replays(tapegrad.grad(f, argnums=argnums), points)
                got = vmapped(*batched(points))
            # libm's math (the simulator; libdevice on a GPU) against core.vecmath, and the
            # portable matmul against BLAS: rounding
            assert_parity(got, flat, False, f"CUDA layout\n{what}")
            results.append((what, None))
        except Exception:        # noqa: BLE001 - reported by the test in the parent process
            results.append((what, traceback.format_exc()))
    return results, sorted(seen)


def test_parity_programs_record_every_structural_primitive():
    seen = set()
    for program in PARITY_PROGRAMS:
        xs, weights = _weights(program)
        tape = tapegrad.trace(lambda *args: run(TG(), program, args, weights), *xs)
        seen |= {p.name for p in tape.prims}
    assert {p.name for p in PRIMS if p.structural} <= seen


def test_layout_parity_on_the_cuda_simulator():
    """The CUDA layout gives the flat replay's gradients on a sample that records most
    primitives (the simulator runs the generated device code as Python)."""
    pytest.importorskip("numba.cuda")
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1",
               PYTHONPATH=os.pathsep.join([ROOT] + [p for p in os.environ.get(
                   "PYTHONPATH", "").split(os.pathsep) if p]))
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--cuda-simulator"],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=1200)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        pytest.fail(f"the simulator subprocess failed (exit {proc.returncode}):\n"
                    f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    report = json.loads(lines[-1])
    assert len(report["results"]) == CUDA_PROGRAMS, report
    failures = [f"{what}\n{error}" for what, error in report["results"] if error]
    assert not failures, "\n\n".join(failures)
    structural = {p.name for p in PRIMS if p.structural and p.cuda}
    assert structural <= set(report["primitives"]), \
        f"no program of the sample records {sorted(structural - set(report['primitives']))}"


if __name__ == "__main__":
    if "--cuda-simulator" in sys.argv:       # test_layout_parity_on_the_cuda_simulator's process
        results, primitives = cuda_parity()
        print(json.dumps({"results": results, "primitives": primitives}))
