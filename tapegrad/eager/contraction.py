"""Products lowered onto the tape's array primitives: einsum and the products written with it
(tensordot, inner, outer, kron, vdot), and the cross product, PyTorch-style (`tapegrad.einsum`,
`tapegrad.kron`...); numpy's functions of the same names (`eager.numpy_api.products`) record
through `contract` too.

An einsum is a sequence of pairwise contractions, in numpy's greedy `einsum_path` order for
three operands or more. Each operand is a `Term`: a tensor read with a logical shape (any shape
of its size: values are flat in C order, so `outer` and `vdot` read their operands flattened
without a reshape entry) and one letter per axis. Each step is one entry, or none:

* a letter repeated within an operand takes its diagonal: one gather;
* a letter that only one operand has and the output lacks is summed first: one segsum;
* two operands sharing summed letters are arranged (a gather each, none where one is already in
  order) as batches of matrices (batch, free, summed) and (batch, summed, free), multiplied by
  one batched matmul entry (BLAS in the flat interpreter); where every batch is one dot product
  (`ij,ij->i`): elementwise mul and one segsum, not a BLAS call per number;
* two operands sharing no summed letter are arranged (broadcast) to the result's letters and
  multiplied elementwise: one mul (an operand of one element needs no arrangement);
* the result is arranged in the output's order: one gather, none where the last step can give
  that order itself (a matmul with its operands swapped, a mul, a segsum).

Letters of size 1 broadcast, as in numpy's einsum. The result holds numpy's own value
(`np.einsum`, `np.tensordot`...); a replay agrees with it to rounding (its sums associate as
the kernels add).
"""
import builtins
import math
import string
import warnings

import numpy as np

from . import ops
from .ops import _positions, _recording, _tracked, as_tensor, record_gather
from .tensor import Tensor, constant, record
from ..core.registry import BY_NAME

try:
    from numpy._core.einsumfunc import _parse_einsum_input
except ImportError:                                     # numpy 1.x
    from numpy.core.einsumfunc import _parse_einsum_input

P = BY_NAME
LETTERS = string.ascii_letters


class Term:
    """An operand of a contraction: tensor `t` read as an array of `shape` (its size), one
    letter per axis."""
    __slots__ = ("t", "letters", "shape")

    def __init__(self, t, letters, shape=None):
        self.t, self.letters = t, letters
        self.shape = tuple(t._data.shape if shape is None else shape)

    def sizes(self):
        return dict(zip(self.letters, self.shape))


def _joint(n, m):
    """The size of a letter of sizes n and m in two operands (a size 1 broadcasts)."""
    return m if n == 1 else n


def index_map(letters, shape, target, sizes):
    """For each element of an array with letters `target` (of `sizes`), the flat position in
    an array of `letters` and `shape` of the element with the same indices. Every letter of
    `letters` must be in `target`; the others, and letters of size 1, broadcast."""
    order = [letters.index(c) for c in target if c in letters]
    positions = np.transpose(_positions(shape), order)
    shaped = [shape[letters.index(c)] if c in letters else 1 for c in target]
    return np.broadcast_to(positions.reshape(shaped), [sizes[c] for c in target])


def _gathered(term, positions, letters, value=None, name=""):
    """The Term of `letters` whose elements are the term's at `positions` (one gather)."""
    positions = np.asarray(positions)
    if value is None:
        value = term.t._data.reshape(-1)[positions]
    if _recording(term.t):
        return Term(record_gather(term.t, positions, value, name), letters, positions.shape)
    return Term(constant(value), letters, positions.shape)


def arranged(term, letters, sizes):
    """The term's tensor with its values in the order of `letters`, broadcast to `sizes` (the
    term itself where it already is)."""
    shape = tuple(sizes[c] for c in letters)
    if term.letters == letters and term.shape == shape:
        return term.t
    return _gathered(term, index_map(term.letters, term.shape, letters, sizes), letters).t


def diagonal_of(term):
    """A term whose letters repeat: its diagonal, each letter once (one gather)."""
    unique = "".join(dict.fromkeys(term.letters))
    if unique == term.letters:
        return term
    positions = np.einsum(f"{term.letters}->{unique}", _positions(term.shape))
    return _gathered(term, positions, unique)


