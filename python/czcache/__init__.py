"""czcache for Python: the caches of czc (keys in, local paths out).

    import czcache
    cache = czcache.LocalCache()             # keys in the local cache only
    cache.put("runs/1/metrics.json", "metrics.json")
    path = cache.get("runs/1/metrics.json")  # a pathlib.Path ending in metrics.json
    team = czcache.open_cache("team")        # a named cache from the configuration
"""

from pathlib import Path

from .errors import Error, LostRace, NotFound, ReadOnly
from . import _czcache

__all__ = ["Error", "LostRace", "NotFound", "ReadOnly", "LocalCache", "open_cache", "caches"]


class _Cache:
    """What every cache offers (the `Cache` trait of the Rust library)."""

    def __init__(self, inner):
        self._inner = inner

    def get(self, key):
        """A read-only local path of the key's current bytes; keeps the key's file name."""
        return Path(self._inner.get(key))

    def open(self, key, mode="r", encoding=None):
        """The key's bytes opened for reading (`"r"` or `"rb"`), usable in `with`."""
        if mode not in ("r", "rb"):
            raise ValueError(f"mode {mode!r}: a cache is read through 'r' or 'rb'")
        return open(self.get(key), mode, encoding=encoding)

    def get_hash(self, key):
        """The key's BLAKE3 oid (`blake3:<hex>`), or None if it does not exist."""
        return self._inner.hash(key)

    def get_last_modified(self, key):
        """When the key was written, as an aware datetime, or None."""
        return self._inner.last_modified(key)

    def put(self, key, file, if_absent=False, if_match=None, if_newer=False):
        """Stores `file` under `key`; False when `if_newer` found the stored copy as new.
        A condition that does not hold raises LostRace and writes nothing."""
        return self._inner.put(key, str(file), if_absent, if_match, if_newer)

    def delete(self, key, if_match=None):
        """Deletes the key (only if it holds `if_match` when given); False if not there."""
        return self._inner.delete(key, if_match)

    def __repr__(self):
        return f"<czcache {self._inner.describe()}>"


class LocalCache(_Cache):
    """Keys kept in the local cache only (size-limited, LRU): czc's cache folder unless
    `dir` is given."""

    def __init__(self, dir=None, size_limit=None):
        super().__init__(_czcache.local_cache(None if dir is None else str(dir), size_limit))


def open_cache(name=None):
    """The named cache `name` of the configuration (`[caches.<name>]`, the built-in
    `local` and `public`); None: `cache.default`, else `local`."""
    return _Cache(_czcache.open_cache(name))


def caches():
    """Every cache the configuration names, as dicts (name, kind, read, write, default)."""
    return _czcache.caches()
