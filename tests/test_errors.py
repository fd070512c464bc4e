"""The error catalogue: one test per row of docs/errors.md.

`CASES` is the table: what is wrong, the code (run with `tg` = tapegrad, `np` = numpy and `tmp` =
a fresh directory), the exception it raises and its exact message (a message ending in "…" is
matched as a prefix: the rest depends on the machine; "{tmp}" stands for the directory). A row
whose exception is "none" documents a bad input that raises nothing: its `check` must hold.
`test_doc_and_table_agree` checks that docs/errors.md shows exactly this table; regenerate it
with `python tests/test_errors.py`.
"""
import importlib.util
import os
import re
import sys
import warnings

import numpy as np
import pytest

import tapegrad

DOC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs",
                   "errors.md")
START, END = "<!-- errors-table:start -->", "<!-- errors-table:end -->"

_TRACE = "t = tg.trace(lambda x: x.exp().sum(), np.ones(2)); "
_SAVED = _TRACE + "t.save(tmp + '/t.npz'); "
_EXP_X = "t = tg.trace(lambda x: (x.exp() * x).sum(), np.ones(3)); "
_LOADED = ("tg.trace(lambda x: (x * x).sum(), np.ones((3, 2))).save(tmp + '/t.npz'); "
           "t = tg.load(tmp + '/t.npz'); ")
_VERSION = ("one of the variables needed for gradient computation has been modified by an "
            "inplace operation: [tapegrad.DoubleTensor [2]], which is output 0 of Mul, is at "
            "version 1; expected version 0 instead. Hint: enable anomaly detection to find the "
            "operation that failed to compute its gradient, with "
            "tapegrad.autograd.set_detect_anomaly(True).")

