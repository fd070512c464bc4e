"""The validation boundary: nothing reaches a compiled interpreter unchecked.

Numba does not bounds-check. A tape with one wrong index reads or writes outside its buffers: a
crash, or worse a plausible wrong gradient. Tapes recorded in this process are valid by
construction; every tape that comes from elsewhere (a file, a user's arrays) passes
`validate_tape` first, which checks everything the interpreters rely on:

* arrays: dtypes, dimensions and lengths of E, FC, IP, S, NEED and the value buffer;
* the slot table: contiguous, non-negative spans that tile the value buffer exactly, with a
  shape per slot whose product is its size;
* every entry: a known opcode, operands and output in range, operands written before they are
  read (or inputs/constants), each slot written at most once, never in place, payloads inside
  IP, and the primitive's own shape rule (sizes that agree, index maps in range, matmul
  dimensions that fit their buffers, pack operands that add up);
* inputs, outputs and guards: slots in range; inputs are never written by an entry.

The cost is one Python pass over the entries and a few vectorised checks of the payloads:
measured in `tests/test_validate.py`, it is small next to a replay and is paid once per load.
"""
import numpy as np

from ._registry import PRIMS


class TapeFormatError(ValueError):
    """A tape (from a file or user arrays) is malformed; it never reaches an interpreter."""


_ARITY = {"gather": 1, "segsum": 1, "total": 1, "segmax": 1, "segmin": 1, "segprod": 1,
          "matmul": 2, "where": 3}


def _fail(message):
    raise TapeFormatError(message)


def _array(name, a, dtype, ndim):
    if not isinstance(a, np.ndarray):
        _fail(f"{name} must be a numpy array, got {type(a).__name__}")
    if a.dtype != dtype:
        _fail(f"{name} must have dtype {np.dtype(dtype)}, got {a.dtype}")
    if a.ndim != ndim:
        _fail(f"{name} must have {ndim} dimension(s), got {a.ndim}")


def validate_arrays(E, FC, IP, S, NEED, V, shapes):
    """Check the tape arrays; raises TapeFormatError with the first problem found."""
    _array("E", E, np.int64, 2)
    _array("FC", FC, np.float64, 2)
    _array("IP", IP, np.int64, 1)
    _array("S", S, np.int64, 2)
    _array("NEED", NEED, np.int64, 1)
    if not isinstance(V, np.ndarray) or V.dtype not in (np.float32, np.float64) or V.ndim != 1:
        _fail("the value buffer must be a 1-d float32 or float64 array")
    n, n_slots = len(E), len(S)
    if E.shape[1] != 8 or FC.shape != (n, 2) or S.shape[1] != 2 or NEED.shape != (n_slots,):
        _fail(f"inconsistent array shapes: E {E.shape}, FC {FC.shape}, S {S.shape}, "
              f"NEED {NEED.shape}")
    sizes = S[:, 1]
    if n_slots and ((sizes < 0).any() or S[0, 0] != 0
                    or (S[1:, 0] != S[:-1, 0] + sizes[:-1]).any()):
        _fail("the slot table must tile the value buffer with contiguous, non-negative spans")
    total = int(S[-1, 0] + S[-1, 1]) if n_slots else 0
    if total != V.size:
        _fail(f"the slot table covers {total} values but the buffer holds {V.size}")
    if len(shapes) != n_slots:
        _fail(f"{len(shapes)} shapes for {n_slots} slots")
    for s, shape in enumerate(shapes):
        if any(d < 0 for d in shape) or int(np.prod(shape, dtype=np.int64)) != sizes[s]:
            _fail(f"slot {s}: shape {tuple(shape)} does not hold {sizes[s]} values")
    if not np.isin(NEED, (0, 1)).all():
        _fail("NEED must hold 0 or 1")
    if n and ((E[:, 4] < 0) | (E[:, 4] >= n_slots)).any():
        _fail(f"an entry's output slot is out of range [0, {n_slots})")
    writer = np.full(n_slots, -1, np.int64)
    writer[E[:, 4]] = np.arange(n)
    written = np.zeros(n_slots, bool)
    for e in range(n):
        _validate_entry(e, E[e], IP, sizes, written, writer, n_slots)
    return written


def _slot(e, what, s, n_slots):
    if not 0 <= s < n_slots:
        _fail(f"entry {e}: {what} slot {s} out of range [0, {n_slots})")
    return s


