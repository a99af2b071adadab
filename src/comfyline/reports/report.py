"""``generation_report.json``: its model, how it is built from the ledger, and its atomic writer.

The report is the order's outcome in one file: what was asked (the order and its file), with what
(versions, backend, level, parameters), what came of each slot (file, sha256, seed, time,
attempts, the card's temperature at that image), the totals, every error, the guard's events and
the sensor readings over time. Its schema is documented in ``docs/REPORT_SCHEMA.md``; a change that
breaks a reader raises ``SCHEMA_VERSION``.

The model is plain pydantic, strict (``extra="forbid"``) and frozen, so ``read_report`` of a file
we wrote gives back the same object.
"""

from __future__ import annotations

import bisect
import json
import os
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError

from comfyline.errors import OutputError
from comfyline.images import write_atomic
from comfyline.ledger import LedgerEvent, Reading, SlotRecord, SlotState
from comfyline.quality import QcSettings
from comfyline.reroll import qc_replacements

SCHEMA_VERSION = 1
REPORT_FILE = "generation_report.json"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class ReportOrder(_Model):
    """The order as it was run: identity and the order file itself."""

    id: str
    title: str
    type: str
    file: str = Field(description="the order file's path, as given to the runner")
    sha256: str = Field(description="sha256 of the order file's bytes")
    content: str = Field(description="the order file's text, so the report is self-contained")
    state: str = Field(description="the order's life-cycle state when the report was written")


class ReportBackend(_Model):
    """The ComfyUI server the images came from."""

    url: str
    simulated: bool = Field(description="true when the images came from comfyline's simulator")
    comfyui_version: str | None = Field(description="system.comfyui_version of /system_stats")
    device: str | None = Field(default=None, description="the first device of /system_stats")


class ReportBackendUse(_Model):
    """One server of the order's runs: what it is, what it made, how hot, how healthy."""

    name: str = Field(description="its name in the run (its URL unless backends.yaml names it)")
    url: str
    simulated: bool
    comfyui_version: str | None
    device: str | None
    tags: list[str] = Field(default_factory=list)
    images: int = Field(description="images of this order it made")
    seconds_per_image: float | None = Field(description="its server time per image")
    wall_seconds_per_image: float | None = Field(
        description="our clock per image, POST to checked result (queueing included)"
    )
    max_temperature_c: float | None
    last_temperature_c: float | None
    lost: int = Field(description="times it was lost during a run (its slots moved on)")
    stopped_on_heat: int = Field(description="times its guard stopped it (card too hot)")
    collected: int = Field(description="slots collected from its history after it came back")
    left_out: str | None = Field(
        description="why the last run left it out of this order (pre-flight), if it did"
    )


class ReportImage(_Model):
    """One image written. A slot with a batch of n gives n entries with the same ``index``."""

    index: int = Field(description="the slot's index in the order's plan, from 0")
    batch_index: int = Field(default=0, description="position in the slot's batch, from 0")
    file: str = Field(description="path relative to the report's folder, with '/' separators")
    sha256: str
    prompt: str
    negative: str
    seed: int
    parameters: dict[str, Any]
    seconds: float | None = Field(description="server time of the slot's prompt")
    attempts: int = Field(description="how many times the slot was sent (1: first time)")
    prompt_id: str | None
    finished_at: datetime = Field(description="when the slot was recorded done (UTC)")
    temperature_c: float | None = Field(description="the latest reading at or before this image")
    power_w: float | None
    vram_free_mb: float | None
    width: int | None = Field(default=None, description="the file's real pixel width")
    height: int | None = Field(default=None, description="the file's real pixel height")
    title: str | None = Field(default=None, description="the image's sale title")
    keywords: list[str] = Field(default_factory=list, description="the image's sale keywords")
    backend: str | None = Field(default=None, description="the server that made it")
    checkpoint: str | None = Field(default=None, description="the checkpoint it was made with")
    wall_seconds: float | None = Field(
        default=None, description="our own clock from the POST to the checked result"
    )
    qc_flags: list[str] = Field(
        default_factory=list, description="what the quality checks found (empty: it passed)"
    )
    duplicate_of: str | None = Field(default=None, description="the earlier near-duplicate")
    review: str | None = Field(default=None, description="approved, rejected, or null")
    simulated: bool | None = Field(
        default=None,
        description="true: made by comfyline's simulator (synthetic); null: not recorded",
    )
    history: list[dict[str, Any]] = Field(
        default_factory=list,
        description="earlier images of the slot, set aside (re-roll, QC replacement, "
        "simulator), oldest first",
    )


