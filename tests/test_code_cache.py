"""The code cache recovers from damage: no damaged file breaks later processes.

* A generated module (`core.cache.materialize`, `_gen_*_<hash>.py` in $TAPEGRAD_CACHE_DIR) is
  imported only when it holds exactly the code its name stands for: code appended to it never
  runs, and a garbled, truncated or emptied file is written again (RuntimeWarning).
* A generated module whose bytecode cache is damaged is written again and imported.
* A later process imports a generated module without making its source again: a memo file
  (`_memo_<kind>_<digest of the generator's inputs>`) names it; a memo that is damaged or names
  a module whose file does not hash to its name makes the source again.
* numba's cache files (`.nbi` index, `.nbc` data) of generated modules and of tapegrad's own
  njit modules that cannot be read back are cleared and the function compiled again
  (RuntimeWarning); where that is impossible, the message names the directory to clear. An
  entry changed by one bit, which still unpickles, fails its checksum and is treated so too.
* A cache hit loads machine code alone (`core.numba_cache`): numba's context is not refreshed
  and the bitcode is parsed only when a function compiled later links the loaded one; a fresh
  process's first gradient does not import scipy.linalg. Entries written numba's way (where
  the fast load is unavailable) still load.

Every test damages files in private directories (TAPEGRAD_CACHE_DIR and NUMBA_CACHE_DIR set to
a tmp_path), in fresh processes: the shared cache is never damaged (the first-gradient test
reads it, and warms it where it is cold).
"""
import glob
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import tapegrad

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(tapegrad.__file__)))   # the code under test


def run(code, cache, timeout=600):
    """Run `code` in a fresh interpreter whose caches live under `cache`; (rc, output)."""
    env = dict(os.environ, PYTHONPATH=ROOT, TAPEGRAD_CACHE_DIR=str(cache / "tapegrad"),
               NUMBA_CACHE_DIR=str(cache / "numba"), PYTHONWARNINGS="default")
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=timeout, env=env, cwd=ROOT)
    return done.returncode, done.stdout + done.stderr


# ---- generated modules ---------------------------------------------------------------------

_LOAD = '''
import sys
from tapegrad.core import codegen as _codegen
m = _codegen.load()
print("loaded", m.__name__, callable(m.forward), callable(m.backward_tangent))
'''


def _interp_file(cache):
    """The generated flat interpreter module (not its kernels) in the private cache."""
    files = [f for f in glob.glob(str(cache / "tapegrad" / "_gen_interp_*.py"))
             if "_kernels_" not in f]
    assert len(files) == 1, files
    return files[0]


@pytest.fixture
def generated(tmp_path):
    """A private cache holding the generated interpreter modules (imported, not compiled)."""
    code, out = run(_LOAD, tmp_path)
    assert code == 0 and "loaded" in out, out
    return tmp_path


