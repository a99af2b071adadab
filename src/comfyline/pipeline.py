"""``pipeline.generate(order)``: an order in, a finished series out, on a crash-safe ledger.

The run, end to end:

1. plan the order's slots (one per prompt) and record them in the order's SQLite ledger;
   an order whose slots are all done does nothing and says so;
2. check everything against the server before any GPU time: it answers, the checkpoint exists,
   the filled graph fits its ``/object_info``, sampler and scheduler are known;
3. reconcile the slots a previous run left in flight: collect what the server finished while
   we were down (from its history), resubmit what it lost;
4. stream the remaining slots through ``ComfyUIAdapter.generate_batch``, each recorded in the
   ledger (with its deterministic prompt id) *before* it is sent, paced by the hardware guard;
5. write the images' parameters into each PNG, mark the slot done with its sha256, and at the
   end write ``generation_report.json``, the contact sheet and the run chart.

Ctrl-C cancels the prompts in flight on the server, saves the state and re-raises; the CLI
prints the command that resumes. A kill -9 loses nothing recorded: the next run reconciles.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console

from comfyline import __version__
from comfyline.adapters.comfyui import ComfyUIAdapter
from comfyline.errors import (
    ComfyError,
    ComfyUnavailable,
    ConfigError,
    GuardTripped,
    OutOfMemory,
    PromptRejected,
)
from comfyline.generation import GenerationRequest, GenerationResult
from comfyline.guard import Guard, GuardEvent, Limits, OomRecovery, choose_sensor, describe
from comfyline.guard.sensors import Sensor
from comfyline.images import TEMP_SUFFIX
from comfyline.ledger import (
    Ledger,
    OrderStatus,
    SlotState,
    ledger_path,
    read_status,
    slot_prompt_id,
)
from comfyline.orders import BUILTIN_PREFIX, Plan, Slot, load, plan
from comfyline.presets import GenerationParams, get_level
from comfyline.progress import ProgressDisplay, Throughput
from comfyline.reports.charts import CHART_FILE, write_chart
from comfyline.reports.contact_sheet import sheet_entries, write_contact_sheets
from comfyline.reports.png_metadata import embed_parameters
from comfyline.reports.report import (
    REPORT_FILE,
    GenerationReport,
    ReportBackend,
    ReportOrder,
    build_report,
    read_report,
    write_report,
)
from comfyline.schemas.order import Order, OrderState
from comfyline.settings import Settings
from comfyline.workflows import Workflow, build_graph, ensure_graph_fits

MAX_ATTEMPTS_PER_RUN = 2
"""A slot that fails is sent once more in the same run (a timeout or a bad image can be
transient); after that it stays failed until the order is run again."""

LONG_HOLD_S = 10.0
"""A hold of the guard at least this long is said on the console (all are in the report)."""

CANCEL_TIMEOUT_S = 5.0
"""How long Ctrl-C waits for the server to drop our prompts before giving up on it."""

Notify = Callable[[str], None]

_TEMP_FILE = re.compile(r"\..+\.[0-9a-f]{12}" + re.escape(TEMP_SUFFIX))
"""The temp files of ``images.write_atomic`` (``.{name}.{12 hex}.tmp``)."""


def output_dir(order: Order, settings: Settings) -> Path:
    """The order's output folder: ``output.folder`` (or its id) below the output root.

    The order schema already refuses absolute paths and ``..``; this checks the resolved path
    too, so a symlink inside the root cannot lead a run outside it.
    """
    root = settings.output_root.resolve()
    folder = (root / order.output_folder).resolve()
    if folder != root and root not in folder.parents:
        raise ConfigError(
            f"order {order.id!r}: output folder {order.output_folder!r} resolves to {folder}, "
            f"outside the output root {root}; remove the link or change output.folder"
        )
    return folder


def fingerprint(order: Order) -> str:
    """A hash of what the order asks for (not of its formatting or comments): the ledger
    refuses to resume an order that changed since its first run."""
    return hashlib.sha256(order.model_dump_json().encode("utf-8")).hexdigest()


def order_status(order_path: Path, settings: Settings) -> tuple[Order, OrderStatus | None, int]:
    """The order at ``order_path``, its ledger status (None when it never ran) and the number
    of prompts it plans."""
    loaded = load(order_path)
    order = loaded.order
    db = ledger_path(output_dir(order, settings))
    status = read_status(db) if db.exists() else None
    total = status.counts.total if status else len(plan(loaded))
    return order, status, total


async def generate(
    order: Order | Path,
    *,
    settings: Settings,
    order_dir: Path | None = None,
    simulated: bool = False,
    console: Console | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> GenerationReport:
    """Run ``order`` to completion on the server at ``settings.comfyui_url``; its report.

    ``order`` is an :class:`Order` (then ``order_dir``, the folder of its file, is needed for
    the files it names) or the path of its ``project.yaml``. ``simulated`` marks the server as
    comfyline's simulator in the report. The returned report is what ``generation_report.json``
    holds. Raises :class:`OrderError` for an invalid order, :class:`ComfyError` subclasses when
    the server cannot be used, :class:`GuardTripped` when the card did not cool; in every case
    the ledger holds what was done, and running the order again resumes it.
    """
    if isinstance(order, Path):
        order_dir = order.parent if order.is_file() else order
        order_file = order if order.is_file() else order / "project.yaml"
        order = load(order_file).order
    elif order_dir is None:
        raise ConfigError("pipeline.generate(order) needs order_dir, the folder of its file")
    else:
        order_file = order_dir / "project.yaml"
    run = _Run(
        order=order,
        order_dir=order_dir,
        order_file=order_file,
        settings=settings,
        simulated=simulated,
        console=console or Console(stderr=True),
        clock=clock,
        sleep=sleep,
    )
    return await run.execute()


async def check_against_server(order_path: Path, settings: Settings) -> str:
    """Check an order's filled graph against the server's ``/object_info`` without generating:
    every problem at once (:class:`WorkflowCheckFailed`). Returns a one-line summary."""
    loaded = load(order_path)
    order = loaded.order
    the_plan = plan(loaded)
    async with ComfyUIAdapter(settings) as comfy:
        await comfy.check_ready()
        checkpoint = await comfy.resolve_checkpoint(order.checkpoint or settings.checkpoint)
        request = _request(
            order,
            the_plan.slots[0],
            Path("."),
            "",
            None,
            checkpoint=checkpoint,
            workflow=_workflow(order, order_path.parent),
        )
        graph = build_graph(request, checkpoint)
        ensure_graph_fits(graph, await comfy.object_info(), server=comfy.url)
        await comfy.check_request(request)
    return f"ok: {order_path} fits the ComfyUI server at {comfy.url} (checkpoint {checkpoint})"


def _workflow(order: Order, order_dir: Path) -> Workflow | None:
    if order.workflow is None:
        return None
    if order.workflow.startswith(BUILTIN_PREFIX):
        return Workflow.builtin(order.workflow.removeprefix(BUILTIN_PREFIX))
    return Workflow.load(order_dir / order.workflow)


def _request(
    order: Order,
    slot: Slot,
    out: Path,
    prompt_id: str,
    params: GenerationParams | None,
    *,
    checkpoint: str | None,
    workflow: Workflow | None,
) -> GenerationRequest:
    return GenerationRequest(
        prompt=slot.prompt,
        negative=slot.negative,
        seed=slot.seed,
        params=params or slot.params,
        output_dir=out,
        output_stem=slot.stem,
        checkpoint=checkpoint,
        filename_prefix=f"comfyline/{order.id}/img",
        prompt_id=prompt_id or None,
        workflow=workflow,
        inputs=dict(order.inputs),
        nodes={k: v for k, v in order.nodes.model_dump().items() if v is not None},
    )


@dataclass
class _Run:
    """One run of one order: the state that lives only as long as the run."""

    order: Order
    order_dir: Path
    order_file: Path
    settings: Settings
    simulated: bool
    console: Console
    clock: Callable[[], float]
    sleep: Callable[[float], Awaitable[None]]
    out: Path = field(init=False)
    ledger: Ledger = field(init=False)
    plan: Plan = field(init=False)
    checkpoint: str = field(init=False)
    workflow: Workflow | None = field(init=False)
    comfy: ComfyUIAdapter = field(init=False)
    guard: Guard = field(init=False)
    oom: OomRecovery = field(init=False)
    throughput: Throughput = field(init=False)
    comfyui_version: str | None = None
    started: float = 0.0
    _retry: deque[int] = field(default_factory=deque)
    _pending: deque[int] = field(default_factory=deque)
    _in_flight: dict[str, int] = field(default_factory=dict)
    _attempts_this_run: dict[int, int] = field(default_factory=dict)

    def notify(self, line: str) -> None:
        self.console.print(line, highlight=False, markup=False)

    # -- the run -------------------------------------------------------------------------

    async def execute(self) -> GenerationReport:
        self.out = output_dir(self.order, self.settings)
        self.workflow = _workflow(self.order, self.order_dir)
        self.started = self.clock()
        with Ledger.open(
            ledger_path(self.out),
            self.order.id,
            fingerprint(self.order),
            comfyline_version=__version__,
        ) as self.ledger:
            _remove_temp_files(self.out)
            self.plan = self._plan()
            self.ledger.ensure_slots(self.plan)
            counts = self.ledger.counts()
            if counts.done == counts.total:
                self.notify(f"order {self.order.id!r} is already complete: nothing to do.")
                return self._existing_report()
            self._move_to(OrderState.QUEUED)
            async with ComfyUIAdapter(self.settings) as self.comfy:
                return await self._run_on_server()

    def _plan(self) -> Plan:
        loaded = load(self.order_file)
        first = plan(loaded)
        base = self.ledger.ensure_seed_base(first.seed_base)
        if base == first.seed_base:
            return first
        return plan(loaded, random_base=base)

    def _move_to(self, state: OrderState) -> None:
        current = self.ledger.order().state
        if current is OrderState.NEW:
            self.ledger.set_order_state(OrderState.VALIDATED)
            current = OrderState.VALIDATED
        # RUNNING -> QUEUED too: the last runner died mid-run and this one picks the order up.
        if current is not state:
            self.ledger.set_order_state(state)

    async def _run_on_server(self) -> GenerationReport:
        stats = await self.comfy.check_ready()
        self.comfyui_version = stats.get("system", {}).get("comfyui_version")
        self.checkpoint = await self.comfy.resolve_checkpoint(
            self.order.checkpoint or self.settings.checkpoint
        )
        await self._preflight()
        async with httpx.AsyncClient(timeout=self.settings.http_timeout_s) as http:
            # Without a temperature sensor the guard says so once, when it first pauses.
            self._make_guard((await choose_sensor(self.settings, self.comfy.url, http)).sensor)
            self._move_to(OrderState.RUNNING)
            await self._reconcile()
            for record in self.ledger.failed():
                self.ledger.requeue(record.index, "retried by a new run")
            self._pending.extend(r.index for r in self.ledger.pending())
            counts = self.ledger.counts()
            self.throughput = Throughput(counts.total, counts.done, clock=self.clock)
            return await self._produce()

    async def _preflight(self) -> None:
        """Everything that can be checked before the first image: nothing is sent if it fails."""
        first = self.plan.slots[0]
        request = self._request_for(first, "")
        graph = build_graph(request, self.checkpoint)
        ensure_graph_fits(graph, await self.comfy.object_info(), server=self.comfy.url)
        await self.comfy.check_request(request)

    def _make_guard(self, sensor: Sensor) -> None:
        level = get_level(self.order.quality)
        pause_s = level.pause_s if self.settings.pause_s is None else self.settings.pause_s
        self.guard = Guard(
            sensor,
            Limits.from_settings(self.settings),
            pause_s,
            level.max_batch,
            clock=self.clock,
            sleep=self.sleep,
            free_memory=self._free_memory,
            on_event=self._guard_event,
            series_pause_s=self.settings.series_pause_s,
        )
        self.oom = OomRecovery(
            self.order.params,
            self.order.quality,
            # A slot makes batch_size images; a smaller batch would silently drop some.
            min_batch=self.order.batch_size,
            free_memory=self._free_memory,
            sensor=sensor,
            clock=self.clock,
            sleep=self.sleep,
            on_event=self._guard_event,
        )

    async def _free_memory(self) -> None:
        await self.comfy.free_memory(unload_models=True)

    def _guard_event(self, event: GuardEvent) -> None:
        if event.kind == "stepped_down":
            return  # recorded by _out_of_memory, with the slot and from/to for the report
        detail: dict[str, Any] = {"message": event.message}
        if event.temperature_c is not None:
            detail["temperature_c"] = event.temperature_c
        if event.seconds is not None:
            detail["seconds"] = event.seconds
        self.ledger.record_event(f"guard.{event.kind}", detail=detail)
        # Short holds come before nearly every image of a warm card: they are in the report
        # and the rate, and a line each would bury everything else.
        if event.kind != "held" or (event.seconds or 0.0) >= LONG_HOLD_S:
            self.notify(f"guard: {event.message}")

    # -- reconciling a previous run ------------------------------------------------------

    async def _reconcile(self) -> None:
        """Settle the slots a previous run left SUBMITTED (it died, or the server restarted)."""
        for record in self.ledger.submitted():
            prompt_id = record.prompt_id or ""
            state = await self.comfy.prompt_state(prompt_id) if prompt_id else "unknown"
            if state == "done":
                slot = self.plan.slots[record.index]
                result = await self.comfy.collect(self._request_for(slot, prompt_id), prompt_id)
                if result.ok:
                    self._finish(record.index, result)
                    self.notify(f"slot {record.index}: collected from the server's history")
                    continue
            elif state in ("pending", "running"):
                # Its messages go to the dead runner's socket, so we cannot watch it: cancel it
                # and make it again (at most the two prompts that were in flight).
                await self.comfy.cancel(prompt_id)
            self.ledger.requeue(record.index, f"previous run left it {state} on the server")

    # -- producing -----------------------------------------------------------------------

    async def _produce(self) -> GenerationReport:
        watcher = asyncio.create_task(self.guard.watch())
        title = f"{self.order.id} ({self.order.quality})"
        try:
            with ProgressDisplay(self.console, title, self.throughput.total) as display:
                self.notify(self._banner())
                while self._retry or self._pending:
                    batch = self.comfy.generate_batch(
                        self._requests(), gate=self.guard.before_prompt
                    )
                    async for result in batch:
                        await self._handle(result)
                        await self._after(result)
                        display.update(self.throughput.snapshot())
        except BaseException as exc:  # Ctrl-C (CancelledError) included: save, then re-raise
            await self._stop(exc)
            raise
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
        with contextlib.suppress(ComfyError):
            await self.comfy.free_memory(unload_models=False)  # release the series' cache
        return self._finalize(self._end_state())

    async def _stop(self, exc: BaseException) -> None:
        """Save the state of a run that did not finish, and say how to resume it."""
        if isinstance(exc, GuardTripped):
            # A running prompt is never cut off: the next run collects it from history.
            state = OrderState.CANCELLED
        else:
            if not isinstance(exc, ComfyUnavailable):  # else there is nobody to tell
                await self._cancel_in_flight()
            user_stop = isinstance(exc, asyncio.CancelledError | KeyboardInterrupt)
            state = OrderState.CANCELLED if user_stop else self._end_state()
        self._finalize(state)
        self.notify(f"stopped; state saved. Resume with: comfyline run-order {self.order_file}")

    def _banner(self) -> str:
        p = self.order.params
        left = len(self._pending) + len(self._retry)
        where = "the built-in simulator" if self.simulated else self.comfy.url
        return (
            f"order {self.order.id!r}: {left} of {len(self.plan)} prompts to make, "
            f"{self.order.quality} {p.width}x{p.height}, {p.steps} steps, on {where}"
        )

    async def _requests(self) -> AsyncIterator[GenerationRequest]:
        """The next slots, each recorded as SUBMITTED (with its prompt id) before it is sent."""
        while self._retry or self._pending:
            index = self._retry.popleft() if self._retry else self._pending.popleft()
            attempt = self.ledger.slot(index).attempt + 1
            prompt_id = slot_prompt_id(self.order.id, index, attempt)
            self.ledger.mark_submitted(index, prompt_id, attempt)
            self._in_flight[prompt_id] = index
            self._attempts_this_run[index] = self._attempts_this_run.get(index, 0) + 1
            yield self._request_for(self.plan.slots[index], prompt_id, self.oom.params)

    def _request_for(
        self, slot: Slot, prompt_id: str, params: GenerationParams | None = None
    ) -> GenerationRequest:
        return _request(
            self.order,
            slot,
            self.out,
            prompt_id,
            params,
            checkpoint=self.checkpoint,
            workflow=self.workflow,
        )

    async def _handle(self, result: GenerationResult) -> None:
        index = self._in_flight.pop(result.prompt_id)
        if result.ok:
            self.oom.on_success()
            self._finish(index, result)
            self.throughput.image_done(ok=True)
            return
        error = result.error
        assert error is not None
        self.ledger.mark_failed(index, error)
        if isinstance(error, PromptRejected):
            raise error  # the same graph is refused for every slot: stop here, say why
        if isinstance(error, OutOfMemory):
            await self._out_of_memory(index, result, error)
        elif self._attempts_this_run.get(index, 0) < MAX_ATTEMPTS_PER_RUN:
            self.ledger.requeue(index, f"retry after {type(error).__name__}")
            self._retry.append(index)
            self.notify(f"slot {index}: {error}; sending it once more")
        else:
            self.throughput.image_done(ok=False)
            self.notify(f"slot {index} failed: {error}")

    async def _out_of_memory(
        self, index: int, result: GenerationResult, error: OutOfMemory
    ) -> None:
        """Free the server's memory and retry once; a second one steps down (batch, then level)."""
        if result.request.params != self.oom.params:
            # Sent before a step down (it was queued behind the prompt that caused it): its
            # OOM says nothing about the smaller settings now in use. Make it again with those.
            self.ledger.requeue(index, "out of memory at settings already stepped down from")
            self._retry.append(index)
            return
        failed_at = describe(result.request.params, self.oom.level)
        decision = await self.oom.on_out_of_memory(error)
        if decision is None:
            self.throughput.image_done(ok=False)
            self.notify(f"slot {index} failed: {error}")
            return
        if decision.stepped_down:
            self.notify(f"guard: {decision.message}")
            self.ledger.record_event(
                "guard.step_down",
                index=index,
                detail={
                    "from": failed_at,
                    "to": describe(decision.params, decision.level),
                    "message": decision.message,
                },
            )
        self.ledger.requeue(index, decision.message)
        self._retry.append(index)

    async def _after(self, result: GenerationResult) -> None:
        """Let the guard learn from the finished prompt; keep its reading for the report."""
        sample = await self.guard.after_prompt(len(result.images))
        if sample is not None:
            self.ledger.record_reading(
                temperature_c=sample.temperature_c,
                power_w=sample.power_w,
                vram_free_mb=_mb(sample.vram_total_bytes, sample.vram_used_bytes),
                vram_total_mb=_mb(sample.vram_total_bytes, 0),
            )

    def _finish(self, index: int, result: GenerationResult) -> None:
        """Embed the parameters in each PNG and mark the slot done (after the files are whole)."""
        slot = self.plan.slots[index]
        files: list[str] = []
        digests: list[str] = []
        for image in result.images:
            digests.append(embed_parameters(image.path, self._png_parameters(slot, result)))
            files.append(image.path.relative_to(self.out).as_posix())
        made = result.request.params
        made_with = made.model_dump(mode="json") if made != slot.params else None
        self.ledger.mark_done(index, files, digests, result.seconds, made_with)

    def _png_parameters(self, slot: Slot, result: GenerationResult) -> dict[str, Any]:
        p = result.request.params
        return {
            "prompt": slot.prompt,
            "negative": slot.negative,
            "seed": slot.seed,
            "steps": p.steps,
            "cfg": p.cfg,
            "sampler": p.sampler,
            "scheduler": p.scheduler,
            "width": p.width,
            "height": p.height,
            "denoise": p.denoise,
            "batch_size": p.batch_size,
            "checkpoint": self.checkpoint,
            "order": self.order.id,
            "index": slot.index,
            "quality": self.order.quality,
            "prompt_id": result.prompt_id,
        }

    async def _cancel_in_flight(self) -> None:
        """Ctrl-C: drop our prompts on the server and put their slots back to be made again."""
        for prompt_id, index in list(self._in_flight.items()):
            with contextlib.suppress(ComfyError, TimeoutError):
                async with asyncio.timeout(CANCEL_TIMEOUT_S):
                    await self.comfy.cancel(prompt_id)
            if self.ledger.slot(index).state is SlotState.SUBMITTED:
                self.ledger.requeue(index, "cancelled by the user")
        self._in_flight.clear()

    # -- the end -------------------------------------------------------------------------

    def _end_state(self) -> OrderState:
        counts = self.ledger.counts()
        if counts.done == counts.total:
            return OrderState.COMPLETED
        if counts.done == 0:
            return OrderState.FAILED
        return OrderState.PARTIAL

    def _finalize(self, state: OrderState) -> GenerationReport:
        if self.ledger.order().state is not state:
            self.ledger.set_order_state(state)
        self.ledger.record_event("run.end", detail={"seconds": self.clock() - self.started})
        # The report's wall time is the runner's over all its runs of this order.
        wall = sum(e.detail.get("seconds", 0.0) for e in self.ledger.events("run.end"))
        report = self._build_report(wall)
        write_report(self.out / REPORT_FILE, report)
        write_contact_sheets(
            sheet_entries(self.ledger.iter_slots(), self.out), self.out, title=self._title()
        )
        write_chart(report, self.out / CHART_FILE, target_c=self.settings.target_temp_c)
        counts = self.ledger.counts()
        self.notify(
            f"order {self.order.id!r} {state.value}: {counts.done}/{counts.total} prompts done, "
            f"{counts.failed} failed; report: {self.out / REPORT_FILE}"
        )
        return report

    def _title(self) -> str:
        return f"{self.order.id}: {self.order.title}" if self.order.title else self.order.id

    def _existing_report(self) -> GenerationReport:
        path = self.out / REPORT_FILE
        if path.exists():
            return read_report(path)
        return self._finalize(OrderState.COMPLETED)

    def _build_report(self, wall_seconds: float) -> GenerationReport:
        raw = self.order_file.read_bytes() if self.order_file.exists() else b""
        params = getattr(self, "oom", None)
        effective = params.params if params is not None else self.order.params
        level = params.level if params is not None else self.order.quality
        return build_report(
            order=ReportOrder(
                id=self.order.id,
                title=self.order.title,
                type=self.order.type,
                file=str(self.order_file),
                sha256=hashlib.sha256(raw).hexdigest(),
                content=raw.decode("utf-8", errors="replace"),
                state=self.ledger.order().state.value,
            ),
            backend=ReportBackend(
                url=self.settings.comfyui_url,
                simulated=self.simulated,
                comfyui_version=self.comfyui_version,
            ),
            comfyline_version=__version__,
            level=level,
            parameters={
                **effective.model_dump(mode="json"),
                "checkpoint": getattr(self, "checkpoint", None),
            },
            sale=self.order.sale.model_dump(mode="json") if self.order.sale else None,
            slots=self.ledger.slots(),
            events=self.ledger.events("guard."),  # the report lists only the guard's
            readings=self.ledger.readings(),
            requested=self.plan.images,
            wall_seconds=wall_seconds,
            output_dir=self.out,
            report_dir=self.out,
        )


def _remove_temp_files(folder: Path) -> None:
    """Delete the temp files a runner killed in the middle of an atomic write left behind.

    Called with the order's lock held, so no live runner is writing them. Only the folder
    itself: images, the report, the sheets and the chart are all written there.
    """
    for path in folder.glob(f".*{TEMP_SUFFIX}"):
        if _TEMP_FILE.fullmatch(path.name) and path.is_file():
            path.unlink(missing_ok=True)


def _mb(total: int | None, used: int | None) -> float | None:
    if total is None or used is None:
        return None
    return (total - used) / 2**20
