"""Upload packages: ``<out_dir>/<market>/`` with the JPEGs and ``<market>.csv``, per market.

:func:`build_package` works in three steps, so that a bad image never leaves half a package:

1. **Check** every image and row against each market's rules (:mod:`.checks`). With
   problems, nothing is written and :class:`PackageInvalid` lists them all, unless
   ``skip_invalid`` leaves those rows out.
2. **Encode** each image once (sRGB, Lanczos to the target when smaller, JPEG), embed each
   market's metadata, check the file's size in bytes, and write it into a staging folder
   (``<out_dir>/.staging/<market>/``). A file-size problem stops here, with nothing in the
   package changed.
3. **Commit** each market: its old CSV goes first (a package is never an old CSV over new
   files), the manifest records what is about to move in, the staged JPEGs are renamed into
   place, files of an earlier run no longer in the package are removed, and the CSV is written
   last. Every file is written atomically.

A rerun (after ``kill -9`` at any moment, or after a change) gives the same package: JPEGs are
deterministic, and one already in place whose SHA-256 and inputs match what the manifest
(``<out_dir>/export-manifest.json``) recorded is kept without re-encoding. Files the seller
adds to a market folder are left alone. One process at a time may write a package folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from comfyline.errors import ExportProblem, OutputError, PackageInvalid
from comfyline.exports.checks import Plan, Row, Source, plan_package
from comfyline.exports.csvfile import csv_files, existing_csv_files
from comfyline.exports.items import ExportItem, ExportOptions
from comfyline.exports.jpeg import ImageMetadata, embed_metadata, encode_jpeg, open_as_srgb
from comfyline.exports.markets import Market
from comfyline.exports.upscale import upscale_lanczos
from comfyline.images import TEMP_SUFFIX, sha256_hex, write_atomic

__all__ = [
    "MANIFEST_NAME",
    "MarketPackage",
    "PackageResult",
    "Progress",
    "build_package",
    "zip_package",
]

MANIFEST_NAME = "export-manifest.json"
_STAGING = ".staging"
# Bumped when the bytes written for the same inputs change (a new metadata field...).
_FORMAT = 1
_MB = 1024 * 1024

Progress = Callable[[str, int, int], None]
"""Called as ``progress(step, done, total)`` with step ``"encode"`` (after each image) and
``"commit"`` (after each file moved into a market folder)."""


@dataclass(frozen=True)
class MarketPackage:
    """One market's folder as written: its CSV file(s), the JPEG names in CSV order, how many
    JPEGs were written and how many kept from an earlier run."""

    market: str
    folder: Path
    csv_files: tuple[Path, ...]
    files: tuple[str, ...]
    written: int
    reused: int


@dataclass(frozen=True)
class PackageResult:
    """What :func:`build_package` wrote and what it left out.

    ``sizes``: each image's JPEG size; ``upscaled``: stems enlarged with Lanczos on the CPU in
    this run; ``skipped``: problems of rows left out (``skip_invalid``); ``dropped_by_motif``:
    stems over the motif cap; ``notes``: what was adapted to a market's rules (a title
    trimmed, keywords capped, an AI statement added), as ``stem [market] note``.
    """

    out_dir: Path
    packages: Mapping[str, MarketPackage]
    sizes: Mapping[str, tuple[int, int]]
    upscaled: tuple[str, ...]
    skipped: tuple[ExportProblem, ...]
    dropped_by_motif: tuple[str, ...]
    notes: tuple[str, ...]


def build_package(
    images: Sequence[ExportItem],
    markets: str | Sequence[str | Market],
    out_dir: Path,
    options: ExportOptions | None = None,
    *,
    progress: Progress | None = None,
) -> PackageResult:
    """Write ``<out_dir>/<market>/`` (JPEGs and ``<market>.csv``) for each market in
    ``markets`` (``"adobe,freepik,dreamstime,123rf"``, or a list of keys or Markets).

    Raises :class:`PackageInvalid` (every problem, nothing written) when an image or row breaks
    a market's rule and ``options.skip_invalid`` is off; :class:`MarketRefused` for a market
    that refuses AI images; :class:`ConfigError` for an unknown one.
    """
    options = options or ExportOptions()
    report = progress or _no_progress
    plan = plan_package(images, markets, options)
    if plan.problems and not options.skip_invalid:
        raise PackageInvalid(plan.problems)
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = out_dir / _STAGING
    shutil.rmtree(staging, ignore_errors=True)  # a killed run's, never part of a package
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
            packages[market.key] = _commit(
                market, rows, encoded, out_dir, options, manifest, report
            )
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return _result(plan, encoded, out_dir, packages)


def _no_progress(step: str, done: int, total: int) -> None:
    return None


# --- step 2: encode -------------------------------------------------------------------------


def _metadata(row: Row, options: ExportOptions) -> ImageMetadata:
    return ImageMetadata(
        title=row.title,
        description=row.description,
        keywords=row.keywords,
        creator=options.creator,
        copyright=options.copyright,
        prompt=row.item.prompt or None,
        parameters=row.item.parameters if options.embed_parameters else {},
    )


def _row_key(row: Row, source: Source, options: ExportOptions) -> str:
    """A hash of everything the JPEG's bytes depend on: the same key gives the same file."""
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


