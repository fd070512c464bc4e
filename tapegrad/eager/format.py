"""Text and HTML rendering of tensors, matching PyTorch's ``repr(tensor)``.

Users of an autograd library that mimics PyTorch read tensors all day; the
least surprising output is the one they already know.  This module therefore
ports the logic of ``torch/_tensor_str.py`` (``_Formatter``, ``_vector_str``,
``_tensor_str_with_formatter``, ``get_summarized_data``, ``_add_suffixes``)
to numpy arrays and reproduces its output byte for byte, quirks included
(e.g. the off-by-two line length estimate in ``_add_suffixes``).

Only numpy is used.  The one intentional difference from PyTorch is the dtype
namespace (``dtype=tapegrad.float32``) and the default float dtype, which is
float64 in tapegrad (PyTorch: float32); ``default_float`` makes this a
parameter so the output can be checked against torch itself.
"""

from __future__ import annotations

import contextlib
import dataclasses
import html
import math
from typing import Any, Iterable

import numpy as np

__all__ = [
    "format_tensor",
    "format_html",
    "set_printoptions",
    "get_printoptions",
    "printoptions",
]


# --------------------------------------------------------------------------
# Print options (module-level state, like torch's PRINT_OPTS)
# --------------------------------------------------------------------------


@dataclasses.dataclass
class _PrintOptions:
    """Current print options; the defaults are PyTorch's."""

    precision: int = 4
    threshold: float = 1000
    edgeitems: int = 3
    linewidth: int = 80
    sci_mode: bool | None = None


PRINT_OPTS = _PrintOptions()

_PROFILES = {
    "default": dict(precision=4, threshold=1000, edgeitems=3, linewidth=80),
    "short": dict(precision=2, threshold=1000, edgeitems=2, linewidth=80),
    "full": dict(precision=4, threshold=math.inf, edgeitems=3, linewidth=80),
}


def set_printoptions(
    precision=None,
    threshold=None,
    edgeitems=None,
    linewidth=None,
    sci_mode=None,
    profile=None,
):
    """Set options for printing tensors; mirrors ``torch.set_printoptions``.

    Args:
        precision: digits after the decimal point for floats (default 4).
        threshold: number of elements above which the output is summarized
            with ``...`` (default 1000).
        edgeitems: items shown at each end of a summarized dimension
            (default 3).
        linewidth: characters per line used to wrap long rows (default 80).
        sci_mode: True/False forces scientific notation on/off; None lets the
            formatter choose.  As in PyTorch, this option is *always* reset
            to the given value, so omitting it restores automatic choice.
        profile: ``"default"``, ``"short"`` or ``"full"``; applied first, the
            other arguments then override it.
    """
    if profile is not None:
        if profile not in _PROFILES:
            raise ValueError(
                f"unknown profile {profile!r}; expected one of {sorted(_PROFILES)}"
            )
        for key, value in _PROFILES[profile].items():
            setattr(PRINT_OPTS, key, value)
    if precision is not None:
        PRINT_OPTS.precision = precision
    if threshold is not None:
        PRINT_OPTS.threshold = threshold
    if edgeitems is not None:
        PRINT_OPTS.edgeitems = edgeitems
    if linewidth is not None:
        PRINT_OPTS.linewidth = linewidth
    PRINT_OPTS.sci_mode = sci_mode


def get_printoptions() -> dict[str, Any]:
    """Return the current print options as keyword arguments for
    :func:`set_printoptions`."""
    return dataclasses.asdict(PRINT_OPTS)


@contextlib.contextmanager
def printoptions(**kwargs):
    """Temporarily change print options (same arguments as
    :func:`set_printoptions`)."""
    old = get_printoptions()
    set_printoptions(**kwargs)
    try:
        yield
    finally:
        set_printoptions(**old)


# --------------------------------------------------------------------------
# Element formatting
# --------------------------------------------------------------------------

_SUPPORTED_KINDS = "biufc"

# Namespace shown in ``dtype=`` suffixes.  Tests set it to "torch." to
# compare with PyTorch byte for byte: "tapegrad." is two characters longer
# than "torch.", which can legitimately move a later suffix to a new line.
_DTYPE_PREFIX = "tapegrad."


def _dtype_name(dtype: np.dtype) -> str:
    """tapegrad/torch name of a numpy dtype (``float32``, ``int64``, ``bool``)."""
    if dtype.kind not in _SUPPORTED_KINDS or dtype.itemsize > (16 if dtype.kind == "c" else 8):
        raise TypeError(f"cannot format arrays of dtype {dtype}")
    return dtype.name


