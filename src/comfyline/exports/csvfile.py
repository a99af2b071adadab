"""A market's bulk-upload CSV, exactly as its importer expects it: the header, delimiter and
quoting of :class:`~comfyline.exports.markets.CsvLayout`, UTF-8, CRLF line ends, split into
``<market>.csv``, ``<market>-2.csv``, ... when over the market's row or byte limit."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Sequence
from pathlib import Path

from comfyline.errors import ExportError
from comfyline.exports.checks import Row
from comfyline.exports.items import ExportOptions
from comfyline.exports.markets import CsvLayout, Market

__all__ = ["csv_files", "existing_csv_files"]

_BOM = b"\xef\xbb\xbf"
# Dreamstime's Free, W-EL, P-EL, SR-EL, SR-Price, Editorial, MR doc Ids, Pr Docs: royalty-free
# with web and print extended licences; not free, not sold-rights, not editorial.
_DREAMSTIME_LICENCES = ("0", "1", "1", "0", "", "0", "", "")


def csv_files(
    market: Market, rows: Sequence[Row], options: ExportOptions
) -> list[tuple[str, bytes]]:
    """``[(file name, bytes), ...]``: the market's CSV for ``rows``, in as many parts as its
    limits need (always at least one, header only for no rows)."""
    layout = _layout(market)
    header = _line(layout, layout.header)
    parts: list[list[str]] = [[]]
    size = len(header.encode("utf-8"))
    for row in rows:
        line = _line(layout, _cells(market, row, options))
        grown = size + len(line.encode("utf-8"))
        full_rows = layout.max_rows is not None and len(parts[-1]) >= layout.max_rows
        full_bytes = layout.max_bytes is not None and grown > layout.max_bytes
        if parts[-1] and (full_rows or full_bytes):
            parts.append([])
            grown = len(header.encode("utf-8")) + len(line.encode("utf-8"))
        parts[-1].append(line)
        size = grown
    names = [market.key + (f"-{i}" if i > 1 else "") + ".csv" for i in range(1, len(parts) + 1)]
    bom = _BOM if layout.bom else b""
    return [
        (n, bom + (header + "".join(p)).encode("utf-8")) for n, p in zip(names, parts, strict=True)
    ]


def existing_csv_files(folder: Path, market: Market) -> list[Path]:
    """The market's CSV files (``<market>.csv``, ``<market>-N.csv``) now in ``folder``."""
    pattern = re.compile(rf"{re.escape(market.key)}(-\d+)?\.csv")
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if pattern.fullmatch(p.name))


def _layout(market: Market) -> CsvLayout:
    if market.csv is None:
        raise ExportError(f"{market.name} has no CSV layout")
    return market.csv


def _line(layout: CsvLayout, cells: Sequence[str]) -> str:
    buffer = io.StringIO()
    if layout.quote_all:
        writer = csv.writer(
            buffer, delimiter=layout.delimiter, quoting=csv.QUOTE_ALL, lineterminator="\r\n"
        )
    else:
        writer = csv.writer(
            buffer, delimiter=layout.delimiter, quoting=csv.QUOTE_MINIMAL, lineterminator="\r\n"
        )
    writer.writerow(cells)
    return buffer.getvalue()


def _cells(market: Market, row: Row, options: ExportOptions) -> list[str]:
    """One row's cells, in the order of the market's header."""
    keywords = _layout(market).keyword_separator.join(row.keywords)
    categories = [str(c) for c in row.categories]
    if market.key == "adobe":
        return [row.filename, row.title, keywords, (categories or [""])[0], ""]
    if market.key == "freepik":
        return [row.filename, row.title, keywords, row.item.prompt, options.ai_model]
    if market.key == "dreamstime":
        first_three = (categories + ["", "", ""])[:3]
        return [
            row.filename, row.title, row.description, *first_three, keywords,
            *_DREAMSTIME_LICENCES,
        ]  # fmt: skip
    if market.key == "123rf":
        return [row.filename, "", row.description, keywords, ""]
    raise ExportError(f"no CSV row layout for {market.name} (key {market.key!r})")
