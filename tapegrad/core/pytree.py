"""Nested containers of arrays (tuples, lists, dicts), flattened to a list of leaves and back.

Function transforms accept and return such "pytrees", as JAX does: a tree's structure is part of
the cache key, its leaves are the numbers and arrays that become tape inputs.
"""


class Leaf:
    """The structure of a single leaf."""
    __slots__ = ()

    def __repr__(self):
        return "*"

    def __reduce__(self):
        return "LEAF"       # unpickled as the singleton: structures compare by `is LEAF`


LEAF = Leaf()


def flatten(tree):
    """(leaves, structure) of a nested tuple/list/namedtuple/dict; anything else is a leaf."""
    leaves = []
    return leaves, _flatten(tree, leaves)


def _flatten(tree, leaves):
    if isinstance(tree, (tuple, list)):          # namedtuples included
        return (type(tree), tuple(_flatten(t, leaves) for t in tree))
    if isinstance(tree, dict):
        keys = sorted(tree)
        return (dict, tuple(keys), tuple(_flatten(tree[k], leaves) for k in keys))
    leaves.append(tree)
    return LEAF


def unflatten(structure, leaves):
    """The tree of `structure` with `leaves` (an iterable) in order."""
    return _unflatten(structure, iter(leaves))


def _unflatten(structure, leaves):
    if structure is LEAF:
        return next(leaves)
    if structure[0] is dict:
        return {k: _unflatten(s, leaves) for k, s in zip(structure[1], structure[2])}
    children = (_unflatten(s, leaves) for s in structure[1])
    if hasattr(structure[0], "_fields"):
        return structure[0](*children)
    return structure[0](children)


def describe(structure):
    """A structure as a short string: `(*, {'a': *})` for a tuple of a leaf and a dict."""
    if structure is LEAF:
        return "*"
    if structure[0] is dict:
        items = (f"{k!r}: {describe(c)}" for k, c in zip(structure[1], structure[2]))
        return "{" + ", ".join(items) + "}"
    inner = ", ".join(describe(c) for c in structure[1])
    if structure[0] is list:
        return f"[{inner}]"
    if hasattr(structure[0], "_fields"):
        return f"{structure[0].__name__}({inner})"
    return f"({inner}{',' if len(structure[1]) == 1 else ''})"
