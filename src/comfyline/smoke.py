"""The smoke test: one command, ``count`` images of one level, a report.

It is a synthetic order run through the same pipeline as every order (one orchestrator): its
``project.yaml`` is made in a temporary folder and read once, its images come out as
``smoke_01.png``... with their parameters inside, and the pipeline's ledger, guard, report,
contact sheet and chart all apply. ``run_smoke_test`` returns a :class:`SmokeReport` (plain
data) built from the pipeline's report; ``render_report`` turns it into a rich table and
``SmokeReport.to_json`` into ``smoke_report.json``. The CLI (``comfyline smoke-test``) and
``scripts/smoke_test.py`` are thin shells over these.

Each run starts afresh: the files the previous smoke test recorded in its ledger are removed,
and nothing else in the folder is touched (a user's own files stay where they are).

When nothing answers at the default URL (no ``--comfyui``, no ``$COMFYUI_URL``), the built-in
simulator is started in-process and the run says so: its images are synthetic.
"""

from __future__ import annotations

import json
import random
import shutil
import sqlite3
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console, Group, RenderableType
from rich.table import Table

from comfyline import pipeline
from comfyline.errors import ConfigError, LedgerError
from comfyline.images import write_atomic
from comfyline.ledger import LEDGER_DIR, ledger_path, read_status
from comfyline.orders import load
from comfyline.pipeline import AFTER_FREE
from comfyline.presets import get_level, params_for
from comfyline.reports.charts import CHART_FILE
from comfyline.reports.report import REPORT_FILE, GenerationReport
from comfyline.settings import Settings

REPORT_NAME = "smoke_report.json"
DEFAULT_OUT = Path("sd/outputs/test")
PROMPT = "a lighthouse on a rocky cliff at sunset, dramatic sky, detailed, sharp focus"
NEGATIVE = "blurry, low quality, watermark, text"
ORDER_ID = "smoke-test"


@dataclass(frozen=True)
class SmokeOptions:
    """What to run: how many images, at which level, where, and against what."""

    count: int = 10
    level: str = "standard"
    out_dir: Path = DEFAULT_OUT
    pause_s: float | None = None
    """Pause after each image when there is no temperature sensor; None: the level's."""
    checkpoint: str | None = None
    use_sim: bool = False
    """Force the built-in simulator."""
    seed: int | None = None
    """First seed (the others follow it); None: a random one."""
    sim_if_unreachable: bool | None = None
    """Start the simulator when nothing answers; None: only when the URL is the default one
    (not given on the command line or in ``$COMFYUI_URL``)."""


@dataclass(frozen=True)
class SmokeImage:
    """One requested image and how it went."""

    index: int
    seed: int
    file: str | None
    seconds: float
    ok: bool
    error: str | None = None


@dataclass(frozen=True)
class SmokeReport:
    """Everything the smoke test measured. ``to_json`` is the saved form."""

    server: str
    simulated: bool
    comfyui_version: str | None
    device: str | None
    level: str
    checkpoint: str
    width: int
    height: int
    steps: int
    cfg: float
    sampler: str
    pause_s: float
    requested: int
    succeeded: int
    failed: int
    total_s: float
    mean_s_per_image: float
    images: tuple[SmokeImage, ...]
    gpu_temp_min_c: float | None = None
    gpu_temp_max_c: float | None = None
    vram_used_max_bytes: int | None = None
    vram_total_bytes: int | None = None
    vram_used_after_free_bytes: int | None = None
    output_dir: str = ""
    notes: tuple[str, ...] = field(default=())
    paused: bool = False
    """True when a fixed pause paced the images (no temperature sensor)."""

    def to_json(self) -> dict[str, Any]:
        """The report as JSON-able data."""
        return asdict(self)


