"""How many of numba's threads a parallel launch (the tile driver, a fused kernel) uses.

A parallel region ends when its slowest thread does. On a machine where another process keeps
a core busy, a region with one thread per core has a thread waiting for that core: the
scheduler gives it back after a time slice (milliseconds), so a call worth 0.1 ms of work takes
a slice, at every size of call. So a launch uses the cores that are free now, not all of them:
the cores this process may run on, less the threads of other processes that are running or
ready to run at this instant (Linux: the fourth field of /proc/loadavg counts every runnable
thread of the machine; our own are subtracted, since numba's OpenMP workers spin for a while
after a region). Where that count cannot be read, every core counts as free.

Work too small to share (below SERIAL_WORK entry-points, about ten microseconds, not much more
than waking the pool) runs on the calling thread alone. Counting the machine's threads reads a
few files (tens of microseconds on a busy machine): the count is kept for FRESH_S.
"""
import contextlib
import os
import time

SERIAL_WORK = 8_000         # entries x points below which one thread does it all
FRESH_S = 0.02              # how long a count of the free cores is reused
_last = (-1.0, 1)           # (when, free cores)


def for_work(work):
    """Threads for an interpreter launch of `work` entry-points (entries replayed x points):
    1 for small work, else `available()`."""
    return 1 if work < SERIAL_WORK else available()


def available():
    """numba's thread count capped by the cores free now."""
    import numba
    return max(1, min(numba.get_num_threads(), free_cores()))


def free_cores():
    """The cores this process may use, less the threads of other processes runnable now
    (counted at most every FRESH_S seconds)."""
    global _last
    now = time.monotonic()
    if now - _last[0] < FRESH_S:
        return _last[1]
    free = _count_free_cores()
    _last = (now, free)
    return free


def _count_free_cores():
    cores = _cores()
    running = _runnable_threads()
    if running is None or running <= 1:
        return cores
    return max(1, cores - max(0, running - _own_runnable_threads()))


@contextlib.contextmanager
def limited(n):
    """numba's parallel regions entered by this thread use at most `n` threads (numba's
    setting is per calling thread; it is restored afterwards)."""
    import numba
    before = numba.get_num_threads()
    if n >= before:
        yield
        return
    numba.set_num_threads(n)
    try:
        yield
    finally:
        numba.set_num_threads(before)


def _cores():
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _runnable_threads(path="/proc/loadavg"):
    """Runnable threads of the whole machine now (this one included), or None."""
    try:
        with open(path, "rb") as fh:
            return int(fh.read().split()[3].split(b"/")[0])
    except (OSError, ValueError, IndexError):
        return None


def _own_runnable_threads(tasks="/proc/self/task"):
    """Threads of this process that are running or runnable now (at least this one)."""
    count = 0
    try:
        for tid in os.listdir(tasks):
            try:
                with open(f"{tasks}/{tid}/stat", "rb") as fh:
                    stat = fh.read()
            except OSError:              # the thread ended meanwhile
                continue
            # the state follows the command name, which is in parentheses and may hold spaces
            if stat[stat.rfind(b")") + 2:stat.rfind(b")") + 3] == b"R":
                count += 1
    except OSError:
        return 1
    return max(1, count)
