"""Checks against a REAL ComfyUI server, skipped unless ``REAL_COMFYUI_URL`` names one.

    REAL_COMFYUI_URL=http://127.0.0.1:8188 bash scripts/test.sh -m real

A CPU server with a tiny random-weight checkpoint is enough (see docs/TESTING.md and
``shared/real-comfyui.md`` beside the project); they take a few minutes there. The server
restart test also needs ``REAL_COMFYUI_RESTART``: a shell command that restarts the server (it
may return before the server answers again). Orders run through the CLI (as a child process,
when it is to be killed or interrupted) or ``pipeline.generate``; protocol facts through
``ComfyClient``. Nothing here deletes anything on the server but our own prompts.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx
import pytest
from PIL import Image

from comfyline import pipeline
from comfyline.comfy import ComfyUIAdapter
from comfyline.comfy.client import ComfyClient, WsConnection
from comfyline.comfy.protocol import (
    MessageType,
    WsMessage,
    combo_options,
    execution_error,
    parse_history,
    parse_ws_message,
)
from comfyline.errors import (
    ExecutionFailed,
    ExecutionInterrupted,
    ModelNotFound,
    PromptRejected,
    WorkflowCheckFailed,
)
from comfyline.generation import GenerationRequest
from comfyline.ledger import Ledger, ledger_path, read_status
from comfyline.orders import load, plan
from comfyline.preflight import resolve_checkpoint
from comfyline.presets import params_for
from comfyline.reports.report import REPORT_FILE, GenerationReport, read_report
from comfyline.settings import Settings
from comfyline.workflows import Workflow, ensure_graph_fits
from sim_graphs import txt2img

URL = os.environ.get("REAL_COMFYUI_URL", "")
RESTART = os.environ.get("REAL_COMFYUI_RESTART", "")
ROOT = Path(__file__).parent.parent
ORDERS = ROOT / "automation" / "orders"
WORKFLOWS = Path(__file__).parent / "data" / "workflows"
WAIT_S = 120.0  # a busy CPU server takes seconds per image
T = TypeVar("T")

pytestmark = [
    pytest.mark.real,
    pytest.mark.skipif(not URL, reason="set REAL_COMFYUI_URL to run against a real ComfyUI"),
]


# --- helpers --------------------------------------------------------------------------------------


def write_order(root: Path, name: str, count: int, **fields: Any) -> Path:
    """A ``single`` order at the preview level (256x256), 2 steps unless ``steps`` says. Its id
    is ``name`` and a random suffix: today's prompt ids derive from the order id, and the
    server's history outlives a test run."""
    order_id = f"{name}-{uuid.uuid4().hex[:8]}"
    folder = root / "orders" / order_id
    folder.mkdir(parents=True)
    overrides = {"steps": fields.pop("steps", 2), **fields.pop("overrides", {})}
    lines = [
        f"id: {order_id}",
        "type: single",
        "quality: preview",
        f"count: {count}",
        f"prompt: a test pattern for {order_id}",
        f"seed: {{mode: fixed, base: {fields.pop('seed', 31337)}}}",
        f"overrides: {json.dumps(overrides)}",
    ]
    (folder / "project.yaml").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder / "project.yaml"


def settings(output_root: Path, url: str = URL) -> Settings:
    # No temperature sensor on a CPU server: no pause between images, no series cool-down.
    return Settings(comfyui_url=url, output_root=output_root, pause_s=0, series_pause_s=0)


def out_folder(order_file: Path, output_root: Path) -> Path:
    return pipeline.output_dir(load(order_file).order, Settings(output_root=output_root))


def start_runner(order_file: Path, output_root: Path) -> subprocess.Popen[str]:
    """``comfyline run-order`` as a child process that a test may kill or interrupt."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COMFYLINE_SERIES_PAUSE_S": "0"}
    argv = ["run-order", str(order_file), "--comfyui", URL, "--output-root", str(output_root)]
    return subprocess.Popen(
        [sys.executable, "-m", "comfyline", *argv, "--pause", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=ROOT,
    )


def finish(proc: subprocess.Popen[str]) -> tuple[int, str]:
    out, _ = proc.communicate(timeout=600)
    return proc.returncode, out


def wait_for(condition: Callable[[], T], what: str, timeout_s: float = WAIT_S) -> T:
    """Poll ``condition`` (another process's state: the server's queue, a ledger)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.02)


