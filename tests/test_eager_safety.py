"""Eager inputs that used to crash or give silent garbage: `.data =` of another shape, complex
and object values, and bad arguments to `autograd.grad` / `backward`.

Crashes are run in a subprocess (a segfault would take pytest down): the program must end with
a Python exception, never a signal. Messages follow PyTorch's where PyTorch has the same error.
"""
import os
import re
import subprocess
import sys
import warnings

import numpy as np
import pytest

import tapegrad as tg

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(tg.__file__)))    # the tapegrad tested


@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch")


def _run(code):
    return subprocess.run([sys.executable, "-c", "import numpy as np, tapegrad as tg\n" + code],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)


# ---- `.data =` of another shape ---------------------------------------------------------------

_SHAPE_ERROR = ("one of the variables needed for gradient computation was given data of another "
                "shape (by .data =): ")


@pytest.mark.parametrize("index", ["[-3:]", "[np.array([10**7 - 1, 5, 2])]"])
def test_leaf_data_shrunk_after_a_slice_raises_instead_of_crashing(index):
    """The payload (a window or an index map) was built for 10**7 elements: the sweep read far
    out of bounds (SIGSEGV)."""
    run = _run(f"x = tg.ones(10**7, requires_grad=True); y = x{index} * 2.0\n"
               "x.data = np.ones(1)\n"
               "y.sum().backward()\n")
    assert run.returncode == 1, (run.returncode, run.stderr[-2000:])
    name = "SliceBackward0" if index == "[-3:]" else "IndexBackward0"
    assert run.stderr.strip().splitlines()[-1] == (
        f"RuntimeError: {_SHAPE_ERROR}input 0 of {name} had shape [10000000] when it was "
        "recorded, and the value backward would use has shape [1]. Assign .data a value of the "
        "recorded shape, or record the computation again.")


def test_leaf_data_grown_raises_instead_of_a_wrong_gradient():
    x = tg.ones(1, requires_grad=True)
    y = (x * x).sum()
    x.data = np.full(5, 2.)
    with pytest.raises(RuntimeError, match=re.escape(
            _SHAPE_ERROR + "input 0 of MulBackward0 had shape [1] when it was recorded, and the "
            "value backward would use has shape [5].")):
        y.backward()
    assert x.grad is None


@pytest.mark.parametrize("new_shape", [(1, 2), (2, 1), (4,)])
def test_any_change_of_shape_raises(new_shape):
    x = tg.ones(2, requires_grad=True)
    w = tg.ones((4, 2))
    y = (w @ x).sum()
    x.data = np.ones(new_shape)
    with pytest.raises(RuntimeError, match="given data of another shape"):
        y.backward()


def test_constant_of_a_matmul_given_another_shape():
    x = tg.ones((3, 4), requires_grad=True)
    w = tg.ones((4, 2))
    y = (x @ w).sum()
    w.data = np.ones((1, 2))
    with pytest.raises(RuntimeError, match=re.escape("input 1 of MmBackward0 had shape [4, 2]")):
        y.backward()


def test_non_leaf_data_given_another_shape_before_its_use():
    """A non-leaf's value in the tape is the one recorded; an operation recorded after `.data =`
    saw another shape (PyTorch: 'returned an invalid gradient ... expected shape')."""
    x = tg.ones(2, requires_grad=True)
    y = x * 2
    y.data = np.ones(3)
    z = (y * 3).sum()
    with pytest.raises(RuntimeError, match=re.escape(
            "input 0 of MulBackward0 had shape [3] when it was recorded, and the value backward "
            "would use has shape [2].")):
        z.backward()


def test_backward_seed_checked_against_the_recorded_shape():
    x = tg.ones(2, requires_grad=True)
    y = x * 2
    y.data = np.ones(10**6)
    with pytest.raises(RuntimeError, match=re.escape(
            "Mismatch in shape: grad_output[0] has a shape of tapegrad.Size([1000000]) and "
            "output[0] has a shape of tapegrad.Size([2]).")):
        y.backward(np.ones(10**6))


def test_same_shape_data_is_read_by_backward_as_in_torch(torch):
    """`.data =` with the shape kept is PyTorch's way to change a leaf's value without autograd
    knowing: backward reads the new value, and the version stays."""
    def program(L):
        x = L.tensor([1., 2.], dtype=L.float64, requires_grad=True)
        with L.no_grad():
            x.mul_(1)                       # version 1
        y = (x * x).sum()
        x.data = L.tensor([3., 4.], dtype=L.float64)
        y.backward()
        return x.grad.tolist(), x._version
    assert program(tg) == program(torch) == ([6.0, 8.0], 1)


def test_shape_restored_before_backward_is_fine():
    x = tg.ones(3, requires_grad=True)
    y = (x[1:] * 2).sum()
    x.data = np.ones(5)
    x.data = np.full(3, 7.0)
    y.backward()
    assert x.grad.tolist() == [0.0, 2.0, 2.0]


