"""LAPACK for the generated interpreters, where numba's `np.linalg` lacks an argument numpy
passes (numba's `eigh` always reads the lower triangle and its `svd` always computes the
vectors; numpy's `UPLO='U'`, `eigvalsh` and `svd(compute_uv=False)` call LAPACK with other
arguments, whose results differ in rounding and in eigenvectors' signs).

These are numba's own LAPACK bindings: C functions of its helper library (`numba_ez_*`,
resolved by symbol name when a module is loaded, so the interpreters that call them stay
cacheable), which look up scipy's LAPACK (`scipy.linalg.cython_lapack`, a dependency) at their
first call. Their signatures come from numba's classmethods without making a `_LAPACK`, whose
constructor imports scipy.linalg to check that it is there (0.1-0.15 s of a process's first
gradient, where the helper imports it only when an eigendecomposition or an SVD runs). Only
the generated interpreter modules import this module (it imports numba, which `import
tapegrad` must not).

* `syevd(kind, jobz, uplo, n, a, lda, w)`: ?syevd on the Fortran-order matrix at `a`, as
  numpy's `eigh` (jobz 'V') and `eigvalsh` (jobz 'N') call it; returns LAPACK's info.
* `gesdd(kind, jobz, m, n, a, lda, s, u, ldu, vt, ldvt)`: ?gesdd, as numpy's `svd` calls it
  (jobz 'S' for the reduced factors, 'N' for `compute_uv=False`); returns LAPACK's info.
"""
from numba import types
from numba.np.linalg import _LAPACK

syevd = _LAPACK.numba_ez_xxxevd(types.float64)
gesdd = _LAPACK.numba_ez_gesdd(types.float64)
