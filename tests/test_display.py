"""Displays: tensor reprs, tape tables, statistics, HTML and drawings (their text, not just that
something comes back)."""
import re

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

import tapegrad as tg  # noqa: E402
from tapegrad.inspect.display import GraphTape, TapeStats, brief  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def tutorial_graph():
    """PyTorch's autograd tutorial: out = mean(3 (x + 2)^2), x = ones(2, 2)."""
    x = tg.ones(2, 2, requires_grad=True)
    y = x + 2
    z = y * y * 3
    out = z.mean()
    return x, y, z, out


def rows_of(text):
    """Table rows as lists of cells (split on runs of 2+ spaces), header and title dropped."""
    lines = text.splitlines()
    assert lines[1].split() == [c for c in lines[1].split()]
    return [re.split(r"\s{2,}", line.strip()) for line in lines[2:]]


def header_of(text):
    return text.splitlines()[1].split()


def row_dicts(text):
    """Rows as dicts keyed by column, using the header's column positions."""
    lines = text.splitlines()
    header = lines[1]
    names = header.split()
    starts = [header.index(n) for n in names]
    # right-aligned columns (entry, out) end where their header ends
    out = []
    for line in lines[2:]:
        row = {}
        for k, name in enumerate(names):
            lo = starts[k]
            hi = starts[k + 1] if k + 1 < len(names) else len(line)
            if name in ("entry", "out"):
                lo = starts[k - 1] + len(names[k - 1]) if k else 0
                hi = starts[k] + len(name)
            row[name] = line[lo:hi].strip()
        out.append(row)
    return out


# ---- tensors ----------------------------------------------------------------------------------

def test_tensor_repr_suffixes():
    x = tg.tensor([1.0, 2.0], requires_grad=True)
    assert repr(x) == "tensor([1., 2.], requires_grad=True)"
    assert repr(x * 2) == "tensor([2., 4.], grad_fn=<MulBackward0>)"
    assert repr((x * x).sum()) == "tensor(5., grad_fn=<SumBackward0>)"
    assert repr(x.detach()) == "tensor([1., 2.])"
    with tg.no_grad():
        assert repr(x * 2) == "tensor([2., 4.])"


def test_tensor_repr_suffix_wraps_like_torch():
    """A suffix that does not fit on the last line goes to a new line (PyTorch's rule)."""
    x = tg.tensor(np.linspace(-1.0, 1.0, 12) * 1234.5678, requires_grad=True)
    text = repr(x + 1)
    assert text.endswith("grad_fn=<AddBackward0>)")
    assert "\n       grad_fn=<AddBackward0>)" in text


def test_tensor_repr_matches_torch_through_tensor():
    torch = pytest.importorskip("torch")
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        for values in ([1.0, 2.0], [[1.0, -2.5], [3.25, 0.5]], np.linspace(-3, 3, 12) * 1e3,
                       np.arange(24.0).reshape(2, 3, 4) / 7, 3.5):
            a = np.array(values, np.float64)
            ours = tg.tensor(a, requires_grad=True)
            theirs = torch.tensor(a, requires_grad=True)
            assert repr(ours) == repr(theirs)
            assert repr(ours * 2) == repr(theirs * 2)
            assert repr((ours + 1).sin()) == repr((theirs + 1).sin())
            assert repr(ours.sum()) == repr(theirs.sum())
            assert repr(ours.mean()) == repr(theirs.mean())
    finally:
        torch.set_default_dtype(previous)


def test_tensor_repr_html():
    x = tg.tensor([[1.0, -2.0], [3.0, 0.5]], requires_grad=True)
    html = (x * 2)._repr_html_()
    assert html.startswith("<pre>") and html.endswith("</pre>")
    assert "grad_fn=&lt;MulBackward0&gt;" in html          # escaped, not taken for a tag
    assert "[ 6.,  1.]" in html
    assert "requires_grad=True" in x._repr_html_()
    assert "<" not in tg.tensor([1.0, 2.0])._repr_html_()[5:-6]