def ours_on_server() -> set[str]:
    """The prompts comfyline's runners hold on the server, running or waiting (their client
    ids start with ``comfyline-``; these tests' own clients are named ``real-test-``)."""
    body = httpx.get(f"{URL}/queue", timeout=30).json()
    items = body["queue_running"] + body["queue_pending"]
    return {item[1] for item in items if str(item[3].get("client_id", "")).startswith("comfyline-")}


def sent(order_file: Path, output_root: Path) -> set[str]:
    """Every prompt id the order's ledger says was sent (read once no runner holds it)."""
    loaded = load(order_file)
    db = ledger_path(out_folder(order_file, output_root))
    with Ledger.open(db, loaded.order.id, pipeline.fingerprint(loaded)) as ledger:
        return {e.prompt_id for e in ledger.events("submitted") if e.prompt_id}


def history(prompt_id: str) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(f"{URL}/history/{prompt_id}", timeout=30).json()
    return body


def check_images(report: GenerationReport, folder: Path, count: int, size: int = 256) -> None:
    """The report lists ``count`` images, each a whole PNG of the asked size in ``folder``."""
    assert report.order.state == "completed", report.errors
    assert len(report.images) == count and report.errors == []
    for image in report.images:
        with Image.open(folder / image.file) as png:
            png.load()
            assert png.size == (size, size)


@contextlib.asynccontextmanager
async def comfy_client() -> AsyncIterator[tuple[ComfyClient, WsConnection]]:
    async with httpx.AsyncClient(timeout=60) as http:
        client = ComfyClient(URL, http, client_id=f"real-test-{uuid.uuid4().hex[:8]}")
        ws = await client.connect_ws()
        try:
            yield client, ws
        finally:
            await ws.close()


async def graph(client: ComfyClient, **kw: Any) -> dict[str, Any]:
    """The hand-written txt2img graph (tests/sim_graphs.py) on the server's checkpoint."""
    checkpoints = combo_options(
        await client.object_info("CheckpointLoaderSimple"), "CheckpointLoaderSimple", "ckpt_name"
    )
    g = txt2img(**{"width": 64, "height": 64, "steps": 1, "prefix": "comfyline-real/t", **kw})
    g["4"]["inputs"]["ckpt_name"] = checkpoints[0]
    return g


async def until(ws: WsConnection, done: Callable[[WsMessage], bool]) -> list[WsMessage]:
    """Messages until (and with) the first for which ``done`` is true."""
    seen: list[WsMessage] = []
    async with asyncio.timeout(WAIT_S):
        while True:
            message = parse_ws_message(await ws.recv())
            if message is None:
                continue
            seen.append(message)
            if done(message):
                return seen


def end_of(prompt_id: str) -> Callable[[WsMessage], bool]:
    return lambda m: m.is_prompt_end and m.prompt_id == prompt_id


# --- one image, models and nodes ------------------------------------------------------------------


async def test_adapter_generates_a_checked_image(tmp_path: Path) -> None:
    async with ComfyUIAdapter(Settings(comfyui_url=URL)) as comfy:
        stats = await comfy.check_ready()
        checkpoint = resolve_checkpoint(await comfy.object_info(), None, comfy.url)
        request = GenerationRequest(
            prompt="a red apple",
            seed=11,
            params=params_for("preview", steps=2),
            checkpoint=checkpoint,
        )
        result = await comfy.generate(request)
    assert "comfyui_version" in stats["system"]
    assert result.ok and len(result.images) == 1
    with Image.open(io.BytesIO(result.images[0].data)) as image:
        assert image.size == (256, 256)


async def test_missing_checkpoint_lists_the_real_ones() -> None:
    async with ComfyUIAdapter(Settings(comfyui_url=URL)) as comfy:
        with pytest.raises(ModelNotFound, match="available: "):
            resolve_checkpoint(await comfy.object_info(), "no-such-model.safetensors", comfy.url)