class _Manifest:
    """``export-manifest.json``: per market, file name -> {sha256, key, bytes, width, height}."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.markets: dict[str, dict[str, dict[str, Any]]] = {}
        try:
            data = json.loads(path.read_text("utf-8"))
        except (OSError, ValueError):
            return  # none yet (or unreadable): every file is simply written again
        if isinstance(data, dict) and isinstance(data.get("markets"), dict):
            self.markets = data["markets"]

    def entry(self, market: str, filename: str) -> dict[str, Any] | None:
        return self.markets.get(market, {}).get(filename)

    def save(self) -> None:
        body = {"format": _FORMAT, "markets": self.markets}
        text = json.dumps(body, indent=1, sort_keys=True, ensure_ascii=False)
        write_atomic(self.path, text.encode("utf-8") + b"\n")


@dataclass
class _Encoded:
    """What step 2 did, per market key."""

    staged: dict[str, list[Row]] = field(default_factory=dict)
    reused: dict[str, list[Row]] = field(default_factory=dict)
    entries: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    upscaled: list[str] = field(default_factory=list)
    problems: list[ExportProblem] = field(default_factory=list)


def _encode_all(
    plan: Plan, out_dir: Path, options: ExportOptions, manifest: _Manifest, progress: Progress
) -> _Encoded:
    encoded = _Encoded()
    by_stem: dict[str, list[Row]] = {}
    for market in plan.markets:
        encoded.staged[market.key], encoded.reused[market.key] = [], []
        encoded.entries[market.key] = {}
        for row in plan.rows[market.key]:
            by_stem.setdefault(row.item.stem, []).append(row)
    for done, item in enumerate(plan.items, start=1):
        todo = [r for r in by_stem.get(item.stem, []) if not _reuse(r, out_dir, manifest, encoded)]
        if todo:
            _encode_item(item, todo, plan.sources[item.stem], out_dir, options, encoded)
        progress("encode", done, len(plan.items))
    return encoded


def _reuse(row: Row, out_dir: Path, manifest: _Manifest, encoded: _Encoded) -> bool:
    """True (and recorded) when the row's JPEG is in place as the manifest says."""
    entry = manifest.entry(row.market.key, row.filename)
    path = out_dir / row.market.key / row.filename
    if entry is None or entry.get("key") != row.key or not path.is_file():
        return False
    if sha256_hex(path.read_bytes()) != entry.get("sha256"):
        return False  # edited or replaced by hand: written again
    encoded.reused[row.market.key].append(row)
    encoded.entries[row.market.key][row.filename] = entry
    return True


def _encode_item(
    item: ExportItem,
    rows: list[Row],
    source: Source,
    out_dir: Path,
    options: ExportOptions,
    encoded: _Encoded,
) -> None:
    image = open_as_srgb(item.source)
    if image.size != source.target:
        image = upscale_lanczos(image, source.target)
        encoded.upscaled.append(item.stem)
    pixels = encode_jpeg(image, quality=options.quality)
    for row in rows:
        data = embed_metadata(pixels, _metadata(row, options))
        problems = _file_problems(row, len(data))
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


