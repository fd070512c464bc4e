"""Derivatives callable from numba's compiled code: `compiled(f, *example_args)`.

`compiled` traces `f` once (as `grad` would: the same tape) and returns a `Compiled`, whose
members (`value`, `grad`, `grad_into`, `value_and_grad`, `jvp`, `vjp`, `jacobian`, `hvp`,
`hessian` ...) are numba functions: an `@njit` function calls them with no Python in the loop
(an ODE solver's Jacobian, a Newton or Hamiltonian Monte Carlo loop), and `cfunc` /
`lowlevel` make C callbacks of them for scipy (`scipy.LowLevelCallable`).

How the compiled members reach the interpreters. A numba function that calls another one links
the callee's code into its own and compiles it again with it: a caller of the flat interpreter
(a jump table over every primitive) took over two minutes to compile cold. So the members call
the interpreters through their addresses instead: each sweep the members use is compiled (or
loaded from numba's cache) for the exact argument types the Python transforms use, and its
address is registered with LLVM under a symbol named after the interpreter module's content
hash (`_register`); the members' code declares that symbol and calls it with numba's own
calling convention (`_call` in the generated module). Their code is then small, compiles in
about a second, and is cached on disk by numba (the generic sweeps once per dtype, in a
generated module of the code cache; the members per tape). A member registers its sweeps when
it is first taken from the `Compiled` (an attribute access in Python, which comes before any
numba code can call it), so a process loads only the sweeps it uses.

Results are the Python transforms' to the last bit: the members run the same sweeps over the
same arrays with the same seeds (`grad` the forward sweep over the entries the reverse sweep
reads and `backward_first`; `jacobian` and `vjp` `backward`; `hvp` and `hessian` forward over
reverse; all over the arrays the transforms sweep, `Tape._aliased`).

Safety. Every call allocates its own buffers (the fused member `fused_grad_into`, built by
`batch.native`, works in the caller's arrays and its own registers), so members may be called
from `prange` loops. Arguments are checked before any sweep: a wrong dtype or a read-only
output buffer fails when numba compiles the caller (a `TypingError` naming the argument), a
wrong number of elements raises `ValueError` at the call. Guards (the branches a traced `if`
took): the members replay the recorded branch and test its guards after the forward sweep; a
call whose inputs take another branch raises `GuardError` (allocating members) or returns
`GUARD_FAILED` (the `_into` members, which return a status). Tapes whose replay needs Python
(nested transforms, closures over an enclosing trace) are refused; arrays `f` closes over are
constants of the members' code (as with `capture="trace"`: there is no `capture="call"` here).
"""
import numpy as np

from . import signature
from .traced import Traced
from ..core import cache, interp, programs, pytree, sweep
from ..core.validate import read_only

OK, GUARD_FAILED = 0, 1

# builds the member `fused_grad_into` from a Compiled (installed by `batch.native`, which holds
# the fused tier: this layer cannot import it)
fused_builder = None

# the sweeps each member runs (registered when the member is first taken)
_SWEEPS = {
    "value": ("forward",), "value_into": ("forward",),
    "grad": ("forward", "backward_first"), "grad_into": ("forward", "backward_first"),
    "value_and_grad": ("forward", "backward_first"),
    "value_and_grad_into": ("forward", "backward_first"),
    "jvp": ("forward", "tangent"), "vjp": ("forward", "backward"),
    "jacobian": ("forward", "backward"), "jacobian_into": ("forward", "backward"),
    "hvp": ("forward", "tangent", "backward_tangent"),
    "hvp_into": ("forward", "tangent", "backward_tangent"),
    "hessian": ("forward", "tangent", "backward_tangent"),
    "fused_grad_into": (),          # the fused tier (`batch.native`): no interpreter sweep
}
MEMBERS = tuple(_SWEEPS)


def compiled(f, *example_args):
    """`f`, traced at `example_args`, as numba functions (see `Compiled`).

    `f` takes one float array (or float) and returns an array or a scalar; arrays it closes
    over are constants of the trace, as with `grad`. Its members take arrays of the example's
    dtype and number of elements."""
    if len(example_args) != 1:
        raise TypeError(f"compiled(f, x): f must take exactly one argument, an array or a "
                        f"float (got {len(example_args)} example arguments); close over the "
                        "others (functools.partial)")
    traced = Traced(f, (0,), "trace", "compiled")
    leaves, structure = pytree.flatten(signature.arguments(example_args, {}))
    if len(leaves) != 1 or not signature.is_dynamic(leaves[0]):
        raise TypeError("compiled(f, x): x must be a float array or a float, got "
                        f"{signature.describe(example_args[0])}")
    tape, _ = traced.replay_flat(leaves, structure)
    return Compiled(tape)


