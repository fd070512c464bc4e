"""The fused tier of `compiled`'s members: `fused_grad_into`, a tape's gradient compiled into
straight-line code for one point (`batch.fuse`), called from numba code.

The interpreter's members (`transforms.compiled`) cost the interpreter's dispatch per entry; a
small tape's gradient written as straight-line statements runs at hand-written speed. This
module writes the fused kernel of the tape's grad schedule (`fuse.source`, the same text `vmap`
compiles) into a module of the code cache together with a member that checks its arguments and
runs the kernel for one point, and installs itself as `compiled`'s builder of that member (the
hook keeps `transforms` below `batch`). Its results agree with `grad` to rounding (the fused
statements may associate sums differently), not bit for bit.
"""
import numpy as np

from . import fuse
from .plan import Plan, positions
from ..core import cache
from ..transforms import compiled
from ..transforms.spec import Schedule

_MEMBER = '''

from tapegrad.{njit} import as_row, finish, flag, out_size, size_of, store

_F64 = np.empty(0)
_SIZE = "tapegrad.compiled: x must have {n} elements (the example argument has shape {shape})"
_OUT = "tapegrad.compiled: out must have {n} elements"


@jit
def grad_into(x, out):
    if size_of(x, _F64, "x") != {n}:
        raise ValueError(_SIZE)
    if out_size(out, _F64, "out") != {n}:
        raise ValueError(_OUT)
    OK = flag()
{write}
'''
# the kernel writes its results whether or not the guards hold: into out itself (where it is
# C-contiguous) when the tape has no guards, else into a buffer copied to out when they hold
_DIRECT = """\
    Y = as_row(out, {n})
    points(as_row(x, {n}), Y, OK, 0, 1)
    finish(out, Y)
    return 0"""
_GUARDED = """\
    Y = np.empty((1, {n}))
    points(as_row(x, {n}), Y, OK, 0, 1)
    if not OK[0]:
        return 1
    store(out, Y[0])
    return 0"""


def fused_grad_into(c):
    """The numba function `grad_into(x, out)` -> status of Compiled `c`, fused; raises
    NotImplementedError naming what the fused tier cannot compile."""
    tape = c.tape
    in_slot, out_slot = tape.input_slots[0], tape.output_slots[0]
    where = positions(tape, [in_slot])
    plan = Plan(Schedule.GRAD, in_pos=where, seeds=positions(tape, [out_slot]), read_g=where)
    from ..core import vecmath
    vm = cache.copy_module(vecmath, "vecmath").__name__.rsplit(".")[-1]
    try:
        text = fuse.source(tape, tape.V0, plan, vm)
    except fuse.NotFusable as err:
        raise NotImplementedError(f"compiled fused_grad_into: the fused tier cannot compile "
                                  f"this tape ({err}); use grad_into") from None
    njit_module = c._generated().__name__.rsplit(".", 1)[-1]
    write = (_GUARDED if tape.guards else _DIRECT).format(n=c.n_in)
    text += _MEMBER.format(njit=njit_module, n=c.n_in, shape=c.in_shape, write=write)
    module = cache.materialize(f"_gen_fusednjit_{cache.digest(text, cache.salt())}", text)
    return module.grad_into


compiled.fused_builder = fused_grad_into
