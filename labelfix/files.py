"""Files as labelfix touches them: it reads only regular files, and writes every file the one safe way.

Writing: a new temporary file beside the target, under a unique name, created exclusively and never
through a link (a link planted at the temporary name cannot redirect the write), flushed to disk, then
renamed over the target (the rename replaces a link at the target, it does not follow it), and the
folder flushed, so that after a crash or power loss the target is either the old file or the whole new
one. The file gets the permissions an ordinary write gives (0666 less the umask: 0644 under umask 022).
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
from pathlib import Path

from .errors import LabelfixError

TEMPORARY_SUFFIX = ".tmp"  # temporaries are `.NAME.XXXXXXXX.tmp`: repair deletes those a killed run left


class OutputError(LabelfixError):
    """The output cannot be written at all (a read-only folder, a full disk): the run stops."""


# errors of the output as a whole, not of one file: the next file would fail the same way
FATAL_WRITE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically and durably (see the module's docstring)."""
    path = Path(path)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}{TEMPORARY_SUFFIX}")
        try:
            fd = os.open(tmp, flags, 0o666)
            break
        except FileExistsError:  # someone's file, or a link, under that name: draw another
            continue
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    fsync_folder(path.parent)


def fsync_folder(folder: Path) -> None:
    """Flush a folder's entries (a rename) to disk, where the system allows it."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return  # Windows cannot open folders; its renames are durable without it
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def unreadable_reason(path: Path) -> str | None:
    """Why `path` cannot be read as a file (a broken link, a link loop, a FIFO or device, a folder, gone),
    or None for a regular file (through links). Checked before opening: opening a FIFO waits forever."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "is a broken symbolic link (its target does not exist)" if os.path.islink(path) else "does not exist"
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "is a symbolic link loop"
        if e.errno == errno.EACCES:
            return "cannot be read (permission denied)"
        return f"cannot be read ({e.strerror})"
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "is a folder, not a file"
    kind = "a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device"
    return f"is {kind}, not a regular file"


def describe_write_error(e: OSError, path: Path) -> str:
    """One line for an error that stops all writing."""
    why = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exceeded",
           errno.EROFS: "the file system is read-only", errno.EACCES: "permission denied",
           errno.EPERM: "permission denied"}.get(e.errno, e.strerror or str(e))
    return f"{path}: cannot write ({why})"
