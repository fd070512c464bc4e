"""The code cache: generated modules are real files (numba caches only functions defined in
files), named by a hash of everything their compiled code depends on, so that numba's on-disk
cache (keyed by the file) can never serve code compiled from older sources or options.

The cache is bounded. Every version of the package generates its own interpreter modules (a few
hundred megabytes of numba's compiled code with them), and every fused or compiled tape a
module of its own, so an unbounded directory only grows. When a new module is written, and the
directory with numba's files of its modules holds more than $TAPEGRAD_CACHE_LIMIT_MB
(`DEFAULT_LIMIT_MB` when unset), the modules used least recently are deleted with their
compiled code until it holds three quarters of that (`prune`). A module's use is recorded as
its file's access time, set when a process imports it: its modification time stays, since
numba's cache of a file is keyed by its modification time in some of its versions.
"""
import hashlib
import importlib.util
import inspect
import os
import re
import sys
import tempfile
import threading
import time
import warnings

DEFAULT_LIMIT_MB = 1024
_PRUNE_EVERY_S = 60.0      # a process that writes many modules lists the directory this seldom


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
    """What compiled code depends on besides its source: numba's version, our jit options and
    the layout of the cache's entries."""
    import numba
    from . import jit, numba_cache
    return inspect.getsource(jit) + numba.__version__ + numba_cache.FORMAT


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
        if found is None:
            _prune_now_and_then(directory)
    else:
        _record_use(path)
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


def _record_use(path):
    """Set the access time of `path` to now, its modification time unchanged (see the module's
    docstring): `prune` deletes the modules used least recently."""
    try:
        os.utime(path, ns=(time.time_ns(), os.stat(path).st_mtime_ns))
    except OSError:
        pass


_last_prune = [float("-inf")]


def _prune_now_and_then(directory):
    now = time.monotonic()
    if now - _last_prune[0] < _PRUNE_EVERY_S:
        return
    _last_prune[0] = now
    try:
        prune(directory, limit_bytes())
    except OSError:          # a directory we cannot list or files we cannot delete: kept
        pass


def limit_bytes():
    """The code cache's bound in bytes: $TAPEGRAD_CACHE_LIMIT_MB, or `DEFAULT_LIMIT_MB`;
    0 turns pruning off."""
    text = os.environ.get("TAPEGRAD_CACHE_LIMIT_MB")
    if text is None:
        return DEFAULT_LIMIT_MB << 20
    try:
        mb = float(text)
        if not mb >= 0:
            raise ValueError
    except ValueError:
        warnings.warn(f"tapegrad: TAPEGRAD_CACHE_LIMIT_MB={text!r} is not a number of megabytes "
                      f"(0 or more); using {DEFAULT_LIMIT_MB}", RuntimeWarning, stacklevel=4)
        return DEFAULT_LIMIT_MB << 20
    return int(mb * (1 << 20))


def prune(directory, limit):
    """Delete the generated modules of `directory` used least recently, with numba's compiled
    code of them and the memos that name them, while their files hold more than `limit` bytes,
    down to three quarters of it; returns the names of the modules deleted. A module imported
    by this process is kept. `limit` 0: nothing is deleted."""
    if not limit:
        return []
    groups = {}           # module name -> [bytes, last use, paths]
    memos = []
    for folder in _code_folders(directory):
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            name = entry.name
            stem = name.split(".", 1)[0]
            if stem.startswith("_memo_"):
                memos.append(entry.path)
            if not stem.startswith("_gen_") or not entry.is_file(follow_symlinks=False):
                continue
            st = entry.stat(follow_symlinks=False)
            group = groups.setdefault(stem, [0, 0.0, []])
            group[0] += st.st_size
            used = max(st.st_atime, st.st_mtime) if name == f"{stem}.py" else st.st_mtime
            group[1] = max(group[1], used)
            group[2].append(entry.path)
    total = sum(group[0] for group in groups.values())
    if total <= limit:
        return []
    deleted = []
    for stem, (size, _, paths) in sorted(groups.items(), key=lambda item: item[1][1]):
        if total <= limit * 3 // 4:
            break
        if f"tapegrad.{stem}" in sys.modules:
            continue
        for path in paths:
            try:
                os.remove(path)
            except OSError:
                pass
        total -= size
        deleted.append(stem)
    gone = set(deleted)
    for memo in memos:
        named = _read(memo)
        if named is not None and named.decode("ascii", "replace").strip() in gone:
            try:
                os.remove(memo)
            except OSError:
                pass
    return deleted


def _code_folders(directory):
    """The folders holding the files of `directory`'s modules: itself, its `__pycache__`
    (Python's bytecode, and numba's cache by default) and numba's folder for it under
    $NUMBA_CACHE_DIR when that is set."""
    folders = [directory, os.path.join(directory, "__pycache__")]
    if os.environ.get("NUMBA_CACHE_DIR"):     # (a new module is about to be compiled: numba
        import numba                          # is imported for it anyway)
        from numba.core.caching import UserProvidedCacheLocator
        sub = UserProvidedCacheLocator.get_suitable_cache_subpath(os.path.join(directory, "m.py"))
        folders.append(os.path.join(numba.config.CACHE_DIR or os.environ["NUMBA_CACHE_DIR"],
                                    sub))
    return folders


def _import(modname, path):
    if sys.dont_write_bytecode:
        _write_bytecode(path)
    spec = importlib.util.spec_from_file_location(modname, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[modname] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[modname]
        raise
    return module


def _write_bytecode(path):
    """Write the bytecode of the generated module at `path` where Python will not
    ($PYTHONDONTWRITEBYTECODE, common in containers). That setting is about the user's source
    trees; this is tapegrad's own cache, and an interpreter module is large enough that
    compiling its source costs a tenth of a second in every process. Python checks and reads
    the file as its own (`__pycache__`, the source's size and time), and `_write` removes it
    with the source it was made from."""
    import py_compile
    cached = importlib.util.cache_from_source(path)
    if not os.path.exists(cached):
        try:
            py_compile.compile(path, cfile=cached, doraise=True)
        except (py_compile.PyCompileError, OSError):
            pass            # (imported from the source, as Python would)


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
