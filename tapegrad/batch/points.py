"""The batched arguments of one `vmap` call: their leaves, batch axes, and points.

`vmap(fn, in_axes)(*args)` maps some leaves of its arguments along an axis. Everything about
those arguments that every backend needs lives here: checking `in_axes` and the arguments
against each other (before anything reaches compiled code, with messages in the caller's
terms), the `Batch` (the leaves with their batch axis first, one point at a time for tracing,
a chunk of points as one (points, values) array for the drivers), and a jvp's (primals,
tangents) arguments. The CUDA backend's batch keeps device arrays on the device
(`cuda.Batch`); Dask's workers make a batch of the blocks they receive (`Batch.of_blocks`).
"""
import numbers

import numpy as np

from ..core import pytree
from ..transforms.signature import is_dynamic


def is_axis(axis):
    """An int, numpy's too, not a bool (a plain int answers first: this runs at every call)."""
    return type(axis) is int or (isinstance(axis, numbers.Integral) and not isinstance(axis, bool))


def check_in_axes(in_axes):
    """Refuse an `in_axes` that is not an int, None, or a tuple/list (one entry per positional
    argument) whose entries are ints, None, or tuples/lists/dicts of them (a tree prefix of the
    argument, as in JAX): checked when vmap is called, before any argument is seen."""
    if in_axes is None or is_axis(in_axes):
        return
    if not isinstance(in_axes, (tuple, list)):
        raise TypeError(f"vmap in_axes must be an int, None, or a tuple with one entry per "
                        f"positional argument, got {in_axes!r} ({type(in_axes).__name__})")
    for path, leaf in _axes_leaves(in_axes, "in_axes"):
        if leaf is not None and not is_axis(leaf):
            raise TypeError(f"vmap in_axes must be an int, None, or a (nested) tuple/list/dict "
                            f"of them, got {in_axes!r}: {path} is {leaf!r} "
                            f"({type(leaf).__name__})")


def _axes_leaves(tree, path):
    """(path, leaf) of every leaf of an axes tree, with its path as written (in_axes[1]['w'])."""
    if isinstance(tree, (tuple, list)):
        for i, child in enumerate(tree):
            yield from _axes_leaves(child, f"{path}[{i}]")
    elif isinstance(tree, dict):
        for key, child in tree.items():
            yield from _axes_leaves(child, f"{path}[{key!r}]")
    else:
        yield path, tree


def leaf_axes(args, in_axes):
    """The batch axis (or None) of every leaf of `args` (flattened in `pytree` order): an int
    or None applies to every leaf; a tuple has one entry per argument, each an int, None, or a
    tree of them that is a prefix of the argument's tree."""
    if in_axes is None or is_axis(in_axes):
        return [in_axes] * len(pytree.flatten(tuple(args))[0])
    if len(in_axes) != len(args):
        raise ValueError(f"vmap in_axes has {len(in_axes)} entries for {len(args)} positional "
                         f"argument{'' if len(args) == 1 else 's'}: give one per argument "
                         "(None for an argument that is not mapped)")
    axes = []
    for i, (arg, axis) in enumerate(zip(args, in_axes)):
        axes += _prefix_axes(axis, arg, f"in_axes[{i}]")
    return axes


def _prefix_axes(axes, tree, path):
    """`axes` (an axis, None, or a container matching `tree`'s) for every leaf of `tree`."""
    if axes is None or is_axis(axes):
        return [axes] * len(pytree.flatten(tree)[0])
    if isinstance(axes, dict) and isinstance(tree, dict) and set(axes) == set(tree):
        return [a for k in sorted(tree) for a in _prefix_axes(axes[k], tree[k], f"{path}[{k!r}]")]
    if isinstance(axes, (tuple, list)) and isinstance(tree, (tuple, list)) and \
            len(axes) == len(tree):
        return [a for i, (sub, child) in enumerate(zip(axes, tree))
                for a in _prefix_axes(sub, child, f"{path}[{i}]")]
    raise ValueError(f"vmap {path} is {axes!r}, which does not match the structure of its "
                     f"argument, {pytree.describe(pytree.flatten(tree)[1])}: give an int or "
                     "None for the whole argument, or a tree of them with its structure")


def _shape(leaf):
    """The shape of an argument leaf (an array of any kind, a Tensor, a number)."""
    shape = getattr(leaf, "shape", None)
    return tuple(np.shape(leaf) if shape is None else shape)


def _point_shape(leaf, axis):
    """The shape of one point of an argument leaf: its shape without the batch axis."""
    shape = _shape(leaf)
    return shape if axis is None else shape[:axis % len(shape)] + shape[axis % len(shape) + 1:]


def check_axis(leaf, axis):
    """Refuse a batch axis that the mapped leaf does not have."""
    shape = _shape(leaf)
    if not shape:
        raise ValueError(f"vmap: in_axes={axis} for a scalar argument (nothing to map)")
    if not -len(shape) <= axis < len(shape):
        raise ValueError(f"vmap: in_axes={axis} for an argument of shape {shape} ({len(shape)} "
                         f"ax{'is' if len(shape) == 1 else 'es'}: in_axes must be in "
                         f"[{-len(shape)}, {len(shape) - 1}] or None)")


