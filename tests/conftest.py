"""Shared fixtures and helpers of the test suite, and CI's check that nothing skips silently.

With TAPEGRAD_STRICT_SKIPS=1 in the environment (CI sets it, `.ci/run`), a run that skips a
test for any reason other than the machine's GPU fails (exit status 1) and lists the offending
skips: a missing test dependency (an `importorskip` of torch, jax, dask...) must not turn a
comparison against PyTorch or JAX into a silent pass. A skip is about the GPU when its reason
starts with one of GPU_SKIP_PREFIXES; write GPU skips that way and no other skip does.
"""
import os
import zlib

import numpy as np
import pytest

GPU_SKIP_PREFIXES = (
    "needs a real CUDA GPU",            # tests of the CUDA backend on a device
    "runs only without a CUDA GPU",     # tests of the fallback and the errors without one
)


def rng_for(name):
    """A generator seeded by a test's name: reproducible, and different for every case."""
    return np.random.default_rng(zlib.crc32(name.encode()))


@pytest.fixture(scope="session")
def interp():
    """The compiled interpreters (compiled on first use, then cached on disk)."""
    from tapegrad.core.interp import interpreters
    return interpreters()


def skip_reason(report):
    """The reason of a skipped test or collector, as the user wrote it."""
    longrepr = report.longrepr
    message = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    return message.removeprefix("Skipped: ")


class StrictSkips:
    """Collects the skips whose reason is not about the GPU; fails the session if any."""

    def __init__(self):
        self.offending = []

    def _note(self, report):
        if report.skipped and not hasattr(report, "wasxfail"):
            reason = skip_reason(report)
            if not reason.startswith(GPU_SKIP_PREFIXES):
                self.offending.append((report.nodeid, reason))

    def pytest_runtest_logreport(self, report):
        self._note(report)

    def pytest_collectreport(self, report):
        self._note(report)

    def pytest_sessionfinish(self, session):
        if self.offending and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter):
        if not self.offending:
            return
        terminalreporter.section("skips not about the GPU (TAPEGRAD_STRICT_SKIPS=1)", red=True)
        for nodeid, reason in self.offending:
            terminalreporter.line(f"SKIPPED {nodeid}: {reason}", red=True)
        terminalreporter.line(f"{len(self.offending)} test(s) skipped for a reason other than "
                              "the GPU: install what they need (pip install -e \".[test]\")",
                              red=True)


def pytest_configure(config):
    if os.environ.get("TAPEGRAD_STRICT_SKIPS") == "1":
        config.pluginmanager.register(StrictSkips(), "tapegrad-strict-skips")
