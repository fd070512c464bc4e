"""Looking at tapes: tables, statistics and drawings of any tape, through a view.

A `TapeView` shows one tape at one buffer of values: as a table (`str(view)`,
`view.table(values=True, adjoints=True)`, `_repr_html_`), as statistics like ADOL-C's tape
statistics (`view.stats()`), and as a drawing of its computation graph with matplotlib
(`view.draw()`), annotated with the gradient flowing on each edge. It reads the tape arrays
only (this layer knows the core, nothing above it), so any tape can be shown:

* a traced `Tape` (`tapegrad.trace(f, x)`, or the tapes a transform caches), shown at the
  values of its last replay on this thread (the trace-time values before any);
* a `GraphTape` (`tapegrad.tape_of(out)` or `out.tape`, defined here): a read-only snapshot of
  the eager graph behind tensors, flattened exactly as `backward()` flattens it, its entries
  named by PyTorch's grad_fn names.

Both kinds keep the display methods (`str(tape)`, `table`, `stats`, `draw`, `_repr_html_`):
`DisplayMethods` delegates them to the tape's `display()`, a fresh view at its current values.
Why a view and not a base class holding the display: a tape is replayed far more often than it
is looked at, and its state and its replay must not depend on the drawing code.

Adjoints shown here come from one reverse sweep of the compiled interpreter over a copy of the
shown values, seeded with `seed` (default: ones on the outputs, i.e. d(output)/d(everything) for
a scalar output); they never touch any tensor's `.grad` nor the tape's buffers.
"""
import collections
import html
import math

import numpy as np

from ..core import interp, sweep
from ..core.registry import PRIMS
from ..core.validate import read_only

MAX_ROWS = 60           # default rows of a table before the middle is elided
MAX_NODES = 400         # default limit of nodes in a drawing
_ELLIPSIS = "\u2026"


# ---- small formatting helpers ---------------------------------------------------------------

def _num(x):
    """A float in at most 4 significant digits (ints without a decimal point)."""
    x = float(x)
    if x == 0.0:
        return "0"
    if math.isnan(x) or math.isinf(x):
        return str(x)
    return f"{x:.4g}"


def brief(a, limit=4):
    """A value in a few characters: `0.5`, `[1, 2, 3]`, `[1, 2, 3, ...] (n=12)`."""
    a = np.asarray(a)
    if a.size == 1:
        return _num(a.reshape(-1)[0])
    flat = a.reshape(-1)
    if flat.size <= limit:
        return "[" + ", ".join(_num(v) for v in flat) + "]"
    return "[" + ", ".join(_num(v) for v in flat[:limit - 1]) + f", {_ELLIPSIS}] (n={flat.size})"


def _shape(shape):
    return "(" + ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def _plural(n, word):
    if n == 1:
        return f"{n} {word}"
    return f"{n} {word[:-1]}ies" if word.endswith("y") else f"{n} {word}s"


class Text(str):
    """A string that displays as itself (not quoted) and, where given, as HTML in notebooks."""

    def __new__(cls, text, html_text=None):
        self = super().__new__(cls, text)
        self._html = html_text
        return self

    def __repr__(self):
        return str.__str__(self)

    def _repr_html_(self):
        if self._html is None:
            return "<pre>" + html.escape(str.__str__(self)) + "</pre>"
        return self._html


# ---- the view ---------------------------------------------------------------------------------

