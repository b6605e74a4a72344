"""Where the Rust library's warnings and progress go: Python's ``warnings`` and
``logging``, and the progress callback set with :func:`czcache.set_progress`."""

import logging
import threading
import warnings

from .errors import CzcacheWarning

log = logging.getLogger("czcache")
# A library logs, the application decides what is shown: no last-resort stderr lines.
log.addHandler(logging.NullHandler())

_progress = None
_lock = threading.Lock()
_bars = {}


def warn(message):
    """A warning of the library (called from Rust, on any thread)."""
    log.warning("%s", message)
    warnings.warn(message, CzcacheWarning, stacklevel=2)


def notice(message):
    log.info("%s", message)


def progress(title, files_done, files_total, bytes_done, bytes_total, finished):
    """One progress update of a task (called from Rust, on any thread)."""
    callback = _progress
    if callback is None:
        return
    try:
        callback(title, files_done, files_total, bytes_done, bytes_total, finished)
    except Exception:  # a broken callback must not break a transfer
        log.exception("czcache progress callback failed")


def set_progress(callback):
    """Sets where progress goes: a callable
    ``callback(title, files_done, files_total, bytes_done, bytes_total, finished)``,
    ``"tqdm"`` for tqdm bars (tqdm must be installed), or ``None`` for none."""
    global _progress
    if callback == "tqdm":
        callback = _tqdm_progress()
    elif callback is not None and not callable(callback):
        raise TypeError("set_progress takes a callable, 'tqdm' or None")
    _progress = callback


def _tqdm_progress():
    from tqdm.auto import tqdm  # raises ImportError when not installed: asked for by name

    def update(title, files_done, files_total, bytes_done, bytes_total, finished):
        with _lock:
            bar = _bars.get(title)
            if bar is None:
                bar = _bars[title] = tqdm(desc=title, unit="B", unit_scale=True, total=0)
            if bytes_total != bar.total:
                bar.total = bytes_total
                bar.refresh()
            bar.update(bytes_done - bar.n)
            if finished:
                bar.close()
                del _bars[title]

    return update
