"""numpy's functions without derivatives, on traced values: they pass through, as in HIPS
autograd (a result with zero gradient, never a TypeError).

A tape is replayed at new inputs, so a result computed from traced values cannot simply be a
constant holding the values of the trace. Three kinds:

* Rounding (`floor`, `ceil`, `trunc`, `fix`, `rint`, `round`/`around`, `floor_divide` and `//`)
  and tests (`isnan`, `isinf`, `isfinite`, `isposinf`, `isneginf`, `logical_*`, `isclose`,
  `all`, `any`) are recorded: rounding primitives with zero derivatives (`core.prims.rounding`),
  comparisons (no derivative) for the tests, so a replay computes them from its own inputs.
* Index-valued functions (`argmax`, `argmin`, `argsort`, `nonzero`, `flatnonzero`, `argwhere`,
  `count_nonzero`) return numpy's plain result, as autograd does, so that it indexes, counts
  and loops like numpy's; a guard records the condition under which it stays the same (the
  positions of the extremes, the nonzero pattern, the input's values for argsort), and a replay
  whose inputs change it traces the function again.
* Functions of the shape only (`zeros_like`, `ones_like`, `empty_like`) give constants
  (`full_like`, which may fill with a traced value, is in `shapes`). `allclose` and
  `array_equal` give a Python bool, a guard as `if x > 0:` records.
"""
import numpy as np

from .. import ops
from ...core.registry import BY_NAME
from ..array import constant_like as _constant
from ..graph import state
from ..tensor import record
from .registry import implements, implements_ufunc

_ZERO = "gradient 0 (autograd, PyTorch, JAX)"
_INDEX = "numpy's plain result; a replay whose inputs change it traces again (a guard on {})"
_PASSES = dict(notes=_ZERO, differentiable=False)


# ---- rounding --------------------------------------------------------------------------------

def _rounding(name, npfn):
    def rounded(x):
        x = ops.as_tensor(x)
        if x._data.dtype.kind not in "fc":
            return _constant(x, npfn(x._data))
        return record(BY_NAME[name], (x,), npfn(x._data))
    rounded.__name__ = rounded.__qualname__ = name
    return rounded


floor = implements_ufunc(np.floor, **_PASSES)(_rounding("floor", np.floor))
ceil = implements_ufunc(np.ceil, **_PASSES)(_rounding("ceil", np.ceil))
trunc = implements_ufunc(np.trunc, **_PASSES)(_rounding("trunc", np.trunc))
rint = implements_ufunc(np.rint, differentiable=False, notes=_ZERO + "; half to even")(
    _rounding("rint", np.rint))
implements(np.fix, **_PASSES)(trunc)


@implements(np.round, np.around, differentiable=False,
            notes=_ZERO + "; decimals as numpy (x * 10**d rounded, / 10**d)")
def round_(a, decimals=0, out=None):
    _no_out("round", out)
    a = ops.as_tensor(a)
    if decimals == 0 or a._data.dtype.kind not in "fc":
        return rint(a) if a._data.dtype.kind in "fc" else _constant(a, np.round(a._data, decimals))
    scale = 10.0 ** abs(decimals)            # numpy's: multiply, rint, divide (or the converse)
    if decimals > 0:
        return ops.div(rint(ops.mul(a, scale)), scale)
    return ops.mul(rint(ops.div(a, scale)), scale)


@implements_ufunc(np.floor_divide, differentiable=False,
                  notes="recorded; no derivative (autograd: none, PyTorch: zero)")
def floor_divide(a, b):
    return ops._binary(BY_NAME["floor_divide"], a, b)


# ---- tests -----------------------------------------------------------------------------------

@implements_ufunc(np.isnan, differentiable=False, notes="a recorded comparison x != x")
def isnan(x):
    return ops.ne(x, x)


@implements_ufunc(np.isinf, differentiable=False, notes="a recorded comparison |x| == inf")
def isinf(x):
    return ops.eq(ops.abs(ops.as_tensor(x)), np.inf)


@implements_ufunc(np.isfinite, differentiable=False, notes="a recorded comparison |x| < inf")
def isfinite(x):
    return ops.lt(ops.abs(ops.as_tensor(x)), np.inf)


def _for_floats(npfn):
    """The decorated recording for a floating-point tensor; numpy's constant result for
    others (an integer's sign has nothing a replay recomputes)."""
    def wrap(record):
        def passing(x):
            x = ops.as_tensor(x)
            if x._data.dtype.kind not in "fc":
                return _constant(x, npfn(x._data))
            return record(x)
        passing.__name__ = passing.__qualname__ = npfn.__name__
        return passing
    return wrap


@implements_ufunc(np.sign, differentiable=False,
                  notes="recorded comparisons (x > 0) - (x < 0); NaN stays NaN")