async def test_a_missing_custom_node_is_found_before_any_image() -> None:
    graph = Workflow.load(WORKFLOWS / "face_detailer.json").graph
    async with ComfyUIAdapter(Settings(comfyui_url=URL)) as comfy:
        with pytest.raises(WorkflowCheckFailed, match="'FaceDetailer'.*is not installed"):
            ensure_graph_fits(graph, await comfy.object_info(), server=comfy.url)


@pytest.mark.parametrize("workflow", ["builtin:txt2img", "builtin:hires_fix"])
async def test_shipped_workflows_run_as_orders(workflow: str, tmp_path: Path) -> None:
    order_dir = tmp_path / "orders" / "real-check"
    order_dir.mkdir(parents=True)
    shutil.copy(ORDERS / "hires-landscape" / "project.yaml", order_dir / "project.yaml")
    text = (order_dir / "project.yaml").read_text()
    text = text.replace("id: hires-landscape", "id: real-check")
    text = text.replace("workflow: builtin:hires_fix", f"workflow: {workflow}")
    (order_dir / "project.yaml").write_text(text)
    report = await pipeline.generate(order_dir / "project.yaml", settings=settings(tmp_path))
    size = 384 if workflow.endswith("hires_fix") else 256
    check_images(report, tmp_path / "real-check", 2, size)


# --- errors, typed --------------------------------------------------------------------------------


async def test_validation_errors_are_typed_rejections() -> None:
    async with comfy_client() as (client, _):
        bad_steps = await graph(client)
        bad_steps["3"]["inputs"]["steps"] = 0
        with pytest.raises(PromptRejected) as info:
            await client.post_prompt(bad_steps, prompt_id=str(uuid.uuid4()))
        unknown = await graph(client)
        unknown["3"]["class_type"] = "NoSuchSampler"
        with pytest.raises(PromptRejected) as unknown_info:
            await client.post_prompt(unknown, prompt_id=str(uuid.uuid4()))
    (node_error,) = info.value.node_errors
    assert (node_error.node_id, node_error.input_name, node_error.type) == (
        "3",
        "steps",
        "value_smaller_than_min",
    )
    assert unknown_info.value.error_type == "invalid_prompt"
    assert [e.node_id for e in unknown_info.value.node_errors] == ["3"]


async def test_runtime_errors_are_typed_with_their_node() -> None:
    async with comfy_client() as (client, ws):
        # LatentUpscaleBy to 0x0: torch raises in that node (as recorded in 07).
        failing = await graph(client, seed=int(time.time()))
        failing["10"] = {
            "class_type": "LatentUpscaleBy",
            "inputs": {"samples": ["3", 0], "upscale_method": "nearest-exact", "scale_by": 0.01},
        }
        failing["8"]["inputs"]["samples"] = ["10", 0]
        prompt_id = str(uuid.uuid4())
        await client.post_prompt(failing, prompt_id=prompt_id)
        seen = await until(ws, end_of(prompt_id))
        entry = await client.history(prompt_id)
    (data,) = [m.data for m in seen if m.type == MessageType.EXECUTION_ERROR]
    error = execution_error(data)
    assert type(error) is ExecutionFailed
    assert (error.node_id, error.node_type) == ("10", "LatentUpscaleBy")
    assert entry is not None and isinstance(entry.error(), ExecutionFailed)


@pytest.mark.parametrize("prefix", ["../../comfyline-escape/x", "/tmp/comfyline-escape/x"])
async def test_save_image_refuses_a_prefix_outside_the_output_folder(prefix: str) -> None:
    # What the simulator's SaveImage answers too (tests/test_sim_images.py).
    async with comfy_client() as (client, ws):
        prompt_id = str(uuid.uuid4())
        await client.post_prompt(await graph(client, prefix=prefix), prompt_id=prompt_id)
        seen = await until(ws, end_of(prompt_id))
    (data,) = [m.data for m in seen if m.type == MessageType.EXECUTION_ERROR]
    error = execution_error(data)
    assert (error.node_id, error.node_type, error.exception_type) == ("9", "SaveImage", "Exception")
    assert str(data["exception_message"]).startswith(
        "**** ERROR: Saving image outside the output folder is not allowed."
    )


