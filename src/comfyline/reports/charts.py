"""The run chart: GPU temperature and images per minute over the run, from the report.

Rendered with matplotlib's object API on the Agg canvas (no pyplot, no display, no global state).
Temperature comes from the report's readings; images per minute from the images' finish times, as
a rate over a sliding window. With several servers, each card's temperature is its own line and
each server's images per minute a dashed line beside the total. With no temperature data the
chart shows images per minute only and says so. The PNG carries no timestamp, so the same
report gives the same bytes.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from comfyline.errors import OutputError
from comfyline.images import write_atomic
from comfyline.reports.report import GenerationReport

CHART_FILE = "run_chart.png"
RATE_WINDOW_S = 60.0
"""Images per minute at time t counts the images finished in the window (t - 60 s, t]."""
NO_TEMPERATURE_NOTE = "no temperature sensor: images per minute only"
MAX_SERIES = 8
"""Servers drawn one line each; with more, the totals only (and the hottest card)."""


def write_chart(report: GenerationReport, path: Path, *, target_c: float | None = None) -> Path:
    """Render the run chart of ``report`` to ``path`` (PNG) and return ``path``.

    ``target_c`` draws the guard's target temperature as a dashed line. Raises
    :class:`OutputError` when the file cannot be written.
    """
    buffer = io.BytesIO()
    figure = render_chart(report, target_c=target_c)
    figure.savefig(buffer, format="png", metadata={"Software": None})
    try:
        write_atomic(Path(path), buffer.getvalue())
    except OSError as exc:
        raise OutputError(f"cannot write the chart {path}: {exc}") from exc
    return Path(path)


def render_chart(report: GenerationReport, *, target_c: float | None = None) -> Figure:
    """The chart as a matplotlib Figure (not saved)."""
    start = _start(report)
    figure = Figure(figsize=(9, 4), dpi=100)
    FigureCanvasAgg(figure)  # attaches the Agg canvas: no display, whatever the environment
    rate_axis = figure.add_subplot()
    rate_axis.set_title(f"{report.order.id}: images per minute and GPU temperature")
    rate_axis.set_xlabel("minutes since start")
    rate_axis.set_ylabel("images per minute", color="tab:blue")
    times = sorted(_minutes(img.finished_at, start) for img in report.images)
    rates = rolling_rate(times)
    if times:
        rate_axis.plot(times, rates, color="tab:blue", label="images per minute")
    servers = sorted({img.backend for img in report.images if img.backend})
    if 1 < len(servers) <= MAX_SERIES:
        for name in servers:
            mine = sorted(
                _minutes(img.finished_at, start) for img in report.images if img.backend == name
            )
            rate_axis.plot(mine, rolling_rate(mine), linestyle="--", linewidth=0.8, label=name)
        rate_axis.legend(loc="upper left", fontsize="small")
    rate_axis.set_ylim(0, max(rates, default=1.0) * 1.25)  # headroom for the notes
    temps = _temperatures(report, start)
    if temps:
        _plot_temperature(rate_axis, temps, target_c)
    else:
        _note(rate_axis, NO_TEMPERATURE_NOTE, 0.97)
    if not times:
        _note(rate_axis, "no images finished", 0.5)
    figure.tight_layout()
    return figure


def rolling_rate(minutes: Sequence[float], window_s: float = RATE_WINDOW_S) -> list[float]:
    """Images per minute at each finish time (sorted, in minutes since the run's start): the images
    finished in the window before it, over the window (or over the time since the start, early on).
    """
    window = window_s / 60.0
    rates, first = [], 0
    for i, t in enumerate(minutes):
        while minutes[first] <= t - window:
            first += 1
        span = min(window, t) if t > 0 else window
        rates.append((i - first + 1) / span)
    return rates


Series = dict[str, list[tuple[float, float]]]


def _temperatures(report: GenerationReport, start: datetime) -> Series:
    """Temperature series by card: one per server when readings name a few; with one server,
    or more than :data:`MAX_SERIES`, all readings in one series (``""``, or ``"cards"``)."""
    names = {b.name for b in report.backends}
    many = len(names) > MAX_SERIES
    series: dict[str, list[tuple[float, float]]] = {}
    for r in report.readings:
        if r.temperature_c is not None:
            key = "cards" if many else r.note if len(names) > 1 and r.note in names else ""
            series.setdefault(key, []).append((_minutes(r.time, start), r.temperature_c))
    return series


def _plot_temperature(rate_axis: Axes, series: Series, target_c: float | None) -> None:
    temp_axis = rate_axis.twinx()
    temp_axis.set_ylabel("GPU temperature (°C)", color="tab:red")
    reds = ("tab:red", "tab:orange", "tab:brown", "tab:pink", "tab:purple")
    for i, (name, temps) in enumerate(sorted(series.items())):
        # Many cards' readings interleave: dots, not a line zigzagging between cards.
        dots = name == "cards"
        temp_axis.plot(
            [t for t, _ in temps],
            [c for _, c in temps],
            color=reds[i % len(reds)],
            label=name,
            linestyle="none" if dots else "-",
            marker="." if dots else "",
            markersize=2,
        )
    if len(series) > 1:
        temp_axis.legend(loc="upper right", fontsize="small", title="°C")
    if target_c is not None:
        temp_axis.axhline(target_c, color="tab:red", linestyle="--", linewidth=0.8)


def _note(axis: Axes, text: str, y: float) -> None:
    axis.text(0.5, y, text, transform=axis.transAxes, ha="center", va="top", color="dimgray")


def _start(report: GenerationReport) -> datetime:
    times = [img.finished_at for img in report.images] + [r.time for r in report.readings]
    return min(times, default=report.generated_at)


def _minutes(t: datetime, start: datetime) -> float:
    return (t - start).total_seconds() / 60.0
