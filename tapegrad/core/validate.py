"""The validation boundary: nothing reaches a compiled interpreter unchecked.

Numba does not bounds-check. A tape with one wrong index reads or writes outside its buffers: a
crash, or worse a plausible wrong gradient. Tapes recorded in this process are valid by
construction; every tape that comes from elsewhere (a file, a user's arrays) passes
`validate_tape` first, which checks everything the interpreters rely on:

* arrays: dtypes (native byte order), dimensions, lengths and layout (C-contiguous: the layout
  the interpreters were compiled for) of E, FC, IP, S, NEED and the value buffer;
* the slot table: contiguous, non-negative spans that tile the value buffer exactly (every
  bound checked against the buffer's size, so no int64 sum can wrap around), with a shape per
  slot whose product (in Python integers) is its size;
* every entry: a known opcode, operands and output in range, operands written before they are
  read (or inputs/constants), each slot written at most once, never in place, payloads inside
  IP, and the primitive's own shape rule (sizes that agree, index maps in range, matmul
  dimensions that fit their buffers, pack operands that add up);
* inputs, outputs and guards: slots in range; inputs are never written by an entry and listed
  once; a guard is a one-value slot with a boolean outcome; the tape's Python copies of the slot
  table (`offsets`, `sizes`) agree with it.

Nested-transform (`call`) entries hold Python rules: only a tape traced in this process may have
them (`calls=`), never one from a file. `_sweep` refuses any tape not marked `validated`.

What was checked must stay as checked: `validate_tape` makes the arrays read-only first (copies
of any array that is not already read-only for good, see `read_only`) and checks those, and
every tape built in this process keeps its arrays read-only too. The compiled interpreters are
specialised for read-only E, FC, IP, S and NEED (numba types a read-only array apart from a
writable one: every caller passes them read-only, so each interpreter compiles once per dtype).

The cost is one Python pass over the entries and a few vectorised checks of the payloads:
measured in `tests/test_validate.py`, it is small next to a replay and is paid once per load.
"""
import itertools
import math

import numpy as np

from .registry import PRIMS, VARIADIC


class TapeFormatError(ValueError):
    """A tape (from a file or user arrays) is malformed; it never reaches an interpreter."""


def _fail(message):
    raise TapeFormatError(message)


def read_only(a, owned=False):
    """`a` as an array that stays read-only: a read-only view of a read-only array that owns its
    data (numpy lets the owner of its data be made writable again, `a.flags.writeable = True`,
    but not a view of a read-only owner). `owned`: the caller hands `a` over (no other
    reference writes it), so an array that owns its data is frozen in place; any other array
    is copied first (in its layout: the validator judges it). Anything that is not a numpy
    array is returned as is (for the validator to refuse)."""
    if not isinstance(a, np.ndarray) or stays_read_only(a):
        return a
    if not owned or a.base is not None:
        a = np.array(a)
    a.setflags(write=False)
    return a.view()


def stays_read_only(a):
    """Whether `a` is read-only and cannot be made writable again: its memory belongs to a
    read-only array (of which it is a view) or to an immutable bytes object."""
    if a.flags.writeable or a.base is None:
        return False
    base = a.base
    while isinstance(base, np.ndarray):
        if base.flags.writeable:
            return False
        if base.base is None:
            return True
        base = base.base
    return isinstance(base, bytes)


_TAPE_ARRAYS = ("E", "FC", "IP", "S", "NEED", "V0")


def freeze_arrays(tape):
    """Make the tape arrays of `tape` read-only for good (`read_only`): done before they are
    validated, so that what was checked is what the interpreters read."""
    for name in _TAPE_ARRAYS:
        a = getattr(tape, name, None)
        frozen = read_only(a)
        if frozen is not a:
            setattr(tape, name, frozen)


def _array(name, a, dtype, ndim):
    if not isinstance(a, np.ndarray):
        _fail(f"{name} must be a numpy array, got {type(a).__name__}")
    if a.dtype != dtype or not a.dtype.isnative:
        _fail(f"{name} must have dtype {np.dtype(dtype)}, got {a.dtype}")
    if a.ndim != ndim:
        _fail(f"{name} must have {ndim} dimension(s), got {a.ndim}")
    _contiguous(name, a)


