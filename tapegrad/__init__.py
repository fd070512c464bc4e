"""tapegrad: automatic differentiation on a flat Wengert tape, replayed by Numba interpreters.

    import tapegrad as tg
    x = tg.ones(2, 2, requires_grad=True)
    out = ((x + 2) * (x + 2) * 3).mean()
    out.backward()          # x.grad == 4.5 everywhere, as in PyTorch's autograd tutorial
"""
from . import autograd
from .eager.creation import (
    arange, as_tensor, bool_, default_dtype, double, empty, empty_like, eye, float, float16,
    float32, float64, from_numpy, full, full_like, half, int, int8, int16, int32, int64, linspace,
    long, manual_seed, ones, ones_like, rand, rand_like, randn, randn_like, tensor, uint8, zeros,
    zeros_like)
from .eager.format import set_printoptions
from .eager.graph import enable_grad, is_grad_enabled, no_grad, set_grad_enabled
from .eager.ops import (
    abs, amax, amin, broadcast_to, cat, clamp, clip, concatenate, cos, cumprod, cumsum, diff, div,
    dot, eq, exp, expm1, flatten, ge, gt, le, log, log1p, log_softmax, logsumexp, lt, matmul, max,
    maximum, mean, median, min, minimum, mul, ne, neg, permute, pow, prod, quantile, relu, reshape,
    sigmoid, sin, softmax, sort, sqrt, square, squeeze, stack, std, sub, sum, t, tan, tanh,
    transpose, unsqueeze, var, where)
from .eager.ops import (
    acos, acosh, arccos, arccosh, arcsin, arcsinh, arctan, arctan2, arctanh, asin, asinh, atan,
    atan2, atanh, copysign, cosh, deg2rad, exp2, float_power, fmax, fmin, fmod, heaviside, hypot,
    log2, log10, logaddexp, logaddexp2, nan_to_num, negative, positive, rad2deg, reciprocal,
    remainder, sinc, sinh)
from .eager.indexmaps import (
    atleast_1d, atleast_2d, atleast_3d, broadcast_tensors, chunk, column_stack, diag, diagflat,
    diagonal, dsplit, dstack, flip, fliplr, flipud, gather, hsplit, hstack, moveaxis, movedim,
    repeat_interleave, roll, rot90, row_stack, split, swapaxes, swapdims, take, take_along_dim,
    tensor_split, tile, tril, triu, vsplit, vstack)
from .eager.contraction import (
    kron, torch_cross as cross, torch_einsum as einsum, torch_inner as inner,
    torch_outer as outer, torch_outer as ger, torch_tensordot as tensordot, torch_vdot as vdot)
from .eager.tensor import Size, Tensor
from .eager.ops import add

__version__ = "0.1.0"


def is_tensor(obj):
    return isinstance(obj, Tensor)
from .transforms.tape import GuardError, Tape
from .inspect.display import GraphTape
from .eager.flatten import tape_of
from .transforms.gradients import grad, hessp, hvp, jacfwd, jacrev, jvp, value_and_grad, vjp
from .transforms.sparse import hessian, jacobian
from .transforms.compiled import Compiled, compiled
from .transforms.trace import trace_function as trace
from .batch.vmap import vmap
from .batch import native as _native      # installs compiled's fused member
from .transforms.io import load
from .core.validate import TapeFormatError, validate_tape
from .eager.anomaly import detect_anomaly, is_anomaly_enabled, set_detect_anomaly
