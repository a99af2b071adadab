"""A full disk, told as such: which file could not be written, how much space is left there,
and what to do. The writers (:func:`comfyline.images.write_atomic`, the ledger) turn the
operating system's and SQLite's codes into :class:`~comfyline.errors.DiskFull` here."""

from __future__ import annotations

import errno
import shutil
import sqlite3
from pathlib import Path

from comfyline.errors import DiskFull

_REASONS = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota of this user is used up",
    errno.EFBIG: (
        "the file would be larger than this process may write (a file size limit, "
        "`ulimit -f`) or than the file system allows"
    ),
}

_SQLITE_FULL = 13
"""SQLITE_FULL: "database or disk is full" (the disk, not a limit of SQLite's own)."""
_SQLITE_IOERR_WRITE = 778
"""SQLITE_IOERR_WRITE: a write the operating system refused. SQLite keeps no errno; a full disk,
a quota and a file size limit all end here (a failing drive too, rarely)."""


def full_disk_error(exc: OSError, path: Path) -> DiskFull | None:
    """The :class:`DiskFull` for an ``OSError`` writing ``path``; None for other errors."""
    reason = _REASONS.get(exc.errno or 0)
    return None if reason is None else disk_full(path, reason)


def full_disk_sqlite_error(exc: sqlite3.Error, path: Path) -> DiskFull | None:
    """The :class:`DiskFull` for a SQLite error writing the database ``path``; None for others."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code == _SQLITE_FULL:
        return disk_full(path, f"the disk is full (SQLite: {exc})")
    if code == _SQLITE_IOERR_WRITE:
        return disk_full(
            path,
            f"the system refused a write (SQLite: {exc}): a full disk, a quota or a size limit",
        )
    return None


def disk_full(path: Path, reason: str) -> DiskFull:
    """The error for ``path`` that could not be written for ``reason``, with the space left."""
    free = free_bytes(path)
    space = "unknown space" if free is None else _size(free)
    return DiskFull(
        f"cannot write {path}: {reason}; {space} free there. Nothing half-written was kept: "
        "free some space (or raise the limit) and run the same command again to resume",
        path=str(path),
        free_bytes=free,
    )


def free_bytes(path: Path) -> int | None:
    """Free bytes on the file system holding ``path`` (its nearest existing folder)."""
    for folder in (path, *path.parents):
        try:
            return shutil.disk_usage(folder).free
        except OSError:
            continue
    return None


def _size(count: int) -> str:
    if count >= 1024**3:
        return f"{count / 1024**3:.1f} GiB"
    if count >= 1024**2:
        return f"{count / 1024**2:.1f} MiB"
    return f"{count / 1024:.0f} KiB"
