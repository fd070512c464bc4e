"""The code cache: generated modules are real files (numba caches only functions defined in
files), named by a hash of everything their compiled code depends on, so that numba's on-disk
cache (keyed by the file) can never serve code compiled from older sources or options."""
import hashlib
import importlib.util
import inspect
import os
import re
import sys
import tempfile
import threading
import warnings


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


materializing = threading.RLock()     # re-entrant: a module that materializes another


def materialize(name, source):
    """Import `source` as the module `tapegrad.<name>`, from a file in the cache directory.

    One thread at a time: a module is in sys.modules while it executes, and another thread
    must not take it half made (hold `materializing` to keep modules from being imported).

    The file is trusted only when it holds exactly `source` (which its name hashes): one read
    and one comparison per module and process. A file edited, truncated or garbled since it
    was written is written again (a RuntimeWarning says so), and so is one whose import fails
    (a damaged bytecode cache), once; if the module still cannot be imported, the error names
    the directory to clear. (This protects against damage, not against someone who can write
    the cache directory: numba's cache files there hold machine code.)"""
    with materializing:
        return _materialize_locked(name, source)


def _materialize_locked(name, source):
    modname = f"tapegrad.{name}"
    if modname in sys.modules:
        return sys.modules[modname]
    directory = cache_dir()
    path = os.path.join(directory, f"{name}.py")
    expected = source.encode("utf-8")
    found = _read(path)
    if found != expected:
        if found is not None:
            warnings.warn(f"tapegrad: the generated module {path} does not hold the code its "
                          "name stands for (edited, truncated or damaged); it was written "
                          "again", RuntimeWarning, stacklevel=3)
        _write(path, expected)
    try:
        return _import(modname, path)
    except Exception as err:   # noqa: BLE001 (a damaged bytecode cache raises anything)
        warnings.warn(f"tapegrad: the generated module {path} could not be imported "
                      f"({type(err).__name__}: {err}); it was written again",
                      RuntimeWarning, stacklevel=3)
        _write(path, expected)
        try:
            return _import(modname, path)
        except Exception as again:   # noqa: BLE001
            raise RuntimeError(f"tapegrad: cannot import the generated module {path} "
                               f"({type(again).__name__}: {again}); delete the directory "
                               f"{directory} (tapegrad's code cache, $TAPEGRAD_CACHE_DIR) and "
                               "try again") from again


def _read(path):
    """The bytes of the file at `path`, or None when it cannot be read."""
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError:
        return None


def _write(path, data):
    """Write `data` to `path` whole or not at all (a temporary file per process and thread,
    then a rename), and drop its compiled bytecode, which may be of the file it replaces
    (Python checks a .pyc by the source's size and mtime in seconds only)."""
    tmp = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
    with open(tmp, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)
    try:
        os.remove(importlib.util.cache_from_source(path))
    except OSError:
        pass


def _import(modname, path):
    spec = importlib.util.spec_from_file_location(modname, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[modname] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[modname]
        raise
    return module


def generated(prefix, key, make_source):
    """The module `tapegrad._gen_<prefix>_<hash of its source>` whose source `make_source()`
    returns, without calling it when an earlier process did for the same `key`.

    Making a generated module's source (compiling every primitive's rules from the kernel
    language) takes longer than importing it from numba's cache, so the source is made once per
    `key`, a digest of everything it is made from: a memo file `_memo_<prefix>_<key>` names
    the module. The named file is trusted only when its content hashes to its name (the check
    `materialize` makes by comparing with the source); otherwise the source is made again."""
    directory = cache_dir()
    memo = os.path.join(directory, f"_memo_{prefix}_{key}")
    remembered = _read(memo)
    if remembered is not None:
        name = remembered.decode("ascii", "replace").strip()
        if re.fullmatch(rf"_gen_{re.escape(prefix)}_[0-9a-f]{{16}}", name):
            found = _read(os.path.join(directory, f"{name}.py"))
            try:
                source = None if found is None else found.decode("utf-8")
            except UnicodeDecodeError:
                source = None
            if source is not None and f"_gen_{prefix}_{digest(source, salt())}" == name:
                return materialize(name, source)
    source = make_source()
    name = f"_gen_{prefix}_{digest(source, salt())}"
    module = materialize(name, source)
    _write(memo, name.encode("ascii"))
    return module


def copy_module(module, prefix):
    """Import a copy of `module` as `tapegrad._gen_<prefix>_<hash of its source>`: a generated
    module that imports the copy recompiles whenever the copied source changes (a cached caller
    does not notice that a callee in another module changed)."""
    source = inspect.getsource(module).replace("from .jit import jit",
                                               "from tapegrad.core.jit import jit")
    return materialize(f"_gen_{prefix}_{digest(source, salt())}", source)
