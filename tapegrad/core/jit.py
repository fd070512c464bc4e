"""`njit` with on-disk caching that degrades gracefully.

`@njit(cache=True)` raises at decoration time ("no locator available") when neither the
package directory nor numba's user-wide cache directory is writable, e.g. a read-only
install in a locked-down container. We then point numba at a private temporary cache
directory, and as a last resort compile without caching: slower cold starts, never a crash.

A cache file that cannot be read back (a truncated or garbled index `.nbi` or data `.nbc`
file: numba lets the unpickling error through, which would break every later process that
calls the function) is cleared and the function compiled again, with a RuntimeWarning; where
the file cannot be rewritten, the function compiles without its cache and the warning names
the directory to clear.
"""
import os
import tempfile
import warnings

import numba

_fallback_dir = None


def _private_cache_dir():
    global _fallback_dir
    if _fallback_dir is None:
        _fallback_dir = tempfile.mkdtemp(prefix="tapegrad-numba-")
    return _fallback_dir


def jit(fn=None, **options):
    """`numba.njit(cache=True, **options)` with a fallback when caching is impossible, and
    recovery from unreadable cache files (see the module's docstring).

    Floats follow IEEE semantics (numba's "numpy" error model): a division by zero gives an
    inf or a NaN, as in numpy and PyTorch, instead of raising ZeroDivisionError mid-sweep.
    """
    if fn is None:
        return lambda f: jit(f, **options)
    options.setdefault("error_model", "numpy")
    try:
        return _recovering(numba.njit(cache=True, **options)(fn))
    except RuntimeError as err:  # numba: "cannot cache function ...: no locator available"
        if "cannot cache" not in str(err):
            raise
    try:
        os.environ.setdefault("NUMBA_CACHE_DIR", _private_cache_dir())
        numba.config.CACHE_DIR = os.environ["NUMBA_CACHE_DIR"]
        return _recovering(numba.njit(cache=True, **options)(fn))
    except RuntimeError:
        warnings.warn(f"tapegrad: cannot cache compiled code for {fn.__name__}; "
                      "compiling without a cache", RuntimeWarning, stacklevel=2)
        return numba.njit(cache=False, **options)(fn)


def _recovering(dispatcher):
    """`dispatcher` with its disk cache's load and save guarded: an unreadable cache entry is
    a cache miss (cleared, compiled again), never an error of the call."""
    cache = dispatcher._cache
    load, save = cache.load_overload, cache.save_overload

    def load_overload(sig, target_context):
        try:
            return load(sig, target_context)
        except Exception as err:   # noqa: BLE001 (whatever unpickling a damaged file raises)
            _clear(cache, dispatcher, err)
            return None

    def save_overload(sig, data):
        try:
            return save(sig, data)
        except OSError:
            raise
        except Exception as err:   # noqa: BLE001 (an index damaged since it was loaded)
            if _clear(cache, dispatcher, err):
                return save(sig, data)
            return None

    cache.load_overload, cache.save_overload = load_overload, save_overload
    return dispatcher


def _clear(cache, dispatcher, err):
    """Replace the unreadable index of `dispatcher`'s cache by an empty one (its data files are
    overwritten as signatures compile again); where that fails, stop caching the function.
    Returns whether the cache is usable again."""
    name, where = dispatcher.py_func.__qualname__, cache.cache_path
    what = f"{type(err).__name__}: {err}"
    try:
        cache.flush()
    except OSError as flush_err:
        cache.disable()
        warnings.warn(f"tapegrad: numba's cache of {name} in {where} cannot be read ({what}) "
                      f"nor rewritten ({flush_err}); compiling without it. Delete the "
                      f"directory {where} to clear it", RuntimeWarning, stacklevel=2)
        return False
    warnings.warn(f"tapegrad: numba's cache of {name} in {where} could not be read ({what}); "
                  "it was cleared and the function is compiled again", RuntimeWarning,
                  stacklevel=2)
    return True
