"""Image files as comfyline writes them: checked before, written atomically, hashed.

A file in an output folder is either complete and checked, or absent: the bytes go to a temp file
in the same folder, are flushed to disk, then renamed over the final name (``os.replace`` is atomic
within one file system). Temp files are removed on every error path.
"""

from __future__ import annotations

import hashlib
import io
import os
import sys
import time
import uuid
import warnings
from pathlib import Path

from PIL import Image

from comfyline.disk import full_disk_error
from comfyline.errors import ImageInvalid

TEMP_SUFFIX = ".tmp"
"""Temp files are ``.{final name}.{random}.tmp`` in the target folder."""


def check_image(data: bytes, *, expected_size: tuple[int, int] | None, source: str) -> Image.Image:
    """Decode ``data`` fully and return the decoded image.

    Raises :class:`ImageInvalid` naming ``source`` when it does not decode, or when
    ``expected_size`` is given and differs.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                image.load()  # (the pixels stay once loaded; closing lets go of the buffer)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError, Warning) as exc:
        raise ImageInvalid(
            f"{source}: the image does not decode ({type(exc).__name__}: {exc}; {len(data)} bytes)"
        ) from exc
    if expected_size is not None and image.size != tuple(expected_size):
        raise ImageInvalid(
            f"{source}: the image is {image.width}x{image.height} but {expected_size[0]}x"
            f"{expected_size[1]} was asked for"
        )
    return image


def sha256_hex(data: bytes) -> str:
    """The SHA-256 of ``data`` as lowercase hex."""
    return hashlib.sha256(data).hexdigest()


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that ``path`` never holds a partial file.

    The folder is created if needed. An existing file at ``path`` is replaced. A full disk
    (no space, a quota, a file size limit) raises :class:`~comfyline.errors.DiskFull`, other
    failures ``OSError``. On Windows, a
    target held open for a moment by a virus scanner or the search indexer is retried for up to
    about a second before the ``PermissionError`` is raised.
    """
    temp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}{TEMP_SUFFIX}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(temp, "wb") as file:
            file.write(data)
            file.flush()
            _sync(file.fileno())
        _replace(temp, path)
    except OSError as exc:
        temp.unlink(missing_ok=True)
        if (full := full_disk_error(exc, path)) is not None:
            raise full from exc
        raise
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


REPLACE_RETRY_S = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5)
"""Windows: the waits between attempts to rename over a target another program holds open."""


def _replace(temp: Path, path: Path) -> None:
    # Windows refuses to replace a file that another program has open without delete sharing
    # (virus scanners and the search indexer open new files for a moment): retry, bounded.
    for wait_s in (*REPLACE_RETRY_S, None):
        try:
            os.replace(temp, path)
            return
        except PermissionError:
            if sys.platform != "win32" or wait_s is None:
                raise
            time.sleep(wait_s)


def _sync(fd: int) -> None:
    """Flush a file's data to the disk itself."""
    if sys.platform == "darwin":
        import fcntl

        # macOS: fsync leaves the data in the drive's cache; F_FULLFSYNC flushes it through.
        try:
            fcntl.fcntl(fd, fcntl.F_FULLFSYNC)
            return
        except OSError:
            pass  # a file system without it (some network shares): a plain fsync
    os.fsync(fd)


def _fsync_dir(folder: Path) -> None:
    # The rename itself lives in the folder's entry: sync it too, where the platform can. POSIX
    # opens a folder for reading; Windows cannot open a folder with os.open (NTFS keeps the
    # rename in its own metadata journal).
    if os.name != "posix":
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems cannot sync a folder; the file itself is synced
    finally:
        os.close(fd)