# --- cancel, interrupt, /free ---------------------------------------------------------------------


async def test_delete_and_interrupt_take_prompts_off_the_server() -> None:
    async with comfy_client() as (client, ws):
        running = str(uuid.uuid4())
        waiting = str(uuid.uuid4())
        slow = await graph(client, width=256, height=256, steps=30, seed=int(time.time()))
        await client.post_prompt(slow, prompt_id=running)
        await client.post_prompt(await graph(client, seed=1 + int(time.time())), prompt_id=waiting)
        await until(ws, lambda m: m.type == MessageType.PROGRESS and m.prompt_id == running)
        await client.delete_from_queue([waiting])
        assert waiting not in (await client.queue()).pending
        await client.interrupt(running)
        seen = await until(ws, end_of(running))
        entry = await client.history(running)
        assert await client.history(waiting) is None  # deleted unstarted: no trace
    assert MessageType.EXECUTION_INTERRUPTED in [m.type for m in seen]
    assert entry is not None and isinstance(entry.error(), ExecutionInterrupted)


async def test_free_empties_the_cache_so_the_same_graph_runs_again() -> None:
    async with comfy_client() as (client, ws):
        same = await graph(client, seed=int(time.time()))
        names, cached = [], []
        for free_first in (False, False, True):
            if free_first:
                await client.free(unload_models=True)
            prompt_id = str(uuid.uuid4())
            await client.post_prompt(same, prompt_id=prompt_id)
            seen = await until(ws, end_of(prompt_id))
            cached.append(
                [m.data["nodes"] for m in seen if m.type == MessageType.EXECUTION_CACHED][0]
            )
            entry = await client.history(prompt_id)
            assert entry is not None
            names.append([ref.filename for ref in entry.images])
    first, again, after_free = names
    assert again == first and sorted(cached[1]) == sorted(same)  # all cached, no new file
    assert after_free != first and cached[2] == []  # /free: nothing cached, a new file


# --- orders: batches, two in flight, reconnect, kill, Ctrl-C, restart -----------------------------


async def test_batch_file_names(tmp_path: Path) -> None:
    order_file = write_order(tmp_path, "real-batch", 4, overrides={"batch_size": 2})
    report = await pipeline.generate(order_file, settings=settings(tmp_path / "out"))
    folder = out_folder(order_file, tmp_path / "out")
    check_images(report, folder, 4)
    stems = [slot.stem for slot in plan(load(order_file)).slots]
    expected = sorted(f"{stem}_{i}.png" for stem in stems for i in (1, 2))
    assert sorted(image.file for image in report.images) == expected
    assert len({image.sha256 for image in report.images}) == 4  # four different images


def test_two_prompts_in_flight_never_more(tmp_path: Path) -> None:
    order_file = write_order(tmp_path, "real-inflight", 5)
    runner = start_runner(order_file, tmp_path / "out")
    depths = []
    while runner.poll() is None:
        depths.append(len(ours_on_server()))
        time.sleep(0.05)
    code, printed = finish(runner)
    assert code == 0, printed
    assert max(depths) == 2, depths  # one running, the next already waiting: no idle gap


class CuttableProxy:
    """A TCP proxy on 127.0.0.1 to the server, whose connections can all be cut at once: a
    network drop between comfyline and ComfyUI (HTTP keep-alive and WebSocket alike)."""

    def __init__(self) -> None:
        self.cuts = 0
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> str:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        self.cut()
        await self._server.wait_closed()

    def cut(self) -> None:
        self.cuts += 1
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        target = urlsplit(URL)
        up_reader, up_writer = await asyncio.open_connection(target.hostname, target.port)
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
            writer.transport.abort()
            self._writers.discard(writer)


