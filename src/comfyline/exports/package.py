"""Upload packages: ``<out_dir>/<market>/`` with the JPEGs and ``<market>.csv``, per market.

:func:`build_package` works in three steps, so that a bad image never leaves half a package:

1. **Check** every image and row against each market's rules (size after upscaling, file name,
   title, description, keywords, categories, forbidden words). A problem names the image, the
   market, the field and the limit. With problems, nothing is written and
   :class:`PackageInvalid` lists them all, unless ``skip_invalid`` leaves those rows out.
2. **Encode** each image once (sRGB, Lanczos to the target when smaller, JPEG), embed each
   market's metadata, check the file's size in bytes, and write it into a staging folder
   (``<out_dir>/.staging/<market>/``). A file-size problem stops here, with nothing in the
   package changed.
3. **Commit** each market: its old CSV goes first (so a package is never a CSV over other
   files), the staged JPEGs are renamed into place, files of an earlier run that are no longer
   in the package are removed, and the CSV is written last. Every file is written atomically.

A rerun (after ``kill -9`` at any moment, or after a change) gives the same package: JPEGs are
deterministic; one already in place whose SHA-256 and inputs match what the manifest
(``<out_dir>/export-manifest.json``) recorded is kept without re-encoding. One process at a
time may write a package folder.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import shutil
import uuid
import zipfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from PIL import Image

from comfyline.errors import ExportError, ExportProblem, OutputError, PackageInvalid
from comfyline.exports.jpeg import (
    ImageMetadata,
    embed_metadata,
    encode_jpeg,
    open_as_srgb,
)
from comfyline.exports.markets import Market, resolve_markets
from comfyline.exports.texts import (
    ForbiddenWords,
    check_forbidden,
    market_description,
    market_keywords,
    market_title,
)
from comfyline.exports.upscale import target_for_markets, upscale_lanczos
from comfyline.images import TEMP_SUFFIX, sha256_hex, write_atomic

__all__ = [
    "MANIFEST_NAME",
    "ExportItem",
    "ExportOptions",
    "MarketPackage",
    "PackageResult",
    "Progress",
    "apply_motif_cap",
    "build_package",
    "check_package",
    "zip_package",
]

MANIFEST_NAME = "export-manifest.json"
_STAGING = ".staging"
# Bumped when the bytes written for the same inputs change (a new metadata field...).
_FORMAT = 1
_SAFE_STEM = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_MB = 1024 * 1024

Progress = Callable[[str, int, int], None]
"""Called as ``progress(step, done, total)`` with step ``"encode"`` (per image) and
``"commit"`` (per file moved into a market folder)."""


@dataclass(frozen=True)
class ExportItem:
    """One image to sell. ``stem`` names its files (``<stem>.jpg``); ``motif`` groups
    near-duplicates for the motif cap (None: a motif of its own); ``score`` ranks them (higher
    is better, e.g. :attr:`comfyline.quality.QcResult.score`). ``parameters`` are the
    generation parameters, embedded as XMP; a ``"prompt"`` string in them also fills the
    prompt fields (XMP AI prompt, Freepik's Prompt column). ``categories`` maps a market key
    to its category ids (Adobe: one of 1-21; Dreamstime: up to two besides "AI generated").
    """

    source: Path
    stem: str
    title: str
    description: str = ""
    keywords: Sequence[str] = ()
    parameters: Mapping[str, Any] = field(default_factory=dict)
    motif: str | None = None
    score: float = 0.0
    categories: Mapping[str, Sequence[int]] = field(default_factory=dict)

    @property
    def prompt(self) -> str:
        """The generation prompt (``parameters["prompt"]``), or ``""``."""
        value = self.parameters.get("prompt")
        return value if isinstance(value, str) else ""


@dataclass(frozen=True)
class ExportOptions:
    """How a package is made (an order's ``sale:`` settings map onto these)."""

    #: Into dc:creator / IPTC By-line, and dc:rights / IPTC Copyright Notice.
    creator: str | None = None
    copyright: str | None = None
    quality: int = 95
    #: Upscale to at least this (besides every market's minimum).
    min_megapixels: float | None = None
    #: Upscale smaller images with Lanczos (False: a too-small image is a problem instead).
    upscale: bool = True
    #: Keep at most this many images of one motif (the best-scored); None: no cap.
    max_per_motif: int | None = None
    #: Leave out images with problems (reported in the result) instead of writing nothing.
    skip_invalid: bool = False
    #: Embed the generation parameters (XMP) in the JPEGs.
    embed_parameters: bool = True
    #: Freepik's "Model" column (the AI model the image was made with).
    ai_model: str = "Stable Diffusion"
    #: The seller's own forbidden-words file, added to the shipped list.
    forbidden_words_file: Path | None = None


@dataclass(frozen=True)
class MarketPackage:
    """One market's folder as written."""

    market: str
    folder: Path
    csv_files: tuple[Path, ...]
    files: tuple[str, ...]
    written: int
    reused: int


@dataclass(frozen=True)
class PackageResult:
    """What :func:`build_package` wrote and what it left out.

    ``sizes``: each image's JPEG size; ``upscaled``: stems enlarged with Lanczos on the CPU;
    ``skipped``: rows left out for their problems (``skip_invalid``); ``dropped_by_motif``:
    stems over the motif cap; ``notes``: what was adapted to a market's rules (a title
    trimmed, keywords capped, an AI statement added).
    """

    out_dir: Path
    packages: Mapping[str, MarketPackage]
    sizes: Mapping[str, tuple[int, int]]
    upscaled: tuple[str, ...]
    skipped: tuple[ExportProblem, ...]
    dropped_by_motif: tuple[str, ...]
    notes: tuple[str, ...]


@dataclass(frozen=True)
class _Source:
    """What step 1 learnt of a source file."""

    sha256: str
    size: tuple[int, int]
    target: tuple[int, int]


@dataclass(frozen=True)
class _Row:
    """One image as written for one market: its texts, its metadata, its file."""

    item: ExportItem
    market: Market
    filename: str
    title: str
    description: str
    keywords: tuple[str, ...]
    categories: tuple[int, ...]
    notes: tuple[str, ...]
    key: str = ""


# --- the motif cap --------------------------------------------------------------------------


def apply_motif_cap(
    items: Sequence[ExportItem], max_per_motif: int | None
) -> tuple[list[ExportItem], list[ExportItem]]:
    """``(kept, dropped)``: of each motif, the ``max_per_motif`` best-scored items are kept (on
    equal scores, the earlier); items without a motif are always kept. Order is preserved."""
    if max_per_motif is None:
        return list(items), []
    if max_per_motif < 1:
        raise ExportError(f"max_per_motif must be at least 1 but is {max_per_motif}")
    by_motif: dict[str, list[int]] = {}
    for index, item in enumerate(items):
        if item.motif is not None:
            by_motif.setdefault(item.motif, []).append(index)
    dropped: set[int] = set()
    for members in by_motif.values():
        ranked = sorted(members, key=lambda i: (-items[i].score, i))
        dropped.update(ranked[max_per_motif:])
    kept = [it for i, it in enumerate(items) if i not in dropped]
    return kept, [it for i, it in enumerate(items) if i in dropped]


# --- step 1: check --------------------------------------------------------------------------


@dataclass
class _Plan:
    markets: tuple[Market, ...]
    items: list[ExportItem]
    dropped: list[ExportItem]
    sources: dict[str, _Source] = field(default_factory=dict)
    rows: dict[str, list[_Row]] = field(default_factory=dict)
    problems: list[ExportProblem] = field(default_factory=list)


def check_package(
    images: Sequence[ExportItem],
    markets: str | Sequence[str | Market],
    options: ExportOptions | None = None,
) -> list[ExportProblem]:
    """Every problem step 1 of :func:`build_package` finds, without writing anything. (File
    sizes in bytes are known only once encoded: :func:`build_package` checks them too.)"""
    return _check(images, markets, options or ExportOptions()).problems


def _check(
    images: Sequence[ExportItem], markets: str | Sequence[str | Market], options: ExportOptions
) -> _Plan:
    resolved = resolve_markets(markets)
    if not 1 <= options.quality <= 100:
        raise ExportError(f"JPEG quality must be 1-100 but is {options.quality}")
    words = ForbiddenWords.load(options.forbidden_words_file)
    kept, dropped = apply_motif_cap(images, options.max_per_motif)
    plan = _Plan(resolved, kept, dropped)
    stems = [it.stem for it in kept]
    for item in kept:
        source = _read_source(item, resolved, options, plan.problems)
        if source is not None:
            plan.sources[item.stem] = source
    for market in resolved:
        rows = []
        for item in kept:
            source = plan.sources.get(item.stem)
            row, problems = _check_row(item, market, source, options)
            problems += _name_problems(item, market, stems)
            problems += _forbidden(row, words)
            plan.problems += problems
            if not problems and source is not None:
                rows.append(row)
        plan.rows[market.key] = rows
    return plan


def _read_source(
    item: ExportItem, markets: Sequence[Market], options: ExportOptions, out: list[ExportProblem]
) -> _Source | None:
    try:
        data = item.source.read_bytes()
        with Image.open(io.BytesIO(data)) as image:
            size = image.size
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        message = f"cannot read {item.source}: {type(exc).__name__}: {exc}"
        out += [ExportProblem(item.stem, m.key, "file", message) for m in markets]
        return None
    target = size
    if options.upscale:
        try:
            target = target_for_markets(*size, markets, min_megapixels=options.min_megapixels)
        except ExportError as exc:
            out += [ExportProblem(item.stem, m.key, "size", str(exc)) for m in markets]
            return None
    return _Source(sha256_hex(data), size, target)


def _check_row(
    item: ExportItem, market: Market, source: _Source | None, options: ExportOptions
) -> tuple[_Row, list[ExportProblem]]:
    title = market_title(market, item.title)
    description = market_description(market, item.description, item.title)
    keywords = market_keywords(market, item.keywords)
    categories = _categories(item, market)
    row = _Row(
        item,
        market,
        f"{item.stem}.jpg",
        title.value,
        description.value,
        keywords.keywords,
        categories,
        title.notes + description.notes + keywords.notes,
    )
    problems = [ExportProblem(item.stem, market.key, f, m) for f, m in _row_rules(row, options)]
    if source is not None:
        problems += [
            ExportProblem(item.stem, market.key, "size", m)
            for m in _size_rules(market, *source.target)
        ]
    return row, problems


def _categories(item: ExportItem, market: Market) -> tuple[int, ...]:
    given = tuple(item.categories.get(market.key, ()))
    if market.ai_category is not None:
        given = (market.ai_category, *[c for c in given if c != market.ai_category])
    return given


def _row_rules(row: _Row, options: ExportOptions) -> Iterable[tuple[str, str]]:
    market = row.market
    name_limit = market.filename_max_chars
    if name_limit is not None and len(row.filename) > name_limit:
        yield (
            "file name",
            (
                f"{row.filename!r} is {len(row.filename)} characters; the limit is {name_limit} "
                "(give the images shorter stems)"
            ),
        )
    if not row.title:
        yield "title", "is empty; every marketplace needs a title"
    if market.description_min_chars and len(row.description) < market.description_min_chars:
        yield (
            "description",
            (
                f"is {len(row.description)} characters; at least {market.description_min_chars} "
                "are needed"
            ),
        )
    if len(row.keywords) < market.min_keywords:
        yield "keywords", f"{len(row.keywords)} given; at least {market.min_keywords} needed"
    separator = market.csv.keyword_separator if market.csv else ","
    for keyword in row.keywords:
        if separator in keyword or (market.csv and market.csv.delimiter in keyword):
            yield "keywords", f"{keyword!r} holds {separator!r}, which separates keywords"
    yield from _category_rules(row)
    if market.min_jpeg_quality is not None and options.quality < market.min_jpeg_quality:
        yield "quality", f"JPEG quality {options.quality}; at least {market.min_jpeg_quality}"


def _category_rules(row: _Row) -> Iterable[tuple[str, str]]:
    market = row.market
    if len(row.categories) > market.max_categories:
        allowed = f"at most {market.max_categories}" if market.max_categories else "none"
        extra = " (one is its AI category)" if market.ai_category is not None else ""
        yield "category", f"{list(row.categories)}: {market.name} takes {allowed}{extra}"
    if market.category_range is not None:
        low, high = market.category_range
        for category in row.categories:
            if not low <= category <= high:
                yield "category", f"{category} is not a category id ({low}-{high})"


def _size_rules(market: Market, width: int, height: int) -> Iterable[str]:
    megapixels = width * height / 1e6
    if market.min_megapixels is not None and megapixels < market.min_megapixels:
        yield (
            f"{width}x{height} is {megapixels:.2f} MP; at least {market.min_megapixels:g} MP "
            "needed (upscaling is off)"
        )
    if market.min_side_px is not None and min(width, height) < market.min_side_px:
        yield (
            f"{width}x{height}: the shorter side must be at least {market.min_side_px} px "
            "(upscaling is off)"
        )
    if market.max_megapixels is not None and megapixels > market.max_megapixels:
        yield f"{width}x{height} is {megapixels:.2f} MP; at most {market.max_megapixels:g} MP"
    if market.max_side_px is not None and max(width, height) > market.max_side_px:
        yield f"{width}x{height}: a side is over the limit of {market.max_side_px} px"


def _name_problems(item: ExportItem, market: Market, stems: list[str]) -> list[ExportProblem]:
    problems = []
    if not _SAFE_STEM.fullmatch(item.stem):
        problems.append(
            ExportProblem(
                item.stem,
                market.key,
                "file name",
                f"{item.stem!r} is not a safe file name; use letters, digits, '.', '_', '-'",
            )
        )
    if stems.count(item.stem) > 1:
        problems.append(
            ExportProblem(
                item.stem, market.key, "file name", f"{stems.count(item.stem)} images share it"
            )
        )
    return problems


def _forbidden(row: _Row, words: ForbiddenWords) -> list[ExportProblem]:
    fields: dict[str, str | Sequence[str]] = {
        "title": row.title,
        "description": row.description,
        "keywords": row.keywords,
        "prompt": row.item.prompt,
    }
    return [
        ExportProblem(row.item.stem, row.market.key, f.field, f.message)
        for f in check_forbidden(row.item.stem, row.market, fields, words)
    ]


# --- step 2: encode -------------------------------------------------------------------------


def _metadata(row: _Row, options: ExportOptions) -> ImageMetadata:
    item = row.item
    return ImageMetadata(
        title=row.title,
        description=row.description,
        keywords=row.keywords,
        creator=options.creator,
        copyright=options.copyright,
        prompt=item.prompt or None,
        parameters=item.parameters if options.embed_parameters else {},
    )


def _row_key(row: _Row, source: _Source, options: ExportOptions) -> str:
    """What the JPEG's bytes depend on: the same key gives the same file."""
    meta = _metadata(row, options)
    material = {
        "format": _FORMAT,
        "source": source.sha256,
        "size": list(source.target),
        "quality": options.quality,
        "title": meta.title,
        "description": meta.description,
        "keywords": list(meta.keywords),
        "creator": meta.creator,
        "copyright": meta.copyright,
        "prompt": meta.prompt,
        "parameters": meta.parameters,
    }
    text = json.dumps(material, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _file_problems(market: Market, row: _Row, size: int) -> list[ExportProblem]:
    found = []
    if market.max_file_mb is not None and size > market.max_file_mb * _MB:
        found.append(f"{size / _MB:.1f} MB; at most {market.max_file_mb:g} MB")
    if market.min_file_mb is not None and size < market.min_file_mb * _MB:
        found.append(f"{size / _MB:.2f} MB; at least {market.min_file_mb:g} MB")
    return [ExportProblem(row.item.stem, market.key, "file size", m) for m in found]


class _Manifest:
    """``export-manifest.json``: per market, file name -> {sha256, key, bytes}."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.markets: dict[str, dict[str, dict[str, Any]]] = {}
        try:
            data = json.loads(path.read_text("utf-8"))
            if isinstance(data, dict) and isinstance(data.get("markets"), dict):
                self.markets = data["markets"]
        except (OSError, ValueError):
            pass  # no manifest (or an unreadable one): every file is simply written again

    def entry(self, market: str, filename: str) -> dict[str, Any] | None:
        return self.markets.get(market, {}).get(filename)

    def save(self) -> None:
        body = {"format": _FORMAT, "markets": self.markets}
        text = json.dumps(body, indent=1, sort_keys=True, ensure_ascii=False)
        write_atomic(self.path, text.encode("utf-8") + b"\n")


def _is_current(folder: Path, row: _Row, manifest: _Manifest) -> bool:
    entry = manifest.entry(row.market.key, row.filename)
    path = folder / row.filename
    if entry is None or entry.get("key") != row.key or not path.is_file():
        return False
    return bool(sha256_hex(path.read_bytes()) == entry.get("sha256"))


@dataclass
class _Encoded:
    staged: dict[str, list[_Row]] = field(default_factory=dict)
    reused: dict[str, list[_Row]] = field(default_factory=dict)
    entries: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    upscaled: list[str] = field(default_factory=list)
    problems: list[ExportProblem] = field(default_factory=list)


def _encode_all(
    plan: _Plan, out_dir: Path, options: ExportOptions, manifest: _Manifest, progress: Progress
) -> _Encoded:
    encoded = _Encoded()
    for market in plan.markets:
        encoded.staged[market.key], encoded.reused[market.key] = [], []
        encoded.entries[market.key] = {}
    for done, item in enumerate(plan.items, start=1):
        _encode_item(item, plan, out_dir, options, manifest, encoded)
        progress("encode", done, len(plan.items))
    return encoded


def _encode_item(
    item: ExportItem,
    plan: _Plan,
    out_dir: Path,
    options: ExportOptions,
    manifest: _Manifest,
    encoded: _Encoded,
) -> None:
    source = plan.sources.get(item.stem)
    if source is None:
        return
    todo = []
    for market in plan.markets:
        for row in plan.rows[market.key]:
            if row.item is item:
                if _is_current(out_dir / market.key, row, manifest):
                    encoded.reused[market.key].append(row)
                    entry = manifest.entry(market.key, row.filename)
                    assert entry is not None
                    encoded.entries[market.key][row.filename] = entry
                else:
                    todo.append(row)
    if not todo:
        return
    image = open_as_srgb(item.source)
    if image.size != source.target:
        image = upscale_lanczos(image, source.target)
        encoded.upscaled.append(item.stem)
    pixels = encode_jpeg(image, quality=options.quality)
    for row in todo:
        data = embed_metadata(pixels, _metadata(row, options))
        problems = _file_problems(row.market, row, len(data))
        if problems:
            encoded.problems += problems
            continue
        write_atomic(out_dir / _STAGING / row.market.key / row.filename, data)
        encoded.staged[row.market.key].append(row)
        encoded.entries[row.market.key][row.filename] = {
            "sha256": sha256_hex(data),
            "key": row.key,
            "bytes": len(data),
            "width": image.width,
            "height": image.height,
        }


# --- step 3: commit -------------------------------------------------------------------------


def _csv_parts(market: Market, rows: Sequence[_Row], options: ExportOptions) -> list[bytes]:
    layout = market.csv
    assert layout is not None
    parts: list[bytes] = []
    lines: list[str] = []
    header = _csv_line(layout.header, market)
    size = len(header.encode("utf-8"))
    for row in rows:
        line = _csv_line(_csv_cells(market, row, options), market)
        full_rows = layout.max_rows is not None and len(lines) >= layout.max_rows
        full_bytes = layout.max_bytes is not None and size + len(line.encode()) > layout.max_bytes
        if lines and (full_rows or full_bytes):
            parts.append(_csv_bytes(header, lines, layout.bom))
            lines, size = [], len(header.encode("utf-8"))
        lines.append(line)
        size += len(line.encode("utf-8"))
    parts.append(_csv_bytes(header, lines, layout.bom))
    return parts


def _csv_line(cells: Sequence[str], market: Market) -> str:
    layout = market.csv
    assert layout is not None
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


def _csv_bytes(header: str, lines: list[str], bom: bool) -> bytes:
    return (b"\xef\xbb\xbf" if bom else b"") + (header + "".join(lines)).encode("utf-8")


def _csv_cells(market: Market, row: _Row, options: ExportOptions) -> list[str]:
    separator = market.csv.keyword_separator if market.csv else ","
    keywords = separator.join(row.keywords)
    categories = [str(c) for c in row.categories]
    if market.key == "adobe":
        return [row.filename, row.title, keywords, (categories or [""])[0], ""]
    if market.key == "freepik":
        return [row.filename, row.title, keywords, row.item.prompt, options.ai_model]
    if market.key == "dreamstime":
        cats = (categories + ["", "", ""])[:3]
        # Free, W-EL, P-EL, SR-EL, SR-Price, Editorial, MR doc Ids, Pr Docs: royalty-free with
        # web and print extended licences, not free, not sold-rights, not editorial.
        licences = ["0", "1", "1", "0", "", "0", "", ""]
        return [row.filename, row.title, row.description, *cats, keywords, *licences]
    if market.key == "123rf":
        return [row.filename, "", row.description, keywords, ""]
    raise ExportError(f"no CSV row layout for {market.name}")


def _csv_names(market: Market, count: int) -> list[str]:
    return [market.key + (f"-{i}" if i > 1 else "") + ".csv" for i in range(1, count + 1)]


def _commit_market(
    market: Market,
    rows: Sequence[_Row],
    encoded: _Encoded,
    out_dir: Path,
    options: ExportOptions,
    manifest: _Manifest,
    progress: Progress,
) -> MarketPackage:
    folder = out_dir / market.key
    folder.mkdir(parents=True, exist_ok=True)
    parts = _csv_parts(market, rows, options)
    names = _csv_names(market, len(parts))
    staged = encoded.staged[market.key]
    old = set(manifest.markets.get(market.key, {}))
    wanted = {r.filename for r in rows}
    old_csvs = _csv_files(folder, market)
    if staged or old - wanted or not _same_files(folder, old_csvs, names, parts):
        for path in old_csvs:
            path.unlink()  # first: a package is never an old CSV over new files
        # Record intent next: after a kill from here on, every file we may have written is
        # known (stale ones can be removed), and each one moved in already matches its entry.
        entries = encoded.entries[market.key]
        intent = {r.filename: entries[r.filename] for r in staged}
        manifest.markets[market.key] = {**manifest.markets.get(market.key, {}), **intent}
        manifest.save()
        for done, row in enumerate(staged, start=1):
            os.replace(out_dir / _STAGING / market.key / row.filename, folder / row.filename)
            progress("commit", done, len(staged))
        for name in old - wanted:
            (folder / name).unlink(missing_ok=True)
        for name, data in zip(names, parts, strict=True):
            write_atomic(folder / name, data)  # last
    _remove_temp_files(folder)
    manifest.markets[market.key] = {
        r.filename: encoded.entries[market.key][r.filename] for r in rows
    }
    manifest.save()
    return MarketPackage(
        market.key,
        folder,
        tuple(folder / n for n in names),
        tuple(r.filename for r in rows),
        written=len(staged),
        reused=len(encoded.reused[market.key]),
    )


def _csv_files(folder: Path, market: Market) -> list[Path]:
    pattern = re.compile(rf"{re.escape(market.key)}(-\d+)?\.csv")
    return sorted(p for p in folder.iterdir() if pattern.fullmatch(p.name))


def _same_files(folder: Path, present: list[Path], names: list[str], parts: list[bytes]) -> bool:
    if sorted(p.name for p in present) != sorted(names):
        return False
    return all((folder / n).read_bytes() == data for n, data in zip(names, parts, strict=True))


def _remove_temp_files(folder: Path) -> None:
    # Left by a write that a kill cut short (images.write_atomic's naming).
    for temp in folder.glob(f".*{TEMP_SUFFIX}"):
        temp.unlink(missing_ok=True)


def build_package(
    images: Sequence[ExportItem],
    markets: str | Sequence[str | Market],
    out_dir: Path,
    options: ExportOptions | None = None,
    *,
    progress: Progress | None = None,
) -> PackageResult:
    """Write ``<out_dir>/<market>/`` (JPEGs and ``<market>.csv``) for each market in
    ``markets`` (keys such as ``"adobe,freepik,dreamstime,123rf"``).

    Raises :class:`PackageInvalid` (every problem, nothing written) when an image or row breaks
    a market's rule and ``options.skip_invalid`` is off; :class:`MarketRefused` for a market
    that refuses AI images; :class:`ConfigError` for an unknown one.
    """
    options = options or ExportOptions()
    report = progress or (lambda step, done, total: None)
    plan = _check(images, markets, options)
    if plan.problems and not options.skip_invalid:
        raise PackageInvalid(plan.problems)
    out_dir.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(out_dir / _STAGING, ignore_errors=True)
    _remove_temp_files(out_dir)
    manifest = _Manifest(out_dir / MANIFEST_NAME)
    for rows in plan.rows.values():
        rows[:] = [replace(r, key=_row_key(r, plan.sources[r.item.stem], options)) for r in rows]
    try:
        encoded = _encode_all(plan, out_dir, options, manifest, report)
        if encoded.problems and not options.skip_invalid:
            raise PackageInvalid(encoded.problems)
        bad = {(p.image, p.market) for p in encoded.problems}
        packages = {}
        for market in plan.markets:
            rows = [r for r in plan.rows[market.key] if (r.item.stem, market.key) not in bad]
            packages[market.key] = _commit_market(
                market, rows, encoded, out_dir, options, manifest, report
            )
    finally:
        shutil.rmtree(out_dir / _STAGING, ignore_errors=True)
    return _result(plan, encoded, out_dir, packages)


def _result(
    plan: _Plan, encoded: _Encoded, out_dir: Path, packages: dict[str, MarketPackage]
) -> PackageResult:
    notes = [
        f"{row.item.stem} [{key}] {note}"
        for key, rows in plan.rows.items()
        for row in rows
        for note in row.notes
    ]
    return PackageResult(
        out_dir=out_dir,
        packages=packages,
        sizes={stem: s.target for stem, s in plan.sources.items()},
        upscaled=tuple(dict.fromkeys(encoded.upscaled)),
        skipped=tuple(plan.problems + encoded.problems),
        dropped_by_motif=tuple(it.stem for it in plan.dropped),
        notes=tuple(notes),
    )


# --- zip ------------------------------------------------------------------------------------


def zip_package(folder: Path, dest: Path | None = None) -> Path:
    """Zip a market folder (``<out_dir>/<market>``) into ``dest`` (default: ``<folder>.zip``
    beside it), atomically. The same files give the same zip (names sorted, fixed times)."""
    if not folder.is_dir():
        raise OutputError(f"cannot zip {folder}: it is not a folder")
    dest = dest or folder.with_suffix(".zip")
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    temp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:12]}{TEMP_SUFFIX}")
    try:
        with zipfile.ZipFile(temp, "w") as archive:
            for path in files:
                info = zipfile.ZipInfo(
                    f"{folder.name}/{path.name}", date_time=(1980, 1, 1, 0, 0, 0)
                )
                info.compress_type = (
                    zipfile.ZIP_STORED if path.suffix == ".jpg" else zipfile.ZIP_DEFLATED
                )
                info.external_attr = 0o644 << 16
                with path.open("rb") as source, archive.open(info, "w") as target:
                    shutil.copyfileobj(source, target, 1024 * 1024)
        with temp.open("rb") as written:
            os.fsync(written.fileno())
        os.replace(temp, dest)
    except OSError as exc:
        temp.unlink(missing_ok=True)
        raise OutputError(f"cannot write the zip {dest}: {exc}") from exc
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return dest
