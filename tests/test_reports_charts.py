"""The run chart from a report: with and without temperature data, deterministic bytes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from PIL import Image

from comfyline.reports.charts import NO_TEMPERATURE_NOTE, render_chart, rolling_rate, write_chart
from comfyline.reports.report import (
    GenerationReport,
    ReportBackend,
    ReportImage,
    ReportOrder,
    ReportReading,
    ReportTotals,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def report(n_images: int, temperatures: bool) -> GenerationReport:
    images = [
        ReportImage(
            index=i,
            file=f"img_{i}.png",
            sha256="00" * 32,
            prompt="p",
            negative="",
            seed=i,
            parameters={},
            seconds=3.0,
            attempts=1,
            prompt_id=None,
            finished_at=T0 + timedelta(seconds=4 * (i + 1)),
            temperature_c=None,
            power_w=None,
            vram_free_mb=None,
        )
        for i in range(n_images)
    ]
    readings = [
        ReportReading(
            time=T0 + timedelta(seconds=5 * k),
            elapsed_s=5.0 * k,
            temperature_c=(60.0 + k) if temperatures else None,
            power_w=None,
            vram_free_mb=None,
            vram_total_mb=None,
            images_done=min(k, n_images),
        )
        for k in range(20)
    ]
    return GenerationReport(
        generated_at=T0 + timedelta(minutes=5),
        comfyline_version="0.1.0",
        order=ReportOrder(
            id="foxes",
            title="Foxes",
            type="single",
            file="p.yaml",
            sha256="",
            content="",
            state="completed",
        ),
        backend=ReportBackend(url="http://127.0.0.1:8188", simulated=True, comfyui_version=None),
        level="standard",
        parameters={},
        sale=None,
        images=images,
        totals=ReportTotals(
            requested=n_images,
            succeeded=n_images,
            failed=0,
            missing=0,
            wall_seconds=100.0,
            generation_seconds=3.0 * n_images,
            mean_seconds_per_image=3.0 if n_images else None,
            images_per_minute=None,
        ),
        errors=[],
        guard_events=[],
        readings=readings,
    )


def texts(rep: GenerationReport) -> list[str]:
    figure = render_chart(rep, target_c=78.0)
    return [t.get_text() for ax in figure.axes for t in ax.texts]


def test_rolling_rate() -> None:
    # one image every 0.1 min: 10 per minute once a full window has passed
    minutes = [0.1 * (i + 1) for i in range(30)]
    rates = rolling_rate(minutes, window_s=60)
    assert rates[0] == pytest.approx(10.0)
    assert rates[-1] == pytest.approx(10.0)
    assert rolling_rate([0.0, 5.0], window_s=60) == [1.0, 1.0]  # a gap: one image in the window


def test_chart_with_temperature(tmp_path: Path) -> None:
    rep = report(20, temperatures=True)
    assert len(render_chart(rep).axes) == 2  # images per minute + temperature on a twin axis
    assert NO_TEMPERATURE_NOTE not in texts(rep)
    a = write_chart(rep, tmp_path / "a.png", target_c=78.0)
    b = write_chart(rep, tmp_path / "b.png", target_c=78.0)
    assert a.read_bytes() == b.read_bytes()
    with Image.open(a) as image:
        assert image.format == "PNG" and image.size == (900, 400)
        assert "Software" not in image.info


def test_chart_without_temperature_says_so(tmp_path: Path) -> None:
    rep = report(10, temperatures=False)
    assert len(render_chart(rep).axes) == 1
    assert NO_TEMPERATURE_NOTE in texts(rep)
    assert write_chart(rep, tmp_path / "c.png").stat().st_size > 0


def test_chart_of_an_empty_run(tmp_path: Path) -> None:
    rep = report(0, temperatures=False).model_copy(update={"readings": []})
    assert "no images finished" in texts(rep)
    assert write_chart(rep, tmp_path / "c.png").is_file()