class TapeView:
    """Tables, statistics and drawings of one tape, shown at the buffer of values `values`.

    `tape`: any object with the tape arrays (E, FC, IP, S, NEED), `prims`, `shapes`, `offsets`,
    `sizes`, `input_slots`, `output_slots`, `guards`, `calls` and `validated`; the view reads
    them and never changes them (adjoints come from a sweep over a copy of `values`). What a
    kind of tape shows differently is given here: `seed`, the default seed of the adjoints (None:
    ones on the outputs); `show_grads`, whether `draw()` annotates gradients by default; `kind`,
    the name in the summary; `entry_names`, one name per entry (None: the primitives' names,
    with their constants drawn); `leaf_roles`, {slot: (op column, label)} of every slot that no
    entry computes (None: the inputs, and constants for the rest).

    A view is cheap and made per display call (the values it shows are the tape's current ones):
    it is separate from the tapes so that replaying a tape never loads the drawing code."""

    def __init__(self, tape, values, seed=None, show_grads=False, kind="Tape", entry_names=None,
                 leaf_roles=None):
        self.tape = tape
        self.values = values
        self.seed = seed
        self.show_grads = show_grads
        self.kind = kind
        self.entry_names = entry_names
        self._roles = leaf_roles
        self._producer_of = None

    # -- structure --
    def entry_label(self, e):
        """The name drawn on an entry's node."""
        return self.tape.prims[e].name if self.entry_names is None else self.entry_names[e]

    def producers(self):
        """{slot: entry} of the slots computed by an entry."""
        if self._producer_of is None:
            self._producer_of = {int(row[4]): e for e, row in enumerate(self.tape.E)}
        return self._producer_of

    def leaf_roles(self):
        """{slot: (op column, label)} for every slot that no entry computes."""
        if self._roles is None:
            tape, producers, roles = self.tape, self.producers(), {}
            for i, s in enumerate(tape.input_slots):
                roles[s] = ("input", f"x{i}" if len(tape.input_slots) > 1 else "x")
            for s in range(len(tape.S)):
                if s not in roles and s not in producers:
                    roles[s] = ("const", "const")
            self._roles = roles
        return self._roles

    def operands(self, e):
        """The operand slots of entry `e` (read from the payload for variadic entries)."""
        return operands(self.tape, e)

    def attributes(self, e):
        """An entry's constants, payload, or (a nested transform) the function it calls."""
        tape = self.tape
        prim, row = tape.prims[e], tape.E[e]
        parts = []
        if prim.kind == "call":
            rule = dict(tape.calls).get(e)
            f = getattr(getattr(rule, "traced", None), "f", None)
            if f is not None:
                parts.append(f"fn={getattr(f, '__name__', 'f')}")
        else:
            c0, c1 = tape.FC[e]
            uses = _uses_constants(prim)
            if uses[0] if uses is not None else c0 != 0.0:
                parts.append(f"c0={_num(c0)}")
            if uses[1] if uses is not None else c1 != 0.0:
                parts.append(f"c1={_num(c1)}")
            if row[6] and not prim.variadic:
                payload = tape.IP[row[5]:row[5] + row[6]]
                parts.append("payload=[" + ", ".join(str(int(i)) for i in payload[:4])
                             + (f", {_ELLIPSIS}] (n={payload.size})" if payload.size > 4 else "]"))
        return " ".join(parts)

    def _notes(self):
        tape, notes = self.tape, {}
        for k, s in enumerate(tape.output_slots):
            notes.setdefault(int(s), []).append(f"output {k}" if len(tape.output_slots) > 1
                                                else "output")
        for s, outcome in tape.guards:
            notes.setdefault(int(s), []).append(f"guard {outcome}")
        return notes

    # -- values and adjoints --
    def slot_value(self, buffer, s):
        """Slot `s` of a flat buffer (values or adjoints), in its shape."""
        return slot_value(self.tape, buffer, s)

    def _seed_buffer(self, V, seed):
        tape = self.tape
        G = np.zeros((1, V.size), V.dtype)
        if seed is None:
            for s in tape.output_slots:
                G[0, tape.offsets[s]:tape.offsets[s] + tape.sizes[s]] = 1.0
            return G
        seeds = seed if isinstance(seed, (tuple, list)) else (seed,)
        if len(seeds) != len(tape.output_slots):
            raise ValueError(f"{len(seeds)} seeds for {len(tape.output_slots)} outputs")
        for s, g in zip(tape.output_slots, seeds):
            g = np.asarray(getattr(g, "data", g), V.dtype)
            if g.size != tape.sizes[s]:
                raise ValueError(f"a seed of shape {g.shape} for an output of shape "
                                 f"{tape.shapes[s]}")
            G[0, tape.offsets[s]:tape.offsets[s] + tape.sizes[s]] = g.reshape(-1)
        return G

    def adjoints(self, seed=None):
        """Every slot's adjoint (a flat buffer like the values) from one reverse sweep at the
        shown values, seeded with `seed` (one array per output; default: the view's seed)."""
        V = np.array(self.values)       # a writable copy: the sweep must not touch the tape's
        G = self._seed_buffer(V, self.seed if seed is None else seed)
        if len(self.tape.E):
            sweep.backward(_Arrays(self.tape), V, G)
        return G[0]

    def edge_gradients(self, G):
        """{(slot, entry): the part of the slot's adjoint `G` that flows back through `entry`}."""
        tape = self.tape
        arrays = _Arrays(tape)
        V = np.array(self.values)
        m = interp.interpreters()
        calls = dict(tape.calls)
        edges = {}
        for e in range(len(tape.E)):
            out = int(tape.E[e, 4])
            if not tape.prims[e].differentiable:
                continue
            Ge = np.zeros((1, V.size), V.dtype)
            Ge[0, tape.offsets[out]:tape.offsets[out] + tape.sizes[out]] = \
                G[tape.offsets[out]:tape.offsets[out] + tape.sizes[out]]
            if e in calls:
                calls[e].vjp(arrays, V, Ge, e)
            else:
                m.backward(arrays.E, arrays.FC, arrays.IP, arrays.S, arrays.NEED, V, Ge, e, e + 1)
            for s in set(self.operands(e)):
                if tape.NEED[s]:
                    edges[(s, e)] = self.slot_value(Ge[0], s).copy()
        return edges

    # -- the table --
    def _rows(self, values, adjoints):
        tape = self.tape
        roles, notes = self.leaf_roles(), self._notes()
        rows = []
        for s in sorted(roles):
            op, label = roles[s]
            rows.append({"entry": "", "op": op, "operands": "", "out": str(s),
                         "shape": _shape(tape.shapes[s]), "attributes": "",
                         "note": ", ".join([label] + notes.get(s, [])), "slot": s,
                         "output": s in tape.output_slots})
        for e in range(len(tape.E)):
            s = int(tape.E[e, 4])
            note = ([] if self.entry_names is None else [self.entry_names[e]]) + notes.get(s, [])
            rows.append({"entry": str(e), "op": tape.prims[e].name,
                         "operands": ", ".join(str(o) for o in self.operands(e)),
                         "out": str(s), "shape": _shape(tape.shapes[s]),
                         "attributes": self.attributes(e), "note": ", ".join(note), "slot": s,
                         "output": s in tape.output_slots})
        for row in rows:
            if values is not None:
                row["value"] = brief(self.slot_value(values, row["slot"]))
            if adjoints is not None:
                row["adjoint"] = brief(self.slot_value(adjoints, row["slot"])) \
                    if tape.NEED[row["slot"]] else ""
        return rows

    @staticmethod
    def _columns(values, adjoints):
        columns = ["entry", "op", "operands", "out", "shape", "attributes"]
        columns += ["value"] if values is not None else []
        columns += ["adjoint"] if adjoints is not None else []
        return columns + ["note"]

    def summary(self):
        """One line: entries, slots, values, inputs, outputs, guards."""
        tape = self.tape
        return (f"{self.kind}: {_plural(len(tape.E), 'entry')}, "
                f"{_plural(len(tape.S), 'slot')}, {_plural(int(tape.S[:, 1].sum()), 'value')} "
                f"({self.values.dtype}), {_plural(len(tape.input_slots), 'input')}, "
                f"{_plural(len(tape.output_slots), 'output')}, "
                f"{_plural(len(tape.guards), 'guard')}")

    def table(self, values=False, adjoints=False, seed=None, max_rows=MAX_ROWS):
        """The tape as a table, one row per leaf slot (inputs, constants) and per entry.

        Columns: entry, op, operand slots, output slot, shape, attributes (constants, payload),
        `value` (with values=True: the shown values), `adjoint` (with adjoints=True: one
        reverse sweep seeded with `seed`, default the view's), note (inputs, outputs, guards,
        the entry names, such as PyTorch's grad_fn names of an eager graph). At most `max_rows`
        rows (None: all). Returns a `str` that notebooks show as an HTML table."""
        V = self.values if values else None
        G = self.adjoints(seed) if adjoints else None
        rows, columns = self._rows(V, G), self._columns(V, G)
        return Text(_text_table(self.summary(), rows, columns, max_rows),
                    _html_table(self.summary(), rows, columns, max_rows))

    def __str__(self):
        return str.__str__(self.table())

    def _repr_html_(self):
        return self.table()._repr_html_()

    # -- statistics --
    def stats(self):
        """Tape statistics, after ADOL-C's `tapestats`: see `TapeStats`."""
        tape = self.tape
        ops = {}
        for p in tape.prims:
            ops[p.name] = ops.get(p.name, 0) + 1
        producers = self.producers()
        leaves = [s for s in range(len(tape.S)) if s not in producers]
        tape_bytes = {name: int(getattr(tape, name).nbytes)
                      for name in ("E", "FC", "IP", "S", "NEED")}
        values = self.values
        return TapeStats(
            kind=self.kind, entries=len(tape.E),
            ops=dict(sorted(ops.items(), key=lambda kv: (-kv[1], kv[0]))),
            slots=len(tape.S), values=int(values.size), dtype=str(values.dtype),
            inputs=len(tape.input_slots),
            input_values=int(sum(tape.sizes[s] for s in tape.input_slots)),
            outputs=len(tape.output_slots),
            output_values=int(sum(tape.sizes[s] for s in tape.output_slots)),
            constants=sum(1 for s in leaves if s not in set(tape.input_slots)),
            guards=len(tape.guards), calls=len(tape.calls), payload=int(tape.IP.size),
            max_live=self._max_live(leaves), tape_bytes=sum(tape_bytes.values()),
            value_bytes=int(values.nbytes), bytes=sum(tape_bytes.values()) + int(values.nbytes),
            arrays=tape_bytes)

    def _max_live(self, leaves):
        """The most slots whose value is still needed at once (defined, with a later use or an
        output or guard), ADOL-C's maxlive."""
        tape = self.tape
        last_use = {s: -1 for s in range(len(tape.S))}
        for e in range(len(tape.E)):
            for s in self.operands(e):
                last_use[s] = e
        for s in tape.output_slots:
            last_use[s] = len(tape.E)
        for s, _ in tape.guards:
            last_use[s] = len(tape.E)
        live = sum(1 for s in leaves if last_use[s] >= 0)
        max_live, dying = live, {}
        for s, e in last_use.items():
            dying[e] = dying.get(e, 0) + (1 if e >= 0 else 0)
        for e in range(len(tape.E)):
            live += 1 if last_use[int(tape.E[e, 4])] >= 0 else 0
            max_live = max(max_live, live)
            live -= dying.get(e, 0)
        return max_live

    # -- the drawing --
    def draw(self, grads=None, seed=None, ax=None, input_names=None, shapes=True, figsize=None,
             fontsize=None, max_nodes=MAX_NODES):
        """Draw the computation graph with matplotlib, inputs on the left, outputs on the right,
        one column per depth; returns the Figure.

        Nodes are the input and constant slots and the entries (named by op, or by the view's
        entry names: PyTorch's grad_fn names for an eager graph). With `grads` (True; None: the
        view's `show_grads`), each edge is annotated with the gradient flowing back along it
        (its value, or its norm `|g|` for arrays), from one reverse sweep seeded with `seed`.
        `input_names` names the inputs (a list, in order). Node texts have gid "node", edge
        texts gid "grad" (`[t for t in ax.texts if t.get_gid() == "node"]`). Tapes of more
        than `max_nodes` nodes (None: no limit) are refused: read their `table()` and `stats()`
        instead."""
        n_nodes = len(self.tape.E) + len(self.leaf_roles())
        if max_nodes is not None and n_nodes > max_nodes:
            raise ValueError(f"this tape has {n_nodes} nodes, too many to draw legibly (more "
                             f"than max_nodes={max_nodes}); use table() and stats(), or pass "
                             "max_nodes=None")
        return _draw(self, self.show_grads if grads is None else grads, seed, ax, input_names,
                     shapes, figsize, fontsize)


