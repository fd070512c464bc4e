"""Anomaly mode: find the operation that made the first NaN or infinity, and where it was recorded.

    with tapegrad.detect_anomaly():          # or tapegrad.autograd.set_detect_anomaly(True)
        loss = model(x)
        loss.backward()

In anomaly mode (a global switch, as in PyTorch):

* every recorded node keeps the place in the user's code that recorded it (file, line, function
  and source line; `Node.where`), which the errors below and the in-place version check name;
* forward: an operation whose output holds NaN or an infinity although its operands are finite
  raises a RuntimeError naming it (PyTorch does not check the forward pass; tapegrad does, as
  the first NaN usually starts there);
* backward: the sweeps run one entry at a time and the first entry that returns a NaN or an
  infinity in the gradient of one of its operands (from a finite incoming gradient) raises
  PyTorch's "Function 'LogBackward0' returned nan values in its 0th output." followed by the
  place the operation was recorded. Replays of traced tapes (`tapegrad.grad`) are checked the
  same way; their entries carry no source location.

`check_nan=False` keeps the locations (for the in-place hint) but checks no values. Everything
here is off the fast path: with anomaly mode off, recording pays one global test per node.

The switch is `graph.anomaly_enabled`, which recording reads; this module sets it, installs its
per-node work in `graph.on_record` and its checking sweeps in `core.sweep.checked` (the graph and
the sweeps sit below it and never import it).
"""
import functools
import linecache
import os
import sys
import warnings

import numpy as np

from . import graph
from .graph import location
from ..core import sweep
from ..core.registry import PRIMS

_check_nan = True
_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep
_WARNING = ("Anomaly Detection has been enabled. This mode will increase the runtime and should "
            "only be enabled for debugging.")


def is_anomaly_enabled():
    return graph.anomaly_enabled


def is_anomaly_check_nan_enabled():
    return _check_nan


def _set(mode, check_nan):
    global _check_nan
    graph.anomaly_enabled, _check_nan = bool(mode), bool(check_nan)
    # the sweeps over every tape (eager graphs and traced ones) check values while it is on
    sweep.checked = sys.modules[__name__] if mode else None


class detect_anomaly:
    """Context manager and decorator that turns anomaly mode on inside it (PyTorch's
    `torch.autograd.detect_anomaly`)."""

    def __init__(self, check_nan=True):
        self.check_nan = check_nan
        warnings.warn(_WARNING, UserWarning, stacklevel=2)

    def __enter__(self):
        self._prev = (graph.anomaly_enabled, _check_nan)
        _set(True, self.check_nan)
        return self

    def __exit__(self, *exc):
        _set(*self._prev)

    def __call__(self, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            prev = (graph.anomaly_enabled, _check_nan)
            _set(True, self.check_nan)
            try:
                return fn(*args, **kwargs)
            finally:
                _set(*prev)
        return wrapper


class set_detect_anomaly:
    """`set_detect_anomaly(mode)` switches anomaly mode now; used as a context manager it
    restores the previous mode afterwards (PyTorch's semantics)."""

    def __init__(self, mode, check_nan=True):
        self._prev = (graph.anomaly_enabled, _check_nan)
        _set(mode, check_nan)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        _set(*self._prev)


# ---- recording ----------------------------------------------------------------------------------

def _user_frame():
    """The innermost frame outside tapegrad: the user's line that recorded the operation."""
    frame = sys._getframe(2)
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE):
        frame = frame.f_back
    return frame


def recorded(node):
    """Called by `Node.__init__` in anomaly mode (`graph.on_record`): keep the location, check
    the forward value."""
    frame = _user_frame()
    if frame is not None:
        filename, line = frame.f_code.co_filename, frame.f_lineno
        node.where = (filename, line, frame.f_code.co_name,
                      linecache.getline(filename, line).strip())
    if _check_nan:
        value = node.value
        if value.dtype.kind in "fc" and not np.isfinite(value).all() and all(
                _finite(t.data) for t in node._inputs):
            raise RuntimeError(_forward_message(_name(node), value, node.where))


def _finite(a):
    return a.dtype.kind not in "fc" or bool(np.isfinite(a).all())


def _kind(a):
    return "nan" if np.isnan(a).any() else "inf"


def _name(node):
    return node.name() or node.prim.grad_fn


def _forward_message(name, value, where):
    return (f"Function '{name}' returned {_kind(value)} values in its forward output although "
            f"its inputs are finite (anomaly mode). The operation was recorded at "
            f"{location(where)}.")


# ---- sweeps, one entry at a time ---------------------------------------------------------------

def _entry_info(tape, e):
    nodes = getattr(tape, "nodes", None)
    if nodes is not None and e < len(nodes):
        return _name(nodes[e]), nodes[e].where
    return PRIMS[int(tape.E[e, 0])].grad_fn, None


def _operands(tape, e):
    row = tape.E[e]
    if PRIMS[int(row[0])].variadic:
        return [int(s) for s in tape.IP[row[5]:row[5] + row[6]]]
    return [int(s) for s in row[1:4] if s >= 0]


def _span(tape, s):
    off, size = int(tape.S[s, 0]), int(tape.S[s, 1])
    return slice(off, off + size)


def forward(tape, V, interp):
    """`sweep.forward` in anomaly mode: report the first entry that makes a NaN or inf.

    A tape with guards is swept to the end first: when its guards fail, the inputs belong to
    another branch (whose tape the transform traces next) and nothing is reported."""
    calls = dict(tape.calls)
    first = None
    for e in range(len(tape.E)):
        if e in calls:
            calls[e].forward(tape, V, e)
        else:
            interp.forward(tape.E, tape.FC, tape.IP, tape.S, V, e, e + 1)
        if not _check_nan or first is not None:
            continue
        out = V[..., _span(tape, int(tape.E[e, 4]))]
        if not _finite(out) and PRIMS[int(tape.E[e, 0])].differentiable and all(
                _finite(V[..., _span(tape, s)]) for s in _operands(tape, e)):
            first = (e, out.copy())
            if not getattr(tape, "guards", None):
                break
    if first is not None:
        guards_hold = getattr(tape, "guards_hold", None)
        if guards_hold is not None and tape.guards and not guards_hold(V):
            return
        name, where = _entry_info(tape, first[0])
        raise RuntimeError(_forward_message(name, first[1], where))


def backward(tape, V, G, interp):
    """`sweep.backward` in anomaly mode: PyTorch's error for the first entry whose VJP returns
    a NaN or an infinity from a finite incoming gradient."""
    calls = dict(tape.calls)
    for e in range(len(tape.E) - 1, -1, -1):
        out = int(tape.E[e, 4])
        if not tape.NEED[out]:
            continue
        incoming = _finite(G[..., _span(tape, out)])
        operands = [(i, s) for i, s in enumerate(_operands(tape, e)) if tape.NEED[s]]
        before = [_finite(G[..., _span(tape, s)]) for _, s in operands]
        if e in calls:
            calls[e].vjp(tape, V, G, e)
        else:
            interp.backward(tape.E, tape.FC, tape.IP, tape.S, tape.NEED, V, G, e, e + 1)
        if not (_check_nan and incoming):
            continue
        for (i, s), ok in zip(operands, before):
            grad = G[..., _span(tape, s)]
            if ok and not _finite(grad):
                name, where = _entry_info(tape, e)
                message = f"Function '{name}' returned {_kind(grad)} values in its {i}th output."
                if where is not None:
                    message += f" The operation was recorded at {location(where)}."
                raise RuntimeError(message)


graph.on_record = recorded
