"""Anomaly mode: the first operation whose forward or backward makes a NaN or an infinity.

Backward errors read as PyTorch's ("Function 'PowBackward0' returned nan values in its 0th
output.") followed by the place in the user's code that recorded the operation; forward errors
name the operation and the place too. Locations are captured only in anomaly mode.
"""
import inspect
import warnings

import numpy as np
import pytest

import tapegrad
from tapegrad.eager import graph as _graph


@pytest.fixture(autouse=True)
def quiet_and_restored():
    """Anomaly mode is global (as in PyTorch): every test leaves it off."""
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")      # numpy's divide-by-zero, PyTorch's anomaly notes
        yield
    assert not tapegrad.is_anomaly_enabled()
    tapegrad.autograd.set_detect_anomaly(False)


@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch")


def _line(fn, text):
    """The line number of the first line of `fn`'s source that contains `text`."""
    lines, start = inspect.getsourcelines(fn)
    return start + next(i for i, line in enumerate(lines) if text in line)


def _nan_program(L):
    x = L.tensor([0.0, 1.0], dtype=L.float64, requires_grad=True)
    y = x ** 0.5                                  # forward finite; d/dx at 0 is inf
    (y * 0).sum().backward()                      # 0 * inf: NaN in PowBackward0


def test_backward_nan_names_function_and_place():
    with tapegrad.detect_anomaly():
        with pytest.raises(RuntimeError) as info:
            _nan_program(tapegrad)
    line = _line(_nan_program, "y = x ** 0.5")
    assert str(info.value) == (
        "Function 'PowBackward0' returned nan values in its 0th output. The operation was "
        f'recorded at File "{__file__}", line {line}, in _nan_program: '
        "y = x ** 0.5                                  # forward finite; d/dx at 0 is inf.")


def test_backward_message_matches_torch(torch):
    with tapegrad.detect_anomaly():
        with pytest.raises(RuntimeError) as mine:
            _nan_program(tapegrad)
    with torch.autograd.detect_anomaly():
        with pytest.raises(RuntimeError) as theirs:
            _nan_program(torch)
    assert str(theirs.value) == "Function 'PowBackward0' returned nan values in its 0th output."
    assert str(mine.value).startswith(str(theirs.value))


def test_without_anomaly_mode_the_nan_passes_silently():
    x = tapegrad.tensor([0.0, 1.0], requires_grad=True)
    y = x ** 0.5
    assert y.grad_fn.where is None               # no location captured outside anomaly mode
    (y * 0).sum().backward()
    assert np.isnan(x.grad.numpy()[0]) and x.grad.numpy()[1] == 0.0


def test_the_first_offending_operand_is_reported():
    """A binary op's 1th output: the gradient of its second operand."""
    a = tapegrad.tensor([1.0, 2.0], requires_grad=True)
    b = tapegrad.tensor([0.0, 1.0], requires_grad=True)
    with tapegrad.detect_anomaly():
        r = (a * (b ** 0.5)).sum()               # d/db of b ** 0.5 at 0: inf
        with pytest.raises(RuntimeError, match=r"^Function 'PowBackward0' returned inf values "
                                               r"in its 0th output\."):
            r.backward()
        big = tapegrad.tensor([1e200], requires_grad=True)
        tiny = tapegrad.tensor([1e-100], requires_grad=True)
        q = (big / tiny).sum()                   # 1e300, but d/d(tiny) = -1e200 / 1e-200
        with pytest.raises(RuntimeError, match=r"^Function 'DivBackward0' returned inf values "
                                               r"in its 1th output\."):
            q.backward()


def test_forward_inf_is_reported_where_it_is_made():
    x = tapegrad.tensor([0.0, 1.0], requires_grad=True)
    with tapegrad.detect_anomaly():
        y = x * 2
        with pytest.raises(RuntimeError) as info:
            y.log()
    line = _line(test_forward_inf_is_reported_where_it_is_made, "            y.log()")
    assert str(info.value) == (
        "Function 'LogBackward0' returned inf values in its forward output although its inputs "
        f'are finite (anomaly mode). The operation was recorded at File "{__file__}", line '
        f"{line}, in test_forward_inf_is_reported_where_it_is_made: y.log().")


def test_forward_nan_from_finite_inputs():
    x = tapegrad.tensor([-1.0, 4.0], requires_grad=True)
    with tapegrad.detect_anomaly():
        with pytest.raises(RuntimeError, match="^Function 'SqrtBackward0' returned nan values in "
                                               "its forward output"):
            x.sqrt()


def test_values_already_infinite_are_not_blamed():
    """An op propagating an infinity its input already had did not make it."""
    x = tapegrad.tensor([np.inf, 1.0], requires_grad=True)
    with tapegrad.detect_anomaly():
        y = (x * 2 + 1).sum()
    assert y.item() == np.inf


