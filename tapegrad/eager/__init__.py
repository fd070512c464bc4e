"""The eager layer: PyTorch-style tensors whose operations record a graph, and its autograd.

    x = tapegrad.tensor([1.0, 2.0], requires_grad=True)
    loss = ((x + 2) * (x + 2) * 3).mean()      # numpy computes; each op records a node
    loss.backward()                            # the graph flattened, one compiled sweep

The modules, each importing only those listed before it (no import cycle, no import of the
package's front `tapegrad.autograd`):

    dtypes      what a tensor may hold and PyTorch's names for it
    format      printing values as PyTorch does
    graph       the recorded nodes, grad mode, version counters of in-place writes
    views       which tensors share memory, and a view's grad_fn after its base changed
    tensor      `Tensor` (state, flags, conversions, printing) and `record`
    ops         the operations; they attach the operators and methods to `Tensor`
    indexmaps   operations that move elements (flip, tril, diag, repeat, split, vstack...)
    contraction einsum and the products lowered with it (tensordot, kron, outer...), cross
    inplace     in-place operations (`x += y`, `x[i] = v`), attached to `Tensor`
    array       `Array`, the numpy-flavoured tensor of functions traced from numpy values
    numpy_api   numpy's dispatch (`np.sin(x)`), a registry filled by family modules
    flatten     the graph an output reaches as a flat tape (`linearize`, `tape_of`, `x.tape`)
    autograd    backward and grad (`x.backward()`); `tapegrad.autograd` re-exports them
    anomaly     anomaly mode
    creation    `tensor`, `zeros`, `randn`...

`Tensor` is defined with its state alone, and each module that implements a part of its
behaviour attaches it to the class, so the class never needs the modules above it. Importing
any module of this layer runs this file first, which imports them all in this order: the class
is complete before anything can use it. Where a lower module must reach a higher one at run
time, the higher one installs itself: anomaly mode sets `graph.on_record` and `core.sweep.checked`.
"""
from . import dtypes, format, graph, views, tensor, ops, indexmaps, contraction, inplace, array
from . import numpy_api, flatten, autograd, anomaly, creation

__all__ = ["dtypes", "format", "graph", "views", "tensor", "ops", "indexmaps", "contraction",
           "inplace", "array", "numpy_api", "flatten", "autograd", "anomaly", "creation"]
