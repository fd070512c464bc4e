"""The replayable tape of a traced function: `Tape`.

A `Tape` is what `trace` makes and what `load` reads back: the tape arrays (read-only for good),
a template value buffer holding the constants, the slots of the inputs and outputs, the output's
tree structure, the guards (comparison slots and their outcomes at trace time) and the
signature of the arguments it was traced for. It replays the function's value, its gradient and
every sweep of the interpreters, with one value buffer per thread so that a tape may be shared.

Its public sweeps (`forward`, `backward`, `tangent`, `backward_tangent`) check the buffers they
are given before any compiled code sees them (the interpreters do not check bounds); the
transforms call the unchecked `_forward`, `_backward`, ... on buffers the tape made itself, and
seed them with `directions` and `columns` (identity seeds, buffer positions of slots).

Everything computed from the tape in a process (its primitives, where `load` writes each input,
the per-thread buffers, and the caches of `derived`: the entries a gradient needs, the bound
gradient sweeps) is rebuilt on unpickling, never pickled: a pickle holds `_STATE` only. Its
displays come from `inspect.display` (a view, made per call); `save` writes the format of
`transforms.fileformat`, which sits below this module so that loading (`transforms.io`, above
it) and saving need no import cycle.
"""
import threading

import numpy as np

from . import fileformat, signature
from ..core import aliases, pytree, sweep
from ..core.registry import PRIMS
from ..core.validate import read_only
from ..eager import graph
from ..eager.tensor import Tensor
from ..inspect.display import DisplayMethods, TapeView, op_counts, operands


class GuardError(RuntimeError):
    """A replay reached a branch the tape did not record."""


