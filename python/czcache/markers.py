"""Markers: the small ``<path>.czc`` files a repository holds for big data. These
functions do what the ``czc`` commands of the same names do, on the project around
the current folder, and return the same reports ``czc --json`` prints (as dicts)."""

import os
from pathlib import Path

from . import _czcache
from .errors import Error

__all__ = ["save", "open", "checkout", "status", "push", "fetch", "pull"]


def _paths(paths):
    if paths is None:
        return []
    if isinstance(paths, (str, bytes, os.PathLike)):
        paths = [paths]
    return [os.fspath(path) for path in paths]


def _checked(report, *parts):
    """Raises the first error a report lists (with the report attached)."""
    errors = []
    for part in parts:
        section = report.get(part, {}) if part else report
        errors.extend(section.get("errors", []))
    if errors:
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        err = Error(f"{errors[0]}{more}")
        err.report = report
        raise err
    return report


def save(paths):
    """Saves files or folders into the cache and writes their markers; returns
    ``{"saved": [{path, marker, oid, size, files}], "errors": []}``. A path that could
    not be saved raises :class:`Error` after the others were (``err.report``)."""
    return _checked(_czcache.save(_paths(paths)), None)


def open(target, force=False):
    """A readable path of a marker's data (a path, its marker, or an oid), fetched from
    the remotes if needed."""
    return Path(_czcache.open_marker(os.fspath(target), force)["path"])


def checkout(paths=None, force=False):
    """Places the data of every marker under ``paths`` (default: the whole project),
    never overwriting unsaved changes unless ``force``; returns ``{restored,
    unchanged, links, errors}``."""
    return _checked(_czcache.checkout(_paths(paths), force), None)


def status(paths=None, remote=None):
    """The state of every marker under ``paths``: ``{"files": [{path, marker, state,
    …}], "errors": [...]}``, ``state`` one of ``ok``, ``not-pushed``, ``not-cached``,
    ``missing``, ``modified``. ``remote=""`` checks the default remote too, a name
    that remote."""
    return _czcache.status(_paths(paths), remote)


def push(paths=None, remote=None, all=False):
    """Uploads the objects of the markers under ``paths`` to ``remote`` (default
    ``remote.default``); returns ``{remote, transferred, bytes, already, failed,
    errors}``."""
    return _checked(_czcache.push(_paths(paths), remote, all), None)


def fetch(paths=None, remote=None):
    """Downloads the objects of the markers under ``paths`` into the cache."""
    return _checked(_czcache.fetch(_paths(paths), remote), None)


def pull(paths=None, remote=None, force=False):
    """``fetch`` then ``checkout``; returns ``{fetched, checkout, recovered}``."""
    return _checked(_czcache.pull(_paths(paths), remote, force), "fetched", "checkout")
