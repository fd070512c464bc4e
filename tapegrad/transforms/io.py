"""Saving and loading tapes: `save(tape, path)` writes a traced `Tape` in the versioned `.npz`
format of `transforms.fileformat` (no pickled code); `load(path, max_bytes=...)` reads it back.

Whatever the file holds, loading either returns a validated `Tape` or raises `TapeFormatError`:
the format module checks every array header before reading it and validates the arrays
(`core.validate`), so truncated, corrupted and hostile files never reach an interpreter. A
loaded tape takes its inputs in order (the signature it was traced with, Python objects, is not
saved), each in the tape's dtype.
"""
from . import fileformat
from .fileformat import MAX_BYTES, save, to_arrays
from .tape import Tape

__all__ = ["MAX_BYTES", "from_arrays", "load", "save", "to_arrays"]


def load(path, max_bytes=MAX_BYTES):
    """Read a tape written by `Tape.save`; validated before it can be replayed.

    Whatever the file holds, the result is a validated Tape or a TapeFormatError: the archive and
    every array header are checked before any array is read (dtypes without Python objects,
    declared sizes that the archive really holds, at most `max_bytes` in all), then the arrays
    pass `core.validate`. A missing or unreadable file raises the usual OSError."""
    return from_arrays(fileformat.read(path, max_bytes), str(path))


def from_arrays(arrays, where="arrays"):
    """A validated Tape from the arrays of the file format (`to_arrays` writes them)."""
    flat, input_slots, output_slots, structure, guards = fileformat.parse(arrays, where)
    tape = Tape(flat, input_slots, output_slots, structure, guards, [])
    tape.validated = True
    return tape