class Tape(DisplayMethods):
    """A traced function: replayable forward, reverse, tangent and second-order sweeps.

    Built by `trace`; `tape(*args)` replays the function's value, `tape.gradient(*args)` its
    gradient, `len(tape)` counts entries. Buffers are per thread, so a tape may be shared.
    Displays (`str(tape)`, `table`, `stats`, `draw`, `_repr_html_`: `DisplayMethods`) come
    from `display()`, a `TapeView` of the tape at this thread's values.

    The tape arrays (E, FC, IP, S, NEED, V0) are read-only, for good (`core.validate.read_only`):
    the interpreters do not check bounds, so what was validated must not change. The sweep
    methods (`forward`, `backward`, `tangent`, `backward_tangent`) check the buffers they are
    given (type, dtype, shape, C order, writable) before any compiled code sees them: V is the
    value buffer, `(n_values,)` in the tape's dtype, as `load` returns it; adjoint buffers are
    `tape.n_adjoint` wide (the prefix of the slots that need adjoints, which is all a reverse
    sweep touches) or `n_values` wide, tangent buffers `n_values` wide.
    """

    # what a pickle holds; everything else is derived from it (`_derive`)
    _STATE = ("E", "FC", "IP", "S", "NEED", "V0", "offsets", "sizes", "shapes", "input_slots",
              "output_slots", "out_structure", "calls", "guards", "constants", "signature",
              "n_adjoint", "validated", "implicit_slots")

    def __init__(self, flat, input_slots, output_slots, out_structure, guards, constants,
                 signature=None):
        self.E, self.FC, self.IP, self.S, self.NEED, self.V0 = (
            read_only(a, owned=True) for a in (flat.E, flat.FC, flat.IP, flat.S, flat.NEED,
                                               flat.V))   # trace-time values; constants stay
        self.offsets, self.sizes = tuple(flat.offsets), tuple(flat.sizes)
        self.shapes = tuple(tuple(v.shape) for v in flat.values)
        self.input_slots = input_slots          # one per dynamic argument leaf
        self.output_slots = output_slots        # one per output leaf
        self.out_structure = out_structure
        self.calls = flat.calls                 # nested transforms, see core.sweep
        # a nested function's closure over enclosing values: the slots of its implicit inputs
        # (`trace`), loaded by the entry that replays it (`transforms.nested`)
        self.implicit_slots = ()
        self.closure = ()                       # the enclosing values at the trace (transient)
        self.guards = guards                    # [(slot, outcome)]
        self.constants = constants              # [(slot, array)] re-read with capture="call"
        self.signature = signature              # (structure, leaf signatures) of the arguments
        self.n_adjoint = self.V0.size           # adjoint buffers need only this prefix
        self.validated = False                  # set by trace() (by construction) or the loader
        self._derive()

    def _derive(self):
        """The state computed from the tape in this process (never pickled): the primitives
        of the entries, the dtype of each input, where `load` writes each input (start, stop,
        shape, dtype), this thread's buffers, and `derived`: caches that modules keep per
        tape, by key, each computed at its first use (a tape never changes)."""
        self.prims = [PRIMS[op] for op in self.E[:, 0].tolist()]
        self.input_dtypes = ((self.V0.dtype,) * len(self.input_slots) if self.signature is None
                             else signature.input_dtypes(self.signature))
        self._input_layout = tuple(
            (self.offsets[s], self.offsets[s] + self.sizes[s], self.shapes[s], dtype)
            for s, dtype in zip(self.input_slots, self.input_dtypes))
        self._local = threading.local()
        self.derived = {}

    def __getstate__(self):
        """Pickled as its arrays and slots (`_STATE`): the derived state stays behind."""
        return {name: getattr(self, name) for name in self._STATE}

    def __setstate__(self, state):
        """Unpickled arrays are writable: made read-only again, as validated."""
        self.implicit_slots, self.closure = (), ()
        self.__dict__.update(state)
        for name in ("E", "FC", "IP", "S", "NEED", "V0"):
            setattr(self, name, read_only(getattr(self, name), owned=True))
        self._derive()

    # ---- inspection --------------------------------------------------------------------------
    def __len__(self):
        return len(self.E)

    @property
    def dtype(self):
        return self.V0.dtype

    def __repr__(self):
        return (f"<tapegrad.Tape: {len(self)} entries, {len(self.S)} slots, "
                f"{self.V0.size} values ({self.V0.dtype}), {len(self.input_slots)} inputs, "
                f"{len(self.output_slots)} outputs, {len(self.guards)} guards; "
                f"{op_counts(self.prims)}>")

    def view(self, buffer, slot):
        off = self.offsets[slot]
        lead = buffer.shape[:-1]
        return buffer[..., off:off + self.sizes[slot]].reshape(lead + self.shapes[slot])

    def display(self):
        """The `TapeView` of this tape at this thread's values: those of its last replay (the
        trace-time values before any), drawn with gradients once replayed, for a scalar output."""
        V = getattr(self._local, "V", None)
        if V is None:
            return TapeView(self, self.V0)
        return TapeView(self, V, show_grads=sum(self.sizes[s] for s in self.output_slots) == 1)

    # ---- sweeps ------------------------------------------------------------------------------
    def _buffer(self):
        """This thread's value buffer, constants in place (copied once, not per call)."""
        V = getattr(self._local, "V", None)
        if V is None:
            V = self._local.V = self.V0.copy()
        return V

    def load(self, inputs, refresh_constants=False):
        """This thread's value buffer with `inputs` written in: a sequence holding one array or
        number per tape input, in order, each of its input's shape and dtype (as traced;
        a loaded tape's inputs have the tape's dtype). `refresh_constants`: re-read the arrays
        the function closed over (`capture="call"`)."""
        layout = self._input_layout
        if len(inputs) != len(layout):
            raise TypeError(f"the tape has {len(layout)} inputs; got {len(inputs)}")
        V = self._buffer()
        if refresh_constants:
            for s, array in self.constants:
                V[self.offsets[s]:self.offsets[s] + self.sizes[s]] = np.ravel(array)
        for (lo, hi, shape, dtype), x in zip(layout, inputs):
            x = np.asarray(x.data if isinstance(x, Tensor) else x)
            if (x.dtype is not dtype and x.dtype != dtype) or x.shape != shape:
                self._refuse_inputs(inputs, "input", "the tape's input")
            V[lo:hi] = x.reshape(-1)
        return V

    def _refuse_inputs(self, inputs, what, expected):
        """Raise the error for the first of `inputs` (one per tape input) that is not of its
        input's shape and dtype."""
        for k, ((_, _, shape, dtype), x) in enumerate(zip(self._input_layout, inputs)):
            x = np.asarray(x.data if isinstance(x, Tensor) else x)
            if x.dtype != dtype or x.shape != shape:
                _refuse_input(f"{what} {k}", x, shape, dtype, expected)

    def forward(self, V, for_gradient=False):
        """The forward sweep into V, the value buffer (`load`); `for_gradient`: only the
        entries whose values the reverse sweep and the guards read (a gradient needs neither
        the output nor the values no VJP reads)."""
        if not _fits(V, self.V0):
            self._refuse(("V", V, 1, None))
        self._forward(V, for_gradient)

    def _forward(self, V, for_gradient=False):
        """`forward` on a buffer the caller made from this tape (unchecked)."""
        if for_gradient:
            entries = self._gradient_entries()
            if entries is not None:
                return sweep.forward_entries(self, V, *entries)
        sweep.forward(self, V)

    def _gradient_entries(self):
        """(E, FC) of the entries `forward(V, for_gradient=True)` runs, or None for all."""
        entries = self.derived.get("gradient entries", False)
        if entries is False:
            entries = self.derived["gradient entries"] = _rows(self, self._value_mask())
        return entries

    def _value_mask(self):
        """The rows a gradient's forward sweep needs (`_value_rows`: a mask over the tape's
        rows, or None for all), computed once per tape."""
        keep = self.derived.get("value rows", False)
        if keep is False:
            keep = self.derived["value rows"] = _value_rows(self)
        return keep

    def _read_by_offset(self):
        """The slots whose values are read where the tape puts them, from outside its sweeps:
        inputs, outputs, implicit inputs, guards."""
        return {*self.input_slots, *self.output_slots, *self.implicit_slots,
                *(s for s, _ in self.guards)}

    def _aliased(self, for_gradient=True):
        """(arrays, entries) for the transforms' compiled sweeps: the tape's arrays with its
        copies as aliases of their operands' values (`core.aliases.Aliased`: fewer entries,
        the same buffers) and, `for_gradient`, their rows that a gradient's forward sweep runs
        (None: every row); None where the tape has no copy to drop. Slots read by their own
        offsets (inputs, outputs, guards) stay as they are."""
        arrays = self.derived.get("aliased", False)
        if arrays is False:
            arrays = self.derived["aliased"] = aliases.aliased(self, self._read_by_offset())
        if arrays is None or not for_gradient:
            return None if arrays is None else (arrays, None)
        entries = self.derived.get("aliased entries", False)
        if entries is False:
            keep = self._value_mask()
            entries = self.derived["aliased entries"] = \
                _rows(arrays, None if keep is None else keep[arrays.keep])
        return arrays, entries

    def gradient_sweeps(self, out, for_gradient=False):
        """grad's sweeps of this tape seeded at the scalar output slot `out`
        (`core.sweep.Gradient`, over the arrays of `_aliased`), bound at their first use;
        `for_gradient`: their forward sweep runs only the entries the reverse sweep and the
        guards read (see `forward`)."""
        key = ("gradient sweeps", out, for_gradient)
        sweeps = self.derived.get(key)
        if sweeps is None:
            entries = self._gradient_entries() if for_gradient else None
            aliased = self._aliased(for_gradient)
            sweeps = self.derived[key] = sweep.Gradient(self, out, entries, aliased,
                                                        self._read_by_offset())
        return sweeps

    def guards_hold(self, V):
        for s, outcome in self.guards:
            if (V[self.offsets[s]] != 0) != outcome:
                return False
        return True

    def backward(self, V, seeds):
        """Adjoints for several output seeds at once, after the forward sweep into V: `seeds`
        is (k, n_adjoint) or (k, n_values), one seed per row, in V's dtype; the adjoints are
        added into it, which is returned."""
        widths = (self.n_adjoint, self.V0.size)
        if not (_fits(V, self.V0) and _fits_rows(seeds, widths, self.V0)):
            self._refuse(("V", V, 1, None), ("seeds", seeds, 2, widths))
        sweep.backward(self, V, seeds)
        return seeds

    def _backward(self, V, seeds):
        """`backward` for the transforms, on buffers this tape made, after a forward sweep of
        every entry: over grad's arrays (`_sweep_arrays`)."""
        sweep.backward(self._sweep_arrays(), V, seeds)
        return seeds

    def tangent(self, V, T):
        """Tangents for several input directions at once, after the forward sweep into V: `T`
        is (k, n_values), one direction per row (its input slots set), in V's dtype; the
        tangents of every slot are written into it, which is returned."""
        widths = (self.V0.size,)
        if not (_fits(V, self.V0) and _fits_rows(T, widths, self.V0)):
            self._refuse(("V", V, 1, None), ("T", T, 2, widths))
        sweep.tangent(self, V, T)
        return T

    def _tangent(self, V, T):
        """`tangent` for the transforms (see `_backward`): the tangents of the slots they read
        (not those of the copies `_sweep_arrays` drops)."""
        sweep.tangent(self._sweep_arrays(), V, T)
        return T

    def backward_tangent(self, V, T, G, TG):
        """Forward over reverse, after `forward` and `tangent` (T is (k, n_values)): the reverse
        sweep from the adjoint seed G, (n_adjoint,) or (n_values,), adds the adjoints into G and
        their tangents along each row of T into TG, (k, n_adjoint) or (k, n_values); returns TG."""
        widths, n = (self.n_adjoint, self.V0.size), (self.V0.size,)
        if not (_fits(V, self.V0) and _fits_rows(T, n, self.V0)
                and _fits(G, self.V0, widths) and _fits_rows(TG, widths, self.V0, T.shape[0])):
            self._refuse(("V", V, 1, None), ("T", T, 2, n), ("G", G, 1, widths),
                         ("TG", TG, 2, widths, T.shape[0] if _fits_rows(T, n, self.V0) else None))
        sweep.backward_tangent(self, V, T, G, TG)
        return TG

    def _backward_tangent(self, V, T, G, TG):
        """`backward_tangent` for the transforms (see `_backward`), after `_tangent`."""
        sweep.backward_tangent(self._sweep_arrays(), V, T, G, TG)
        return TG

    def _sweep_arrays(self):
        """What the transforms' reverse and tangent sweeps run over: grad's arrays (`_aliased`:
        the copies as aliases, so every transform gives grad's bits), or the tape itself where
        it has no copies or anomaly mode checks each entry (its messages name the tape's)."""
        aliased = self._aliased(False)
        return self if aliased is None or sweep.checked is not None else aliased[0]

    def _refuse(self, *buffers):
        """Raise the error for the first of `buffers` that a compiled sweep cannot take: each
        (name, array, ndim, widths (None: the value buffer's size)[, rows]), in order."""
        for name, a, ndim, widths, *rows in buffers:
            rows = rows[0] if rows else None
            fits = _fits(a, self.V0, widths) if ndim == 1 else _fits_rows(a, widths, self.V0, rows)
            if not fits:
                _refuse_buffer(a, name, ndim, widths or (self.V0.size,), self.V0.dtype, rows)

    # ---- conveniences ------------------------------------------------------------------------
    def outputs(self, V):
        leaves = [self.view(V, s).copy() for s in self.output_slots]
        return pytree.unflatten(self.out_structure, leaves)

    def _inputs(self, args, kwargs):
        """The input leaves of a call with the traced arguments' structure, shapes and statics."""
        leaves, structure = pytree.flatten(signature.arguments(args, kwargs))
        if self.signature is None:              # a tape loaded from a file: its inputs in order
            if len(leaves) != len(self.input_slots):
                raise TypeError(f"the tape has {len(self.input_slots)} inputs; got {len(leaves)}")
            self._refuse_inputs(leaves, "argument leaf", "the tape's input")
            return leaves
        traced_structure, signatures = self.signature
        if structure != traced_structure:
            raise TypeError(f"the tape was traced with {signature.describe_call(traced_structure)}"
                            f"; got {signature.describe_call(structure)}")
        for i, (leaf, sig) in enumerate(zip(leaves, signatures)):
            if signature.leaf_signature(leaf) != sig:
                refuse_complex(f"argument leaf {i}", leaf)
                raise ValueError(f"argument leaf {i} ({signature.describe(leaf)}) does not match "
                                 f"the traced one ({signature.describe_signature(sig)}); trace the "
                                 "function again")
        return [leaf for leaf in leaves if signature.is_dynamic(leaf)]

    def __call__(self, *args, **kwargs):
        """Replay the forward sweep at new argument values (same structure, shapes, dtypes and
        static values as traced); returns the outputs."""
        V = self.load(self._inputs(args, kwargs))
        self._forward(V)
        self._check_guards(V)
        return self.outputs(V)

    def gradient(self, *args, **kwargs):
        """Gradient of the (scalar) output with respect to every input, by one reverse sweep:
        grad's (`gradient_sweeps`), so the same bits as `grad(f)`; the forward sweep runs every
        entry, so that the display shows every value of this replay."""
        if len(self.output_slots) != 1 or self.sizes[self.output_slots[0]] != 1:
            raise TypeError("gradient requires a scalar output; use jacobian or vjp")
        V = self.load(self._inputs(args, kwargs))
        self._forward(V)
        self._check_guards(V)
        G = np.zeros((1, V.size), V.dtype)
        G[:, :self.n_adjoint] = self.gradient_sweeps(self.output_slots[0]).adjoints(V)
        grads = [self.view(G[0], s).copy() for s in self.input_slots]
        return grads[0] if len(grads) == 1 else tuple(grads)

    def save(self, path):
        """Write the tape to `path` in tapegrad's versioned .npz format (see `tapegrad.load`)."""
        fileformat.save(self, path)

    def _check_guards(self, V):
        if not self.guards_hold(V):
            raise GuardError("these inputs take another branch of the traced function than the "
                             "tape recorded; call the function transform (which retraces) "
                             "instead of replaying the tape directly")


