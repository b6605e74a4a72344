"""Memoized results in a czcache cache, as diskcache's ``memoize`` and joblib's
``Memory`` do, with three differences that matter for shared caches:

- the key is the function's qualified name, a hash of its source (editing the
  function is a miss) and the *content* of its arguments: numpy arrays and pandas
  objects by their data, ``os.PathLike`` arguments by the BLAKE3 of the file (a changed
  input file is a miss, a moved one a hit);
- results are objects in the cache, so in a :class:`SynchronizedRemoteAndLocalCache`
  they are written through and a colleague's run is a hit;
- no pickle unless asked: JSON-able values, bytes, numpy arrays (``.npy``,
  ``allow_pickle=False``) and pandas frames (parquet, with pyarrow). ``serializer=
  "pickle"`` stores anything, and loads pickles **only for functions that opted in**:
  unpickling runs code, so a pickle in a shared remote is code anyone with write
  access can make you run (diskcache's CVE-2025-69872).

Each result is one key, ``memo/<tag>/<function>/<hash>``: a JSON header line (how it
is serialized, when it expires), then the value.
"""

import functools
import inspect
import io
import json
import math
import os
import re
import struct
import tempfile
import textwrap
import time

from . import _czcache
from .errors import Error, LostRace, NotFound

__all__ = ["memoize", "evict", "expire", "canonical"]

MAGIC = b"czc-memo/1\n"
_ATOMS = frozenset([int, str, float, bool, bytes, type(None)])
PREFIX = "memo/"
_UNTAGGED = "_"


def _safe_component(text):
    """A key component for a name or tag: itself when plain, else a readable prefix and
    a hash (keys are paths: no '/', no '..')."""
    if re.fullmatch(r"[A-Za-z0-9_.<>-]{1,100}", text) and text not in (".", ".."):
        return text
    short = re.sub(r"[^A-Za-z0-9_.-]", "_", text)[:40].strip(".") or "x"
    return f"{short}-{_czcache.hash_bytes(text.encode())[7:23]}"


def _tag_component(tag):
    return _UNTAGGED if tag is None else "t-" + _safe_component(str(tag))


# --- canonical form of arguments -------------------------------------------------------


def canonical(value, typed=False):
    """The bytes memoize keys a value by: equal for equal content, and (with ``typed``)
    different for different types. Raises TypeError for what it cannot key by content."""
    out = bytearray()
    _canon(value, typed, out, "argument")
    return bytes(out)


def _put(out, tag, payload):
    out += tag
    out += struct.pack("<Q", len(payload))
    out += payload


def _canon(value, typed, out, where):
    kind = type(value)
    # The common scalars first, by exact type (isinstance chains cost more than a key's hash).
    if kind is int:
        _put(out, b"I", str(value).encode())
        return
    if kind is str:
        _put(out, b"S", value.encode("utf-8", "surrogatepass"))
        return
    if value is None:
        out += b"N"
    elif value is True or value is False:
        _put(out, b"B" if typed else b"I", b"1" if value else b"0")
    elif isinstance(value, int) and type(value).__module__ == "builtins":
        _put(out, b"I", str(int(value)).encode())
    elif isinstance(value, float) and type(value).__module__ == "builtins":
        if not typed and math.isfinite(value) and value == int(value):
            _put(out, b"I", str(int(value)).encode())  # f(3) and f(3.0) are one call
        else:
            _put(out, b"F", struct.pack("<d", value))
    elif isinstance(value, complex):
        _put(out, b"C", struct.pack("<dd", value.real, value.imag))
    elif isinstance(value, str):
        _put(out, b"S", value.encode("utf-8", "surrogatepass"))
    elif isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
        if len(data) > 4096:
            data = _czcache.hash_bytes(data).encode()
            _put(out, b"H", data)
        else:
            _put(out, b"Y" if not typed or isinstance(value, bytes) else b"y", data)
    elif isinstance(value, os.PathLike):
        _put(out, b"P", _path_content(os.fspath(value)).encode())
    elif isinstance(value, (tuple, list)):
        kind = b"L" if not typed else (b"T" if isinstance(value, tuple) else b"L")
        out += kind + struct.pack("<Q", len(value))
        for i, item in enumerate(value):
            _canon(item, typed, out, f"{where}[{i}]")
    elif isinstance(value, dict):
        items = sorted(((canonical(k, typed), v, k) for k, v in value.items()), key=lambda t: t[0])
        out += b"D" + struct.pack("<Q", len(value))
        for key_bytes, item, key in items:
            _put(out, b"K", key_bytes)
            _canon(item, typed, out, f"{where}[{key!r}]")
    elif isinstance(value, (set, frozenset)):
        members = sorted(canonical(item, typed) for item in value)
        out += b"E" + struct.pack("<Q", len(members))
        for member in members:
            _put(out, b"M", member)
    elif hasattr(value, "__czcache_key__"):
        _put(out, b"U", canonical(value.__czcache_key__(), typed))
    else:
        _canon_libraries(value, typed, out, where)


