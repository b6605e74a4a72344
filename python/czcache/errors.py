"""The exceptions czcache raises: every failure is an Error, with one line naming the
file, key or value at fault."""


class Error(Exception):
    """Any failure of czcache."""


class NotFound(Error, KeyError):
    """The key (or file) does not exist."""

    def __str__(self):
        # KeyError would quote the message.
        return Exception.__str__(self)


class LostRace(Error):
    """A conditional write or delete whose condition did not hold; nothing was written."""


class ReadOnly(Error):
    """A write through a cache that may only be read."""
