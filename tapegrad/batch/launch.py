"""Launching numba's parallel kernels (the tile driver, fused kernels) from any thread.

numba's `workqueue` threading layer, the one numba falls back to when neither OpenMP nor TBB is
installed (or the one NUMBA_THREADING_LAYER names), is not thread-safe: two Python threads in
parallel regions at once abort the process ("Concurrent access has been detected"). The tbb and
omp layers are thread-safe. Which layer runs is known only once a parallel region has run
(`numba.threading_layer()` raises before), so the first launch of the process runs under a lock
and records whether every later one must take it too: under workqueue, launches from several
threads (a shared `vmap`, Dask's threaded scheduler) run one after the other; under tbb or omp
they run concurrently, as before, at the cost of one test of a module global.

Only tapegrad's own launches are serialised: a parallel numba function of the caller's running
in another thread at the same time can still meet one of ours (numba's own rule applies there).
"""
import threading

_lock = threading.Lock()
_serialize = None       # None: no launch yet; then whether launches must take the lock


def launch(kernel, *args):
    """`kernel(*args)`, one launch at a time unless the threading layer is thread-safe."""
    global _serialize
    if _serialize is False:
        return kernel(*args)
    with _lock:
        result = kernel(*args)
        if _serialize is None:
            _serialize = not _thread_safe_layer()
    return result


def _thread_safe_layer():
    """Whether the threading layer that numba chose is one that threads may enter at once."""
    import numba
    try:
        return numba.threading_layer() in ("tbb", "omp")
    except ValueError:          # no parallel region has run: assume the unsafe one
        return False