class DisplayMethods:
    """The display methods of a tape that makes its own view (`display()`, a `TapeView` at the
    tape's current values): `str(tape)`, `table`, `stats`, `draw`, `summary`, `adjoints`,
    `operands` and `_repr_html_` delegate to a fresh view, so that they show the values of now."""
    __slots__ = ()

    def display(self):
        raise NotImplementedError

    def table(self, values=False, adjoints=False, seed=None, max_rows=MAX_ROWS):
        """The tape as a table (see `TapeView.table`)."""
        return self.display().table(values, adjoints, seed, max_rows)

    def stats(self):
        """The tape's statistics (see `TapeView.stats`)."""
        return self.display().stats()

    def draw(self, *args, **kwargs):
        """Draw the tape's graph with matplotlib (see `TapeView.draw`)."""
        return self.display().draw(*args, **kwargs)

    def summary(self):
        """One line: entries, slots, values, inputs, outputs, guards."""
        return self.display().summary()

    def adjoints(self, seed=None):
        """Every slot's adjoint from one reverse sweep over a copy of the shown values, seeded
        with `seed` (default: the view's); the tape's buffers are not touched."""
        return self.display().adjoints(seed)

    def operands(self, e):
        """The operand slots of entry `e`."""
        return operands(self, e)

    def __str__(self):
        return str(self.display())

    def _repr_html_(self):
        return self.display()._repr_html_()