class Compiled:
    """A traced function's sweeps as numba functions, callable from `@njit` code.

    With x an array of the example's dtype and number of elements (any shape and layout; a
    float where the example was a float), and `out` a writable array:

    * `value(x)`: f(x), a float for a scalar output, else an array of the output's shape;
      `value_into(x, out)` -> status;
    * `grad(x)`: the gradient, shaped like x; `grad_into(x, out)` -> status;
    * `value_and_grad(x)` -> (value, gradient); `value_and_grad_into(x, out)` -> (value, status);
    * `jvp(x, t)` -> (value, tangent of the output along t);
    * `vjp(x, c)`: the gradient of the output's dot product with c, shaped like x;
    * `jacobian(x)` -> (outputs, inputs) array, by reverse sweeps; `jacobian_into(x, out)`;
    * `hvp(x, v)`: the Hessian of a scalar f times v, shaped like x; `hvp_into(x, v, out)`;
    * `hessian(x)` -> (inputs, inputs) array;
    * `fused_grad_into(x, out)` -> status: the gradient by the fused tier (the tape compiled
      into straight-line code, `batch.fuse`): on small tapes as fast as a hand-written `@njit`
      gradient (numba inlines it into the calling function), equal to `grad` to rounding only,
      compiled per tape (a fraction of a second to seconds); float64 tapes without
      data-dependent kernels (max, min, where), else NotImplementedError.

    The status of an `_into` member is `OK` (0) or `GUARD_FAILED` (1: x takes another branch
    of f than the one traced; out is left as it was); allocating members raise `GuardError`.
    `cfunc(member, sig)` and `lowlevel(member, sig)` make C callbacks for scipy.

    Each member is compiled by numba at its first call from compiled code (or loaded from
    numba's disk cache), per argument types; taking it from this object (`g = c.grad`) makes
    the interpreter sweeps it calls available to compiled code, so take members here, in
    Python, and call them from `@njit` functions (as globals, closure variables or arguments).
    """

    def __init__(self, tape):
        _refuse_python_sweeps(tape)
        sweep.check(tape)
        out_slot, = tape.output_slots if len(tape.output_slots) == 1 else (None,)
        if out_slot is None:
            raise TypeError(f"compiled(f, x): f must return one array or scalar, got "
                            f"{len(tape.output_slots)} output leaves")
        self.tape = tape
        in_slot = tape.input_slots[0]
        self.in_shape, self.out_shape = tape.shapes[in_slot], tape.shapes[out_slot]
        self.n_in, self.n_out = tape.sizes[in_slot], tape.sizes[out_slot]
        self.dtype = tape.dtype
        self._arrays, self._sizes = _tape_arrays(tape, in_slot, out_slot)
        self._module = None
        self._members = {}

    def __repr__(self):
        return (f"<tapegrad.Compiled: {self.in_shape} -> {self.out_shape} ({self.dtype}), "
                f"{len(self.tape)} entries, {len(self.tape.guards)} guards>")

    def __getattr__(self, name):
        if name not in _SWEEPS:
            raise AttributeError(f"'Compiled' object has no attribute {name!r}; its members are "
                                 f"{', '.join(MEMBERS)}")
        return self.member(name)

    def member(self, name):
        """The numba function `name` (one of `MEMBERS`), its sweeps made callable."""
        found = self._members.get(name)
        if found is not None:
            return found
        if name not in _SWEEPS:
            raise ValueError(f"unknown member {name!r}; the members are {', '.join(MEMBERS)}")
        scalar_only = name in ("grad", "grad_into", "value_and_grad", "value_and_grad_into",
                               "hvp", "hvp_into", "hessian", "fused_grad_into")
        if scalar_only and self.n_out != 1:
            raise TypeError(f"compiled {name} requires a scalar output (f returns shape "
                            f"{self.out_shape}); use jacobian or vjp")
        if name == "fused_grad_into":
            found = self._members[name] = fused_builder(self)
            return found
        module = self._generated()
        for sweep_name in _SWEEPS[name]:
            _register(module, sweep_name, self.dtype)
        found = self._members[name] = module.make(name, self._arrays, self._sizes,
                                                  self.in_shape, self.out_shape)
        return found

    def _generated(self):
        if self._module is None:
            self._module = generated_module()
        return self._module

    def cfunc(self, member="grad", sig="float64(float64)"):
        """A `numba.cfunc` of the scalar member `value` or `grad`, for C callers (scipy):

        * "float64(float64)": x is the one input element; `grad` gives f'(x);
        * "float64(intc, CPointer(float64))" (scipy's `double (int n, double *xx)`): the input
          is xx[0:n], n the input's number of elements; `grad` gives the derivative with
          respect to xx[0] (quad integrates over xx[0], its `args` fill the rest).

        f's output must be a scalar. A wrong n or a guard failure gives NaN (a C callback
        cannot raise)."""
        if member not in ("value", "grad"):
            raise ValueError(f"cfunc member must be 'value' or 'grad', got {member!r}")
        if self.n_out != 1:
            raise TypeError(f"cfunc requires a scalar output (f returns shape {self.out_shape})")
        pointer = sig.replace(" ", "") in ("float64(intc,CPointer(float64))",
                                           "double(int,double*)")
        if not pointer and sig.replace(" ", "") not in ("float64(float64)", "double(double)"):
            raise ValueError(f"cfunc signature must be 'float64(float64)' or "
                             f"'float64(intc, CPointer(float64))', got {sig!r}")
        if not pointer and self.n_in != 1:
            raise TypeError(f"cfunc {sig!r} needs f of one input element (x has shape "
                            f"{self.in_shape}); use 'float64(intc, CPointer(float64))'")
        if self.dtype != np.float64:
            raise TypeError(f"cfunc requires a float64 tape, got {self.dtype}")
        module = self._generated()
        for sweep_name in _SWEEPS["grad" if member == "grad" else "value"]:
            _register(module, sweep_name, self.dtype)
        return module.make_cfunc(member, pointer, self._arrays, self._sizes)

    def lowlevel(self, member="grad", sig="float64(intc, CPointer(float64))"):
        """`scipy.LowLevelCallable` of `cfunc(member, sig)` (for `scipy.integrate.quad`)."""
        from scipy import LowLevelCallable
        return LowLevelCallable(self.cfunc(member, sig).ctypes)


