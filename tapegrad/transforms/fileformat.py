"""The file format of saved tapes: a versioned `.npz` of plain arrays, no pickled code.

A file holds plain arrays only, read with `allow_pickle=False`:

    format        "tapegrad-tape"            version        1
    E, FC, IP     the entries                S, NEED        the slot table, adjoint flags
    V0            the value buffer (inputs' trace-time values, constants, intermediates)
    shape_ndim, shape_dims                   each slot's shape, flattened
    inputs, outputs                          input and output slots
    guards        (k, 2): slot, outcome      structure      the output tree, as JSON

The output tree is JSON: "*" a leaf, {"tuple": [...]} and {"list": [...]} (a namedtuple is
written as a tuple), {"dict": [keys], "items": [...]} with each key a JSON string, number,
boolean or null, or {"tuple": [keys]} for a tuple key. A tree with any other key cannot be saved.

This module writes a tape's arrays (`save`, `to_arrays`: it reads the tape's attributes only)
and reads them back as checked parts of a tape (`read`, then `parse`); `transforms.io` makes
the `Tape` of them. It sits below the `Tape` class so that `Tape.save` can write without the
tape module and the loader importing each other.

Whatever the file holds, reading either returns arrays that passed the validator or raises
`TapeFormatError`: truncated, corrupted and hostile files never reach an interpreter
(`core.validate`), and no array is read before its header is checked (plain dtypes, a declared
size that the archive holds, at most `max_bytes` in all), so a file cannot make `read` allocate
more than it holds.
"""
import json
import os
import threading
import types
import zipfile

import numpy as np

from . import signature
from ..core import pytree
from ..core.validate import TapeFormatError, read_only, validate_tape

FORMAT, VERSION = "tapegrad-tape", 1
_INT_ARRAYS = ("E", "IP", "S", "NEED", "shape_ndim", "shape_dims", "inputs", "outputs", "guards")
_ARRAYS = ("format", "version", "E", "FC", "IP", "S", "NEED", "V0", "shape_ndim", "shape_dims",
           "inputs", "outputs", "guards", "structure")
MAX_BYTES = 1 << 30      # the most array bytes `load` reads unless told otherwise


def _encode(structure):
    if structure is pytree.LEAF:
        return "*"
    if structure[0] is dict:
        return {"dict": [_encode_key(k) for k in structure[1]],
                "items": [_encode(s) for s in structure[2]]}
    kind = {tuple: "tuple", list: "list"}.get(structure[0])
    if kind is None and issubclass(structure[0], tuple):
        kind = "tuple"          # a namedtuple is saved as a plain tuple (its class is code)
    if kind is None:
        raise TypeError(f"cannot save an output tree containing {structure[0].__name__}")
    return {kind: [_encode(s) for s in structure[1]]}


_KEY_TYPES = (str, int, float, bool, type(None))


def _encode_key(key):
    """A dict key of the output tree in JSON: str, int, float, bool and None as themselves
    (JSON tells them apart), a tuple as {"tuple": [its items]} (a namedtuple as a plain tuple,
    which it equals), a numpy scalar as the Python number it equals. Any other key cannot be
    written."""
    if type(key) in _KEY_TYPES:
        return key
    if isinstance(key, np.generic) and key.dtype.kind in "biuf":
        return key.item()
    if isinstance(key, tuple):
        return {"tuple": [_encode_key(k) for k in key]}
    raise TypeError(f"cannot save an output tree with a dict key of type "
                    f"{type(key).__name__} ({key!r}): keys are str, int, float, bool, None or "
                    "tuples of them")


def _decode_key(obj, depth):
    if depth > 100:
        raise TapeFormatError("output structure nested too deeply")
    if isinstance(obj, _KEY_TYPES):
        return obj
    if isinstance(obj, dict) and len(obj) == 1 and isinstance(obj.get("tuple"), list):
        return tuple(_decode_key(k, depth + 1) for k in obj["tuple"])
    raise TapeFormatError("malformed dict key in the output structure")


def _decode(obj, depth=0):
    if depth > 100:
        raise TapeFormatError("output structure nested too deeply")
    if obj == "*":
        return pytree.LEAF
    if isinstance(obj, dict) and set(obj) == {"dict", "items"}:
        keys, items = obj["dict"], obj["items"]
        if not isinstance(keys, list) or not isinstance(items, list) or len(keys) != len(items):
            raise TapeFormatError("malformed dict in the output structure")
        keys = [_decode_key(k, depth + 1) for k in keys]
        if len(set(keys)) != len(keys):
            raise TapeFormatError("malformed dict in the output structure")
        return (dict, tuple(keys), tuple(_decode(s, depth + 1) for s in items))
    if isinstance(obj, dict) and len(obj) == 1:
        (kind, items), = obj.items()
        if kind in ("tuple", "list") and isinstance(items, list):
            return ({"tuple": tuple, "list": list}[kind],
                    tuple(_decode(s, depth + 1) for s in items))
    raise TapeFormatError("malformed output structure")


