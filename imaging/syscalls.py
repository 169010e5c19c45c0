"""Quick system calls that keep the GIL: open (of a file that exists), pwrite, close,
fchmod, chmod, whether a path is a folder, a file's size and contents, and the in-memory
files libtiff codes pages in (memfd_create, dup, read back); rename, mkdir and a file's
creation here let go of it (below).

Why: each ``os`` call lets go of the GIL and must take it back, and a thread beside a
busy event loop waits up to the switch interval for it.  A page write (journal append,
meta.json) made ~17 such calls, ~4 of them the fsyncs that must let go (they wait for
the disk): beside a busy loop it took 11.5 ms instead of 1.4 (t38gw issue 14, where the
sender's MCF waits for that write).  The others take microseconds, so here they go
through libc loaded with ``ctypes.PyDLL``, which holds the GIL during the call.

Same contract as ``os``: OSError (errno, message, path) on failure.  Where libc cannot be
loaded this way, the ``os`` functions are used.  Never for anything that may block for
long: fsync, reads from sockets or pipes stay with ``os`` - and so do the calls that
change a folder (creating a file, rename, mkdir): on ext4 each takes a journal handle
and waits while fsyncs elsewhere commit the journal.  Measured beside four threads
writing and fsyncing files (the page-end wave of issue 14): creating a file 244 us on
average (p99 889 us), rename 170 us (790), mkdir 190 us (856), against ~10 us for the
others; holding the GIL through those stalled the event loop (py-spy ``--gil`` at the
page ends of 400 calls: ~10 % of the GIL's time in rename and open with O_CREAT).
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
from pathlib import Path
from typing import Any, NoReturn

_libc: Any = None
try:
    _candidate = ctypes.PyDLL(None, use_errno=True)
    for _name, _restype, _argtypes in (
        ("open", ctypes.c_int, [ctypes.c_char_p, ctypes.c_int, ctypes.c_uint]),
        ("pwrite", ctypes.c_ssize_t, [ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_int64]),
        ("close", ctypes.c_int, [ctypes.c_int]),
        ("fchmod", ctypes.c_int, [ctypes.c_int, ctypes.c_uint]),
        ("memfd_create", ctypes.c_int, [ctypes.c_char_p, ctypes.c_uint]),
        ("fcntl", ctypes.c_int, [ctypes.c_int, ctypes.c_int, ctypes.c_int]),
        ("lseek", ctypes.c_int64, [ctypes.c_int, ctypes.c_int64, ctypes.c_int]),
        ("pread", ctypes.c_ssize_t, [ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int64]),
        ("chmod", ctypes.c_int, [ctypes.c_char_p, ctypes.c_uint]),
    ):
        _function = getattr(_candidate, _name)
        _function.restype = _restype
        _function.argtypes = _argtypes
    _libc = _candidate
except (OSError, AttributeError):  # pragma: no cover - not glibc/musl: os it is
    _libc = None


def _raise(path: object = None) -> NoReturn:
    err = ctypes.get_errno()
    if path is None:
        raise OSError(err, os.strerror(err))
    raise OSError(err, os.strerror(err), os.fsdecode(path))  # type: ignore[arg-type]


def open_file(path: str | bytes | os.PathLike[str], flags: int, mode: int = 0o777) -> int:
    """``os.open``, holding the GIL unless it may create the file (O_CREAT changes the
    folder: see the module's docstring); close-on-exec as os.open makes it."""
    if _libc is None or flags & os.O_CREAT:
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
    """``os.replace`` (rename over an existing file).  It lets go of the GIL: a rename
    waits for the folder's journal (the module's docstring)."""
    os.replace(source, target)


def is_directory(path: str | os.PathLike[str]) -> bool:
    """``Path.is_dir``, holding the GIL: an O_PATH descriptor of the folder (search
    permission on its parents is all it needs, as for stat), closed at once.  False when
    nothing is there or it is no folder; OSError for anything else (EACCES on a parent),
    as Path.is_dir."""
    if _libc is None or not hasattr(os, "O_PATH"):
        return Path(path).is_dir()
    fd = int(_libc.open(os.fsencode(path), os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC, 0))
    if fd >= 0:
        close(fd)
        return True
    if ctypes.get_errno() in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
        return False
    _raise(path)


def make_directory(path: str | os.PathLike[str], mode: int) -> None:
    """``os.mkdir`` (FileExistsError when something is there).  It lets go of the GIL: a
    new folder waits for its parent's journal (the module's docstring)."""
    os.mkdir(path, mode)


def chmod(path: str | os.PathLike[str], mode: int) -> None:
    """``os.chmod``, holding the GIL."""
    if _libc is None:
        os.chmod(path, mode)
    elif _libc.chmod(os.fsencode(path), mode) < 0:
        _raise(path)


def memory_file(data: bytes = b"") -> int:
    """A new close-on-exec memfd holding ``data``, its offset at 0 (pwrite leaves it there)."""
    if _libc is None:
        fd = os.memfd_create("t38gw-page", os.MFD_CLOEXEC)
    else:
        fd = int(_libc.memfd_create(b"t38gw-page", os.MFD_CLOEXEC))
        if fd < 0:
            _raise()
    if data:
        try:
            pwrite_all(fd, data, 0)
        except OSError:
            close(fd)
            raise
    return fd


def dup(fd: int) -> int:
    """``os.dup``: the copy close-on-exec too (F_DUPFD_CLOEXEC)."""
    if _libc is None:
        return os.dup(fd)
    new = int(_libc.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 0))
    if new < 0:
        _raise()
    return new


def size(fd: int) -> int:
    """The size of a regular (or memory) file, holding the GIL (lseek to its end)."""
    if _libc is None:
        return os.fstat(fd).st_size
    end = int(_libc.lseek(fd, 0, os.SEEK_END))
    if end < 0:
        _raise()
    return end


def read_whole(fd: int) -> bytes:
    """All of a regular (or memory) file, whatever its offset."""
    if _libc is None:
        return os.pread(fd, os.fstat(fd).st_size, 0)
    length = size(fd)
    buffer = ctypes.create_string_buffer(length)
    done = 0
    while done < length:
        got = int(_libc.pread(fd, ctypes.byref(buffer, done), length - done, done))
        if got < 0:
            if ctypes.get_errno() == 4:
                continue
            _raise()
        if got == 0:
            break
        done += got
    return buffer.raw if done == length else buffer.raw[:done]
