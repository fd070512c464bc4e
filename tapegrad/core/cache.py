"""The code cache: generated modules are real files (numba caches only functions defined in
files), named by a hash of everything their compiled code depends on, so that numba's on-disk
cache (keyed by the file) can never serve code compiled from older sources or options."""
import hashlib
import importlib.util
import inspect
import os
import sys
import tempfile
import threading


def cache_dir():
    """A writable directory for generated code: $TAPEGRAD_CACHE_DIR, the user cache, or a
    temporary directory."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    for path in (os.environ.get("TAPEGRAD_CACHE_DIR"), os.path.join(base, "tapegrad")):
        if not path:
            continue
        try:
            os.makedirs(path, exist_ok=True)
            probe = os.path.join(path, f".probe-{os.getpid()}")
            with open(probe, "w"):
                pass
            os.remove(probe)
            return path
        except OSError:
            continue
    return tempfile.mkdtemp(prefix="tapegrad-")


def digest(*parts):
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


def salt():
    """What compiled code depends on besides its source: numba's version and our jit options."""
    import numba
    from . import jit
    return inspect.getsource(jit) + numba.__version__


_materializing = threading.RLock()     # re-entrant: a module that materializes another


def materialize(name, source):
    """Import `source` as the module `tapegrad.<name>`, from a file in the cache directory.

    One thread at a time: a module is in sys.modules while it executes, and another thread must
    not take it half made."""
    with _materializing:
        return _materialize_locked(name, source)


def _materialize_locked(name, source):
    modname = f"tapegrad.{name}"
    if modname in sys.modules:
        return sys.modules[modname]
    path = os.path.join(cache_dir(), f"{name}.py")
    if not os.path.exists(path):
        tmp = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"    # per process and thread
        with open(tmp, "w") as fh:
            fh.write(source)
        os.replace(tmp, path)
    spec = importlib.util.spec_from_file_location(modname, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[modname] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[modname]
        raise
    return module


def copy_module(module, prefix):
    """Import a copy of `module` as `tapegrad._gen_<prefix>_<hash of its source>`: a generated
    module that imports the copy recompiles whenever the copied source changes (a cached caller
    does not notice that a callee in another module changed)."""
    source = inspect.getsource(module).replace("from .jit import jit",
                                               "from tapegrad.core.jit import jit")
    return materialize(f"_gen_{prefix}_{digest(source, salt())}", source)