@_for_floats(np.sign)
def sign(x):
    dtype = x._data.dtype
    steps = ops.sub(ops.astype(ops.gt(x, 0), dtype), ops.astype(ops.lt(x, 0), dtype))
    return ops.where(ops.ne(x, x), x, steps)


@implements_ufunc(np.signbit, differentiable=False,
                  notes="a recorded comparison copysign(1, x) < 0 (-0.0 and -NaN included)")
@_for_floats(np.signbit)
def signbit(x):
    return ops.lt(ops._binary(BY_NAME["copysign"], np.ones((), x._data.dtype), x), 0)


@implements(np.isposinf, differentiable=False)
def isposinf(x, out=None):
    _no_out("isposinf", out)
    return ops.eq(x, np.inf)


@implements(np.isneginf, differentiable=False)
def isneginf(x, out=None):
    _no_out("isneginf", out)
    return ops.eq(x, -np.inf)


def _truth(x):
    """x != 0, as a recorded bool tensor (a bool tensor itself)."""
    x = ops.as_tensor(x)
    return x if x._data.dtype == np.bool_ else ops.ne(x, 0)


@implements_ufunc(np.logical_not, differentiable=False)
def logical_not(x):
    return ops.eq(_truth(x), False)


@implements_ufunc(np.logical_and, differentiable=False)
def logical_and(a, b):
    return ops.minimum(_truth(a), _truth(b))


@implements_ufunc(np.logical_or, differentiable=False)
def logical_or(a, b):
    return ops.maximum(_truth(a), _truth(b))


@implements_ufunc(np.logical_xor, differentiable=False)
def logical_xor(a, b):
    return ops.ne(_truth(a), _truth(b))


def _bitwise(ufunc, logical):
    """numpy's bitwise ufunc: the logical one on booleans (`mask & ~other`), numpy's result on
    integers that nothing records; integers computed from traced values are refused."""
    def bitwise(*operands):
        tensors = [ops.as_tensor(x) for x in operands]
        if all(t._data.dtype == np.bool_ for t in tensors):
            return logical(*tensors)
        if any(t._requires_grad or t._node is not None for t in tensors):
            raise TypeError(f"tapegrad does not support numpy.{ufunc.__name__} of recorded "
                            "non-boolean values (an integer bit pattern has no derivative "
                            "and no tape entry)")
        return _constant(tensors[0], ufunc(*(t._data for t in tensors)))
    bitwise.__name__ = bitwise.__qualname__ = ufunc.__name__
    return bitwise


for _ufunc, _logical in ((np.invert, logical_not), (np.bitwise_and, logical_and),
                         (np.bitwise_or, logical_or), (np.bitwise_xor, logical_xor)):
    implements_ufunc(_ufunc, differentiable=False, notes="booleans: the logical function")(
        _bitwise(_ufunc, _logical))


@implements(np.all, differentiable=False, fused=False, notes="a recorded minimum of x != 0")
def all_(a, axis=None, out=None, keepdims=False, *, where=None):
    _no_out("all", out, where)
    return _reduced_truth(ops.amin, a, axis, keepdims)


@implements(np.any, differentiable=False, fused=False, notes="a recorded maximum of x != 0")
def any_(a, axis=None, out=None, keepdims=False, *, where=None):
    _no_out("any", out, where)
    return _reduced_truth(ops.amax, a, axis, keepdims)


def _reduced_truth(extreme, a, axis, keepdims):
    truth = _truth(a)
    if truth._data.size == 0:                  # numpy's all() of nothing is True, any() False
        return _constant(truth, (np.all if extreme is ops.amin else np.any)(
            truth._data, axis=axis, keepdims=keepdims))
    return extreme(truth, axis=axis, keepdims=keepdims)


@implements(np.isclose, differentiable=False,
            notes="recorded comparisons, numpy's: |a - b| <= atol + rtol |b| where b is finite, "
                  "or a == b (NaN close to NaN with equal_nan)")
def isclose(a, b, rtol=1e-05, atol=1e-08, equal_nan=False):
    a, b = ops.as_tensor(a), ops.as_tensor(b)
    with np.errstate(invalid="ignore"):                 # inf - inf: not close, as numpy's
        near = ops.le(ops.abs(ops.sub(a, b)), ops.add(ops.mul(ops.abs(b), rtol), atol))
    close = ops.maximum(ops.minimum(near, isfinite(b)), ops.eq(a, b))
    if equal_nan:
        close = ops.maximum(close, ops.minimum(isnan(a), isnan(b)))
    return close


@implements(np.allclose, differentiable=False, fused=False,
            notes="a Python bool; a guard while tracing")
def allclose(a, b, rtol=1e-05, atol=1e-08, equal_nan=False):
    return bool(all_(isclose(a, b, rtol, atol, equal_nan)))