def _canon_libraries(value, typed, out, where):
    module = type(value).__module__.split(".")[0]
    if module == "numpy":
        import numpy

        array = numpy.asarray(value)
        if array.dtype.hasobject:
            raise TypeError(
                f"memoize: {where} is a numpy array of Python objects, which has no bytes "
                "to key by; convert it, or add the argument to ignore="
            )
        array = numpy.ascontiguousarray(array)
        header = f"{array.dtype.str}|{array.shape}|{type(value).__name__ if typed else ''}"
        _put(out, b"A", header.encode())
        _put(out, b"H", _hash_array(array).encode())
        return
    if module == "pandas":
        import pandas

        if isinstance(value, (pandas.DataFrame, pandas.Series, pandas.Index)):
            hashed = pandas.util.hash_pandas_object(value, index=not isinstance(value, pandas.Index))
            if isinstance(value, pandas.DataFrame):
                shape = [list(map(str, value.columns)), list(map(str, value.dtypes))]
            else:
                shape = [str(getattr(value, "name", None)), str(value.dtype)]
            _put(out, b"X", json.dumps([type(value).__name__, shape]).encode())
            _put(out, b"H", _czcache.hash_bytes(hashed.to_numpy().tobytes()).encode())
            return
    raise TypeError(
        f"memoize: {where} is a {type(value).__module__}.{type(value).__qualname__}; czcache "
        "keys arguments by content (numbers, str, bytes, paths, lists, tuples, dicts, sets, "
        "numpy, pandas) and cannot key this one. Give it a __czcache_key__() method, or add "
        "the argument to ignore="
    )


def _hash_array(array):
    """BLAKE3 of a contiguous array's bytes, fed in chunks (never a second full copy)."""
    flat = array.reshape(-1).view("u1") if array.size else array.tobytes()
    hasher = _czcache.Hasher()
    chunk = 16 << 20
    for start in range(0, len(flat), chunk):
        hasher.update(flat[start:start + chunk].tobytes())
    return hasher.oid()


_path_hashes = {}


