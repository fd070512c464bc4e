"""In-place mutation of saved values: PyTorch's version counter.

Every in-place write counts in the version of the tensor's memory (shared with its views, slices
and detached copies) and every recorded in-place operation (`b += 1` on a non-leaf) in the
tensor's own count. A node records the versions of the values its VJP reads (`prim.saves`, and
only the operands whose partner requires grad, as PyTorch saves them); backward compares them
and raises PyTorch's error. Each scenario runs in tapegrad and, when installed, in PyTorch: both
raise the same message (up to the library's name) or compute the same gradients.
"""
import os
import re

import numpy as np
import pytest

import tapegrad
from tapegrad.eager import graph as _graph


@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch")


def _outcome(program, L):
    """('ok', gradients) or ('error', normalized message)."""
    try:
        grads = program(L)
    except RuntimeError as err:
        text = str(err).replace("tapegrad.", "torch.")
        text = re.sub(r"\[torch\.(Float|Double)Tensor", "[torch.Tensor", text)
        return "error", text.split(" Hint:")[0]
    return "ok", [np.asarray(g.detach().numpy() if g is not None else np.nan) for g in grads]


def _t(L, values, grad=False):
    return L.tensor(values, dtype=L.float64, requires_grad=grad)


# ---- scenarios: each returns the gradients it computed ----------------------------------------

def constant_mul_(L):
    x = _t(L, [1., 2., 3.], True)
    c = _t(L, [1., 2., 3.])
    y = c * x
    c.mul_(10)
    y.sum().backward()
    return [x.grad]


def sgd_step_then_old_graph(L):
    w = _t(L, [1., 2., 3.], True)
    loss = (w * w).sum()
    with L.no_grad():
        w -= 0.5
    loss.backward()
    return [w.grad]


def slice_of_constant_zeroed(L):
    x = _t(L, [1., 1.], True)
    c = _t(L, [1., 2., 3., 4.])
    v = c[0:2]
    y = v * x
    c.zero_()
    y.sum().backward()
    return [x.grad]


def view_written_through_base(L):
    x = _t(L, [1., 1., 1., 1.], True)
    c = _t(L, [[1., 2.], [3., 4.]])
    y = c.reshape(4) * x
    c[1, 1] = 10.0
    y.sum().backward()
    return [x.grad]


def base_written_through_view(L):
    x = _t(L, [1., 1.], True)
    c = _t(L, [1., 2., 3., 4.])
    y = c * L.cat([x, x])
    c[2:].fill_(0.0)
    y.sum().backward()
    return [x.grad]


def exp_output_scaled_under_no_grad(L):
    x = _t(L, [1., 2.], True)
    y = x.exp()
    z = y.sum()
    with L.no_grad():
        y.mul_(2)
    z.backward()
    return [x.grad]


def non_leaf_saved_by_mul(L):
    x = _t(L, [1., 2.], True)
    y = x * 2
    z = (y * y).sum()
    with L.no_grad():
        y.mul_(2)
        y.mul_(2)
    z.backward()
    return [x.grad]


def constant_rebound_by_recorded_add(L):
    x = _t(L, [1., 2., 3.], True)
    a = _t(L, [1., 2., 3.])
    y = a * x
    a += x
    y.sum().backward()
    return [x.grad]


def non_leaf_rebound_after_add(L):
    """Not saved (add reads no value): the gradient flows through the old grad_fn, as in
    PyTorch; tapegrad used to lose it (x.grad was 0)."""
    x = _t(L, [1., 2., 3.], True)
    a = x * 2
    y = a + 1
    a += 1
    y.sum().backward()
    return [x.grad]


def non_leaf_rebound_after_sum_then_used(L):
    x = _t(L, [1., 2., 3.], True)
    a = x * 3
    s = a.sum()
    a *= 2
    (s + (a * a).sum()).backward()
    return [x.grad]


def setitem_on_constant(L):
    x = _t(L, [1., 2., 3.], True)
    c = _t(L, [1., 2., 3.])
    y = (c * x).sum()
    c[0] = 100.0
    y.backward()
    return [x.grad]


def detach_shares_the_version(L):
    x = _t(L, [1., 2., 3.], True)
    y = (x * x).sum()
    x.detach().zero_()
    y.backward()
    return [x.grad]


def written_operand_not_saved(L):
    """`c + x` saves nothing: writing c afterwards is fine."""
    x = _t(L, [1., 2.], True)
    c = _t(L, [5., 6.])
    y = (c + x).sum()
    c.add_(1)
    y.backward()
    return [x.grad]


def only_the_partner_is_saved(L):
    """`c * x` with a constant c saves c, not x (x's value is not needed): writing x is fine."""
    x = _t(L, [1., 2.], True)
    c = _t(L, [5., 6.])
    y = (c * x).sum()
    with L.no_grad():
        x.add_(1)
    y.backward()
    return [x.grad]


def matmul_saved_operand(L):
    x = _t(L, [[1., 2.], [3., 4.]], True)
    w = _t(L, [[0.5], [1.5]])
    y = (x @ w).sum()
    w.mul_(3)
    y.backward()
    return [x.grad]