def test_next_functions_walk():
    """The recursive print of PyTorch's tutorials works and gives PyTorch's names."""
    def walk(fn, depth=0, lines=None):
        lines = [] if lines is None else lines
        lines.append("  " * depth + ("None" if fn is None else fn.name()))
        if fn is not None:
            for child, index in fn.next_functions:
                assert index == 0
                walk(child, depth + 1, lines)
        return lines

    x, y, z, out = tutorial_graph()
    lines = walk(out.grad_fn)
    assert lines == ["MeanBackward0", "  MulBackward0", "    MulBackward0",
                     "      AddBackward0", "        torch::autograd::AccumulateGrad",
                     "        None",
                     "      AddBackward0", "        torch::autograd::AccumulateGrad",
                     "        None",
                     "    None"]
    acc = out.grad_fn.next_functions[0][0].next_functions[0][0].next_functions[0][0] \
        .next_functions[0][0]
    assert acc.variable is x
    torch = pytest.importorskip("torch")
    tx = torch.ones(2, 2, requires_grad=True)
    ty = tx + 2
    assert walk(((ty * ty) * 3).mean().grad_fn) == lines


# ---- tables -----------------------------------------------------------------------------------

def test_graph_tape_table_text():
    x, y, z, out = tutorial_graph()
    tape = out.tape
    assert isinstance(tape, GraphTape)
    text = str(tape)
    assert text.splitlines()[0] == ("GraphTape: 4 entries, 5 slots, 17 values (float64), "
                                    "1 input, 1 output, 0 guards")
    assert header_of(text) == ["entry", "op", "operands", "out", "shape", "attributes", "note"]
    rows = row_dicts(text)
    assert [(r["entry"], r["op"], r["operands"], r["out"], r["shape"]) for r in rows] == [
        ("", "leaf", "", "0", "(2, 2)"),
        ("0", "add_const", "0", "1", "(2, 2)"),
        ("1", "mul", "1, 1", "2", "(2, 2)"),
        ("2", "mul_const", "2", "3", "(2, 2)"),
        ("3", "total", "3", "4", "()")]
    assert [r["attributes"] for r in rows] == ["", "c0=2", "", "c0=3", "c0=0.25"]
    assert [r["note"] for r in rows] == ["x", "AddBackward0", "MulBackward0", "MulBackward0",
                                         "MeanBackward0, output"]
    assert tape.table() == text


def test_table_values_and_adjoints():
    x, y, z, out = tutorial_graph()
    text = out.tape.table(values=True, adjoints=True)
    assert header_of(text) == ["entry", "op", "operands", "out", "shape", "attributes", "value",
                               "adjoint", "note"]
    rows = row_dicts(text)
    assert [r["value"] for r in rows] == ["[1, 1, 1, 1]", "[3, 3, 3, 3]", "[9, 9, 9, 9]",
                                          "[27, 27, 27, 27]", "27"]
    assert [r["adjoint"] for r in rows] == ["[4.5, 4.5, 4.5, 4.5]", "[4.5, 4.5, 4.5, 4.5]",
                                            "[0.75, 0.75, 0.75, 0.75]",
                                            "[0.25, 0.25, 0.25, 0.25]", "1"]
    assert x.grad is None                      # displays never touch .grad


def test_traced_tape_table_matches_arrays():
    def f(x, y):
        return (tg.sin(x) * y).sum()

    tape = tg.trace(f, np.array([0.5, 1.0, 2.0]), np.array([1.0, 2.0, 3.0]))
    text = tape.table()
    assert text.splitlines()[0].startswith(f"Tape: {len(tape)} entries, {len(tape.S)} slots")
    rows = row_dicts(text)
    inputs = [r for r in rows if r["op"] == "input"]
    assert [(r["out"], r["shape"], r["note"]) for r in inputs] == [
        ("0", "(3,)", "x0"), ("1", "(3,)", "x1")]
    entries = [r for r in rows if r["entry"]]
    assert len(entries) == len(tape)
    for e, r in enumerate(entries):
        assert r["entry"] == str(e)
        assert r["op"] == tape.prims[e].name
        assert r["operands"] == ", ".join(str(s) for s in tape.E[e, 1:4] if s >= 0)
        assert r["out"] == str(tape.E[e, 4])
    ops = [r["op"] for r in entries]
    assert "sin" in ops and "mul" in ops
    assert entries[-1]["note"] == "output"
    assert entries[-1]["shape"] == "()"
    assert str(tape) == text


