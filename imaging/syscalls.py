"""Quick system calls that keep the GIL: open, pwrite, close, fchmod, rename.

Why: each ``os`` call lets go of the GIL and must take it back, and a thread beside a
busy event loop waits up to the switch interval for it.  A page write (journal append,
meta.json) made ~17 such calls, ~4 of them the fsyncs that must let go (they wait for
the disk): beside a busy loop it took 11.5 ms instead of 1.4 (t38gw issue 14, where the
sender's MCF waits for that write).  The others take microseconds, so here they go
through libc loaded with ``ctypes.PyDLL``, which holds the GIL during the call.

Same contract as ``os``: OSError (errno, message, path) on failure.  Where libc cannot be
loaded this way, the ``os`` functions are used.  Never for anything that may block for
long: fsync, reads from sockets or pipes stay with ``os``.
"""

from __future__ import annotations

import ctypes
import os
from typing import Any

_libc: Any = None
try:
    _candidate = ctypes.PyDLL(None, use_errno=True)
    for _name, _restype, _argtypes in (
        ("open", ctypes.c_int, [ctypes.c_char_p, ctypes.c_int, ctypes.c_uint]),
        ("pwrite", ctypes.c_ssize_t, [ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_int64]),
        ("close", ctypes.c_int, [ctypes.c_int]),
        ("fchmod", ctypes.c_int, [ctypes.c_int, ctypes.c_uint]),
        ("rename", ctypes.c_int, [ctypes.c_char_p, ctypes.c_char_p]),
    ):
        _function = getattr(_candidate, _name)
        _function.restype = _restype
        _function.argtypes = _argtypes
    _libc = _candidate
except (OSError, AttributeError):  # pragma: no cover - not glibc/musl: os it is
    _libc = None


def _raise(path: object = None) -> None:
    err = ctypes.get_errno()
    if path is None:
        raise OSError(err, os.strerror(err))
    raise OSError(err, os.strerror(err), os.fsdecode(path))  # type: ignore[arg-type]


def open_file(path: str | bytes | os.PathLike[str], flags: int, mode: int = 0o777) -> int:
    """``os.open``, holding the GIL; the descriptor is close-on-exec as os.open makes it."""
    if _libc is None:
        return os.open(path, flags, mode)
    encoded = os.fsencode(path)
    while True:
        fd = int(_libc.open(encoded, flags | os.O_CLOEXEC, mode))
        if fd >= 0:
            return fd
        if ctypes.get_errno() != 4:  # EINTR: os.open retries too (PEP 475)
            _raise(path)


def pwrite_all(fd: int, data: bytes, offset: int) -> None:
    """Write all of ``data`` at ``offset`` (pwrite until done)."""
    if _libc is None:
        view = memoryview(data)
        while view:
            written = os.pwrite(fd, view, offset)
            view, offset = view[written:], offset + written
        return
    data = bytes(data)
    while data:
        written = int(_libc.pwrite(fd, data, len(data), offset))
        if written < 0:
            if ctypes.get_errno() == 4:
                continue
            _raise()
        data, offset = data[written:], offset + written


def close(fd: int) -> None:
    """``os.close`` holding the GIL (EINTR counts as closed, as os.close does on Linux)."""
    if _libc is None:
        os.close(fd)
        return
    if _libc.close(fd) < 0 and ctypes.get_errno() != 4:
        _raise()


def fchmod(fd: int, mode: int) -> None:
    if _libc is None:
        os.fchmod(fd, mode)
        return
    if _libc.fchmod(fd, mode) < 0:
        _raise()


def rename(source: str | os.PathLike[str], target: str | os.PathLike[str]) -> None:
    """``os.replace`` (rename over an existing file), holding the GIL."""
    if _libc is None:
        os.replace(source, target)
        return
    if _libc.rename(os.fsencode(source), os.fsencode(target)) < 0:
        _raise(source)