def test_shape_changed_before_recording_is_fine():
    x = tg.ones(10, requires_grad=True)
    x.data = np.arange(3.0)
    y = (x[1:] * x[1:]).sum()
    y.backward()
    assert x.grad.tolist() == [0.0, 2.0, 4.0]


def test_data_assignment_checks_its_value(torch):
    x = tg.tensor([1., 2.], requires_grad=True)
    with pytest.raises(TypeError, match="Variable data has to be a numpy array or a Tensor, but "
                                        "got list"):
        x.data = [1.0, 2.0]
    with pytest.raises(RuntimeError, match="data set to a tensor that requires gradients must be "
                                           "floating point or complex dtype"):
        x.data = np.array([1, 2])
    with pytest.raises(NotImplementedError, match="complex numbers are not supported"):
        x.data = np.array([1j, 2])
    with pytest.raises(TypeError, match="can't convert np.ndarray of type numpy.str_"):
        x.data = np.array(["a", "b"])
    x.data = tg.tensor([5., 6.])
    assert x.tolist() == [5.0, 6.0]
    t = torch.tensor([1., 2.], requires_grad=True)
    with pytest.raises(RuntimeError) as theirs:
        t.data = torch.tensor([1, 2])
    assert str(theirs.value) == ("data set to a tensor that requires gradients must be floating "
                                 "point or complex dtype")


# ---- complex and object values ----------------------------------------------------------------

_COMPLEX = "complex numbers are not supported by tapegrad's autograd"


@pytest.mark.parametrize("make", [
    lambda: tg.tensor([1 + 2j], requires_grad=True),
    lambda: tg.tensor([1 + 2j]).requires_grad_(),
    lambda: tg.ones(2, dtype=np.complex128, requires_grad=True),
    lambda: tg.zeros(2, dtype=np.complex64, requires_grad=True),
    lambda: tg.full((2,), 1j, requires_grad=True),
    lambda: tg.arange(3, dtype=np.complex128, requires_grad=True),
    lambda: tg.randn(2, dtype=np.complex128, requires_grad=True),
    lambda: tg.zeros_like(tg.ones(2), dtype=np.complex128, requires_grad=True),
    lambda: tg.Tensor(np.ones(2, complex), requires_grad=True),
], ids=["tensor", "requires_grad_", "ones", "zeros", "full", "arange", "randn", "zeros_like",
        "Tensor"])
def test_complex_tensors_cannot_require_grad(make):
    with pytest.raises(NotImplementedError, match=_COMPLEX):
        make()


def test_complex_values_recorded_into_a_graph_raise_at_backward():
    """The issue's result was [2+0j] with a ComplexWarning: the imaginary parts were dropped."""
    x = tg.tensor([1., 2.], requires_grad=True)
    c = tg.tensor([1j, 2.])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = (x * c).sum()
        with pytest.raises(NotImplementedError, match=_COMPLEX + ": the graph holds a value of "
                                                                 "dtype complex128"):
            y.backward()
        with pytest.raises(NotImplementedError, match=_COMPLEX):
            x.to(np.complex64).sum().backward()
    assert x.grad is None


def test_complex_tensors_without_grad_work_and_print(torch):
    t = tg.tensor([1 + 2j, -0.5j])
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)          # tapegrad's default
    try:
        assert repr(t * 2) == repr(torch.tensor([1 + 2j, -0.5j]) * 2)
    finally:
        torch.set_default_dtype(default)
    assert (t * t).tolist() == [(1 + 2j) ** 2, (-0.5j) ** 2]


@pytest.mark.parametrize("make", [
    lambda: tg.tensor(np.array(["a"])), lambda: tg.tensor(["a", "b"]),
    lambda: tg.tensor("abc"), lambda: tg.as_tensor(np.array(["a"])),
    lambda: tg.from_numpy(np.array(["a"])), lambda: tg.Tensor(np.array(["a"])),
    lambda: tg.zeros(2, dtype=str), lambda: tg.full((2,), "a"),
], ids=["array", "list", "str", "as_tensor", "from_numpy", "Tensor", "zeros", "full"])
def test_string_arrays_are_refused_at_creation(make):
    with pytest.raises(TypeError) as info:
        make()
    assert str(info.value) == (
        "can't convert np.ndarray of type numpy.str_. The only supported types are: float64, "
        "float32, float16, complex64, complex128, int64, int32, int16, int8, uint64, uint32, "
        "uint16, uint8, and bool.")


@pytest.mark.parametrize("make", [
    lambda: tg.tensor([object()]), lambda: tg.tensor([None]), lambda: tg.tensor(None),
    lambda: tg.from_numpy(np.array([None])), lambda: tg.zeros(2, dtype=object),
    lambda: tg.as_tensor(np.array([{}])), lambda: tg.ones(2) * np.array([object()]),
], ids=["object", "none-list", "none", "from_numpy", "zeros", "as_tensor", "operand"])
def test_object_arrays_are_refused_at_creation(make):
    with pytest.raises(TypeError, match="can't convert np.ndarray of type numpy.object_"):
        make()


