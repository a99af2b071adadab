"""Step 1 of an upload package: every image and row checked against each market's rules
before anything is written.

A problem (:class:`~comfyline.errors.ExportProblem`) names the image, the market, the field and
the limit. What is checked: the source decodes; its size after upscaling (min/max megapixels,
shorter and longer side); the file name (safe characters, unique, Adobe's 30 characters); the
title (not empty); the description (Dreamstime's 50 characters); the keywords (count, no
keyword holding the separator); categories (count and range); JPEG quality; the generation
parameters (JSON-able); and the forbidden words of each field. File sizes in bytes are
checked when the JPEG is encoded.
"""

from __future__ import annotations

import io
import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from PIL import Image

from comfyline.errors import ExportError, ExportProblem
from comfyline.exports.items import ExportItem, ExportOptions, apply_motif_cap
from comfyline.exports.markets import Market, resolve_markets
from comfyline.exports.texts import (
    ForbiddenWords,
    check_forbidden,
    market_description,
    market_keywords,
    market_title,
)
from comfyline.exports.upscale import target_for_markets
from comfyline.images import sha256_hex

__all__ = ["Plan", "Row", "Source", "check_package", "plan_package"]

_SAFE_STEM = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


@dataclass(frozen=True)
class Source:
    """What the check learnt of a source file: its SHA-256, size, and the size to write."""

    sha256: str
    size: tuple[int, int]
    target: tuple[int, int]


@dataclass(frozen=True)
class Row:
    """One image as written for one market: its file name, texts and categories, what was
    adapted to the market's rules (``notes``), and the key of its JPEG's inputs."""

    item: ExportItem
    market: Market
    filename: str
    title: str
    description: str
    keywords: tuple[str, ...]
    categories: tuple[int, ...]
    notes: tuple[str, ...]
    key: str = ""


@dataclass
class Plan:
    """The checked package: per market the rows that passed, and every problem found."""

    markets: tuple[Market, ...]
    items: list[ExportItem]
    dropped: list[ExportItem]
    sources: dict[str, Source] = field(default_factory=dict)
    rows: dict[str, list[Row]] = field(default_factory=dict)
    problems: list[ExportProblem] = field(default_factory=list)


def check_package(
    images: Sequence[ExportItem],
    markets: str | Sequence[str | Market],
    options: ExportOptions | None = None,
) -> list[ExportProblem]:
    """Every problem :func:`~comfyline.exports.build_package` would find before encoding,
    without writing anything (file sizes in bytes are known only once encoded)."""
    return plan_package(images, markets, options or ExportOptions()).problems


def plan_package(
    images: Sequence[ExportItem], markets: str | Sequence[str | Market], options: ExportOptions
) -> Plan:
    """Check every image and row (after the motif cap) and return the plan."""
    resolved = resolve_markets(markets)
    if not 1 <= options.quality <= 100:
        raise ExportError(f"JPEG quality must be 1-100 but is {options.quality}")
    words = ForbiddenWords.load(options.forbidden_words_file)
    kept, dropped = apply_motif_cap(images, options.max_per_motif)
    plan = Plan(resolved, kept, dropped)
    for item in kept:
        source = _read_source(item, resolved, options, plan.problems)
        if source is not None:
            plan.sources[item.stem] = source
    stems = Counter(it.stem for it in kept)
    for market in resolved:
        plan.rows[market.key] = []
        for item in kept:
            source = plan.sources.get(item.stem)
            row, problems = _check_row(item, market, source, options)
            problems += _name_problems(item, market, stems[item.stem])
            problems += _forbidden(row, words)
            plan.problems += problems
            if not problems and source is not None:
                plan.rows[market.key].append(row)
    return plan


def _read_source(
    item: ExportItem, markets: Sequence[Market], options: ExportOptions, out: list[ExportProblem]
) -> Source | None:
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
    return Source(sha256_hex(data), size, target)


def _check_row(
    item: ExportItem, market: Market, source: Source | None, options: ExportOptions
) -> tuple[Row, list[ExportProblem]]:
    title = market_title(market, item.title)
    description = market_description(market, item.description, item.title)
    keywords = market_keywords(market, item.keywords)
    row = Row(
        item,
        market,
        f"{item.stem}.jpg",
        title.value,
        description.value,
        keywords.keywords,
        _categories(item, market),
        title.notes + description.notes + keywords.notes,
    )
    found = list(_row_rules(row, options))
    if source is not None:
        found += [("size", m) for m in _size_rules(market, *source.target)]
    return row, [ExportProblem(item.stem, market.key, f, m) for f, m in found]


def _categories(item: ExportItem, market: Market) -> tuple[int, ...]:
    given = tuple(item.categories.get(market.key, ()))
    if market.ai_category is not None:
        given = (market.ai_category, *[c for c in given if c != market.ai_category])
    return given


def _row_rules(row: Row, options: ExportOptions) -> Iterable[tuple[str, str]]:
    market = row.market
    limit = market.filename_max_chars
    if limit is not None and len(row.filename) > limit:
        yield (
            "file name",
            (
                f"{row.filename!r} is {len(row.filename)} characters; the limit is {limit} "
                "(give the images shorter stems)"
            ),
        )
    if not row.title:
        yield "title", "is empty; every marketplace needs a title"
    least = market.description_min_chars
    if least and len(row.description) < least:
        yield "description", f"is {len(row.description)} characters; at least {least} needed"
    if len(row.keywords) < market.min_keywords:
        yield "keywords", f"{len(row.keywords)} given; at least {market.min_keywords} needed"
    yield from _keyword_rules(row)
    yield from _category_rules(row)
    if market.min_jpeg_quality is not None and options.quality < market.min_jpeg_quality:
        yield "quality", f"JPEG quality {options.quality}; at least {market.min_jpeg_quality}"
    if options.embed_parameters:
        try:
            json.dumps(dict(row.item.parameters))
        except (TypeError, ValueError) as exc:
            yield "parameters", f"cannot be embedded as JSON: {exc}"


def _keyword_rules(row: Row) -> Iterable[tuple[str, str]]:
    layout = row.market.csv
    reserved = {layout.keyword_separator, layout.delimiter} if layout else {","}
    for keyword in row.keywords:
        for mark in sorted(reserved):
            if mark in keyword:
                yield "keywords", f"{keyword!r} holds {mark!r}, which the CSV uses as a separator"


def _category_rules(row: Row) -> Iterable[tuple[str, str]]:
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
    # The minimums fail only with upscaling off: the target meets every selected market's.
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


def _name_problems(item: ExportItem, market: Market, uses: int) -> list[ExportProblem]:
    found = []
    if not _SAFE_STEM.fullmatch(item.stem):
        found.append(f"{item.stem!r} is not a safe file name; use letters, digits, '.', '_', '-'")
    if uses > 1:
        found.append(f"{uses} images share the stem {item.stem!r}")
    return [ExportProblem(item.stem, market.key, "file name", m) for m in found]


def _forbidden(row: Row, words: ForbiddenWords) -> list[ExportProblem]:
    fields = {
        "title": row.title,
        "description": row.description,
        "keywords": row.keywords,
        "prompt": row.item.prompt,
    }
    return [
        ExportProblem(row.item.stem, row.market.key, flag.field, flag.message)
        for flag in check_forbidden(row.item.stem, row.market, fields, words)
    ]
