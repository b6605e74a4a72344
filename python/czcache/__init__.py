"""czcache for Python: czc's storages and caches (keys in, local paths out), its
markers, and memoized results.

    import czcache
    cache = czcache.LocalCache()                  # keys in the local cache only
    cache.put("runs/1/metrics.json", "metrics.json")
    path = cache.get("runs/1/metrics.json")       # a pathlib.Path ending in metrics.json

    s3 = czcache.S3Storage("s3://team-bucket/czc")
    team = czcache.SynchronizedRemoteAndLocalCache(s3)
    adata = anndata.read_h5ad(team.get("pbmc/pbmc3k.h5ad", hash="blake3:…"))

    @team.memoize()
    def embed(cells: Path, dim: int): ...          # a colleague's run is a hit
"""

from . import _report
from ._report import set_progress
from .caches import (
    Cache,
    CacheStats,
    CopyToLocalCache,
    LocalCache,
    LocalReadOnlyCache,
    SynchronizedRemoteAndLocalCache,
    caches,
    open_cache,
)
from .errors import BadValue, CorruptObject, CzcacheWarning, Error, LostRace, NotFound, ReadOnly
from .markers import checkout, fetch, open, pull, push, save, status
from .storages import (
    HttpStorage,
    ReadOnlyFilesystemStorage,
    S3Storage,
    SimpleLocalStorage,
    Storage,
    TemporaryLocalStorage,
    WritableStorage,
)
from . import _czcache


def hash_file(path):
    """The BLAKE3 oid (``blake3:<hex>``) of a file's bytes."""
    import os

    return _czcache.hash_file(os.fspath(path))


def hash_bytes(data):
    """The BLAKE3 oid (``blake3:<hex>``) of bytes."""
    return _czcache.hash_bytes(bytes(data))


__all__ = [
    "BadValue", "Cache", "CacheStats", "CopyToLocalCache", "CorruptObject", "CzcacheWarning",
    "Error", "HttpStorage", "LocalCache", "LocalReadOnlyCache", "LostRace", "NotFound",
    "ReadOnly", "ReadOnlyFilesystemStorage", "S3Storage", "SimpleLocalStorage", "Storage",
    "SynchronizedRemoteAndLocalCache", "TemporaryLocalStorage", "WritableStorage", "caches",
    "checkout", "fetch", "hash_bytes", "hash_file", "open", "open_cache", "pull", "push",
    "save", "set_progress", "status",
]