def plain_gradient(tape, out_slot):
    """(call, t, k): `call(t, k, V, x, everything)` -> the gradient of `tape`'s scalar output
    `out_slot` with respect to its one input, in one compiled call from Python
    (`plain_gradient` of the generated module): x, a 1-d array (any strides) of the tape's
    dtype and the input's size, is written into V, this thread's value buffer
    (`Tape._buffer`), the forward sweep runs over every entry when `everything` (the value is
    then in V), and the result is a new array. None where the tape needs more than the two
    sweeps (guards to test, sweeps that run Python), is not of float32 or float64, or has
    grad's sweeps run as programs (`core.programs`: faster than these two flat sweeps).

    `call` is the compiled code's entry, without numba's dispatcher (`sweep._compiled`): the
    caller guarantees the types (x's ndim and dtype: numba would read any other array as this
    one; V the tape's buffer); x's size is checked again in compiled code. Taking
    it binds the generated module and the interpreters' symbols: a gradient takes it at its
    second call, not its first."""
    if tape.guards or tape.calls or tape.implicit_slots or len(tape.input_slots) != 1 or \
            tape.dtype not in (np.float32, np.float64):
        return None
    aliased = tape._aliased()
    arrays = tape if aliased is None else aliased[0]
    if programs.worth_it(arrays.E, arrays.S):       # `Gradient` runs programs: faster
        return None
    module = generated_module()
    for sweep_name in _SWEEPS["grad"]:
        _register(module, sweep_name, tape.dtype)
    arrays, sizes = _tape_arrays(tape, tape.input_slots[0], out_slot)
    t = arrays[:5] + arrays[6:10]
    k = sizes[:2] + sizes[4:6]
    x = np.empty(2 * k[1], tape.dtype)[::2]         # typed as an array of any strides
    return sweep._compiled(module.plain_gradient, t, k, tape._buffer(), x, True), t, k


def _refuse_python_sweeps(tape):
    """Refuse a tape that compiled code cannot replay faithfully."""
    if tape.calls:
        raise NotImplementedError(
            "compiled(f, x): f uses a function transform inside (grad of grad, jacobian ...), "
            "whose replay runs Python; compiled members replay single-level tapes only")
    if tape.implicit_slots:
        raise NotImplementedError(
            "compiled(f, x): f closes over values of an enclosing traced computation")


