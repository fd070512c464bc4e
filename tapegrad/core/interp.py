"""The compiled interpreters, generated from the registry and loaded on first use.

Loading is deferred so that `import tapegrad` does not import numba or read its cache. It is
locked: threads that need the interpreters at once wait for one load (a generated module is
visible in `sys.modules` before it has finished executing).
"""
import threading

_modules = {}
_lock = threading.Lock()


def interpreters(batched=False):
    """The generated module with `forward`, `backward`, `tangent`, `backward_tangent`; the
    batched one (column layout) also has the tile driver `run_tiles`."""
    module = _modules.get(batched)
    if module is None:
        with _lock:
            module = _modules.get(batched)
            if module is None:
                from .codegen import load
                module = _modules[batched] = load(batched)
    return module


def reverse_first():
    """The generated module with `backward_first` (see _codegen), loaded at its first use: kept
    out of the flat interpreters, which every process's first gradient loads."""
    module = _modules.get("first")
    if module is None:
        flat = interpreters()
        with _lock:
            module = _modules.get("first")
            if module is None:
                from .codegen import load_first
                module = _modules["first"] = load_first(flat)
    return module
