"""What a transform is, as a typed value: its schedule of sweeps and the function it transforms.

Every transformed function (`grad(f)`, `jacrev(f)`, ...) carries `.transform`, a `Transform`:
the function it transforms, which arguments it differentiates, and how it was made. Whoever
replays a transform another way than by calling it (batched replay runs its sweeps at every
point of a batch at once) reads it there, instead of recognising the wrapper.

A `Schedule` names the sweeps a transform runs at one point and what that point's results
are. Code that runs schedules asks its properties (does it read the values? does it seed the
outputs, once or per element? does it carry tangents, unit directions or the caller's? is it
second order?) rather than comparing names, so that a new schedule is one row here and the
sweeps that serve it.
"""
import dataclasses
import enum


class Seeds(enum.Enum):
    """The reverse sweeps of a schedule."""
    NONE = "none"
    SCALAR = "scalar"      # one sweep, seeded at the scalar output (a gradient)
    EACH = "each"          # one sweep per output element (the rows of a Jacobian)


class Directions(enum.Enum):
    """The tangent directions a schedule carries through the forward sweep."""
    NONE = "none"
    UNIT = "unit"          # one per element of the differentiated inputs (a Jacobian's columns)
    GIVEN = "given"        # the caller's tangents of every input, one set per point (a jvp)


class Schedule(enum.Enum):
    """The sweeps a transform runs at a point, in order: forward, tangent (when it carries
    directions), reverse (when it seeds outputs); second order carries the tangents through
    the reverse sweep (forward-over-reverse) and reads the tangents of the adjoints."""
    #                label            reads values  seeds         directions        second order
    VALUE = ("value", True, Seeds.NONE, Directions.NONE, False)
    GRAD = ("grad", False, Seeds.SCALAR, Directions.NONE, False)
    VALUE_AND_GRAD = ("value_and_grad", True, Seeds.SCALAR, Directions.NONE, False)
    JACREV = ("jacrev", False, Seeds.EACH, Directions.NONE, False)
    JACFWD = ("jacfwd", False, Seeds.NONE, Directions.UNIT, False)
    JVP = ("jvp", True, Seeds.NONE, Directions.GIVEN, False)
    HESSIAN = ("hessian", False, Seeds.SCALAR, Directions.UNIT, True)

    def __init__(self, label, reads_values, seeds, directions, second_order):
        self.label = label                  # the transform's name
        self.reads_values = reads_values    # the outputs' values are results
        self.seeds = seeds
        self.directions = directions
        self.second_order = second_order

    @property
    def reads_gradient(self):
        """The adjoints of the differentiated inputs are results (one set per seed)."""
        return self.seeds is not Seeds.NONE and not self.second_order

    @property
    def reads_tangents(self):
        """The outputs' tangents are results (one set per direction)."""
        return self.directions is not Directions.NONE and not self.second_order

    @property
    def scalar_output(self):
        """The function must return a scalar (its one output element is the seed)."""
        return self.seeds is Seeds.SCALAR

    @property
    def differentiates(self):
        """`argnums` name the inputs differentiated (a jvp carries tangents of every input)."""
        return self.seeds is not Seeds.NONE or self.directions is Directions.UNIT

    @property
    def given_tangents(self):
        """A call passes (primals, tangents), the tangents being per-point directions."""
        return self.directions is Directions.GIVEN

    def __repr__(self):
        return f"Schedule.{self.name}"


@dataclasses.dataclass(frozen=True)
class Transform:
    """A transformed function's identity: its schedule, the function it transforms, the
    differentiated arguments (`argnums`, a tuple, or None), whether a single argnum was given
    (its results are not wrapped in a tuple), `has_aux`, and `capture` ("trace": closed-over
    arrays are constants of the tape; "call": re-read at every call)."""
    schedule: Schedule
    fn: object
    argnums: tuple = None
    single: bool = False
    has_aux: bool = False
    capture: str = "trace"