def operands(tape, e):
    """The operand slots of entry `e` of `tape` (read from the payload for variadic entries)."""
    row = tape.E[e]
    if tape.prims[e].variadic:
        return [int(s) for s in tape.IP[row[5]:row[5] + row[6]]]
    return [int(s) for s in row[1:4] if s >= 0]


def slot_value(tape, buffer, s):
    """Slot `s` of a flat buffer of `tape` (values or adjoints), in its shape."""
    off = tape.offsets[s]
    return buffer[off:off + tape.sizes[s]].reshape(tape.shapes[s])


def op_counts(prims):
    """'op: count, ...' over the entries, most frequent first (for one-line reprs)."""
    counts = collections.Counter(p.name for p in prims)
    return ", ".join(f"{k}: {v}" for k, v in counts.most_common())


def _uses_constants(prim):
    """(uses c0, uses c1) of an elementwise primitive, from its expressions; None for kernels
    (their constants are shown when nonzero)."""
    if prim.kind not in ("unary", "binary"):
        return None
    text = " ".join((prim.f,) + tuple(prim.d))
    return "c0" in text, "c1" in text


class _Arrays:
    """A tape's arrays for the sweeps, read-only as the interpreters take them (see
    `core.validate`)."""

    def __init__(self, tape):
        self.validated = getattr(tape, "validated", False) is True   # a tape's arrays, unchanged
        self.E, self.FC, self.IP, self.S, self.NEED = (
            read_only(a) for a in (tape.E, tape.FC, tape.IP, tape.S, tape.NEED))
        self.calls = list(tape.calls)


