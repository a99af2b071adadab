"""An exclusive lock on a file that the operating system drops when its holder dies.

One process at a time holds it. Another process asking for it is answered at once (``None``),
never made to wait. The holder closes it with :func:`release`; if the holder dies instead, however
it dies (``kill -9``, a closed console, a crash), the operating system releases it, so a crash
never leaves a stale lock behind. The holder writes a short note at the start of the file (its
pid and start time, say) that others read with :func:`holder_note` to say who holds it.

- Linux, macOS: ``flock`` on the whole file. The lock is advisory, so the note stays readable.
- Windows: ``msvcrt.locking`` on one byte far past the note. Windows locks are mandatory (nobody
  else may read or write a locked range), so the locked byte is kept away from the note.

Each platform's module is imported inside the function that uses it, in that platform's branch:
importing this module needs nothing POSIX-only (or Windows-only). Neither filelock nor
portalocker fits: filelock truncates the lock file whenever someone tries the lock, erasing the
holder's note, and both lock the bytes the note is in on Windows.

Example::

    fd = try_lock(path)
    if fd is None:
        print("held by", holder_note(path))
    else:
        write_note(fd, b"pid 1234")
        ...
        release(fd)
"""

from __future__ import annotations

import errno
import os
import sys
from pathlib import Path

NOTE_MAX_BYTES = 4096
"""The most of a note that is read back."""

_WINDOWS_LOCK_OFFSET = 1 << 30
"""The byte locked on Windows: past any note (a lock may lie past the end of the file)."""

# os.open opens files in text mode on Windows unless told otherwise.
_BINARY = getattr(os, "O_BINARY", 0)


def try_lock(path: Path) -> int | None:
    """Open (creating it if needed) the file at ``path`` and take its exclusive lock, at once.

    Returns the open descriptor, which holds the lock until :func:`release`; ``None`` when
    another process holds the lock. Raises ``OSError`` when the file cannot be opened or locked
    for any other reason.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT | _BINARY, 0o644)
    try:
        taken = _lock(fd, exclusive=True)
    except BaseException:
        os.close(fd)
        raise
    if not taken:
        os.close(fd)
        return None
    return fd


def release(fd: int) -> None:
    """Release the lock held on ``fd`` and close it."""
    try:
        _unlock(fd)
    except OSError:
        pass  # closing the descriptor releases it too
    finally:
        os.close(fd)


def write_note(fd: int, note: bytes) -> None:
    """Replace the note at the start of the locked file with ``note``."""
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, note[:NOTE_MAX_BYTES])


def read_note(fd: int) -> bytes:
    """The note at the start of the file open on ``fd`` (empty when none was written)."""
    os.lseek(fd, 0, os.SEEK_SET)
    return os.read(fd, NOTE_MAX_BYTES)


def holder_note(path: Path) -> bytes | None:
    """The note of the process that holds the lock on ``path``; ``None`` when nobody does.

    It probes by taking the lock for an instant (a shared one where the platform has them), so
    a process asking for the lock at that very instant may be refused.
    """
    try:
        fd = os.open(path, os.O_RDONLY | _BINARY)
    except FileNotFoundError:
        return None
    try:
        if _lock(fd, exclusive=False):
            _unlock(fd)
            return None
        return read_note(fd)
    finally:
        os.close(fd)


def _lock(fd: int, *, exclusive: bool) -> bool:
    """Take the lock on ``fd`` without waiting: True, or False when another process holds it."""
    if sys.platform == "win32":
        import msvcrt

        # msvcrt has no shared lock: a probe takes the exclusive one for an instant.
        os.lseek(fd, _WINDOWS_LOCK_OFFSET, os.SEEK_SET)
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError as exc:
            if exc.errno in (errno.EACCES, errno.EDEADLOCK):
                return False
            raise
        return True
    import fcntl

    try:
        fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES):
            return False
        raise
    return True


def _unlock(fd: int) -> None:
    if sys.platform == "win32":
        import msvcrt

        # Closing the descriptor would release it too, but Windows does that in its own time.
        os.lseek(fd, _WINDOWS_LOCK_OFFSET, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
        return
    import fcntl

    fcntl.flock(fd, fcntl.LOCK_UN)
