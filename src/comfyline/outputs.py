"""An image file as a run leaves it: parameters embedded, written once, atomically, hashed.

The adapter hands over checked bytes; this writes each one exactly once (a temp file in the
same folder, fsynced, renamed over the final name) with its parameters already inside, and
hashes the bytes it wrote, so nothing is read back.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from comfyline.errors import OutputError
from comfyline.images import sha256_hex, write_atomic
from comfyline.reports.png_metadata import with_parameters


@dataclass(frozen=True)
class WrittenImage:
    """One file on disk: where, its sha256, and its pixel size."""

    path: Path
    sha256: str
    width: int
    height: int


def image_paths(folder: Path, stem: str, count: int) -> list[Path]:
    """Our own names for a slot's images: ``{stem}.png`` alone, ``{stem}_{i}.png`` (i from 1)
    for a batch. The server's file names are never used as local paths."""
    if count == 1:
        return [folder / f"{stem}.png"]
    return [folder / f"{stem}_{i}.png" for i in range(1, count + 1)]


def write_images(
    folder: Path,
    stem: str,
    images: Sequence[tuple[bytes, int, int]],
    parameters: Mapping[str, Any],
) -> list[WrittenImage]:
    """Write a slot's images ((png bytes, width, height) each) with ``parameters`` embedded:
    all of them, or none (a failure removes the ones already written)."""
    written: list[WrittenImage] = []
    try:
        for path, (data, width, height) in zip(
            image_paths(folder, stem, len(images)), images, strict=True
        ):
            out = with_parameters(data, {**parameters, "width": width, "height": height}, path.name)
            try:
                write_atomic(path, out)
            except OSError as exc:
                raise OutputError(f"cannot write the image {path}: {exc}") from exc
            written.append(WrittenImage(path, sha256_hex(out), width, height))
    except BaseException:
        for image in written:
            image.path.unlink(missing_ok=True)
        raise
    return written