def summed(term, letters, value=None, name=None):
    """The term summed over the letters that `letters` lacks, in the order of `letters`: one
    segsum whose segment ids place each sum (one `total` when nothing remains)."""
    sizes = term.sizes()
    shape = tuple(sizes[c] for c in letters)
    if value is None:
        value = np.einsum(f"{term.letters}->{letters}", term.t._data.reshape(term.shape))
    value = np.asarray(value)
    if not _recording(term.t):
        return Term(constant(value), letters, shape)
    if not letters:
        t = record(P["total"], (term.t,), value, c0=1.0, name=name)
    else:
        ids = np.ascontiguousarray(index_map(letters, shape, term.letters, sizes), np.int64)
        t = record(P["segsum"], (term.t,), value, ids.ravel(), c0=1.0, name=name)
    return Term(t, letters, shape)


def product(a, b, keep, target=None, value=None, name=None):
    """The contraction of terms a and b over the letters they share that `keep` lacks. With
    `target` (the output's letters, when this is the last step), the result is in that order
    and holds `value`."""
    sa, sb = a.sizes(), b.sizes()
    sizes = {c: _joint(sa.get(c, 1), sb.get(c, 1)) for c in a.letters + b.letters}
    shared = [c for c in a.letters if c in b.letters]
    batch = [c for c in shared if c in keep]
    contracted = [c for c in shared if c not in keep]
    free_a = [c for c in a.letters if c not in b.letters]
    free_b = [c for c in b.letters if c not in a.letters]
    if not contracted:
        letters = target if target is not None else "".join(batch + free_a + free_b)
        return _elementwise(a, b, letters, sizes, value, name)
    if _count(free_a, sizes) == 1 and _count(free_b, sizes) == 1 and _count(batch, sizes) > 1:
        letters = "".join(batch + free_a + free_b + contracted)
        each = _elementwise(a, b, letters, sizes, None, "")
        kept = target if target is not None else "".join(batch + free_a + free_b)
        return summed(each, kept, value, name)
    return _batched_matmul(a, b, batch, contracted, sizes, target, value, name)


def _count(letters, sizes):
    return math.prod(sizes[c] for c in letters)


def _elementwise(a, b, letters, sizes, value, name):
    """a * b with both arranged to `letters` (one mul; an operand of one value is not)."""
    x = a.t if a.t._data.size == 1 else arranged(a, letters, sizes)
    y = b.t if b.t._data.size == 1 else arranged(b, letters, sizes)
    shape = tuple(sizes[c] for c in letters)
    if value is None:
        value = np.multiply(x._data, y._data).reshape(shape)
    return Term(record(P["mul"], (x, y), np.asarray(value), name=name), letters, shape)


def _batched_matmul(a, b, batch, contracted, sizes, target, value, name):
    """One matmul entry over the batches of (free of a, contracted) @ (contracted, free of b);
    with a target, its letters grouped in target's order, the operands swapped where that
    gives the target's order (`ij,jk->ki`), else one gather to it after."""
    in_order, first, second = False, a, b
    if target is not None:
        rank = target.index
        for x, y in ((a, b), (b, a)):
            groups = [sorted(batch, key=rank), sorted(_free(x, y), key=rank),
                      sorted(_free(y, x), key=rank)]
            if "".join(sum(groups, [])) == target:
                in_order, first, second = True, x, y
                break
        batch = sorted(batch, key=rank)
    free_a, free_b = _free(first, second), _free(second, first)
    if target is not None:
        free_a, free_b = sorted(free_a, key=target.index), sorted(free_b, key=target.index)
    left = arranged(first, "".join(batch + free_a + contracted), sizes)
    right = arranged(second, "".join(batch + contracted + free_b), sizes)
    nb, m, k, n = (_count(g, sizes) for g in (batch, free_a, contracted, free_b))
    letters = "".join(batch + free_a + free_b)
    shape = tuple(sizes[c] for c in letters)
    if value is None or not in_order:
        result = np.matmul(left._data.reshape(nb, m, k), right._data.reshape(nb, k, n))
        result = result.reshape(shape)
    else:
        result = np.asarray(value)
    payload = np.array([nb, m, k, n, m * k, k * n, not _tracked(left), not _tracked(right)],
                       np.int64)
    term = Term(record(P["matmul"], (left, right), result, payload,
                       name=name if in_order or target is None else ""), letters, shape)
    if target is not None and not in_order:
        term = _gathered(term, index_map(letters, shape, target, sizes), target, value, name)
    return term


def _free(x, y):
    return [c for c in x.letters if c not in y.letters]