def _tape_arrays(tape, in_slot, out_slot):
    """(arrays, sizes): the tuples the members close over. Arrays: E, FC, IP, S, NEED (those
    the transforms sweep, `Tape._aliased`: the tape's copies as aliases), V0 (the tape's,
    read-only), the (E, FC) of a gradient's forward sweep, FIRST and ZERO of its
    `backward_first` (as `core.sweep.Gradient` makes them), the guards' value positions and
    outcomes. Sizes: input offset and size, output
    offset and size, the gradient's seed position (-1: the output needs no adjoint), the
    adjoint buffer's width, and whether a Jacobian's seeds fall inside it."""
    aliased = tape._aliased()
    arrays, entries = (tape, tape._gradient_entries()) if aliased is None else aliased
    grad_E, grad_FC = (arrays.E, arrays.FC) if entries is None else entries
    FIRST, ZERO = sweep._first_writes(arrays, out_slot)
    guard_pos = read_only(np.array([tape.offsets[s] for s, _ in tape.guards], np.int64),
                          owned=True)
    guard_val = read_only(np.array([bool(o) for _, o in tape.guards], np.int64), owned=True)
    in_lo, out_lo = tape.offsets[in_slot], tape.offsets[out_slot]
    n_out = tape.sizes[out_slot]
    arrays = (arrays.E, arrays.FC, arrays.IP, arrays.S, arrays.NEED, tape.V0, grad_E, grad_FC,
              FIRST, ZERO, guard_pos, guard_val)
    sizes = (in_lo, tape.sizes[in_slot], out_lo, n_out,
             out_lo if tape.NEED[out_slot] else -1, tape.n_adjoint,
             int(out_lo + n_out <= tape.n_adjoint), int(bool(tape.NEED[out_slot])))
    return arrays, sizes


# ---- the generated module and the interpreters' symbols ------------------------------------

_registered = {}


def _prefix():
    """The symbol prefix of the interpreters' compiled code: named after the generated
    interpreter modules (their content hashes), so that code compiled against one version never
    calls another."""
    flat, first = interp.interpreters(), interp.reverse_first()
    return "tapegrad_" + "_".join(m.__name__.rsplit("_", 1)[-1] for m in (flat, first))


def generated_module():
    """The module of the generic compiled sweeps and member factories (`_SOURCE`), a file in
    the code cache named by its text's hash, the symbol prefix included."""
    source = _SOURCE.replace("{prefix}", _prefix()).replace("{members}\n", _members_source())
    return cache.materialize(f"_gen_njit_{cache.digest(source, cache.salt())}", source)


def _register(module, name, dtype):
    """Make interpreter sweep `name` for `dtype` callable from the members: compile it (numba
    loads it from its cache) for the argument types the members pass, which are those the
    Python transforms pass, and register its address under the module's symbol for it."""
    import llvmlite.binding
    from numba import from_dtype
    symbol = module.symbol(name, from_dtype(np.dtype(dtype)))
    if symbol in _registered:
        return
    source = interp.reverse_first() if name == "backward_first" else interp.interpreters()
    dispatcher = getattr(source, name)
    types = module.expected(name, from_dtype(np.dtype(dtype)))
    dispatcher.compile(types)
    result = dispatcher.overloads[types]
    address = result.library.get_pointer_to_function(result.fndesc.llvm_func_name)
    llvmlite.binding.add_symbol(symbol, address)
    _registered[symbol] = (dispatcher, address)     # the dispatcher keeps the code alive


# ---- the members' code: one template, filled per member -------------------------------------
# Each member is a closure of `make` in the generated module (numba caches it on disk, keyed by
# the tape arrays it closes over): the text of each is written here from its row of `_MEMBERS`.

