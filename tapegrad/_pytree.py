"""Nested containers of arrays (tuples, lists, dicts), flattened to a list of leaves and back.

Function transforms accept and return such "pytrees", as JAX does: a tree's structure is part of
the cache key, its leaves are the numbers and arrays that become tape inputs.
"""


class Leaf:
    """The structure of a single leaf."""
    __slots__ = ()

    def __repr__(self):
        return "*"


LEAF = Leaf()


def flatten(tree):
    """(leaves, structure) of a nested tuple/list/dict; anything else is a leaf."""
    leaves = []
    return leaves, _flatten(tree, leaves)


def _flatten(tree, leaves):
    if isinstance(tree, (tuple, list)) and not hasattr(tree, "_fields"):
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
    return structure[0](_unflatten(s, leaves) for s in structure[1])