def contract(tensors, inputs, output, value, shapes=None, name=None):
    """The tensor holding `value`, numpy's einsum of `tensors` with subscripts `inputs` (one
    string of single-letter indices per tensor, no ellipsis) and `output`, recorded as
    contractions. `shapes`: the logical shape of each tensor (default: its own)."""
    value = np.asarray(value)
    if not _recording(*tensors):
        return constant(value if value.base is None else value.copy())
    shapes = shapes or [None] * len(tensors)
    terms = [Term(t, s, shape) for t, s, shape in zip(tensors, inputs, shapes)]
    if len(terms) == 1:
        return _single(terms[0], output, value, name)
    terms = [_prepared(terms, i, output) for i in range(len(terms))]
    steps = _path(terms, output) if len(terms) > 2 else [(0, 1)]
    for step in steps:
        group = [terms[i] for i in step]
        terms = [t for i, t in enumerate(terms) if i not in step]
        result = group[0]
        for j, other in enumerate(group[1:], 1):
            rest = terms + group[j + 1:]
            keep = set(output).union(*(t.letters for t in rest))
            last = not rest
            result = product(result, other, keep, output if last else None,
                             value if last else None, name if last else "")
        terms.append(result)
    return terms[0].t


def _single(term, output, value, name):
    """An einsum of one operand: a diagonal, transposition or both (one gather), or sums."""
    if all(c in output for c in term.letters):
        positions = np.einsum(f"{term.letters}->{output}", _positions(term.shape))
        return _gathered(term, positions, output, value.copy() if value.base is not None
                         else value, name).t
    return summed(diagonal_of(term), output, value, name).t


def _prepared(terms, i, output):
    """Term i with its diagonals taken and the letters no other term nor the output has summed."""
    term = diagonal_of(terms[i])
    needed = set(output).union(*(t.letters for j, t in enumerate(terms) if j != i))
    kept = "".join(c for c in term.letters if c in needed)
    return term if kept == term.letters else summed(term, kept, name="")


def _path(terms, output):
    """numpy's greedy contraction order: tuples of positions in the list of terms, whose terms
    are replaced by their product at its end."""
    spec = ",".join(t.letters for t in terms) + "->" + output
    probes = [np.broadcast_to(np.zeros(()), t.shape) for t in terms]
    path = np.einsum_path(spec, *probes, optimize="greedy")[0]
    return [tuple(step) for step in path[1:]]


# ---- einsum and the products written with it -------------------------------------------------

def einsum(*operands, **kwargs):
    """numpy's einsum (subscripts as a string, or operands interleaved with sublists) of tensors
    and arrays, recorded as contractions. `optimize`, `dtype`, `order` and `casting` go to
    numpy for the value; `out=` is refused."""
    if kwargs.pop("out", None) is not None:
        raise TypeError("numpy.einsum on Tensors does not write into out=; use its result")
    args = list(operands)
    if not args:
        raise ValueError("No input operands")
    if isinstance(args[0], str):
        where = range(1, len(args))
    else:
        where = range(0, len(args) - len(args) % 2, 2)
    tensors = [as_tensor(args[i]) for i in where]
    for i, t in zip(where, tensors):
        args[i] = t._data
    value = np.einsum(*args, **kwargs)
    for i, t in zip(where, tensors):
        args[i] = _probe(t)
    inputs, output, _ = _parse_einsum_input(tuple(args))
    return contract(tensors, inputs.split(","), output, value)


def _probe(t):
    """A stand-in of t's shape for numpy's parsers (they convert operands to arrays)."""
    return np.broadcast_to(np.zeros(()), t._data.shape)


def contract_spec(spec, tensors, value):
    """`value`, numpy's result of the einsum `spec` of `tensors` that numpy computed by another
    function (`np.vecdot`...), recorded as that einsum's contractions."""
    inputs, output, _ = _parse_einsum_input((spec, *map(_probe, tensors)))
    return contract(tensors, inputs.split(","), output, value)


def torch_einsum(equation, *operands):
    """PyTorch's einsum: the operands listed, or in one list."""
    if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
        operands = tuple(operands[0])
    return einsum(equation, *operands)


def tensordot(a, b, axes=2):
    """numpy's tensordot: the sum over `axes` (the last n of a with the first n of b, or the
    listed pairs), the free axes of a then those of b."""
    a, b = as_tensor(a), as_tensor(b)
    value = np.tensordot(a._data, b._data, axes)
    na, nb = a._data.ndim, b._data.ndim
    if isinstance(axes, (int, np.integer)):
        axes_a, axes_b = list(range(na - axes, na)), list(range(int(axes)))
    else:
        axes_a, axes_b = ([x] if isinstance(x, (int, np.integer)) else list(x) for x in axes)
        axes_a = [int(x) % builtins.max(na, 1) for x in axes_a]
        axes_b = [int(x) % builtins.max(nb, 1) for x in axes_b]
    la = list(LETTERS[:na])
    fresh = iter(LETTERS[na:])
    lb = [la[axes_a[axes_b.index(j)]] if j in axes_b else next(fresh) for j in range(nb)]
    output = [c for i, c in enumerate(la) if i not in axes_a] + \
        [c for j, c in enumerate(lb) if j not in axes_b]
    return contract([a, b], ["".join(la), "".join(lb)], "".join(output), value)


