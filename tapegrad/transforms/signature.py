"""The signature of a call: which argument leaves are tape inputs, and what a tape was traced for.

A transformed function keeps one tape per signature: the structure of its arguments (the
positional ones, then the keyword ones as a dict: `arguments`) and, per leaf, `leaf_signature`:
shape and dtype for a float array or number, which are inputs (`is_dynamic`: their values may
change between replays); the value itself for everything else (ints, bools, strings, integer and
boolean arrays), which is static (part of the signature, so a new value retraces). Tracing,
the tape's own argument checks, the transforms' caches and batched replay all read a call this
way, so it lives below all of them. `describe*` word the errors about a call that does not match.
"""
import numpy as np

from ..core import pytree
from ..eager.tensor import Tensor


def arguments(args, kwargs):
    """The tree of a call's arguments: the positional ones, then the keyword ones as a dict."""
    return tuple(args) + (dict(kwargs or {}),)


def is_dynamic(leaf):
    """Whether an argument leaf is a tape input (float arrays and numbers) or static."""
    if isinstance(leaf, Tensor):
        leaf = leaf.data
    if isinstance(leaf, np.ndarray):
        return leaf.dtype.kind == "f"
    return isinstance(leaf, (float, np.floating))


def leaf_signature(leaf):
    """The part of the cache key for one argument leaf."""
    if isinstance(leaf, Tensor):
        leaf = leaf.data
    if isinstance(leaf, np.ndarray):
        if leaf.dtype.kind == "f":
            return ("array", leaf.shape, leaf.dtype.str)
        # integer and boolean arrays (indices, masks) are static: their values shape the tape
        return ("static array", leaf.shape, leaf.dtype.str, leaf.tobytes())
    if isinstance(leaf, (float, np.floating)):
        return ("float", np.asarray(leaf).dtype.str)
    try:
        hash(leaf)
    except TypeError:
        raise TypeError(f"cannot trace an argument of type {type(leaf).__name__}: arguments are "
                        "arrays, numbers, or tuples/lists/dicts of them") from None
    return ("static", type(leaf), leaf)


def input_dtypes(signature):
    """The dtype of each tape input (the dynamic leaves of `signature`, in order), as traced."""
    return tuple(np.dtype(sig[2] if sig[0] == "array" else sig[1])
                 for sig in signature[1] if sig[0] in ("array", "float"))


def count_leaves(structure):
    """How many leaves a tree of `structure` has."""
    if structure is pytree.LEAF:
        return 1
    children = structure[2] if structure[0] is dict else structure[1]
    return sum(count_leaves(c) for c in children)


def describe(leaf):
    """An argument leaf in words, for errors."""
    if isinstance(leaf, Tensor):
        leaf = leaf.data
    if isinstance(leaf, np.ndarray):
        return f"array of shape {leaf.shape} and dtype {leaf.dtype}"
    return repr(leaf)


def describe_signature(sig):
    """A leaf signature in words, for errors."""
    if sig[0] == "static":
        return repr(sig[2])
    if sig[0] == "float":
        return f"a number of dtype {np.dtype(sig[1])}"
    return f"{sig[0]} of shape {sig[1]} and dtype {np.dtype(sig[2])}"


def describe_call(structure):
    """The structure of a call's arguments (see `arguments`) in words, for errors."""
    n, keywords = len(structure[1]) - 1, list(structure[1][-1][1])
    return (f"{n} positional argument{'' if n == 1 else 's'}"
            f"{f' and keywords {keywords}' if keywords else ''} structured as "
            f"{pytree.describe((tuple, structure[1][:-1]))}")