class ReportRevision(_Model):
    """An earlier revision of the order, kept (see docs/ORDER_CONTRACT.md, "Edits")."""

    revision: int
    reason: str = Field(description="what changed, e.g. 'prompt changed'")
    folder: str = Field(description="its images' folder, relative to the report's")
    images: int = Field(description="how many images it made")
    archive: str = Field(description="its ledger and report, relative to the report's folder")


class ReportError(_Model):
    """Why a slot failed (its last attempt)."""

    index: int
    type: str = Field(description="the error's class, e.g. OutOfMemory, ExecutionFailed")
    message: str
    node: str | None = Field(description="the id of the node that failed, when known")
    attempts: int
    prompt_id: str | None


class ReportGuardEvent(_Model):
    """Something the hardware guard did: a hold, a memory free, a step-down after an OOM."""

    time: datetime
    elapsed_s: float = Field(description="seconds since the run's first event")
    kind: str = Field(description="hold, free, step_down, cleanup, stop, ... (guard.<kind>)")
    index: int | None = Field(description="the slot it happened at, if any")
    # "from"/"to" in the JSON; named otherwise here because ``from`` is a Python keyword.
    step_from: str | None = Field(
        default=None,
        validation_alias=AliasChoices("from", "step_from"),
        serialization_alias="from",
        description="step_down: the setting before",
    )
    step_to: str | None = Field(
        default=None,
        validation_alias=AliasChoices("to", "step_to"),
        serialization_alias="to",
        description="step_down: the setting after",
    )
    detail: dict[str, Any] = Field(default_factory=dict)


class ReportReading(_Model):
    """One sensor reading; every value is null when that sensor is missing."""

    time: datetime
    elapsed_s: float
    temperature_c: float | None
    power_w: float | None
    vram_free_mb: float | None
    vram_total_mb: float | None
    images_done: int
    note: str = ""


class ReportTotals(_Model):
    """Counts and times over the whole order.

    ``wall_seconds`` is the runner's own time over all its runs (resumed runs add up);
    ``generation_seconds`` the servers' time summed over succeeded slots.
    """

    requested: int = Field(description="images the order asked for")
    succeeded: int = Field(description="images written and checked")
    failed: int = Field(description="slots whose last attempt failed")
    missing: int = Field(description="slots neither done nor failed (the run was stopped)")
    wall_seconds: float
    generation_seconds: float
    mean_seconds_per_image: float | None = Field(description="generation_seconds / succeeded")
    images_per_minute: float | None = Field(description="succeeded / wall_seconds * 60")


class ReportQc(_Model):
    """The order's replacements of images that failed the quality checks (``qc.replace``)."""

    replace: bool = Field(description="whether the order replaces flagged images (qc.replace)")
    allowed: int = Field(description="replacements the order may make in all (qc.max_extra)")
    per_image: int = Field(description="replacements one image may have (qc.max_per_image)")
    replaced: int = Field(description="replacements made, over all runs")
    flagged: int = Field(description="images written that still fail the checks")
    budget_spent: bool = Field(
        description="true: a flagged image was left because the order's replacements ran out"
    )


class GenerationReport(_Model):
    """The whole ``generation_report.json``."""

    schema_version: int = SCHEMA_VERSION
    generated_at: datetime
    comfyline_version: str
    order: ReportOrder
    backend: ReportBackend
    backends: list[ReportBackendUse] = Field(
        default_factory=list, description="every server of the order's runs"
    )
    level: str = Field(description="the quality level the order asked for")
    parameters: dict[str, Any] = Field(description="the effective generation parameters")
    sale: dict[str, Any] | None = Field(description="the order's sale metadata, as written")
    images: list[ReportImage]
    totals: ReportTotals
    errors: list[ReportError]
    guard_events: list[ReportGuardEvent]
    readings: list[ReportReading]
    revision: int = Field(default=1, description="the order's current revision (1, 2, ...)")
    revisions: list[ReportRevision] = Field(
        default_factory=list, description="the earlier revisions, kept, oldest first"
    )
    qc: ReportQc | None = Field(
        default=None, description="replacements of images that failed the quality checks"
    )