def test_code_appended_to_a_generated_module_never_runs(generated):
    path = _interp_file(generated)
    with open(path) as fh:
        original = fh.read()
    mark = generated / "ran"
    with open(path, "a") as fh:
        fh.write(f"\nopen({str(mark)!r}, 'w').write('appended code ran')\n")
    code, out = run(_LOAD, generated)
    assert code == 0 and "loaded tapegrad._gen_interp_" in out, out
    assert not mark.exists()
    assert "does not hold the code its name stands for" in out and "RuntimeWarning" in out, out
    with open(path) as fh:
        assert fh.read() == original


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_damaged_generated_modules_are_written_again(generated, damage):
    path = _interp_file(generated)
    with open(path, "rb") as fh:
        original = fh.read()
    with open(path, "wb") as fh:
        fh.write({"garbage": b"\x00\xff def (((\n" * 50, "truncated": original[:len(original) // 2],
                  "empty": b""}[damage])
    code, out = run(_LOAD, generated)
    assert code == 0 and "loaded tapegrad._gen_interp_" in out and "True True" in out, out
    assert "RuntimeWarning" in out, out
    with open(path, "rb") as fh:
        assert fh.read() == original
    code, out = run(_LOAD, generated)            # recovered for good: no warning any more
    assert code == 0 and "Warning" not in out, out


_LOAD_WITHOUT_GENERATING = '''
from tapegrad.core import codegen as _codegen
def refuse(*args):
    raise AssertionError("the source was made again")
_codegen.generate = _codegen.generate_first = refuse
m = _codegen.load()
print("loaded", m.__name__, callable(m.forward))
'''


def _memo(cache):
    files = glob.glob(str(cache / "tapegrad" / "_memo_interp_*"))
    assert len(files) == 1, files
    return files[0]


def test_a_later_process_imports_without_making_the_source(generated):
    with open(_memo(generated), "rb") as fh:
        assert fh.read().decode() == os.path.basename(_interp_file(generated))[:-3]
    code, out = run(_LOAD_WITHOUT_GENERATING, generated)
    assert code == 0 and "loaded tapegrad._gen_interp_" in out and "Warning" not in out, out


@pytest.mark.parametrize("damage", ["garbage", "another name", "a missing module", "empty"])
def test_a_damaged_memo_makes_the_source_again(generated, damage):
    memo = _memo(generated)
    with open(memo, "rb") as fh:
        name = fh.read()
    with open(memo, "wb") as fh:
        fh.write({"garbage": b"\x00\xff../../etc/passwd", "empty": b"",
                  "another name": b"_gen_interp_0123456789abcdef",
                  "a missing module": name}[damage])
    if damage == "a missing module":
        os.remove(_interp_file(generated))
    code, out = run(_LOAD_WITHOUT_GENERATING, generated)
    assert code != 0 and "the source was made again" in out, out
    code, out = run(_LOAD, generated)
    assert code == 0 and "loaded tapegrad._gen_interp_" in out and "True True" in out, out
    with open(memo, "rb") as fh:
        assert fh.read() == name                 # remembered again
    code, out = run(_LOAD_WITHOUT_GENERATING, generated)
    assert code == 0 and "loaded" in out and "Warning" not in out, out


def test_a_module_edited_behind_its_memo_is_made_again(generated):
    """The memo names a module; the module's file is trusted only if it hashes to its name."""
    path = _interp_file(generated)
    with open(path, "a") as fh:
        fh.write("\nraise SystemExit('edited code ran')\n")
    code, out = run(_LOAD_WITHOUT_GENERATING, generated)
    assert code != 0 and "the source was made again" in out and "edited code ran" not in out, out
    code, out = run(_LOAD, generated)
    assert code == 0 and "loaded" in out and "edited code ran" not in out, out


def test_damaged_bytecode_of_a_generated_module_is_recompiled(generated):
    import importlib.util
    pyc = importlib.util.cache_from_source(_interp_file(generated))
    if not os.path.exists(pyc):
        pytest.skip("Python wrote no bytecode here")
    with open(pyc, "r+b") as fh:              # a valid header (the source's mtime and size)
        fh.seek(16)
        fh.write(b"\xff" * 64)
        fh.truncate()
    code, out = run(_LOAD, generated)
    assert code == 0 and "loaded tapegrad._gen_interp_" in out, out
    assert "could not be imported" in out and "it was written again" in out, out


def test_a_module_that_cannot_be_imported_names_the_directory(tmp_path, monkeypatch):
    from tapegrad.core import cache
    monkeypatch.setattr(cache, "cache_dir", lambda: str(tmp_path))
    with pytest.warns(RuntimeWarning, match="could not be imported"):
        with pytest.raises(RuntimeError, match=f"delete the directory {tmp_path}"):
            cache.materialize("_gen_never_imports", "raise ValueError('broken')\n")
    assert "tapegrad._gen_never_imports" not in sys.modules


# ---- numba's cache files ---------------------------------------------------------------------

_CALL = {
    # a function of a generated module (materialized from source in the code cache)
    "generated": '''
        from tapegrad.core import cache
        m = cache.materialize("_gen_cache_probe",
                                  "from tapegrad.core.jit import jit\\n\\n\\n@jit\\n"
                                  "def twice(x):\\n    return 2.0 * x + 1.0\\n")
        fn, expected = m.twice, 2.0 * 0.75 + 1.0
    ''',
    # a function of tapegrad's own njit modules
    "own": '''
        import math
        from tapegrad.core import vecmath as _vecmath
        fn, expected = _vecmath.exp, math.exp(0.75)
    ''',
}


def _call(which):
    return textwrap.dedent(_CALL[which]) + textwrap.dedent('''
        got = fn(0.75)
        assert abs(got - expected) <= 1e-15 * abs(expected), (got, expected)
        print("result ok; cache hits", sum(fn.stats.cache_hits.values()))
    ''')


def _damage(path, how):
    with open(path, "rb") as fh:
        data = fh.read()
    with open(path, "wb") as fh:
        middle = len(data) // 2
        fh.write({"garbage": b"\x80\x04garbage" + bytes(range(256)),
                  "truncated": data[:len(data) // 2],
                  "flipped": data[:-40] + bytes(b ^ 0x5A for b in data[-40:]),
                  # one bit inside the entry, which still unpickles: numba would run it
                  "one bit": data[:middle] + bytes([data[middle] ^ 1]) + data[middle + 1:],
                  }[how])


@pytest.mark.parametrize("which, kind, how", [
    ("generated", "nbi", "garbage"), ("generated", "nbi", "truncated"),
    ("generated", "nbc", "truncated"), ("generated", "nbc", "flipped"),
    ("generated", "nbc", "one bit"),
    ("own", "nbi", "truncated"), ("own", "nbc", "garbage"), ("own", "nbc", "one bit")])
def test_unreadable_numba_cache_files_are_cleared(tmp_path, which, kind, how):
    code, out = run(_call(which), tmp_path)
    assert code == 0 and "result ok; cache hits 0" in out, out
    name = "twice" if which == "generated" else "exp"
    files = glob.glob(str(tmp_path / "numba" / "**" / f"*.{name}-*.{kind}"), recursive=True)
    assert len(files) == 1, files
    _damage(files[0], how)
    code, out = run(_call(which), tmp_path)
    assert code == 0 and "result ok" in out, out
    assert "could not be read" in out and "RuntimeWarning" in out, out
    code, out = run(_call(which), tmp_path)         # recompiled and cached again
    assert code == 0 and "result ok; cache hits 1" in out and "Warning" not in out, out


def test_a_cache_that_cannot_be_rewritten_names_the_directory(tmp_path):
    code, out = run(_call("generated"), tmp_path)
    assert code == 0, out
    index, = glob.glob(str(tmp_path / "numba" / "**" / "*.twice-*.nbi"), recursive=True)
    _damage(index, "garbage")
    refuse = '''
        from numba.core import caching
        def flush(self):
            raise PermissionError("read-only file system")
        caching.Cache.flush = flush
    '''
    code, out = run(textwrap.dedent(refuse) + _call("generated"), tmp_path)
    assert code == 0 and "result ok" in out, out
    assert "nor rewritten" in out and f"Delete the directory {os.path.dirname(index)}" in out, out


# ---- loading from numba's cache ------------------------------------------------------------

_LINKED = '''
    import sys
    from tapegrad.core import cache
    m = cache.materialize("_gen_cache_link", "from tapegrad.core.jit import jit\\n\\n\\n@jit\\n"
                          "def twice(x):\\n    return 2.0 * x + 1.0\\n\\n\\n@jit\\n"
                          "def caller(x):\\n    return twice(x) * 3.0\\n")
    got = m.twice(0.75)
    refreshed = "numba.np.polynomial" in sys.modules     # imported by numba's context refresh
    library = type(m.twice.overloads[m.twice.signatures[0]].library).__name__
    print("twice", got, "hits", sum(m.twice.stats.cache_hits.values()), "refreshed", refreshed,
          "library", library)
    print("caller", m.caller(0.75), "hits", sum(m.caller.stats.cache_hits.values()))
'''


def test_a_cache_hit_loads_the_machine_code_and_links_its_bitcode_on_demand(tmp_path):
    """A hit neither refreshes numba's target context nor parses the entry's bitcode; a function
    compiled later that calls the loaded one links it (its bitcode parsed then) and runs."""
    code, out = run(_LINKED, tmp_path)
    assert code == 0 and "twice 2.5 hits 0" in out and "caller 7.5 hits 0" in out, out
    callers = glob.glob(str(tmp_path / "numba" / "**" / "*.caller-*"), recursive=True)
    assert callers, out
    for path in callers:
        os.remove(path)
    code, out = run(_LINKED, tmp_path)                  # twice loaded, caller compiled
    assert code == 0 and "caller 7.5 hits 0" in out, out
    assert "twice 2.5 hits 1 refreshed False library BitcodeOnDemand" in out, out
    code, out = run(_LINKED, tmp_path)
    assert code == 0 and "twice 2.5 hits 1" in out and "caller 7.5 hits 1" in out, out
    assert "Warning" not in out, out


def test_entries_written_the_way_numba_writes_them_still_load(tmp_path):
    """Where the fast load is unavailable (a numba without the internals it uses), entries are
    written numba's way; a later process with it loads them numba's way."""
    plain = "from tapegrad.core import numba_cache\nnumba_cache._supported[:] = [False]\n"
    code, out = run(plain + textwrap.dedent(_LINKED), tmp_path)
    assert code == 0 and "twice 2.5 hits 0" in out and "caller 7.5 hits 0" in out, out
    code, out = run(_LINKED, tmp_path)
    assert code == 0 and "twice 2.5 hits 1" in out and "caller 7.5 hits 1" in out, out
    assert "library JITCodeLibrary" in out and "Warning" not in out, out


_FIRST_GRADIENT = '''
    import sys
    import numpy as np
    import tapegrad as tg
    x = np.linspace(0.5, 1.5, 4)
    g = tg.grad(lambda x: np.sum(np.tanh(x) ** 2 * x[::-1]))(x)
    t = np.tanh(x)
    want = 2 * t * (1 - t * t) * x[::-1] + (t * t)[::-1]
    print("gradient ok", np.allclose(g, want, rtol=1e-14, atol=0),
          "scipy.linalg imported", "scipy.linalg" in sys.modules)
    a = np.array([[2.0, 0.5, 0.1], [0.5, 1.0, 0.2], [0.1, 0.2, 3.0]])
    e = tg.grad(lambda a: np.sum(np.linalg.eigvalsh(a) ** 2))    # traced, then replayed: the
    print("eigvalsh", e(a).tolist(), e(a + 0.25).tolist())         # replay calls LAPACK's syevd
'''


def test_a_first_gradient_loads_no_more_than_it_runs():
    """A fresh process's first gradient from a warm cache (the shared one: the first run warms
    it where it is cold) does not import scipy.linalg, which numba's array reductions and LAPACK
    bindings import (a tenth of a second): the LAPACK helpers import it when they first run,
    as the replayed eigvalsh gradient shows."""
    env = dict(os.environ, PYTHONPATH=ROOT, PYTHONWARNINGS="default")
    for _ in range(2):
        done = subprocess.run([sys.executable, "-c", textwrap.dedent(_FIRST_GRADIENT)],
                              capture_output=True, text=True, timeout=1800, env=env, cwd=ROOT)
        out = done.stdout + done.stderr
        assert done.returncode == 0 and "gradient ok True" in out, out
    assert "scipy.linalg imported False" in out, out
    a = np.array([[2.0, 0.5, 0.1], [0.5, 1.0, 0.2], [0.1, 0.2, 3.0]])
    e = tapegrad.grad(lambda a: np.sum(np.linalg.eigvalsh(a) ** 2))   # in this process
    assert f"eigvalsh {e(a).tolist()} {e(a + 0.25).tolist()}" in out, out


def test_only_the_interpreters_have_disk_caches():
    """The kernels are compiled into the interpreters that call them (whose cache entries hold
    their code): no cache of their own, which every importing process would probe."""
    from numba.core.caching import NullCache
    from numba.core.dispatcher import Dispatcher
    from tapegrad.core.interp import interpreters
    module = interpreters()
    dispatchers = {name: value for name, value in vars(module).items()
                   if isinstance(value, Dispatcher)}
    cached = sorted(name for name, d in dispatchers.items() if not isinstance(d._cache, NullCache))
    assert {"forward", "backward", "tangent", "backward_tangent"} <= set(cached), cached
    assert len(cached) < 12 and len(dispatchers) > 300, (cached, len(dispatchers))


# ---- the bound on the cache's size ---------------------------------------------------------

def _fake_module(directory, stem, size, used):
    """A generated module's files as the cache holds them: the source, its bytecode and numba's
    index and data, `size` bytes in all, last used (imported) at `used`, compiled before."""
    pycache = directory / "__pycache__"
    pycache.mkdir(exist_ok=True)
    paths = [directory / f"{stem}.py", pycache / f"{stem}.cpython-311.pyc",
             pycache / f"{stem}.kernel-12.py311.nbi", pycache / f"{stem}.kernel-12.py311.1.nbc"]
    for path in paths:
        path.write_bytes(b"x" * (size // len(paths)))
        os.utime(path, (used - 100, used - 100))
    os.utime(paths[0], (used, used - 100))           # imported at `used`, written before
    return paths


def test_the_code_cache_deletes_the_modules_used_least_recently(tmp_path, monkeypatch):
    from tapegrad.core import cache
    now = 1.8e9
    files = {stem: _fake_module(tmp_path, stem, 4000, now - age) for stem, age in
             [("_gen_interp_" + "a" * 16, 50), ("_gen_fused_" + "b" * 16, 400),
              ("_gen_fused_" + "c" * 16, 300), ("_gen_interp_" + "d" * 16, 200),
              ("_gen_fused_" + "e" * 16, 900)]}
    (tmp_path / ("_memo_interp_" + "1" * 16)).write_text("_gen_interp_" + "d" * 16)
    (tmp_path / ("_memo_interp_" + "2" * 16)).write_text("_gen_interp_" + "a" * 16)
    (tmp_path / "unrelated.txt").write_bytes(b"y" * 50_000)
    assert cache.prune(str(tmp_path), 0) == []                       # 0: no bound
    assert cache.prune(str(tmp_path), 20_000) == []                  # within the bound
    loaded = "tapegrad._gen_fused_" + "e" * 16                       # oldest, but imported here
    monkeypatch.setitem(sys.modules, loaded, object())
    deleted = cache.prune(str(tmp_path), 12_000)                     # keep 9,000 bytes of 20,000
    assert deleted == ["_gen_fused_" + "b" * 16, "_gen_fused_" + "c" * 16,
                       "_gen_interp_" + "d" * 16]
    for stem, paths in files.items():
        assert all(p.exists() for p in paths) == (stem not in deleted), stem
    assert not (tmp_path / ("_memo_interp_" + "1" * 16)).exists()    # it named a deleted one
    assert (tmp_path / ("_memo_interp_" + "2" * 16)).exists()
    assert (tmp_path / "unrelated.txt").exists()


def test_generated_modules_keep_their_bytecode_where_python_would_not(tmp_path, monkeypatch):
    """$PYTHONDONTWRITEBYTECODE (common in containers) is about the user's sources: the code
    cache writes its modules' bytecode anyway (compiling an interpreter module's source costs
    a tenth of a second per process), and Python reads it back as its own."""
    import importlib.util
    from tapegrad.core import cache
    monkeypatch.setenv("TAPEGRAD_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    name = "_gen_bytecode_" + "e" * 16
    assert cache.materialize(name, "VALUE = 11\n").VALUE == 11
    pyc = importlib.util.cache_from_source(str(tmp_path / f"{name}.py"))
    assert os.path.exists(pyc)
    monkeypatch.delitem(sys.modules, f"tapegrad.{name}")
    module = cache.materialize(name, "VALUE = 11\n")
    assert module.VALUE == 11 and module.__cached__ == pyc
    monkeypatch.delitem(sys.modules, f"tapegrad.{name}")
    with pytest.warns(RuntimeWarning, match="written again"):   # a changed file: new bytecode
        cache.materialize(name, "VALUE = 12\n")
    monkeypatch.delitem(sys.modules, f"tapegrad.{name}")
    assert cache.materialize(name, "VALUE = 12\n").VALUE == 12


def test_importing_a_module_records_its_use_not_a_modification(tmp_path, monkeypatch):
    """numba keys its cache of a file by the file's modification time in some versions: a use
    moves the access time only."""
    from tapegrad.core import cache
    monkeypatch.setenv("TAPEGRAD_CACHE_DIR", str(tmp_path))
    name = "_gen_usetest_" + "f" * 16
    cache.materialize(name, "VALUE = 7\n")
    path = tmp_path / f"{name}.py"
    os.utime(path, ns=(10**18, 10**18))
    monkeypatch.delitem(sys.modules, f"tapegrad.{name}")
    assert cache.materialize(name, "VALUE = 7\n").VALUE == 7
    st = path.stat()
    assert st.st_mtime_ns == 10**18 and st.st_atime_ns > 10**18 + 10**17
    monkeypatch.delitem(sys.modules, f"tapegrad.{name}")


@pytest.mark.parametrize("text", ["lots", "-5", "nan"])
def test_a_cache_limit_that_is_not_a_size_warns_and_takes_the_default(monkeypatch, text):
    from tapegrad.core import cache
    monkeypatch.setenv("TAPEGRAD_CACHE_LIMIT_MB", text)
    with pytest.warns(RuntimeWarning, match="TAPEGRAD_CACHE_LIMIT_MB"):
        assert cache.limit_bytes() == cache.DEFAULT_LIMIT_MB << 20
    monkeypatch.setenv("TAPEGRAD_CACHE_LIMIT_MB", "0.5")
    assert cache.limit_bytes() == 1 << 19


_COMPILE = '''
import sys
from tapegrad.core import cache
name = "_gen_prunetest_{tag}" + "0" * (16 - len("{tag}"))
m = cache.materialize(name, "from tapegrad.core.jit import jit\\n\\n@jit\\ndef twice(x):\\n    return 2 * x\\n")
print("value", m.twice({value}))
'''


def test_a_module_deleted_to_keep_the_bound_is_made_again(tmp_path):
    """A process that writes a new module past the bound deletes the others' files (not its
    own, imported ones); a later process that needs a deleted module writes and compiles it
    again, with nothing to repair."""
    rc, out = run(_COMPILE.format(tag="a", value=3), tmp_path)
    assert rc == 0 and "value 6" in out, out
    first = glob.glob(str(tmp_path / "**" / "_gen_prunetest_a*"), recursive=True)
    assert any(f.endswith(".nbi") for f in first), first          # numba cached its code
    env = dict(TAPEGRAD_CACHE_LIMIT_MB="0.001")
    rc, out = run("import os; os.environ.update(%r)\n" % env
                  + textwrap.dedent(_COMPILE.format(tag="b", value=4)), tmp_path)
    assert rc == 0 and "value 8" in out, out
    assert not [f for f in first if os.path.exists(f)]             # a's files: all deleted
    assert glob.glob(str(tmp_path / "tapegrad" / "_gen_prunetest_b*.py"))   # b's kept
    rc, out = run(_COMPILE.format(tag="a", value=5), tmp_path)
    assert rc == 0 and "value 10" in out and "Warning" not in out, out
