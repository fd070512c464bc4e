"""Reverse mode over the eager graph: `backward`, `grad` and the engine behind both.

The engine linearizes the graph an output reaches into a flat tape (`flatten.linearize`), seeds
the adjoint buffer with the output gradients and runs the compiled reverse interpreter once;
Python only gathers the graph and hands gradients to the tensors that asked for them. Forward
mode and forward-over-reverse over the same flat tape (`jvp_of_graph`, `hvp_of_graph`) serve
`tapegrad.testing.gradcheck`.

`tapegrad.autograd` is the public face of this module (PyTorch's `torch.autograd`); it is
implemented here, in the eager layer, so that `Tensor.backward` (attached below) and the rest of
the layer never import the package's front.
"""
import numpy as np

from . import graph, views
from ..core import sweep
from .dtypes import check_dtype, type_name
from .flatten import linearize
from .graph import check_versions, wrote
from .tensor import Size, Tensor

def _saves(node):
    """Whether a backward without retain_graph frees values this node needs: the interpreter's
    rule, plus the entries whose PyTorch counterparts save a tensor that tapegrad keeps as a
    constant (`x * 2`, `x / 2` save the wrapped number; `x[[0, 1]]` saves its indices), so that a
    second backward raises exactly where PyTorch's does."""
    return node.prim.saves or node.prim.name in _TORCH_SAVES or node._name == "IndexBackward0"


_TORCH_SAVES = frozenset(("mul_const", "div_const"))

_FREED = (
    "Trying to backward through the graph a second time (or directly access saved tensors after "
    "they have already been freed). Saved intermediate values of the graph are freed when you "
    "call .backward() or autograd.grad(). Specify retain_graph=True if you need to backward "
    "through the graph a second time or if you need to access saved tensors after calling "
    "backward.")


def _as_tuple(x):
    if x is None:
        return ()
    return tuple(x) if isinstance(x, (tuple, list)) else (x,)


def _seed(outputs, grad_outputs):
    """The gradient of each output: given, or 1 for a scalar output (PyTorch's rule)."""
    seeds = []
    for i, (out, g) in enumerate(zip(outputs, grad_outputs)):
        shape = out._data.shape if out._node is None else out._node.value.shape   # as recorded
        if g is None:
            if out._data.size != 1:
                raise RuntimeError("grad can be implicitly created only for scalar outputs")
        else:
            g = _gradient(g, i, out)
            if g.shape != shape:
                raise RuntimeError(f"Mismatch in shape: grad_output[{i}] has a shape of "
                                   f"{Size(g.shape)!r} and output[{i}] has a shape of "
                                   f"{Size(shape)!r}.")
        seeds.append(g)
    return seeds


def _gradient(g, i, out):
    """The value of grad_output[i]: a Tensor, a numpy array or a number of a real dtype."""
    if isinstance(g, Tensor):
        g = g._data
    elif isinstance(g, (np.ndarray, int, float, np.number)):
        g = check_dtype(np.asarray(g))
    else:
        raise TypeError(f"gradients can be Tensors, numpy arrays, numbers or None, but got "
                        f"{type(g).__name__}")
    if g.dtype.kind == "c":
        raise RuntimeError(f"For complex Tensors, both grad_output and output are required to have "
                           f"the same dtype. Mismatch in dtype: grad_output[{i}] has a dtype of "
                           f"{g.dtype} and output[{i}] has a dtype of {out._data.dtype}.")
    return g


def _checked_inputs(inputs, function):
    """`inputs` of grad() or backward() as a tuple of Tensors (PyTorch's errors)."""
    inputs = _as_tuple(inputs)
    if not inputs:
        raise RuntimeError(f"`inputs` argument to `{function}()` cannot be empty.")
    for t in inputs:
        if not isinstance(t, Tensor):
            raise RuntimeError(f"all inputs have to be Tensors, but got {type_name(t)}")
    return inputs


def _run(outputs, grad_outputs, retain_graph, extra_leaves=()):
    """Linearize, seed and sweep backward; returns the tape and the adjoint buffer.

    This is the whole cost of an eager `backward()` besides the compiled sweep, so it is kept to
    few Python operations."""
    for i, out in enumerate(outputs):
        if out.__class__ is not Tensor and not isinstance(out, Tensor):
            raise TypeError(f"outputs must be Tensors, got {type(out).__name__}")
        if graph.rebound_tensors and out._view is not None:
            views.refresh(out)
        if not out._requires_grad:
            raise RuntimeError(f"element {i} of tensors does not require grad and does not have "
                               "a grad_fn")
    if grad_outputs is None:
        grad_outputs = (None,) * len(outputs)
    else:
        grad_outputs = _as_tuple(grad_outputs) or (None,) * len(outputs)
        if len(grad_outputs) != len(outputs):
            raise RuntimeError(f"got {len(outputs)} tensors and {len(grad_outputs)} gradients")
    seeds = _seed(outputs, grad_outputs)
    leaves = [o for o in outputs if o._node is None]
    tape = linearize(outputs, leaves + list(extra_leaves) if extra_leaves else leaves)
    nodes = tape.nodes
    for node in nodes:
        if node.freed and _saves(node):
            raise RuntimeError(_FREED)
    check_versions(nodes)
    V = tape.V
    G0 = tape.adjoints()
    offsets, slots = tape.offsets, tape.slots
    for out, g in zip(outputs, seeds):
        node = out._node
        off = offsets[slots[out if node is None else node]]
        if g is None:
            G0[off] += 1.0
        else:
            G0[off:off + g.size] += g.ravel()
    if nodes:
        sweep.backward(tape, V, G0.reshape(1, -1))
        if not retain_graph:
            for node in nodes:
                node.freed = True
    return tape, G0


