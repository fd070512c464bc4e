"""The op registry: every primitive, by opcode and by name.

The definitions live in `core/prims/` (see `core.primitive` for what a definition holds); this
module imports every module there and collects the primitives they define, so adding a
primitive is adding its module. Opcodes are declared by the definitions and checked here: each
used once, no gaps (the interpreters' dispatch and the saved-tape format rely on both)."""
import importlib
import inspect
import pkgutil

import numpy as np

from . import prims
from .primitive import Prim


def _collect():
    found = {}
    for info in sorted(pkgutil.iter_modules(prims.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{prims.__name__}.{info.name}")
        for value in vars(module).values():
            group = value if isinstance(value, tuple) else (value,)
            for prim in group:
                if isinstance(prim, Prim):
                    other = found.setdefault(prim.opcode, prim)
                    if other is not prim:
                        raise RuntimeError(f"opcode {prim.opcode} is defined twice: {other.name} "
                                           f"and {prim.name}")
    prims_by_opcode = tuple(found[k] for k in sorted(found))
    if [p.opcode for p in prims_by_opcode] != list(range(len(prims_by_opcode))):
        raise RuntimeError(f"opcodes must be 0..n-1 without gaps, got {sorted(found)}")
    names = [p.name for p in prims_by_opcode]
    if len(set(names)) != len(names):
        raise RuntimeError("two primitives share a name")
    for p in prims_by_opcode:
        _check_definition(p)
    return prims_by_opcode


def _check_definition(p):
    """A structural primitive has every rule it needs, named as the generated code names it
    (rules may call each other by name, in Python and in generated code alike)."""
    if not p.structural:
        return
    if p.scalar and set(p.scalar) != {"forward", "backward"}:
        raise RuntimeError(f"the one-element forms of {p.name} must be forward and backward, "
                           f"not {sorted(p.scalar)}")
    needed = ("fwd", "vjp") if p.linear else ("fwd", "vjp", "jvp", "vjp_jvp")
    for rule in needed:
        body = p.rules.get(rule)
        if body is None:
            raise RuntimeError(f"primitive {p.name} has no {rule} rule")
        if body.__name__ != f"{p.name}_{rule}":
            raise RuntimeError(f"the {rule} rule of {p.name} must be named {p.name}_{rule}, "
                               f"not {body.__name__}")
    if p.check is None:
        raise RuntimeError(f"primitive {p.name} has no shape rule")
    if p.linear and "temp(" in inspect.getsource(p.body("fwd", "cuda")):
        # the sweeps run a linear forward on tangent buffers, which have no scratch rows on the
        # GPU (the CPU layouts allocate scratch)
        raise RuntimeError(f"the CUDA forward of linear primitive {p.name} may not use temp()")


PRIMS = _collect()
BY_NAME = {p.name: p for p in PRIMS}
OPCODE = {p.name: p.opcode for p in PRIMS}
# per-opcode flags, for array operations over a tape's opcode column (`flags[E[:, 0]]`)
SAVES = np.array([p.saves for p in PRIMS], dtype=bool)
VARIADIC = np.array([p.variadic for p in PRIMS], dtype=bool)
DIFFERENTIABLE = np.array([p.differentiable for p in PRIMS], dtype=bool)
ELEMENTWISE = np.array([p.elementwise for p in PRIMS], dtype=bool)
BINARY = np.array([p.kind == "binary" for p in PRIMS], dtype=bool)
# one-operand kernels run inline by grad's programs, which may read that operand straight from
# the scalars a pack would have gathered (`core.programs.fusible`)
GATHERS = np.array([p.inline and p.structural and not p.variadic and p.arity == 1
                    for p in PRIMS], dtype=bool)
