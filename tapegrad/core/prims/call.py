"""call: a nested function transform (`grad(f)` or `jacobian(f)` of a traced function) used inside
a traced or eager computation. Its payload lists its operands; its rules are a Python object
(`transforms.call.CallRule`) that the sweeps run between compiled segments, never compiled."""
from ..primitive import Prim
from . import dependence

call = Prim(46, "call", "call", "CallBackward0", variadic=True,
            reads_elements=dependence.every_operand, curvature="nonlinear")