class _Formatter:
    """Decide how every element of a tensor is printed (port of torch's).

    All elements share one width so that columns line up.  For floats the
    formatter picks one of three styles from the non-zero finite values:

    * int_mode: every value is integral -> ``3.`` (the trailing dot marks
      a float tensor);
    * sci_mode: the values span more than 3 orders of magnitude, or exceed
      1e8, or go below 1e-4 -> ``1.0000e-08``;
    * otherwise fixed point with ``precision`` digits -> ``0.1000``.

    Zeros, nan and inf don't take part in the choice, and when no value is
    left the formatter keeps int_mode with width 1 (so ``tensor([0., nan])``).
    """

    def __init__(self, values: np.ndarray):
        self.floating_dtype = values.dtype.kind == "f"
        self.int_mode = True
        self.sci_mode = False
        self.max_width = 1

        flat = values.reshape(-1)
        if not self.floating_dtype:
            # ints and bools print with str(); the longest string belongs to
            # the largest or the most negative value (False/True included).
            if flat.size:
                for v in (flat.min().item(), flat.max().item()):
                    self.max_width = max(self.max_width, len(f"{v}"))
            return

        vals = flat[np.isfinite(flat) & (flat != 0)]
        if vals.size == 0:
            return

        # torch compares in the tensor's own dtype for the int test and in
        # float64 for the magnitude test (float16 would overflow at 1e8).
        self.int_mode = bool(np.all(vals == np.ceil(vals)))
        abs64 = np.abs(vals).astype(np.float64)
        lo, hi = float(abs64.min()), float(abs64.max())
        if PRINT_OPTS.sci_mode is None:
            self.sci_mode = hi / lo > 1000.0 or hi > 1.0e8 or lo < 1.0e-4
        else:
            self.sci_mode = PRINT_OPTS.sci_mode

        # torch measures every value; the printed length only depends on the
        # sign and is monotone in |x| (integer digits for fixed point, and
        # |exponent| for scientific, whose extremes sit at min/max |x|), so
        # the smallest and largest magnitude of each sign suffice.
        candidates = []
        for part in (vals[vals > 0], vals[vals < 0]):
            if part.size:
                candidates += [part.min().item(), part.max().item()]

        prec = PRINT_OPTS.precision
        for v in candidates:
            if self.sci_mode:
                width = len(f"{v:.{prec}e}")
            elif self.int_mode:
                width = len(f"{v:.0f}") + 1  # room for the trailing "."
            else:
                width = len(f"{v:.{prec}f}")
            self.max_width = max(self.max_width, width)

    def width(self) -> int:
        return self.max_width

    def format(self, value) -> str:
        """Right-align one python scalar to the common width."""
        prec = PRINT_OPTS.precision
        if self.floating_dtype:
            if self.sci_mode:
                ret = f"{value:{self.max_width}.{prec}e}"
            elif self.int_mode:
                ret = f"{value:.0f}"
                if not (math.isinf(value) or math.isnan(value)):
                    ret += "."
            else:
                ret = f"{value:.{prec}f}"
        else:
            ret = f"{value}"
        return (self.max_width - len(ret)) * " " + ret


# --------------------------------------------------------------------------
# Layout
# --------------------------------------------------------------------------


def _summarized_data(a: np.ndarray) -> np.ndarray:
    """The elements that a summarized print actually shows (torch's
    ``get_summarized_data``), so that hidden values don't widen columns."""
    e = PRINT_OPTS.edgeitems
    if a.ndim == 0:
        return a
    if a.ndim == 1:
        # With edgeitems == 0, torch does cat(a[:0], a[-0:]): the whole row.
        if a.shape[0] > 2 * e:
            return np.concatenate((a[:e], a[-e:]))
        return a
    if not e:
        return a[(slice(0, 0),) * a.ndim]
    idx = [
        np.r_[0:e, n - e : n] if n > 2 * e else np.arange(n) for n in a.shape
    ]
    return a[np.ix_(*idx)]


def _complex_str(value, fmt: _Formatter, imag_fmt: _Formatter) -> str:
    """torch's complex element: the real part, then the signed imaginary part and ``j``."""
    real = fmt.format(value.real)
    imag = (imag_fmt.format(value.imag) + "j").lstrip()
    return real + imag if imag[0] in "+-" else real + "+" + imag


def _vector_str(
    a: np.ndarray, indent: int, summarize: bool, fmt: _Formatter, imag_fmt=None
) -> str:
    """One row, wrapped to ``linewidth`` with continuation lines aligned
    after the opening bracket (``imag_fmt``: complex values' imaginary parts)."""
    element_length = fmt.width() + 2  # ", " between elements
    if imag_fmt is not None:
        element_length += imag_fmt.width() + 1
        element = lambda v: _complex_str(v, fmt, imag_fmt)  # noqa: E731
    else:
        element = fmt.format
    per_line = max(1, math.floor((PRINT_OPTS.linewidth - indent) / element_length))
    e = PRINT_OPTS.edgeitems

    if summarize and not e:
        data = ["..."]
    elif summarize and a.shape[0] > 2 * e:
        data = (
            [element(v) for v in a[:e].tolist()]
            + [" ..."]
            + [element(v) for v in a[-e:].tolist()]
        )
    else:
        data = [element(v) for v in a.tolist()]

    lines = [", ".join(data[i : i + per_line]) for i in range(0, len(data), per_line)]
    return "[" + (",\n" + " " * (indent + 1)).join(lines) + "]"


