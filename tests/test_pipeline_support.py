"""Helpers shared by the order-runner tests (tests/test_pipeline_*.py); it holds no tests.

The runner is exercised the way a user runs it: orders written as real files, a real
simulator on a real socket, and - where the test is about a process dying - the CLI as a
child process (``python -m comfyline run-order ...``) that the test kills.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
from PIL import Image
from rich.console import Console

from comfyline import pipeline
from comfyline.errors import LedgerError
from comfyline.ledger import OrderStatus, ledger_path, read_status
from comfyline.orders import Plan, load, plan
from comfyline.reports.report import REPORT_FILE, GenerationReport, read_report
from comfyline.settings import Settings
from comfyline.sim import SimConfig, ThermalConfig

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_ORDERS = ROOT / "automation" / "orders"
T = TypeVar("T")

COLD_ROOM = ThermalConfig(room_c=-40.0)
"""A card that never gets near the guard's target temperature. With a temperature to read,
the guard paces by it (no pause on a cool card); without one it would sleep the level's fixed
pause (1.5-2 s) between images, far too slow for tests."""

SIM_URL_LINE = re.compile(r"ComfyUI simulator listening on (http://\S+)")


def sim_config(tmp_path: Path, **overrides: Any) -> SimConfig:
    """A zero-latency simulator with a cold card, its files under ``tmp_path/"comfy-out"``."""
    overrides.setdefault("output_dir", tmp_path / "comfy-out")
    overrides.setdefault("thermal", COLD_ROOM)
    return SimConfig(**overrides)


def settings_for(url: str, output_root: Path, **overrides: Any) -> Settings:
    """Settings of a test run: this server, this output root, short waits for a lost server."""
    overrides.setdefault("reconnect_timeout_s", 20.0)
    return Settings(comfyui_url=url, output_root=output_root, **overrides)


def write_order(folder: Path, order_id: str, body: str, **files: str) -> Path:
    """Write ``<folder>/<order_id>/project.yaml`` (``id`` first) and extra files beside it;
    the order file's path."""
    order_dir = folder / order_id
    order_dir.mkdir(parents=True, exist_ok=True)
    path = order_dir / "project.yaml"
    path.write_text(f"id: {order_id}\n{body}", encoding="utf-8")
    for name, text in files.items():
        (order_dir / name).write_text(text, encoding="utf-8")
    return path


def single_order(folder: Path, order_id: str, count: int, **fields: Any) -> Path:
    """A ``single`` order of ``count`` images at the preview level with a fixed seed base."""
    lines = [
        "type: single",
        f"quality: {fields.pop('quality', 'preview')}",
        f"count: {count}",
        f"prompt: {fields.pop('prompt', 'a lighthouse on a rock, test pattern')}",
        f"seed: {{mode: fixed, base: {fields.pop('seed_base', 4242)}}}",
    ]
    lines += [f"{key}: {json.dumps(value)}" for key, value in fields.items()]
    return write_order(folder, order_id, "\n".join(lines) + "\n")


def the_plan(order_file: Path, output_root: Path | None = None) -> Plan:
    """The order's plan (its slots, seeds and file stems), as the runner makes it; with
    ``output_root``, under the seed base its ledger recorded (``seed: {mode: random}``)."""
    loaded = load(order_file)
    status = status_of(order_file, output_root) if output_root is not None else None
    base = status.order.seed_base if status is not None else None
    return plan(loaded, random_base=base)


def output_folder(order_file: Path, output_root: Path) -> Path:
    """Where the order's images go."""
    return pipeline.output_dir(load(order_file).order, Settings(output_root=output_root))


def run_in_process(
    order_file: Path, settings: Settings, **time_seams: Any
) -> tuple[GenerationReport, str]:
    """Run the order through ``pipeline.generate``; its report and what it printed.
    ``time_seams``: ``clock`` and ``sleep`` for the run (see :class:`FastTime`)."""
    buffer = io.StringIO()
    console = Console(file=buffer, width=200, force_terminal=False)
    report = asyncio.run(
        pipeline.generate(order_file, settings=settings, console=console, **time_seams)
    )
    return report, buffer.getvalue()


class FastTime:
    """The run's own time (its guard's waits and deadlines) passing ``factor`` times faster
    than real time, consistently for its clock and its sleeps. For runs whose guard waits on
    purpose (freeing memory after an OOM), so that the test does not wait with it."""

    def __init__(self, factor: float = 100.0) -> None:
        self.factor = factor

    def clock(self) -> float:
        return time.monotonic() * self.factor

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds) / self.factor)

    def seams(self) -> dict[str, Any]:
        """``clock=`` and ``sleep=`` for ``pipeline.generate``."""
        return {"clock": self.clock, "sleep": self.sleep}


def status_of(order_file: Path, output_root: Path) -> OrderStatus | None:
    """The order's ledger status (read without the runner's lock), None before its first run."""
    db = ledger_path(output_folder(order_file, output_root))
    if not db.exists():
        return None
    try:
        return read_status(db)
    except LedgerError:
        return None  # created but not initialised yet: the runner is starting


def done_count(order_file: Path, output_root: Path) -> int:
    status = status_of(order_file, output_root)
    return status.counts.done if status is not None else 0


