"""The exceptions czcache raises. Every failure is an :class:`Error` whose message is
the one line the ``czc`` command prints, naming the file, key or value at fault."""


class Error(Exception):
    """Any failure of czcache."""

    #: For marker operations (``save``, ``push``, …) that failed for some paths: the
    #: whole report, as the function would have returned it.
    report = None


class NotFound(Error, KeyError):
    """The key (or file, or marker) does not exist."""

    def __str__(self):
        # KeyError would quote the message.
        return Exception.__str__(self)


class LostRace(Error):
    """A conditional write or delete whose condition did not hold; nothing was written."""


class ReadOnly(Error):
    """A write through a cache or storage that may only be read."""


class CorruptObject(Error):
    """Bytes that are not what they must be: a copy that does not hash to the expected
    hash, a remote whose bytes disagree with what it reports, a corrupt cached object.
    Nothing damaged was kept."""


class BadValue(Error, ValueError):
    """A key, url or other value czcache refuses (a ``..`` in a key, an unknown scheme)."""


class CzcacheWarning(UserWarning):
    """What czcache warns about: a storage skipped for a bad copy, a failed remote tried
    past, a cache over its limit."""