def test_check_nan_false_keeps_locations_only():
    x = tapegrad.tensor([0.0, 1.0], requires_grad=True)
    with tapegrad.detect_anomaly(check_nan=False):
        assert tapegrad.autograd.is_anomaly_enabled()
        assert not tapegrad.autograd.is_anomaly_check_nan_enabled()
        y = x.log()
        assert y.grad_fn.where[2] == "test_check_nan_false_keeps_locations_only"
        (y * 0).sum().backward()
    assert np.isnan(x.grad.numpy()[0])
    assert tapegrad.autograd.is_anomaly_check_nan_enabled()


def test_switches_and_names():
    assert tapegrad.detect_anomaly is tapegrad.autograd.detect_anomaly
    assert tapegrad.set_detect_anomaly is tapegrad.autograd.set_detect_anomaly
    assert not tapegrad.is_anomaly_enabled()
    tapegrad.autograd.set_detect_anomaly(True)
    assert tapegrad.is_anomaly_enabled()
    tapegrad.autograd.set_detect_anomaly(False)
    assert not tapegrad.is_anomaly_enabled()
    with tapegrad.autograd.set_detect_anomaly(True):
        assert tapegrad.is_anomaly_enabled()
        with tapegrad.detect_anomaly():
            assert tapegrad.is_anomaly_enabled()
        assert tapegrad.is_anomaly_enabled()
    assert not tapegrad.is_anomaly_enabled()
    with pytest.raises(ValueError):
        with tapegrad.detect_anomaly():
            raise ValueError("restored on the way out")
    assert not tapegrad.is_anomaly_enabled()


def test_detect_anomaly_warns_like_torch():
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        tapegrad.detect_anomaly()
    assert [str(w.message) for w in seen] == [
        "Anomaly Detection has been enabled. This mode will increase the runtime and should only "
        "be enabled for debugging."]


def test_decorator():
    @tapegrad.detect_anomaly()
    def step(x):
        assert tapegrad.is_anomaly_enabled()
        (x ** 0.5 * 0).sum().backward()

    with pytest.raises(RuntimeError, match="PowBackward0"):
        step(tapegrad.tensor([0.0], requires_grad=True))
    assert not tapegrad.is_anomaly_enabled()


def test_gradients_are_unchanged_in_anomaly_mode():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 3))
    data = rng.standard_normal((5, 4))

    def loss(W):
        h = (tapegrad.tensor(data) @ W).tanh()
        return tapegrad.log_softmax(h, 1).sum() + (W * W).sum() + tapegrad.cat([W, W]).amax()

    grads = []
    for mode in (False, True):
        W = tapegrad.tensor(w, requires_grad=True)
        with tapegrad.autograd.set_detect_anomaly(mode):
            loss(W).backward()
            grads.append(W.grad.numpy().copy())
            grads.append(tapegrad.grad(loss)(w))
    np.testing.assert_array_equal(grads[0], grads[2])
    np.testing.assert_array_equal(grads[1], grads[3])
    np.testing.assert_allclose(grads[0], grads[1], rtol=1e-14)


def test_transform_replays_are_checked():
    g = tapegrad.grad(lambda t: ((t ** 0.5) * 0).sum())
    x = np.array([4.0, 1.0])
    np.testing.assert_array_equal(g(x), [0.0, 0.0])       # traced outside anomaly mode
    with tapegrad.detect_anomaly():
        with pytest.raises(RuntimeError, match=r"^Function 'PowBackward0' returned nan values in "
                                               r"its 0th output\.$"):
            g(np.array([0.0, 1.0]))
        value_and_grad = tapegrad.value_and_grad(lambda t: (t * 2).sum())
        value, grad = value_and_grad(np.array([1.0, 2.0]))
    assert value == 6.0 and grad.tolist() == [2.0, 2.0]
    np.testing.assert_array_equal(g(np.array([0.0, 1.0]))[1], 0.0)   # off again: no check


def test_replays_of_another_branch_are_not_blamed():
    """A cached tape replayed at inputs of another branch may make NaNs before its guards
    fail; the transform retraces and nothing is reported."""
    def f(x):
        if x.sum() > 0:
            return x.log().sum()
        return (x * x).sum()
    g = tapegrad.grad(f)
    with tapegrad.detect_anomaly():
        np.testing.assert_allclose(g(np.array([1.0, 2.0])), [1.0, 0.5])
        np.testing.assert_allclose(g(np.array([-1.0, -2.0])), [-2.0, -4.0])
        with pytest.raises(RuntimeError, match="^Function 'LogBackward0' returned nan values "
                                               "in its forward output"):
            g(np.array([3.0, -1.0]))              # this branch's own log makes the NaN


def test_anomaly_mode_is_global_like_torch():
    import threading
    seen = []
    with tapegrad.detect_anomaly():
        t = threading.Thread(target=lambda: seen.append(tapegrad.is_anomaly_enabled()))
        t.start()
        t.join()
    assert seen == [True]


def test_off_means_no_per_node_work():
    assert _graph.anomaly_enabled is False
    x = tapegrad.tensor([1.0], requires_grad=True)
    assert (x * 2).grad_fn.where is None