CASES = [
    # ---- shapes ----
    dict(what="Shapes that do not broadcast",
         code="tg.ones(2, 3) + tg.ones(4)",
         raises="ValueError",
         message="operands could not be broadcast together with shapes (2,3) (4,) "),
    dict(what="matmul inner dimensions differ",
         code="tg.ones(2, 3) @ tg.ones(4, 2)",
         raises="ValueError",
         message="matmul: Input operand 1 has a mismatch in its core dimension 0, with gufunc "
                 "signature (n?,k),(k,m?)->(n?,m?) (size 4 is different from 3)"),
    dict(what="matmul of a 0-d tensor",
         code="tg.tensor(2.0) @ tg.ones(2)",
         raises="RuntimeError",
         message="both arguments to matmul need to be at least 1D, but they are 0D and 1D"),
    dict(what="reshape to a different size",
         code="tg.ones(6).reshape(4, 2)",
         raises="ValueError",
         message="cannot reshape array of size 6 into shape (4,2)"),
    dict(what="Reduction over a dimension that does not exist",
         code="tg.ones(2, 3).sum(dim=2)",
         raises="IndexError",
         message="Dimension out of range (expected to be in range of [-2, 1], but got 2)"),
    dict(what="A replayed tape called with another shape",
         code="t = tg.trace(lambda x: (x * 2).sum(), np.ones(3)); t(np.ones(4))",
         raises="ValueError",
         message="argument leaf 0 (array of shape (4,) and dtype float64) does not match the "
                 "traced one (array of shape (3,) and dtype float64); trace the function again"),
    dict(what="Gradient seed of the wrong shape",
         code="x = tg.ones(2, requires_grad=True); (x * 2).backward(tg.ones(3))",
         raises="RuntimeError",
         message="Mismatch in shape: grad_output[0] has a shape of tapegrad.Size([3]) and "
                 "output[0] has a shape of tapegrad.Size([2])."),
    dict(what="vmap over arguments with different batch sizes",
         code="tg.vmap(lambda x, y: (x * y).sum())(np.ones((3, 2)), np.ones((4, 2)))",
         raises="ValueError",
         message="vmap got inconsistent batch sizes [3, 4]"),
    # ---- dtypes ----
    dict(what="An integer tensor that requires grad",
         code="tg.tensor([1, 2], requires_grad=True)",
         raises="RuntimeError",
         message="Only Tensors of floating point and complex dtype can require gradients"),
    dict(what="grad of a function at integer inputs",
         code="tg.grad(lambda x: (x * 2).sum())(np.arange(3))",
         raises="TypeError",
         message="grad requires real-valued (floating point) inputs, but argument 0 has an "
                 "input of type int64; pass floats or mark the argument static by not "
                 "differentiating it"),
    dict(what="In-place result that cannot be cast back",
         code="i = tg.tensor([1, 2]); i += 1.5",
         raises="RuntimeError",
         message="result type Double can't be cast to the desired output type Long"),
    dict(what="Assigning a .grad of another dtype",
         code="x = tg.ones(2, requires_grad=True); x.grad = tg.ones(2, dtype=tg.float32)",
         raises="RuntimeError",
         message="attempting to assign a gradient with dtype 'float32' to a tensor with dtype "
                 "'float64'. Please ensure that the gradient and the tensor have the same dtype"),
    dict(what="A numpy function tapegrad does not implement",
         code="np.spacing(tg.ones(2))",
         raises="TypeError",
         message="tapegrad does not support numpy.spacing on Tensors ; use a tapegrad operation"),
    # ---- NaN, inf, empty, huge ----
    dict(what="NaN made by a backward (anomaly mode)",
         code="tg.set_detect_anomaly(True); x = tg.tensor([0.0, 1.0], requires_grad=True); "
              "((x ** 0.5) * 0).sum().backward()",
         raises="RuntimeError",
         message="Function 'PowBackward0' returned nan values in its 0th output. The operation "
                 "was recorded at File \"<errors.md>\", line 1, in <module>."),
    dict(what="Infinity made by a forward (anomaly mode)",
         code="tg.set_detect_anomaly(True); x = tg.tensor([0.0, 1.0], requires_grad=True); "
              "x.log()",
         raises="RuntimeError",
         message="Function 'LogBackward0' returned inf values in its forward output although "
                 "its inputs are finite (anomaly mode). The operation was recorded at File "
                 "\"<errors.md>\", line 1, in <module>."),
    dict(what="NaN inputs outside anomaly mode",
         code="result = tg.grad(lambda x: x.log().sum())(np.array([np.nan, -1.0]))",
         raises="none",
         message="no error: the gradient is [nan, -1.0] (as in PyTorch; use anomaly mode to "
                 "find where NaNs start)",
         check="np.isnan(result[0]) and result[1] == -1.0"),
    dict(what="max of an empty tensor",
         code="tg.amax(tg.zeros(0))",
         raises="RuntimeError",
         message="max(): Expected reduction dim to be specified for input.numel() == 0. "
                 "Specify the reduction dim with the 'dim' argument."),
    dict(what="vmap over an empty batch",
         code="result = tg.vmap(tg.grad(lambda x: (x * x).sum()))(np.zeros((0, 3)))",
         raises="none",
         message="no error: an empty result of the per-point shape, (0, 3), as jax.vmap gives",
         check="result.shape == (0, 3)"),
    dict(what="A huge allocation",
         code="tg.zeros(10 ** 13)",
         raises="MemoryError",
         message="Unable to allocate 72.8 TiB for an array with shape (10000000000000,) and "
                 "data type float64"),
    dict(what="A tape file larger than load's limit",
         code=_SAVED + "tg.load(tmp + '/t.npz', max_bytes=1000)",
         raises="TapeFormatError",
         message="{tmp}/t.npz: the file holds more than max_bytes=1000 bytes of arrays (array "
                 "'S': 176 bytes)"),
    # ---- backward ----
    dict(what="backward twice without retain_graph",
         code="x = tg.ones(2, requires_grad=True); y = (x * x).sum(); y.backward(); "
              "y.backward()",
         raises="RuntimeError",
         message="Trying to backward through the graph a second time (or directly access saved "
                 "tensors after they have already been freed). Saved intermediate values of the "
                 "graph are freed when you call .backward() or autograd.grad(). Specify "
                 "retain_graph=True if you need to backward through the graph a second time or "
                 "if you need to access saved tensors after calling backward."),
    dict(what="backward of a non-scalar without a gradient",
         code="(tg.ones(2, requires_grad=True) * 2).backward()",
         raises="RuntimeError",
         message="grad can be implicitly created only for scalar outputs"),
    dict(what="backward of a tensor that requires no grad",
         code="tg.ones(2).sum().backward()",
         raises="RuntimeError",
         message="element 0 of tensors does not require grad and does not have a grad_fn"),
    dict(what="autograd.grad of an unused input",
         code="x = tg.ones(2, requires_grad=True); z = tg.ones(2, requires_grad=True); "
              "tg.autograd.grad((x * 2).sum(), [x, z])",
         raises="RuntimeError",
         message="The differentiated Tensor at index 1 appears to not have been used in the "
                 "graph. Set allow_unused=True if this is the desired behavior."),
    dict(what="create_graph=True",
         code="x = tg.ones(2, requires_grad=True); (x * x).sum().backward(create_graph=True)",
         raises="NotImplementedError",
         message="create_graph=True: use the function transforms (tapegrad.grad, hessian, hvp) "
                 "for higher derivatives"),
    dict(what="grad of a function with a non-scalar output",
         code="tg.grad(lambda x: x * 2)(np.ones(3))",
         raises="TypeError",
         message="grad requires a scalar output; use jacobian or vjp (the output has shape "
                 "(3,))"),
    dict(what="argnums out of range",
         code="tg.grad(lambda x: x.sum(), argnums=2)(np.ones(3))",
         raises="TypeError",
         message="argnums=(2,) is out of range for a call with 1 positional argument (argnums "
                 "must be in [-1, 0])"),
    dict(what="Third-order derivatives",
         code="tg.hessian(lambda x: tg.grad(lambda y: (y ** 3).sum())(x).sum())(np.ones(2))",
         raises="NotImplementedError",
         message="third-order derivatives: a nested transform inside hessian/hvp (or a "
                 "second-order transform of a gradient) is not supported"),
    # ---- in place ----
    dict(what="In-place operation on a leaf that requires grad",
         code="x = tg.ones(2, requires_grad=True); x.add_(1)",
         raises="RuntimeError",
         message="a leaf Variable that requires grad is being used in an in-place operation."),
    dict(what="A value saved for backward modified in place",
         code="x = tg.ones(2, requires_grad=True); y = x * 2; z = (y * y).sum(); "
              "tg.set_grad_enabled(False); y.mul_(2); tg.set_grad_enabled(True); z.backward()",
         raises="RuntimeError",
         message=_VERSION),
    dict(what="numpy() of a tensor that requires grad",
         code="tg.ones(2, requires_grad=True).numpy()",
         raises="RuntimeError",
         message="Can't call numpy() on Tensor that requires grad. Use tensor.detach().numpy() "
                 "instead."),
    dict(what="bool() of a tensor with several values",
         code="bool(tg.ones(2))",
         raises="RuntimeError",
         message="Boolean value of Tensor with more than one value is ambiguous"),
    # ---- transforms: closures, Python numbers, guards ----
    dict(what="A value kept from a finished trace used in another",
         code="kept = []; tg.grad(lambda x: kept.append(x * 2) or x)(1.0); "
              "tg.grad(lambda y: y * kept[0])(1.0)",
         raises="TypeError",
         message="<lambda> uses a value traced by a function transform that has finished (kept "
                 "beyond the traced call, e.g. in a global or a list); it holds the values of "
                 "that trace only. Pass it as an argument, or use it inside the transformed "
                 "function"),
    dict(what="vmap inside a traced function, closing over its traced values",
         code="tg.grad(lambda x: np.sum(tg.vmap(lambda y: x * y)(np.ones((3, 2)))))(np.ones(2))",
         raises="NotImplementedError",
         message="a function that closes over values an enclosing computation records (traced "
                 "by a function transform, or tensors that require grad) can be transformed by "
                 "grad, value_and_grad, jacrev, jacfwd and jacobian only; pass those values as "
                 "arguments to other transforms (vmap, vjp, jvp, hessian ...)"),
    dict(what="A traced value converted to a plain array by numpy",
         code="tg.grad(lambda x: np.exp([x, x]).sum())(1.0)",
         raises="ArrayConversionError",
         message="numpy tried to convert a traced value to a plain array, which would freeze it "
                 "into the tape and drop its derivatives. Build arrays from traced values with "
                 "np.array, np.asarray, np.stack or np.concatenate (numpy functions such as "
                 "np.sum([x, y]) take lists of them too); for a ufunc on a list (np.exp([x, y])) "
                 "build the array first, and to fill an array start from one made from the "
                 "traced value (np.zeros_like(x)), not from np.zeros. A plain array's methods "
                 "convert their arguments too: for y.dot(x) write y @ x or np.dot(y, x)."),
    dict(what="A bitwise operator on traced integers",
         code="tg.grad(lambda x: (x.astype(int) & 1).sum() * x)(1.0)",
         raises="TypeError",
         message="tapegrad does not support numpy.bitwise_and of recorded non-boolean values "
                 "(an integer bit pattern has no derivative and no tape entry)"),
    dict(what="grad of a complex input",
         code="tg.grad(lambda x: np.sum(x))(np.array([1 + 2j]))",
         raises="TypeError",
         message="grad of a complex input (argument 0, complex128): complex numbers are not "
                 "supported; tapegrad differentiates real floating point values only (pass the "
                 "real and imaginary parts as two real arrays)"),
    dict(what="A traced value converted to complex",
         code="tg.grad(lambda x: np.sum(x.astype(complex)))(np.ones(2))",
         raises="TypeError",
         message="complex numbers are not supported: astype(complex128) would make a complex "
                 "value, and tapegrad differentiates real floating-point values only (carry the "
                 "real and imaginary parts as two real arrays)"),
    dict(what="A closed-over array mutated between calls",
         code="a = np.ones(2); g = tg.grad(lambda x: (x * a).sum()); g(np.ones(2)); a[:] = 5; "
              "result = g(np.ones(2))",
         raises="none",
         message="no error: the result is [1.0, 1.0], from the value captured at trace time "
                 "(as jax.jit); pass capture='call' to re-read closed-over arrays at every call",
         check="result.tolist() == [1.0, 1.0]"),
    dict(what="item() of a traced value",
         code="tg.grad(lambda x: x.sum().item())(np.ones(2))",
         raises="TypeError",
         message="item() of a traced value: a tape cannot replay Python numbers computed from "
                 "its inputs. Keep the computation in tapegrad ops (comparisons in `if` are "
                 "fine: they become guards)."),
    dict(what="A tape replayed on the other side of a guard",
         code="t = tg.trace(lambda x: x.sum() if x.sum() > 0 else -x.sum(), np.ones(2)); "
              "t(-np.ones(2))",
         raises="GuardError",
         message="these inputs take another branch of the traced function than the tape "
                 "recorded; call the function transform (which retraces) instead of replaying "
                 "the tape directly"),
    # ---- files and tapes ----
    dict(what="A file that is not a tape",
         code="open(tmp + '/bad.npz', 'wb').write(b'not a zip'); tg.load(tmp + '/bad.npz')",
         raises="TapeFormatError",
         message="{tmp}/bad.npz: not a tape file (BadZipFile: File is not a zip file)"),
    dict(what="A truncated tape file",
         code=_SAVED + "open(tmp + '/t.npz', 'r+b').truncate(500); tg.load(tmp + '/t.npz')",
         raises="TapeFormatError",
         message="{tmp}/t.npz: not a tape file (BadZipFile: File is not a zip file)"),
    dict(what="A corrupted tape file (one bit flipped)",
         code=_SAVED + "b = bytearray(open(tmp + '/t.npz', 'rb').read()); b[600] ^= 4; "
              "open(tmp + '/t.npz', 'wb').write(b); tg.load(tmp + '/t.npz')",
         raises="TapeFormatError",
         message="{tmp}/t.npz: corrupted tape file (BadZipFile: Bad CRC-32 for file 'E.npy')"),
    dict(what="A missing tape file",
         code="tg.load(tmp + '/missing.npz')",
         raises="FileNotFoundError",
         message="[Errno 2] No such file or directory: '{tmp}/missing.npz'"),
    dict(what="Tape arrays with an out-of-range slot",
         code=_TRACE + "a = tg.transforms.io.to_arrays(t); a['E'][0, 1] = 99; tg.transforms.io.from_arrays(a)",
         raises="TapeFormatError",
         message="entry 0: operand slot 99 out of range [0, 3)"),
    dict(what="Sweeping tape arrays that were never validated",
         code=_TRACE + "import types; tg.core.sweep.forward(types.SimpleNamespace(E=t.E, FC=t.FC, "
              "IP=t.IP, S=t.S, NEED=t.NEED, calls=[]), t.V0.copy())",
         raises="TapeFormatError",
         message="refusing to sweep a SimpleNamespace that has not been validated: tapes built "
                 "from arrays (not recorded or traced in this process) must pass "
                 "tapegrad.validate_tape(tape) (tapegrad.load does) before they are replayed"),
    dict(what="Saving a tape with a nested transform",
         code="inner = tg.grad(lambda x, a: (a * x ** 3).sum()); "
              "t = tg.trace(lambda a: inner(np.ones(3), a).sum(), np.ones(3)); "
              "tg.transforms.io.save(t, tmp + '/t.npz')",
         raises="TypeError",
         message="a tape with nested transforms holds Python code and cannot be saved"),
    # ---- CUDA on a machine without it ----
    dict(what="vmap(device='cuda') without a usable GPU",
         code="tg.vmap(lambda x: x.sum(), device='cuda')(np.ones((3, 2)))",
         raises="RuntimeError",
         message="device='cuda': no usable CUDA GPU: …"),
    dict(what="device='cuda' on a tensor factory",
         code="tg.ones(2, device='cuda')",
         raises="TypeError",
         message="ones() got an unexpected keyword argument 'device'"),
    # ---- vmap arguments (numbered after the rest: notes cite rows by number) ----
    dict(what="A keyword argument to a vmapped function",
         code="tg.vmap(lambda x, scale=1.0: x.sum() * scale)(np.ones((3, 2)), scale=2.0)",
         raises="TypeError",
         message="a vmapped function takes positional arguments only (got 'scale'): pass them "
                 "positionally, with in_axes None for unmapped ones, or bind them with "
                 "functools.partial"),
    # ---- eager tensors: views, .data, dtypes, autograd's arguments ----
    dict(what="Leaf data replaced by another shape after recording",
         code="x = tg.ones(10, requires_grad=True); y = x[-3:] * 2.0; x.data = np.ones(1); "
              "y.sum().backward()",
         raises="RuntimeError",
         message="one of the variables needed for gradient computation was given data of "
                 "another shape (by .data =): input 0 of SliceBackward0 had shape [10] when it "
                 "was recorded, and the value backward would use has shape [1]. Assign .data a "
                 "value of the recorded shape, or record the computation again."),
    dict(what=".data set to a value that is not an array",
         code="x = tg.ones(2); x.data = [1.0, 2.0]",
         raises="TypeError",
         message="Variable data has to be a numpy array or a Tensor, but got list"),
    dict(what=".data of a tensor that requires grad set to integers",
         code="x = tg.ones(2, requires_grad=True); x.data = np.arange(2)",
         raises="RuntimeError",
         message="data set to a tensor that requires gradients must be floating point or "
                 "complex dtype"),
    dict(what="A value saved for backward modified through a view",
         code="x = tg.ones(2, requires_grad=True); y = x * 2; z = (y * y).sum(); "
              "y[0:1].mul_(3); z.backward()",
         raises="RuntimeError",
         message="one of the variables needed for gradient computation has been modified by an "
                 "inplace operation: [tapegrad.DoubleTensor [2]], which is output 0 of "
                 "torch::autograd::CopySlices, is at version 1; expected version 0 instead. "
                 "Hint: enable anomaly detection to find the operation that failed to compute "
                 "its gradient, with tapegrad.autograd.set_detect_anomaly(True)."),
    dict(what="In-place operation on a view of a leaf that requires grad",
         code="x = tg.ones(2, requires_grad=True); x[0] = 5.0",
         raises="RuntimeError",
         message="a view of a leaf Variable that requires grad is being used in an in-place "
                 "operation."),
    dict(what="In-place operation, with grad on, on a view made under no_grad",
         code="x = tg.ones(2, requires_grad=True); y = x * 1; tg.set_grad_enabled(False); "
              "v = y[0:1]; tg.set_grad_enabled(True); v.mul_(2)",
         raises="RuntimeError",
         message="A view was created in no_grad mode and is being modified inplace with grad "
                 "mode enabled. Given that this use case is ambiguous and error-prone, it is "
                 "forbidden. You can clarify your code by moving both the view and the inplace "
                 "either both inside the no_grad block (if you don't want the inplace to be "
                 "tracked) or both outside (if you want the inplace to be tracked)."),
    dict(what="In-place operation on a broadcast (expanded) tensor",
         code="tg.broadcast_to(tg.ones(3), (2, 3)).add_(1)",
         raises="RuntimeError",
         message="unsupported operation: more than one element of the written-to tensor refers "
                 "to a single memory location. Please clone() the tensor before performing the "
                 "operation."),
    dict(what="view() of a shape that only a copy can give",
         code="tg.arange(4.0).reshape(2, 2).t().view(4)",
         raises="RuntimeError",
         message="view size is not compatible with input tensor's size and stride (at least "
                 "one dimension spans across two contiguous subspaces). Use .reshape(...) "
                 "instead."),
    dict(what="detach_() of a view",
         code="x = tg.ones(2, requires_grad=True); (x * 1)[0:1].detach_()",
         raises="RuntimeError",
         message="Can't detach views in-place. Use detach() instead."),
    dict(what="A value saved for backward detached in place",
         code="x = tg.ones(2, requires_grad=True); w = tg.ones(2, requires_grad=True); "
              "y = x * 2; z = (y * w).sum(); y.detach_(); z.backward()",
         raises="RuntimeError",
         message="Trying to use a saved tensor that has been detached in-place, i.e. with "
                 ".detach_().This is not supported, please use out-of-place `.detach()` "
                 "instead"),
    dict(what="A complex tensor that requires grad",
         code="tg.tensor([1 + 2j], requires_grad=True)",
         raises="NotImplementedError",
         message="complex numbers are not supported by tapegrad's autograd: a complex tensor "
                 "cannot require grad (differentiate the real and imaginary parts as two real "
                 "tensors)"),
    dict(what="A complex value recorded into a graph",
         code="x = tg.ones(2, requires_grad=True); (x * tg.tensor([1j, 2])).sum().backward()",
         raises="NotImplementedError",
         message="complex numbers are not supported by tapegrad's autograd: the graph holds a "
                 "value of dtype complex128 (an operation on a complex tensor was recorded); "
                 "differentiate the real and imaginary parts as two real tensors"),
    dict(what="A tensor of strings",
         code="tg.tensor(['a', 'b'])",
         raises="TypeError",
         message="can't convert np.ndarray of type numpy.str_. The only supported types are: "
                 "float64, float32, float16, complex64, complex128, int64, int32, int16, int8, "
                 "uint64, uint32, uint16, uint8, and bool."),
    dict(what="A tensor of Python objects",
         code="tg.tensor([None, 1])",
         raises="TypeError",
         message="can't convert np.ndarray of type numpy.object_. The only supported types "
                 "are: float64, float32, float16, complex64, complex128, int64, int32, int16, "
                 "int8, uint64, uint32, uint16, uint8, and bool."),
    dict(what="autograd.grad with inputs that are not tensors",
         code="x = tg.ones(2, requires_grad=True); tg.autograd.grad((x * 2).sum(), np.ones(2))",
         raises="RuntimeError",
         message="all inputs have to be Tensors, but got numpy.ndarray"),
    dict(what="autograd.grad with no inputs",
         code="x = tg.ones(2, requires_grad=True); tg.autograd.grad((x * 2).sum(), [])",
         raises="RuntimeError",
         message="`inputs` argument to `grad()` cannot be empty."),
    dict(what="A gradient of an unusable type",
         code="x = tg.ones(2, requires_grad=True); tg.autograd.grad(x * 2, x, 'a')",
         raises="TypeError",
         message="gradients can be Tensors, numpy arrays, numbers or None, but got str"),
    dict(what="Fewer gradients than outputs",
         code="x = tg.ones(2, requires_grad=True); tg.autograd.backward([x * 2, x * 3], "
              "[tg.ones(2)])",
         raises="RuntimeError",
         message="got 2 tensors and 1 gradients"),
    # ---- transforms and vmap: options, tangents, in_axes, dot, capture="call" ----
    dict(what="vmap chunk_size of 0 or below",
         code="tg.vmap(lambda x: x.sum(), chunk_size=0)",
         raises="ValueError",
         message="vmap chunk_size must be a positive int or None (the points processed at "
                 "once), got 0"),
    dict(what="vmap chunk_size that is not an int",
         code="tg.vmap(lambda x: x.sum(), chunk_size=2.5)",
         raises="TypeError",
         message="vmap chunk_size must be a positive int or None, got 2.5 (float)"),
    dict(what="vmap in_axes with a float",
         code="tg.vmap(lambda x, y: (x * y).sum(), in_axes=(0, 1.5))",
         raises="TypeError",
         message="vmap in_axes must be an int, None, or a (nested) tuple/list/dict of them, got "
                 "(0, 1.5): in_axes[1] is 1.5 (float)"),
    dict(what="vmap in_axes beyond the argument's axes",
         code="tg.vmap(lambda x: x.sum(), in_axes=2)(np.ones((3, 2)))",
         raises="ValueError",
         message="vmap: in_axes=2 for an argument of shape (3, 2) (2 axes: in_axes must be in "
                 "[-2, 1] or None)"),
    dict(what="vmap in_axes tree that does not match its argument",
         code="tg.vmap(lambda p: p['a'].sum(), in_axes=({'a': 0},))({'a': np.ones((3, 2)), "
              "'b': np.ones(2)})",
         raises="ValueError",
         message="vmap in_axes[0] is {'a': 0}, which does not match the structure of its "
                 "argument, {'a': *, 'b': *}: give an int or None for the whole argument, or a "
                 "tree of them with its structure"),
    dict(what="vmap out_axes that is not an int",
         code="tg.vmap(lambda x: x * 2, out_axes=1.5)",
         raises="TypeError",
         message="vmap out_axes must be an int, got 1.5 (float)"),
    dict(what="vmap out_axes other than 0",
         code="tg.vmap(lambda x: x * 2, out_axes=1)",
         raises="NotImplementedError",
         message="vmap supports out_axes=0 (the batch axis first), got out_axes=1; move the "
                 "axis afterwards (np.moveaxis)"),
    dict(what="vmap progress that is not a bool",
         code="tg.vmap(lambda x: x.sum(), progress='yes')",
         raises="TypeError",
         message="vmap progress must be True or False, got 'yes'"),
    dict(what="vmap fuse that is not 'auto' or a bool",
         code="tg.vmap(lambda x: x.sum(), fuse='always')",
         raises="ValueError",
         message="vmap fuse must be 'auto', True or False, got 'always'"),
    dict(what="vmap of jvp with tangents of another shape than the primals",
         code="import functools; tg.vmap(functools.partial(tg.jvp, lambda x: x * x))("
              "(np.ones((4, 5)),), (np.ones((4, 3)),))",
         raises="ValueError",
         message="vmap(partial(jvp, f)): tangent of shape (3,) for a primal of shape (5,) at "
                 "each point (primal leaf 0; shapes without the batch axis)"),
    dict(what="vmap of jvp with fewer tangents than primals",
         code="import functools; tg.vmap(functools.partial(tg.jvp, lambda x, y: x * y))("
              "(np.ones((4, 2)), np.ones((4, 2))), (np.ones((4, 2)),))",
         raises="ValueError",
         message="vmap(partial(jvp, f)): primals and tangents must have the same structure"),
    dict(what="vmap over a dask array of unknown chunk sizes",
         code="import dask.array as da; X = da.ones((10, 3), chunks=(5, 3)); "
              "tg.vmap(lambda x: x.sum())(X[X[:, 0] > 0])",
         raises="ValueError",
         message="vmap on a dask array with unknown chunk sizes (chunks ((nan, nan), (3,))), as "
                 "after boolean indexing or a filter: vmap needs the number of points in every "
                 "block. Compute them first: X = X.compute_chunk_sizes() (this evaluates X once; "
                 "for a dask dataframe, df.to_dask_array(lengths=True))"),
    dict(what="vmap over points of size 0",
         code="result = tg.vmap(tg.grad(lambda x: (x * x).sum()))(np.zeros((4, 0)))",
         raises="none",
         message="no error: an empty result of the per-point shape, (4, 0), as jax.vmap gives",
         check="result.shape == (4, 0)"),
    dict(what="tapegrad.dot of a matrix (PyTorch's dot is 1-D)",
         code="tg.dot(tg.ones(2, 3), tg.ones(3))",
         raises="RuntimeError",
         message="1D tensors expected, but got 2D and 1D tensors"),
    dict(what="tapegrad.dot of vectors of different sizes",
         code="tg.dot(tg.ones(3), tg.ones(4))",
         raises="RuntimeError",
         message="inconsistent tensor size, expected tensor [3] and src [4] to have the same "
                 "number of elements, but got 3 and 4 elements respectively"),
    dict(what="tapegrad.dot of vectors of different dtypes",
         code="tg.dot(tg.ones(3, dtype=tg.float32), tg.ones(3))",
         raises="RuntimeError",
         message="dot : expected both vectors to have same dtype, but found Float and Double"),
    dict(what="np.dot of tensors whose shapes do not align",
         code="np.dot(tg.ones(2, 3, requires_grad=True), tg.ones(4))",
         raises="ValueError",
         message="shapes (2,3) and (4,) not aligned: 3 (dim 1) != 4 (dim 0)"),
    dict(what="A closed-over array rebound between calls, with capture='call'",
         code="w = np.ones(2); g = tg.grad(lambda x: (x * w).sum(), capture='call'); "
              "g(np.ones(2)); w = np.full(2, 5.0); result = g(np.ones(2))",
         raises="none",
         message="no error: the result is [5.0, 5.0], from the new array (a variable of the "
                 "closure, a global or an attribute is followed; an array held elsewhere is "
                 "re-read but its rebinding is not seen: that warns once, when traced)",
         check="result.tolist() == [5.0, 5.0]"),
    # ---- a tape's buffers, arrays, inputs and files (tests/test_tape_safety.py, test_io.py) ----
    dict(what="Sweeping a tape with a seed buffer of the wrong width",
         code=_EXP_X + "V = t.load([np.ones(3)]); t.forward(V); t.backward(V, np.zeros((1, 4)))",
         raises="ValueError",
         message="seeds must have shape (k, 10), got (1, 4)"),
    dict(what="Sweeping a tape with a value buffer of another dtype",
         code=_EXP_X + "t.forward(np.zeros(t.V0.size, np.int64))",
         raises="TypeError",
         message="V must have dtype float64 (the tape's), got int64"),
    dict(what="Sweeping a tape with a value buffer of the wrong size",
         code=_EXP_X + "t.forward(np.zeros(3))",
         raises="ValueError",
         message="V must have shape (10,), got (3,)"),
    dict(what="Editing a tape's arrays",
         code=_EXP_X + "t.IP[:] = 10 ** 12",
         raises="ValueError",
         message="assignment destination is read-only"),
    dict(what="Making a tape's array writable again",
         code=_EXP_X + "t.E.flags.writeable = True",
         raises="ValueError",
         message="cannot set WRITEABLE flag to True of this array"),
    dict(what="A loaded tape called with another shape",
         code=_LOADED + "t(np.ones((2, 3)))",
         raises="ValueError",
         message="argument leaf 0 (array of shape (2, 3) and dtype float64) does not match the "
                 "tape's input (array of shape (3, 2) and dtype float64)"),
    dict(what="A loaded tape called with integers",
         code=_LOADED + "t(np.ones((3, 2), np.int64))",
         raises="ValueError",
         message="argument leaf 0 (array of shape (3, 2) and dtype int64) does not match the "
                 "tape's input (array of shape (3, 2) and dtype float64)"),
    dict(what="A tape called with complex numbers",
         code="t = tg.trace(lambda x: (x * x).sum(), np.ones(2)); t(np.ones(2) + 1j)",
         raises="TypeError",
         message="argument leaf 0 is complex (complex128): complex numbers are not supported; "
                 "tapes compute in real floating point"),
    dict(what="Saving an output dict key that a file cannot hold",
         code="t = tg.trace(lambda x: {frozenset({1}): x.sum()}, np.ones(2)); "
              "t.save(tmp + '/t.npz')",
         raises="TypeError",
         message="cannot save an output tree with a dict key of type frozenset "
                 "(frozenset({1})): keys are str, int, float, bool, None or tuples of them"),
    dict(what="load's max_bytes that is not a number of bytes",
         code=_SAVED + "tg.load(tmp + '/t.npz', max_bytes='10')",
         raises="TypeError",
         message="max_bytes must be an int (the most bytes of arrays to read), got str '10'"),
    dict(what="vmap of a function whose branches return outputs of other sizes",
         code="tg.vmap(lambda x: x[:2] * 1.0 if x[0] > 0 else x[:3] * 1.0, fuse=False)("
              "np.array([[1.0, 2, 3], [-1.0, 2, 3]]))",
         raises="RuntimeError",
         message="vmap: a branch changed the output's size (2 result values per point on the "
                 "first tape traced, 3 on this branch's)"),
    dict(what="np.nan_to_num(copy=False) of a tensor (in place)",
         code="np.nan_to_num(tg.ones(2), copy=False)",
         raises="TypeError",
         message="nan_to_num(copy=False) would replace the values of a Tensor in place; "
                 "Tensors support copy=True only (use the result)"),
    dict(what="A numpy argument that tensors do not support",
         code="np.cumsum(tg.ones(2, 3, requires_grad=True), out=np.empty(6))",
         raises="TypeError",
         message="numpy.cumsum: the argument out= is not supported on Tensors"),
    dict(what="A numpy argument that must be constant, traced",
         code="np.quantile(tg.ones(3, requires_grad=True), tg.tensor(0.5, requires_grad=True))",
         raises="NotImplementedError",
         message="numpy.quantile: q that depends on traced values is not supported (its "
                 "gradient); pass a constant"),
    dict(what="tapegrad.quantile with a traced q",
         code="tg.quantile(tg.ones(3), tg.tensor(0.5, requires_grad=True))",
         raises="NotImplementedError",
         message="quantile(): q must be a constant (its gradient is not supported)"),
    dict(what="tapegrad.quantile with q outside [0, 1]",
         code="tg.quantile(tg.ones(3), 1.5)",
         raises="RuntimeError",
         message="quantile() q must be in the range [0, 1] but got 1.5"),
    dict(what="tapegrad.quantile of integers",
         code="tg.quantile(tg.tensor([1, 2]), 0.5)",
         raises="RuntimeError",
         message="quantile() input tensor must be either float or double dtype"),
    dict(what="tapegrad.diff of a 0-d tensor",
         code="tg.diff(tg.tensor(1.0))",
         raises="RuntimeError",
         message="diff expects input to be at least one-dimensional"),
    dict(what="tapegrad.median along an empty dimension",
         code="tg.median(tg.ones(2, 0), 1)",
         raises="IndexError",
         message="median(): Expected reduction dim 1 to have non-zero size."),
    dict(what="tapegrad.var of integers",
         code="tg.var(tg.tensor([1, 2]))",
         raises="RuntimeError",
         message="std and var only support floating point and complex dtypes"),
    # ---- numpy's shape functions and products on tensors ----
    dict(what="numpy.pad with a mode tapegrad does not pad with",
         code="np.pad(tg.ones(2, requires_grad=True), 1, 'mean')",
         raises="NotImplementedError",
         message="numpy.pad with mode 'mean' on Tensors: tapegrad pads with the modes "
                 "'constant', 'edge', 'reflect', 'symmetric', 'wrap' (reflect_type 'even')"),
    dict(what="out= to a numpy function on tensors (take, trace, outer, einsum)",
         code="np.take(tg.ones(3, requires_grad=True), [0], out=np.zeros(1))",
         raises="TypeError",
         message="numpy.take on Tensors does not write into out=; use its result"),
    # ---- np.linalg ----
    dict(what="np.linalg.solve of a singular matrix",
         code="tg.grad(lambda A: np.linalg.solve(A, np.ones(2)).sum())(np.ones((2, 2)))",
         raises="LinAlgError",
         message="Singular matrix"),
    dict(what="A singular matrix at a replay of a traced solve",
         code="g = tg.grad(lambda A: np.linalg.inv(A).sum()); g(np.eye(2)); g(np.ones((2, 2)))",
         raises="LinAlgError",
         message="Singular matrix"),
    dict(what="np.linalg.cholesky of a matrix that is not positive definite",
         code="tg.grad(lambda A: np.linalg.cholesky(A).sum())(-np.eye(2))",
         raises="LinAlgError",
         message="Matrix is not positive definite"),
    dict(what="A matrix at a replay of a traced eigh or eigvalsh where LAPACK does not converge",
         code="g = tg.grad(lambda A: np.linalg.eigvalsh(A).sum()); g(np.eye(3)); "
              "g(np.full((3, 3), np.nan))",
         raises="LinAlgError",
         message="Eigenvalues did not converge"),
    dict(what="A matrix at a replay of a traced svd where LAPACK does not converge",
         code="g = tg.grad(lambda A: np.linalg.norm(A, 2)); g(np.eye(2)); "
              "g(np.full((2, 2), np.nan))",
         raises="LinAlgError",
         message="SVD did not converge"),
    dict(what="The derivative of np.linalg.svd(full_matrices=True) of a non-square matrix",
         code="np.linalg.svd(tg.ones(3, 2, requires_grad=True))",
         raises="NotImplementedError",
         message="np.linalg.svd(full_matrices=True) of a 3 x 2 matrix is not differentiable "
                 "(its extra singular vectors have no derivative): use full_matrices=False"),
    dict(what="np.linalg.svd(hermitian=True) of a recorded tensor",
         code="np.linalg.svd(tg.ones(2, 2, requires_grad=True), hermitian=True)",
         raises="NotImplementedError",
         message="np.linalg.svd(hermitian=True) is not supported on tensors (use "
                 "hermitian=False, or np.linalg.eigh)"),
    dict(what="np.linalg.qr of a recorded tensor in a mode or shape without derivatives",
         code="np.linalg.qr(tg.ones(3, 2, requires_grad=True), mode='complete')",
         raises="NotImplementedError",
         message="np.linalg.qr(mode='complete') of a 3 x 2 matrix is not differentiable on "
                 "tensors: use mode='reduced' or 'r' with at least as many rows as columns"),
    dict(what="np.linalg.pinv(hermitian=True) of a recorded tensor",
         code="np.linalg.pinv(tg.ones(2, 2, requires_grad=True), hermitian=True)",
         raises="NotImplementedError",
         message="np.linalg.pinv(hermitian=True) is not supported on tensors (use "
                 "hermitian=False)"),
    dict(what="compiled with more than one example argument",
         code="tg.compiled(lambda x, y: (x * y).sum(), np.ones(3), np.ones(3))",
         raises="TypeError",
         message="compiled(f, x): f must take exactly one argument, an array or a float (got 2 "
                 "example arguments); close over the others (functools.partial)"),
    dict(what="compiled of a function with a transform inside",
         code="g = tg.grad(lambda y: (y ** 3).sum()); "
              "tg.compiled(lambda x: (g(x) * x).sum(), np.ones(3))",
         raises="NotImplementedError",
         message="compiled(f, x): f uses a function transform inside (grad of grad, jacobian "
                 "...), whose replay runs Python; compiled members replay single-level tapes "
                 "only"),
    dict(what="compiled grad of a function with a vector output",
         code="tg.compiled(lambda x: x * 2, np.ones(3)).grad",
         raises="TypeError",
         message="compiled grad requires a scalar output (f returns shape (3,)); use jacobian "
                 "or vjp"),
    dict(what="compiled member given an array of another size",
         code="tg.compiled(lambda x: (x * x).sum(), np.ones(3)).grad(np.ones(4))",
         raises="ValueError",
         message="tapegrad.compiled: x must have 3 elements (the example argument has shape "
                 "(3,))"),
    dict(what="compiled at an example that is not a float array or a float",
         code="tg.compiled(lambda x: x * 2.0, 3)",
         raises="TypeError",
         message="compiled(f, x): x must be a float array or a float, got 3"),
    dict(what="compiled of a function with several outputs",
         code="tg.compiled(lambda x: (x.sum(), x * 2), np.ones(3))",
         raises="TypeError",
         message="compiled(f, x): f must return one array or scalar, got 2 output leaves"),
    dict(what="compiled member that does not exist",
         code="tg.compiled(lambda x: (x * x).sum(), np.ones(3)).gradient",
         raises="AttributeError",
         message="'Compiled' object has no attribute 'gradient'; its members are value, "
                 "value_into, grad, grad_into, value_and_grad, value_and_grad_into, jvp, vjp, "
                 "jacobian, jacobian_into, hvp, hvp_into, hessian, fused_grad_into"),
    dict(what="compiled _into member given an output buffer of another size",
         code="tg.compiled(lambda x: (x * x).sum(), np.ones(3)).grad_into(np.ones(3), "
              "np.empty(2))",
         raises="ValueError",
         message="tapegrad.compiled: out must have 3 elements"),
    dict(what="compiled cfunc float64(float64) of a function of several elements",
         code="tg.compiled(lambda x: (x * x).sum(), np.ones(3)).cfunc('grad', "
              "'float64(float64)')",
         raises="TypeError",
         message="cfunc 'float64(float64)' needs f of one input element (x has shape (3,)); "
                 "use 'float64(intc, CPointer(float64))'"),
    dict(what="compiled member given an array of another dtype (numba's TypingError, "
              "when the caller compiles, says: x must be a float64 array (or a float), got "
              "array(float32, 1d, C))",
         code="tg.compiled(lambda x: (x * x).sum(), np.ones(3)).grad(np.ones(3, np.float32))",
         raises="TypingError",
         message="Failed in nopython mode pipeline (step: nopython frontend)…"),
    dict(what="compiled member at inputs that take another branch",
         code="f = lambda x: (x * x).sum() if x.sum() > 0 else x.sum(); "
              "tg.compiled(f, np.ones(3)).grad(-np.ones(3))",
         raises="GuardError",
         message="tapegrad.compiled: these inputs take another branch of the traced function "
                 "than the tape recorded; trace it again at them (tapegrad.compiled)"),
    dict(what="compiled cfunc of a member that is not scalar",
         code="tg.compiled(lambda x: (x * x).sum(), np.ones(3)).cfunc('hvp')",
         raises="ValueError",
         message="cfunc member must be 'value' or 'grad', got 'hvp'"),
    dict(what="compiled cfunc with a signature scipy does not call",
         code="tg.compiled(lambda x: (x * x).sum(), np.ones(3)).cfunc('grad', 'float64(int64)')",
         raises="ValueError",
         message="cfunc signature must be 'float64(float64)' or 'float64(intc, "
                 "CPointer(float64))', got 'float64(int64)'"),
    dict(what="compiled fused_grad_into of a tape the fused tier cannot compile",
         code="tg.compiled(lambda x: np.max(x) ** 2, np.ones(3)).fused_grad_into",
         raises="NotImplementedError",
         message="compiled fused_grad_into: the fused tier cannot compile this tape (a kernel "
                 "branches on a traced value); use grad_into"),
    dict(what="hessp direction of another structure than x",
         code="tg.hessp(lambda x: (x ** 3).sum())(np.ones(2), [np.ones(2)])",
         raises="ValueError",
         message="p must have the structure of x"),
    # ---- sparse Jacobians and Hessians ----
    dict(what="A sparsity pattern of the wrong shape",
         code="tg.jacobian(lambda x: x[1:] - x[:-1], sparsity=np.eye(3, dtype=bool))(np.ones(3))",
         raises="ValueError",
         message="sparsity has shape (3, 3), but the Jacobian has shape (2, 3) (output "
                 "elements, differentiated input elements)"),
    dict(what="A sparsity pattern that is not a sparse matrix or a boolean array",
         code="tg.hessian(lambda x: (x ** 3).sum(), sparsity=np.eye(3))",
         raises="TypeError",
         message="sparsity must be None, 'auto', a scipy sparse matrix or a 2-d boolean array, "
                 "got an array of shape (3, 3) and dtype float64"),
    dict(what="A sparsity that is neither a pattern nor 'auto'",
         code="tg.jacobian(lambda x: x * 2, sparsity='yes')",
         raises="ValueError",
         message="sparsity must be None, 'auto', a scipy sparse matrix or a 2-d boolean array, "
                 "got 'yes'"),
    dict(what="A sparse Jacobian or Hessian inside a differentiated function",
         code="tg.grad(lambda x: tg.jacobian(lambda y: y * x, sparsity='auto')(x).sum())"
              "(np.ones(2))",
         raises="NotImplementedError",
         message="jacobian with sparsity of values that an enclosing computation records: a "
                 "sparse matrix cannot be a traced value; use the dense transform inside a "
                 "differentiated function"),
]


