"""docs/numpy.md's table of supported numpy functions is generated from the registry of
`tapegrad.eager.numpy_api` (each `implements` carries what the table says: `Support`).

`test_doc_and_registry_agree` fails when the table is stale; regenerate it with
`python tests/test_numpy_doc.py`.
"""
import os
import sys

import numpy as np

import tapegrad  # noqa: F401  (fills the registry)
from tapegrad.eager.numpy_api import registry

DOC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs",
                   "numpy.md")
START, END = "<!-- numpy-table:start -->", "<!-- numpy-table:end -->"


def _name(function):
    """numpy's public name of a registered function: `numpy.sum`, `numpy.linalg.solve`."""
    module = "numpy" if isinstance(function, np.ufunc) else function.__module__ or "numpy"
    return f"{module}.{function.__name__}"


def _modes(support):
    if not support.differentiable:
        return "no derivative: passes through (zero gradient)"
    return "VJP, JVP, second order"


def _batched(support):
    tiers = ["interpreter"] + (["fused"] if support.fused else []) + \
        (["CUDA"] if support.cuda else [])
    return ", ".join(tiers)


def _cell(text):
    return text.replace("|", "\\|").replace("\n", " ")


def render():
    rows = sorted((_name(f), f, s) for f, s in registry.SUPPORT.items())
    lines = ["| function | kind | derivatives | batched (vmap) | notes |",
             "| --- | --- | --- | --- | --- |"]
    for name, function, support in rows:
        kind = "ufunc" if isinstance(function, np.ufunc) else "function"
        lines.append(f"| `{name}` | {kind} | {_modes(support)} | {_batched(support)} | "
                     f"{_cell(support.notes)} |")
    return "\n".join(lines)


def _table(text):
    return text[text.index(START) + len(START):text.index(END)].strip()


def test_doc_and_registry_agree():
    with open(DOC) as fh:
        table = _table(fh.read())
    assert table == render(), "docs/numpy.md is stale: run `python tests/test_numpy_doc.py`"


def test_every_registered_function_has_a_row():
    assert render().count("\n| `numpy.") == len(registry.SUPPORT)


if __name__ == "__main__":      # rewrite the table in docs/numpy.md
    with open(DOC) as fh:
        text = fh.read()
    head, rest = text.split(START)
    _, tail = rest.split(END)
    with open(DOC, "w") as fh:
        fh.write(head + START + "\n" + render() + "\n" + END + tail)
    sys.exit(0)