async def run_smoke_test(
    settings: Settings,
    options: SmokeOptions,
    *,
    console: Console | None = None,
) -> SmokeReport:
    """Generate ``options.count`` images into ``options.out_dir`` and measure the run.

    Raises :class:`ComfyUnavailable` when the URL was given (``--comfyui`` or ``$COMFYUI_URL``)
    and nothing answers; with the default URL it falls back to the simulator instead;
    :class:`~comfyline.errors.GuardTripped` when the card does not cool in time.
    """
    if options.count < 1:
        raise ConfigError(f"--count must be at least 1, got {options.count}")
    level = get_level(options.level)
    pause_s = level.pause_s if options.pause_s is None else options.pause_s
    if pause_s < 0:
        raise ConfigError(f"--pause must be >= 0 seconds, got {pause_s}")
    out = options.out_dir
    clear_previous_run(out)
    first_seed = options.seed if options.seed is not None else random.randrange(2**31)
    run_settings = settings.model_copy(update={"pause_s": pause_s})
    with tempfile.TemporaryDirectory(prefix="comfyline-smoke-") as folder:
        loaded = load(_write_order(Path(folder), options, first_seed))
    report = await pipeline.generate(
        loaded,
        settings=run_settings,
        sim=options.use_sim,
        sim_if_unreachable=options.sim_if_unreachable,
        output=out,
        console=console,
        resume_hint="comfyline smoke-test (it starts afresh)",
    )
    smoke = _report(report, options, pause_s)
    write_atomic(out / REPORT_NAME, json.dumps(smoke.to_json(), indent=2).encode("utf-8"))
    return smoke


def clear_previous_run(folder: Path) -> None:
    """Remove what the previous smoke test in ``folder`` made, as its ledger recorded it (its
    images, report, sheet and chart); never anything else. :class:`ConfigError` when the
    folder holds another order's ledger, or is not a folder."""
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"the output path {folder} exists and is not a folder; use --out")
    state = folder / LEDGER_DIR
    if not state.exists():
        return
    if _ledger_order(ledger_path(folder)) != ORDER_ID:
        raise ConfigError(
            f"{folder} is the output folder of an order (it holds {state}); the smoke test "
            "starts afresh each time, so give it a folder of its own with --out"
        )
    for name in _recorded_files(ledger_path(folder)):
        target = (folder / name).resolve()
        if folder.resolve() in target.parents:
            target.unlink(missing_ok=True)
    for name in (REPORT_NAME, REPORT_FILE, CHART_FILE):
        (folder / name).unlink(missing_ok=True)
    for sheet in folder.glob("contact_sheet*.png"):
        sheet.unlink()
    shutil.rmtree(state)


def _ledger_order(db: Path) -> str | None:
    try:
        return read_status(db).order.order_id
    except LedgerError:
        return None


def _recorded_files(db: Path) -> list[str]:
    if not db.exists():
        return []
    try:
        conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
        try:
            rows = conn.execute("SELECT files FROM slot").fetchall()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise ConfigError(
            f"cannot read the previous smoke test's ledger {db} ({exc}); delete {db.parent} "
            "to start afresh"
        ) from exc
    return [name for (files,) in rows for name in json.loads(files)]


def _write_order(folder: Path, options: SmokeOptions, first_seed: int) -> Path:
    """The smoke test as an order: one prompt per image, seeds ``first_seed``, +1, ..."""
    order: dict[str, Any] = {
        "id": ORDER_ID,
        "type": "list",
        "title": "comfyline smoke test",
        "quality": options.level,
        "count": 1,
        "negative": NEGATIVE,
        "prompts": [{"prompt": PROMPT, "seed": first_seed + i} for i in range(options.count)],
        "output": {"naming": "smoke_{number:02d}"},
        # One prompt on purpose: its images look alike, so near-duplicates say nothing here.
        "qc": {"duplicate_distance": None},
    }
    if options.checkpoint:
        order["checkpoint"] = options.checkpoint
    path = folder / ORDER_ID / "project.yaml"
    write_atomic(path, yaml.safe_dump(order, sort_keys=False, allow_unicode=True).encode())
    return path


