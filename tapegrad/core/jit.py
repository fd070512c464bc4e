"""`njit` with on-disk caching that degrades gracefully.

`@njit(cache=True)` raises at decoration time ("no locator available") when neither the
package directory nor numba's user-wide cache directory is writable, e.g. a read-only
install in a locked-down container. We then point numba at a private temporary cache
directory, and as a last resort compile without caching: slower cold starts, never a crash.

Every dispatcher's disk cache is managed by `core.numba_cache`: damaged files are recovered
from, what is loaded is checked, and a cache hit loads without numba's first-load overheads.
This module holds only what compiled code depends on (its source is part of `core.cache.salt`).
"""
import os
import tempfile
import warnings

import numba

from .numba_cache import managed

_fallback_dir = None


def _private_cache_dir():
    global _fallback_dir
    if _fallback_dir is None:
        _fallback_dir = tempfile.mkdtemp(prefix="tapegrad-numba-")
    return _fallback_dir


def jit(fn=None, **options):
    """`numba.njit(cache=True, **options)` with a fallback when caching is impossible and its
    cache managed (see the module's docstring).

    Floats follow IEEE semantics (numba's "numpy" error model): a division by zero gives an
    inf or a NaN, as in numpy and PyTorch, instead of raising ZeroDivisionError mid-sweep.

    `cache=False`: no disk cache, for functions compiled only into the cached functions that
    call them (the interpreters' kernels).
    """
    if fn is None:
        return lambda f: jit(f, **options)
    options.setdefault("error_model", "numpy")
    if not options.pop("cache", True):
        return numba.njit(**options)(fn)
    try:
        return managed(numba.njit(cache=True, **options)(fn))
    except RuntimeError as err:  # numba: "cannot cache function ...: no locator available"
        if "cannot cache" not in str(err):
            raise
    try:
        os.environ.setdefault("NUMBA_CACHE_DIR", _private_cache_dir())
        numba.config.CACHE_DIR = os.environ["NUMBA_CACHE_DIR"]
        return managed(numba.njit(cache=True, **options)(fn))
    except RuntimeError:
        warnings.warn(f"tapegrad: cannot cache compiled code for {fn.__name__}; "
                      "compiling without a cache", RuntimeWarning, stacklevel=2)
        return numba.njit(cache=False, **options)(fn)
