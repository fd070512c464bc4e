"""Looking at tapes: tables, statistics and drawings of a traced `Tape` or of an eager graph.

Two kinds of tape share these displays (the `TapeDisplay` mixin):

* `Tape` (`tapegrad.trace(f, x)`, or the tapes a transform caches): a replayable function.
  Its values are those of the last replay on this thread (the trace-time values before any).
* `GraphTape` (`tapegrad.tape_of(out)` or `out.tape`): a read-only snapshot of the eager graph
  behind tensors, flattened by `_tape.linearize` exactly as `backward()` flattens it.

Both show as a table (`str(tape)`, `tape.table(values=True, adjoints=True)`, `_repr_html_`),
summarise themselves like ADOL-C's tape statistics (`tape.stats()`) and draw their computation
graph with matplotlib (`tape.draw()`), annotated with the gradient flowing on each edge.

Adjoints shown here come from one reverse sweep of the compiled interpreter over a copy of the
tape's values, seeded with `seed` (default: ones on the outputs, i.e. d(output)/d(everything) for
a scalar output); they never touch any tensor's `.grad`.
"""
import collections
import html
import math

import numpy as np

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


# ---- what both kinds of tape provide ----------------------------------------------------------

class TapeDisplay:
    """Tables, statistics and drawings, for any object with the tape arrays (E, FC, IP, S, NEED),
    `prims`, `shapes`, `offsets`, `sizes`, `input_slots`, `output_slots`, `guards`, `calls`, and
    the hooks `_display_values()`, `_display_seed()`, `_display_auto_grads()`."""

    # -- hooks a kind of tape may override --
    _kind = "Tape"

    def _op_counts(self):
        """'op: count, ...' over the entries, most frequent first (for the one-line reprs)."""
        counts = collections.Counter(p.name for p in self.prims)
        return ", ".join(f"{k}: {v}" for k, v in counts.most_common())

    def _entry_label(self, e):
        """The name drawn on an entry's node."""
        return self.prims[e].name

    def _entry_note(self, e):
        return ""

    def _leaf_roles(self):
        """{slot: (op column, label)} for every slot that no entry computes."""
        roles = {}
        for i, s in enumerate(self.input_slots):
            roles[s] = ("input", f"x{i}" if len(self.input_slots) > 1 else "x")
        for s in range(len(self.S)):
            if s not in roles and s not in self._producers():
                roles[s] = ("const", "const")
        return roles

    def _display_values(self):
        """The values shown: a traced Tape's last replay on this thread, else its trace."""
        V = getattr(getattr(self, "_local", None), "V", None)
        return self.V0 if V is None else V

    def _display_seed(self):
        return None

    def _display_auto_grads(self):
        """A traced Tape shows gradients once replayed (on this thread), for a scalar output."""
        return (getattr(getattr(self, "_local", None), "V", None) is not None
                and sum(self.sizes[s] for s in self.output_slots) == 1)

    # -- structure --
    def _producers(self):
        """{slot: entry} of the slots computed by an entry."""
        cache = getattr(self, "_producer_cache", None)
        if cache is None:
            cache = self._producer_cache = {int(row[4]): e for e, row in enumerate(self.E)}
        return cache

    def operands(self, e):
        """The operand slots of entry `e` (read from the payload for variadic entries)."""
        row = self.E[e]
        if self.prims[e].variadic:
            return [int(s) for s in self.IP[row[5]:row[5] + row[6]]]
        return [int(s) for s in row[1:4] if s >= 0]

    def _attributes(self, e):
        prim, row = self.prims[e], self.E[e]
        parts = []
        if prim.kind == "call":
            rule = dict(self.calls).get(e)
            f = getattr(getattr(rule, "traced", None), "f", None)
            if f is not None:
                parts.append(f"fn={getattr(f, '__name__', 'f')}")
        else:
            c0, c1 = self.FC[e]
            uses = _uses_constants(prim)
            if uses[0] if uses is not None else c0 != 0.0:
                parts.append(f"c0={_num(c0)}")
            if uses[1] if uses is not None else c1 != 0.0:
                parts.append(f"c1={_num(c1)}")
            if row[6] and not prim.variadic:
                payload = self.IP[row[5]:row[5] + row[6]]
                parts.append("payload=[" + ", ".join(str(int(i)) for i in payload[:4])
                             + (f", {_ELLIPSIS}] (n={payload.size})" if payload.size > 4 else "]"))
        return " ".join(parts)

    def _notes(self):
        notes = {}
        for k, s in enumerate(self.output_slots):
            notes.setdefault(int(s), []).append(f"output {k}" if len(self.output_slots) > 1
                                                else "output")
        for s, outcome in self.guards:
            notes.setdefault(int(s), []).append(f"guard {outcome}")
        return notes

    # -- values and adjoints --
    def _slot_value(self, buffer, s):
        off = self.offsets[s]
        return buffer[off:off + self.sizes[s]].reshape(self.shapes[s])

    def _seed_buffer(self, V, seed):
        G = np.zeros((1, V.size), V.dtype)
        if seed is None:
            for s in self.output_slots:
                G[0, self.offsets[s]:self.offsets[s] + self.sizes[s]] = 1.0
            return G
        seeds = seed if isinstance(seed, (tuple, list)) else (seed,)
        if len(seeds) != len(self.output_slots):
            raise ValueError(f"{len(seeds)} seeds for {len(self.output_slots)} outputs")
        for s, g in zip(self.output_slots, seeds):
            g = np.asarray(getattr(g, "data", g), V.dtype)
            if g.size != self.sizes[s]:
                raise ValueError(f"a seed of shape {g.shape} for an output of shape "
                                 f"{self.shapes[s]}")
            G[0, self.offsets[s]:self.offsets[s] + self.sizes[s]] = g.reshape(-1)
        return G

    def adjoints(self, seed=None):
        """Every slot's adjoint (a flat buffer like the values) from one reverse sweep at the
        current values, seeded with `seed` (one array per output; default ones)."""
        from ..core import sweep as _sweep
        V = np.array(self._display_values())       # a writable copy: the sweep must not touch ours
        G = self._seed_buffer(V, self._display_seed() if seed is None else seed)
        if len(self.E):
            _sweep.backward(_Arrays(self), V, G)
        return G[0]

    def _edge_gradients(self, G):
        """{(slot, entry): the part of the slot's adjoint that flows back through `entry`}."""
        from ..core.interp import interpreters
        arrays = _Arrays(self)
        V = np.array(self._display_values())
        m = interpreters()
        calls = dict(self.calls)
        edges = {}
        for e in range(len(self.E)):
            out = int(self.E[e, 4])
            if not self.prims[e].differentiable:
                continue
            Ge = np.zeros((1, V.size), V.dtype)
            Ge[0, self.offsets[out]:self.offsets[out] + self.sizes[out]] = \
                G[self.offsets[out]:self.offsets[out] + self.sizes[out]]
            if e in calls:
                calls[e].vjp(arrays, V, Ge, e)
            else:
                m.backward(arrays.E, arrays.FC, arrays.IP, arrays.S, arrays.NEED, V, Ge, e, e + 1)
            for s in set(self.operands(e)):
                if self.NEED[s]:
                    edges[(s, e)] = self._slot_value(Ge[0], s).copy()
        return edges

    # -- the table --
    def _rows(self, values, adjoints):
        roles, notes = self._leaf_roles(), self._notes()
        rows = []
        for s in sorted(roles):
            op, label = roles[s]
            rows.append({"entry": "", "op": op, "operands": "", "out": str(s),
                         "shape": _shape(self.shapes[s]), "attributes": "",
                         "note": ", ".join([label] + notes.get(s, [])), "slot": s,
                         "output": s in self.output_slots})
        for e in range(len(self.E)):
            s = int(self.E[e, 4])
            note = [n for n in (self._entry_note(e),) if n] + notes.get(s, [])
            rows.append({"entry": str(e), "op": self.prims[e].name,
                         "operands": ", ".join(str(o) for o in self.operands(e)),
                         "out": str(s), "shape": _shape(self.shapes[s]),
                         "attributes": self._attributes(e), "note": ", ".join(note), "slot": s,
                         "output": s in self.output_slots})
        for row in rows:
            if values is not None:
                row["value"] = brief(self._slot_value(values, row["slot"]))
            if adjoints is not None:
                row["adjoint"] = brief(self._slot_value(adjoints, row["slot"])) \
                    if self.NEED[row["slot"]] else ""
        return rows

    def _columns(self, values, adjoints):
        columns = ["entry", "op", "operands", "out", "shape", "attributes"]
        columns += ["value"] if values is not None else []
        columns += ["adjoint"] if adjoints is not None else []
        return columns + ["note"]

    def summary(self):
        """One line: entries, slots, values, inputs, outputs, guards."""
        return (f"{self._kind}: {_plural(len(self.E), 'entry')}, "
                f"{_plural(len(self.S), 'slot')}, {_plural(int(self.S[:, 1].sum()), 'value')} "
                f"({self.dtype}), {_plural(len(self.input_slots), 'input')}, "
                f"{_plural(len(self.output_slots), 'output')}, {_plural(len(self.guards), 'guard')}")

    def _table_data(self, values, adjoints, seed):
        V = self._display_values() if (values or adjoints) else None
        G = self.adjoints(seed) if adjoints else None
        return self._rows(V if values else None, G), self._columns(V if values else None, G)

    def table(self, values=False, adjoints=False, seed=None, max_rows=MAX_ROWS):
        """The tape as a table, one row per leaf slot (inputs, constants) and per entry.

        Columns: entry, op, operand slots, output slot, shape, attributes (constants, payload),
        `value` (with values=True: the current values), `adjoint` (with adjoints=True: one
        reverse sweep seeded with `seed`, default ones on the outputs), note (inputs, outputs,
        guards, PyTorch's grad_fn names of an eager graph). At most `max_rows` rows (None: all).
        Returns a `str` that notebooks show as an HTML table."""
        rows, columns = self._table_data(values, adjoints, seed)
        return Text(_text_table(self.summary(), rows, columns, max_rows),
                    _html_table(self.summary(), rows, columns, max_rows))

    def __str__(self):
        return str.__str__(self.table())

    def _repr_html_(self):
        return self.table()._repr_html_()

    # -- statistics --
    def stats(self):
        """Tape statistics, after ADOL-C's `tapestats`: see `TapeStats`."""
        ops = {}
        for p in self.prims:
            ops[p.name] = ops.get(p.name, 0) + 1
        producers = self._producers()
        leaves = [s for s in range(len(self.S)) if s not in producers]
        tape_bytes = {name: int(getattr(self, name).nbytes)
                      for name in ("E", "FC", "IP", "S", "NEED")}
        values = self._display_values()
        # max live: slots whose value is still needed (defined, with a later use or an output)
        last_use = {s: -1 for s in range(len(self.S))}
        for e in range(len(self.E)):
            for s in self.operands(e):
                last_use[s] = e
        for s in self.output_slots:
            last_use[s] = len(self.E)
        for s, _ in self.guards:
            last_use[s] = len(self.E)
        live = sum(1 for s in leaves if last_use[s] >= 0)
        max_live, dying = live, {}
        for s, e in last_use.items():
            dying[e] = dying.get(e, 0) + (1 if e >= 0 else 0)
        for e in range(len(self.E)):
            live += 1 if last_use[int(self.E[e, 4])] >= 0 else 0
            max_live = max(max_live, live)
            live -= dying.get(e, 0)
        return TapeStats(
            kind=self._kind, entries=len(self.E),
            ops=dict(sorted(ops.items(), key=lambda kv: (-kv[1], kv[0]))),
            slots=len(self.S), values=int(values.size), dtype=str(values.dtype),
            inputs=len(self.input_slots),
            input_values=int(sum(self.sizes[s] for s in self.input_slots)),
            outputs=len(self.output_slots),
            output_values=int(sum(self.sizes[s] for s in self.output_slots)),
            constants=sum(1 for s in leaves if s not in set(self.input_slots)),
            guards=len(self.guards), calls=len(self.calls), payload=int(self.IP.size),
            max_live=max_live, tape_bytes=sum(tape_bytes.values()),
            value_bytes=int(values.nbytes), bytes=sum(tape_bytes.values()) + int(values.nbytes),
            arrays=tape_bytes)

    # -- the drawing --
    def draw(self, grads=None, seed=None, ax=None, input_names=None, shapes=True, figsize=None,
             fontsize=None, max_nodes=MAX_NODES):
        """Draw the computation graph with matplotlib, inputs on the left, outputs on the right,
        one column per depth; returns the Figure.

        Nodes are the input and constant slots and the entries (named by op; an eager graph uses
        PyTorch's grad_fn names). With `grads` (True; None means: when the tape has been swept
        backward or replayed and the output is a scalar), each edge is annotated with the
        gradient flowing back along it (its value, or its norm `|g|` for arrays), from one
        reverse sweep seeded with `seed`. `input_names` names the inputs (a list, in order).
        Node texts have gid "node", edge texts gid "grad" (`[t for t in ax.texts if
        t.get_gid() == "node"]`). Tapes of more than `max_nodes` nodes (None: no limit) are
        refused: read their `table()` and `stats()` instead."""
        n_nodes = len(self.E) + len(self._leaf_roles())
        if max_nodes is not None and n_nodes > max_nodes:
            raise ValueError(f"this tape has {n_nodes} nodes, too many to draw legibly (more "
                             f"than max_nodes={max_nodes}); use table() and stats(), or pass "
                             "max_nodes=None")
        return _draw(self, grads, seed, ax, input_names, shapes, figsize, fontsize)


