"""An order's images for the browser, found by slot index in the ledger, never by a path the
browser sends; thumbnails made once and kept in ``<output>/.comfyline/thumbs/``."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

from comfyline.errors import LedgerError
from comfyline.images import write_atomic
from comfyline.ledger import LEDGER_DIR, LedgerReader, SlotState, ledger_path

THUMB_PX = 256
"""The longer side of a thumbnail, in pixels (a 2x screen shows it sharp at 128 CSS px)."""
THUMB_DIR = "thumbs"
VERSION_CHARS = 16


class NoImage(LookupError):
    """The slot has no such image (not made yet, or no such slot): the page answers 404."""


def image_file(output: Path, output_root: Path, index: int, number: int) -> tuple[Path, str]:
    """The ``number``-th file of slot ``index`` and its sha256, checked to lie inside the
    order's output folder and the output root (a tampered ledger cannot lead elsewhere)."""
    db = ledger_path(output)
    if not db.is_file():
        raise NoImage(f"the order has no images yet (slot {index})")
    with LedgerReader.open(db) as view:
        try:
            slot = view.slot(index)
        except LedgerError as exc:  # no such slot
            raise NoImage(str(exc)) from exc
    if slot.state is not SlotState.DONE or not 0 <= number < len(slot.files):
        raise NoImage(f"slot {index} has no image {number}")
    path = (output / slot.files[number]).resolve()
    for base in (output.resolve(), output_root.resolve()):
        if not path.is_relative_to(base):
            raise NoImage(f"slot {index}: its file lies outside {base}")
    if not path.is_file():
        raise NoImage(f"slot {index}: its file {slot.files[number]} is missing")
    return path, slot.sha256s[number]


def thumbnail(output: Path, source: Path, sha256: str) -> Path:
    """The cached thumbnail of ``source`` (named by its sha256), made on first use."""
    thumb = output / LEDGER_DIR / THUMB_DIR / f"{sha256[:32]}.webp"
    if thumb.is_file():
        return thumb
    with Image.open(source) as image:
        image.thumbnail((THUMB_PX, THUMB_PX))
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, "WEBP", quality=80)
    write_atomic(thumb, buffer.getvalue())
    return thumb


def version(sha256: str) -> str:
    """The part of a file's sha256 that image URLs carry (``?v=``): a re-rolled slot's new
    file gets new URLs, never the browser's cached old image."""
    return sha256[:VERSION_CHARS]
