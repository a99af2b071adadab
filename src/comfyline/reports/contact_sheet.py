"""The contact sheet: the series as a grid of thumbnails, index and seed under each image.

Bounded size: thumbnails fit a 160 px square, at most 10 columns and 20 rows (200 images) on one
sheet, so a sheet is at most about 1,700 x 4,100 px whatever the order's size. A bigger series is
split over several sheets, ``contact_sheet_001.png``, ``contact_sheet_002.png``, ... (a series that
fits on one sheet gets ``contact_sheet.png``); each sheet's header says which images it holds.
A failed or missing image is a grey cell marked "missing", so the grid keeps the plan's order.

Rendering is deterministic: the same images and entries give the same bytes (with the same
Pillow), since it uses Pillow's bundled font, no timestamps and a fixed compression level.
"""

from __future__ import annotations

import functools
import io
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from comfyline.errors import OutputError
from comfyline.images import write_atomic
from comfyline.ledger import SlotRecord, SlotState

THUMB = 160
COLUMNS = 10
ROWS = 20
PER_SHEET = COLUMNS * ROWS
_PAD = 8
_LABEL_H = 34
_HEADER_H = 30
_BACKGROUND = (255, 255, 255)
_MISSING = (200, 200, 200)
_FLAGGED = (200, 30, 30)
_TEXT = (20, 20, 20)
_SHEET_NAME = re.compile(r"contact_sheet(_\d{3})?\.png")


@dataclass(frozen=True)
class SheetEntry:
    """One cell: the slot's index and seed, and its image file (None: failed or missing)."""

    index: int
    seed: int
    path: Path | None
    flags: tuple[str, ...] = ()
    """What the quality checks found (marked on the cell), or what the user decided."""


def sheet_entries(slots: Iterable[SlotRecord], output_dir: Path) -> list[SheetEntry]:
    """The cells for the ledger's slots: one per image of a done slot, one "missing" cell for
    each failed slot. Slots not made yet get none, so drawing the sheets of a stopped
    100,000-slot order costs what was made, not what was planned. Slot files are relative to
    ``output_dir``."""
    entries: list[SheetEntry] = []
    for slot in slots:
        if slot.state is SlotState.DONE:
            for i, file in enumerate(slot.files):
                flags = tuple(slot.qc[i].get("flags", ())) if i < len(slot.qc) else ()
                if slot.review == "rejected":
                    flags = (*flags, "rejected")
                entries.append(SheetEntry(slot.index, slot.seed, output_dir / file, flags))
        elif slot.state is SlotState.FAILED:
            entries.append(SheetEntry(slot.index, slot.seed, None))
    return entries


def write_contact_sheets(
    entries: Sequence[SheetEntry], out_dir: Path, *, title: str = ""
) -> list[Path]:
    """Render the sheets for ``entries`` (in order) into ``out_dir`` and return their paths.

    Sheets left from an earlier run that this one does not write are removed, so the folder
    always shows the current state. Raises :class:`OutputError` when a sheet cannot be written.
    """
    pages = [entries[i : i + PER_SHEET] for i in range(0, len(entries), PER_SHEET)] or [[]]
    names = (
        ["contact_sheet.png"]
        if len(pages) == 1
        else [f"contact_sheet_{n:03d}.png" for n in range(1, len(pages) + 1)]
    )
    paths = [out_dir / name for name in names]
    for number, (page, path) in enumerate(zip(pages, paths, strict=True), start=1):
        header = _header(title, number, len(pages), page, len(entries))
        _write_png(path, render_sheet(page, header))
    _remove_stale(out_dir, set(names))
    return paths


def render_sheet(entries: Sequence[SheetEntry], header: str = "") -> Image.Image:
    """One sheet as an RGB image (at most ``PER_SHEET`` entries)."""
    if len(entries) > PER_SHEET:
        raise ValueError(f"a sheet holds at most {PER_SHEET} images, got {len(entries)}")
    columns = max(1, min(COLUMNS, len(entries)))
    rows = max(1, -(-len(entries) // columns))
    cell_w, cell_h = THUMB + _PAD, THUMB + _LABEL_H
    sheet = Image.new("RGB", (columns * cell_w + _PAD, _HEADER_H + rows * cell_h), _BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    draw.text((_PAD, 8), header, fill=_TEXT, font=_font(14))
    for n, entry in enumerate(entries):
        x = _PAD + (n % columns) * cell_w
        y = _HEADER_H + (n // columns) * cell_h
        _draw_cell(sheet, draw, entry, x, y)
    return sheet


def _draw_cell(
    sheet: Image.Image, draw: ImageDraw.ImageDraw, e: SheetEntry, x: int, y: int
) -> None:
    thumb = _thumbnail(e.path)
    if thumb is None:
        draw.rectangle((x, y, x + THUMB - 1, y + THUMB - 1), fill=_MISSING)
        draw.text(
            (x + THUMB // 2, y + THUMB // 2), "missing", fill=_TEXT, font=_font(12), anchor="mm"
        )
    else:
        sheet.paste(thumb, (x + (THUMB - thumb.width) // 2, y + (THUMB - thumb.height) // 2))
    if e.flags:  # a flagged image is framed in red and says why
        draw.rectangle((x, y, x + THUMB - 1, y + THUMB - 1), outline=_FLAGGED, width=3)
        label = ", ".join(f.replace("_", " ") for f in e.flags)
        draw.rectangle((x, y, x + THUMB - 1, y + 16), fill=_FLAGGED)
        draw.text((x + 4, y + 2), label, fill=(255, 255, 255), font=_font(11))
    draw.text((x, y + THUMB + 3), f"#{e.index}", fill=_TEXT, font=_font(12))
    draw.text((x, y + THUMB + 18), f"seed {e.seed}", fill=_TEXT, font=_font(11))


def _thumbnail(path: Path | None) -> Image.Image | None:
    """The image scaled to fit the thumbnail square, or None when it cannot be read."""
    if path is None:
        return None
    try:
        with Image.open(path) as image:
            thumb = image.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError):
        return None  # a damaged file shows as missing; the image checks report it
    thumb.thumbnail((THUMB, THUMB), Image.Resampling.LANCZOS)
    return thumb


@functools.cache
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    # Pillow's bundled font: the same glyphs on every machine, so the same sheet bytes.
    return ImageFont.load_default(size=size)


def _header(title: str, number: int, pages: int, page: Sequence[SheetEntry], total: int) -> str:
    if not page:
        return f"{title}: no images".lstrip(": ")
    span = f"#{page[0].index}-#{page[-1].index}"
    sheet = f"sheet {number}/{pages}, " if pages > 1 else ""
    return f"{title}  ({sheet}{span}, {total} image(s))".strip()


def _write_png(path: Path, image: Image.Image) -> None:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=6)
    try:
        write_atomic(path, buffer.getvalue())
    except OSError as exc:
        raise OutputError(f"cannot write the contact sheet {path}: {exc}") from exc


def _remove_stale(out_dir: Path, keep: set[str]) -> None:
    for path in out_dir.glob("contact_sheet*.png"):
        if _SHEET_NAME.fullmatch(path.name) and path.name not in keep:
            path.unlink(missing_ok=True)