def validate_arrays(E, FC, IP, S, NEED, V, shapes, calls=()):
    """Check the tape arrays; raises TapeFormatError with the first problem found.

    `calls` lists the entries that may be nested-transform (`call`) entries: those of a tape
    traced in this process, whose rules are Python objects; a tape from arrays has none."""
    _array("E", E, np.int64, 2)
    _array("FC", FC, np.float64, 2)
    _array("IP", IP, np.int64, 1)
    _array("S", S, np.int64, 2)
    _array("NEED", NEED, np.int64, 1)
    if not isinstance(V, np.ndarray) or V.dtype not in (np.float32, np.float64) or V.ndim != 1:
        _fail("the value buffer must be a 1-d float32 or float64 array (native byte order)")
    _contiguous("the value buffer", V)     # replays sweep a copy
    n, n_slots = len(E), len(S)
    if E.shape[1] != 8 or FC.shape != (n, 2) or S.shape[1] != 2 or NEED.shape != (n_slots,):
        _fail(f"inconsistent array shapes: E {E.shape}, FC {FC.shape}, S {S.shape}, "
              f"NEED {NEED.shape}")
    offsets, sizes = S[:, 0], S[:, 1]
    # Every bound is checked against the buffer's size before anything is added up, so that no
    # int64 sum can wrap around (three sizes near 2**63 would otherwise add up to a small total).
    if n_slots and ((sizes < 0).any() or (offsets < 0).any() or (sizes > V.size).any()
                    or (offsets > V.size).any() or (offsets + sizes > V.size).any()
                    or offsets[0] != 0 or (offsets[1:] != offsets[:-1] + sizes[:-1]).any()):
        _fail("the slot table must tile the value buffer with contiguous, non-negative spans")
    total = int(offsets[-1] + sizes[-1]) if n_slots else 0
    if total != V.size:
        _fail(f"the slot table covers {total} values but the buffer holds {V.size}")
    if len(shapes) != n_slots:
        _fail(f"{len(shapes)} shapes for {n_slots} slots")
    _check_shapes(shapes, sizes)
    if not np.isin(NEED, (0, 1)).all():
        _fail("NEED must hold 0 or 1")
    if n and ((E[:, 4] < 0) | (E[:, 4] >= n_slots)).any():
        _fail(f"an entry's output slot is out of range [0, {n_slots})")
    writer = np.full(n_slots, -1, np.int64)
    writer[E[:, 4]] = np.arange(n)
    counts = np.bincount(E[:, 4], minlength=n_slots) if n else np.zeros(n_slots, np.int64)
    if (counts > 1).any():
        twice = np.flatnonzero(counts[E[:, 4]] > 1)
        _fail(f"entry {twice[1]}: slot {E[twice[1], 4]} is written twice")
    written = counts > 0
    calls = frozenset(calls)
    for e in _validate_fixed(E, IP, sizes, writer, n_slots, calls):
        _validate_entry(e, E[e], IP, sizes, writer, n_slots, e in calls)
    return written


# Per opcode: elementwise (checked vectorised; the others run their primitive's shape rule), and
# the fixed operand count of every non-variadic primitive.
_ROWWISE = np.array([p.elementwise for p in PRIMS])
_N_FIXED = np.array([p.n_operands for p in PRIMS])
_CALL = np.array([p.kind == "call" for p in PRIMS])
_KIND = {name: np.array([p.kind == name for p in PRIMS]) for name in ("unary", "binary")}


def _first(mask):
    return int(np.flatnonzero(mask)[0])


