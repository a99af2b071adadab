"""The simulated ComfyUI server's state and its single worker, independent of HTTP.

One :class:`Simulator` holds what a ComfyUI process holds (queue, history, node cache, the
connected sockets, whether the model is loaded) plus what a simulator needs (faults, the thermal
model, measurements). The worker runs prompts one at a time in ascending ``number`` and sends
the WebSocket messages in the order the recordings show (see ``_execute``).
"""

from __future__ import annotations

import asyncio
import heapq
import json
import logging
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from PIL import Image

from comfyline.sim import graph, nodes, render
from comfyline.sim.config import Faults, SimConfig, deep_json
from comfyline.sim.nodeinfo import load_node_defs
from comfyline.sim.stats import PromptRecord, SimStats
from comfyline.sim.thermal import ThermalModel
from comfyline.sim.validation import validate_prompt

log = logging.getLogger(__name__)

MAX_HISTORY = 10000
OOM_MESSAGE = (
    "Allocation on device \nThis error means you ran out of memory on your GPU.\n\n"
    "TIPS: If the workflow worked before you might have accidentally set the batch_size to a "
    "large number.\n"
)
_TRACEBACK = [
    '  File "/opt/ComfyUI/execution.py", line 496, in execute\n'
    "    output_data, output_ui, has_subgraph, has_pending_tasks = await get_output_data(...)\n"
]


class Socket(Protocol):
    """What the simulator needs of a WebSocket connection."""

    async def send_text(self, data: str) -> None: ...

    async def close(self, code: int = 1000, reason: str | None = None) -> None: ...


class _Interrupted(Exception):
    pass


class _Blackout(Exception):
    pass


@dataclass
class _NodeResult:
    outputs: list[nodes.Value | None]
    ui: dict[str, Any] | None = None


@dataclass
class _Run:
    """The state of the prompt being executed."""

    number: float
    prompt_id: str
    prompt: dict[str, Any]
    extra: dict[str, Any]
    outputs: list[str]
    record: PromptRecord
    messages: list[list[Any]] = field(default_factory=list)
    progress: dict[str, dict[str, Any]] = field(default_factory=dict)
    executed: list[str] = field(default_factory=list)
    ui: dict[str, Any] = field(default_factory=dict)
    #: The resolved inputs of the node running now (for execution_error's current_inputs).
    inputs: dict[str, Any] = field(default_factory=dict)
    #: The fixed prompt time was spent in the first sampler (a graph without one spends it all
    #: at the end).
    fixed_done: bool = False

    @property
    def client_id(self) -> str | None:
        value = self.extra.get("client_id")
        return str(value) if value is not None else None

    def item(self) -> list[Any]:
        return [self.number, self.prompt_id, self.prompt, self.extra, self.outputs]


class _ModelClock:
    """Model time: real time / ``time_scale`` while idle, and exactly the simulated durations
    while a prompt works, so sleep overshoot (real, machine-dependent) never heats the card."""

    def __init__(self, clock: Callable[[], float], time_scale: float) -> None:
        self._clock = clock
        self._scale = time_scale
        self._anchor_real = clock()
        self._anchor_model = 0.0
        self._working = False

    def now(self) -> float:
        if self._working:
            return self._anchor_model
        return self._anchor_model + (self._clock() - self._anchor_real) / self._scale

    def begin_work(self) -> None:
        self._anchor_model = self.now()
        self._working = True

    def advance(self, model_seconds: float) -> None:
        if self._working:
            self._anchor_model += model_seconds

    def end_work(self) -> None:
        if self._working:
            self._working = False
            self._anchor_real = self._clock()


def _now_ms() -> int:
    return int(time.time() * 1000)


