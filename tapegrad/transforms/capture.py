"""Following closed-over arrays for `capture="call"`: where each constant of a tape came from.

A transform made with `capture="call"` re-reads, at every call, the arrays its function closes
over. The tape holds the array objects it saw at trace time (`Tape.constants`), so writing
into them (`w[:] = ...`, an optimizer's in-place step) is seen by re-reading them; a name
rebound to a new array (`w = w - lr * g`) is not. So when such a tape is traced, `Sources.of`
looks for where each constant came from:

* a cell of the function's closure (a variable of an enclosing function, `nonlocal`),
* a global name the function reads (its module's namespace),
* an attribute the function reads of an object it reaches that way, or of the object a bound
  method belongs to (`self.w`), looked up in the object's `__dict__` (properties are not run),

and it does the same for the Python functions the function calls (found the same way, a few
levels deep), so a helper's globals are followed too. At each call, `Sources.follow` reads
every source again: the same object is re-read as before; a new array (or tensor) of the same
shape and dtype replaces the old one in the tape's constants (its values are copied in at the
load); anything else (another shape or dtype, a number, None) means the tape is stale, and the
transform traces the function again.

A constant that cannot be traced back (an array in a list or a dict, or a view numpy made of a
closed-over array, such as `w.T` or `w[0]`) is still re-read, so mutating the array is seen,
but rebinding a name cannot be followed: such a tape warns once, when it is traced. Arrays the
function creates itself while it is traced (`np.eye(3)`) are not reported: nothing outside the
tape refers to them. Nor are values numpy computes from a closed-over array (`np.sum(w)`):
they are new arrays, constants of the tape, as without `capture="call"`.
"""
import functools
import os
import sys
import types
import warnings

import numpy as np

from ..eager.tensor import Tensor

MAX_DEPTH = 3          # functions called from functions called from the function


class Sources:
    """For some constants of one tape (by their index in `tape.constants`), where to read them."""
    __slots__ = ("entries",)

    def __init__(self, entries):
        self.entries = entries          # [(index in tape.constants, read, array last seen)]

    @classmethod
    def of(cls, f, tape, name):
        """The sources of `tape`'s constants found from `f` (warning once per tape about the
        constants held elsewhere that none of them explains)."""
        found = _sources(f)
        entries, lost = [], []
        for i, (_, array) in enumerate(tape.constants):
            read = found.get(id(array))
            if read is not None and _array_of(read()) is array:
                entries.append([i, read, array])
            elif _held_elsewhere(array):
                lost.append(array)
        if lost:
            shapes = ", ".join(str(a.shape) for a in lost[:4]) + (", ..." if len(lost) > 4 else "")
            warnings.warn(
                f"tapegrad: {name}(capture='call') of {getattr(f, '__name__', 'a function')} "
                f"re-reads {len(lost)} closed-over array(s) (shapes {shapes}) at every call, but "
                "cannot tell which name or attribute holds them (not a variable of the closure, "
                "a global, or an attribute of an object that one of them holds): writing into "
                "them is seen, rebinding the name to a new array is not. Update them in place "
                "(w[:] = ...) or pass them as arguments", RuntimeWarning,
                stacklevel=_caller_level())
        return cls(entries)

    def follow(self, tape):
        """Re-read every source: True when the tape still holds (rebound arrays of the same
        shape and dtype now in its constants), False when one was rebound to something else."""
        for entry in self.entries:
            i, read, old = entry
            try:
                new = _array_of(read())
            except (ValueError, KeyError, AttributeError):     # deleted (an empty cell...)
                return False
            if new is old:
                continue
            if new is None or new.shape != old.shape or new.dtype != old.dtype:
                return False
            tape.constants[i] = (tape.constants[i][0], new)
            entry[2] = new
        return True


def _held_elsewhere(array):
    """Whether something besides the tape refers to `array`, or to the array it is a view of
    (the tape's constants, this frame and getrefcount's argument make three references)."""
    if sys.getrefcount(array) > 4:          # + the caller's loop variable
        return True
    root = array
    while isinstance(root.base, np.ndarray):
        root = root.base
    return root is not array and sys.getrefcount(root) > 3    # + the view's base, this name


def _caller_level():
    """The `stacklevel` of the first frame outside tapegrad (the user's call)."""
    package = os.path.dirname(os.path.abspath(__file__))
    frame, level = sys._getframe(1), 1
    while frame is not None and os.path.dirname(os.path.abspath(frame.f_code.co_filename)) \
            == package:
        frame, level = frame.f_back, level + 1
    return level


def _array_of(value):
    """The array a source holds (a tensor's values), or None for anything else."""
    if isinstance(value, Tensor):
        return value.data
    return value if isinstance(value, np.ndarray) else None


def _sources(f):
    """{id(array): a function reading the source's current value} for the arrays reachable
    from `f`'s closure, globals and their attributes (see the module), the first found kept."""
    found, seen = {}, set()
    _search(f, found, seen, MAX_DEPTH)
    return found


def _search(f, found, seen, depth):
    f, owner = _unwrap(f)
    if f is None or id(f) in seen or depth < 0:
        return
    seen.add(id(f))
    names = _names(f.__code__)
    holders = [] if owner is None else [owner]
    for name, cell in zip(f.__code__.co_freevars, f.__closure__ or ()):
        try:
            value = cell.cell_contents
        except ValueError:              # not assigned yet
            continue
        _found(found, value, lambda cell=cell: cell.cell_contents)
        holders.append(value)
    namespace = f.__globals__
    for name in names:
        if name in namespace:
            value = namespace[name]
            _found(found, value, lambda name=name: namespace[name])
            holders.append(value)
    callees = list(holders)
    for holder in holders:
        attributes = getattr(holder, "__dict__", None)
        if isinstance(attributes, dict) and not isinstance(holder, type):
            for name in names:
                if name in attributes:
                    _found(found, attributes[name],
                           lambda attributes=attributes, name=name: attributes[name])
                    callees.append(attributes[name])
    for callee in callees:                  # functions it may call: their sources too
        if isinstance(callee, (types.FunctionType, types.MethodType, functools.partial)):
            _search(callee, found, seen, depth - 1)


def _found(found, value, read):
    array = _array_of(value)
    if array is not None:
        found.setdefault(id(array), read)


def _unwrap(f):
    """(the Python function behind `f`, the object of a bound method or None); (None, None)
    for what has no Python code (a builtin, a numpy function)."""
    owner = None
    while isinstance(f, functools.partial) or hasattr(f, "__wrapped__"):
        f = f.func if isinstance(f, functools.partial) else f.__wrapped__    # (functools.wraps)
    if isinstance(f, types.MethodType):
        owner, f = f.__self__, f.__func__
    if not isinstance(f, types.FunctionType):
        call = getattr(type(f), "__call__", None)
        if isinstance(call, types.FunctionType):    # a callable object: its __call__, its self
            return call, f
        return None, None
    return f, owner


def _names(code):
    """The global and attribute names a code object reads, with its nested code objects'."""
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _names(const)
    return names
