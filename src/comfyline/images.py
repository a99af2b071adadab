"""Image files as comfyline writes them: checked before, written atomically, hashed.

A file in an output folder is either complete and checked, or absent: the bytes go to a temp file
in the same folder, are flushed to disk, then renamed over the final name (``os.replace`` is atomic
within one file system). Temp files are removed on every error path.
"""

from __future__ import annotations

import hashlib
import io
import os
import uuid
import warnings
from pathlib import Path

from PIL import Image

from comfyline.errors import ImageInvalid

TEMP_SUFFIX = ".tmp"
"""Temp files are ``.{final name}.{random}.tmp`` in the target folder."""


def check_image(
    data: bytes, *, expected_size: tuple[int, int] | None, source: str
) -> tuple[int, int]:
    """Decode ``data`` fully and return its (width, height).

    Raises :class:`ImageInvalid` naming ``source`` when it does not decode, or when
    ``expected_size`` is given and differs.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                image.load()
                size = image.size
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError, Warning) as exc:
        raise ImageInvalid(
            f"{source}: the image does not decode ({type(exc).__name__}: {exc}; {len(data)} bytes)"
        ) from exc
    if expected_size is not None and size != tuple(expected_size):
        raise ImageInvalid(
            f"{source}: the image is {size[0]}x{size[1]} but {expected_size[0]}x"
            f"{expected_size[1]} was asked for"
        )
    return size


def sha256_hex(data: bytes) -> str:
    """The SHA-256 of ``data`` as lowercase hex."""
    return hashlib.sha256(data).hexdigest()


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that ``path`` never holds a partial file.

    The folder is created if needed. An existing file at ``path`` is replaced.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}{TEMP_SUFFIX}")
    try:
        with open(temp, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    # The rename itself lives in the folder's entry: sync it too (not possible on Windows).
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
