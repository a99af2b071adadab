"""Orders started from the page, run inside the server process by ``pipeline.generate``.

Each start is one asyncio task. Started orders run one at a time, in the order they were
started, so two of them never compete for the card; a cancel cancels the task, which is what
Ctrl-C does: the pipeline takes our prompts off the server, saves the state and stops (run it
again to resume). What the run prints (the banner, guard notices, "running on the built-in
simulator") is kept for the page.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from comfyline.errors import ComfylineError, ConfigError
from comfyline.settings import Settings

MAX_MESSAGES = 200
_log = logging.getLogger(__name__)


class Lines(io.StringIO):
    """A file-like sink keeping the last lines a console printed."""

    def __init__(self, lines: deque[str]) -> None:
        super().__init__()
        self._lines = lines
        self._partial = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        parts = (self._partial + text).split("\n")
        self._partial = parts.pop()
        self._lines.extend(p for p in parts if p.strip())
        return len(text)


@dataclass
class Job:
    """One start of one order from the page."""

    file: Path
    state: str = "waiting"
    """waiting (behind another started order), running, finished, failed, cancelled."""
    started: float = field(default_factory=time.time)
    messages: deque[str] = field(default_factory=lambda: deque(maxlen=MAX_MESSAGES))
    error: str | None = None
    task: asyncio.Task[None] | None = None

    @property
    def active(self) -> bool:
        return self.state in ("waiting", "running")

    def to_json(self) -> dict[str, object]:
        return {
            "state": self.state,
            "error": self.error,
            "messages": list(self.messages)[-20:],
        }


class OrderRunner:
    """Starts and cancels orders in this process; one runs at a time."""

    def __init__(self, settings: Settings, *, sim: bool = False) -> None:
        self.settings = settings
        self.sim = sim
        self._jobs: dict[Path, Job] = {}
        self._turn = asyncio.Lock()

    def job(self, file: Path) -> Job | None:
        """The latest start of this order here, if any."""
        return self._jobs.get(file)

    def start(self, file: Path) -> Job:
        """Start (or resume) the order; :class:`ConfigError` if it is already started here."""
        current = self._jobs.get(file)
        if current is not None and current.active:
            raise ConfigError(f"order {file.parent.name} is already {current.state} here")
        job = Job(file)
        job.task = asyncio.create_task(self._run(job), name=f"order {file.parent.name}")
        self._jobs[file] = job
        return job

    async def cancel(self, file: Path) -> bool:
        """Stop the order as Ctrl-C does and wait until its state is saved; False if it was not
        running here."""
        job = self._jobs.get(file)
        if job is None or job.task is None or job.task.done():
            return False
        job.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await job.task
        return True

    async def aclose(self) -> None:
        """Cancel every order still running (the server is shutting down)."""
        for file in list(self._jobs):
            await self.cancel(file)

    async def _run(self, job: Job) -> None:
        from comfyline.pipeline import generate

        console = Console(file=Lines(job.messages), width=200, highlight=False, no_color=True)
        try:
            async with self._turn:
                job.state = "running"
                await generate(
                    job.file,
                    settings=self.settings,
                    sim=self.sim,
                    console=console,
                    resume_hint="the Resume button on the order's page",
                )
            job.state = "finished"
        except asyncio.CancelledError:
            job.state = "cancelled"
            raise
        except ComfylineError as exc:
            # Shown on the page as the CLI would print it: no traceback for a known failure.
            job.state = "failed"
            job.error = f"{type(exc).__name__}: {exc}"
        except Exception as exc:  # a bug: logged with its traceback, the page says where to look
            _log.exception("order %s stopped on an unexpected error", job.file)
            job.state = "failed"
            job.error = f"unexpected {type(exc).__name__}: {exc} (the server's log has the details)"