async def test_a_dropped_connection_mid_order_is_reconnected(tmp_path: Path) -> None:
    order_file = write_order(tmp_path, "real-reconnect", 4, steps=6)
    db = ledger_path(out_folder(order_file, tmp_path / "out"))
    proxy = CuttableProxy()
    async with proxy as url:

        async def cut_after_the_first_image() -> None:
            while not (db.exists() and read_status(db).counts.done >= 1):
                await asyncio.sleep(0.05)
            proxy.cut()

        cutter = asyncio.create_task(cut_after_the_first_image())
        report = await pipeline.generate(order_file, settings=settings(tmp_path / "out", url))
        await cutter
    assert proxy.cuts >= 1
    check_images(report, out_folder(order_file, tmp_path / "out"), 4)
    assert [image.attempts for image in report.images] == [1] * 4  # nothing sent twice


def test_a_killed_runner_is_resumed_and_collects_from_history(tmp_path: Path) -> None:
    order_file = write_order(tmp_path, "real-collect", 3, steps=4)
    runner = start_runner(order_file, tmp_path / "out")
    wait_for(ours_on_server, "a prompt of ours on the server")
    runner.kill()
    finish(runner)
    wait_for(lambda: not ours_on_server(), "the server to finish what it holds")
    code, printed = finish(start_runner(order_file, tmp_path / "out"))
    assert code == 0, printed
    assert "collected from the server's history" in printed
    folder = out_folder(order_file, tmp_path / "out")
    check_images(read_report(folder / REPORT_FILE), folder, 3)


def test_ctrl_c_cancels_our_prompts_on_the_server(tmp_path: Path) -> None:
    order_file = write_order(tmp_path, "real-ctrl-c", 4, steps=10)
    runner = start_runner(order_file, tmp_path / "out")
    wait_for(lambda: len(ours_on_server()) == 2, "two prompts of ours on the server")
    runner.send_signal(signal.SIGINT)
    code, printed = finish(runner)
    assert code == 130, printed
    assert "Resume with: comfyline run-order" in printed and "Traceback" not in printed
    # ComfyUI stops an interrupted prompt at its next sampler step or node, so it may still be
    # listed as running for a moment after the runner has gone.
    wait_for(lambda: not ours_on_server(), "our prompts to leave the server")
    folder = out_folder(order_file, tmp_path / "out")
    kept = {image.prompt_id for image in read_report(folder / REPORT_FILE).images}
    states = {}
    for prompt_id in sent(order_file, tmp_path / "out"):
        entry = parse_history(history(prompt_id), prompt_id)
        if entry is not None:
            states[prompt_id] = type(entry.error()).__name__
    assert "ExecutionInterrupted" in states.values(), states
    # Every prompt of ours that the server finished is an image the run kept: the one running
    # at the signal was interrupted, the one waiting deleted (no history at all).
    assert {p for p, state in states.items() if state == "NoneType"} <= kept, states
    code, printed = finish(start_runner(order_file, tmp_path / "out"))
    assert code == 0, printed
    folder = out_folder(order_file, tmp_path / "out")
    check_images(read_report(folder / REPORT_FILE), folder, 4)


@pytest.mark.skipif(not RESTART, reason="set REAL_COMFYUI_RESTART to a command that restarts it")
def test_a_server_restart_while_the_runner_is_down_is_resumed(tmp_path: Path) -> None:
    order_file = write_order(tmp_path, "real-restart", 3, steps=10)
    runner = start_runner(order_file, tmp_path / "out")
    wait_for(ours_on_server, "a prompt of ours on the server")
    runner.kill()
    finish(runner)
    subprocess.run(RESTART, shell=True, check=True, timeout=WAIT_S)

    def answers() -> bool:
        with contextlib.suppress(httpx.HTTPError):
            return httpx.get(f"{URL}/system_stats", timeout=5).status_code == 200
        return False

    wait_for(answers, "the server to answer again")
    code, printed = finish(start_runner(order_file, tmp_path / "out"))
    assert code == 0, printed
    folder = out_folder(order_file, tmp_path / "out")
    check_images(read_report(folder / REPORT_FILE), folder, 3)
    loaded = load(order_file)
    with Ledger.open(ledger_path(folder), loaded.order.id, pipeline.fingerprint(loaded)) as ledger:
        reasons = [e.detail.get("reason", "") for e in ledger.events("resent")]
    # Lost by the restart: sent again under the same prompt id, as the same attempt.
    assert any("unknown on the server" in reason for reason in reasons), reasons
