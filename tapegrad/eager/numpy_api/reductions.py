"""numpy's reductions, scans and statistics on tensors.

`sum`, `mean`, `prod`, `max`/`amax`, `min`/`amin` are the ops themselves (they take numpy's
`axis`, `keepdims` and `dtype` as well as PyTorch's `dim` and `keepdim`). The others compute
numpy's value with numpy itself (so the value, the warnings and the errors for bad arguments are
numpy's) and record a lowering onto the primitives: scans (`cumsum`, `cumprod`), the stable sort
(`sort`, `partition`, `median`, `percentile`, `quantile`), pair differences (`diff`,
`gradient`), sums and elementwise entries (`var`, `std`, `average`, `ptp`, `nansum`,
`nanmean`). Values that depend on the order of the data are computed at every replay from the
sort primitive, never baked into the tape.
"""
import warnings

import numpy as np
from numpy.lib.array_utils import normalize_axis_index, normalize_axis_tuple

from .. import ops
from ..tensor import Tensor
from .registry import implements

implements(np.sum)(ops.sum)
implements(np.mean)(ops.mean)
implements(np.prod)(ops.prod)
implements(np.max, np.amax)(ops.amax)
implements(np.min, np.amin)(ops.amin)

_NO = np._NoValue
_SORTED = ("replayed by a sorting network at every point (the order is never baked into the "
           "tape); stable: ties keep their order, NaN sorts last, and a tied value's gradient "
           "goes where the stable order puts it, as in JAX")


def _data(a):
    return a._data if isinstance(a, Tensor) else a


def _refuse(name, **arguments):
    """TypeError for numpy arguments tapegrad does not support (given, and not their default)."""
    for key, value in arguments.items():
        if value is not None and value is not _NO and value is not False:
            raise TypeError(f"numpy.{name}: the argument {key}= is not supported on Tensors")


def _given(**arguments):
    """The keyword arguments the caller gave (numpy's defaults are its sentinel)."""
    return {k: v for k, v in arguments.items() if v is not _NO}


def _constant_only(name, what, value):
    if isinstance(value, Tensor) and (value._requires_grad or value._node is not None):
        raise NotImplementedError(f"numpy.{name}: {what} that depends on traced values is not "
                                  "supported (its gradient); pass a constant")
    return _data(value)


def _flat(a):
    return ops.reshape(a, -1, name="")


# ---- scans ------------------------------------------------------------------------------------

def _scan(prim, npfn, name, a, axis, dtype, out):
    _refuse(npfn.__name__, out=out)
    a = ops.as_tensor(a)
    value = npfn(a._data, axis=axis, dtype=dtype)
    if axis is None:
        a, axis = _flat(a), 0
    else:
        axis = normalize_axis_index(axis, a._data.ndim)
    return ops.scan(prim, a, axis, value, name)


@implements(np.cumsum, notes="one `cumsum` entry (a scan along the axis); values as numpy's "
                             "sequential sums")
def cumsum(a, axis=None, dtype=None, out=None):
    return _scan(ops.P["cumsum"], np.cumsum, "CumsumBackward0", a, axis, dtype, out)


@implements(np.cumprod, notes="one `cumprod` entry; gradients of every order exact at zeros "
                              "(no division)")
def cumprod(a, axis=None, dtype=None, out=None):
    return _scan(ops.P["cumprod"], np.cumprod, "CumprodBackward0", a, axis, dtype, out)


# ---- differences ------------------------------------------------------------------------------

def _edge(value, a, axis):
    """prepend/append as numpy takes them: a scalar is broadcast to one slice of a along axis."""
    value = ops.as_tensor(value)
    if value._data.ndim == 0:
        shape = list(a._data.shape)
        shape[axis] = 1
        value = ops.broadcast_to(value, shape)
    return value


@implements(np.diff, notes="one `gather_diff` entry per order (numpy's a[1:] - a[:-1])")
def diff(a, n=1, axis=-1, prepend=_NO, append=_NO):
    a = ops.as_tensor(a)
    edges = _given(prepend=prepend, append=append)
    np.diff(a._data, n, axis, **{k: _data(v) for k, v in edges.items()})   # numpy's checks
    if n == 0:
        return a
    axis = normalize_axis_index(axis, a._data.ndim)
    parts = [a]
    if "prepend" in edges:
        parts.insert(0, _edge(prepend, a, axis))
    if "append" in edges:
        parts.append(_edge(append, a, axis))
    if len(parts) > 1:
        a = ops.cat(parts, axis)
    return ops.differences(a, n, axis)