def check_tangents(leaves, axes, n_primal):
    """For vmap(partial(jvp, f)): each tangent leaf has its primal's shape at every point (the
    batched replay reads as many tangent values per point as the primal has)."""
    for k in range(n_primal):
        primal = _point_shape(leaves[k], axes[k])
        tangent = _point_shape(leaves[n_primal + k], axes[n_primal + k])
        if primal != tangent:
            raise ValueError(f"vmap(partial(jvp, f)): tangent of shape {tangent} for a primal of "
                             f"shape {primal} at each point (primal leaf {k}; shapes without "
                             "the batch axis)")


def jvp_arguments(args):
    """(primals, tangents) of a call of vmap(partial(jvp, f)), as tuples of one structure."""
    if len(args) != 2:
        raise TypeError("vmap(partial(jvp, f)) takes (primals, tangents)")
    primals, tangents = tuple(args[0]), tuple(args[1])
    if pytree.flatten(primals)[1] != pytree.flatten(tangents)[1]:
        raise ValueError("vmap(partial(jvp, f)): primals and tangents must have the same "
                         "structure")
    return primals, tangents


class Batch:
    """The batched arguments of one call, split into leaves with the batch axis first."""

    def __init__(self, args, in_axes):
        self.leaves, self.structure = pytree.flatten(tuple(args))
        self.axis_of_leaf = [in_axes] * len(self.leaves) if in_axes is None or \
            is_axis(in_axes) else leaf_axes(args, in_axes)
        sizes = set()
        self.batched = []
        for k, (leaf, axis) in enumerate(zip(self.leaves, self.axis_of_leaf)):
            if axis is None:
                continue
            leaf = np.asarray(getattr(leaf, "data", leaf))
            if not -leaf.ndim <= axis < leaf.ndim:
                check_axis(leaf, axis)          # raises, saying what is wrong
            leaf = np.moveaxis(leaf, axis, 0)
            if not is_dynamic(leaf):
                raise TypeError(f"vmap maps over floating-point arrays; got {leaf.dtype}")
            self.leaves[k] = leaf
            self.batched.append(k)
            sizes.add(leaf.shape[0])
        if not sizes:
            raise ValueError("vmap needs at least one argument with a batch axis (in_axes)")
        if len(sizes) > 1:
            raise ValueError(f"vmap got inconsistent batch sizes {sorted(sizes)}")
        self.size = sizes.pop()

    @classmethod
    def of_blocks(cls, n_leaves, leaf_ids, blocks):
        """The batch whose mapped leaves `leaf_ids` (of `n_leaves`) are `blocks`, batch axis
        first, already checked (a block of a Dask computation); the other leaves are unknown
        (they are in the tape) and the structure is not needed: it only replays."""
        batch = cls.__new__(cls)
        batch.leaves = [None] * n_leaves
        for k, block in zip(leaf_ids, blocks):
            batch.leaves[k] = block
        batch.batched = list(leaf_ids)
        batch.axis_of_leaf = [0 if k in batch.batched else None for k in range(n_leaves)]
        batch.structure = None
        batch.size = blocks[0].shape[0]
        return batch

    def point(self, q):
        """The arguments at point q; for an empty batch, zeros of a point's shapes (what the
        tape is traced at then: only the shapes of the results are read)."""
        leaves = list(self.leaves)
        for k in self.batched:
            leaves[k] = leaves[k][q] if self.size else np.zeros(leaves[k].shape[1:],
                                                                  leaves[k].dtype)
        return pytree.unflatten(self.structure, leaves)

    def traced_point(self, q, schedule):
        """The arguments the function is traced at for point q: a jvp's primals only."""
        point = self.point(q)
        return point[0] if schedule.given_tangents else point

    def broadcast_tangents(self, n_primal):
        """A jvp's tangents shared by every point (in_axes None) as batched leaves of stride 0:
        the drivers read a jvp's tangents from the batched leaves only."""
        for k in range(n_primal, len(self.leaves)):
            if k not in self.batched:
                leaf = np.asarray(getattr(self.leaves[k], "data", self.leaves[k]))
                self.leaves[k] = np.broadcast_to(leaf, (self.size,) + leaf.shape)
                self.batched.append(k)
        self.batched.sort()

    def rows(self, leaves, index, dtype):
        """The batched input leaves `leaves` at the points `index` (a slice or an index array)
        as one (points, inputs) array; a view of the caller's array where it can be (the tile
        driver transposes each tile into the column layout itself)."""
        blocks = [self.leaves[k][index] for k in leaves]
        blocks = [b.reshape(b.shape[0], -1) for b in blocks]
        if not blocks:
            return None
        block = blocks[0] if len(blocks) == 1 else np.concatenate(blocks, axis=1)
        return np.ascontiguousarray(block, dtype=dtype)

    def width(self, leaves):
        """Values per point of the batched leaves `leaves` (the columns of their `rows`)."""
        return sum(int(np.prod(self.leaves[k].shape[1:], dtype=np.int64)) for k in leaves)