def test_other_dtypes_are_refused_too(torch):
    dates = np.array(["2020-01-01"], "datetime64[D]")
    with pytest.raises(TypeError) as mine:
        tg.from_numpy(dates)
    with pytest.raises(TypeError) as theirs:
        torch.from_numpy(dates)
    assert str(mine.value) == str(theirs.value)
    with pytest.raises(TypeError) as mine:
        tg.tensor(np.array(["a"]))
    with pytest.raises(TypeError) as theirs:
        torch.tensor(np.array(["a"]))
    assert str(mine.value) == str(theirs.value)


# ---- autograd.grad and backward arguments -----------------------------------------------------

def _error(fn):
    try:
        fn()
    except Exception as err:        # noqa: BLE001 (the type is compared)
        return type(err).__name__, str(err).replace("tapegrad.", "torch.")
    return None


CALLS = {      # (an array as `inputs`: PyTorch iterates it and names numpy.float64, see below)
    "inputs with a number": lambda L, x: L.autograd.grad((x * 2).sum(), [x, 3]),
    "inputs empty": lambda L, x: L.autograd.grad((x * 2).sum(), []),
    "inputs empty tuple": lambda L, x: L.autograd.grad((x * 2).sum(), ()),
    "no outputs": lambda L, x: L.autograd.grad([], x),
    "grad_outputs of another shape": lambda L, x: L.autograd.grad(
        x * 2, x, L.ones(3, dtype=L.float64)),
    "grad_outputs a string": lambda L, x: L.autograd.grad(x * 2, x, "a"),
    "grad_outputs an object": lambda L, x: L.autograd.grad(x * 2, x, [object()]),
    "fewer grad_outputs": lambda L, x: L.autograd.grad(
        [x * 2, x * 3], x, [L.ones(2, dtype=L.float64)]),
    "non-scalar output without grad_outputs": lambda L, x: L.autograd.grad(x * 2, x),
    "output that requires no grad": lambda L, x: L.autograd.grad(L.ones(2).sum(), x),
    "input that requires no grad": lambda L, x: L.autograd.grad((x * 2).sum(), L.ones(2)),
    "backward inputs an array": lambda L, x: (x * 2).sum().backward(inputs=[np.ones(2)]),
    "backward inputs empty": lambda L, x: (x * 2).sum().backward(inputs=[]),
    "backward of a non-scalar": lambda L, x: (x * 2).backward(),
    "backward of a tensor without grad": lambda L, x: L.ones(2).sum().backward(),
    "fewer grad_tensors": lambda L, x: L.autograd.backward(
        [x * 2, x * 3], [L.ones(2, dtype=L.float64)]),
}


def _autograd_error(name, L):
    x = L.tensor([1., 2.], dtype=L.float64, requires_grad=True)
    return _error(lambda: CALLS[name](L, x))


@pytest.mark.parametrize("name", list(CALLS))
def test_autograd_argument_errors_match_torch(name, torch):
    mine, theirs = _autograd_error(name, tg), _autograd_error(name, torch)
    assert mine is not None and theirs is not None
    assert mine[0] == theirs[0]
    # PyTorch also accepts GradientEdges as inputs, and numpy arrays are not gradients there
    theirs_text = theirs[1].replace("Tensors or GradientEdges", "Tensors").replace(
        "either Tensors or None", "Tensors, numpy arrays, numbers or None")
    assert mine[1] == theirs_text


def test_autograd_grad_input_errors_name_the_type():
    x = tg.tensor([1., 2.], requires_grad=True)
    y = (x * 2).sum()
    assert _error(lambda: tg.autograd.grad(y, np.ones(2), retain_graph=True)) == (
        "RuntimeError", "all inputs have to be Tensors, but got numpy.ndarray")
    assert _error(lambda: tg.autograd.grad(y, [], retain_graph=True)) == (
        "RuntimeError", "`inputs` argument to `grad()` cannot be empty.")
    assert _error(lambda: tg.autograd.grad(y, None, retain_graph=True)) == (
        "RuntimeError", "`inputs` argument to `grad()` cannot be empty.")
    assert tg.autograd.grad(y, x)[0].tolist() == [2.0, 2.0]


def test_gradients_of_numpy_arrays_and_numbers_are_accepted():
    x = tg.tensor([1., 2.], requires_grad=True)
    (g,) = tg.autograd.grad(x * 2, x, np.array([1.0, 3.0]))
    assert g.tolist() == [2.0, 6.0]
    (g,) = tg.autograd.grad((x * 2).sum(), x, 2.0)
    assert g.tolist() == [4.0, 4.0]
    with pytest.raises(RuntimeError, match=re.escape(
            "For complex Tensors, both grad_output and output are required to have the same "
            "dtype. Mismatch in dtype: grad_output[0] has a dtype of complex128 and output[0] "
            "has a dtype of float64.")):
        tg.autograd.grad(x * 2, x, np.ones(2, complex))