def torch_tensordot(a, b, dims=2):
    """PyTorch's tensordot: `dims` an int or a pair of lists of dimensions."""
    a, b = as_tensor(a), as_tensor(b)
    sa, sb = a._data.shape, b._data.shape
    if isinstance(dims, Tensor):
        dims = dims._data.tolist()
    if isinstance(dims, (int, np.integer)):
        if dims < 0:
            raise RuntimeError(f"tensordot expects dims >= 0, but got dims={dims}")
        if dims > builtins.min(len(sa), len(sb)):
            raise RuntimeError(f"tensordot expects dims < ndim_a or ndim_b, but got dims={dims}")
        pairs = list(zip(range(len(sa) - dims, len(sa)), range(dims)))
    else:
        da, db = ([x] if isinstance(x, (int, np.integer)) else list(x) for x in dims)
        if len(da) != len(db):
            raise RuntimeError("both dimension lists should have same length")
        pairs = [(ops._dims(i, None, len(sa))[0], ops._dims(j, None, len(sb))[0])
                 for i, j in zip(da, db)]
    for i, j in pairs:
        if sa[i] != sb[j]:
            raise RuntimeError(f"contracted dimensions need to match, but first has size {sa[i]}"
                               f" in dim {i} and second has size {sb[j]} in dim {j}")
    return tensordot(a, b, ([i for i, _ in pairs], [j for _, j in pairs]))


def inner(a, b):
    """The sum over the last axes of a and b (a product where one is 0-d), numpy's inner."""
    a, b = as_tensor(a), as_tensor(b)
    if a._data.ndim == 0 or b._data.ndim == 0:
        return ops.mul(a, b)
    value = np.inner(a._data, b._data)
    na, nb = a._data.ndim, b._data.ndim
    la, lb = LETTERS[:na], LETTERS[na:na + nb - 1] + LETTERS[na - 1]
    return contract([a, b], [la, lb], la[:-1] + lb[:-1], value)


def torch_inner(input, other):
    a, b = as_tensor(input), as_tensor(other)
    sa, sb = a._data.shape, b._data.shape
    if sa and sb and sa[-1] != sb[-1]:
        raise RuntimeError(f"inner() the last dimension must match on both input tensors but got "
                           f"shapes {list(sa)} and {list(sb)}")
    return inner(a, b)


def outer(a, b):
    """numpy's outer: the products of every element of a (flattened) with every one of b."""
    a, b = as_tensor(a), as_tensor(b)
    value = np.outer(a._data, b._data)
    return contract([a, b], ["a", "b"], "ab", value, [(a._data.size,), (b._data.size,)])


def torch_outer(input, vec2):
    for what, t in (("self", input), ("vec2", vec2)):
        ndim = as_tensor(t)._data.ndim
        if ndim != 1:
            raise RuntimeError(f"outer: Expected 1-D argument {what}, but got {ndim}-D")
    return outer(input, vec2)


def kron(a, b):
    """The Kronecker product (numpy's kron): blocks a[i] * b, shapes aligned at the right."""
    a, b = as_tensor(a), as_tensor(b)
    value = np.kron(a._data, b._data)
    nd = builtins.max(a._data.ndim, b._data.ndim)
    shape_a = (1,) * (nd - a._data.ndim) + a._data.shape
    shape_b = (1,) * (nd - b._data.ndim) + b._data.shape
    la, lb = LETTERS[:nd], LETTERS[nd:2 * nd]
    interleaved = "".join(x + y for x, y in zip(la, lb))
    return contract([a, b], [la, lb], interleaved, value, [shape_a, shape_b])


def vdot(a, b, name=None):
    """numpy's vdot: the sum of the products of a's and b's elements, both flattened."""
    a, b = as_tensor(a), as_tensor(b)
    value = np.vdot(a._data, b._data)
    return contract([a, b], ["a", "a"], "", value, [(a._data.size,), (b._data.size,)], name)