def to_arrays(tape):
    """The arrays of the file format for `tape` (`from_arrays` reads them back): copies, which
    may be edited (the tape's own arrays are read-only)."""
    return {name: np.array(a) for name, a in _file_arrays(tape).items()}


def _file_arrays(tape):
    """The arrays of the file format for `tape`, the tape's own arrays among them."""
    if tape.calls:
        raise TypeError("a tape with nested transforms holds Python code and cannot be saved")
    if tape.implicit_slots:
        raise TypeError("a tape that closes over values of an enclosing computation cannot be "
                        "saved: those values are inputs it takes from that computation")
    ndim = np.array([len(s) for s in tape.shapes], np.int64)
    dims = np.array([d for s in tape.shapes for d in s], np.int64)
    return dict(format=np.array(FORMAT), version=np.array(VERSION, np.int64),
                E=tape.E, FC=tape.FC, IP=tape.IP, S=tape.S, NEED=np.asarray(tape.NEED, np.int64),
                V0=tape.V0, shape_ndim=ndim, shape_dims=dims,
                inputs=np.array(tape.input_slots, np.int64),
                outputs=np.array(tape.output_slots, np.int64),
                guards=np.array([(s, int(o)) for s, o in tape.guards], np.int64).reshape(-1, 2),
                structure=np.array(json.dumps(_encode(tape.out_structure))))


def save(tape, path):
    """Write `tape` to `path` (.npz; exactly that name, written whole or not at all). Nested
    transforms and closed-over Python cannot be saved."""
    arrays = _file_arrays(tape)
    if not isinstance(path, (str, os.PathLike)):
        np.savez(path, **arrays)          # a file object
        return
    tmp = f"{os.fspath(path)}.{os.getpid()}.{threading.get_ident()}.tmp"    # per process and thread
    try:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def read(path, max_bytes=MAX_BYTES):
    """The arrays of the tape file at `path` (a dict by name), each header checked before its
    array is read (dtypes without Python objects, declared sizes that the archive really holds,
    at most `max_bytes` in all); their content is checked by `parse`. A missing or unreadable
    file raises the usual OSError, anything else wrong a TapeFormatError."""
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, (int, np.integer)):
        raise TypeError(f"max_bytes must be an int (the most bytes of arrays to read), got "
                        f"{type(max_bytes).__name__} {max_bytes!r}")
    if max_bytes < 0:
        raise ValueError(f"max_bytes must be non-negative (the most bytes of arrays to read), "
                         f"got {max_bytes}")
    where = str(path)
    try:
        archive = zipfile.ZipFile(path)
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        raise
    except Exception as err:   # noqa: BLE001 (whatever the bytes make zipfile raise)
        raise TapeFormatError(f"{where}: not a tape file ({type(err).__name__}: {err})") from None
    try:
        with archive:
            return _read_arrays(archive, where, max_bytes)
    except TapeFormatError:
        raise
    except Exception as err:   # noqa: BLE001
        raise TapeFormatError(f"{where}: corrupted tape file ({type(err).__name__}: {err})") \
            from None


def _read_arrays(archive, where, max_bytes):
    members = {info.filename: info for info in archive.infolist()}
    budget = max_bytes
    arrays = {}
    for name in _ARRAYS:
        info = members.get(name + ".npy")
        if info is None:
            raise TapeFormatError(f"{where}: missing array {name!r}")
        if info.file_size > budget:
            raise TapeFormatError(f"{where}: the file holds more than max_bytes={max_bytes} "
                                  f"bytes of arrays (array {name!r}: {info.file_size} bytes)")
        with archive.open(info) as fh:
            arrays[name] = _read_npy(fh, info.file_size, name, where)
        budget -= info.file_size
    return arrays