def _skip_reason(case):
    if "dask" in case["code"] and importlib.util.find_spec("dask") is None:
        return "dask is not installed"
    if case["what"].startswith("vmap(device='cuda')"):
        from tapegrad.batch import cuda as _cuda
        if _cuda.available():
            return "runs only without a CUDA GPU (one is available here)"
    return None


@pytest.fixture(autouse=True)
def _restore_modes():
    yield
    tapegrad.autograd.set_detect_anomaly(False)
    tapegrad.set_grad_enabled(True)


@pytest.mark.parametrize("case", CASES, ids=[c["what"] for c in CASES])
def test_row(case, tmp_path):
    reason = _skip_reason(case)
    if reason:
        pytest.skip(reason)
    tmp = str(tmp_path)
    namespace = {"tg": tapegrad, "np": np, "tmp": tmp}
    code = compile(case["code"], "<errors.md>", "exec")
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        if case["raises"] == "none":
            exec(code, namespace)
            assert eval(case["check"], namespace)
            return
        with pytest.raises(Exception) as info:
            exec(code, namespace)
    assert type(info.value).__name__ == case["raises"]
    expected = case["message"].replace("{tmp}", tmp)
    if expected.endswith("…"):
        assert str(info.value).startswith(expected[:-1]), str(info.value)
    else:
        assert str(info.value) == expected