class Simulator:
    """A simulated ComfyUI server: state, worker and the operations the routes call."""

    def __init__(self, config: SimConfig, *, clock: Callable[[], float] = time.monotonic):
        self.config = config
        self.faults: Faults = config.faults
        self.clock = clock
        self._model_clock = _ModelClock(clock, config.time_scale)
        self._slept_s = 0.0  # real seconds the running prompt spent in simulated work
        # The fixed time covers a prompt from its start to its last message. Most of it is spent
        # in the sampler, less what came after it last time (_after_sampler_s); what is left is
        # topped up at the end, less what the closing messages took last time (_tail_s).
        self._after_sampler_s = 0.0
        self._tail_s = 0.0
        self._sampler_done_s: float | None = None
        self._fixed_done_s: float | None = None
        self.node_defs = load_node_defs(
            config.checkpoints,
            config.loras,
            config.upscale_models,
            config.object_info_files,
            vaes=config.vaes,
        )
        self.stats = SimStats()
        self.thermal = ThermalModel(config.thermal, self.model_time) if config.thermal else None
        #: Set by the runner: called with the real seconds to stay away; None in-process.
        self.restart_hook: Callable[[float], None] | None = None
        self._worker_task: asyncio.Task[None] | None = None
        self._wakeup: asyncio.Event | None = None
        self._interrupt: asyncio.Event | None = None
        self.reset()

    # --- state -----------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget what a restarted ComfyUI forgets: queue, history, cache, sockets, model."""
        self.number = 0
        self._heap: list[tuple[float, int, list[Any]]] = []
        self._seq = 0
        self.running: _Run | None = None
        self.history: dict[str, dict[str, Any]] = {}
        self.cache: dict[str, _NodeResult] = {}
        self.sockets: dict[str, Socket] = {}
        self.model_loaded = False
        self.last_node_id: str | None = None
        self.executed_since_restart = 0
        self._counters: dict[tuple[str, str], int] = {}
        self._free_request: dict[str, Any] | None = None
        self._stopping = False
        #: Files whose next /view is cut off (the short_view fault).
        self._short_views: set[Path] = set()
        #: New WebSockets are refused until the queue is empty (the ws_down_until_idle fault).
        self._ws_down = False

    def model_time(self) -> float:
        """Model seconds since start (see :class:`_ModelClock`)."""
        return self._model_clock.now()

    def queue_remaining(self) -> int:
        """Pending plus running prompts (ComfyUI's ``queue_remaining``)."""
        return len(self._heap) + (1 if self.running else 0)

    def set_faults(self, faults: Faults) -> None:
        """Replace the faults in force."""
        self.faults = faults

    # --- worker lifecycle ------------------------------------------------------------------

    async def start(self) -> None:
        """Start the worker (call inside the serving event loop)."""
        self._wakeup = asyncio.Event()
        self._interrupt = asyncio.Event()
        self._stopping = False
        if self._heap:
            self._wakeup.set()
        self._worker_task = asyncio.create_task(self._worker(), name="comfy-sim-worker")

    async def stop(self) -> None:
        """Stop the worker; a running prompt is abandoned."""
        self._stopping = True
        task, self._worker_task = self._worker_task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        run = self.running
        if run is not None and run.record.end_s is None:  # cut off by a restart or shutdown
            run.record.status, run.record.end_s = "lost", self.clock()
        if self.thermal is not None:
            self.thermal.set_busy(False)
        self._model_clock.end_work()

    # --- operations the routes call --------------------------------------------------------

    async def submit(self, body: Any) -> tuple[int, dict[str, Any]]:
        """POST /prompt. Returns (status, JSON body); raises on bodies ComfyUI answers 500 to."""
        if not isinstance(body, dict):
            raise TypeError(f"body must be a JSON object, not {type(body).__name__}")
        if "number" in body:
            number: float = float(body["number"])
        else:
            number = self.number
            if body.get("front"):
                number = -number
            self.number += 1
        if "prompt" not in body:
            error = {
                "type": "no_prompt",
                "message": "No prompt provided",
                "details": "No prompt provided",
                "extra_info": {},
            }
            return 400, {"error": error, "node_errors": {}}
        prompt = body["prompt"]
        self.refresh_input_files()
        result = validate_prompt(prompt, self.node_defs)
        if result.error is not None:
            return 400, result.error_body()
        prompt_id = str(body.get("prompt_id", uuid.uuid4()))
        if self.faults.own_prompt_ids:
            prompt_id = str(uuid.uuid4())
        extra = dict(body.get("extra_data") or {})
        if "client_id" in body:
            extra["client_id"] = body["client_id"]
        self._seq += 1
        self.stats.posted += 1
        item = [number, prompt_id, prompt, extra, result.outputs]
        heapq.heappush(self._heap, (number, self._seq, item))
        if self._wakeup is not None:
            self._wakeup.set()
        await self.broadcast_status()
        return 200, {"prompt_id": prompt_id, "number": number, "node_errors": result.node_errors}

    def refresh_input_files(self) -> None:
        """LoadImage offers the files in the input folder, as ComfyUI lists them per request."""
        spec = self.node_defs.get("LoadImage", {}).get("input", {}).get("required", {})
        if "image" in spec:
            folder = self.config.resolved_input_dir
            files = (
                sorted(p.name for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []
            )
            spec["image"] = [files, *spec["image"][1:]]

    def queue_json(self) -> dict[str, Any]:
        """GET /queue: the running item and the raw (unsorted) heap of pending items."""
        running = [self.running.item()] if self.running else []
        return {"queue_running": running, "queue_pending": [e[2] for e in self._heap]}

    async def queue_change(self, body: dict[str, Any]) -> None:
        """POST /queue: ``{"clear": true}`` and/or ``{"delete": [ids]}`` of pending prompts."""
        if body.get("clear"):
            self._heap.clear()
        doomed = set(body.get("delete") or [])
        if doomed:
            self._heap = [e for e in self._heap if e[2][1] not in doomed]
            heapq.heapify(self._heap)
        await self.broadcast_status()

    def history_json(self, max_items: int | None, offset: int) -> dict[str, Any]:
        """GET /history: newest ``max_items`` oldest first, or from ``offset``."""
        items = list(self.history.items())
        if max_items is not None:
            start = offset if offset >= 0 else max(0, len(items) - max_items)
            items = items[start : start + max_items]
        elif offset > 0:
            items = items[offset:]
        return dict(items)

    def history_change(self, body: dict[str, Any]) -> None:
        """POST /history: ``{"clear": true}`` and/or ``{"delete": [ids]}``."""
        if body.get("clear"):
            self.history.clear()
        for prompt_id in body.get("delete") or []:
            self.history.pop(prompt_id, None)

    def interrupt(self, prompt_id: str | None) -> None:
        """POST /interrupt: the running prompt (or only if its id matches) stops at next step."""
        if self.running is None or self._interrupt is None:
            return
        if prompt_id is None or prompt_id == self.running.prompt_id:
            self._interrupt.set()

    def free(self, body: dict[str, Any]) -> None:
        """POST /free: applied now when idle, else after the running prompt (as ComfyUI)."""
        if self.running is None:
            self._apply_free(body)
        else:
            self._free_request = body

    def _apply_free(self, body: dict[str, Any]) -> None:
        if body.get("unload_models"):
            self.model_loaded = False
        if body.get("free_memory"):
            self.cache.clear()

    def vram_free(self) -> int:
        """Free VRAM: the total less the loaded model."""
        used = self.config.model_vram_bytes if self.model_loaded else 0
        return max(0, self.config.vram_total_bytes - used)

    # --- sockets ---------------------------------------------------------------------------

    def accepts_sockets(self) -> bool:
        """False while the ws_down_until_idle fault refuses new WebSockets (counted), and while
        a restart or blackout is under way (a server going down takes no new clients)."""
        if self._stopping:
            return False
        if self._ws_down and self.queue_remaining() == 0:
            self._ws_down = False
        if self._ws_down:
            self.stats.ws_refused += 1
        return not self._ws_down

    async def connect(self, sid: str, socket: Socket) -> None:
        """A socket connected: it takes over ``sid``; gets status and the late-join replay."""
        self.sockets[sid] = socket
        status = {"status": {"exec_info": {"queue_remaining": self.queue_remaining()}}, "sid": sid}
        await self._send_one(socket, "status", status)
        run = self.running
        if run is not None and run.client_id == sid and self.last_node_id is not None:
            await self._send_one(socket, "executing", {"node": self.last_node_id})

    def disconnect(self, sid: str, socket: Socket) -> None:
        """A socket went away. Like ComfyUI, this forgets ``sid`` even when a newer socket had
        taken it over, so the older one stays silent for good."""
        self.sockets.pop(sid, None)

    async def close_sockets(self) -> None:
        """Close every WebSocket (a dropped-WebSocket fault or a restart)."""
        sockets = list(self.sockets.values())
        self.sockets.clear()
        for socket in sockets:
            try:
                await socket.close(code=1012)
            except Exception:  # noqa: BLE001 - already gone is fine
                pass

    async def broadcast_status(self) -> None:
        """Send the queue count to every socket."""
        data = {"status": {"exec_info": {"queue_remaining": self.queue_remaining()}}}
        await self._send(None, "status", data)

    async def _send(self, sid: str | None, event: str, data: dict[str, Any]) -> None:
        if sid is None:
            targets = list(self.sockets.items())
        else:
            socket = self.sockets.get(sid)
            targets = [(sid, socket)] if socket is not None else []
        for target_sid, socket in targets:
            if not await self._send_one(socket, event, data):
                if self.sockets.get(target_sid) is socket:
                    del self.sockets[target_sid]

    async def _send_one(self, socket: Socket, event: str, data: dict[str, Any]) -> bool:
        try:
            if self.faults.deep_json_ws:
                await socket.send_text(deep_json())
            await socket.send_text(json.dumps({"type": event, "data": data}))
        except Exception:  # noqa: BLE001 - a dead socket is dropped, as ComfyUI does
            return False
        return True

    async def _to_client(self, run: _Run, event: str, data: dict[str, Any]) -> None:
        """Messages about a prompt go to its client only; without one, to nobody."""
        if run.client_id is not None:
            await self._send(run.client_id, event, data)

    async def _to_client_or_all(self, run: _Run, event: str, data: dict[str, Any]) -> None:
        """progress, progress_state, execution_interrupted: broadcast when no client_id."""
        await self._send(run.client_id, event, data)

    async def _exec_message(self, run: _Run, event: str, data: dict[str, Any]) -> None:
        data = {**data, "prompt_id": run.prompt_id, "timestamp": _now_ms()}
        run.messages.append([event, data])
        if event == "execution_interrupted":
            await self._to_client_or_all(run, event, data)
        else:
            await self._to_client(run, event, data)

    # --- the worker ------------------------------------------------------------------------

    async def _worker(self) -> None:
        assert self._wakeup is not None
        while not self._stopping:
            if not self._heap:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            _, _, item = heapq.heappop(self._heap)
            await self._run_item(item)

    async def _run_item(self, item: list[Any]) -> None:
        number, prompt_id, prompt, extra, outputs = item
        record = self.stats.start(prompt_id, number, self.clock())
        record.start_model_s = self.model_time()
        run = _Run(number, prompt_id, prompt, extra, outputs, record)
        self.running = run
        await self.broadcast_status()
        if record.execution in self.faults.drop_ws_on_prompts:
            await self._drop_sockets()
        if record.execution in self.faults.blackout_on_prompts:
            record.status, record.end_s = "lost", self.clock()
            self.stats.blackouts += 1
            self.request_restart(self.faults.blackout_away_s)
            return
        try:
            status = await self._execute(run)
        except _Blackout:
            record.status, record.end_s = "lost", self.clock()
            self._blackout()
            return
        self._finish(run, status)
        self.running = None
        self.last_node_id = None
        await self.broadcast_status()
        await self._to_client(run, "executing", {"node": None, "prompt_id": prompt_id})
        record.status, record.end_s = status, self.clock()
        record.end_model_s = self.model_time()
        if self._sampler_done_s is not None:  # learn how long the rest of a prompt takes
            self._after_sampler_s = record.end_s - self._sampler_done_s
            self._sampler_done_s = None
        if self._fixed_done_s is not None:  # and how long its closing messages take
            self._tail_s = record.end_s - self._fixed_done_s
            self._fixed_done_s = None
        await self._after_prompt()

    def _finish(self, run: _Run, status: str) -> None:
        ok = status == "success"
        self.history[run.prompt_id] = {
            "prompt": run.item(),
            "outputs": run.ui if ok else {},
            "status": {
                "status_str": "success" if ok else "error",
                "completed": ok,
                "messages": run.messages,
            },
            "meta": {n: _meta(n) for n in run.ui} if ok else {},
        }
        while len(self.history) > MAX_HISTORY:
            self.history.pop(next(iter(self.history)))
        # ComfyUI's classic cache keeps what the latest prompt used and drops the rest.
        keep = set(graph.signatures(run.prompt).values())
        self.cache = {k: v for k, v in self.cache.items() if k in keep}

    async def _after_prompt(self) -> None:
        self.executed_since_restart += 1
        if self._free_request is not None:
            self._apply_free(self._free_request)
            self._free_request = None
        faults = self.faults
        if faults.drop_ws_after_prompts and len(self.stats.prompts) >= faults.drop_ws_after_prompts:
            self.faults = Faults.from_json({"drop_ws_after_prompts": None}, faults)
            await self._drop_sockets()
        after = faults.restart_after_prompts
        if after and self.executed_since_restart >= after:
            self.faults = Faults.from_json({"restart_after_prompts": None}, self.faults)
            self.request_restart(0.5 * self.config.time_scale)

    async def _drop_sockets(self) -> None:
        """The dropped-WebSocket faults: close every socket, maybe refuse new ones a while."""
        self.stats.ws_drops += 1
        self._ws_down = self.faults.ws_down_until_idle
        await self.close_sockets()

    def request_restart(self, away_s: float) -> None:
        """Restart: connections dropped, queue/history/cache lost, away ``away_s`` real s."""
        self.stats.restarts += 1
        self._stopping = True
        if self.restart_hook is not None:
            self.restart_hook(away_s)
        else:  # in-process (no port to close): just forget everything
            sockets = list(self.sockets.values())
            self.reset()
            for socket in sockets:
                asyncio.ensure_future(socket.close(code=1012))
            self._stopping = False

    def _blackout(self) -> None:
        assert self.config.thermal is not None
        self.stats.blackouts += 1
        self.request_restart(self.config.thermal.blackout_s * self.config.time_scale)

    async def _execute(self, run: _Run) -> str:
        assert self._interrupt is not None
        self._interrupt.clear()
        await self._exec_message(run, "execution_start", {})
        sigs = graph.signatures(run.prompt)
        cached = [n for n in run.prompt if sigs[n] in self.cache]
        await self._exec_message(run, "execution_cached", {"nodes": cached})
        results = {n: self.cache[sigs[n]] for n in cached}
        for node_id in run.outputs:
            replayed = results[node_id].ui if node_id in results else None
            if replayed:  # a cached output node replays its old files; nothing is written
                run.ui[node_id] = replayed
                await self._executed(run, node_id, replayed)
                await self._progress_state(run, node_id, 1, 1, "finished")
        order = graph.execution_order(run.prompt, run.outputs, set(cached), self.node_defs)
        run.record.cached = not order
        if not order:
            await self._exec_message(run, "execution_success", {})
            return "success"
        await self._load_model()
        self._model_clock.begin_work()
        if self.thermal is not None:
            self.thermal.set_busy(True)
            run.record.start_temperature_c = round(self.thermal.temperature(), 3)
        try:
            self._slept_s = 0.0
            for node_id in order:
                results[node_id] = await self._run_node(run, node_id, results)
                self.cache[sigs[node_id]] = results[node_id]
                run.executed.append(node_id)
            await self._fixed_topup(run)
        except nodes.NodeFailure as failure:
            await self._exec_message(run, "execution_error", self._error_data(run, failure))
            return "error"
        except _Interrupted:
            at = self.last_node_id
            node_type = run.prompt[at]["class_type"] if at else None
            data = {"node_id": at, "node_type": node_type, "executed": run.executed}
            await self._exec_message(run, "execution_interrupted", data)
            return "interrupted"
        finally:
            if self.thermal is not None:
                self.thermal.set_busy(False)
                run.record.end_temperature_c = round(self.thermal.temperature(), 3)
            self._model_clock.end_work()
        self._check_blackout()
        await self._exec_message(run, "execution_success", {})
        return "success"

    async def _load_model(self) -> None:
        # Loading weights is disk and bus work: the card does not heat up for it.
        if not self.model_loaded:
            if self.config.model_load_s > 0:
                await asyncio.sleep(self.config.model_load_s * self.config.time_scale)
            self.model_loaded = True

    async def _work(self, model_seconds: float) -> None:
        if model_seconds > 0:
            await asyncio.sleep(model_seconds * self.config.time_scale)
            self._slept_s += model_seconds * self.config.time_scale
            self._model_clock.advance(model_seconds)
        self._check_blackout()

    def _fixed_left(self, run: _Run, after_s: float) -> float:
        """Real seconds of the prompt's fixed time still to spend, ``after_s`` kept back."""
        elapsed = self.clock() - run.record.start_s - self._slept_s
        return max(0.0, self.config.fixed_prompt_s * self.config.time_scale - elapsed - after_s)

    async def _fixed_work(self, run: _Run) -> None:
        """The prompt's fixed time, spent in its first sampler (after the steps): where a real
        server spends its time and where an interrupt stops it, before anything is saved."""
        if run.fixed_done or self.config.fixed_prompt_s <= 0:
            return
        run.fixed_done = True
        await self._pause(self._fixed_left(run, self._after_sampler_s))
        self._sampler_done_s = self.clock()
        self._check_blackout()

    async def _fixed_topup(self, run: _Run) -> None:
        """What is left of the fixed time at the end of the prompt (all of it in a graph
        without a sampler), with the simulator's own work (rendering, saving) counted in, so
        that ``fixed_prompt_s`` is what one prompt takes, as on a real server."""
        fixed = self.config.fixed_prompt_s
        if fixed > 0:
            # Every node ran, outputs included: like ComfyUI, too late to be interrupted.
            await asyncio.sleep(self._fixed_left(run, self._tail_s))
            self._fixed_done_s = self.clock()
            self._model_clock.advance(fixed)
        self._check_blackout()

    async def _pause(self, seconds: float) -> None:
        """Sleep ``seconds``, cut short by /interrupt (then raises _Interrupted)."""
        assert self._interrupt is not None
        try:
            async with asyncio.timeout(seconds):
                await self._interrupt.wait()
        except TimeoutError:
            return
        raise _Interrupted()

    def _check_blackout(self) -> None:
        thermal = self.thermal
        if thermal is not None and thermal.temperature() > thermal.config.blackout_c:
            raise _Blackout()

    def _check_interrupt(self) -> None:
        assert self._interrupt is not None
        if self._interrupt.is_set():
            raise _Interrupted()

    async def _run_node(
        self, run: _Run, node_id: str, results: dict[str, _NodeResult]
    ) -> _NodeResult:
        self._check_interrupt()
        node = run.prompt[node_id]
        class_type = node["class_type"]
        self.last_node_id = node_id
        await self._progress_state(run, node_id, 0.0, 1.0, "running")
        await self._to_client(
            run, "executing", {"node": node_id, "display_node": node_id, "prompt_id": run.prompt_id}
        )
        inputs = self._resolve(node, results)
        run.inputs = inputs
        work = nodes.sampler_work(class_type, inputs)
        final: tuple[float, float] = (1.0, 1.0)
        if work is not None:
            await self._sample(run, node_id, work)
            await self._fixed_work(run)
            final = (work.steps, work.steps)
        if class_type == "ImageUpscaleWithModel" and self._stuck(run):
            assert self._interrupt is not None
            await self._interrupt.wait()  # an upscale that hangs, as a sampler can
            raise _Interrupted()
        definition = self.node_defs[class_type]
        if class_type == "LoadImage":
            outputs: list[nodes.Value | None] = self._load_image(str(inputs.get("image", "")))
        else:
            outputs = nodes.evaluate(
                class_type,
                inputs,
                list(definition.get("output", [])),
                self.config.upscale_model_factor,
            )
        ui = await self._save(run, class_type, inputs)
        if ui:
            run.ui[node_id] = ui
            await self._executed(run, node_id, ui)
        await self._progress_state(run, node_id, final[0], final[1], "finished")
        return _NodeResult(outputs=outputs, ui=ui)

    def _load_image(self, name: str) -> list[nodes.Value | None]:
        path = self.config.resolved_input_dir / name
        try:
            with Image.open(path) as image:
                width, height = image.size
        except FileNotFoundError as exc:
            raise nodes.NodeFailure(
                "FileNotFoundError", f"[Errno 2] No such file or directory: '{path}'\n"
            ) from exc
        except OSError as exc:
            raise nodes.NodeFailure("PIL.UnidentifiedImageError", f"{exc}\n") from exc
        return [
            nodes.Value("IMAGE", width, height, 1, None, name),
            nodes.Value("MASK", width, height),
        ]

    def _resolve(self, node: dict[str, Any], results: dict[str, _NodeResult]) -> nodes.Inputs:
        resolved: nodes.Inputs = {}
        for name, value in node.get("inputs", {}).items():
            if isinstance(value, list) and len(value) == 2 and str(value[0]) in results:
                outs = results[str(value[0])].outputs
                resolved[name] = outs[value[1]] if value[1] < len(outs) else None
            else:
                resolved[name] = value
        return resolved

    async def _sample(self, run: _Run, node_id: str, work: nodes.SamplerWork) -> None:
        if self._check_faults(run, work):
            assert self._interrupt is not None
            await self._interrupt.wait()  # stuck: only an interrupt (or shutdown) ends it
            raise _Interrupted()
        step_s = self.config.step_s * work.pixels / (512 * 512)
        for step in range(1, work.steps + 1):
            self._check_interrupt()
            await self._work(step_s)
            self._check_interrupt()
            await self._progress_state(run, node_id, step, work.steps, "running")
            data = {"value": step, "max": work.steps, "prompt_id": run.prompt_id, "node": node_id}
            await self._to_client_or_all(run, "progress", data)

    def _stuck(self, run: _Run) -> bool:
        return run.record.execution in self.faults.stuck_on_prompts

    def _check_faults(self, run: _Run, work: nodes.SamplerWork) -> bool:
        """Raise the failure faults ask for; True when this prompt is to hang (stuck)."""
        faults = self.faults
        execution = run.record.execution
        if self._stuck(run) or (work.seed is not None and work.seed in faults.stuck_on_seeds):
            return True
        if execution in faults.error_on_prompts or (
            work.seed is not None and work.seed in faults.error_on_seeds
        ):
            raise nodes.NodeFailure(
                "RuntimeError",
                f"simulated failure (comfyline simulator fault) in prompt #{execution}\n",
            )
        if faults.oom_above_pixels is not None and work.pixels > faults.oom_above_pixels:
            self.model_loaded = False  # ComfyUI unloads every model after an OOM
            raise nodes.NodeFailure("torch.OutOfMemoryError", OOM_MESSAGE)
        return False

    async def _progress_state(
        self, run: _Run, node_id: str, value: float, maximum: float, state: str
    ) -> None:
        run.progress[node_id] = {
            "value": value,
            "max": maximum,
            "state": state,
            "node_id": node_id,
            "prompt_id": run.prompt_id,
            "display_node_id": node_id,
            "parent_node_id": None,
            "real_node_id": node_id,
        }
        data = {"prompt_id": run.prompt_id, "nodes": dict(run.progress)}
        await self._to_client_or_all(run, "progress_state", data)

    async def _executed(self, run: _Run, node_id: str, ui: dict[str, Any]) -> None:
        output: Any = [ui] if run.record.execution in self.faults.list_output_on_prompts else ui
        data = {"node": node_id, "display_node": node_id, "output": output}
        data["prompt_id"] = run.prompt_id
        await self._to_client(run, "executed", data)

    def _error_data(self, run: _Run, failure: nodes.NodeFailure) -> dict[str, Any]:
        node_id = self.last_node_id
        inputs = run.inputs
        return {
            "node_id": node_id,
            "node_type": run.prompt[node_id]["class_type"] if node_id else None,
            "executed": list(run.executed),
            "exception_message": str(failure),
            "exception_type": failure.exception_type,
            "traceback": list(_TRACEBACK),
            "current_inputs": {k: [_plain(v)] for k, v in inputs.items()},
            "current_outputs": list(run.prompt),
        }

    # --- images ----------------------------------------------------------------------------

    async def _save(
        self, run: _Run, class_type: str, inputs: nodes.Inputs
    ) -> dict[str, Any] | None:
        if class_type not in ("SaveImage", "PreviewImage"):
            return None
        image = inputs.get("images")
        if not isinstance(image, nodes.Value):
            image = nodes.Value("IMAGE")
        if class_type == "SaveImage":
            prefix, base, kind = str(inputs.get("filename_prefix", "ComfyUI")), None, "output"
        else:
            prefix, kind = "ComfyUI_temp_" + uuid.uuid4().hex[:5], "temp"
            base = self.config.resolved_temp_dir
        out_dir = base or self.config.output_dir
        folder, subfolder, stem = render.save_path(out_dir, prefix, image.width, image.height)
        _refuse_outside(out_dir, folder)
        counter = self._next_counter(folder, stem)
        extra_pnginfo = run.extra.get("extra_pnginfo")
        info = render.png_info(
            run.prompt, extra_pnginfo if isinstance(extra_pnginfo, dict) else None
        )
        execution, faults = run.record.execution, self.faults
        width, height = image.width, image.height
        if execution in faults.wrong_size_on_prompts:
            width, height = max(1, width // 2), max(1, height // 2)
        black = execution in faults.black_image_on_prompts or bool(
            faults.black_image_on_text and faults.black_image_on_text in image.text
        )
        noise = execution in faults.noise_images_on_prompts
        drawn = "black" if black else "noise" if noise else "picture"  # (black wins)
        images = []
        saved = image.batch
        if execution in faults.extra_images_on_prompts:
            saved += faults.extra_images
        for index in range(saved):
            name = f"{stem}_{counter + index:05}_.png"
            # Drawn and saved in a worker thread, as ComfyUI runs prompts in a thread of its
            # own: the server answers /view and /prompt while it makes the next image.
            await asyncio.to_thread(
                render.draw_and_save,
                drawn,
                width,
                height,
                image.seed,
                image.text,
                index,
                folder / name,
                info,
            )
            self._damage(execution, folder / name)
            self.stats.files_written += 1
            images.append({"filename": name, "subfolder": subfolder, "type": kind})
        self._counters[(str(folder), stem)] = counter + saved
        return {"images": images}

    def _damage(self, execution: int, path: Path) -> None:
        """Apply the image faults of prompt ``execution`` to the file just saved."""
        faults = self.faults
        if execution in faults.corrupt_image_on_prompts:
            path.write_bytes(render.PNG_SIGNATURE + b"comfyline simulator: not an image" * 8)
        elif execution in faults.truncated_image_on_prompts:
            data = path.read_bytes()
            path.write_bytes(data[: len(data) // 2])
        if execution in faults.short_view_on_prompts:
            self._short_views.add(path.resolve())

    def take_short_view(self, path: Path) -> bool:
        """Whether this /view of ``path`` is to be cut off (once per file; counted)."""
        resolved = path.resolve()
        if resolved not in self._short_views:
            return False
        self._short_views.discard(resolved)
        self.stats.short_views += 1
        return True

    def _next_counter(self, folder: Any, stem: str) -> int:
        key = (str(folder), stem)
        if key not in self._counters:
            self._counters[key] = render.next_counter(folder, stem)
        return self._counters[key]


def _refuse_outside(output_dir: Path, folder: Path) -> None:
    """SaveImage refuses a filename_prefix that leads out of its output folder (``../..``, an
    absolute path): the node fails with an ``Exception`` execution_error, as a real server's
    does (observed over its API; the wording here is our own)."""
    root = os.path.abspath(output_dir)
    full = os.path.abspath(folder)
    common = os.path.commonpath((root, full))
    if common != root:
        raise nodes.NodeFailure(
            "Exception",
            f"SaveImage may not write outside the output folder {root} (asked for {full})",
        )


def _meta(node_id: str) -> dict[str, Any]:
    return {
        "node_id": node_id,
        "display_node": node_id,
        "parent_node": None,
        "real_node_id": node_id,
    }


def _plain(value: Any) -> Any:
    """A constant as ComfyUI reports it in current_inputs; anything else as its repr."""
    return value if isinstance(value, str | int | float | bool) or value is None else repr(value)