def _validate_fixed(E, IP, sizes, writer, n_slots, calls):
    """The checks every entry needs, vectorised over the tape (the validator's cost is one pass
    of numpy operations, not one Python iteration per entry); returns the entries whose
    payloads need the per-entry rules of `_validate_entry`."""
    n = len(E)
    if not n:
        return []
    ops, out = E[:, 0], E[:, 4]
    bad = (ops < 0) | (ops >= len(PRIMS))
    if bad.any():
        e = _first(bad)
        _fail(f"entry {e}: unknown opcode {E[e, 0]}")
    listed = np.zeros(n, bool)
    listed[[e for e in calls if 0 <= e < n]] = True
    bad = _CALL[ops] != listed
    if bad.any():
        e = _first(bad)
        if listed[e]:
            _fail(f"entry {e}: listed as a nested transform but holds {PRIMS[ops[e]].name}")
        _fail(f"entry {e}: a nested-transform entry cannot be loaded (it holds Python code)")
    off, length = E[:, 5], E[:, 6]
    with np.errstate(over="ignore"):
        bad = (off < 0) | (length < 0) | (off > IP.size) | (length > IP.size) \
            | (off + length > IP.size)
    if bad.any():
        e = _first(bad)
        start, stop = int(off[e]), int(off[e]) + int(length[e])
        _fail(f"entry {e}: payload [{start}, {stop}) outside IP of size {IP.size}")
    given = E[:, 1:4]
    arity = _N_FIXED[ops]
    used = np.arange(3)[None, :] < arity[:, None]
    variadic = VARIADIC[ops]
    bad = ((given != -1) & ~used).any(axis=1)
    if bad.any():
        e = _first(bad)
        name = PRIMS[ops[e]].name
        if variadic[e]:
            _fail(f"entry {e}: {name} takes its operands from the payload")
        _fail(f"entry {e}: {name} takes {arity[e]} operand(s)")
    bad = used & ((given < 0) | (given >= n_slots))
    if bad.any():
        e = _first(bad.any(axis=1))
        _fail(f"entry {e}: operand slot {given[e][bad[e]][0]} out of range [0, {n_slots})")
    operand = np.where(used, given, 0)
    bad = used & (operand == out[:, None])
    if bad.any():
        e = _first(bad.any(axis=1))
        _fail(f"entry {e}: {PRIMS[ops[e]].name} writes its own operand (slot {out[e]})")
    later = used & (writer[operand] > np.arange(n)[:, None])
    if later.any():
        e = _first(later.any(axis=1))
        s = given[e][later[e]][0]
        _fail(f"entry {e}: slot {s} is read before entry {writer[s]} writes it")
    n_out, size = sizes[out], sizes[operand]
    checks = (
        (_KIND["unary"][ops] & (size[:, 0] != n_out),
         lambda e: f"{PRIMS[ops[e]].name} maps {size[e, 0]} values to {n_out[e]}"),
        (_KIND["binary"][ops] & (((size[:, 0] != 1) & (size[:, 0] != n_out))
                                 | ((size[:, 1] != 1) & (size[:, 1] != n_out))),
         lambda e: f"{PRIMS[ops[e]].name} operand of size "
                   f"{size[e, 0] if size[e, 0] not in (1, n_out[e]) else size[e, 1]} for an "
                   f"output of {n_out[e]}"),
    )
    for bad, message in checks:
        if bad.any():
            e = _first(bad)
            _fail(f"entry {e}: {message(e)}")
    return np.flatnonzero(~_ROWWISE[ops] & ~_CALL[ops] | variadic).tolist()


def _check_shapes(shapes, sizes):
    """Each slot's shape multiplies (exactly) to its size. Vectorised when no product can
    overflow int64 (dimensions below 2**20, at most 3 of them); else in Python integers."""
    ndim = np.fromiter(map(len, shapes), np.int64, len(shapes))
    try:
        dims = np.fromiter(itertools.chain.from_iterable(shapes), np.int64, int(ndim.sum()))
    except (TypeError, ValueError, OverflowError):
        dims = None
    if dims is not None and ndim.size and ndim.max() <= 3 and (dims.size == 0 or (
            dims.min() >= 0 and dims.max() < 2 ** 20)):
        padded = np.ones(ndim.size + dims.size, np.int64)     # a leading 1 per shape
        starts = np.arange(ndim.size) + np.concatenate(([0], np.cumsum(ndim)[:-1]))
        mask = np.ones(padded.size, bool)
        mask[starts] = False
        padded[mask] = dims
        bad = np.multiply.reduceat(padded, starts) != sizes
        if not bad.any():
            return
        candidates = np.flatnonzero(bad)
    else:
        candidates = range(len(shapes))
    for s in candidates:
        shape = tuple(shapes[s])
        if len(shape) > 64 or not all(isinstance(d, (int, np.integer)) and d >= 0 for d in shape) \
                or math.prod(int(d) for d in shape) != sizes[s]:
            _fail(f"slot {s}: shape {shape} does not hold {sizes[s]} values")


