"""The plan of a batched replay: which rows of a tape's value buffer each backend reads and
writes at every point, and how a point's results become the transform's outputs.

A tape traced at one point, replayed by a schedule (see `transforms.spec`) at many, is the same
work at every point: write the point's inputs into the value buffer, run the sweeps, read some
rows back. The `Plan` fixes those rows once per tape and call shape; every backend (the CPU
tile driver and fused tier, CUDA, Dask's workers) reads the same plan:

    in_pos    rows of the batched inputs, in the order of the columns of X (points, inputs)
    tin_pos   rows of the per-point tangents (a jvp), in the order of XT's columns
    seeds     rows seeded 1 for a reverse sweep: one sweep each, or (second order) seeds[0]
    dir_pos   rows of the unit tangent directions: one direction each
    read_v    rows whose values are results
    read_g    rows whose adjoints are results (for each seed)
    read_t    rows whose tangents are results (for each direction)
    read_tg   rows whose adjoints' tangents are results (second order, for each direction)

A point's results are one row of Y (points, `n_results`) in that order: values, adjoints per
seed, tangents per direction, second-order tangents per direction. `results` (a `Results`)
says which of Y's columns make each output leaf. The positions never change once planned (the
arrays are read-only); what a backend learns while replaying a plan (whether the fused tier
compiled it, where its rows lie in the column layout) is kept apart, in `plan.state`.
"""
import dataclasses
import weakref

import numpy as np

from ..core import pytree
from ..core.validate import read_only
from ..transforms.spec import Directions, Schedule, Seeds
from ..transforms.signature import is_dynamic

_NONE = read_only(np.zeros(0, np.int64), owned=True)


def _no_positions():
    return dataclasses.field(default_factory=lambda: _NONE)


POSITIONS = ("in_pos", "tin_pos", "seeds", "dir_pos", "read_v", "read_g", "read_t", "read_tg")


class ReplayState:
    """What the CPU backend learns about a plan while replaying it; the plan itself never
    changes. `fused`: the fused tier's decision, None until it is asked, then a
    `fuse.Candidate` (source generated, not compiled yet), a `fuse.Fused` kernel, or False
    (the tape cannot be fused); `interpreted_s`: the seconds the interpreter has spent on the
    plan (what the "auto" rule weighs against the compile); `columns`: (layout, positions) the
    plan's positions translated into the column layout `layout` of the tape."""
    __slots__ = ("fused", "interpreted_s", "columns")

    def __init__(self):
        self.fused = None
        self.interpreted_s = 0.0
        self.columns = None


