"""`tapegrad.autograd`: PyTorch's `torch.autograd` for eager tensors.

    tapegrad.autograd.backward(loss)                   # as loss.backward()
    (g,) = tapegrad.autograd.grad(loss, (w,))          # the gradient, no .grad touched
    with tapegrad.autograd.no_grad(): ...
    tapegrad.autograd.set_detect_anomaly(True)

The public names only; the engine is the eager layer's (`eager.autograd`, grad mode in
`eager.graph`, anomaly mode in `eager.anomaly`).
"""
from .eager.anomaly import (
    detect_anomaly, is_anomaly_check_nan_enabled, is_anomaly_enabled, set_detect_anomaly)
from .eager.autograd import backward, grad, hvp_of_graph, jvp_of_graph
from .eager.graph import enable_grad, is_grad_enabled, no_grad, set_grad_enabled

__all__ = ["backward", "grad", "jvp_of_graph", "hvp_of_graph", "no_grad", "enable_grad",
           "set_grad_enabled", "is_grad_enabled", "detect_anomaly", "set_detect_anomaly",
           "is_anomaly_enabled", "is_anomaly_check_nan_enabled"]