def _read_npy(fh, file_size, name, where):
    """One .npy member, its header checked before its data is read."""
    fmt = np.lib.format
    major, minor = fmt.read_magic(fh)
    if (major, minor) == (1, 0):
        shape, fortran, dtype = fmt.read_array_header_1_0(fh)
    elif (major, minor) in ((2, 0), (3, 0)):
        shape, fortran, dtype = fmt.read_array_header_2_0(fh)
    else:
        raise TapeFormatError(f"{where}: array {name!r} has an unknown .npy version")
    if dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None \
            or dtype.kind not in "biufU":
        raise TapeFormatError(f"{where}: array {name!r} has dtype {dtype}: plain numbers only")
    count = 1
    for d in shape:
        count *= d
    nbytes = count * dtype.itemsize
    if nbytes > file_size:
        raise TapeFormatError(f"{where}: array {name!r} declares {shape} ({nbytes} bytes) but "
                              f"the file holds {file_size} bytes for it")
    data = fh.read(nbytes)
    if len(data) != nbytes:
        raise TapeFormatError(f"{where}: array {name!r} is truncated")
    array = np.frombuffer(data, dtype).reshape(shape, order="F" if fortran else "C")
    # C-contiguous, as the sweeps need, and read-only for good: the loader's own copy
    return read_only(np.array(array, order="C"), owned=True)


def _get(arrays, name, where):
    if name not in arrays:
        raise TapeFormatError(f"{where}: missing array {name!r}")
    if not isinstance(arrays[name], np.ndarray):
        raise TapeFormatError(f"{where}: {name} must be a numpy array")
    return arrays[name]


def parse(arrays, where="arrays"):
    """The parts of a tape from the arrays of the file format, checked by the validator: (a
    flat tape as `Tape` takes it, input slots, output slots, output structure, guards)."""
    fmt = _get(arrays, "format", where)
    if fmt.shape != () or fmt.dtype.kind != "U" or str(fmt) != FORMAT:
        raise TapeFormatError(f"{where}: not a tapegrad tape file")
    version = _get(arrays, "version", where)
    if version.shape != () or version.dtype.kind not in "iu" or int(version) != VERSION:
        raise TapeFormatError(f"{where}: unsupported tape format version {version!r} "
                              f"(this tapegrad reads version {VERSION})")
    for name in _INT_ARRAYS:
        a = _get(arrays, name, where)
        if a.dtype != np.int64:
            raise TapeFormatError(f"{where}: {name} must be int64, got {a.dtype}")
    ndim, dims = arrays["shape_ndim"], arrays["shape_dims"]
    if ndim.ndim != 1 or dims.ndim != 1 or (ndim < 0).any() or (ndim > 64).any() \
            or sum(ndim.tolist()) != dims.size:
        raise TapeFormatError(f"{where}: malformed slot shapes")
    shapes, k, dims = [], 0, dims.tolist()
    for n in ndim.tolist():
        shapes.append(tuple(dims[k:k + n]))
        k += n
    guards = arrays["guards"]
    if guards.ndim != 2 or guards.shape[1] != 2 or not np.isin(guards[:, 1], (0, 1)).all():
        raise TapeFormatError(f"{where}: malformed guards")
    structure_text = _get(arrays, "structure", where)
    if structure_text.shape != () or structure_text.dtype.kind != "U":
        raise TapeFormatError(f"{where}: malformed output structure")
    try:
        structure = json.loads(str(structure_text))
    except (ValueError, RecursionError) as err:      # JSONDecodeError, or an int too long
        raise TapeFormatError(f"{where}: malformed output structure ({err})") from None
    structure = _decode(structure)
    inputs, outputs = arrays["inputs"], arrays["outputs"]
    if inputs.ndim != 1 or outputs.ndim != 1:
        raise TapeFormatError(f"{where}: malformed input or output slots")
    if signature.count_leaves(structure) != outputs.size:
        raise TapeFormatError(f"{where}: the output structure does not match the outputs")
    V0 = _get(arrays, "V0", where)
    S, E = arrays["S"], arrays["E"]
    # check the arrays before any attribute derived from them is computed
    probe = types.SimpleNamespace(E=E, FC=_get(arrays, "FC", where), IP=arrays["IP"], S=S,
                                  NEED=arrays["NEED"], V0=V0, shapes=shapes,
                                  input_slots=[int(s) for s in inputs],
                                  output_slots=[int(s) for s in outputs],
                                  guards=[(int(s), bool(o)) for s, o in guards])
    validate_tape(probe)
    flat = types.SimpleNamespace(
        E=probe.E, FC=probe.FC, IP=probe.IP, S=probe.S, NEED=probe.NEED, V=probe.V0,
        offsets=[int(o) for o in probe.S[:, 0]], sizes=[int(n) for n in probe.S[:, 1]],
        values=[types.SimpleNamespace(shape=s) for s in shapes], calls=[])
    return flat, probe.input_slots, probe.output_slots, structure, probe.guards
