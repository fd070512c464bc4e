"""Shared fixtures and helpers of the test suite."""
import zlib

import numpy as np
import pytest


def rng_for(name):
    """A generator seeded by a test's name: reproducible, and different for every case."""
    return np.random.default_rng(zlib.crc32(name.encode()))


@pytest.fixture(scope="session")
def interp():
    """The compiled interpreters (compiled on first use, then cached on disk)."""
    from tapegrad.core.interp import interpreters
    return interpreters()
