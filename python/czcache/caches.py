"""Caches: keys in, local read-only paths out. Four kinds over the storages, all with
one interface (:class:`Cache`)."""

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from . import _czcache

__all__ = [
    "Cache",
    "CacheStats",
    "LocalCache",
    "LocalReadOnlyCache",
    "CopyToLocalCache",
    "SynchronizedRemoteAndLocalCache",
    "open_cache",
    "caches",
]


_PATHS = {}


@dataclass(frozen=True)
class CacheStats:
    """What :meth:`Cache.stats` reports."""

    #: Gets answered without a download (this cache object, this process).
    hits: int
    #: Gets that downloaded, or found nothing.
    misses: int
    #: Bytes in the local cache the copies live in (None if the cache keeps no copies).
    size: Optional[int]
    #: The local cache's size limit in bytes (None if the cache keeps no copies).
    limit: Optional[int]


class Cache:
    """What every cache offers. A path ``get`` returns keeps the key's file name (tools
    that go by the extension work), is read-only, and stays valid while this process
    runs: no other process evicts while it holds the cache, nor does it evict what it
    handed out."""

    def __init__(self, inner):
        self._inner = inner

    def get(self, key, hash=None):
        """A local read-only path holding the key's current bytes, fetched if needed.
        With ``hash`` (a ``blake3:<hex>`` you know the bytes by, as pooch's
        ``known_hash``), a copy that hashes otherwise is skipped with a warning and the
        next storage tried; :class:`CorruptObject` if none has it. :class:`NotFound`
        when no storage has the key."""
        text = self._inner.fetch(key, hash)[0]
        # The same answer again (a repeated hit) reuses its Path: building one costs
        # more than the whole Rust side of a hit.
        path = _PATHS.get(text)
        if path is None:
            if len(_PATHS) > 10_000:
                _PATHS.clear()
            path = _PATHS[text] = Path(text)
        return path

    def open(self, key, mode="r", encoding=None, hash=None):
        """The key's bytes opened for reading (``"r"`` or ``"rb"``), usable in ``with``."""
        if mode not in ("r", "rb"):
            raise ValueError(f"mode {mode!r}: a cache is read through 'r' or 'rb'")
        return open(self.get(key, hash=hash), mode, encoding=encoding)

    def get_hash(self, key):
        """The key's BLAKE3 oid (``blake3:<hex>``), or None if it does not exist."""
        return self._inner.hash(key)

    def get_last_modified(self, key):
        """When the key was last written, as an aware ``datetime``, or None."""
        return self._inner.last_modified(key)

    def put(self, key, file, if_absent=False, if_match=None, if_newer=False):
        """Stores the file ``file`` under ``key``. ``if_absent``: only if the key does not
        exist; ``if_match``: only if it still holds that hash; ``if_newer``: only if the
        file is newer than the stored copy. A condition that does not hold raises
        :class:`LostRace` and writes nothing, except ``if_newer``, which returns False."""
        return self._inner.put(key, os.fspath(file), if_absent, if_match, if_newer)

    def delete(self, key, if_match=None):
        """Deletes the key (only if it holds ``if_match`` when given; else
        :class:`LostRace`); False if it was not there."""
        return self._inner.delete(key, if_match)

    def keys(self, prefix=""):
        """The keys that start with ``prefix``, sorted."""
        return self._inner.list(prefix)

    def stats(self):
        """Hits and misses of this cache object's gets, and the local cache's size and
        limit, as a :class:`CacheStats`."""
        return CacheStats(*self._inner.stats())

    def memoize(self, name=None, typed=False, expire=None, tag=None, ignore=(), serializer=None):
        """A decorator caching a function's results in this cache; see
        :func:`czcache.memoize.memoize`."""
        from .memoize import memoize

        return memoize(self, name=name, typed=typed, expire=expire, tag=tag, ignore=ignore,
                       serializer=serializer)

    def evict(self, tag):
        """Deletes every memoized result stored with ``tag``; returns how many."""
        from .memoize import evict

        return evict(self, tag)

    def expire(self):
        """Deletes every memoized result past its ``expire`` time; returns how many."""
        from .memoize import expire

        return expire(self)

    def __repr__(self):
        return f"<{type(self).__name__}: {self._inner.describe()}>"


class LocalCache(Cache):
    """Keys kept in the local cache only (size-limited, least recently used evicted
    first): czc's cache folder unless ``dir`` is given; ``size_limit`` in bytes."""

    def __init__(self, dir=None, size_limit=None):
        self.dir = None if dir is None else os.fspath(dir)
        self.size_limit = size_limit
        super().__init__(_czcache.local_cache(self.dir, size_limit))


def _local_args(local):
    if local is None:
        return None, None
    if not isinstance(local, LocalCache):
        raise TypeError(f"local must be a LocalCache or None, not {type(local).__name__}")
    return local.dir, local.size_limit


class LocalReadOnlyCache(Cache):
    """A local read-only storage (a cluster share) served in place: ``get`` is the
    share's own file, no copy; nothing can be written through it."""

    def __init__(self, storage):
        super().__init__(_czcache.read_only_cache(storage._inner))


class CopyToLocalCache(Cache):
    """Read storages tried in order; what they have is copied into the local cache
    (hashed on the way in) and revalidated on later gets, so a changed key is fetched
    again and an unchanged one is a local hit. ``policy="first"`` serves the first
    storage that has the key, ``"newest"`` the one whose copy is newest. Read-only."""

    def __init__(self, read_storages, local=None, policy="first"):
        inners = [storage._inner for storage in read_storages]
        super().__init__(_czcache.copy_to_local_cache(inners, *_local_args(local), policy))


class SynchronizedRemoteAndLocalCache(Cache):
    """One remote storage written through and read through the local cache: ``put``
    uploads (under its condition) and keeps the local copy, so the next ``get`` is a
    local hit; ``get`` downloads again only when the remote copy changed."""

    def __init__(self, remote, local=None):
        super().__init__(_czcache.synchronized_cache(remote._inner, *_local_args(local)))


def open_cache(name=None):
    """The named cache ``name`` of the configuration (``[caches.<name>]`` in
    ``.czcache.toml``, or the built-in ``local`` and ``public``); None: ``cache.default``,
    else ``local``."""
    return Cache(_czcache.open_cache(name))


def caches():
    """Every cache the configuration names, as dicts (name, kind, read, write, default,
    builtin)."""
    return _czcache.caches()
