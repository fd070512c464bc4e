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
    return _beside_flat("first", "load_first")


def program_sweeps():
    """The generated module with the program sweeps `forward` and `backward` (`core.programs`),
    loaded at the first tape that takes a program."""
    return _beside_flat("programs", "load_programs")


def _beside_flat(key, loader):
    """The module that `core.codegen.<loader>` makes for the flat interpreters, loaded once."""
    module = _modules.get(key)
    if module is None:
        flat = interpreters()
        with _lock:
            module = _modules.get(key)
            if module is None:
                from . import codegen
                module = _modules[key] = getattr(codegen, loader)(flat)
    return module