def build_report(
    *,
    order: ReportOrder,
    backend: ReportBackend,
    comfyline_version: str,
    level: str,
    parameters: dict[str, Any],
    sale: dict[str, Any] | None,
    slots: Sequence[SlotRecord],
    events: Sequence[LedgerEvent],
    readings: Sequence[Reading],
    requested: int,
    wall_seconds: float,
    output_dir: Path,
    report_dir: Path,
    now: datetime | None = None,
    backend_events: Sequence[LedgerEvent] = (),
    revision: int = 1,
    revisions: Sequence[ReportRevision] = (),
    qc: QcSettings | None = None,
) -> GenerationReport:
    """Assemble the report from the ledger's slots, events and readings.

    Slot files are relative to ``output_dir`` (as the ledger holds them); the report names them
    relative to ``report_dir``. ``requested`` is the number of images the order asked for.
    ``backend_events`` are the ``run.start`` and ``backend.*`` events, for ``backends``;
    ``qc`` the order's quality-check settings, for ``qc``.
    """
    start = _start_time(slots, events, readings)
    times = [r.at for r in readings]
    images = [
        img
        for s in slots
        if s.state is SlotState.DONE
        for img in _images(s, readings, times, output_dir, report_dir)
    ]
    done = [s for s in slots if s.state is SlotState.DONE]
    failed = [s for s in slots if s.state is SlotState.FAILED]
    return GenerationReport(
        generated_at=now or datetime.now(UTC),
        comfyline_version=comfyline_version,
        order=order,
        backend=backend,
        backends=_backends(backend, slots, readings, backend_events),
        level=level,
        parameters=parameters,
        sale=sale,
        images=images,
        totals=_totals(requested, images, done, len(failed), wall_seconds),
        errors=[_error(s) for s in failed],
        guard_events=[_guard_event(e, start) for e in events if e.kind.startswith("guard.")],
        readings=[_reading(r, start) for r in readings],
        revision=revision,
        revisions=list(revisions),
        qc=_qc(slots, qc) if qc is not None else None,
    )


def _qc(slots: Sequence[SlotRecord], settings: QcSettings) -> ReportQc:
    standing = qc_replacements(slots, settings)
    return ReportQc(
        replace=settings.replace,
        allowed=standing.allowed,
        per_image=standing.per_image,
        replaced=standing.replaced,
        flagged=standing.flagged,
        budget_spent=standing.exhausted,
    )


def write_report(path: Path, report: GenerationReport) -> None:
    """Write ``report`` to ``path`` atomically: a reader sees the old file or the new, whole.

    Raises :class:`OutputError` when the file cannot be written.
    """
    text = report.model_dump_json(indent=2, by_alias=True) + "\n"
    try:
        write_atomic(Path(path), text.encode("utf-8"))
    except OSError as exc:
        raise OutputError(f"cannot write the report {path}: {exc}") from exc


def read_report(path: Path) -> GenerationReport:
    """Read a ``generation_report.json``; :class:`OutputError` if it is missing or malformed."""
    try:
        return GenerationReport.model_validate_json(Path(path).read_bytes())
    except (OSError, ValidationError) as exc:
        raise OutputError(f"cannot read the report {path}: {exc}") from exc


def _utc(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC)


def _start_time(
    slots: Sequence[SlotRecord], events: Sequence[LedgerEvent], readings: Sequence[Reading]
) -> float:
    times = [e.at for e in events[:1]] + [r.at for r in readings[:1]]
    times += [s.updated for s in slots if s.state is not SlotState.PLANNED]
    return min(times, default=0.0)


def _reading_at(readings: Sequence[Reading], times: Sequence[float], t: float) -> Reading | None:
    """The latest reading at or before ``t`` (``times``: the readings' times, in order)."""
    i = bisect.bisect_right(times, t)
    return readings[i - 1] if i else None


def _images(
    slot: SlotRecord,
    readings: Sequence[Reading],
    times: Sequence[float],
    output_dir: Path,
    report_dir: Path,
) -> list[ReportImage]:
    reading = _reading_at(readings, times, slot.updated)
    return [
        ReportImage(
            index=slot.index,
            batch_index=i,
            file=Path(os.path.relpath(output_dir / f, report_dir)).as_posix(),
            sha256=sha,
            prompt=slot.prompt,
            negative=slot.negative,
            seed=slot.seed,
            parameters=slot.made_with or slot.params,
            seconds=slot.seconds,
            attempts=slot.attempt,
            prompt_id=slot.prompt_id,
            finished_at=_utc(slot.updated),
            temperature_c=reading.temperature_c if reading else None,
            power_w=reading.power_w if reading else None,
            vram_free_mb=reading.vram_free_mb if reading else None,
            width=slot.sizes[i][0] if i < len(slot.sizes) else None,
            height=slot.sizes[i][1] if i < len(slot.sizes) else None,
            title=slot.title,
            keywords=list(slot.keywords),
            backend=slot.backend,
            checkpoint=slot.checkpoint,
            wall_seconds=slot.wall_seconds,
            qc_flags=list(slot.qc[i].get("flags", ())) if i < len(slot.qc) else [],
            duplicate_of=slot.qc[i].get("duplicate_of") if i < len(slot.qc) else None,
            review=slot.review,
            simulated=slot.simulated,
            history=[dict(h) for h in slot.history],
        )
        for i, (f, sha) in enumerate(zip(slot.files, slot.sha256s, strict=True))
    ]