@dataclasses.dataclass(frozen=True, eq=False)
class Plan:
    """The rows a batched replay of `schedule` reads and writes (see the module); `x_leaves`
    and `xt_leaves`: the batch's leaves whose values make the columns of X and XT."""
    schedule: Schedule
    in_pos: np.ndarray = _no_positions()
    tin_pos: np.ndarray = _no_positions()
    seeds: np.ndarray = _no_positions()
    dir_pos: np.ndarray = _no_positions()
    read_v: np.ndarray = _no_positions()
    read_g: np.ndarray = _no_positions()
    read_t: np.ndarray = _no_positions()
    read_tg: np.ndarray = _no_positions()
    x_leaves: tuple = ()
    xt_leaves: tuple = ()
    results: "Results" = None
    state: ReplayState = dataclasses.field(default_factory=ReplayState)
    second: bool = dataclasses.field(init=False)
    n_directions: int = dataclasses.field(init=False)
    n_results: int = dataclasses.field(init=False)

    def __post_init__(self):
        for name in POSITIONS:
            object.__setattr__(self, name, read_only(np.asarray(getattr(self, name), np.int64)
                                                     .reshape(-1), owned=True))
        second = self.schedule.second_order
        n_dir = 1 if self.schedule.given_tangents else len(self.dir_pos)
        n_results = (len(self.read_v) + len(self.read_g) * (1 if second else len(self.seeds))
                     + n_dir * len(self.read_t) + n_dir * len(self.read_tg))
        object.__setattr__(self, "second", second)
        object.__setattr__(self, "n_directions", n_dir)
        object.__setattr__(self, "n_results", n_results)

    @property
    def n_inputs(self):
        """Values read per point: inputs and tangents."""
        return len(self.in_pos) + len(self.tin_pos)

    @property
    def row_g(self):
        """The first column of Y holding adjoints (after the values)."""
        return len(self.read_v)

    @property
    def row_t(self):
        """The first column of Y holding tangents (after the adjoints)."""
        return self.row_g + len(self.read_g) * (1 if self.second else len(self.seeds))

    @property
    def row_tg(self):
        """The first column of Y holding the adjoints' tangents (after the tangents)."""
        return self.row_t + self.n_directions * len(self.read_t)

    def check_rows(self, n_in, n_tangent):
        """The drivers read X[q, r] for every input position r and XT[q, r] for every tangent
        position, unchecked: a chunk's (points, values) arrays must have exactly those columns,
        `n_in` and `n_tangent` (two comparisons; the batch's checks say what was wrong in the
        caller's terms first)."""
        if n_in != len(self.in_pos) or n_tangent != len(self.tin_pos):
            raise ValueError(f"vmap: the batched arguments give {n_in} input and {n_tangent} "
                             f"tangent values per point; the traced function takes "
                             f"{len(self.in_pos)} and {len(self.tin_pos)}")

    def check_width(self, n_results):
        """The drivers write this plan's `n_results` values per point, unchecked: a result
        buffer of another width (made for the first tape traced, when this tape is of a branch
        whose outputs have other sizes) is refused."""
        if n_results != self.n_results:
            raise RuntimeError(f"vmap: a branch changed the output's size ({n_results} result "
                               f"values per point on the first tape traced, {self.n_results} "
                               "on this branch's)")

    def arrays(self):
        """The plan as plain data (what travels to Dask workers): the schedule's name, the
        positions, and the leaves of X and XT; `Plan.from_arrays` makes it again."""
        return (self.schedule.name, {name: getattr(self, name) for name in POSITIONS},
                (list(self.x_leaves), list(self.xt_leaves)))

    @classmethod
    def from_arrays(cls, schedule, positions, leaves):
        return cls(Schedule[schedule], **positions, x_leaves=tuple(leaves[0]),
                   xt_leaves=tuple(leaves[1]))


class Results:
    """Where each output leaf of a transform lies in a point's row of results: `rows[j]` has the
    leaf's per-point shape and holds, for each element, its column of Y; `structure` is the
    outputs' tree. The backends arrange their results with it (the CPU and Dask `take` from
    Y, CUDA gathers on the device), and a point evaluated by the function itself is put in
    the row order with `flat`. `dtypes[j]`: leaf j's dtype where it is not the replay's (a
    gradient is in its argument's dtype, as the unbatched transforms give it), else None."""
    __slots__ = ("structure", "rows", "spans", "width", "dtypes")

    def __init__(self, structure, rows, width, dtypes=None):
        self.structure, self.width = structure, width
        self.rows = [read_only(np.asarray(r, np.int64), owned=True) for r in rows]
        self.spans = [_span(r) for r in self.rows]
        self.dtypes = list(dtypes) if dtypes is not None else [None] * len(self.rows)

    def dtype(self, j, replay_dtype):
        """Output leaf j's dtype when the replay computes in `replay_dtype`."""
        return np.dtype(self.dtypes[j] or replay_dtype)

    def take(self, Y):
        """The outputs from Y (points, width), batch axis first: a leaf whose elements are
        consecutive columns is a view of Y when it is all of Y, else a copy (a small leaf does
        not keep the whole buffer alive)."""
        return pytree.unflatten(self.structure, [self.leaf(Y, j) for j in range(len(self.rows))])

    def leaf(self, Y, j):
        """Output leaf j from Y (points, width), batch axis first."""
        shape = (Y.shape[0],) + self.rows[j].shape
        span, dtype = self.spans[j], self.dtype(j, Y.dtype)
        if span is None:
            return Y[:, self.rows[j].reshape(-1)].astype(dtype, copy=False).reshape(shape)
        block = Y[:, span[0]:span[1]]
        whole = span[1] - span[0] == Y.shape[1] and dtype == Y.dtype
        return (block if whole else block.astype(dtype)).reshape(shape)

    def flat(self, result):
        """One point's outputs (as the transform returns them) as its row of results."""
        leaves, structure = pytree.flatten(result)
        if len(leaves) != len(self.rows):
            raise RuntimeError("vmap: a branch changed the output's size")
        row = np.empty(self.width)
        for leaf, rows in zip(leaves, self.rows):
            leaf = np.ravel(getattr(leaf, "data", leaf))
            if leaf.size != rows.size:
                raise RuntimeError("vmap: a branch changed the output's size")
            row[rows.reshape(-1)] = leaf
        return row


