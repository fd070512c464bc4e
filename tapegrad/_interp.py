"""The compiled interpreters, generated from the registry and loaded on first use.

Loading is deferred so that `import tapegrad` does not import numba or read its cache.
"""
_module = None


def interpreters():
    """The generated module with `forward`, `backward`, `tangent`, `backward_tangent`."""
    global _module
    if _module is None:
        from ._codegen import load
        _module = load()
    return _module