def retain_graph_then_write(L):
    x = _t(L, [1., 2.], True)
    y = x.sin()
    z = (y * y).sum()
    z.backward(retain_graph=True)
    with L.no_grad():
        y.add_(1)
    z.backward()
    return [x.grad]


def write_before_recording_is_fine(L):
    x = _t(L, [1., 2.], True)
    c = _t(L, [1., 1.])
    c.mul_(3)
    y = (c * x).sum()
    y.backward()
    return [x.grad]


def sgd_loop(L):
    w = _t(L, [1., -2.], True)
    data = _t(L, [0.5, 1.5])
    for _ in range(4):
        loss = ((w * data).sum() - 1) ** 2
        loss.backward()
        with L.no_grad():
            w -= 0.1 * w.grad
            w.grad.zero_()
    loss = (w * w * data).sum()
    loss.backward()
    return [w.grad]


SCENARIOS = [constant_mul_, sgd_step_then_old_graph, slice_of_constant_zeroed,
             view_written_through_base, base_written_through_view,
             exp_output_scaled_under_no_grad, non_leaf_saved_by_mul,
             constant_rebound_by_recorded_add, non_leaf_rebound_after_add,
             non_leaf_rebound_after_sum_then_used, setitem_on_constant,
             detach_shares_the_version, written_operand_not_saved, only_the_partner_is_saved,
             matmul_saved_operand, retain_graph_then_write, write_before_recording_is_fine,
             sgd_loop]

EXPECTED = {   # tapegrad's own outcome, checked with or without PyTorch installed
    "constant_mul_": "is at version 1; expected version 0",
    "sgd_step_then_old_graph": "is at version 1; expected version 0",
    "slice_of_constant_zeroed": "is at version 1; expected version 0",
    "view_written_through_base": "is at version 1; expected version 0",
    "base_written_through_view": "is at version 1; expected version 0",
    "exp_output_scaled_under_no_grad": "which is output 0 of Exp, is at version 1; expected "
                                       "version 0",
    "non_leaf_saved_by_mul": "which is output 0 of Mul, is at version 2; expected version 0",
    "constant_rebound_by_recorded_add": "which is output 0 of Add, is at version 1",
    "setitem_on_constant": "is at version 1; expected version 0",
    "detach_shares_the_version": "is at version 1; expected version 0",
    "matmul_saved_operand": "is at version 1; expected version 0",
    "retain_graph_then_write": "which is output 0 of Sin, is at version 1; expected version 0",
}


@pytest.mark.parametrize("program", SCENARIOS, ids=lambda p: p.__name__)
def test_scenario(program):
    kind, result = _outcome(program, tapegrad)
    expected = EXPECTED.get(program.__name__)
    if expected is None:
        assert kind == "ok", result
    else:
        assert kind == "error"
        assert result.startswith("one of the variables needed for gradient computation has "
                                 "been modified by an inplace operation: ["), result
        assert expected in result


@pytest.mark.parametrize("program", SCENARIOS, ids=lambda p: p.__name__)
def test_scenario_matches_torch(program, torch):
    mine, theirs = _outcome(program, tapegrad), _outcome(program, torch)
    assert mine[0] == theirs[0], (mine, theirs)
    if mine[0] == "error":
        assert mine[1] == theirs[1]
    else:
        for m, t in zip(mine[1], theirs[1]):
            np.testing.assert_allclose(m, t, rtol=1e-15)


def test_full_message_and_hint():
    x = tapegrad.tensor([1., 2.], requires_grad=True)
    y = x * 2
    z = (y * y).sum()
    with tapegrad.no_grad():
        y.mul_(2)
    with pytest.raises(RuntimeError) as info:
        z.backward()
    assert str(info.value) == (
        "one of the variables needed for gradient computation has been modified by an inplace "
        "operation: [tapegrad.DoubleTensor [2]], which is output 0 of Mul, is at version 1; "
        "expected version 0 instead. Hint: enable anomaly detection to find the operation that "
        "failed to compute its gradient, with tapegrad.autograd.set_detect_anomaly(True).")


def test_float32_leaf_message():
    x = tapegrad.tensor([[1., 2.]], dtype=tapegrad.float32, requires_grad=True)
    loss = (x * x).sum()
    with tapegrad.no_grad():
        x.add_(1)
    with pytest.raises(RuntimeError, match=re.escape(
            "[tapegrad.FloatTensor [1, 2]] is at version 1; expected version 0 instead.")):
        loss.backward()


def test_anomaly_mode_hint_names_the_operation():
    x = tapegrad.tensor([1., 2.], requires_grad=True)
    with pytest.warns(UserWarning, match="Anomaly Detection has been enabled"):
        mode = tapegrad.detect_anomaly()
    with mode:
        y = x * 2
        z = (y * y).sum()
        line = z.grad_fn.inputs[0].grad_fn.where[1]
        with tapegrad.no_grad():
            y.mul_(2)
        with pytest.raises(RuntimeError) as info:
            z.backward()
    message = str(info.value)
    assert "which is output 0 of Mul, is at version 1; expected version 0 instead." in message
    assert message.endswith(f'Hint: the operation that failed to compute its gradient is '
                            f'MulBackward0, recorded at File "{__file__}", line {line}, in '
                            f'test_anomaly_mode_hint_names_the_operation: z = (y * y).sum(). '
                            f'The variable in question was changed in there or anywhere later. '
                            f'Good luck!')