def _path_content(path):
    """A file's BLAKE3 (a folder's: of its files' relative paths and hashes), so a
    changed file is another key. Stat-cached in this process: an unchanged file (same
    size, mtime, inode) is not read again."""
    stat = os.stat(path)
    if os.path.isdir(path):
        parts = []
        for folder, dirs, files in os.walk(path):
            dirs.sort()
            for name in sorted(files):
                full = os.path.join(folder, name)
                parts.append(f"{os.path.relpath(full, path)}\0{_path_content(full)}")
        return _czcache.hash_bytes("\n".join(parts).encode())
    stamp = (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
    known = _path_hashes.get(path)
    if known is not None and known[0] == stamp:
        return known[1]
    oid = _czcache.hash_file(path)
    # A file written in the same clock tick as this hash could change unseen: keep the
    # answer only when its mtime is clearly in the past ("racy git").
    if time.time_ns() - stat.st_mtime_ns > 1_000_000_000:
        _path_hashes[path] = (stamp, oid)
    return oid


def _source_hash(func):
    """A hash of the function's source (its bytecode and constants when there is none),
    so that editing the function is a miss."""
    try:
        text = textwrap.dedent(inspect.getsource(func))
        # Decorator lines are not the function's logic.
        return _czcache.hash_bytes(text.encode())
    except (OSError, TypeError):
        code = getattr(func, "__code__", None)
        if code is None:
            return "nosource"
        return _czcache.hash_bytes(_code_bytes(code))


def _code_bytes(code):
    """A code object's bytecode, names and constants, nested code included (its repr
    holds a memory address, which differs between processes)."""
    parts = [code.co_code, repr(code.co_names).encode()]
    for const in code.co_consts:
        parts.append(_code_bytes(const) if hasattr(const, "co_code") else repr(const).encode())
    return b"\0".join(parts)


# --- serializers -------------------------------------------------------------------------


def _to_json(value):
    """JSON that keeps tuples tuples and refuses what it cannot round-trip."""

    def convert(item):
        if item is None or isinstance(item, (bool, str)):
            return item
        if isinstance(item, int) and type(item).__module__ == "builtins":
            return item
        if isinstance(item, float) and type(item).__module__ == "builtins":
            return item
        if isinstance(item, tuple):
            return {"$tuple": [convert(x) for x in item]}
        if isinstance(item, list):
            return [convert(x) for x in item]
        if isinstance(item, dict) and all(isinstance(k, str) for k in item):
            converted = {k: convert(v) for k, v in item.items()}
            return {"$dict": converted} if len(item) == 1 and next(iter(item)).startswith("$") else converted
        raise _NotJson()

    return json.dumps(convert(value), allow_nan=True).encode()


class _NotJson(Exception):
    pass


def _from_json(data):
    def hook(obj):
        if len(obj) == 1:
            if "$tuple" in obj:
                return tuple(obj["$tuple"])
            if "$dict" in obj:
                return obj["$dict"]
        return obj

    if ('"$' if isinstance(data, str) else b'"$') not in data:
        return json.loads(data)
    return json.loads(data, object_hook=hook)


def _serialize(value, serializer):
    """(format name, bytes) for a result."""
    if serializer == "pickle":
        import pickle

        return "pickle", pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    if serializer not in (None, "auto", "json"):
        raise ValueError(f"serializer {serializer!r}: use None (automatic), 'json' or 'pickle'")
    if isinstance(value, (bytes, bytearray)):
        return "bytes", bytes(value)
    module = type(value).__module__.split(".")[0]
    if module == "numpy":
        import numpy

        if isinstance(value, numpy.ndarray) and not value.dtype.hasobject:
            buffer = io.BytesIO()
            numpy.save(buffer, value, allow_pickle=False)
            return "npy", buffer.getvalue()
    if module == "pandas":
        import pandas

        if isinstance(value, pandas.DataFrame):
            try:
                import pyarrow  # noqa: F401
            except ImportError:
                raise TypeError(
                    "memoize: a pandas DataFrame result is stored as parquet, which needs "
                    "pyarrow (pip install pyarrow), or pass serializer='pickle'"
                ) from None
            buffer = io.BytesIO()
            value.to_parquet(buffer)
            return "parquet", buffer.getvalue()
    try:
        return "json", _to_json(value)
    except _NotJson:
        raise TypeError(
            f"memoize: the result is a {type(value).__module__}.{type(value).__qualname__}, "
            "which czcache stores only with serializer='pickle' (JSON-able values, bytes, "
            "numpy arrays and pandas frames need none); pickle is unsafe with shared "
            "remotes, see czcache.memoize"
        ) from None


def _deserialize(form, data, serializer, key):
    if form == "json":
        return _from_json(data)
    if form == "bytes":
        return data
    if form == "npy":
        import numpy

        return numpy.load(io.BytesIO(data), allow_pickle=False)
    if form == "parquet":
        import pandas

        return pandas.read_parquet(io.BytesIO(data))
    if form == "pickle":
        if serializer != "pickle":
            raise Error(
                f"{key}: the stored result is a pickle, and this function did not opt in "
                "with serializer='pickle'; refused (unpickling runs code)"
            )
        import pickle

        return pickle.loads(data)
    raise Error(f"{key}: unknown result format {form!r}")


# --- reading and writing results ---------------------------------------------------------


# Small results this process has read, by the path they were read from. A cache path
# names the object's hash (named/<oid>/<name>), so the same path is the same bytes: a
# repeated hit skips the file, not the check that the key still holds them.
_SMALL_RESULT = 1 << 20
_recent = {}
_recent_bytes = [0]


def _read(cache, key, serializer):
    """(found, value, oid): a stored result that has not expired."""
    try:
        path = cache._inner.path(key)  # the path as text: cheaper to look up
    except NotFound:
        return False, None, None
    remembered = _recent.get(path)
    if remembered is None:
        with open(path, "rb") as f:
            if f.read(len(MAGIC)) != MAGIC:
                raise Error(f"{key}: not a memoized result (no {MAGIC.strip().decode()} header)")
            header = json.loads(f.readline())
            offset = f.tell()
            data = None if header["format"] == "npy" else f.read()
        if header["format"] == "json" and data is not None:
            data = data.decode("utf-8")  # json.loads of text skips sniffing the encoding
        remembered = (header, offset, data)
        if data is not None and len(data) <= _SMALL_RESULT:
            if _recent_bytes[0] > 64 * _SMALL_RESULT:
                _recent.clear()
                _recent_bytes[0] = 0
            _recent[path] = remembered
            _recent_bytes[0] += len(data)
    header, offset, data = remembered
    expires = header.get("expires")
    if expires is not None and expires <= time.time():
        return False, None, cache.get_hash(key)
    if header["format"] == "npy":
        return True, _map_array(path, offset), None
    return True, _deserialize(header["format"], data, serializer, key), None


def _map_array(path, offset):
    """The stored array memory-mapped read-only from the cache file: no copy, no read
    until used (the path stays valid while this process runs)."""
    import numpy
    from numpy.lib import format as npy

    with open(path, "rb") as f:
        f.seek(offset)
        version = npy.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = npy.read_array_header_1_0(f)
        else:
            shape, fortran, dtype = npy.read_array_header_2_0(f)
        data_offset = f.tell()
    if dtype.hasobject:
        raise Error(f"{path}: a stored array of Python objects; refused (it would unpickle)")
    if not shape or 0 in shape:
        with open(path, "rb") as f:
            f.seek(offset)
            return numpy.load(f, allow_pickle=False)
    return numpy.memmap(path, dtype=dtype, mode="r", shape=shape,
                        order="F" if fortran else "C", offset=data_offset)


def _write(cache, key, value, serializer, expire, tag, function, replacing):
    form, data = _serialize(value, serializer)
    header = {
        "format": form,
        "function": function,
        "tag": tag,
        "created": time.time(),
        "expires": None if expire is None else time.time() + expire,
    }
    with tempfile.NamedTemporaryFile(prefix="czc-memo-", delete=False) as f:
        f.write(MAGIC)
        f.write(json.dumps(header).encode() + b"\n")
        f.write(data)
        temp = f.name
    try:
        if replacing is None:
            cache.put(key, temp, if_absent=True)
        else:
            cache.put(key, temp, if_match=replacing)
    except LostRace:
        pass  # another process stored the same call's result first: one copy is kept
    finally:
        os.unlink(temp)


def memoize(cache, name=None, typed=False, expire=None, tag=None, ignore=(), serializer=None):
    """Decorates a function so its results are kept in ``cache`` (any writable czcache
    cache) and a repeated call with equal arguments returns the stored result without
    calling it.

    - ``name``: the key's function name (default ``module.qualname``);
    - ``typed``: ``f(3)`` and ``f(3.0)`` (and a list and a tuple) are different calls;
    - ``expire``: seconds a result stays valid;
    - ``tag``: results are stored under it, and ``cache.evict(tag)`` deletes them;
    - ``ignore``: argument names (or positions) left out of the key;
    - ``serializer``: None (JSON, bytes, numpy, parquet) or ``"pickle"`` (see the
      module's note on why that is an explicit choice).

    The wrapper has ``__cache_key__(*args, **kwargs)``, the key a call is stored under.
    Two processes computing one call at once both return their result; one copy is kept.
    """
    if callable(name) and not isinstance(name, str):
        raise TypeError("memoize is called: write @cache.memoize(), not @cache.memoize")
    if serializer not in (None, "auto", "json", "pickle"):
        raise ValueError(f"serializer {serializer!r}: use None (automatic), 'json' or 'pickle'")
    if expire is not None and not (isinstance(expire, (int, float)) and expire > 0):
        raise ValueError(f"expire={expire!r}: a number of seconds above 0, or None")

    def decorator(func):
        function = name or f"{func.__module__}.{func.__qualname__}"
        base = f"{PREFIX}{_tag_component(tag)}/{_safe_component(function)}/"
        source = _source_hash(func)
        signature = inspect.signature(func)
        parameters = list(signature.parameters.values())
        ignored = set(ignore)
        skipped = {
            p.name for i, p in enumerate(parameters) if i in ignored or p.name in ignored
        }
        prefix = canonical([function, source, typed])
        # Plain parameters only (no *args, **kwargs, keyword-only): arguments bound by
        # hand, which is several times cheaper than Signature.bind.
        plain = all(p.kind is p.POSITIONAL_OR_KEYWORD for p in parameters)
        names = [p.name for p in parameters]
        defaults = {p.name: p.default for p in parameters if p.default is not p.empty}
        kept = [name for name in names if name not in skipped]

        def bind(args, kwargs):
            if plain and len(args) <= len(names):
                values = dict(zip(names, args))
                for name, value in kwargs.items():
                    if name in values or name not in defaults and name not in names:
                        break
                    values[name] = value
                else:
                    for name in names:
                        if name not in values:
                            if name not in defaults:
                                break
                            values[name] = defaults[name]
                    else:
                        return [values[name] for name in kept]
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            return [(k, v) for k, v in bound.arguments.items() if k not in skipped]

        def cache_key(*args, **kwargs):
            out = bytearray(prefix)
            _canon(bind(args, kwargs), typed, out, "argument")
            return base + _czcache.hash_bytes(bytes(out))[len("blake3:"):]

        # Calls with plain immutable arguments map straight to their key. Python's
        # equality agrees with the untyped canonical form (3 == 3.0 == True - 2), and
        # typed calls add the types; paths and containers are always keyed afresh.
        known_keys = {}

        def key_of(args, kwargs):
            if all(type(a) in _ATOMS for a in args) and all(
                type(v) in _ATOMS for v in kwargs.values()
            ):
                probe = (args, tuple(kwargs.items())) if kwargs else args
                if typed:
                    probe = (probe, tuple(map(type, args)), tuple(map(type, kwargs.values())))
                key = known_keys.get(probe)
                if key is None:
                    if len(known_keys) > 10_000:
                        known_keys.clear()
                    key = known_keys[probe] = cache_key(*args, **kwargs)
                return key
            return cache_key(*args, **kwargs)

        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            key = key_of(args, kwargs)
            found, value, stale = _read(cache, key, serializer)
            if found:
                return value
            value = func(*args, **kwargs)
            _write(cache, key, value, serializer, expire, tag, function, stale)
            return value

        wrapper.__cache_key__ = cache_key
        return wrapper

    return decorator


def _results(cache, prefix=PREFIX):
    return [key for key in cache.keys(prefix) if key.count("/") >= 3]


def evict(cache, tag):
    """Deletes every memoized result stored with ``tag``; returns how many."""
    removed = 0
    for key in _results(cache, f"{PREFIX}{_tag_component(tag)}/"):
        if cache.delete(key):
            removed += 1
    return removed


def expire(cache):
    """Deletes every memoized result past its expiry time; returns how many."""
    removed = 0
    now = time.time()
    for key in _results(cache):
        try:
            with open(cache.get(key), "rb") as f:
                if f.read(len(MAGIC)) != MAGIC:
                    continue
                expires = json.loads(f.readline()).get("expires")
        except NotFound:
            continue
        if expires is not None and expires <= now:
            try:
                if cache.delete(key, if_match=cache.get_hash(key)):
                    removed += 1
            except LostRace:
                pass  # rewritten meanwhile: the new result is not expired
    return removed
