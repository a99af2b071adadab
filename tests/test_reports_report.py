"""generation_report.json built from a real ledger, written atomically and read back."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from comfyline.errors import OutOfMemory, OutputError
from comfyline.ledger import Ledger, ledger_path
from comfyline.reports.report import (
    SCHEMA_VERSION,
    GenerationReport,
    ReportBackend,
    ReportOrder,
    build_report,
    read_report,
    write_report,
)


@dataclass(frozen=True)
class Planned:
    index: int
    key: str
    prompt: str
    seed: int
    negative: str = "blurry"
    params: dict[str, Any] = field(default_factory=lambda: {"steps": 8, "cfg": 5.0})


class Clock:
    """A hand-driven clock: each call returns the current time, ``advance`` moves it."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def run(tmp_path: Path) -> Iterator[tuple[Ledger, Clock, Path]]:
    """A ledger after a small run: slots 0, 1 done, 2 failed (OOM), 3 never sent."""
    clock, out = Clock(), tmp_path / "out"
    with Ledger.open(ledger_path(out), "foxes", "fp", clock=clock) as led:
        led.ensure_slots(Planned(i, f"k{i}", f"fox {i}", 100 + i) for i in range(4))
        led.record_reading(temperature_c=60.0, power_w=150.0, vram_free_mb=5000, vram_total_mb=8192)
        for i in (0, 1):
            clock.advance(10)
            led.mark_submitted(i, f"pid{i}", 1)
            clock.advance(3)
            led.mark_done(i, [f"images/fox_{i:04d}.png"], [f"{i:064x}"], 3.0)
            clock.advance(1)
            led.record_reading(temperature_c=70.0 + i, power_w=200.0, vram_free_mb=4000)
        led.record_event("guard.hold", detail={"temperature_c": 78.5})
        led.mark_submitted(2, "pid2", 1)
        led.mark_failed(
            2,
            OutOfMemory(
                prompt_id="pid2",
                node_id="3",
                node_type="KSampler",
                exception_type="torch.OutOfMemoryError",
                exception_message="CUDA out of memory",
            ),
        )
        led.record_event("guard.step_down", index=2, detail={"from": "high", "to": "standard"})
        yield led, clock, out


def make_report(led: Ledger, out: Path, report_dir: Path) -> GenerationReport:
    return build_report(
        order=ReportOrder(
            id="foxes",
            title="Foxes",
            type="single",
            file="automation/orders/foxes/project.yaml",
            sha256="ab" * 32,
            content="id: foxes\n",
            state=led.order().state.value,
        ),
        backend=ReportBackend(
            url="http://127.0.0.1:8188", simulated=True, comfyui_version="0.3.64"
        ),
        comfyline_version="0.1.0",
        level="standard",
        parameters={"width": 320, "height": 320, "steps": 8, "cfg": 5.0},
        sale={"title": "Foxes", "keywords": ["fox", "snow"]},
        slots=led.slots(),
        events=led.events(),
        readings=led.readings(),
        requested=4,
        wall_seconds=60.0,
        output_dir=out,
        report_dir=report_dir,
        now=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
    )


def test_images_totals_and_errors(run: tuple[Ledger, Clock, Path]) -> None:
    led, _, out = run
    report = make_report(led, out, out)
    assert report.schema_version == SCHEMA_VERSION
    assert [(i.index, i.file, i.seed, i.attempts) for i in report.images] == [
        (0, "images/fox_0000.png", 100, 1),
        (1, "images/fox_0001.png", 101, 1),
    ]
    # each image gets the latest reading at or before it was done
    assert [i.temperature_c for i in report.images] == [60.0, 70.0]
    totals = report.totals
    assert (totals.requested, totals.succeeded, totals.failed, totals.missing) == (4, 2, 1, 1)
    assert (totals.generation_seconds, totals.mean_seconds_per_image) == (6.0, 3.0)
    assert totals.images_per_minute == 2.0
    [error] = report.errors
    assert (error.index, error.type, error.node, error.attempts) == (2, "OutOfMemory", "3", 1)
    assert "CUDA out of memory" in error.message


def test_guard_events_and_readings(run: tuple[Ledger, Clock, Path]) -> None:
    led, _, out = run
    report = make_report(led, out, out)
    kinds = [(e.kind, e.step_from, e.step_to, e.detail) for e in report.guard_events]
    assert kinds == [
        ("hold", None, None, {"temperature_c": 78.5}),
        ("step_down", "high", "standard", {}),
    ]
    assert [(r.elapsed_s, r.temperature_c, r.images_done) for r in report.readings] == [
        (0.0, 60.0, 0),
        (14.0, 70.0, 1),
        (28.0, 71.0, 2),
    ]


def test_written_json_round_trips(run: tuple[Ledger, Clock, Path], tmp_path: Path) -> None:
    led, _, out = run
    report = make_report(led, out, out)
    path = out / "generation_report.json"
    write_report(path, report)
    data = json.loads(path.read_text("utf-8"))
    assert data["guard_events"][1]["from"] == "high" and data["guard_events"][1]["to"] == "standard"
    assert data["order"]["id"] == "foxes" and data["backend"]["simulated"] is True
    assert data["images"][0]["finished_at"].endswith("Z")
    assert read_report(path) == report
    write_report(path, report)  # replacing an existing report leaves no temp file
    assert sorted(p.name for p in out.iterdir()) == [".comfyline", "generation_report.json"]


def test_file_paths_are_relative_to_the_report(run: tuple[Ledger, Clock, Path]) -> None:
    led, _, out = run
    report = make_report(led, out, out / "reports")
    assert report.images[0].file == "../images/fox_0000.png"


def test_unwritable_folder_is_an_output_error(run: tuple[Ledger, Clock, Path]) -> None:
    led, _, out = run
    blocker = out / "file"
    blocker.write_text("x")
    with pytest.raises(OutputError, match="cannot write the report"):
        write_report(blocker / "generation_report.json", make_report(led, out, out))


def test_unreadable_report(tmp_path: Path) -> None:
    path = tmp_path / "generation_report.json"
    path.write_text('{"schema_version": 1}')
    with pytest.raises(OutputError, match="cannot read the report"):
        read_report(path)
