"""Storages: where keys' bytes live. A folder on this machine, an S3 prefix, a ``czc
serve`` server. Every byte read from one is checked against the size and hash it
reports; a read-only storage has no write methods at all."""

import os
import tempfile
from pathlib import Path

from . import _czcache
from .errors import NotFound

__all__ = [
    "Storage",
    "WritableStorage",
    "SimpleLocalStorage",
    "ReadOnlyFilesystemStorage",
    "TemporaryLocalStorage",
    "S3Storage",
    "HttpStorage",
]


class Storage:
    """What every storage offers: reading keys."""

    def __init__(self, inner):
        self._inner = inner

    @property
    def name(self):
        """What the storage is called in messages (its folder or url)."""
        return self._inner.name()

    def copy(self, key, destination):
        """Copies the key's bytes to ``destination`` (replaced atomically, only once the
        bytes agree with the size and hash the storage reports); returns their oid.
        Raises :class:`NotFound` when the key does not exist."""
        return self._inner.copy(key, os.fspath(destination))

    def get_hash(self, key):
        """The BLAKE3 oid (``blake3:<hex>``) of the key's bytes, or None if absent."""
        return self._inner.get_hash(key)

    def get_last_modified(self, key):
        """When the key was last written (an aware ``datetime``), or None if absent."""
        return self._inner.get_last_modified(key)

    def exists(self, key):
        """Whether the key exists."""
        return self._inner.exists(key)

    def list(self, prefix=""):
        """Every key starting with ``prefix``, sorted."""
        return self._inner.list(prefix)

    def __repr__(self):
        return f"<{type(self).__name__} {self._inner.describe()}>"


class WritableStorage(Storage):
    """A storage that can be written. Conditional forms raise :class:`LostRace` and write
    nothing when their condition does not hold at the moment of writing."""

    def copy_from(self, key, source):
        """Uploads the file ``source`` as ``key``, replacing what is there."""
        self._inner.copy_from(key, os.fspath(source))

    def copy_from_if_absent(self, key, source):
        """Uploads only if the key does not exist yet (else :class:`LostRace`)."""
        self._inner.copy_from_if_absent(key, os.fspath(source))

    def copy_from_if_local_is_newer(self, key, source):
        """Uploads only if ``source`` is newer than the stored copy (or there is none);
        returns whether it wrote."""
        return self._inner.copy_from_if_local_is_newer(key, os.fspath(source))

    def copy_from_if_overwriting_hash(self, key, hash, source):
        """Uploads only if the key still holds the bytes hashing to ``hash`` (the copy
        you last saw): compare-and-swap."""
        self._inner.copy_from_if_overwriting_hash(key, hash, os.fspath(source))

    def delete(self, key):
        """Deletes the key; False if it was not there."""
        return self._inner.delete(key)

    def delete_if_hash_matches(self, key, hash):
        """Deletes the key only if it still holds the bytes hashing to ``hash``."""
        self._inner.delete_if_hash_matches(key, hash)


class _LocalFiles:
    """Storages whose keys are files on this machine."""

    @property
    def root(self):
        """The storage's folder."""
        return Path(self.name)

    def path(self, key):
        """The file ``key`` lives in (whether or not it exists)."""
        return Path(self._inner.path(key))

    def _open_for_reading(self, key, mode, encoding):
        path = self.path(key)
        if not path.is_file() or path.is_symlink():
            raise NotFound(f"{self.name}:{key}: no such file")
        return open(path, mode, encoding=encoding)


class SimpleLocalStorage(_LocalFiles, WritableStorage):
    """A folder on this machine, keys as files under it (created when first written)."""

    def __init__(self, root):
        super().__init__(_czcache.folder_storage(os.fspath(root), False))

    def open(self, key, mode="rb", encoding=None):
        """Opens the key's file. Reading (``"r"``, ``"rb"``) opens it in place; writing
        (``"w"``, ``"wb"``) writes a temp file in the same folder that replaces the key
        atomically when closed without error, so readers never see half a file."""
        if mode in ("r", "rb"):
            return self._open_for_reading(key, mode, encoding)
        if mode in ("w", "wb"):
            return _AtomicWriter(self.path(key), mode, encoding)
        raise ValueError(f"mode {mode!r}: use 'r', 'rb', 'w' or 'wb'")


class ReadOnlyFilesystemStorage(_LocalFiles, Storage):
    """A folder this process may only read (a cluster share): no write methods."""

    def __init__(self, root):
        super().__init__(_czcache.folder_storage(os.fspath(root), True))

    def open(self, key, mode="rb", encoding=None):
        """Opens the key's file for reading (``"r"`` or ``"rb"``)."""
        if mode not in ("r", "rb"):
            raise ValueError(f"mode {mode!r}: a read-only storage opens 'r' or 'rb'")
        return self._open_for_reading(key, mode, encoding)


class TemporaryLocalStorage(SimpleLocalStorage):
    """A fresh folder storage, removed with everything in it when closed (or used as a
    context manager, or collected)."""

    def __init__(self):
        Storage.__init__(self, _czcache.temporary_storage())

    def close(self):
        """Removes the folder now."""
        self._inner.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class S3Storage(WritableStorage):
    """A prefix of an S3 bucket (``s3://bucket/prefix``), on AWS or any S3-compatible
    server (``endpoint="http://127.0.0.1:9000"``). Credentials come from the usual
    ``AWS_*`` variables; ``anonymous=True`` signs nothing (public buckets). ``timeout``:
    seconds to wait for an answer or between reads of a body (default 60)."""

    def __init__(self, url, endpoint=None, region=None, anonymous=False, timeout=None):
        super().__init__(_czcache.s3_storage(url, endpoint, region, anonymous, timeout))


class HttpStorage(WritableStorage):
    """A ``czc serve`` server (``http://host:port``); ``token`` is its bearer token."""

    def __init__(self, url, token=None, timeout=None):
        super().__init__(_czcache.http_storage(url, token, timeout))


class _AtomicWriter:
    """A file written beside its destination and renamed over it on a clean close."""

    def __init__(self, destination, mode, encoding):
        destination = Path(destination)
        destination.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(prefix=".czc-tmp-", dir=destination.parent)
        self._file = os.fdopen(fd, mode, encoding=encoding)
        self._temp = temp
        self._destination = destination

    def write(self, data):
        return self._file.write(data)

    def writelines(self, lines):
        self._file.writelines(lines)

    def close(self, commit=True):
        if self._file.closed:
            return
        try:
            if commit:
                self._file.flush()
                os.fsync(self._file.fileno())
            self._file.close()
            if commit:
                os.replace(self._temp, self._destination)
        finally:
            if os.path.exists(self._temp):
                os.unlink(self._temp)

    def __enter__(self):
        return self

    def __exit__(self, kind, value, traceback):
        self.close(commit=kind is None)

    def __del__(self):
        # Never committed by accident: a writer dropped without close leaves nothing.
        if not self._file.closed:
            self.close(commit=False)
