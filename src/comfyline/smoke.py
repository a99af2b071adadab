"""The smoke test: one command, ``count`` images of one level, a report.

``run_smoke_test`` does the work and returns a :class:`SmokeReport` (plain data);
``render_report`` turns it into a rich table and ``SmokeReport.to_json`` into the saved report.
The CLI (``comfyline smoke-test``) and ``scripts/smoke_test.py`` are thin shells over these.

When nothing answers at the default URL (no ``--comfyui``, no ``$COMFYUI_URL``), the built-in
simulator is started in-process and the run says so: its images are synthetic.

The hardware guard paces the images (:class:`~comfyline.guard.Guard`, with the sensor
:func:`~comfyline.guard.choose_sensor` picks): by the card's temperature when there is a sensor,
by the level's fixed pause (``--pause``) after each image when there is none. The report's
temperatures and VRAM are the guard's readings.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
from rich.console import Group, RenderableType
from rich.table import Table

from comfyline.adapters.comfyui import ComfyUIAdapter
from comfyline.backend import choose_backend
from comfyline.errors import ComfyError, ConfigError
from comfyline.generation import GenerationRequest, GenerationResult
from comfyline.guard import Guard, GuardEvent, Limits, Sample, choose_sensor
from comfyline.guard.sensors import Reading, Sensor, parse_system_stats
from comfyline.images import TEMP_SUFFIX, write_atomic
from comfyline.presets import get_level, params_for
from comfyline.settings import Settings

REPORT_NAME = "smoke_report.json"
DEFAULT_OUT = Path("sd/outputs/test")
PROMPT = "a lighthouse on a rocky cliff at sunset, dramatic sky, detailed, sharp focus"
NEGATIVE = "blurry, low quality, watermark, text"


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

    def to_json(self) -> dict[str, Any]:
        """The report as JSON-able data."""
        return asdict(self)


def check_output_folder(folder: Path) -> list[Path]:
    """The files of ours in ``folder`` (images, the report, temp files); :class:`ConfigError`
    when it holds anything else, so that clearing it can never delete a user's files."""
    if not folder.exists():
        return []
    if not folder.is_dir():
        raise ConfigError(f"the output path {folder} exists and is not a folder; use --out")
    ours: list[Path] = []
    foreign: list[Path] = []
    for entry in sorted(folder.iterdir()):
        is_ours = entry.is_file() and (
            entry.suffix == ".png"
            or entry.name == REPORT_NAME
            or (entry.name.startswith(".") and entry.name.endswith(TEMP_SUFFIX))
        )
        (ours if is_ours else foreign).append(entry)
    if foreign:
        names = ", ".join(e.name + ("/" if e.is_dir() else "") for e in foreign[:5])
        raise ConfigError(
            f"the output folder {folder} holds things the smoke test did not make ({names}); "
            "it clears that folder, so empty it yourself or choose another with --out"
        )
    return ours


def clear_output_folder(folder: Path) -> None:
    """Remove our own files from ``folder`` (see :func:`check_output_folder`); create it."""
    for path in check_output_folder(folder):
        path.unlink()
    folder.mkdir(parents=True, exist_ok=True)


async def run_smoke_test(
    settings: Settings,
    options: SmokeOptions,
    *,
    notify: Callable[[str], None] = lambda line: None,
    clock: Callable[[], float] = time.monotonic,
) -> SmokeReport:
    """Generate ``options.count`` images into ``options.out_dir`` and measure the run.

    Raises :class:`ComfyUnavailable` when the URL was given (``--comfyui`` or ``$COMFYUI_URL``)
    and nothing answers; with the default URL it falls back to the simulator instead;
    :class:`~comfyline.errors.GuardTripped` when the card does not cool in time.
    """
    if options.count < 1:
        raise ConfigError(f"--count must be at least 1, got {options.count}")
    level = get_level(options.level)
    params = params_for(options.level)
    pause_s = level.pause_s if options.pause_s is None else options.pause_s
    if pause_s < 0:
        raise ConfigError(f"--pause must be >= 0 seconds, got {pause_s}")
    check_output_folder(options.out_dir)
    with contextlib.ExitStack() as stack:
        backend = await choose_backend(
            settings,
            stack,
            force_sim=options.use_sim,
            sim_if_unreachable=options.sim_if_unreachable,
            notify=notify,
        )
        url, simulated = backend.url, backend.simulated
        run_settings = settings.model_copy(update={"comfyui_url": url})
        async with (
            ComfyUIAdapter(run_settings) as comfy,
            httpx.AsyncClient(timeout=settings.http_timeout_s) as http,
        ):
            stats = await comfy.check_ready()
            checkpoint = await comfy.resolve_checkpoint(options.checkpoint or settings.checkpoint)
            clear_output_folder(options.out_dir)
            first_seed = options.seed if options.seed is not None else random.randrange(2**31)
            requests = [
                GenerationRequest(
                    prompt=PROMPT,
                    negative=NEGATIVE,
                    seed=first_seed + i,
                    params=params,
                    output_dir=options.out_dir,
                    output_stem=f"smoke_{i + 1:02d}",
                    checkpoint=checkpoint,
                    filename_prefix="comfyline/smoke",
                )
                for i in range(options.count)
            ]
            for request in requests[:1]:
                await comfy.check_request(request)
            notify(
                f"Generating {options.count} {options.level} images ({params.width}x"
                f"{params.height}, {params.steps} steps) on {url} into {options.out_dir}"
            )
            choice = await choose_sensor(run_settings, url, http)

            async def free_memory() -> None:
                await comfy.free_memory(unload_models=True)

            def on_event(event: GuardEvent) -> None:
                notify(f"guard: {event.message}")

            guard = Guard(
                choice.sensor,
                Limits.from_settings(settings),
                pause_s,
                level.max_batch,
                clock=clock,
                sleep=asyncio.sleep,
                free_memory=free_memory,
                on_event=on_event,
                series_pause_s=settings.series_pause_s,
            )
            started = clock()
            results: list[GenerationResult] = []
            watcher = asyncio.create_task(guard.watch())
            try:
                async for result in comfy.generate_batch(requests, gate=guard.before_prompt):
                    results.append(result)
                    await guard.after_prompt(len(result.images))
                    notify(_progress_line(len(results), options.count, result))
            finally:
                watcher.cancel()
                await asyncio.gather(watcher, return_exceptions=True)
                await _close(choice.sensor)
            total_s = clock() - started
            after_free = None
            with contextlib.suppress(ComfyError, ValueError):
                after_free = parse_system_stats(await comfy.free_memory(unload_models=True))
    report = _report(
        url=url,
        simulated=simulated,
        stats=stats,
        level=options.level,
        checkpoint=checkpoint,
        pause_s=pause_s,
        requests=requests,
        results=results,
        total_s=total_s,
        samples=guard.samples,
        sensor=choice.sensor.name if choice.has_temperature else None,
        after_free=after_free,
        out_dir=options.out_dir,
    )
    write_atomic(
        options.out_dir / REPORT_NAME, json.dumps(report.to_json(), indent=2).encode("utf-8")
    )
    return report