def _report(report: GenerationReport, options: SmokeOptions, pause_s: float) -> SmokeReport:
    params = params_for(options.level)
    by_index = {image.index: image for image in report.images}
    errors = {error.index: error for error in report.errors}
    images = []
    for i in range(options.count):
        seed = (options.seed or 0) + i
        image, error = by_index.get(i), errors.get(i)
        if image is not None:
            name, seconds = Path(image.file).name, image.seconds or 0.0
            images.append(SmokeImage(i + 1, image.seed, name, seconds, True))
        else:
            why = error.message if error else "not run"
            images.append(SmokeImage(i + 1, seed, None, 0.0, False, why))
    readings = [r for r in report.readings if r.note != AFTER_FREE]
    temps = [r.temperature_c for r in readings if r.temperature_c is not None]
    used = [
        int((r.vram_total_mb - r.vram_free_mb) * 2**20)
        for r in readings
        if r.vram_total_mb is not None and r.vram_free_mb is not None
    ]
    totals = [int(r.vram_total_mb * 2**20) for r in readings if r.vram_total_mb is not None]
    freed = [
        int((r.vram_total_mb - r.vram_free_mb) * 2**20)
        for r in report.readings
        if r.note == AFTER_FREE and r.vram_total_mb is not None and r.vram_free_mb is not None
    ]
    succeeded = sum(1 for image in images if image.ok)
    paused = not temps
    notes = ["simulated server: images are synthetic"] if report.backend.simulated else []
    notes.append(
        "paced by the card's temperature"
        if not paused
        else f"no temperature sensor: a fixed pause of {pause_s:g} s after each image"
    )
    total_s = report.totals.wall_seconds
    return SmokeReport(
        server=report.backend.url,
        simulated=report.backend.simulated,
        comfyui_version=report.backend.comfyui_version,
        device=report.backend.device,
        level=options.level,
        checkpoint=str(report.parameters.get("checkpoint") or ""),
        width=params.width,
        height=params.height,
        steps=params.steps,
        cfg=params.cfg,
        sampler=params.sampler,
        pause_s=pause_s if paused else 0.0,
        requested=options.count,
        succeeded=succeeded,
        failed=options.count - succeeded,
        total_s=round(total_s, 3),
        mean_s_per_image=round(total_s / options.count, 3),
        images=tuple(images),
        gpu_temp_min_c=min(temps) if temps else None,
        gpu_temp_max_c=max(temps) if temps else None,
        vram_used_max_bytes=max(used) if used else None,
        vram_total_bytes=totals[0] if totals else None,
        vram_used_after_free_bytes=freed[-1] if freed else None,
        output_dir=str(options.out_dir),
        notes=tuple(notes),
        paused=paused,
    )


def _gib(value: int | None) -> str:
    return "n/a" if value is None else f"{value / 1024**3:.2f} GiB"


def _rows(report: SmokeReport) -> Iterator[tuple[str, str]]:
    yield "server", report.server + (" (simulator)" if report.simulated else "")
    yield "ComfyUI / device", f"{report.comfyui_version or '?'} / {report.device or '?'}"
    yield (
        "level",
        (
            f"{report.level}: {report.width}x{report.height}, {report.steps} steps, CFG "
            f"{report.cfg:g}, {report.sampler}"
            + (f", pause {report.pause_s:g} s" if report.paused else ", paced by temperature")
        ),
    )
    yield "checkpoint", report.checkpoint
    yield (
        "requested / succeeded / failed",
        (f"{report.requested} / {report.succeeded} / {report.failed}"),
    )
    yield "total time", f"{report.total_s:.2f} s"
    yield "mean per image", f"{report.mean_s_per_image:.2f} s"
    temps = (
        "n/a (the server reports none)"
        if report.gpu_temp_max_c is None
        else f"{report.gpu_temp_min_c:.0f}-{report.gpu_temp_max_c:.0f} °C"
    )
    yield "GPU temperature", temps
    yield (
        "VRAM used (max / total)",
        (f"{_gib(report.vram_used_max_bytes)} / {_gib(report.vram_total_bytes)}"),
    )
    yield "VRAM used after /free", _gib(report.vram_used_after_free_bytes)


def render_report(report: SmokeReport) -> RenderableType:
    """The report as rich tables: the summary, then one row per image."""
    summary = Table(title="Smoke test", show_header=False, title_justify="left")
    summary.add_column("what", style="bold")
    summary.add_column("value")
    for name, value in _rows(report):
        summary.add_row(name, value)
    per_image = Table(title="Images", title_justify="left")
    for column in ("#", "file", "seed", "seconds", "result"):
        per_image.add_column(column, justify="right" if column in ("#", "seconds") else "left")
    for image in report.images:
        per_image.add_row(
            str(image.index),
            image.file or "-",
            str(image.seed),
            f"{image.seconds:.2f}",
            "ok" if image.ok else f"[red]{image.error}[/]",
        )
    return Group(summary, per_image)
