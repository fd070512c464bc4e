"""The package's layers hold: core <- inspect <- eager <- transforms <- batch.

Each subpackage imports only those before it in that list (docs/design.md, "The package's
layers"), and no two modules import each other, directly or through others. Checked on the
source of every module, imports inside functions included: a deferred import is still a
dependency, and hiding a cycle behind one is how a package's layers dissolve.
"""
import ast
import os
import re

import pytest

import tapegrad

LAYERS = ("core", "inspect", "eager", "transforms", "batch")
PACKAGE = os.path.dirname(tapegrad.__file__)


def _modules():
    """{module name: path} of every module of the package."""
    found = {}
    for dirpath, _, files in os.walk(PACKAGE):
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(dirpath, f)
                rel = os.path.relpath(path, os.path.dirname(PACKAGE))[:-3].replace(os.sep, ".")
                found[rel[:-len(".__init__")] if rel.endswith(".__init__") else rel] = path
    return found


def _imports(name, path, modules):
    """The package's modules that module `name` imports, wherever in its source."""
    package = name if path.endswith("__init__.py") else name.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                candidate = f"{target}.{alias.name}"
                out.add(candidate if candidate in modules else target)
        elif isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
    return {m for m in out if m in modules and m != name}


@pytest.fixture(scope="module")
def graph():
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _layer(module):
    parts = module.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 2 and parts[1] in LAYERS else None


def test_layers_import_only_the_layers_below(graph):
    upward = [f"{m} imports {t}" for m, targets in sorted(graph.items()) for t in sorted(targets)
              if _layer(m) is not None and _layer(t) is not None and _layer(t) > _layer(m)]
    assert not upward, "\n".join(upward)


def test_layers_do_not_import_the_package_front(graph):
    """Modules in a layer never import the package's top-level modules (tapegrad, autograd,
    testing): those are the front, built from the layers."""
    front = {m for m in graph if _layer(m) is None}
    wrong = [f"{m} imports {t}" for m, targets in sorted(graph.items()) if _layer(m) is not None
             for t in sorted(targets & front)]
    assert not wrong, "\n".join(wrong)


def test_no_import_cycles(graph):
    """No two modules reach each other through imports (strongly connected components)."""
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert not cycles, "\n".join(" <-> ".join(c) for c in cycles)


def test_the_checker_sees_a_deferred_upward_import(tmp_path):
    """The parser counts an import inside a function (the way cycles hide)."""
    path = tmp_path / "mod.py"
    path.write_text("def f():\n    from ..batch import vmap\n    return vmap\n")
    modules = {"tapegrad.core.mod": str(path), "tapegrad.batch.vmap": "x"}
    assert _imports("tapegrad.core.mod", str(path), modules) == {"tapegrad.batch.vmap"}


def test_readme_names_every_module():
    """The README's module table names every module; a row naming a directory inside a layer
    (`core/prims/`) counts for its files, a layer's heading row (`core/`) does not."""
    readme = open(os.path.join(os.path.dirname(PACKAGE), "README.md")).read()
    table = readme[readme.index("| module | responsibility |"):]
    named = {name for name in re.findall(r"`([\w/]+(?:\.py|/))`", table)
             if not (name.endswith("/") and name.count("/") == 1)}
    missing = []
    for path in _modules().values():
        rel = os.path.relpath(path, PACKAGE).replace(os.sep, "/")
        if os.path.basename(rel) in ("__init__.py", "__main__.py") and rel.count("/") <= 1:
            continue
        parents = {rel[:i + 1] for i, ch in enumerate(rel) if ch == "/"}
        if rel not in named and not parents & named:
            missing.append(rel)
    assert not missing, f"modules missing from the README's table: {sorted(missing)}"