# ---- seeds and positions in a tape's buffers -------------------------------------------------

def directions(tape, slots, V, width=None):
    """Identity seeds: one row per element of `slots`, over buffers of `width` values (V's by
    default; the adjoint prefix for reverse seeds, where slots past it stay zero rows)."""
    width = V.size if width is None else width
    n = sum(tape.sizes[s] for s in slots)
    T = np.zeros((n, width), V.dtype)
    row = 0
    for s in slots:
        if tape.offsets[s] + tape.sizes[s] <= width:
            T[np.arange(row, row + tape.sizes[s]),
              np.arange(tape.offsets[s], tape.offsets[s] + tape.sizes[s])] = 1.0
        row += tape.sizes[s]
    return T


def columns(tape, slots, S=None):
    """Buffer positions of the elements of `slots`, end to end (`S`: another tape's slot table
    to read them from)."""
    if S is None:
        spans = [(tape.offsets[s], tape.sizes[s]) for s in slots]
    else:
        spans = [(S[s, 0], S[s, 1]) for s in slots]
    if not spans:
        return np.zeros(0, np.int64)
    return np.concatenate([np.arange(off, off + size) for off, size in spans])


# ---- the entries a gradient's forward sweep needs -------------------------------------------

def _value_rows(tape):
    """Which entries compute values that a reverse sweep or a guard reads, with the entries
    computing their operands (a mask over the tape's rows); None when that is every entry (or
    the tape has nested-transform entries, which sweep in pieces). A VJP reads what
    `eager.graph.vjp_reads` says (everything, for a primitive that saves values and does not
    say)."""
    if tape.calls:
        return None
    E, NEED = tape.E, tape.NEED
    live = np.zeros(len(tape.S), np.bool_)
    for s, _ in tape.guards:
        live[s] = True
    for e, prim in enumerate(tape.prims):
        if not (NEED[E[e, 4]] and prim.saves):
            continue
        operand_slots = operands(tape, e)
        reads = graph.vjp_reads(prim)
        if reads is None:
            live[operand_slots] = True
            live[E[e, 4]] = True
            continue
        for read_by_operand in reads:      # () for an operand without a derivative
            if not read_by_operand:
                continue
            read, reads_output = read_by_operand
            for i in read:
                live[operand_slots[i]] = True
            live[E[e, 4]] |= reads_output
    keep = np.zeros(len(E), np.bool_)
    for e in range(len(E) - 1, -1, -1):
        if live[E[e, 4]]:
            keep[e] = True
            live[operands(tape, e)] = True
    return None if keep.all() else keep