def test_autograd_grad_and_forward_mode_check_too():
    x = tapegrad.tensor([1., 2.], requires_grad=True)
    c = tapegrad.tensor([3., 4.])
    y = (c * x).sum()
    c.zero_()
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        tapegrad.autograd.grad(y, x)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        tapegrad.autograd.jvp_of_graph(y, x, np.ones(2))


def test_version_property_matches_torch(torch):
    def program(L):
        a = L.tensor([1., 2., 3., 4.])
        seen = [a._version]
        a.add_(1)
        a.mul_(2)
        seen.append(a._version)
        v = a[1:3]
        v.zero_()                   # through a view: the base's version moves too
        seen += [a._version, v._version]
        a[0] = 5.0
        seen += [a._version, v._version]
        d = a.detach()
        d.fill_(1.0)
        seen += [a._version, d._version]
        a += 1                      # in memory (nothing recorded)
        seen.append(a._version)
        x = L.tensor([1., 2., 3., 4.], requires_grad=True)
        b = x * 2
        seen.append(b._version)
        b += 1                      # recorded: a rebinding
        b.mul_(3)
        seen.append(b._version)
        return seen
    assert program(tapegrad) == program(torch)


UNTOUCHED = """
import numpy as np, tapegrad
from tapegrad.eager import graph as _graph
x = tapegrad.tensor([1., 2.], requires_grad=True)
y = (x.exp() * x).sum()
assert not _graph._written and not _graph._rebound
assert y.grad_fn.inputs[0].grad_fn.versions is None
y.backward()
np.testing.assert_allclose(x.grad.numpy(), np.exp([1., 2.]) * (1 + np.array([1., 2.])))
"""


def test_untouched_programs_pay_nothing():
    """A program that never writes in place records no versions (the registries stay empty).
    In a fresh process: tensors other tests keep alive may hold registry entries here."""
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    run = subprocess.run([sys.executable, "-c", UNTOUCHED], cwd=root, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr


def test_registries_forget_dead_tensors():
    import gc
    gc.collect()
    before = (len(_graph._written), len(_graph._rebound))    # other tests' live tensors
    for _ in range(3):
        a = tapegrad.tensor([1., 2.])
        a.add_(1)
        x = tapegrad.tensor([1., 2.], requires_grad=True)
        b = x * 2
        b += 1
        del a, b, x
    gc.collect()
    assert len(_graph._written) <= before[0] and len(_graph._rebound) <= before[1]


def test_rebound_history_resolves_deep_chains():
    """Several recorded in-place updates of one tensor, each consumed before the next."""
    x = tapegrad.tensor([1., 2.], requires_grad=True)
    h = x * 1
    parts = []
    for k in range(4):
        parts.append(h + k)          # add saves nothing: each part keeps its own h
        h += x
    total = sum(p.sum() for p in parts) + h.sum()
    total.backward()
    # parts[k] = (k + 1) x + k, h = 5 x: d/dx = 1 + 2 + 3 + 4 + 5 per element
    np.testing.assert_array_equal(x.grad.numpy(), [15.0, 15.0])


def test_training_loop_updates_in_place_and_checks_only_what_it_must():
    """An SGD loop writes its parameters in place under no_grad: every later node records the
    versions it sees (None while all are 0), backward skips the check when nothing was written
    since the oldest node, and a write in between is still caught."""
    w = tapegrad.tensor([1.0, -2.0], requires_grad=True)
    x = tapegrad.tensor([3.0, 4.0])
    for _ in range(3):
        loss = (w * x).pow(2).sum()
        assert loss.grad_fn.inputs[0].grad_fn.versions is None or \
            any(loss.grad_fn.inputs[0].grad_fn.versions)
        loss.backward()
        expected = 2 * (w.data * x.data) * x.data
        np.testing.assert_allclose(w.grad.numpy(), expected)
        with tapegrad.no_grad():
            w -= 0.01 * w.grad
        w.grad = None
    assert _graph._written
    y = w * w                          # saves w at its current version
    unrelated = tapegrad.tensor([0.0])
    unrelated.add_(1)                  # a write after recording, into other memory
    y.sum().backward()
    np.testing.assert_allclose(w.grad.numpy(), 2 * w.data)
    z = (w * w).sum()
    with tapegrad.no_grad():
        w.mul_(2)                      # the saved operand itself
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        z.backward()


def test_recorded_versions_of_views_and_outputs():
    base = tapegrad.tensor([1.0, 2.0, 3.0, 4.0])
    base.add_(0)                       # version 1, shared by every view of its memory
    w = tapegrad.tensor([2.0, 2.0], requires_grad=True)
    view = base[1:3]
    y = w * view
    assert y.grad_fn.versions == (0, 1, 0)
    assert _graph._versions((w,), np.ones(2)) is None
