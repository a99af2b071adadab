"""The contact sheet from real PNG files: layout, missing cells, paging, determinism."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest
from PIL import Image

from comfyline.ledger import Ledger, ledger_path
from comfyline.reports.contact_sheet import (
    COLUMNS,
    PER_SHEET,
    THUMB,
    SheetEntry,
    render_sheet,
    sheet_entries,
    write_contact_sheets,
)

COLORS = [(220, 20, 20), (20, 180, 20), (20, 20, 220)]


@pytest.fixture
def images(tmp_path: Path) -> list[Path]:
    paths = []
    for n, color in enumerate(COLORS):
        path = tmp_path / f"img_{n}.png"
        Image.new("RGB", (320, 240 if n == 1 else 320), color).save(path)
        paths.append(path)
    return paths


def test_one_sheet_with_thumbnails_and_a_missing_cell(tmp_path: Path, images: list[Path]) -> None:
    entries = [SheetEntry(i, 1000 + i, p) for i, p in enumerate(images)]
    entries.append(SheetEntry(3, 1003, None))
    [path] = write_contact_sheets(entries, tmp_path / "out", title="foxes")
    assert path.name == "contact_sheet.png"
    with Image.open(path) as sheet:
        assert sheet.width == 4 * (THUMB + 8) + 8
        cells = [sheet.getpixel((8 + n * (THUMB + 8) + THUMB // 2, 30 + 20)) for n in range(4)]
    assert cells[:3] == COLORS
    assert cells[3] == (200, 200, 200)  # a grey "missing" cell keeps the plan's order


def test_same_input_gives_the_same_bytes(tmp_path: Path, images: list[Path]) -> None:
    entries = [SheetEntry(i, 7 + i, p) for i, p in enumerate(images)]
    [a] = write_contact_sheets(entries, tmp_path / "a", title="t")
    [b] = write_contact_sheets(entries, tmp_path / "b", title="t")
    assert a.read_bytes() == b.read_bytes()


def test_unreadable_image_shows_as_missing(tmp_path: Path) -> None:
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    sheet = render_sheet([SheetEntry(0, 1, bad)])
    assert sheet.getpixel((8 + THUMB // 2, 30 + 20)) == (200, 200, 200)


def test_big_series_is_split_and_stale_sheets_go(tmp_path: Path, images: list[Path]) -> None:
    entries = [SheetEntry(i, i, images[i % 3]) for i in range(PER_SHEET * 2 + 5)]
    out = tmp_path / "out"
    paths = write_contact_sheets(entries, out)
    assert [p.name for p in paths] == [
        "contact_sheet_001.png",
        "contact_sheet_002.png",
        "contact_sheet_003.png",
    ]
    with Image.open(paths[0]) as first:
        assert first.width == COLUMNS * (THUMB + 8) + 8
        assert first.height <= 30 + (PER_SHEET // COLUMNS) * (THUMB + 34)
    (out / "notes.png").write_bytes(b"user's file")
    assert write_contact_sheets(entries[:2], out) == [out / "contact_sheet.png"]
    assert sorted(p.name for p in out.iterdir()) == ["contact_sheet.png", "notes.png"]


def test_empty_series_still_gives_a_sheet(tmp_path: Path) -> None:
    [path] = write_contact_sheets([], tmp_path, title="nothing yet")
    with Image.open(path) as sheet:
        assert sheet.size[0] > 0


def test_a_sheet_refuses_too_many_entries() -> None:
    with pytest.raises(ValueError, match="at most"):
        render_sheet([SheetEntry(i, i, None) for i in range(PER_SHEET + 1)])


def test_entries_from_the_ledger(tmp_path: Path, images: list[Path]) -> None:
    @dataclass(frozen=True)
    class Planned:
        index: int
        key: str
        prompt: str
        seed: int
        negative: str = ""
        params: dict[str, int] = field(default_factory=dict)

    with Ledger.open(ledger_path(tmp_path), "o", "fp") as led:
        led.ensure_slots(Planned(i, f"k{i}", "p", 50 + i) for i in range(3))
        led.mark_submitted(0, "p0", 1)
        led.mark_done(0, ["img_0.png", "img_1.png"], ["00" * 32, "11" * 32], 1.0)
        entries = sheet_entries(led.slots(), tmp_path)
    assert entries == [
        SheetEntry(0, 50, tmp_path / "img_0.png"),
        SheetEntry(0, 50, tmp_path / "img_1.png"),
    ]  # slots not made yet get no cell: a stopped 100,000-slot order draws what it made