async def _close(sensor: Sensor) -> None:
    """Close a sensor that holds something open (NVML)."""
    aclose = getattr(sensor, "aclose", None)
    if aclose is not None:
        await aclose()


def _progress_line(done: int, count: int, result: GenerationResult) -> str:
    if result.error is not None:
        return f"[{done}/{count}] seed {result.request.seed}: FAILED {result.error}"
    files = ", ".join(image.path.name for image in result.images)
    return f"[{done}/{count}] seed {result.request.seed}: {files} ({result.seconds:.2f} s)"


def _report(
    *,
    url: str,
    simulated: bool,
    stats: dict[str, Any],
    level: str,
    checkpoint: str,
    pause_s: float,
    requests: list[GenerationRequest],
    results: list[GenerationResult],
    total_s: float,
    samples: list[Sample],
    sensor: str | None,
    after_free: Reading | None,
    out_dir: Path,
) -> SmokeReport:
    by_id = {id(r.request): r for r in results}
    images = tuple(_image(i, req, by_id.get(id(req))) for i, req in enumerate(requests, 1))
    succeeded = sum(1 for image in images if image.ok)
    devices = stats.get("devices") or [{}]
    temps = [s.temperature_c for s in samples if s.temperature_c is not None]
    vram = [s.vram_used_bytes for s in samples if s.vram_used_bytes is not None]
    totals = [s.vram_total_bytes for s in samples if s.vram_total_bytes is not None]
    params = requests[0].params
    notes = ["simulated server: images are synthetic"] if simulated else []
    notes.append(
        f"paced by the card's temperature ({sensor} sensor)"
        if sensor is not None
        else f"no temperature sensor: a fixed pause of {pause_s:g} s after each image"
    )
    return SmokeReport(
        server=url,
        simulated=simulated,
        comfyui_version=(stats.get("system") or {}).get("comfyui_version"),
        device=devices[0].get("name") if devices else None,
        level=level,
        checkpoint=checkpoint,
        width=params.width,
        height=params.height,
        steps=params.steps,
        cfg=params.cfg,
        sampler=params.sampler,
        pause_s=pause_s,
        requested=len(requests),
        succeeded=succeeded,
        failed=len(requests) - succeeded,
        total_s=round(total_s, 3),
        mean_s_per_image=round(total_s / len(requests), 3),
        images=images,
        gpu_temp_min_c=min(temps) if temps else None,
        gpu_temp_max_c=max(temps) if temps else None,
        vram_used_max_bytes=max(vram) if vram else None,
        vram_total_bytes=totals[0] if totals else None,
        vram_used_after_free_bytes=after_free.vram_used_bytes if after_free else None,
        output_dir=str(out_dir),
        notes=tuple(notes),
    )


def _image(index: int, request: GenerationRequest, result: GenerationResult | None) -> SmokeImage:
    if result is None:
        return SmokeImage(index, request.seed, None, 0.0, False, "not run")
    if result.error is not None:
        return SmokeImage(
            index, request.seed, None, round(result.seconds, 3), False, str(result.error)
        )
    files = ", ".join(image.path.name for image in result.images)
    return SmokeImage(index, request.seed, files, round(result.seconds, 3), True)


def _gib(value: int | None) -> str:
    return "n/a" if value is None else f"{value / 1024**3:.2f} GiB"


def _rows(report: SmokeReport) -> Iterator[tuple[str, str]]:
    yield "server", report.server + (" (simulator)" if report.simulated else "")
    yield "ComfyUI / device", f"{report.comfyui_version or '?'} / {report.device or '?'}"
    yield (
        "level",
        (
            f"{report.level}: {report.width}x{report.height}, {report.steps} steps, CFG "
            f"{report.cfg:g}, {report.sampler}, pause {report.pause_s:g} s"
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