def _accumulate(tensor, tape, G, slot):
    off = tape.offsets[slot]
    data = tape.values[slot]        # the value as recorded (a leaf's: its data)
    grad = G[off:off + tape.sizes[slot]]
    if data.ndim != 1:
        grad = grad.reshape(data.shape)
    if tensor._grad is None:
        new = Tensor.__new__(Tensor)        # a plain leaf holding a copy (Tensor.__init__'s state)
        new._data = grad.astype(data.dtype)
        new._grad = new._node = new._view = None
        new._requires_grad = False
        tensor._grad = new
    else:
        tensor._grad._data += grad
        wrote(tensor._grad._data)


def backward(tensors, grad_tensors=None, retain_graph=None, create_graph=False, inputs=None):
    """Accumulate the gradients of `tensors` into `.grad` of the leaves (and retained tensors)."""
    if create_graph:
        raise NotImplementedError("create_graph=True: use the function transforms (tapegrad.grad"
                                  ", hessian, hvp) for higher derivatives")
    outputs = (tensors,) if tensors.__class__ is Tensor else _as_tuple(tensors)
    if inputs is not None:
        targets = _checked_inputs(inputs, "backward")
        for t in targets:
            if not t._requires_grad:
                raise RuntimeError("can't retain_grad on Tensor that has requires_grad=False")
        tape, G = _run(outputs, grad_tensors, retain_graph)
        for t in targets:
            s = tape.slot_of(t)
            if s is not None:
                _accumulate(t, tape, G, s)
        tape.release(tape.V, G)
        return
    tape, G = _run(outputs, grad_tensors, retain_graph)
    for s, leaf in tape.leaves:
        if leaf._requires_grad:
            _accumulate(leaf, tape, G, s)
    if graph.retaining:
        for node in tape.nodes:
            if node.retained is not None:
                t = node.retained()
                if t is not None:
                    _accumulate(t, tape, G, tape.slots[node])
    tape.release(tape.V, G)       # the gradients are copies: nothing refers to the buffers


def grad(outputs, inputs, grad_outputs=None, retain_graph=None, create_graph=False,
         allow_unused=None, materialize_grads=False):
    """The gradients of `outputs` with respect to `inputs`, without touching any `.grad`."""
    if create_graph:
        raise NotImplementedError("create_graph=True: use the function transforms (tapegrad.grad"
                                  ", hessian, hvp) for higher derivatives")
    outputs = _as_tuple(outputs)
    inputs = _checked_inputs(inputs, "grad")
    for i, t in enumerate(inputs):
        if not t._requires_grad:
            raise RuntimeError("One of the differentiated Tensors does not require grad")
    tape, G = _run(outputs, grad_outputs, retain_graph)
    result = []
    for i, t in enumerate(inputs):
        s = tape.slot_of(t)
        if s is None:
            if not (allow_unused or materialize_grads):
                raise RuntimeError(f"The differentiated Tensor at index {i} appears to not have "
                                   "been used in the graph. Set allow_unused=True if this is the "
                                   "desired behavior.")
            result.append(Tensor(np.zeros_like(t._data)) if materialize_grads else None)
        else:
            result.append(Tensor(tape.view(G, s).astype(t._data.dtype)))
    tape.release(tape.V, G)
    return tuple(result)


def jvp_of_graph(outputs, inputs, tangents):
    """Forward mode over an eager graph: the tangents of `outputs` given those of `inputs`.

    Runs the compiled tangent interpreter over the recorded tape (values are not recomputed).
    """
    outputs = _as_tuple(outputs)
    tape, T = _with_tangents(outputs, _as_tuple(inputs), _as_tuple(tangents))
    if len(tape.E):
        sweep.tangent(tape, tape.V, T)
    return tuple(Tensor(tape.view(T[0], tape.slot_of(o)).copy()) for o in outputs)


def hvp_of_graph(output, inputs, tangents):
    """Forward-over-reverse over an eager graph: d/dt of the gradient of a scalar `output`
    along `tangents`, i.e. Hessian-vector products, from one tangent and one reverse sweep."""
    inputs = _as_tuple(inputs)
    tape, T = _with_tangents((output,), inputs, _as_tuple(tangents))
    V = tape.V
    G = np.zeros(V.size, tape.dtype)
    TG = np.zeros((1, V.size), tape.dtype)
    s = tape.slot_of(output)
    G[tape.S[s, 0]] = 1.0
    if len(tape.E):
        sweep.tangent(tape, V, T)
        sweep.backward_tangent(tape, V, T, G, TG)
    return tuple(Tensor(tape.view(TG[0], tape.slot_of(t)).copy()) for t in inputs)


def _with_tangents(outputs, inputs, tangents):
    """The flat tape of the graph behind `outputs` (versions checked) and a tangent buffer
    holding `tangents` at the slots of `inputs`."""
    tape = linearize(outputs, inputs)
    check_versions(tape.nodes)
    T = np.zeros((1, tape.V.size), tape.dtype)
    for t, v in zip(inputs, tangents):
        off, size = tape.S[tape.slot_of(t)]
        T[0, off:off + size] = np.asarray(v._data if isinstance(v, Tensor) else v).ravel()
    return tape, T


def _tensor_backward(self, gradient=None, retain_graph=None, create_graph=False, inputs=None):
    """Accumulate d(self)/d(leaf) into each leaf's `.grad` (a VJP with `gradient`)."""
    backward(self, gradient, retain_graph, create_graph, inputs)


Tensor.backward = _tensor_backward