def test_traced_tape_values_follow_the_last_replay():
    def f(x):
        return (x * x).sum()

    tape = tg.trace(f, np.array([1.0, 2.0]))
    assert row_dicts(tape.table(values=True))[-1]["value"] == "5"      # trace-time values
    assert tape(np.array([3.0, 4.0])) == 25.0
    rows = row_dicts(tape.table(values=True, adjoints=True))
    assert rows[-1]["value"] == "25"
    assert rows[0]["value"] == "[3, 4]" and rows[0]["adjoint"] == "[6, 8]"


def test_table_marks_guards_and_constants():
    def f(x):
        if x[0] > 0:
            return (x * 2.0).sum()
        return x.sum()

    tape = tg.trace(f, np.array([0.5, 1.0]))
    rows = row_dicts(tape.table())
    guards = [r for r in rows if "guard" in r["note"]]
    assert len(guards) == 1 and guards[0]["op"] == "gt" and guards[0]["note"] == "guard True"
    consts = [r for r in rows if r["op"] == "const"]
    assert len(consts) == 1 and consts[0]["shape"] == "()"


def test_table_elides_long_tapes():
    def f(x):
        for _ in range(70):
            x = tg.sin(x)
        return x.sum()

    tape = tg.trace(f, np.array([0.1]))
    text = tape.table(max_rows=10)
    lines = text.splitlines()
    assert len(lines) == 2 + 10 + 1
    assert "62 more rows" in text
    assert len(tape.table(max_rows=None).splitlines()) == 2 + 72
    assert "more rows" in tape._repr_html_()


def test_nested_call_entry():
    def inner(x):
        return (x ** 3).sum()

    def f(x):
        return (tg.grad(inner)(x) * x).sum()

    tape = tg.trace(f, np.array([0.5, 2.0]))
    rows = row_dicts(tape.table(adjoints=True))
    call = [r for r in rows if r["op"] == "call"]
    assert call and call[0]["attributes"] == "fn=inner"
    assert rows[0]["adjoint"] == "[2.25, 36]"          # d/dx sum(3 x^3) = 9 x^2
    assert tape.stats()["calls"] == 1


# ---- HTML -------------------------------------------------------------------------------------

def test_html_table():
    x, y, z, out = tutorial_graph()
    html = out.tape._repr_html_()
    assert html.startswith("<table") and html.endswith("</table>")
    assert "<caption" in html and "GraphTape: 4 entries" in html
    assert html.count("<tr") == 1 + 5                         # header + 5 rows
    for op in ("add_const", "mul", "mul_const", "total", "MeanBackward0"):
        assert f">{op}<" in html or f">{op}, output<" in html
    assert "<th>operands</th>" in html and "<th>shape</th>" in html

    def f(x):
        return tg.exp(x).sum()
    tape = tg.trace(f, np.array([1.0, 2.0]))
    html = tape._repr_html_()
    assert "<table" in html and ">exp<" in html and ">total<" in html
    html = tape.table(values=True)._repr_html_()
    assert "<th>value</th>" in html and "10.1" in html     # e + e^2 = 10.107


# ---- statistics -------------------------------------------------------------------------------

