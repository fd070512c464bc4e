"""The compiled interpreters, generated from the registry and loaded on first use.

Loading is deferred so that `import tapegrad` does not import numba or read its cache.
"""
_modules = {}


def interpreters(batched=False):
    """The generated module with `forward`, `backward`, `tangent`, `backward_tangent`; the
    batched one (column layout) also has the tile driver `run_tiles`."""
    module = _modules.get(batched)
    if module is None:
        from ._codegen import load
        module = _modules[batched] = load(batched)
    return module