_MEMBER = """\
    if name == "{name}":
        @jit
        def {name}_member({arguments}):
{checks}
            V = values(t, k, x, {for_gradient})
            if not holds(t, V):
                {failure}
{result}
        return {name}_member
"""
# the arguments' checks: (parameter, its number of elements, the expected number, message)
_CHECKS = {
    "x": ("x", 'size_of(x, V0, "x")', "n_in", "SIZE"),
    "direction": ("direction", 'size_of(direction, V0, "the direction")', "n_in", "DIRECTION"),
    "v": ("v", 'size_of(v, V0, "the direction")', "n_in", "DIRECTION"),
    "c": ("c", 'size_of(c, V0, "the cotangent")', "n_out", "COTANGENT"),
    "out (value)": ("out", 'out_size(out, V0, "out")', "n_out", "OUT_VALUE"),
    "out (gradient)": ("out", 'out_size(out, V0, "out")', "n_in", "OUT_IN"),
    "out (jacobian)": ("out", 'out_size(out, V0, "out")', "n_out * n_in", "OUT_JAC"),
}
_RAISE, _STATUS = "raise GuardError(GUARD)", "return GUARD_FAILED"
# name: (arguments, whether the forward sweep runs only the entries a gradient reads, what a
# guard failure does, what the member does after the forward sweep)
_MEMBERS = {
    "value": (("x",), False, _RAISE, ["return shaped(output(k, V), out_shape)"]),
    "value_into": (("x", "out (value)"), False, _STATUS,
                   ["store(out, output(k, V))", "return OK"]),
    "grad": (("x",), True, _RAISE, ["return like(x, gradient(t, k, V))"]),
    "grad_into": (("x", "out (gradient)"), True, _STATUS,
                  ["store(out, gradient(t, k, V))", "return OK"]),
    "value_and_grad": (("x",), False, _RAISE, ["return V[k[2]], like(x, gradient(t, k, V))"]),
    "value_and_grad_into": (("x", "out (gradient)"), False, "return V[k[2]], GUARD_FAILED",
                            ["store(out, gradient(t, k, V))", "return V[k[2]], OK"]),
    "jvp": (("x", "direction"), False, _RAISE,
            ["T = tangent(t, k, V, x, direction)",
             "return shaped(output(k, V), out_shape), "
             "shaped(T[0, k[2]:k[2] + k[3]].copy(), out_shape)"]),
    "vjp": (("x", "c"), False, _RAISE, ["return like(x, cotangent(t, k, V, c))"]),
    "jacobian": (("x",), False, _RAISE, ["return jacobian(t, k, V)"]),
    "jacobian_into": (("x", "out (jacobian)"), False, _STATUS,
                      ["store(out, jacobian(t, k, V).reshape(n_out * n_in))", "return OK"]),
    "hvp": (("x", "v"), False, _RAISE,
            ["return like(x, second_order(t, k, V, tangent(t, k, V, x, v))[0].copy())"]),
    "hvp_into": (("x", "v", "out (gradient)"), False, _STATUS,
                 ["store(out, second_order(t, k, V, tangent(t, k, V, x, v))[0].copy())",
                  "return OK"]),
    "hessian": (("x",), False, _RAISE, ["return hessian(t, k, V)"]),
}


def _members_source():
    """The members' code in `make`: one `if name == ...` block per row of `_MEMBERS`."""
    blocks = []
    for name, (arguments, for_gradient, failure, result) in _MEMBERS.items():
        checks = [_CHECKS[a] for a in arguments]
        blocks.append(_MEMBER.format(
            name=name, arguments=", ".join(c[0] for c in checks), for_gradient=for_gradient,
            failure=failure, result="\n".join(" " * 12 + line for line in result),
            checks="\n".join(f"            if {size} != {expected}:\n"
                             f"                raise ValueError({message})"
                             for _, size, expected, message in checks)))
    return "\n".join(blocks)