class TapeStats(dict):
    """A tape's statistics (a dict): entries, ops (entries per op), slots, values (elements of
    the value buffer), dtype, inputs and outputs (slots and their elements), constants, guards,
    calls (nested transforms), payload (integers), max_live (most slots whose value is still
    needed at once, ADOL-C's maxlive), tape_bytes (the tape arrays E, FC, IP, S, NEED; per array
    in `arrays`), value_bytes (the value buffer) and bytes (both)."""

    def __str__(self):
        lines = [f"{self['kind']} statistics"]
        for key, label in _STAT_LABELS:
            lines.append(f"  {label:<26}{self._value(key)}")
        lines.append("  entries per op")
        width = max((len(k) for k in self["ops"]), default=0)
        for op, n in self["ops"].items():
            lines.append(f"    {op:<{width}}  {n:>6}")
        return "\n".join(lines)

    __repr__ = __str__

    def _value(self, key):
        if key == "inputs":
            return f"{self['inputs']} ({_plural(self['input_values'], 'value')})"
        if key == "outputs":
            return f"{self['outputs']} ({_plural(self['output_values'], 'value')})"
        if key == "values":
            return f"{self['values']} ({self['dtype']})"
        if key == "tape_bytes":
            return f"{self['tape_bytes']} (" + ", ".join(
                f"{k} {v}" for k, v in self["arrays"].items()) + ")"
        return str(self[key])

    def _repr_html_(self):
        cells = "".join(f"<tr><th style='text-align:left'>{html.escape(label)}</th>"
                        f"<td style='text-align:left'>{html.escape(self._value(key))}</td></tr>"
                        for key, label in _STAT_LABELS)
        ops = "".join(f"<tr><td style='text-align:left'>{html.escape(op)}</td><td>{n}</td></tr>"
                      for op, n in self["ops"].items())
        return (f"<div><b>{html.escape(self['kind'])} statistics</b><table>{cells}</table>"
                f"<table><thead><tr><th>op</th><th>entries</th></tr></thead>"
                f"<tbody>{ops}</tbody></table></div>")


_STAT_LABELS = (("entries", "entries"), ("slots", "slots"), ("values", "values"),
                ("inputs", "inputs"), ("outputs", "outputs"), ("constants", "constant slots"),
                ("guards", "guards"), ("calls", "nested transforms"),
                ("payload", "payload integers"), ("max_live", "max live slots"),
                ("tape_bytes", "tape bytes"), ("value_bytes", "value buffer bytes"),
                ("bytes", "total bytes"))


# ---- table rendering --------------------------------------------------------------------------

def _elide(rows, max_rows):
    """Rows to show, with None where rows were left out."""
    if max_rows is None or len(rows) <= max_rows:
        return list(rows)
    head = max_rows - max_rows // 3
    tail = max_rows - head
    return rows[:head] + [None] + (rows[-tail:] if tail else [])


def _text_table(title, rows, columns, max_rows):
    shown = _elide(rows, max_rows)
    widths = {c: max([len(c)] + [len(r[c]) for r in shown if r is not None]) for c in columns}
    right = {"entry", "out"}

    def line(cells):
        parts = [cells[c].rjust(widths[c]) if c in right else cells[c].ljust(widths[c])
                 for c in columns]
        return "  ".join(parts).rstrip()

    lines = [title, line({c: c for c in columns})]
    for r in shown:
        if r is None:
            lines.append(f"{_ELLIPSIS} {len(rows) - len(shown) + 1} more rows {_ELLIPSIS}")
        else:
            lines.append(line(r))
    return "\n".join(lines)