@implements(np.array_equal, differentiable=False, fused=False,
            notes="a Python bool; a guard while tracing")
def array_equal(a1, a2, equal_nan=False):
    if np.shape(a1) != np.shape(a2):
        return False
    equal = ops.eq(a1, a2)
    if equal_nan:
        equal = ops.maximum(equal, ops.minimum(isnan(a1), isnan(a2)))
    return bool(all_(equal))


# ---- index-valued functions ------------------------------------------------------------------

def _extreme_index(npfn, extreme, before):
    def index(a, axis=None, out=None, *, keepdims=False):
        _no_out(npfn.__name__, out)
        x = ops.as_tensor(a)
        result = npfn(x._data, axis=axis, keepdims=keepdims)
        if _traced(x):
            _guard_extreme(x, axis, extreme, before)
        return result
    index.__name__ = index.__qualname__ = npfn.__name__
    return index


def _guard_extreme(x, axis, extreme, before):
    """Guards that numpy's argmax (argmin) of `x` along `axis` keeps its value: the element
    there is the extreme, and every element before it is strictly below (above) it. With NaN,
    whose position numpy reports, the input's values themselves are guarded."""
    data = x._data
    if np.isnan(data).any():
        return _guard_unchanged(x)
    if axis is None:
        x, data, axis = ops.reshape(x, -1), data.reshape(-1), 0
    axis = axis % data.ndim
    idx = np.expand_dims(np.argmax(data, axis) if extreme is ops.amax else
                         np.argmin(data, axis), axis)
    m = extreme(x, axis=axis, keepdims=True)
    positions = np.take_along_axis(ops._positions(data.shape), idx, axis=axis)
    at = ops.record_gather(x, positions, np.take_along_axis(data, idx, axis=axis), "")
    _guard_all(ops.eq(at, m))
    shape = [1] * data.ndim
    shape[axis] = data.shape[axis]
    earlier = np.arange(data.shape[axis]).reshape(shape) < idx
    if earlier.any():
        _guard_all(ops.where(np.broadcast_to(earlier, data.shape), before(x, m), True))


argmax = implements(np.argmax, differentiable=False, fused=False,
                    notes=_INDEX.format("the positions of the maxima"))(
    _extreme_index(np.argmax, ops.amax, ops.lt))
argmin = implements(np.argmin, differentiable=False, fused=False,
                    notes=_INDEX.format("the positions of the minima"))(
    _extreme_index(np.argmin, ops.amin, ops.gt))


@implements(np.argsort, differentiable=False, fused=False,
            notes=_INDEX.format("the input's values"))
def argsort(a, axis=-1, kind=None, order=None, *, stable=None):
    x = ops.as_tensor(a)
    result = np.argsort(x._data, axis=axis, kind=kind, order=order, stable=stable)
    if _traced(x):
        _guard_unchanged(x)
    return result


def _nonzero_guarded(npfn):
    def index(a, *args, **kwargs):
        x = ops.as_tensor(a)
        if _traced(x) and x._data.size:
            _guard_all(ops.eq(_truth(x), x._data != 0))
        return npfn(x._data, *args, **kwargs)
    index.__name__ = index.__qualname__ = npfn.__name__
    return index


for _function in (np.nonzero, np.flatnonzero, np.argwhere, np.count_nonzero):
    implements(_function, differentiable=False, fused=False,
               notes=_INDEX.format("the nonzero pattern"))(
        _nonzero_guarded(_function))


def _traced(x):
    return state.tracing and (x._requires_grad or x._node is not None)


def _guard_all(mask):
    """A guard that every element of the recorded bool tensor `mask` is True (it is, now)."""
    ops.amin(mask)._guarded(True)


def _guard_unchanged(x):
    """A guard that `x` holds the values of the trace (NaN where it held NaN)."""
    data = x._data
    if data.size:
        nan = np.isnan(data)
        _guard_all(ops.eq(isnan(x), nan))
        _guard_all(ops.where(nan, True, ops.eq(x, np.where(nan, 0.0, data))))


# ---- functions of the shape ------------------------------------------------------------------

def _like(npfn):
    def like(prototype, dtype=None, order="K", subok=True, shape=None, *, device=None):
        x = ops.as_tensor(prototype)
        return _constant(x, npfn(x._data, dtype=dtype, shape=shape))
    like.__name__ = like.__qualname__ = npfn.__name__
    return like


for _function in (np.zeros_like, np.ones_like, np.empty_like):
    implements(_function, differentiable=False, notes="a constant")(_like(_function))


def _no_out(name, out, where=None):
    if out is not None or where is not None:
        raise TypeError(f"tapegrad does not support numpy.{name} with out= or where= on Tensors")
