"""Atomic file writes: a temp file with a fresh, unique name in the same folder, then os.replace, so no reader
sees half a file and no link planted under a predictable name is ever followed. The file gets the mode a plain
open() would give it (an existing file's own, else 0o666 less the umask: mkstemp's 0600 would hide reports from
the rest of a team), and the folder is fsynced after the rename so it survives a crash. A write that fails
(full disk, I/O error) is an OutputError: the temp file is removed and the earlier file is left as it was.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hwprune.errors import OutputError


def write_failed(path: Path, exc: OSError) -> OutputError:
    """The one-line error for a write to `path` that failed; a full disk says what to do about it."""
    reason = exc.strerror or str(exc)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return OutputError(f"cannot write {path}: {reason}",
                           hint="free space on that disk, then run the same command again (the earlier file, if "
                                "any, is unchanged)")
    return OutputError(f"cannot write {path}: {reason}", hint="choose a writable folder (--out, --profiles-dir)")


def _umask() -> int:
    """The process umask, read without setting it (os.umask sets it, racing any thread that creates files)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _mode_for(path: Path) -> int:
    """What open(path, "w") would leave: an existing file keeps its permissions, a new one gets 0o666 & ~umask."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return 0o666 & ~_umask()


def _temp_beside(path: Path, suffix: str) -> tuple[int, Path]:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    except OSError as exc:
        raise write_failed(path, exc) from None
    return fd, Path(tmp)


def _sync(fd: int, path: Path) -> None:
    os.fchmod(fd, _mode_for(path))
    os.fsync(fd)


def _put_in_place(tmp: Path, path: Path) -> None:
    """Rename, then fsync the folder: without it a crash can lose the rename (file systems that cannot fsync a
    folder are left as they are)."""
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP):
            raise
    finally:
        os.close(fd)


def write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    fd, tmp = _temp_beside(path, ".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            _sync(fh.fileno(), path)
        _put_in_place(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise write_failed(path, exc) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """A fresh, uniquely named empty file beside `path` for a writer that wants a file name (matplotlib, ONNX
    Runtime); it keeps `path`'s extension, which such writers read the format from. When the block ends
    without error it replaces `path` like `write_bytes`; otherwise it is removed."""
    path = Path(path)
    fd, tmp = _temp_beside(path, f".tmp{path.suffix}")
    os.close(fd)
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY | os.O_NOFOLLOW)
        try:
            _sync(fd, path)
        finally:
            os.close(fd)
        _put_in_place(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise write_failed(path, exc) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class FileLock:
    """An exclusive fcntl.flock on the file `path` (created if absent; a link planted there is refused), with
    the holder's pid written in it. The lock belongs to the open file: release() frees it, and so does the end
    of the process, however it ends, so a killed run never leaves a stale lock behind. The file stays: deleting
    it would let two processes lock two different files of the same name."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, wait: bool = True) -> bool:
        """True once held; False when another process (or another FileLock) holds it and `wait` is False."""
        if self._fd is not None:
            return True
        flags = os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(self.path, os.O_RDWR | flags, 0o666)
            except PermissionError:  # another user's lock file in a shared folder: locking needs no write access
                fd = os.open(self.path, os.O_RDONLY | flags, 0o666)
        except OSError as exc:
            raise write_failed(self.path, exc) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            return False
        except OSError as exc:
            os.close(fd)
            raise write_failed(self.path, exc) from None
        self._fd = fd
        with contextlib.suppress(OSError):  # the pid only helps the message another process shows
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return True

    def holder(self) -> int | None:
        """The pid the current holder wrote, when readable."""
        try:
            return int(self.path.read_text().strip())
        except (OSError, ValueError):
            return None

    def release(self) -> None:
        """Unlock (explicitly: a forked child holding a copy of the descriptor would keep a mere close from
        freeing it) and close."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)

    def __enter__(self) -> FileLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")