def _spacings(varargs, shape, axes):
    """numpy's spacing of each axis of np.gradient: a number, or the differences of the
    coordinates (a number again where they are uniform)."""
    if not varargs:
        return [1.0] * len(axes)
    if len(varargs) == 1 and np.ndim(varargs[0]) == 0:
        return list(varargs) * len(axes)
    spacings = []
    for d in varargs:
        d = np.asanyarray(d)
        if d.ndim:
            d = np.diff(d.astype(np.float64) if d.dtype.kind in "iu" else d)
            d = d[0] if (d == d[0]).all() else d
        spacings.append(d)
    return spacings


def _along(f, axis, start, stop):
    key = [slice(None)] * f._data.ndim
    key[axis] = slice(start, stop)
    return ops.getitem(f, tuple(key))


def _weighted(f, axis, parts):
    """sum of weight * f[start:stop] along axis over parts ((weight, start, stop), ...), summed
    left to right as numpy's expressions are."""
    total = None
    for weight, start, stop in parts:
        term = ops.mul(weight, _along(f, axis, start, stop))
        total = term if total is None else ops.add(total, term)
    return total


def _shaped(weights, axis, ndim):
    shape = [1] * ndim
    shape[axis] = -1
    return weights.reshape(shape)


def _gradient_along(f, axis, dx, edge_order):
    """numpy's np.gradient along one axis: central differences inside, one-sided ones of
    `edge_order` at the ends, each computed as numpy writes it, concatenated along the axis."""
    ndim = f._data.ndim
    if np.ndim(dx) == 0:
        inside = ops.div(ops.sub(_along(f, axis, 2, None), _along(f, axis, None, -2)), 2. * dx)
    else:
        dx1, dx2 = dx[0:-1], dx[1:]
        weights = (-dx2 / (dx1 * (dx1 + dx2)), (dx2 - dx1) / (dx1 * dx2),
                   dx1 / (dx2 * (dx1 + dx2)))
        inside = _weighted(f, axis, [(_shaped(w, axis, ndim), start, stop) for w, (start, stop)
                                     in zip(weights, ((None, -2), (1, -1), (2, None)))])
    uniform = np.ndim(dx) == 0
    if edge_order == 1:
        first = ops.div(ops.sub(_along(f, axis, 1, 2), _along(f, axis, 0, 1)),
                        dx if uniform else dx[0])
        last = ops.div(ops.sub(_along(f, axis, -1, None), _along(f, axis, -2, -1)),
                       dx if uniform else dx[-1])
    else:
        if uniform:
            head, tail = (-1.5 / dx, 2. / dx, -0.5 / dx), (0.5 / dx, -2. / dx, 1.5 / dx)
        else:
            dx1, dx2 = dx[0], dx[1]
            head = (-(2. * dx1 + dx2) / (dx1 * (dx1 + dx2)), (dx1 + dx2) / (dx1 * dx2),
                    - dx1 / (dx2 * (dx1 + dx2)))
            dx1, dx2 = dx[-2], dx[-1]
            tail = ((dx2) / (dx1 * (dx1 + dx2)), - (dx2 + dx1) / (dx1 * dx2),
                    (2. * dx2 + dx1) / (dx2 * (dx1 + dx2)))
        first = _weighted(f, axis, zip(head, (0, 1, 2), (1, 2, 3)))
        last = _weighted(f, axis, zip(tail, (-3, -2, -1), (-2, -1, None)))
    return ops.cat([first, inside, last], axis)


@implements(np.gradient, notes="spacings (numbers or coordinates) are constants; edge_order 1 "
                               "and 2; central differences as gather and elementwise entries")
def gradient(f, *varargs, axis=None, edge_order=1):
    spacing = [_constant_only("gradient", "a spacing", v) for v in varargs]
    f = ops.as_tensor(f)
    value = np.gradient(f._data, *spacing, axis=axis, edge_order=edge_order)   # numpy's checks
    if f._data.dtype.kind not in "fc":
        return tuple(Tensor(v) for v in value) if isinstance(value, tuple) else Tensor(value)
    axes = normalize_axis_tuple(range(f._data.ndim) if axis is None else axis, f._data.ndim)
    outs = tuple(_gradient_along(f, ax, dx, edge_order)
                 for ax, dx in zip(axes, _spacings(spacing, f._data.shape, axes)))
    return outs[0] if len(axes) == 1 else outs


# ---- spread -----------------------------------------------------------------------------------