def test_stats_of_eager_graph():
    x, y, z, out = tutorial_graph()
    stats = out.tape.stats()
    assert isinstance(stats, TapeStats)
    assert stats["entries"] == 4
    assert stats["ops"] == {"add_const": 1, "mul": 1, "mul_const": 1, "total": 1}
    assert stats["slots"] == 5
    assert stats["values"] == 4 * 4 + 1
    assert (stats["inputs"], stats["input_values"]) == (1, 4)
    assert (stats["outputs"], stats["output_values"]) == (1, 1)
    assert (stats["constants"], stats["guards"], stats["calls"]) == (0, 0, 0)
    assert stats["arrays"] == {"E": 4 * 8 * 8, "FC": 4 * 2 * 8, "IP": 0, "S": 5 * 2 * 8,
                               "NEED": 5 * 8}
    assert stats["tape_bytes"] == 256 + 64 + 80 + 40
    assert stats["value_bytes"] == 17 * 8
    assert stats["bytes"] == stats["tape_bytes"] + stats["value_bytes"]
    assert stats["max_live"] == 2
    text = str(stats)
    assert "GraphTape statistics" in text
    assert re.search(r"entries\s+4\n", text)
    assert re.search(r"values\s+17 \(float64\)", text)
    assert re.search(r"total bytes\s+576", text)
    assert re.search(r"mul_const\s+1", text)
    assert "<table>" in stats._repr_html_() and "mul_const" in stats._repr_html_()


def test_stats_of_traced_function():
    def f(x, y):
        if x[0] > 0:
            return (tg.sin(x) * y).sum() + tg.exp(y).sum()
        return x.sum()

    tape = tg.trace(f, np.array([0.5, 1.0, 2.0]), np.array([1.0, 2.0, 3.0]).astype(np.float32))
    stats = tape.stats()
    assert stats["entries"] == len(tape)
    assert sum(stats["ops"].values()) == len(tape)
    assert stats["ops"]["sin"] == 1 and stats["ops"]["exp"] == 1 and stats["ops"]["gt"] == 1
    assert stats["inputs"] == 2 and stats["input_values"] == 6
    assert stats["outputs"] == 1 and stats["guards"] == 1 and stats["constants"] == 1
    assert stats["slots"] == len(tape.S)
    assert stats["values"] == tape.V0.size == int(tape.S[:, 1].sum())
    assert stats["value_bytes"] == tape.V0.nbytes
    assert stats["tape_bytes"] == sum(a.nbytes for a in (tape.E, tape.FC, tape.IP, tape.S,
                                                          tape.NEED))


# ---- the eager graph as a tape ----------------------------------------------------------------

def test_tape_of_is_read_only_and_equals_tensor_tape():
    x, y, z, out = tutorial_graph()
    a, b = tg.tape_of(out), out.tape
    assert str(a) == str(b)
    assert repr(a).startswith("<tapegrad.GraphTape: 4 entries, 5 slots, 17 values (float64)")
    with pytest.raises(AttributeError):
        a.E = None
    with pytest.raises(ValueError):
        a.E[0, 0] = 1
    assert a.slot_of(y) == 1 and np.array_equal(a.value(y), np.full((2, 2), 3.0))
    assert np.array_equal(a.adjoint(y), np.full((2, 2), 4.5))
    assert np.array_equal(a.adjoint(z), np.full((2, 2), 0.25))
    assert x.grad is None


def test_tape_of_several_outputs_and_seed():
    x = tg.tensor([1.0, 2.0, 3.0], requires_grad=True)
    y = x * 2
    tape = tg.tape_of(y, (x * x).sum())
    assert len(tape.output_slots) == 2
    rows = row_dicts(str(tape))
    assert [r["note"] for r in rows if "output" in r["note"]] == ["MulBackward0, output 0",
                                                                  "SumBackward0, output 1"]
    # y.backward(v) as a VJP: the tape's seed is v for y (and 0 for the sum)
    v = np.array([0.1, 1.0, 0.0001])
    single = y.tape.backward(v)
    assert np.allclose(single.adjoint(x), 2 * v)
    assert row_dicts(single.table(adjoints=True))[0]["adjoint"] == "[0.2, 2, 0.0002]"
    both = tape.adjoints(seed=(v, np.array(1.0)))
    assert np.allclose(tape._slot_value(both, tape.slot_of(x)), 2 * v + 2 * x.data)