def _contiguous(name, a):
    """The compiled interpreters take C-contiguous arrays: any other layout would compile them
    again (minutes) for a new array type."""
    if not a.flags.c_contiguous or not a.dtype.isnative:
        _fail(f"{name} must be a C-contiguous array in native byte order")


def _slot(e, what, s, n_slots):
    if not 0 <= s < n_slots:
        _fail(f"entry {e}: {what} slot {s} out of range [0, {n_slots})")
    return s


def _validate_entry(e, row, IP, sizes, writer, n_slots, is_call=False):
    """The payload rules of one entry (index maps, matmul dimensions, variadic operands)."""
    op, a, b, c, out, ip_off, ip_len = (int(v) for v in row[:7])
    prim = PRIMS[op]
    ip = IP[ip_off:ip_off + ip_len]
    if prim.variadic:
        operands = [_slot(e, "operand", int(s), n_slots) for s in ip]
    else:
        operands = [s for s in (a, b, c)[:_N_FIXED[op]]]
    for s in operands:
        if s == out:
            _fail(f"entry {e}: {prim.name} writes its own operand (slot {s})")
        if writer[s] > e:
            _fail(f"entry {e}: slot {s} is read before entry {writer[s]} writes it")
    if not is_call:                 # a nested transform's rule checks its own shapes
        _shape_rule(e, prim, operands, out, ip, sizes)


def _shape_rule(e, prim, operands, out, ip, sizes):
    """The primitive's own shape rule (its definition's `check`); elementwise entries were
    checked, vectorised, by `_validate_fixed`."""
    if prim.elementwise:
        return
    problem = prim.check(ip, int(sizes[out]), [int(sizes[s]) for s in operands])
    if problem:
        _fail(f"entry {e}: {prim.name} {problem}")


def validate_tape(tape, calls=()):
    """Check a `Tape` (or anything with its attributes) before its first replay; marks it
    validated. `calls`: the (entry, rule) pairs of a tape traced in this process.

    The arrays E, FC, IP, S, NEED and V0 are made read-only first (`freeze_arrays`: the tape's
    attributes then hold read-only arrays, copies where the given ones could still be written
    through another reference), so that nothing can change them after they are checked."""
    freeze_arrays(tape)
    if getattr(tape, "calls", None):
        if list(tape.calls) != list(calls):
            _fail("a tape with nested transforms (Python rules) cannot come from arrays")
    entries = [e for e, _ in calls]
    written = validate_arrays(tape.E, tape.FC, tape.IP, tape.S, tape.NEED, tape.V0, tape.shapes,
                              entries)
    n_slots = len(tape.S)
    sizes = tape.S[:, 1]
    guards = list(tape.guards)
    for name, slots in (("input", tape.input_slots), ("output", tape.output_slots),
                        ("guard", [s for s, _ in guards])):
        for s in slots:
            if not isinstance(s, (int, np.integer)) or not 0 <= s < n_slots:
                _fail(f"{name} slot {s} out of range [0, {n_slots})")
    for s, outcome in guards:
        if sizes[s] != 1:
            _fail(f"guard slot {s} holds {sizes[s]} values, not one")
        if outcome not in (True, False):
            _fail(f"guard outcome {outcome!r} is not a boolean")
    for s in tape.input_slots:
        if written[s]:
            _fail(f"input slot {s} is overwritten by an entry")
    if len(set(tape.input_slots)) != len(tape.input_slots):
        _fail("an input slot is listed twice")
    n_adjoint = getattr(tape, "n_adjoint", None)     # adjoint buffers may cover a prefix only
    if n_adjoint is not None:
        if not isinstance(n_adjoint, (int, np.integer)) or not 0 <= n_adjoint <= tape.V0.size:
            _fail(f"n_adjoint {n_adjoint!r} is not a size within the value buffer")
        need = tape.NEED.astype(bool)
        if (tape.S[need, 0] + tape.S[need, 1] > n_adjoint).any():
            _fail(f"a slot that needs an adjoint lies beyond the adjoint prefix ({n_adjoint} "
                  "values)")
    for name in ("offsets", "sizes"):      # the Python copies of S that replays read
        copy = getattr(tape, name, None)
        if copy is not None and list(copy) != tape.S[:, 0 if name == "offsets" else 1].tolist():
            _fail(f"the tape's {name} disagree with its slot table")
    tape.validated = True
    return tape
