"""LAPACK for the generated interpreters, where numba's `np.linalg` lacks an argument numpy
passes (numba's `eigh` always reads the lower triangle and its `svd` always computes the
vectors; numpy's `UPLO='U'`, `eigvalsh` and `svd(compute_uv=False)` call LAPACK with other
arguments, whose results differ in rounding and in eigenvectors' signs).

These are numba's own LAPACK bindings: C functions of its helper library (`numba_ez_*`,
resolved by symbol name when a module is loaded, so the interpreters that call them stay
cacheable), which look up scipy's LAPACK (`scipy.linalg.cython_lapack`, a dependency) at their
first call. The signatures are numba's (`numba.np.linalg._LAPACK`), written out here: that
module's bindings import numba's array implementations and scipy.linalg before anything runs
(0.15 s of a process's first gradient), where the helper imports scipy only when an
eigendecomposition or an SVD runs. Only the generated interpreter modules import this module
(it imports numba, which `import tapegrad` must not).

* `syevd(kind, jobz, uplo, n, a, lda, w)`: ?syevd on the Fortran-order matrix at `a`, as
  numpy's `eigh` (jobz 'V') and `eigvalsh` (jobz 'N') call it; returns LAPACK's info.
* `gesdd(kind, jobz, m, n, a, lda, s, u, ldu, vt, ldvt)`: ?gesdd, as numpy's `svd` calls it
  (jobz 'S' for the reduced factors, 'N' for `compute_uv=False`); returns LAPACK's info.
"""
from numba import types

_p = types.CPointer(types.float64)
syevd = types.ExternalFunction("numba_ez_xxxevd", types.intc(
    types.char, types.char, types.char, types.intp, _p, types.intp, _p))
gesdd = types.ExternalFunction("numba_ez_gesdd", types.intc(
    types.char, types.char, types.intp, types.intp, _p, types.intp, _p, _p, types.intp, _p,
    types.intp))
