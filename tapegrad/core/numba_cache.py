"""numba's on-disk cache of one dispatcher (`@njit(cache=True)`), made safe and fast to load.

What numba's own cache does not do, and this module adds to each of tapegrad's dispatchers:

* **Recovery.** A cache file that cannot be read back (a truncated or garbled index `.nbi` or
  data `.nbc` file) makes numba raise the unpickling error from every later call that compiles
  the function. Here it is a cache miss: the index is cleared and the function compiled again,
  with a RuntimeWarning; where the file cannot be rewritten, the function compiles without its
  cache and the warning names the directory to clear.
* **A check of what is loaded.** numba unpickles machine code and runs it: a data file altered
  on disk in a way that still unpickles (a flipped byte inside the code) would run as code.
  Each entry written here carries the SHA-256 of its content, compared before any of it is
  unpickled (a millisecond per megabyte); a mismatch is an unreadable file (above).
* **A fast first load.** numba's first cache hit in a process refreshes its whole target
  context (importing and registering every implementation numba has: 0.2-0.3 s) and parses
  the entry's LLVM bitcode (0.1 s for an interpreter), and neither is needed to run cached
  machine code: the compiler refreshes the contexts itself before it compiles anything, and
  the bitcode is needed only when other compiled code links this function in. A hit here
  initializes numba's runtime alone (NRT: the allocator that compiled code calls), records the
  symbols the machine code defines (stored with the entry, so that numba's engine can find
  them) and parses the bitcode when a caller first links the function.

Where numba lacks an internal this relies on (checked once per process), entries are written
and loaded numba's way, with the recovery above.
"""
import hashlib
import pickle
import warnings

# The layout of an entry written here; `core.cache.salt` includes it, so that generated
# modules are renamed (and compiled again) when it changes.
FORMAT = "tapegrad-entry-1"


def managed(dispatcher):
    """`dispatcher` with its disk cache's loads and saves managed as the module's docstring
    says. Returns the dispatcher."""
    cache = dispatcher._cache
    load, save = cache.load_overload, cache.save_overload
    fast = _fast_loading_supported(cache)
    if fast:
        impl = cache._impl
        reduce, rebuild = impl.reduce, impl.rebuild
        impl.reduce = lambda cres: _reduce(reduce, cres)
        impl.rebuild = lambda target_context, data: _rebuild(rebuild, target_context, data)

    def load_overload(sig, target_context):
        try:
            if not fast:
                return load(sig, target_context)
            from numba.core.runtime import rtsys
            rtsys.initialize(target_context)
            with cache._guard_against_spurious_io_errors():
                return cache._load_overload(sig, target_context)
            return None      # (an error the guard swallowed: numba's own behaviour)
        except Exception as err:   # noqa: BLE001 (whatever unpickling a damaged file raises)
            _clear(cache, dispatcher, err)
            return None

    def save_overload(sig, data):
        try:
            return save(sig, data)
        except OSError:
            raise
        except Exception as err:   # noqa: BLE001 (an index damaged since it was loaded)
            if _clear(cache, dispatcher, err):
                return save(sig, data)
            return None

    cache.load_overload, cache.save_overload = load_overload, save_overload
    return dispatcher


def _clear(cache, dispatcher, err):
    """Replace the unreadable index of `dispatcher`'s cache by an empty one (its data files are
    overwritten as signatures compile again); where that fails, stop caching the function.
    Returns whether the cache is usable again."""
    name, where = dispatcher.py_func.__qualname__, cache.cache_path
    what = f"{type(err).__name__}: {err}"
    try:
        cache.flush()
    except OSError as flush_err:
        cache.disable()
        warnings.warn(f"tapegrad: numba's cache of {name} in {where} cannot be read ({what}) "
                      f"nor rewritten ({flush_err}); compiling without it. Delete the "
                      f"directory {where} to clear it", RuntimeWarning, stacklevel=2)
        return False
    warnings.warn(f"tapegrad: numba's cache of {name} in {where} could not be read ({what}); "
                  "it was cleared and the function is compiled again", RuntimeWarning,
                  stacklevel=2)
    return True


# ---- entries: numba's reduced compile result, pickled, its defined symbols and a checksum -----

def _checksum(defined, blob):
    return hashlib.sha256("\0".join(defined).encode() + b"\0" + blob).hexdigest()