def torch_vdot(input, other):
    """PyTorch's vdot: of two 1-D tensors of one dtype and size (the checks of `dot`)."""
    a, b = as_tensor(input), as_tensor(other)
    ops.dot(Tensor(a._data), Tensor(b._data))       # PyTorch's errors, on constants
    return vdot(a, b, "VdotBackward0")


# ---- the cross product -----------------------------------------------------------------------

_ROTATE = ((1, 2, 0), (2, 0, 1))        # components of c = a[i] b[j] - a[j] b[i], for i, j


def cross(a, b, axisa=-1, axisb=-1, axisc=-1, axis=None, name=None):
    """numpy's cross product of 3-vectors (or 2-vectors, with a zero third component) along
    the given axes, with broadcasting: four gathers of components, two muls and a sub, numpy's
    own sequence of roundings."""
    a, b = as_tensor(a), as_tensor(b)
    value = np.cross(a._data, b._data, axisa, axisb, axisc, axis)
    if not _recording(a, b):
        return constant(value)
    if axis is not None:
        axisa = axisb = axisc = axis
    both_2d = a._data.shape[axisa] == 2 and b._data.shape[axisb] == 2
    ca, cb = _vectors(a, axisa), _vectors(b, axisb)
    lead = np.broadcast_shapes(ca[1].shape[:-1], cb[1].shape[:-1])
    axisc = None if both_2d else int(axisc) % (len(lead) + 1)

    def components(vectors, order):
        source, positions = vectors
        picked = np.broadcast_to(positions[..., list(order)], lead + (len(order),))
        if axisc is None:
            picked = picked[..., 0]
        else:
            picked = np.moveaxis(picked, -1, axisc)
        return over_source(source, picked)

    orders = ((0,), (1,)) if both_2d else _ROTATE       # z = a0 b1 - a1 b0
    first, second = (components(ca, o) for o in orders)
    third, fourth = (components(cb, o) for o in reversed(orders))
    left = ops.mul(first, third)
    right = ops.mul(second, fourth)
    return record(P["sub"], (left, right), np.asarray(value), name=name)


def _vectors(t, axis):
    """(source, positions): the positions of t's vector components, on the last axis, in the
    flat source they index: t itself, or (0, t...) for 2-vectors, whose third component reads
    the zero."""
    positions = np.moveaxis(_positions(t._data.shape), axis, -1)
    if positions.shape[-1] == 3:
        return [t], positions
    zero = constant(np.zeros(1, t._data.dtype))
    padded = np.concatenate([positions + 1, np.zeros(positions.shape[:-1] + (1,), np.int64)],
                            -1)
    return [zero, t], padded


def over_source(source, positions):
    """The elements at `positions` of the flat concatenation of the tensors in `source`."""
    if len(source) == 1:
        (t,) = source
        value = t._data.reshape(-1)[positions]
        return record_gather(t, positions, value, "") if _recording(t) else constant(value)
    flat = np.concatenate([s._data.reshape(-1) for s in source])
    return ops._pack_gather(source, positions, flat[positions], "")


def torch_cross(input, other, dim=None):
    """PyTorch's cross: along `dim`, by default (deprecated) the first of size 3."""
    a, b = as_tensor(input), as_tensor(other)
    shape = np.broadcast_shapes(a._data.shape, b._data.shape)
    if dim is None:
        warnings.warn("Using torch.cross without specifying the dim arg is deprecated.\nPlease "
                      "either pass the dim explicitly or simply use torch.linalg.cross.\nThe "
                      "default value of dim will change to agree with that of linalg.cross in a "
                      "future release.", UserWarning, stacklevel=2)
        dim = next((d for d, n in enumerate(shape) if n == 3), None)
        if dim is None:
            raise RuntimeError("no dimension of size 3 in input")
    (d,) = ops._dims(dim, None, len(shape))
    if a._data.shape[d - len(shape)] != 3 or b._data.shape[d - len(shape)] != 3:
        raise RuntimeError(f"linalg.cross: inputs dimension {dim} must have length 3. Got "
                           f"{a._data.shape[d - len(shape)]} and {b._data.shape[d - len(shape)]}")
    a = ops.broadcast_to(a, shape)
    b = ops.broadcast_to(b, shape)
    return cross(a, b, axis=d, name="LinalgCrossBackward0")


_METHODS = dict(kron=kron, inner=torch_inner, outer=torch_outer, ger=torch_outer,
                vdot=torch_vdot, cross=torch_cross)
for _name, _fn in _METHODS.items():
    setattr(Tensor, _name, _fn)
