"""The line (:class:`comfyline.line.Line`, the code of ``comfyline line``) run inside the
dashboard's process: started, paused and resumed from the line page, with ``--watch``'s
behaviour (an order added to the folder is queued). What the line prints is kept for the page.

Everything here runs in the server's event loop, as the line does: its reads
(:meth:`LineControl.snapshot`) need no lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from comfyline.errors import ComfylineError
from comfyline.line import Line, QueueEntry, ServerState
from comfyline.web.config import WebConfig
from comfyline.web.runner import MAX_MESSAGES, Lines

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LineSnapshot:
    """The line as the page shows it: ``state`` ``not started``, ``starting``, ``running``,
    ``paused`` or ``stopped`` (``error`` says why)."""

    state: str
    queue: tuple[QueueEntry, ...] = ()
    servers: tuple[ServerState, ...] = ()
    messages: tuple[str, ...] = ()
    error: str | None = None

    @property
    def started(self) -> bool:
        return self.state in ("starting", "running", "paused")


@dataclass
class LineControl:
    """At most one :class:`Line` over the dashboard's folder at a time."""

    config: WebConfig
    messages: deque[str] = field(default_factory=lambda: deque(maxlen=MAX_MESSAGES))

    def __post_init__(self) -> None:
        self.line: Line | None = None
        self._task: asyncio.Task[object] | None = None
        self._error: str | None = None

    @property
    def running(self) -> bool:
        """Whether a line runs (paused or not)."""
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        """Start the line (again, after it stopped); nothing when it runs."""
        if self.running:
            return
        config = self.config
        console = Console(file=Lines(self.messages), width=200, highlight=False, no_color=True)
        self.line = Line(
            config.orders_dir,
            config.settings,
            watch=True,
            urls=config.urls,
            sim=config.sim,
            console=console,
            resume_hint="Resume on the dashboard's line page",
        )
        self._error = None
        self._task = asyncio.create_task(self._run(self.line), name="the line")

    def pause(self) -> None:
        """Stop the running orders (state saved) and start none until :meth:`resume`."""
        if self.line is not None and self.running:
            self.line.pause()

    def resume(self) -> None:
        if self.line is not None and self.running:
            self.line.resume()

    def has(self, file: Path) -> bool:
        """Whether the running line knows the order of ``file``."""
        return self.running and any(e.file == file for e in self.queue())

    async def cancel(self, file: Path) -> bool:
        """Stop the order as Ctrl-C does; False when the line is not running it."""
        return self.line is not None and self.running and await self.line.cancel(file)

    def retake(self, file: Path) -> bool:
        """Queue again an order that ended on the running line."""
        return self.line is not None and self.running and self.line.retake(file)

    def queue(self) -> list[QueueEntry]:
        return self.line.queue() if self.line is not None and self.running else []

    def snapshot(self) -> LineSnapshot:
        """What the line page shows now."""
        line = self.line
        if line is None:
            return LineSnapshot("not started")
        messages = tuple(list(self.messages)[-12:])
        if not self.running:
            return LineSnapshot("stopped", messages=messages, error=self._error)
        if line.pool is None:
            state = "starting"
        else:
            state = "paused" if line.paused else "running"
        return LineSnapshot(
            state, tuple(line.queue()), tuple(line.servers()), messages, self._error
        )

    async def aclose(self) -> None:
        """Stop the line as Ctrl-C stops ``comfyline line`` (each order saves its state)."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self, line: Line) -> object:
        try:
            return await line.run()
        except ComfylineError as exc:  # no server answers, the folder is gone: said on the page
            self._error = f"{type(exc).__name__}: {exc}"
        except Exception as exc:  # a bug: logged with its traceback, the page says where to look
            _log.exception("the line stopped on an unexpected error")
            self._error = (
                f"unexpected {type(exc).__name__}: {exc} (the server's log has the details)"
            )
        return None