def _tensor_str_with_formatter(
    a: np.ndarray, indent: int, summarize: bool, fmt: _Formatter, imag_fmt=None
) -> str:
    """Nested brackets; a d-dim tensor separates its slices with d-1
    newlines, and each level indents one more column."""
    if a.ndim == 0:
        if imag_fmt is not None:
            return _complex_str(a.item(), fmt, imag_fmt)
        return fmt.format(a.item())
    if a.ndim == 1:
        return _vector_str(a, indent, summarize, fmt, imag_fmt)

    e = PRINT_OPTS.edgeitems
    n = a.shape[0]
    if summarize and n > 2 * e:
        slices = (
            [
                _tensor_str_with_formatter(a[i], indent + 1, summarize, fmt, imag_fmt)
                for i in range(e)
            ]
            + ["..."]
            + [
                _tensor_str_with_formatter(a[i], indent + 1, summarize, fmt, imag_fmt)
                for i in range(n - e, n)
            ]
        )
    else:
        slices = [
            _tensor_str_with_formatter(a[i], indent + 1, summarize, fmt, imag_fmt)
            for i in range(n)
        ]
    return "[" + ("," + "\n" * (a.ndim - 1) + " " * (indent + 1)).join(slices) + "]"


def _tensor_str(a: np.ndarray, indent: int) -> str:
    """Body of the repr (without prefix and suffixes)."""
    if a.size == 0:
        return "[]"
    summarize = a.size > PRINT_OPTS.threshold
    shown = _summarized_data(a) if summarize else a
    if a.dtype.kind == "c":
        fmt, imag_fmt = _Formatter(shown.real), _Formatter(shown.imag)
        return _tensor_str_with_formatter(a, indent, summarize, fmt, imag_fmt)
    return _tensor_str_with_formatter(a, indent, summarize, _Formatter(shown))


def _add_suffixes(tensor_str: str, suffixes: Iterable[str], indent: int) -> str:
    """Append ``, suffix`` items, moving one to a new line when the current
    line would exceed ``linewidth``.

    The line length estimate is torch's, including its ``+ 1`` (``+ 2`` when
    the text has no newline, since ``rfind`` returns -1); it is kept as is
    so that wrapping decisions match PyTorch exactly.
    """
    parts = [tensor_str]
    last_line_len = len(tensor_str) - tensor_str.rfind("\n") + 1
    for suffix in suffixes:
        if last_line_len + len(suffix) + 2 > PRINT_OPTS.linewidth:
            parts.append(",\n" + " " * indent + suffix)
            last_line_len = indent + len(suffix)
        else:
            parts.append(", " + suffix)
            last_line_len += len(suffix) + 2
    parts.append(")")
    return "".join(parts)


# --------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------


def format_tensor(
    data: np.ndarray,
    suffixes: Iterable[str] = (),
    default_float="float64",
    prefix: str = "tensor(",
) -> str:
    """Return PyTorch's ``repr`` of ``data`` as a tapegrad tensor.

    Args:
        data: numpy array (bool, int8..int64, uint8..uint64, float16/32/64,
            complex64/128).
        suffixes: extra items such as ``"requires_grad=True"`` or
            ``"grad_fn=<AddBackward0>"``, appended after the automatic
            ``size=`` / ``dtype=`` ones.
        default_float: the float dtype that gets no ``dtype=`` suffix;
            tapegrad's is float64, pass ``"float32"`` to compare with torch.
        prefix: text before the data; continuation lines are indented by
            its length.

    A ``dtype=tapegrad.<name>`` suffix appears when PyTorch would show one:
    for non-empty tensors unless the dtype is the default float, int64 or
    bool (those are inferable from the values); for empty tensors unless it
    is the default float.  Empty tensors that are not 1-d also show
    ``size=(...)``, as do all tensors when ``edgeitems`` is 0.
    """
    a = np.asarray(data)
    name = _dtype_name(a.dtype)
    default_name = np.dtype(default_float).name
    # non-empty: the default complex dtype, which goes with the default float, has none either
    default_complex = "complex128" if default_name == "float64" else "complex64"
    indent = len(prefix)
    extra = []

    if a.size == 0:
        if a.ndim != 1:
            extra.append("size=" + str(tuple(int(n) for n in a.shape)))
        if name != default_name:
            extra.append(f"dtype={_DTYPE_PREFIX}{name}")
        body = "[]"
    else:
        if not PRINT_OPTS.edgeitems:
            extra.append("size=" + str(tuple(int(n) for n in a.shape)))
        if name not in (default_name, default_complex, "int64", "bool"):
            extra.append(f"dtype={_DTYPE_PREFIX}{name}")
        body = _tensor_str(a, indent)

    extra.extend(suffixes)
    return _add_suffixes(prefix + body, extra, indent)


def format_html(
    data: np.ndarray,
    suffixes: Iterable[str] = (),
    default_float="float64",
    prefix: str = "tensor(",
) -> str:
    """HTML for notebooks (``_repr_html_``): the text repr, escaped, in a
    ``<pre>`` so columns stay aligned and ``grad_fn=<...>`` is not taken
    for a tag."""
    text = format_tensor(data, suffixes, default_float=default_float, prefix=prefix)
    return "<pre>" + html.escape(text) + "</pre>"
