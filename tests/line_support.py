"""Helpers of the line's tests (tests/test_line_*.py); it holds no tests.

- :class:`TcpProxy`: a real TCP proxy in front of a simulator, that can be *cut* (connections
  dropped, the port refusing) and *restored* while the simulator goes on working: a network
  partition, the one failure in which a lost server still finishes what it was given;
- :class:`BackgroundRun`: ``pipeline.generate`` in a thread, so a test can act on servers while
  the run goes on and wait for what the ledger records;
- ``foreign_prompt``: a prompt of another client (not comfyline) on a server.
"""

from __future__ import annotations

import asyncio
import io
import socket
import sqlite3
import threading
import uuid
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console

from comfyline import pipeline
from comfyline.generation import GenerationRequest
from comfyline.ledger import ledger_path
from comfyline.presets import params_for
from comfyline.reports.report import GenerationReport
from comfyline.settings import Settings
from comfyline.sim import Simulator
from test_pipeline_support import output_folder


class TcpProxy:
    """``127.0.0.1:<port>`` forwarded to ``target_port``, in its own thread and event loop."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.restore()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    def restore(self) -> None:
        """Listen (again) on the same port."""

        async def start() -> None:
            self._server = await asyncio.start_server(
                self._serve, "127.0.0.1", self.port, reuse_address=True
            )

        self._call(start())

    def cut(self) -> None:
        """Stop listening and drop every connection: the server is unreachable."""

        async def stop() -> None:
            if self._server is not None:
                self._server.close()
                self._server = None
            for writer in list(self._writers):
                writer.transport.abort()
            self._writers.clear()

        self._call(stop())

    def close(self) -> None:
        self.cut()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}
        await asyncio.gather(
            self._pipe(reader, up_writer), self._pipe(up_reader, writer), return_exceptions=True
        )

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        finally:
            self._writers.discard(writer)
            writer.transport.abort()


class BackgroundRun:
    """``pipeline.generate(order, **kwargs)`` in a thread; :meth:`result` joins it."""

    def __init__(self, order_file: Path, settings: Settings, **kwargs: Any) -> None:
        self.output = io.StringIO()
        self._report: GenerationReport | None = None
        self._error: BaseException | None = None
        console = Console(file=self.output, width=200, force_terminal=False)

        def run() -> None:
            try:
                self._report = asyncio.run(
                    pipeline.generate(order_file, settings=settings, console=console, **kwargs)
                )
            except BaseException as exc:  # noqa: BLE001 - handed to the test's thread
                self._error = exc

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()

    def result(self, timeout_s: float = 120.0) -> GenerationReport:
        self._thread.join(timeout_s)
        assert not self._thread.is_alive(), f"the run did not end:\n{self.output.getvalue()}"
        if self._error is not None:
            raise self._error
        assert self._report is not None
        return self._report


def ledger_events(order_file: Path, output_root: Path, kind: str) -> list[dict[str, Any]]:
    """The ledger's events of ``kind`` (read-only, while a runner writes): each as
    ``{"index", "prompt_id", "detail"}``."""
    import json

    db = ledger_path(output_folder(order_file, output_root))
    if not db.exists():
        return []
    try:
        with sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=10) as conn:
            rows = conn.execute(
                "SELECT slot_idx, prompt_id, detail FROM event WHERE kind = ? ORDER BY id",
                (kind,),
            ).fetchall()
    except sqlite3.OperationalError:
        return []  # the runner is creating it
    return [{"index": r[0], "prompt_id": r[1], "detail": json.loads(r[2])} for r in rows]


def foreign_prompt(url: str, seed: int = 1, *, size: int = 256, steps: int = 6) -> str:
    """Queue a prompt of another client (not comfyline) on the server at ``url``; its id."""
    request = GenerationRequest(
        prompt="someone else's picture",
        seed=seed,
        params=params_for("preview", width=size, height=size, steps=steps),
        checkpoint="sim-sd15.safetensors",
        filename_prefix="other/img",
    )
    prompt_id = str(uuid.uuid4())
    body = {"prompt": request.graph(), "client_id": "someone-else", "prompt_id": prompt_id}
    answer = httpx.post(f"{url}/prompt", json=body, timeout=10)
    answer.raise_for_status()
    return prompt_id


def interrupt(url: str, prompt_id: str) -> None:
    """``POST /interrupt`` of one prompt."""
    httpx.post(f"{url}/interrupt", json={"prompt_id": prompt_id}, timeout=10).raise_for_status()


def running_execution(sim: Simulator) -> int | None:
    """Which execution (1-based) a simulator is running now; None when idle (use it through
    ``SimulatorHandle.call``)."""
    return sim.running.record.execution if sim.running is not None else None


def running_prompt(sim: Simulator) -> tuple[int, str] | None:
    """The execution (1-based) a simulator is running now and its prompt id; None when idle
    (use it through ``SimulatorHandle.call``)."""
    run = sim.running
    return (run.record.execution, run.prompt_id) if run is not None else None