def _file_problems(row: Row, size: int) -> list[ExportProblem]:
    market, found = row.market, []
    if market.max_file_mb is not None and size > market.max_file_mb * _MB:
        found.append(f"{size / _MB:.1f} MB; at most {market.max_file_mb:g} MB")
    if market.min_file_mb is not None and size < market.min_file_mb * _MB:
        found.append(f"{size / _MB:.2f} MB; at least {market.min_file_mb:g} MB")
    return [ExportProblem(row.item.stem, market.key, "file size", m) for m in found]


# --- step 3: commit -------------------------------------------------------------------------


def _commit(
    market: Market,
    rows: Sequence[Row],
    encoded: _Encoded,
    out_dir: Path,
    options: ExportOptions,
    manifest: _Manifest,
    progress: Progress,
) -> MarketPackage:
    folder = out_dir / market.key
    folder.mkdir(parents=True, exist_ok=True)
    csvs = csv_files(market, rows, options)
    staged = encoded.staged[market.key]
    old = set(manifest.markets.get(market.key, {}))
    stale = old - {r.filename for r in rows}
    present = existing_csv_files(folder, market)
    if staged or stale or not _same_csvs(folder, present, csvs):
        for path in present:
            path.unlink()  # first: a package is never an old CSV over new files
        # Intent next: after a kill from here on, every file we may have moved in is known
        # (so it can be removed if no longer wanted), and matches its entry (so it is kept).
        entries = encoded.entries[market.key]
        recorded = manifest.markets.setdefault(market.key, {})
        recorded.update({r.filename: entries[r.filename] for r in staged})
        manifest.save()
        for done, row in enumerate(staged, start=1):
            os.replace(out_dir / _STAGING / market.key / row.filename, folder / row.filename)
            progress("commit", done, len(staged))
        for name in stale:
            (folder / name).unlink(missing_ok=True)
        for name, data in csvs:
            write_atomic(folder / name, data)  # last
    _remove_temp_files(folder)
    manifest.markets[market.key] = {
        r.filename: encoded.entries[market.key][r.filename] for r in rows
    }
    manifest.save()
    return MarketPackage(
        market.key,
        folder,
        tuple(folder / name for name, _ in csvs),
        tuple(r.filename for r in rows),
        written=len(staged),
        reused=len(encoded.reused[market.key]),
    )


def _same_csvs(folder: Path, present: list[Path], csvs: list[tuple[str, bytes]]) -> bool:
    if sorted(p.name for p in present) != sorted(name for name, _ in csvs):
        return False
    return all((folder / name).read_bytes() == data for name, data in csvs)


def _remove_temp_files(folder: Path) -> None:
    # Left by a write that a kill cut short (images.write_atomic's naming).
    for temp in folder.glob(f".*{TEMP_SUFFIX}"):
        temp.unlink(missing_ok=True)


def _result(
    plan: Plan, encoded: _Encoded, out_dir: Path, packages: dict[str, MarketPackage]
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
    beside it), atomically. The same files give the same zip (names sorted, fixed times);
    hidden files are left out."""
    if not folder.is_dir():
        raise OutputError(f"cannot zip {folder}: it is not a folder")
    dest = dest or folder.with_suffix(".zip")
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    temp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:12]}{TEMP_SUFFIX}")
    try:
        with zipfile.ZipFile(temp, "w") as archive:
            for path in files:
                _add(archive, path, f"{folder.name}/{path.name}")
        with temp.open("rb") as written:
            os.fsync(written.fileno())
        os.replace(temp, dest)
    except OSError as exc:
        raise OutputError(f"cannot write the zip {dest}: {exc}") from exc
    finally:
        temp.unlink(missing_ok=True)
    return dest


def _add(archive: zipfile.ZipFile, path: Path, name: str) -> None:
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    # JPEGs are compressed already: storing them is as small and much faster.
    info.compress_type = zipfile.ZIP_STORED if path.suffix == ".jpg" else zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    with path.open("rb") as source, archive.open(info, "w") as target:
        shutil.copyfileobj(source, target, 1024 * 1024)