# The generated module. Its text is hashed into its name with the symbol prefix substituted,
# so numba's disk cache of its functions (and of the member closures it makes) is tied to
# both this text and the interpreters' versions.
_SOURCE = '''\
# Generated by tapegrad.transforms.compiled. Do not edit.
import numpy as np
from numba import carray, cfunc, types
from numba.core import cgutils
from numba.core.errors import TypingError
from numba.extending import intrinsic, overload

from tapegrad.core.jit import jit
from tapegrad.transforms.tape import GuardError

PREFIX = "{prefix}"
OK, GUARD_FAILED = 0, 1
_RO = dict(readonly=True)


def symbol(name, dtype):
    return f"{PREFIX}_{name}_{dtype}"


def expected(name, dtype):
    """The argument types of interpreter sweep `name`, as the Python transforms call it."""
    E = types.Array(types.int64, 2, "C", **_RO)
    FC = types.Array(types.float64, 2, "C", **_RO)
    IP = types.Array(types.int64, 1, "C", **_RO)
    NEED = IP
    V = types.Array(dtype, 1, "C")
    G = types.Array(dtype, 2, "C")
    i = types.int64
    return {
        "forward": (E, FC, IP, E, V, i, i),
        "backward": (E, FC, IP, E, NEED, V, G, i, i),
        "backward_first": (E, FC, IP, E, NEED, types.Array(types.int64, 1, "C"),
                           types.Array(types.int64, 2, "C"), V, G, i, i),
        "tangent": (E, FC, IP, E, V, G, i, i),
        "backward_tangent": (E, FC, IP, E, NEED, V, G, V, G, i, i),
    }[name]


READ_ONLY_OK = {"backward_first": (5, 6)}      # FIRST and ZERO: read, never written


def _call(name, argtys, dtype):
    """(signature, codegen) of a call of the registered interpreter sweep `name`."""
    given = tuple(types.unliteral(a) for a in argtys)
    argtys, read_only_ok = expected(name, dtype), READ_ONLY_OK.get(name, ())
    # arrays the sweep only reads may be read-only where the sweep's code takes writable ones
    # (frozen constants are typed read-only; FIRST and ZERO of backward_first): one data model
    if tuple(a.copy(readonly=True) if isinstance(a, types.Array) and k in read_only_ok else a
             for k, a in enumerate(given)) != \
            tuple(a.copy(readonly=True) if isinstance(a, types.Array) and k in read_only_ok
                  else a for k, a in enumerate(argtys)):
        raise TypingError(f"tapegrad internal: {name} called with {given}")
    target = symbol(name, dtype)

    def codegen(context, builder, signature, args):
        fnty = context.call_conv.get_function_type(types.none, argtys)
        fn = cgutils.get_or_insert_function(builder.module, fnty, target)
        status, _ = context.call_conv.call_function(builder, fn, types.none, argtys, args)
        with cgutils.if_unlikely(builder, status.is_error):
            context.call_conv.return_status_propagate(builder, status)
        return context.get_dummy_value()
    return types.none(*argtys), codegen


@intrinsic
def _forward(typingctx, E, FC, IP, S, V, start, stop):
    return _call("forward", (E, FC, IP, S, V, start, stop), V.dtype)


@intrinsic
def _backward(typingctx, E, FC, IP, S, NEED, V, G, start, stop):
    return _call("backward", (E, FC, IP, S, NEED, V, G, start, stop), V.dtype)


@intrinsic
def _backward_first(typingctx, E, FC, IP, S, NEED, FIRST, ZERO, V, G, start, stop):
    return _call("backward_first", (E, FC, IP, S, NEED, FIRST, ZERO, V, G, start, stop),
                 V.dtype)


@intrinsic
def _tangent(typingctx, E, FC, IP, S, V, T, start, stop):
    return _call("tangent", (E, FC, IP, S, V, T, start, stop), V.dtype)


@intrinsic
def _backward_tangent(typingctx, E, FC, IP, S, NEED, V, T, G, TG, start, stop):
    return _call("backward_tangent", (E, FC, IP, S, NEED, V, T, G, TG, start, stop), V.dtype)


# ---- arguments: types checked when the caller compiles, sizes at the call ------------------

def size_of(x, V0, name):
    pass


@overload(size_of, prefer_literal=True)
def _size_of(x, V0, name):
    """The number of elements of argument `name`: a float array of V0's dtype, or a float."""
    what = name.literal_value if isinstance(name, types.StringLiteral) else "an argument"
    if isinstance(x, types.Array) and x.dtype == V0.dtype:
        return lambda x, V0, name: x.size
    if isinstance(x, types.Float):
        return lambda x, V0, name: 1
    raise TypingError(f"tapegrad.compiled: {what} must be a {V0.dtype} array (or a float), "
                      f"got {x}")


def out_size(out, V0, name):
    pass


@overload(out_size, prefer_literal=True)
def _out_size(out, V0, name):
    """The number of elements of output buffer `name`: a writable array of V0's dtype."""
    what = name.literal_value if isinstance(name, types.StringLiteral) else "out"
    if isinstance(out, types.Array) and out.dtype == V0.dtype and out.mutable:
        return lambda out, V0, name: out.size
    raise TypingError(f"tapegrad.compiled: {what} must be a writable {V0.dtype} array, "
                      f"got {out}")


def put(V, lo, x):
    pass


@overload(put)
def _put(V, lo, x):
    """Write argument x (an array of any layout, or a float) into V from position lo."""
    if isinstance(x, types.Array):
        def put_array(V, lo, x):
            i = lo
            for v in x.flat:
                V[i] = v
                i += 1
        return put_array
    def put_float(V, lo, x):
        V[lo] = x
    return put_float


def like(x, flat):
    pass


@overload(like)
def _like(x, flat):
    """`flat` (a fresh 1-d array) shaped like argument x (a float for a float)."""
    if isinstance(x, types.Array) and x.ndim > 0:
        return lambda x, flat: flat.reshape(x.shape)
    return lambda x, flat: flat[0]


def shaped(flat, shape):
    pass


@overload(shaped)
def _shaped(flat, shape):
    """The output `flat` (a fresh 1-d array) in the output's `shape`: a float for ()."""
    if len(shape) == 0:
        return lambda flat, shape: flat[0]
    return lambda flat, shape: flat.reshape(shape)


def as_row(x, n):
    pass


@overload(as_row)
def _as_row(x, n):
    """Argument x as a (1, n) float64 array: a view of a C-contiguous array, else a copy."""
    if isinstance(x, types.Array) and x.layout == "C" and x.ndim == 1:
        return lambda x, n: x[None, :]          # numba's reshape costs tens of nanoseconds
    if isinstance(x, types.Array) and x.layout == "C":
        return lambda x, n: x.reshape((1, n))

    def copied(x, n):
        X = np.empty((1, n))
        put(X[0], 0, x)
        return X
    return copied


@intrinsic
def flag(typingctx):
    """A one-element boolean array on the caller's stack (no allocation): a fused kernel's
    guard flag for one point. It lives as long as the calling function's frame."""
    array_type = types.Array(types.boolean, 1, "C")

    def codegen(context, builder, signature, args):
        from numba.np.arrayobj import make_array, populate_array
        item = context.get_data_type(types.boolean)
        data = cgutils.alloca_once(builder, item, size=1)
        array = make_array(array_type)(context, builder)
        intp = context.get_value_type(types.intp)
        populate_array(array, data=data, shape=[intp(1)], strides=[intp(1)],
                       itemsize=intp(context.get_abi_sizeof(item)), meminfo=None)
        return array._getvalue()
    return array_type(), codegen


def finish(out, Y):
    pass


@overload(finish)
def _finish(out, Y):
    """Write Y, from `as_row(out, n)`, into out: nothing to do where Y is a view of it."""
    if out.layout == "C":
        return lambda out, Y: None
    return lambda out, Y: store(out, Y[0])


@jit
def store(out, values):
    """Write `values` (1-d) into output buffer `out`, in C order, whatever its layout."""
    i = 0
    for index in np.ndindex(out.shape):
        out[index] = values[i]
        i += 1


# ---- the sweeps of the members -----------------------------------------------------------
# t: E, FC, IP, S, NEED, V0, gradient E, gradient FC, FIRST, ZERO, guard positions, outcomes
# k: input offset, size; output offset, size; gradient seed (-1: none); adjoint width;
#    whether Jacobian seeds fall inside it; whether the output needs an adjoint

@jit
def holds(t, V):
    """Whether the guards hold on the values V."""
    pos, val = t[10], t[11]
    for g in range(pos.size):
        if (V[pos[g]] != 0.0) != (val[g] != 0):
            return False
    return True


@jit
def values(t, k, x, for_gradient):
    """A fresh value buffer with x written in, after the forward sweep (over the entries a
    gradient reads when `for_gradient`); None-like status: check `holds` next."""
    V = t[5].copy()
    put(V, k[0], x)
    if for_gradient:
        _forward(t[6], t[7], t[2], t[3], V, 0, t[6].shape[0])
    else:
        _forward(t[0], t[1], t[2], t[3], V, 0, t[0].shape[0])
    return V


@jit
def plain_gradient(t, k, V, x, everything):
    """grad's sweeps for a call from Python (`transforms.gradients.PlainGradient`), in one
    compiled call: x (1-d, the input's size) written into V, the caller's value buffer, the
    forward sweep (over every entry when `everything`, as `value_and_grad` needs, else over
    those a gradient reads), `backward_first`; returns the input's adjoints (a new array).
    t: E, FC, IP, S, NEED, the gradient's E and FC, FIRST, ZERO; k: the input's offset and
    size, the seed's position (-1: none), the adjoint buffer's width. (Fewer arguments than
    the members take: each costs its unboxing at every call from Python.) Guards are not
    tested: the caller takes this only for tapes without any."""
    V[k[0]:k[0] + k[1]] = x
    if everything:
        _forward(t[0], t[1], t[2], t[3], V, 0, t[0].shape[0])
    else:
        _forward(t[5], t[6], t[2], t[3], V, 0, t[5].shape[0])
    G = np.empty((1, k[3]), V.dtype)
    if k[2] >= 0:
        G[0, k[2]] = 1.0
    _backward_first(t[0], t[1], t[2], t[3], t[4], t[7], t[8], V, G, 0, t[0].shape[0])
    return G[0, k[0]:k[0] + k[1]].copy()


@jit
def output(k, V):
    return V[k[2]:k[2] + k[3]].copy()


@jit
def gradient(t, k, V):
    """grad's reverse sweep after a forward sweep: the adjoints of the input (a new array)."""
    G = np.empty((1, k[5]), V.dtype)
    if k[4] >= 0:
        G[0, k[4]] = 1.0
    _backward_first(t[0], t[1], t[2], t[3], t[4], t[8], t[9], V, G, 0, t[0].shape[0])
    return G[0, k[0]:k[0] + k[1]].copy()


@jit
def tangent(t, k, V, x, direction):
    """The tangents of every value along `direction` (an argument like x), as jvp seeds them."""
    T = np.zeros((1, V.size), V.dtype)
    put(T[0], k[0], direction)
    _tangent(t[0], t[1], t[2], t[3], V, T, 0, t[0].shape[0])
    return T


@jit
def cotangent(t, k, V, c):
    """The adjoints of the input for output cotangent c, as vjp seeds them."""
    G = np.zeros((1, k[5]), V.dtype)
    if k[7]:
        put(G[0], k[2], c)
    _backward(t[0], t[1], t[2], t[3], t[4], V, G, 0, t[0].shape[0])
    return G[0, k[0]:k[0] + k[1]].copy()


@jit
def jacobian(t, k, V):
    """(outputs, inputs): one reverse sweep seeded at every output element, as jacrev does."""
    G = np.zeros((k[3], k[5]), V.dtype)
    if k[6]:
        for i in range(k[3]):
            G[i, k[2] + i] = 1.0
    _backward(t[0], t[1], t[2], t[3], t[4], V, G, 0, t[0].shape[0])
    return G[:, k[0]:k[0] + k[1]].copy()


@jit
def second_order(t, k, V, T):
    """Forward over reverse along the directions T (tangents after `_tangent`), as hvp and
    hessian run it: the tangents of the input's adjoints, one row per direction."""
    G = np.zeros(V.size, V.dtype)
    G[k[2]] = 1.0
    TG = np.zeros_like(T)
    _backward_tangent(t[0], t[1], t[2], t[3], t[4], V, T, G, TG, 0, t[0].shape[0])
    return TG[:, k[0]:k[0] + k[1]].copy()


@jit
def hessian(t, k, V):
    T = np.zeros((k[1], V.size), V.dtype)
    for i in range(k[1]):
        T[i, k[0] + i] = 1.0
    _tangent(t[0], t[1], t[2], t[3], V, T, 0, t[0].shape[0])
    return second_order(t, k, V, T)


# ---- the members: closures over one tape's arrays ------------------------------------------

def make(name, t, k, in_shape, out_shape):
    """The numba function `name` of the tape whose arrays and sizes are t and k."""
    n_in, n_out = k[1], k[3]
    SIZE = (f"tapegrad.compiled: x must have {n_in} elements (the example argument has "
            f"shape {in_shape})")
    DIRECTION = f"tapegrad.compiled: the direction must have {n_in} elements, as x"
    COTANGENT = f"tapegrad.compiled: the cotangent must have {n_out} elements, as the output"
    OUT = f"tapegrad.compiled: out must have {{}} elements"
    OUT_IN, OUT_JAC = OUT.format(n_in), OUT.format(n_out * n_in)
    OUT_VALUE = OUT.format(n_out)
    GUARD = ("tapegrad.compiled: these inputs take another branch of the traced function "
             "than the tape recorded; trace it again at them (tapegrad.compiled)")
    V0 = t[5]
{members}
    raise ValueError(f"unknown member {name!r}")


# ---- C callbacks ---------------------------------------------------------------------------

@jit
def evaluate(t, k, x, want_grad):
    """f(x), or its derivative with respect to x's first element; NaN if a guard fails."""
    V = values(t, k, x, want_grad)
    if not holds(t, V):
        return np.nan
    if want_grad:
        return gradient(t, k, V)[0]
    return V[k[2]]


def make_cfunc(member, pointer, t, k):
    """A cfunc of the scalar `value` or the derivative with respect to the first input
    element (`grad`): float64(float64), or scipy's double(int n, double *xx) when `pointer`.
    NaN where n is not the input's size or a guard fails."""
    n_in, want_grad = k[1], member == "grad"

    if pointer:
        @cfunc(types.float64(types.intc, types.CPointer(types.float64)), cache=True,
               error_model="numpy")
        def callback(n, xx):
            if n != n_in:
                return np.nan
            return evaluate(t, k, carray(xx, n_in), want_grad)
    else:
        @cfunc(types.float64(types.float64), cache=True, error_model="numpy")
        def callback(x):
            return evaluate(t, k, x, want_grad)
    return callback
'''