def _spread(name, a, axis, dtype, out, ddof, keepdims, where, mean, correction):
    """(a, the reduced axes, ddof, keepdims, numpy's variance) of numpy's var/std arguments,
    after numpy's own checks (and warnings) of them."""
    _refuse(name, out=out, where=where, mean=mean)
    a = ops.as_tensor(a)
    options = dict(axis=axis, dtype=dtype, ddof=ddof, keepdims=keepdims,
                   **_given(correction=correction))
    getattr(np, name)(a._data, **options)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)     # numpy has just warned
        variance = np.var(a._data, **options)
    ddof = options.get("correction", ddof)
    dims = None if axis is None else normalize_axis_tuple(axis, a._data.ndim)
    return a, dims, ddof, bool(keepdims), variance


@implements(np.var, notes="ddof (and correction); the mean, the deviations and one segment sum "
                          "of squares")
def var(a, axis=None, dtype=None, out=None, ddof=0, keepdims=False, *, where=_NO, mean=_NO,
        correction=_NO):
    a, dims, ddof, keepdims, variance = _spread("var", a, axis, dtype, out, ddof, keepdims,
                                                where, mean, correction)
    return ops.variance(a, dims, ddof, keepdims, variance)


@implements(np.std, notes="sqrt(var): NaN gradient at zero variance (as autograd and JAX); "
                          "over an axis of at most one value the gradient is zero (as autograd)")
def std(a, axis=None, dtype=None, out=None, ddof=0, keepdims=False, *, where=_NO, mean=_NO,
        correction=_NO):
    a, dims, ddof, keepdims, variance = _spread("std", a, axis, dtype, out, ddof, keepdims,
                                                where, mean, correction)
    count = ops.reduction_count(a._data.shape, dims)
    if count <= 1:
        # std of at most one value is the constant 0 (NaN without degrees of freedom): a zero
        # gradient, as autograd gives it
        zero = ops.mul(ops.sum(a, dims, keepdim=keepdims), 0.0)
        return ops.add(zero, 0.0 if count - ddof > 0 else np.nan)
    return ops.sqrt(ops.variance(a, dims, ddof, keepdims, variance))


@implements(np.ptp, fused=False, notes="max - min: tied extremes share the gradient")
def ptp(a, axis=None, out=None, keepdims=False):
    _refuse("ptp", out=out)
    np.ptp(_data(a), axis=axis, keepdims=keepdims)                 # numpy's errors
    return ops.sub(ops.amax(a, axis=axis, keepdims=keepdims),
                   ops.amin(a, axis=axis, keepdims=keepdims))


@implements(np.average, notes="weights (traced or constant) and returned; the weighted sum "
                              "over the sum of the weights")
def average(a, axis=None, weights=None, returned=False, *, keepdims=_NO):
    a = ops.as_tensor(a)
    keep = _given(keepdims=keepdims)
    value = np.average(a._data, axis, _data(weights), returned, **keep)   # numpy's checks
    keepdims = bool(keep.get("keepdims", False))
    if weights is None:
        avg = ops.mean(a, axis=axis, keepdims=keepdims)
        total = np.asarray(value[1] if returned else 0)
        return (avg, Tensor(total)) if returned else avg
    w = ops.as_tensor(weights)
    dims = None if axis is None else normalize_axis_tuple(axis, a._data.ndim)
    if w._data.shape != a._data.shape:          # weights along the axes: broadcast over the rest
        if list(dims) != sorted(dims):
            w = ops.permute(w, tuple(int(d) for d in np.argsort(dims)), name="")
        w = ops.reshape(w, [s if d in dims else 1 for d, s in enumerate(a._data.shape)],
                        name="")
    scale = ops.sum(w, dims, keepdim=keepdims)
    avg = ops.div(ops.sum(ops.mul(a, w), dims, keepdim=keepdims), scale)
    if not returned:
        return avg
    if scale._data.shape != avg._data.shape:
        scale = ops.broadcast_to(scale, avg._data.shape)
    return avg, scale


# ---- NaN-ignoring sums ------------------------------------------------------------------------

def _without_nan(a):
    """a with its NaN replaced by 0 (decided at every replay), and the mask of its numbers."""
    a = ops.as_tensor(a)
    if a._data.dtype.kind != "f":
        return a, None
    numbers = ops.eq(a, a)
    return ops.where(numbers, a, 0.0), numbers


@implements(np.nansum, fused=False, notes="NaN are replaced by zeros at every replay (a `where` "
                                          "entry): their gradient is zero")
def nansum(a, axis=None, dtype=None, out=None, keepdims=False, initial=_NO, where=_NO):
    _refuse("nansum", out=out, initial=initial, where=where)
    clean, _ = _without_nan(a)
    return ops.sum(clean, axis=axis, keepdims=keepdims, dtype=dtype)


@implements(np.nanmean, fused=False, notes="the sum of the numbers over their count, both at "
                                           "every replay; NaN for a slice of NaN only")