def _rows(arrays, keep):
    """(E, FC) of `arrays` at the rows `keep` (read-only), or None where that is every row."""
    if keep is None or keep.all():
        return None
    return tuple(read_only(np.ascontiguousarray(a[keep]), owned=True)
                 for a in (arrays.E, arrays.FC))


# ---- checking what reaches the compiled sweeps ----------------------------------------------

def refuse_complex(what, x):
    """Raise the error for complex input values, if `x` is complex."""
    if isinstance(x, Tensor):
        x = x.data
    if isinstance(x, complex) or getattr(getattr(x, "dtype", None), "kind", None) == "c":
        raise TypeError(f"{what} is complex ({np.asarray(x).dtype}): complex numbers are not "
                        "supported; tapes compute in real floating point")


def _refuse_input(what, x, shape, dtype, expected):
    """Raise the error for an input array `x` that is not of the tape's `shape` and `dtype`."""
    refuse_complex(what, x)
    raise ValueError(f"{what} ({signature.describe(x)}) does not match {expected} (array of "
                     f"shape {shape} and dtype {np.dtype(dtype)})")


def _fits(V, V0, widths=None):
    """Whether V can be the value buffer of a tape whose template is V0, or with `widths`, a
    flat buffer of V0's dtype and one of those sizes: a few attribute tests, on the replay
    path (C-contiguous, aligned and writable is numpy's `carray`)."""
    return (type(V) is np.ndarray
            and (V.shape == V0.shape if widths is None else V.ndim == 1 and V.size in widths)
            and (V.dtype is V0.dtype or V.dtype == V0.dtype) and V.flags.carray)