def _totals(
    requested: int,
    images: Sequence[ReportImage],
    done: Sequence[SlotRecord],
    failed: int,
    wall_seconds: float,
) -> ReportTotals:
    succeeded = len(images)
    generation = sum(s.seconds or 0.0 for s in done)
    return ReportTotals(
        requested=requested,
        succeeded=succeeded,
        failed=failed,
        missing=max(requested - succeeded - failed, 0),
        wall_seconds=wall_seconds,
        generation_seconds=generation,
        mean_seconds_per_image=generation / succeeded if succeeded else None,
        images_per_minute=succeeded / wall_seconds * 60 if wall_seconds > 0 else None,
    )


def _backends(
    first: ReportBackend,
    slots: Sequence[SlotRecord],
    readings: Sequence[Reading],
    events: Sequence[LedgerEvent],
) -> list[ReportBackendUse]:
    """Each server the runs knew (``run.start`` lists them; older ledgers: the slots' and the
    first backend), with what it made, its temperatures and its health events."""
    known: dict[str, dict[str, Any]] = {}
    for event in events:
        if event.kind == "run.start":
            for entry in event.detail.get("backends") or ():
                known[str(entry.get("name"))] = dict(entry)
    for name in dict.fromkeys(s.backend for s in slots if s.backend):
        known.setdefault(name, {"name": name, "url": name if "://" in name else first.url})
    if not known and first.url:
        known[first.url] = {"name": first.url, **first.model_dump()}
    last_start = max((i for i, e in enumerate(events) if e.kind == "run.start"), default=-1)
    return [
        _backend_use(name, entry, slots, readings, events, last_start)
        for name, entry in known.items()
    ]


def _backend_use(
    name: str,
    entry: dict[str, Any],
    slots: Sequence[SlotRecord],
    readings: Sequence[Reading],
    events: Sequence[LedgerEvent],
    last_start: int,
) -> ReportBackendUse:
    done = [s for s in slots if s.state is SlotState.DONE and s.backend == name]
    images = sum(len(s.files) for s in done)
    temps = [r.temperature_c for r in readings if r.note == name and r.temperature_c is not None]
    mine = [e for e in events if e.detail.get("backend") == name]
    left_out = [e for e in events[last_start + 1 :] if e.kind == "backend.left_out"]
    left_out = [e for e in left_out if e.detail.get("backend") == name]
    walls = [s.wall_seconds for s in done if s.wall_seconds is not None]
    return ReportBackendUse(
        name=name,
        url=str(entry.get("url") or name),
        simulated=bool(entry.get("simulated", False)),
        comfyui_version=entry.get("comfyui_version"),
        device=entry.get("device"),
        tags=[str(t) for t in entry.get("tags") or ()],
        images=images,
        seconds_per_image=sum(s.seconds or 0.0 for s in done) / images if images else None,
        wall_seconds_per_image=sum(walls) / images if images and walls else None,
        max_temperature_c=max(temps) if temps else None,
        last_temperature_c=temps[-1] if temps else None,
        lost=sum(1 for e in mine if e.kind == "backend.lost"),
        stopped_on_heat=sum(1 for e in mine if e.kind == "backend.stopped_on_heat"),
        collected=sum(1 for e in mine if e.kind == "backend.collected"),
        left_out=str(left_out[-1].detail.get("reason")) if left_out else None,
    )


def _error(slot: SlotRecord) -> ReportError:
    err = slot.error
    return ReportError(
        index=slot.index,
        type=err.type if err else "unknown",
        message=err.message if err else "no error recorded",
        node=err.node if err else None,
        attempts=slot.attempt,
        prompt_id=slot.prompt_id,
    )


def _guard_event(event: LedgerEvent, start: float) -> ReportGuardEvent:
    detail = dict(event.detail)
    step_from, step_to = detail.pop("from", None), detail.pop("to", None)
    return ReportGuardEvent(
        time=_utc(event.at),
        elapsed_s=round(event.at - start, 3),
        kind=event.kind.removeprefix("guard."),
        index=event.index,
        step_from=None if step_from is None else str(step_from),
        step_to=None if step_to is None else str(step_to),
        detail=detail,
    )


def _reading(reading: Reading, start: float) -> ReportReading:
    return ReportReading(
        time=_utc(reading.at),
        elapsed_s=round(reading.at - start, 3),
        temperature_c=reading.temperature_c,
        power_w=reading.power_w,
        vram_free_mb=reading.vram_free_mb,
        vram_total_mb=reading.vram_total_mb,
        images_done=reading.images_done,
        note=reading.note,
    )


def report_json(report: GenerationReport) -> dict[str, Any]:
    """The report as the JSON object written to disk (aliases applied)."""
    data: dict[str, Any] = json.loads(report.model_dump_json(by_alias=True))
    return data