def _html_table(title, rows, columns, max_rows):
    shown = _elide(rows, max_rows)
    head = "".join(f"<th>{c}</th>" for c in columns)
    body = []
    for r in shown:
        if r is None:
            body.append(f"<tr><td colspan='{len(columns)}' style='text-align:center'>"
                        f"{_ELLIPSIS} {len(rows) - len(shown) + 1} more rows {_ELLIPSIS}</td></tr>")
            continue
        style = " style='font-weight:bold'" if r["output"] else ""
        cells = "".join(f"<td style='text-align:{'right' if c in ('entry', 'out') else 'left'}'>"
                        f"{html.escape(r[c])}</td>" for c in columns)
        body.append(f"<tr{style}>{cells}</tr>")
    return (f"<table class='tapegrad-tape' style='font-family:monospace'>"
            f"<caption style='text-align:left'>{html.escape(title)}</caption>"
            f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>")


# ---- the eager graph as a tape ----------------------------------------------------------------

class GraphTape(DisplayMethods):
    """A read-only snapshot of the eager graph behind some output tensors, flattened as
    `backward()` flattens it (`eager.flatten.linearize`): the tape arrays, the recorded values,
    the slots of the leaves (`input_slots`: leaves that require grad; the others are constants)
    and of the outputs, and the grad_fn of each entry (`nodes`).

    `adjoint(t)` / `adjoints()` run one reverse sweep over a copy (no `.grad` is touched);
    `backward(gradient)` sets the seed that tables and drawings use (default: ones). Shown by
    `display()`, a `TapeView` naming entries by their grad_fn (`DisplayMethods`)."""

    validated = True    # built by linearize from recorded nodes: valid by construction (sweep)
    __slots__ = ("E", "FC", "IP", "S", "NEED", "V", "offsets", "sizes", "shapes", "prims",
                 "nodes", "input_slots", "output_slots", "guards", "calls", "_flat", "_outputs",
                 "_seed", "_frozen")

    def __init__(self, flat, outputs):
        """`flat`: the flat tape of the graph behind `outputs` (built by the eager layer,
        `eager.flatten.tape_of`); its recorded nodes and leaves are read, never changed."""
        outputs = tuple(outputs)
        arrays = {}
        for name in ("E", "FC", "IP", "S", "NEED", "V"):
            arrays[name] = read_only(np.array(getattr(flat, name)), owned=True)
        object.__setattr__(self, "_frozen", False)
        self.E, self.FC, self.IP = arrays["E"], arrays["FC"], arrays["IP"]
        self.S, self.NEED, self.V = arrays["S"], arrays["NEED"], arrays["V"]
        self.offsets, self.sizes = tuple(flat.offsets), tuple(flat.sizes)
        self.shapes = tuple(v.shape for v in flat.values)
        self.prims = tuple(PRIMS[op] for op in flat.E[:, 0])
        self.nodes = tuple(flat.nodes)
        self.input_slots = tuple(s for s, t in flat.leaves if t._requires_grad)
        self.output_slots = tuple(flat.slot_of(o) for o in outputs)
        self.guards = ()
        self.calls = tuple(flat.calls)
        self._flat = flat
        self._outputs = outputs
        self._seed = None
        self._frozen = True

    def __setattr__(self, name, value):
        if getattr(self, "_frozen", False) and name != "_seed":
            raise AttributeError(f"a GraphTape is read-only ({name})")
        object.__setattr__(self, name, value)

    def __len__(self):
        return len(self.E)

    @property
    def dtype(self):
        return self.V.dtype

    @property
    def leaves(self):
        """(slot, tensor) of every leaf (inputs and constants), in slot order."""
        return tuple(self._flat.leaves)

    def slot_of(self, tensor):
        """The slot of a tensor of the graph (a leaf or a computed tensor), or None."""
        return self._flat.slot_of(tensor)

    def value(self, tensor_or_slot):
        return self._slot_value(self.V, self._slot(tensor_or_slot))

    def adjoint(self, tensor_or_slot, seed=None):
        """d(outputs . seed)/d(tensor) for any tensor of the graph, intermediate ones too."""
        return self._slot_value(self.adjoints(seed), self._slot(tensor_or_slot)).copy()

    def backward(self, gradient=None):
        """Set the seed of the adjoints that `table(adjoints=True)` and `draw()` show (like
        `out.backward(gradient)`, without touching `.grad`); returns the tape."""
        self._seed = gradient
        return self

    def _slot(self, tensor_or_slot):
        if isinstance(tensor_or_slot, (int, np.integer)):
            return int(tensor_or_slot)
        s = self.slot_of(tensor_or_slot)
        if s is None:
            raise ValueError("the tensor is not part of this graph")
        return s

    def _slot_value(self, buffer, s):
        return slot_value(self, buffer, s)

    # -- display --
    def display(self):
        """The `TapeView` of this graph: its recorded values, entries named by grad_fn, the
        seed set by `backward`, gradients drawn once they exist (`_shows_grads`)."""
        return TapeView(self, self.V, seed=self._seed, show_grads=self._shows_grads(),
                        kind="GraphTape", entry_names=[node.name() for node in self.nodes],
                        leaf_roles=self._leaf_roles())

    def _shows_grads(self):
        """After a backward over this graph (a leaf has a .grad, or the graph was freed), or a
        `tape.backward(...)`; with a non-scalar output only when a seed was given."""
        if self._seed is not None:
            return True
        if sum(self.sizes[s] for s in self.output_slots) != 1:
            return False
        return (any(t._grad is not None for _, t in self._flat.leaves if t._requires_grad)
                or any(n.freed for n in self.nodes))

    def _leaf_roles(self):
        roles, k = {}, 0
        n_inputs = len(self.input_slots)
        for s, t in self._flat.leaves:
            if t._requires_grad:
                roles[s] = ("leaf", f"x{k}" if n_inputs > 1 else "x")
                k += 1
            else:
                roles[s] = ("const", "const")
        return roles

    def __repr__(self):
        return (f"<tapegrad.GraphTape: {len(self)} entries, {len(self.S)} slots, "
                f"{self.V.size} values ({self.V.dtype}), {len(self.input_slots)} inputs, "
                f"{len(self.output_slots)} outputs; {op_counts(self.prims)}>")


# ---- the drawing ------------------------------------------------------------------------------

def layout(tape, sweeps=4):
    """A layered (Sugiyama) layout of the graph of `tape` (a `TapeView`, or a tape with a
    `display()`), inputs on the left, outputs on the right.

    Nodes are ("slot", s) for the leaf slots (inputs, constants) and ("entry", e) for entries.
    An entry's layer is one more than its deepest operand's; a leaf sits just before its first
    consumer. Edges spanning several layers pass through dummy points, and rows are ordered by
    barycentre sweeps (fewer crossings). Returns (pos, edges): pos maps nodes to (x, y), edges
    maps (slot, entry) to the list of points from the operand's node to the entry's node."""
    view = tape if isinstance(tape, TapeView) else tape.display()
    producers = view.producers()
    roles = view.leaf_roles()

    def node_of(s):
        e = producers.get(s)
        return ("slot", s) if e is None else ("entry", e)

    layer, consumers, pairs = {}, {}, []
    for e in range(len(view.tape.E)):
        d = 1
        for s in dict.fromkeys(view.operands(e)):
            n = node_of(s)
            pairs.append((s, n, ("entry", e)))
            consumers.setdefault(n, []).append(e)
            if n[0] == "entry":
                d = max(d, layer[n] + 1)
        layer[("entry", e)] = d
    for s in roles:
        users = [layer[("entry", e)] for e in consumers.get(("slot", s), [])]
        layer[("slot", s)] = min(users) - 1 if users else 0
    # split long edges with dummy nodes, one per layer crossed
    chains, preds, succs = {}, {}, {}
    for s, u, v in pairs:
        chain = [u] + [("dummy", (s, v[1]), d) for d in range(layer[u] + 1, layer[v])] + [v]
        for d in chain[1:-1]:
            layer[d] = d[2]
        for a, b in zip(chain, chain[1:]):
            preds.setdefault(b, []).append(a)
            succs.setdefault(a, []).append(b)
        chains[(s, v[1])] = chain
    layers = {}
    for n, d in layer.items():
        layers.setdefault(d, []).append(n)
    order = {}
    for d in sorted(layers):
        layers[d].sort(key=lambda n: (n[0] != "slot", str(n[1])))
        for i, n in enumerate(layers[d]):
            order[n] = i

    def sweep(depths, neighbours):
        for d in depths:
            def key(n):
                ps = [order[p] for p in neighbours.get(n, ())]
                return sum(ps) / len(ps) if ps else order[n]
            layers[d].sort(key=key)
            for i, n in enumerate(layers[d]):
                order[n] = i

    depths = sorted(layers)
    for _ in range(sweeps):
        sweep(depths[1:], preds)
        sweep(depths[-2::-1], succs)
    sweep(depths[1:], preds)
    height = max(len(v) for v in layers.values()) if layers else 1
    pos = {}
    for d, nodes in layers.items():
        off = (height - len(nodes)) / 2.0
        for i, n in enumerate(nodes):
            pos[n] = (float(d), -(off + i))
    edges = {key: [pos[n] for n in chain] for key, chain in chains.items()}
    return {n: p for n, p in pos.items() if n[0] != "dummy"}, edges


def _edge_text(g):
    g = np.asarray(g)
    if g.size == 1:
        return _num(g.reshape(-1)[0])
    return "|g|=" + _num(np.linalg.norm(g.reshape(-1)))


def _draw(view, grads, seed, ax, input_names, shapes, figsize, fontsize):
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyArrowPatch

    tape = view.tape
    pos, edges = layout(view)
    roles = view.leaf_roles()
    edge_grads, G = {}, None
    if grads:
        G = view.adjoints(seed)
        edge_grads = view.edge_gradients(G)
    n_layers = 1 + max((p[0] for p in pos.values()), default=0)
    height = 1 + max((-p[1] for p in pos.values()), default=0)
    if ax is None:
        if figsize is None:
            figsize = (min(1.0 + 2.2 * n_layers, 40.0), min(1.4 + 0.9 * height, 40.0))
        fig, ax = plt.subplots(figsize=figsize)
    else:
        fig = ax.figure
    if fontsize is None:
        fontsize = 9 if len(pos) < 40 else 7
    outputs = set(int(s) for s in tape.output_slots)
    texts = {}
    for n, (x, y) in sorted(pos.items()):
        kind, i = n
        if kind == "slot":
            op, label = roles[i]
            if i in tape.input_slots and input_names is not None:
                k = list(tape.input_slots).index(i)
                label = str(input_names[k]) if k < len(input_names) else label
            if op == "const" and tape.sizes[i] == 1:
                label = brief(view.slot_value(view.values, i))
            slot = i
            color = "#cfe2f3" if op != "const" else "#eeeeee"
        else:
            label = view.entry_label(i)
            attributes = view.attributes(i)
            if view.entry_names is None and attributes and len(attributes) <= 16:
                label += " " + attributes.replace("payload=", "")
            slot = int(tape.E[i, 4])
            color = "#fff2cc" if tape.prims[i].differentiable else "#f4cccc"
        output = slot in outputs
        if output:
            color = "#b6d7a8"
        if shapes:
            label += "\n" + _shape(tape.shapes[slot])
        if kind == "slot" and G is not None and tape.NEED[slot]:
            label += "\ngrad " + _edge_text(view.slot_value(G, slot))
        texts[n] = ax.text(x, y, label, ha="center", va="center", fontsize=fontsize, zorder=3,
                           gid="node", bbox=dict(boxstyle="round,pad=0.35", fc=color,
                                                 ec="#274e13" if output else "#444444",
                                                 lw=1.8 if output else 1.0))
    producers = view.producers()
    for (s, e), points in edges.items():
        source = ("slot", s) if s not in producers else ("entry", producers[s])
        target = ("entry", e)
        last = len(points) - 2
        for k, (a, b) in enumerate(zip(points, points[1:])):
            ax.add_patch(FancyArrowPatch(
                a, b, arrowstyle="-|>" if k == last else "-", mutation_scale=10,
                color="#555555", lw=0.9, zorder=4, shrinkA=0, shrinkB=0,
                patchA=texts[source].get_bbox_patch() if k == 0 else None,
                patchB=texts[target].get_bbox_patch() if k == last else None))
        g = edge_grads.get((s, e))
        if g is not None:
            (x0, y0), (x1, y1) = points[-2], points[-1]
            ax.text(x0 + 0.5 * (x1 - x0), y0 + 0.5 * (y1 - y0), _edge_text(g), ha="center",
                    va="center", fontsize=fontsize - 1, color="#990000", zorder=5, gid="grad",
                    bbox=dict(boxstyle="round,pad=0.1", fc="white", ec="none", alpha=0.85))
    ax.set_xlim(-0.6, n_layers - 0.4)
    ax.set_ylim(-height + 0.4, 0.6)
    ax.set_axis_off()
    title = view.summary()
    if G is not None:
        title += "\nedge labels: the gradient flowing back along each edge (|g|: its norm)"
    ax.set_title(title, fontsize=fontsize)
    return fig