def _fits_rows(A, widths, V0, rows=None):
    """Whether A can be a (rows, width) buffer of V0's dtype, its width one of `widths`."""
    return (type(A) is np.ndarray and A.ndim == 2 and A.shape[1] in widths
            and (rows is None or A.shape[0] == rows)
            and (A.dtype is V0.dtype or A.dtype == V0.dtype) and A.flags.carray)


def _refuse_buffer(a, name, ndim, widths, dtype, rows):
    """Raise the error for a buffer that a compiled sweep cannot take (see `_fits`)."""
    widths = dict.fromkeys(int(w) for w in widths)
    lead = "" if ndim == 1 else f"{'k' if rows is None else rows}, "
    expected = " or ".join(f"({lead}{w}{',' if ndim == 1 else ''})" for w in widths)
    if type(a) is not np.ndarray:
        raise TypeError(f"{name} must be a numpy.ndarray of shape {expected} and dtype "
                        f"{np.dtype(dtype)}, got {type(a).__name__}")
    if a.dtype != dtype:
        refuse_complex(name, a)
        raise TypeError(f"{name} must have dtype {np.dtype(dtype)} (the tape's), got {a.dtype}")
    if a.ndim != ndim or a.shape[-1] not in widths or (rows is not None and a.shape[0] != rows):
        raise ValueError(f"{name} must have shape {expected}, got {a.shape}")
    raise ValueError(f"{name} must be a C-contiguous, aligned and writable array (the sweep "
                     "writes into it)")
