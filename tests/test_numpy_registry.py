"""The registry of numpy functions on tensors (tapegrad.eager.numpy_api): every module of the
package is loaded, registration refuses what would make dispatch ambiguous, and numpy's calls
reach the registered implementations."""
import pkgutil
import sys

import numpy as np
import pytest

import tapegrad as tg
from tapegrad.eager import numpy_api
from tapegrad.eager.numpy_api import implementation, implements, implements_ufunc


def test_every_module_of_the_package_is_loaded():
    """Adding a family is adding a file: the package imports each of its modules."""
    names = [m.name for m in pkgutil.iter_modules(numpy_api.__path__)]
    assert {"elementwise", "reductions", "shapes", "products"} <= set(names)
    for name in names:
        assert f"{numpy_api.__name__}.{name}" in sys.modules, name


def test_a_function_registered_twice_is_refused_naming_both():
    with pytest.raises(ValueError, match=r"numpy\.sum is implemented twice: by "
                                         r"tapegrad\.eager\.ops\.sum and by .*\.again"):
        @implements(np.histogram_bin_edges, np.sum)
        def again(a):
            return a
    # nothing of a refused call is registered
    assert implementation(np.histogram_bin_edges) is None
    assert implementation(np.sum) is tg.eager.ops.sum


def test_a_ufunc_registered_twice_is_refused():
    with pytest.raises(ValueError, match=r"numpy\.sin is implemented twice"):
        implements_ufunc(np.sin)(np.sin)


def test_functions_and_ufuncs_register_with_their_own_decorator():
    with pytest.raises(TypeError, match="implements_ufunc"):
        implements(np.spacing)
    with pytest.raises(TypeError, match="with implements"):
        implements_ufunc(np.histogram_bin_edges)
    assert implementation(np.spacing) is None
    assert implementation(np.histogram_bin_edges) is None


def test_aliases_register_once():
    """np.true_divide is np.divide: one implementation serves both names."""
    assert implementation(np.true_divide) is implementation(np.divide) is tg.eager.ops.div
    assert implementation(np.amax) is implementation(np.max) is tg.eager.ops.amax


def test_numpy_calls_reach_the_implementations():
    x = tg.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    y = np.sum(np.sin(x) * np.transpose(x), axis=0)
    assert y.grad_fn is not None
    np.testing.assert_allclose(y.data, np.sum(np.sin(x.data) * x.data.T, axis=0))
    y.sum().backward()
    np.testing.assert_allclose(x.grad.data, np.cos(x.data) * x.data.T + np.sin(x.data).T)


def test_an_unsupported_function_still_raises_typeerror():
    with pytest.raises(TypeError,
                       match="tapegrad does not support numpy.histogram_bin_edges on Tensors"):
        np.histogram_bin_edges(tg.ones(2))
    with pytest.raises(TypeError, match=r"numpy.add.reduce on Tensors"):
        np.add.reduce(tg.ones(2))