def _uses_constants(prim):
    """(uses c0, uses c1) of an elementwise primitive, from its expressions; None for kernels
    (their constants are shown when nonzero)."""
    if prim.kind not in ("unary", "binary"):
        return None
    text = " ".join((prim.f,) + tuple(prim.d))
    return "c0" in text, "c1" in text


class _Arrays:
    """A tape's arrays for the sweeps, read-only as the interpreters take them (see _validate)."""

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

class GraphTape(TapeDisplay):
    """A read-only snapshot of the eager graph behind some output tensors, flattened as
    `backward()` flattens it (`_tape.linearize`): the tape arrays, the recorded values, the
    slots of the leaves (`input_slots`: leaves that require grad; the others are constants) and
    of the outputs, and the grad_fn of each entry (`nodes`).

    `adjoint(t)` / `adjoints()` run one reverse sweep over a copy (no `.grad` is touched);
    `backward(gradient)` sets the seed that tables and drawings use (default: ones)."""

    _kind = "GraphTape"
    validated = True    # built by linearize from recorded nodes: valid by construction (_sweep)
    __slots__ = ("E", "FC", "IP", "S", "NEED", "V", "offsets", "sizes", "shapes", "prims",
                 "nodes", "input_slots", "output_slots", "guards", "calls", "_flat", "_outputs",
                 "_seed", "_producer_cache", "_frozen")

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
        self._producer_cache = None
        self._frozen = True

    def __setattr__(self, name, value):
        if getattr(self, "_frozen", False) and name not in ("_seed", "_producer_cache"):
            raise AttributeError(f"a GraphTape is read-only ({name})")
        object.__setattr__(self, name, value)

    def _producers(self):
        if self._producer_cache is None:
            self._producer_cache = {int(row[4]): e for e, row in enumerate(self.E)}
        return self._producer_cache

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
        s = self._slot(tensor_or_slot)
        return self._slot_value(self.V, s)

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

    # -- hooks --
    def _display_values(self):
        return self.V

    def _display_seed(self):
        return self._seed

    def _display_auto_grads(self):
        """After a backward over this graph (a leaf has a .grad, or the graph was freed), or a
        `tape.backward(...)`; with a non-scalar output only when a seed was given."""
        if self._seed is not None:
            return True
        if sum(self.sizes[s] for s in self.output_slots) != 1:
            return False
        return (any(t._grad is not None for _, t in self._flat.leaves if t._requires_grad)
                or any(n.freed for n in self.nodes))

    def _entry_label(self, e):
        return self.nodes[e].name()

    def _entry_note(self, e):
        return self.nodes[e].name()

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
        ops = self._op_counts()
        return (f"<tapegrad.GraphTape: {len(self)} entries, {len(self.S)} slots, "
                f"{self.V.size} values ({self.V.dtype}), {len(self.input_slots)} inputs, "
                f"{len(self.output_slots)} outputs; {ops}>")