def nanmean(a, axis=None, dtype=None, out=None, keepdims=False, *, where=_NO):
    _refuse("nanmean", out=out, where=where)
    a = ops.as_tensor(a)
    value = np.nanmean(a._data, axis=axis, dtype=dtype, keepdims=keepdims)   # warnings, checks
    clean, numbers = _without_nan(a)
    if numbers is None:
        return ops.mean(a, axis=axis, keepdims=keepdims, dtype=dtype)
    total = ops.sum(clean, axis=axis, keepdims=keepdims, dtype=dtype)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = ops.div(total, ops.sum(numbers, axis=axis, keepdims=keepdims))
    return _with_value(out, value)


# ---- order statistics -------------------------------------------------------------------------

@implements(np.sort, fused=False, notes="one `sort` entry, " + _SORTED + "; kind= is accepted "
                                        "and ignored (always stable)")
def sort(a, axis=-1, kind=None, order=None, *, stable=None):
    _refuse("sort", order=order)
    a = ops.as_tensor(a)
    value = np.sort(a._data, axis=axis, kind="stable")              # numpy's checks
    if axis is None:
        a, axis = _flat(a), 0
    return ops.sort_along(a, normalize_axis_index(axis, a._data.ndim), False, value)


@implements(np.partition, fused=False, notes="returns the sorted array (a partition for every "
                                             "kth; numpy leaves the order within each side "
                                             "undefined): " + _SORTED)
def partition(a, kth, axis=-1, kind="introselect", order=None):
    _refuse("partition", order=order)
    a = ops.as_tensor(a)
    np.partition(a._data, _data(kth), axis=axis)                    # numpy's checks of kth
    return sort(a, axis)


def _reduced(a, axis, keepdims, result_of_lanes):
    """Apply `result_of_lanes` (lanes on the last axis -> one value per lane, with any extra
    trailing axis) to a with the axes `axis` moved last, and shape the result as numpy does."""
    dims = None if axis is None else normalize_axis_tuple(axis, a._data.ndim)
    result = result_of_lanes(ops.lanes_last(a, dims))
    return result, ops.reduced_shape(a._data.shape, dims, keepdims)


@implements(np.median, fused=False, notes="the mean of the middle values of one `sort` entry, "
                                          "NaN where a slice holds one; " + _SORTED)
def median(a, axis=None, out=None, overwrite_input=False, keepdims=False):
    _refuse("median", out=out)
    a = ops.as_tensor(a)
    value = np.median(a._data, axis=axis, keepdims=keepdims)        # numpy's checks, warnings
    result, shape = _reduced(a, axis, keepdims, ops.median_of_lanes)
    out = ops.reshape(result, shape, name="")
    return _with_value(out, value)


def _with_value(t, value):
    """t, whose value is numpy's (the lowering computes it with numpy's operations), in
    numpy's dtype where numpy's rules give another (a weak q, a 0-d mean)."""
    value = np.asarray(value)
    if t._data.dtype == value.dtype:
        return t
    return ops.astype(t, value.dtype)


def _quantiles(name, a, q, axis, out, overwrite_input, method, keepdims, weights,
               interpolation, scale):
    _refuse(name, out=out, weights=weights)
    a = ops.as_tensor(a)
    q = _constant_only(name, "q", q)
    options = _given(method=method, interpolation=interpolation)
    value = getattr(np, name)(a._data, q, axis=axis, keepdims=keepdims, **options)
    method = options.get("method", options.get("interpolation", "linear"))
    weak = type(q) in (int, float)
    qs = np.true_divide(q, 100) if scale else np.asanyarray(q)
    result, shape = _reduced(a, axis, keepdims, lambda lanes: ops.quantiles_of_lanes(
        lanes, qs.reshape(-1), method, weak))
    result = ops.reshape(ops.moved_first(result), np.shape(qs) + shape, name="")
    return _with_value(result, value)


@implements(np.percentile, fused=False, notes="every method; q constant; " + _SORTED)
def percentile(a, q, axis=None, out=None, overwrite_input=False, method=_NO, keepdims=False,
               *, weights=None, interpolation=_NO):
    return _quantiles("percentile", a, q, axis, out, overwrite_input, method, keepdims, weights,
                      interpolation, True)


@implements(np.quantile, fused=False, notes="every method; q constant; " + _SORTED)
def quantile(a, q, axis=None, out=None, overwrite_input=False, method=_NO, keepdims=False,
             *, weights=None, interpolation=_NO):
    return _quantiles("quantile", a, q, axis, out, overwrite_input, method, keepdims, weights,
                      interpolation, False)