def test_graph_of_a_leaf():
    x = tg.tensor([1.0, 2.0], requires_grad=True)
    tape = x.tape
    assert len(tape) == 0
    assert row_dicts(str(tape))[0]["note"] == "x, output"
    assert len(_node_texts(tape.draw())) == 1


# ---- drawings ---------------------------------------------------------------------------------

def _node_texts(fig):
    return [t.get_text() for t in fig.axes[0].texts if t.get_gid() == "node"]


def _grad_texts(fig):
    return [t.get_text() for t in fig.axes[0].texts if t.get_gid() == "grad"]


def test_draw_eager_graph_before_and_after_backward():
    x, y, z, out = tutorial_graph()
    fig = out.tape.draw()
    assert isinstance(fig, Figure)
    nodes = _node_texts(fig)
    assert sorted(n.split("\n")[0] for n in nodes) == sorted(
        ["x", "AddBackward0", "MulBackward0", "MulBackward0", "MeanBackward0"])
    assert "MeanBackward0\n()" in nodes and "x\n(2, 2)" in nodes
    assert _grad_texts(fig) == []                            # no backward yet
    out.backward()
    fig = out.tape.draw()
    assert "x\n(2, 2)\ngrad |g|=9" in _node_texts(fig)
    assert sorted(_grad_texts(fig)) == sorted(["|g|=9", "|g|=9", "|g|=1.5", "|g|=0.5"])
    fig = out.tape.draw(grads=False, shapes=False)
    assert sorted(_node_texts(fig)) == sorted(["x", "AddBackward0", "MulBackward0",
                                               "MulBackward0", "MeanBackward0"])
    assert _grad_texts(fig) == []
    fig.savefig(__import__("io").BytesIO(), format="png")   # renders (arrow clipping included)


def test_draw_traced_tape_with_gradients():
    def f(x):
        return (x[0] - 1.0) ** 2 + 100.0 * (x[1] - x[0] ** 2) ** 2

    tape = tg.trace(f, np.array([0.5, 0.5]))
    fig = tape.draw(input_names=["x"])
    nodes = _node_texts(fig)
    assert len(nodes) == len(tape) + 1
    assert "x\n(2,)" in nodes
    ops = [n.split("\n")[0].split(" ")[0] for n in nodes if not n.startswith("x")]
    assert sorted(ops) == sorted(p.name for p in tape.prims)
    assert _grad_texts(fig) == []                            # not replayed yet
    tape.gradient(np.array([0.5, 0.5]))
    fig = tape.draw()
    grads = _grad_texts(fig)
    n_edges = sum(len(set(tape.operands(e))) for e in range(len(tape)))
    assert len(grads) == n_edges
    assert "x\n(2,)\ngrad |g|=" + brief(np.linalg.norm([-51.0, 50.0])) in _node_texts(fig)
    # the output's incoming edges carry d(out)/d(out) = 1
    out_entry = len(tape) - 1
    assert {brief(g) for (s, e), g in tape.display().edge_gradients(tape.adjoints()).items()
            if e == out_entry} == {"1"}
    # a given seed scales every edge
    fig = tape.draw(grads=True, seed=np.array(2.0))
    assert "x\n(2,)\ngrad |g|=" + brief(2 * np.linalg.norm([-51.0, 50.0])) in _node_texts(fig)


def test_draw_on_given_axes_and_layers():
    def f(x, y):
        return tg.exp(x * y).sum() + y.sum()

    tape = tg.trace(f, np.array([1.0, 2.0]), np.array([0.5, 0.25]))
    fig, ax = plt.subplots()
    assert tape.draw(ax=ax) is fig
    from tapegrad.inspect.display import layout
    pos, edges = layout(tape)
    depth = {n: p[0] for n, p in pos.items()}
    for (s, e), points in edges.items():
        assert points[-1] == pos[("entry", e)]
        assert all(b[0] - a[0] == 1.0 for a, b in zip(points, points[1:]))   # one layer a step
    assert all(depth[("slot", s)] == 0.0 for s in tape.input_slots)