def _reduce(reduce, cres):
    """(FORMAT, checksum, defined symbols, numba's payload pickled); numba's payload alone where
    its library is not cached as object code. The payload is pickled apart so that the
    checksum covers everything that is loaded before anything of it is unpickled."""
    from numba.core.serialize import dumps
    payload = reduce(cres)
    if payload[0][1] != "object":
        return payload
    module = cres.library._get_module_for_linking()    # what the bitcode was serialized from
    defined = tuple(sorted({value.name for values in (module.functions, module.global_variables)
                            for value in values if not value.is_declaration}))
    blob = dumps(payload)
    return (FORMAT, _checksum(defined, blob), defined, blob)


def _rebuild(rebuild, target_context, data):
    """numba's compile result from an entry: checked and loaded here when `_reduce` wrote it,
    by numba's `rebuild` otherwise."""
    if not (isinstance(data, tuple) and len(data) == 4 and data[0] == FORMAT):
        return rebuild(target_context, data)           # written by numba itself
    _, checksum, defined, blob = data
    if _checksum(defined, blob) != checksum:
        raise ValueError("its content does not match the checksum written with it (the file "
                         "was changed after it was written)")
    payload = pickle.loads(blob)
    name, kind, (object_code, bitcode) = payload[0]
    library = _library_of_object_code(target_context.codegen(), name, object_code, bitcode,
                                      defined)
    return rebuild(target_context, (_Loaded(library),) + tuple(payload[1:]))


class _Loaded:
    """A library made here, passed where numba's rebuild passes its serialized state."""
    __slots__ = ("library",)

    def __init__(self, library):
        self.library = library


def _library_of_object_code(codegen, name, object_code, bitcode, defined):
    """numba's unserialization of a library cached as object code, with the bitcode left
    unparsed (`_bitcode_on_demand`) and the defined symbols given."""
    _accept_loaded(codegen)
    library = codegen.create_library(name)
    library.__class__ = _bitcode_on_demand(type(library))
    library._bitcode_for_linking = bitcode
    library.enable_object_caching()
    library._set_compiled_object(object_code)
    library._finalize_final_module()
    codegen._engine._defined_symbols.update(defined)
    return library


def _accept_loaded(codegen):
    """Let `codegen.unserialize_library` take a `_Loaded` library as it is (numba's
    `CompileResult._rebuild` calls it with the serialized state it was given)."""
    if getattr(codegen, "_tapegrad_accepts_loaded", False):
        return
    unserialize = codegen.unserialize_library

    def unserialize_library(serialized):
        if isinstance(serialized, _Loaded):
            return serialized.library
        return unserialize(serialized)

    codegen.unserialize_library = unserialize_library
    codegen._tapegrad_accepts_loaded = True


_on_demand_classes = {}


def _bitcode_on_demand(base):
    """A subclass of numba's library class `base` that parses the bitcode saved with its object
    code when another library first links it in (numba parses it on every load)."""
    cls = _on_demand_classes.get(base)
    if cls is None:
        import llvmlite.binding as ll

        class cls(base):
            def _get_module_for_linking(self):
                if self._shared_module is None:
                    self._shared_module = ll.parse_bitcode(self._bitcode_for_linking)
                    self._bitcode_for_linking = None
                return self._shared_module

        cls.__name__ = cls.__qualname__ = f"BitcodeOnDemand{base.__name__}"
        _on_demand_classes[base] = cls
    return cls


_supported = []


def _fast_loading_supported(cache):
    """Whether this numba has the internals the fast load uses (checked once)."""
    if not _supported:
        try:
            from numba.core import codegen, compiler
            from numba.core.runtime import rtsys
            library_class = codegen.JITCPUCodegen._library_class
            ok = all(hasattr(library_class, a) for a in (
                "enable_object_caching", "_set_compiled_object", "_finalize_final_module",
                "_get_module_for_linking", "serialize_using_object_code")) and \
                hasattr(codegen.JitEngine, "_load_defined_symbols") and \
                hasattr(compiler.CompileResult, "_rebuild") and hasattr(rtsys, "initialize")
        except (ImportError, AttributeError):
            ok = False
        _supported.append(ok)
    return _supported[0] and all(hasattr(cache, a) for a in (
        "_load_overload", "_impl", "_guard_against_spurious_io_errors"))