def wait_for(
    condition: Callable[[], T], what: str, *, timeout_s: float = 30.0, interval_s: float = 0.005
) -> T:
    """Poll ``condition`` until it returns something truthy (returned); fail after
    ``timeout_s`` saying what was awaited. For conditions in other processes (a file, a
    ledger, a server's queue), which have no event to wait on."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(interval_s)


# -- child processes ---------------------------------------------------------------------------


def child_env() -> dict[str, str]:
    """The environment of a child comfyline: ours (already cleaned of COMFYLINE_* by the
    autouse fixture), unbuffered so that its lines arrive as they are printed."""
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("COLUMNS", "200")
    return env


def start_runner(
    order_file: Path, url: str, output_root: Path, *more_urls: str
) -> subprocess.Popen[str]:
    """``python -m comfyline run-order ORDER --comfyui URL --output-root DIR`` as a child;
    ``more_urls``: further servers of the run (``--comfyui`` each)."""
    servers = [arg for each in (url, *more_urls) for arg in ("--comfyui", each)]
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "comfyline",
            "run-order",
            str(order_file),
            *servers,
            "--output-root",
            str(output_root),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=child_env(),
        cwd=ROOT,
    )


def comfyline(*args: str, timeout_s: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Run ``python -m comfyline ARGS`` to its end; stdout and stderr are kept apart."""
    return subprocess.run(
        [sys.executable, "-m", "comfyline", *args],
        capture_output=True,
        text=True,
        env=child_env(),
        cwd=ROOT,
        timeout=timeout_s,
    )


def finish(proc: subprocess.Popen[str], timeout_s: float = 60.0) -> tuple[int, str]:
    """Wait for a child runner; its exit status and output."""
    try:
        out, _ = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        raise AssertionError(f"the runner did not finish within {timeout_s} s:\n{out}") from None
    return proc.returncode, out


def kill_runner_leaving(order_file: Path, output_root: Path, urls: list[str], prompts: int) -> None:
    """Start a runner on the servers ``urls`` and kill -9 it once each server's queue holds
    ``prompts`` prompts (a first prompt that hangs keeps them there, however slow the
    machine): a dead runner's prompts left on the servers, for a resume to settle."""
    runner = start_runner(order_file, urls[0], output_root, *urls[1:])
    wait_for(
        lambda: all(len(server_queue(url)) == prompts for url in urls),
        f"{prompts} prompts on each server",
    )
    runner.kill()
    finish(runner)


@contextmanager
def sim_process(tmp_path: Path, *args: str) -> Iterator[str]:
    """``python -m comfyline sim --port 0 ARGS`` as a separate process; yields its URL."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "comfyline",
            "sim",
            "--port",
            "0",
            "--thermal",
            "--room-c",
            "-40",
            "--output-dir",
            str(tmp_path / "comfy-out"),
            *args,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=child_env(),
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()  # blocks until the server listens (or dies)
        match = SIM_URL_LINE.search(first)
        assert match, f"the simulator did not start: {first}{proc.stdout.read()}"
        yield match.group(1)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


def sim_stats(url: str) -> dict[str, Any]:
    """``GET /sim/stats`` of a simulator."""
    answer = httpx.get(f"{url}/sim/stats", timeout=10)
    answer.raise_for_status()
    result: dict[str, Any] = answer.json()
    return result


def server_queue(url: str) -> list[str]:
    """The prompt ids the server holds, running and pending (``GET /queue``)."""
    answer = httpx.get(f"{url}/queue", timeout=10)
    answer.raise_for_status()
    body = answer.json()
    return [item[1] for item in body["queue_running"] + body["queue_pending"]]


# -- checking a finished order -----------------------------------------------------------------


@dataclass(frozen=True)
class Finished:
    """A finished order as found on disk: its report and image files."""

    report: GenerationReport
    images: dict[str, Path]  # stem -> file


NOT_IMAGES = re.compile(r"contact_sheet(_\d+)?\.png|run_chart\.png")


def image_files(folder: Path) -> dict[str, Path]:
    """The series' PNGs in ``folder`` by stem (contact sheets and the chart left out)."""
    return {p.stem: p for p in folder.glob("*.png") if not NOT_IMAGES.fullmatch(p.name)}


def temp_files(folder: Path) -> list[Path]:
    """Leftover temp files of atomic writes (``.name.random.tmp``) anywhere under ``folder``."""
    return sorted(folder.rglob("*.tmp"))


def check_finished(order_file: Path, output_root: Path) -> Finished:
    """Assert that the order is complete on disk exactly as planned; what was found.

    Exactly the planned files, each once in the report with its file's sha256, its slot's
    seed, prompt and negative; the totals add up; no temp file is left.
    """
    planned = the_plan(order_file, output_root)
    folder = output_folder(order_file, output_root)
    report = read_report(folder / REPORT_FILE)
    images = image_files(folder)
    stems = [slot.stem for slot in planned.slots]
    assert sorted(images) == sorted(stems), "the files are not exactly the planned ones"
    assert len(report.images) == planned.images
    assert sorted(i.index for i in report.images) == list(range(len(planned.slots)))
    assert sorted(i.file for i in report.images) == sorted(f"{s}.png" for s in stems)
    for entry in report.images:
        slot = planned.slots[entry.index]
        assert entry.file == f"{slot.stem}.png"
        assert entry.seed == slot.seed
        assert entry.prompt == slot.prompt
        assert entry.negative == slot.negative
        assert entry.sha256 == hashlib.sha256((folder / entry.file).read_bytes()).hexdigest()
    totals = report.totals
    assert (totals.requested, totals.succeeded, totals.failed, totals.missing) == (
        planned.images,
        planned.images,
        0,
        0,
    )
    assert report.errors == []
    assert report.order.state == "completed"
    assert temp_files(folder) == []
    return Finished(report, images)


def pixels(path: Path) -> bytes:
    """The decoded pixels of an image (its text chunks differ between runs: prompt ids)."""
    with Image.open(path) as image:
        return image.convert("RGB").tobytes()