def _span(rows):
    """(first, stop) when `rows` are consecutive columns in order, else None."""
    flat = rows.reshape(-1)
    if not flat.size:
        return (0, 0)
    first = int(flat[0])
    return (first, first + flat.size) if np.array_equal(
        flat, np.arange(first, first + flat.size)) else None


# ---- planning ------------------------------------------------------------------------------

_PLANS = weakref.WeakKeyDictionary()    # tape -> {call shape: plan}: a tape never changes


def plan_for(tape, traced, transform, batch):
    """The plan of `transform` (a `transforms.spec.Transform`) on `tape` for this call's batch,
    cached per tape and shape of the call (which arguments are batched, and their tree): a
    replay's Python work is then a few look-ups."""
    key = (transform.schedule, traced.argnums, transform.single, batch.structure,
           tuple(batch.batched))
    plans = _PLANS.get(tape)
    if plans is None:
        plans = _PLANS[tape] = {}
    plan = plans.get(key)
    if plan is None:
        plan = plans[key] = make_plan(tape, traced, transform, batch)
    return plan


def plans_of(tape):
    """The plans made for `tape` so far (introspection, tests)."""
    return list(_PLANS.get(tape, {}).values())


def make_plan(tape, traced, transform, batch):
    """The plan of `transform` on `tape` for `batch` (uncached: see `plan_for`)."""
    schedule = transform.schedule
    if schedule.scalar_output and not (len(tape.output_slots) == 1
                                       and tape.sizes[tape.output_slots[0]] == 1):
        raise TypeError("grad requires a scalar output; use jacobian or vjp")
    point_leaves = pytree.flatten(batch.point(0))[0]
    if schedule.given_tangents:
        n_primal = len(pytree.flatten(batch.point(0)[0])[0])
        x_leaves = [k for k in batch.batched if k < n_primal]
        xt_leaves = [k for k in batch.batched if k >= n_primal]
        dynamic = [k for k in range(n_primal) if is_dynamic(point_leaves[k])]
        in_slots = _input_slots(tape, dynamic, x_leaves)
        tangent_slots = _input_slots(tape, dynamic, [k - n_primal for k in xt_leaves])
    else:
        x_leaves, xt_leaves = list(batch.batched), []
        dynamic = [k for k, leaf in enumerate(batch.leaves) if is_dynamic(leaf)]
        in_slots, tangent_slots = _input_slots(tape, dynamic, x_leaves), []
    groups = None
    if traced.argnums is not None:
        groups = traced.input_groups(tape, point_leaves, batch.structure)
    wrt_slots = [s for i in traced.argnums for s in groups[i % len(groups)][1]] \
        if groups else []
    out_pos, wrt_pos = positions(tape, tape.output_slots), positions(tape, wrt_slots)
    rows = dict(in_pos=positions(tape, in_slots), tin_pos=positions(tape, tangent_slots))
    if schedule.reads_values:
        rows["read_v"] = out_pos
    if schedule.seeds is not Seeds.NONE:
        rows["seeds"] = out_pos
    if schedule.reads_gradient:
        rows["read_g"] = wrt_pos
    if schedule.directions is Directions.UNIT:
        rows["dir_pos"] = wrt_pos
    if schedule.reads_tangents:
        rows["read_t"] = out_pos
    if schedule.second_order:
        rows["read_tg"] = wrt_pos
    plan = Plan(schedule, **rows, x_leaves=tuple(x_leaves), xt_leaves=tuple(xt_leaves))
    per_argument = _per_argument(groups, traced.argnums, transform.single)
    return dataclasses.replace(plan, results=_results(tape, plan, wrt_slots, per_argument))


def _input_slots(tape, dynamic, leaves):
    """The input slots of the argument leaves `leaves`, given the leaves that are tape inputs
    (`dynamic`, in order: the tape's input slots are theirs)."""
    index = {k: j for j, k in enumerate(dynamic)}
    return [tape.input_slots[index[k]] for k in leaves]


