"""imaging.syscalls: the quick system calls that keep the GIL behave as their os twins."""

from __future__ import annotations

import errno
import os
import stat

import pytest

from imaging import syscalls


def test_the_calls_go_through_libc_here():
    # The point of the module: on this (glibc) machine the calls keep the GIL.
    assert syscalls._libc is not None


class _LibcKeepingTheGil:
    """Stands in for the GIL-holding libc: notes which calls went through it."""

    def __init__(self, real):
        self.real, self.called = real, []

    def __getattr__(self, name):
        self.called.append(name)
        return getattr(self.real, name)


def test_calls_that_change_a_folder_let_go_of_the_gil(tmp_path, monkeypatch):
    # Creating a file, rename and mkdir wait for ext4's journal while fsyncs elsewhere
    # commit it (hundreds of us, ms at the tail): they must not hold the event loop's GIL.
    spy = _LibcKeepingTheGil(syscalls._libc)
    monkeypatch.setattr(syscalls, "_libc", spy)
    syscalls.make_directory(tmp_path / "d", 0o700)
    fd = syscalls.open_file(tmp_path / "d" / "new", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    syscalls.close(fd)
    syscalls.rename(tmp_path / "d" / "new", tmp_path / "d" / "renamed")
    assert spy.called == ["close"]
    # The quick ones still keep it: opening a file that exists, reading it, closing it.
    fd = syscalls.open_file(tmp_path / "d" / "renamed", os.O_RDONLY)
    assert syscalls.read_whole(fd) == b""
    syscalls.close(fd)
    assert spy.called[1] == "open" and spy.called[-1] == "close"
    assert (tmp_path / "d" / "renamed").exists() and not (tmp_path / "d" / "new").exists()


def test_a_file_written_renamed_and_read_back(tmp_path):
    path = tmp_path / "a.bin"
    fd = syscalls.open_file(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        assert not os.get_inheritable(fd)  # close-on-exec, as os.open makes it
        syscalls.fchmod(fd, 0o640)
        data = bytes(range(256)) * 4096  # 1 MiB
        syscalls.pwrite_all(fd, data, 0)
        syscalls.pwrite_all(fd, b"tail", len(data))
    finally:
        syscalls.close(fd)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    target = tmp_path / "b.bin"
    target.write_bytes(b"old")
    syscalls.rename(path, target)  # over an existing file, as os.replace
    assert target.read_bytes() == data + b"tail" and not path.exists()


def test_failures_raise_oserror_with_errno_and_path(tmp_path):
    missing = tmp_path / "no" / "such"
    with pytest.raises(FileNotFoundError) as caught:
        syscalls.open_file(missing, os.O_RDONLY)
    assert caught.value.errno == errno.ENOENT and caught.value.filename == str(missing)
    existing = tmp_path / "x"
    existing.write_bytes(b"")
    with pytest.raises(FileExistsError):
        syscalls.open_file(existing, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with pytest.raises(FileNotFoundError):
        syscalls.rename(missing, tmp_path / "y")
    read_only = syscalls.open_file(existing, os.O_RDONLY)
    try:
        with pytest.raises(OSError) as caught:
            syscalls.pwrite_all(read_only, b"data", 0)
        assert caught.value.errno == errno.EBADF
    finally:
        syscalls.close(read_only)
    with pytest.raises(OSError) as caught:
        syscalls.close(read_only)  # closed already
    assert caught.value.errno == errno.EBADF


def test_a_memory_file_read_back_whole_through_a_duplicate():
    data = bytes(range(256)) * 1000
    fd = syscalls.memory_file(data)
    try:
        assert os.lseek(fd, 0, os.SEEK_CUR) == 0  # where libtiff starts reading
        keep = syscalls.dup(fd)
    finally:
        syscalls.close(fd)
    try:
        assert not os.get_inheritable(keep)
        assert syscalls.read_whole(keep) == data
    finally:
        syscalls.close(keep)


def test_folders_made_changed_and_told_apart_as_path_is_dir_does(tmp_path):
    folder = tmp_path / "a"
    syscalls.make_directory(folder, 0o700)
    syscalls.chmod(folder, 0o750)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o750
    with pytest.raises(FileExistsError) as caught:
        syscalls.make_directory(folder, 0o700)
    assert caught.value.filename == str(folder)
    with pytest.raises(FileNotFoundError):
        syscalls.make_directory(tmp_path / "no" / "such", 0o700)
    with pytest.raises(FileNotFoundError):
        syscalls.chmod(tmp_path / "missing", 0o700)
    plain = tmp_path / "plain"
    plain.write_bytes(b"x")
    (tmp_path / "link").symlink_to(folder)
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    for path in (folder, plain, plain / "under", tmp_path / "missing", tmp_path / "link", tmp_path / "dangling"):
        assert syscalls.is_directory(path) == path.is_dir(), path
    # Search permission on the parents is all it needs, as for stat: no read permission.
    locked = tmp_path / "locked"
    syscalls.make_directory(locked, 0o100)
    assert syscalls.is_directory(locked)
    syscalls.chmod(locked, 0o700)