def test_at_least_25_rows():
    assert len(CASES) >= 25
    assert len({c["what"] for c in CASES}) == len(CASES)


# ---- the doc ------------------------------------------------------------------------------------

def _cell(text):
    return text.replace("|", "\\|").replace("\n", " ")


def render():
    lines = ["| # | Bad input | Code | Raises | Message |", "| --- | --- | --- | --- | --- |"]
    for k, c in enumerate(CASES, 1):
        raises = "no error" if c["raises"] == "none" else f"`{c['raises']}`"
        lines.append(f"| {k} | {_cell(c['what'])} | `{_cell(c['code'])}` | {raises} | "
                     f"{_cell(c['message'])} |")
    return "\n".join(lines)


def test_doc_and_table_agree():
    with open(DOC) as fh:
        text = fh.read()
    table = text[text.index(START) + len(START):text.index(END)].strip()
    assert table == render(), "docs/errors.md is stale: run `python tests/test_errors.py`"
    rows = [line for line in table.splitlines()[2:]]
    assert len(rows) == len(CASES)
    for row, case in zip(rows, CASES):
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", row)[1:-1]]
        assert cells[1] == _cell(case["what"])


if __name__ == "__main__":      # rewrite the table in docs/errors.md
    with open(DOC) as fh:
        text = fh.read()
    head, rest = text.split(START)
    _, tail = rest.split(END)
    with open(DOC, "w") as fh:
        fh.write(head + START + "\n" + render() + "\n" + END + tail)
    sys.exit(0)