def positions(tape, slots):
    """The value buffer rows of `slots`, end to end."""
    if not slots:
        return np.zeros(0, np.int64)
    return np.concatenate([np.arange(tape.offsets[s], tape.offsets[s] + tape.sizes[s])
                           for s in slots]).astype(np.int64)


def _per_argument(groups, argnums, single):
    """A function arranging items, one per leaf of the differentiated arguments in order, as
    those arguments: one tree per argument, a tuple of them unless argnums was an int."""
    def arrange(items):
        it = iter(items)
        out = [pytree.unflatten(groups[i % len(groups)][0],
                                [next(it) for _ in groups[i % len(groups)][1]])
               for i in argnums]
        return out[0] if single else tuple(out)
    return arrange


def _results(tape, plan, wrt_slots, per_argument):
    """The `Results` of a plan: its outputs arranged at one point whose results are their own
    column numbers, as the unbatched transform arranges them (JAX's order)."""
    schedule = plan.schedule
    Y = np.arange(plan.n_results, dtype=np.int64)
    row = 0
    # a gradient (and a Hessian's row, the gradient of a gradient) is in its argument's dtype,
    # where float64 constants promoted the tape (blocks by id: they are alive until flattened)
    input_dtype = dict(zip(tape.input_slots, tape.input_dtypes))
    cast = {}

    def in_dtype_of(slot, block):
        if input_dtype.get(slot, tape.dtype) != tape.dtype:
            cast[id(block)] = input_dtype[slot]
        return block

    def take(n, shape=None):
        nonlocal row
        row += n
        block = Y[row - n:row]
        return block if shape is None else block.reshape(shape)

    def per_slot(slots):
        return [take(tape.sizes[s], tape.shapes[s]) for s in slots]

    parts = []
    if schedule.reads_values:
        parts.append(pytree.unflatten(tape.out_structure, per_slot(tape.output_slots)))
    if schedule.reads_gradient and schedule.seeds is Seeds.EACH:     # (seed, input) rows
        m, n = len(plan.seeds), len(plan.read_g)
        parts.append(_jacobian(take(m * n, (m, n)), tape, wrt_slots, per_argument))
    elif schedule.reads_gradient:
        parts.append(per_argument([in_dtype_of(s, block)
                                   for s, block in zip(wrt_slots, per_slot(wrt_slots))]))
    if schedule.reads_tangents and schedule.directions is Directions.UNIT:
        n, m = len(plan.dir_pos), len(plan.read_t)                     # (direction, output)
        parts.append(_jacobian(take(n * m, (n, m)).T, tape, wrt_slots, per_argument))
    elif schedule.reads_tangents:
        parts.append(pytree.unflatten(tape.out_structure, per_slot(tape.output_slots)))
    if schedule.second_order:                           # (direction, gradient element) rows
        n = len(plan.dir_pos)
        parts.append(_hessian(take(n * n, (n, n)), tape, wrt_slots, per_argument, in_dtype_of))
    tree = parts[0] if len(parts) == 1 else tuple(parts)
    leaves, structure = pytree.flatten(tree)
    return Results(structure, leaves, plan.n_results, [cast.get(id(leaf)) for leaf in leaves])


def _jacobian(J, tape, wrt_slots, per_argument):
    """J (outputs, inputs) as the output tree of per-argument blocks out_shape + in_shape."""
    per_output, r = [], 0
    for so in tape.output_slots:
        size, c, blocks = tape.sizes[so], 0, []
        for s in wrt_slots:
            blocks.append(J[r:r + size, c:c + tape.sizes[s]]
                          .reshape(tape.shapes[so] + tape.shapes[s]))
            c += tape.sizes[s]
        per_output.append(per_argument(blocks))
        r += size
    return pytree.unflatten(tape.out_structure, per_output)


def _hessian(H, tape, wrt_slots, per_argument, in_dtype_of):
    """H (inputs, inputs) as the unbatched hessian arranges it: arguments of arguments, a row
    in its argument's dtype (`in_dtype_of`)."""
    blocks, r = [], 0
    for si in wrt_slots:
        row_blocks, c = [], 0
        for sj in wrt_slots:
            row_blocks.append(in_dtype_of(si, H[r:r + tape.sizes[si], c:c + tape.sizes[sj]]
                                          .reshape(tape.shapes[si] + tape.shapes[sj])))
            c += tape.sizes[sj]
        blocks.append(per_argument(row_blocks))
        r += tape.sizes[si]
    return per_argument(blocks)