def _validate_entry(e, row, IP, sizes, written, writer, n_slots):
    op, a, b, c, out, ip_off, ip_len = (int(v) for v in row[:7])
    if not 0 <= op < len(PRIMS):
        _fail(f"entry {e}: unknown opcode {op}")
    prim = PRIMS[op]
    if prim.kind == "call":
        _fail(f"entry {e}: a nested-transform entry cannot be loaded (it holds Python code)")
    if ip_off < 0 or ip_len < 0 or ip_off + ip_len > IP.size:
        _fail(f"entry {e}: payload [{ip_off}, {ip_off + ip_len}) outside IP of size {IP.size}")
    ip = IP[ip_off:ip_off + ip_len]
    if prim.variadic:
        operands = [_slot(e, "operand", int(s), n_slots) for s in ip]
        if (a, b, c) != (-1, -1, -1):
            _fail(f"entry {e}: {prim.name} takes its operands from the payload")
    else:
        arity = {"unary": 1, "binary": 2}.get(prim.kind) or _ARITY[prim.name]
        given = (a, b, c)
        if any(s != -1 for s in given[arity:]):
            _fail(f"entry {e}: {prim.name} takes {arity} operand(s)")
        operands = [_slot(e, "operand", s, n_slots) for s in given[:arity]]
    out = _slot(e, "output", out, n_slots)
    for s in operands:
        if s == out:
            _fail(f"entry {e}: {prim.name} writes its own operand (slot {s})")
        if writer[s] > e:
            _fail(f"entry {e}: slot {s} is read before entry {writer[s]} writes it")
    if written[out]:
        _fail(f"entry {e}: slot {out} is written twice")
    _shape_rule(e, prim, operands, out, ip, sizes)
    written[out] = True


def _need_len(e, prim, ip, n):
    if ip.size != n:
        _fail(f"entry {e}: {prim.name} needs a payload of {n} integers, got {ip.size}")


def _in_range(e, prim, ip, upper):
    if ip.size and (ip.min() < 0 or ip.max() >= upper):
        _fail(f"entry {e}: {prim.name} index out of range [0, {upper})")


def _shape_rule(e, prim, operands, out, ip, sizes):
    n_out = sizes[out]
    name = prim.name
    if prim.kind == "unary":
        if sizes[operands[0]] != n_out:
            _fail(f"entry {e}: {name} maps {sizes[operands[0]]} values to {n_out}")
    elif prim.kind == "binary":
        for s in operands:
            if sizes[s] not in (1, n_out):
                _fail(f"entry {e}: {name} operand of size {sizes[s]} for an output of {n_out}")
    elif name == "where":
        if any(sizes[s] != n_out for s in operands):
            _fail(f"entry {e}: where needs operands of the output's size {n_out}")
    elif name == "gather":
        _need_len(e, prim, ip, n_out)
        _in_range(e, prim, ip, sizes[operands[0]])
    elif name in ("segsum", "segmax", "segmin", "segprod"):
        _need_len(e, prim, ip, sizes[operands[0]])
        _in_range(e, prim, ip, n_out)
    elif name == "total":
        if n_out != 1:
            _fail(f"entry {e}: total has one output value, not {n_out}")
    elif name == "matmul":
        _need_len(e, prim, ip, 8)
        batch, m, k, n, sa, sb, a_const, b_const = (int(v) for v in ip)
        if min(batch, m, k, n) < 0 or sa not in (0, m * k) or sb not in (0, k * n) \
                or a_const not in (0, 1) or b_const not in (0, 1):
            _fail(f"entry {e}: matmul dimensions {tuple(ip)} are inconsistent")
        for s, stride, block in ((operands[0], sa, m * k), (operands[1], sb, k * n)):
            need = (batch - 1) * stride + block if batch else 0
            if sizes[s] != (need if stride else block):
                _fail(f"entry {e}: matmul operand of size {sizes[s]} for dimensions {tuple(ip)}")
        if n_out != batch * m * n:
            _fail(f"entry {e}: matmul output of size {n_out} for dimensions {tuple(ip)}")
    elif name == "pack":
        if sum(int(sizes[s]) for s in operands) != n_out:
            _fail(f"entry {e}: pack operands do not add up to the output's {n_out} values")
    else:
        _fail(f"entry {e}: no shape rule for {name}")


def validate_tape(tape):
    """Check a `Tape` before its first replay; marks it validated."""
    written = validate_arrays(tape.E, tape.FC, tape.IP, tape.S, tape.NEED, tape.V0, tape.shapes)
    n_slots = len(tape.S)
    for name, slots in (("input", tape.input_slots), ("output", tape.output_slots),
                        ("guard", [s for s, _ in tape.guards])):
        for s in slots:
            if not 0 <= s < n_slots:
                _fail(f"{name} slot {s} out of range [0, {n_slots})")
    for s in tape.input_slots:
        if written[s]:
            _fail(f"input slot {s} is overwritten by an entry")
    tape.validated = True
    return tape
