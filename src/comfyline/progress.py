"""Progress of a running order: done/total, images per minute and an ETA from recent throughput.

The numbers live in :class:`Throughput` (pure, clock injected); :class:`ProgressDisplay` renders
them, as a live bar on a terminal and as plain log lines elsewhere (a log file, CI, a pipe).
The ETA comes from the recent wall-clock rate, so it already counts the time the guard spends
cooling the card.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn

RECENT_WINDOW = 20
"""How many recent images the rate is measured over: long enough to smooth one slow image,
short enough to follow a card that starts holding prompts for cooling."""


@dataclass(frozen=True)
class Snapshot:
    """Where the run stands: counts, rate and the time left (None until it can be told)."""

    done: int
    failed: int
    total: int
    per_minute: float | None
    eta_s: float | None

    def line(self) -> str:
        rate = f"{self.per_minute:.1f}/min" if self.per_minute is not None else "-/min"
        eta = format_duration(self.eta_s) if self.eta_s is not None else "-"
        failed = f", {self.failed} failed" if self.failed else ""
        return f"{self.done}/{self.total} images{failed}, {rate}, ETA {eta}"


def format_duration(seconds: float) -> str:
    """``1h02m03s`` or ``2m03s``."""
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


class Throughput:
    """Counts finished images and derives the rate over the last :data:`RECENT_WINDOW` of them."""

    def __init__(self, total: int, done: int = 0, *, clock: Callable[[], float] = time.monotonic):
        self.total = total
        self.done = done
        self.failed = 0
        self._clock = clock
        self._times: deque[float] = deque([clock()], maxlen=RECENT_WINDOW + 1)

    def image_done(self, ok: bool = True) -> Snapshot:
        """Count one finished slot (``ok`` False: it failed) and return the new snapshot."""
        if ok:
            self.done += 1
        else:
            self.failed += 1
        self._times.append(self._clock())
        return self.snapshot()

    def snapshot(self) -> Snapshot:
        per_minute = eta = None
        if len(self._times) >= 2 and self._times[-1] > self._times[0]:
            rate = (len(self._times) - 1) / (self._times[-1] - self._times[0])
            per_minute = rate * 60
            eta = max(0, self.total - self.done - self.failed) / rate
        return Snapshot(self.done, self.failed, self.total, per_minute, eta)


class ProgressDisplay:
    """Shows snapshots: a live bar on a terminal, else one log line per ``every`` images."""

    def __init__(self, console: Console, title: str, total: int, *, every: int = 10) -> None:
        self.console = console
        self._every = every
        self._live = console.is_terminal
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        if self._live:
            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"),
                console=console,
                transient=False,
            )
            self._task = self._progress.add_task(title, total=total, info="")

    def __enter__(self) -> ProgressDisplay:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def update(self, snap: Snapshot) -> None:
        if self._progress is not None and self._task is not None:
            info = snap.line().split(", ", 1)[1] if ", " in snap.line() else ""
            self._progress.update(self._task, completed=snap.done + snap.failed, info=info)
            return
        finished = snap.done + snap.failed
        if finished % self._every == 0 or finished == snap.total:
            self.console.print(snap.line(), highlight=False)