# ---- the drawing ------------------------------------------------------------------------------

def layout(tape, sweeps=4):
    """A layered (Sugiyama) layout of the graph, inputs on the left, outputs on the right.

    Nodes are ("slot", s) for the leaf slots (inputs, constants) and ("entry", e) for entries.
    An entry's layer is one more than its deepest operand's; a leaf sits just before its first
    consumer. Edges spanning several layers pass through dummy points, and rows are ordered by
    barycentre sweeps (fewer crossings). Returns (pos, edges): pos maps nodes to (x, y), edges
    maps (slot, entry) to the list of points from the operand's node to the entry's node."""
    producers = tape._producers()
    roles = tape._leaf_roles()

    def node_of(s):
        e = producers.get(s)
        return ("slot", s) if e is None else ("entry", e)

    layer, consumers, pairs = {}, {}, []
    for e in range(len(tape.E)):
        d = 1
        for s in dict.fromkeys(tape.operands(e)):
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


def _draw(tape, grads, seed, ax, input_names, shapes, figsize, fontsize):
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyArrowPatch

    pos, edges = layout(tape)
    roles = tape._leaf_roles()
    if grads is None:
        grads = tape._display_auto_grads()
    edge_grads, G = {}, None
    if grads:
        G = tape.adjoints(seed)
        edge_grads = tape._edge_gradients(G)
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
                label = brief(tape._slot_value(tape._display_values(), i))
            slot = i
            color = "#cfe2f3" if op != "const" else "#eeeeee"
        else:
            label = tape._entry_label(i)
            attributes = tape._attributes(i)
            if tape._kind == "Tape" and attributes and len(attributes) <= 16:
                label += " " + attributes.replace("payload=", "")
            slot = int(tape.E[i, 4])
            color = "#fff2cc" if tape.prims[i].differentiable else "#f4cccc"
        output = slot in outputs
        if output:
            color = "#b6d7a8"
        if shapes:
            label += "\n" + _shape(tape.shapes[slot])
        if kind == "slot" and G is not None and tape.NEED[slot]:
            label += "\ngrad " + _edge_text(tape._slot_value(G, slot))
        texts[n] = ax.text(x, y, label, ha="center", va="center", fontsize=fontsize, zorder=3,
                           gid="node", bbox=dict(boxstyle="round,pad=0.35", fc=color,
                                                 ec="#274e13" if output else "#444444",
                                                 lw=1.8 if output else 1.0))
    producers = tape._producers()
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
    title = tape.summary()
    if G is not None:
        title += "\nedge labels: the gradient flowing back along each edge (|g|: its norm)"
    ax.set_title(title, fontsize=fontsize)
    return fig
