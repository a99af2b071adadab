"""``pipeline.generate(order)``: an order in, a finished series out, on a crash-safe ledger.

The run reads top to bottom:

1. **load** the order once (:func:`comfyline.orders.load`) and open its ledger (the lock keeps
   a second runner out);
2. **plan** its slots (pure) and record them; an order whose slots are all done rebuilds a
   report that is not final and says there is nothing to do;
3. **check** against each server before any GPU time (:mod:`comfyline.preflight`): the
   checkpoint, the filled graph against ``/object_info``, sampler and scheduler; a server that
   lacks something the order needs is left out of it, and the run says so;
4. **reconcile** what a previous run left in flight, each slot on the server it was sent to:
   collect what the server finished while we were down, cancel what it still holds for a dead
   client, resend what it never had;
5. **schedule** the remaining slots onto the backends (:mod:`comfyline.scheduler`); each image is
   written once, parameters embedded, hashed from the bytes written, then marked done;
6. **finish**: ``generation_report.json``, the contact sheet and the run chart.

Ctrl-C (or SIGTERM, which the CLI turns into the same) takes our prompts off the server, saves
the state and re-raises; the CLI prints the command that resumes. A kill -9 loses nothing
recorded: the next run reconciles.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from comfyline import __version__
from comfyline.backends import SIMULATOR, Backend, open_backends
from comfyline.comfy import ComfyUIAdapter, Endpoint
from comfyline.errors import (
    ComfyError,
    ComfyUnavailable,
    ConfigError,
    GuardTripped,
    LedgerError,
    NoFittingBackend,
    WorkflowError,
)
from comfyline.finish import RUN_END, RUN_START, write_outputs
from comfyline.generation import GenerationRequest, GenerationResult
from comfyline.guard import GuardEvent, OomRecovery
from comfyline.guard.sensors import parse_system_stats
from comfyline.images import TEMP_SUFFIX
from comfyline.ledger import (
    Ledger,
    OrderState,
    SlotState,
    ledger_path,
    read_status,
    slot_prompt_id,
)
from comfyline.orders import LoadedOrder, Plan, Slot, load, plan
from comfyline.outputs import WrittenImage, write_images
from comfyline.pool import BackendPool, Claim
from comfyline.preflight import preflight
from comfyline.presets import GenerationParams
from comfyline.progress import ProgressDisplay, Throughput
from comfyline.quality import QcResult, SeriesChecker
from comfyline.reports.report import REPORT_FILE, GenerationReport, read_report
from comfyline.scheduler import OomTarget, Scheduler
from comfyline.schemas.order import Order
from comfyline.settings import Settings

AFTER_FREE = "after /free"
"""The note of the reading taken once the series' memory was freed on the server."""

LONG_HOLD_S = 10.0
"""A hold of the guard at least this long is said on the console (all are in the report)."""

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


def fingerprint(loaded: LoadedOrder) -> str:
    """A hash of what the order's images are (not of its formatting, comments, title or sale
    data, nor of when it runs), and of the content of every file it uses (CSV, profiles,
    workflow): the ledger refuses to resume an order whose images would differ from those it
    started."""
    # What describes the images (sale data, quality thresholds) and when and how urgently
    # the line runs them (priority, schedule) may change between runs.
    exclude = {"title", "description", "sale", "qc", "priority", "schedule"}
    text = loaded.order.model_dump_json(exclude=exclude) + loaded.sources_sha256
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


async def generate(
    order: LoadedOrder | Path,
    *,
    settings: Settings,
    sim: bool = False,
    sim_if_unreachable: bool | None = None,
    output: Path | None = None,
    console: Console | None = None,
    resume_hint: str | None = None,
    urls: tuple[str, ...] = (),
    pool: BackendPool | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> GenerationReport:
    """Run ``order`` to completion; its report (what ``generation_report.json`` holds).

    ``order`` is the path of a ``project.yaml`` (or its folder), or an order already loaded.
    The servers are ``urls``, else those the settings name
    (:func:`comfyline.backends_config.backend_specs`); ``sim`` runs on the built-in simulator,
    and with ``sim_if_unreachable`` (None: only when the URL is the default one) the simulator
    stands in when nothing answers, and the run says so. ``pool``: servers already open, shared
    with other orders (``comfyline line``). ``output`` replaces the order's output folder.
    Raises :class:`OrderError` for an invalid order, :class:`ComfyError` subclasses when the
    server cannot be used, :class:`GuardTripped` when the card did not cool; in every case the
    ledger holds what was done, and running the order again resumes it.
    """
    loaded = order if isinstance(order, LoadedOrder) else load(order)
    out = output if output is not None else output_dir(loaded.order, settings)
    run = _Run(
        loaded,
        out,
        settings,
        console or Console(stderr=True),
        _Options(sim, sim_if_unreachable, resume_hint, urls, pool),
        clock,
        sleep,
    )
    return await run.execute()


async def check_against_server(order_path: Path, settings: Settings) -> str:
    """Check an order's filled graph against the server's ``/object_info`` without generating:
    every problem at once (:class:`WorkflowCheckFailed`). Returns a one-line summary."""
    loaded = load(order_path)
    first = plan(loaded).slots[0]
    async with ComfyUIAdapter(Endpoint.from_settings(settings)) as comfy:
        await comfy.check_ready()
        checked = await preflight(
            comfy,
            slot_request(loaded, first, "", None, checkpoint=None),
            loaded.order.checkpoint or settings.checkpoint,
        )
    return (
        f"ok: {order_path} fits the ComfyUI server at {comfy.url} (checkpoint {checked.checkpoint})"
    )


def slot_request(
    loaded: LoadedOrder,
    slot: Slot,
    prompt_id: str,
    params: GenerationParams | None,
    *,
    checkpoint: str | None,
    attempt: int = 1,
) -> GenerationRequest:
    """The request that makes ``slot`` (at ``params`` when the run stepped down).

    A retry (``attempt`` > 1) saves under another file prefix: ComfyUI answers an identical
    graph from its cache, SaveImage included, with the very same file, so a retry after a bad
    image must differ to be saved anew (the pixels above it may still come from the cache).
    """
    order = loaded.order
    prefix = f"comfyline/{order.id}/img" + (f"_a{attempt}" if attempt > 1 else "")
    return GenerationRequest(
        prompt=slot.prompt,
        negative=slot.negative,
        seed=slot.seed,
        params=params or slot.params,
        checkpoint=checkpoint,
        filename_prefix=prefix,
        prompt_id=prompt_id or None,
        workflow=loaded.workflow,
        inputs=dict(order.inputs),
        nodes={k: v for k, v in order.nodes.model_dump().items() if v is not None},
    )


@dataclass(frozen=True)
class _Options:
    sim: bool
    sim_if_unreachable: bool | None
    resume_hint: str | None
    urls: tuple[str, ...] = ()
    pool: BackendPool | None = None


class _Run:
    """One run of one order: its life cycle. The work itself is the scheduler's."""

    def __init__(
        self,
        loaded: LoadedOrder,
        out: Path,
        settings: Settings,
        console: Console,
        options: _Options,
        clock: Callable[[], float],
        sleep: Callable[[float], Awaitable[None]],
    ) -> None:
        self.loaded = loaded
        self.order = loaded.order
        self.out = out
        self.settings = settings
        self.console = console
        self.options = options
        self.clock = clock
        self.sleep = sleep

    def notify(self, line: str) -> None:
        self.console.print(line, highlight=False, markup=False)

    # -- 1-2: load and plan --------------------------------------------------------------

    async def execute(self) -> GenerationReport:
        db = ledger_path(self.out)
        if _complete(db):
            with self._open_ledger(db):
                return self._already_complete()
        async with contextlib.AsyncExitStack() as stack:
            # The servers first: none answering is an error before anything is written (and
            # a simulator that stands in says so before the run starts).
            pool = self.options.pool or await self._open_pool(stack)
            with self._open_ledger(db):
                if self.ledger.counts().done == self.ledger.counts().total:
                    return self._already_complete()
                self._move_to(OrderState.QUEUED)
                return await self._run_on(pool)

    async def _open_pool(self, stack: contextlib.AsyncExitStack) -> BackendPool:
        backends = await open_backends(
            self.settings,
            stack,
            urls=self.options.urls,
            force_sim=self.options.sim,
            sim_if_unreachable=self.options.sim_if_unreachable,
            notify=self.notify,
            clock=self.clock,
            sleep=self.sleep,
        )
        pool = BackendPool(
            backends, self.settings, on_health=self._health, clock=self.clock, sleep=self.sleep
        )
        stack.push_async_callback(pool.aclose)
        return pool

    def _health(self, backend: Backend, up: bool, why: str) -> None:
        self.notify(f"server {backend.name} " + ("is back" if up else f"lost: {why}"))

    @contextlib.contextmanager
    def _open_ledger(self, db: Path) -> Iterator[Ledger]:
        print_ = fingerprint(self.loaded)
        with Ledger.open(db, self.order.id, print_, comfyline_version=__version__) as ledger:
            self.ledger = ledger
            self._ledger_id = _file_id(ledger.path)
            _remove_temp_files(self.out)
            self.plan = self._plan()
            ledger.ensure_slots(self.plan)
            yield ledger

    def _plan(self) -> Plan:
        first = plan(self.loaded)
        base = self.ledger.ensure_seed_base(first.seed_base)
        return first if base == first.seed_base else plan(self.loaded, random_base=base)

    def _move_to(self, state: OrderState) -> None:
        current = self.ledger.order().state
        if current is OrderState.NEW:
            self.ledger.set_order_state(OrderState.VALIDATED)
            current = OrderState.VALIDATED
        if state is OrderState.COMPLETED and current is not OrderState.RUNNING:
            self._move_to(OrderState.RUNNING)  # a run killed while it finished: settle it now
            current = OrderState.RUNNING
        if state is OrderState.RUNNING and current is not OrderState.QUEUED:
            self._move_to(OrderState.QUEUED)
            current = OrderState.QUEUED
        # RUNNING -> QUEUED too: the last runner died mid-run and this one picks the order up.
        if current is not state:
            self.ledger.set_order_state(state)

    def _already_complete(self) -> GenerationReport:
        """Nothing to make. A report that is not the final one (a run killed while it wrote
        it, or a state left 'running') is rebuilt, so what the user sees never lies."""
        report_file = self.out / REPORT_FILE
        with contextlib.suppress(ComfyError, OSError, ValueError):
            if report_file.exists() and self.ledger.order().state is OrderState.COMPLETED:
                report = read_report(report_file)
                if report.order.state == OrderState.COMPLETED.value and not report.totals.missing:
                    self.notify(f"order {self.order.id!r} is already complete: nothing to do.")
                    return report
        self.notify(f"order {self.order.id!r} was already made; its report is brought up to date.")
        self._move_to(OrderState.COMPLETED)
        return self._finalize(OrderState.COMPLETED, ran=False)

    # -- 3: check ------------------------------------------------------------------------

    async def _run_on(self, pool: BackendPool) -> GenerationReport:
        self.pool = pool
        up = [b for b in pool.backends if pool.is_up(b)]
        if not up:
            raise ComfyUnavailable(
                "no ComfyUI server of the run answers now: "
                + "; ".join(f"{b.name} ({pool.lost_reason(b)})" for b in pool.backends)
            )
        self.backend = up[0]
        self.ledger.record_event(
            RUN_START,
            detail={
                "url": self.backend.url,
                "simulated": self.backend.simulated,
                "comfyui_version": self.backend.comfyui_version,
                "device": self.backend.device,
                "backends": [b.describe() for b in pool.backends],
                "pid": os.getpid(),
            },
        )
        self.started = self.clock()
        fit = await self._check_backends(up)
        self.backend = fit[0]
        self.backends = [b for b in pool.backends if b in fit or not pool.is_up(b)]
        target = OomTarget(self.backend)
        self.oom = OomRecovery(
            self.order.params,
            self.order.quality,
            # A slot makes batch_size images; a smaller batch would silently drop some.
            min_batch=self.order.batch_size,
            free_memory=target.free_memory,
            sensor=target,
            clock=self.clock,
            sleep=self.sleep,
            on_event=self._guard_event,
        )
        self._move_to(OrderState.RUNNING)
        counts = self.ledger.counts()
        self.throughput = Throughput(counts.total, counts.done, clock=self.clock)
        claim = Claim(self.order.id, self.order.priority, self.order.quality, self._guard_event)
        scheduler = Scheduler(
            self.ledger,
            self.backends,
            pool=pool,
            claim=claim,
            make_request=lambda i, pid, params, attempt: self._request(
                self.plan.slots[i], pid, params, attempt
            ),
            finish=self._finish_slot,
            oom=self.oom,
            prompt_id=lambda i, attempt: slot_prompt_id(
                self.order.id, i, attempt, self.ledger.nonce
            ),
            notify=self.notify,
            on_result=self._counted,
            oom_target=target,
            admit=self._admit,
            admitted=tuple(b.name for b in fit),
        )
        try:
            await self._reconcile(scheduler)
            for record in self.ledger.failed():
                self.ledger.requeue(record.index, "retried by a new run")
            scheduler.add([r.index for r in self.ledger.iter_slots(SlotState.PLANNED)])
            return await self._schedule(scheduler)
        finally:
            pool.forget(claim)

    async def _check_backends(self, up: list[Backend]) -> list[Backend]:
        """The servers that fit the order (pre-flight on each); the others are left out and
        the run says why. All must use one checkpoint: a series is made with one."""
        first = self._request(self.plan.slots[0], "")
        fit: list[Backend] = []
        failures: list[tuple[Backend, Exception]] = []
        for backend in up:
            try:
                await self._preflight(backend, first)
            except (ComfyError, ConfigError, WorkflowError) as exc:
                failures.append((backend, exc))
                continue
            fit.append(backend)
        if not fit:
            if len(failures) == 1:
                raise failures[0][1]
            raise NoFittingBackend([(b.name, str(exc)) for b, exc in failures])
        for backend, problem in failures:
            self._left_out(backend, problem)
        return fit

    async def _preflight(self, backend: Backend, first: GenerationRequest) -> None:
        named = self.order.checkpoint or self.settings.checkpoint
        named = named or getattr(self, "checkpoint", None)  # the first server's, for the rest
        checked = await preflight(backend.adapter, first, named)
        self.checkpoint = checked.checkpoint

    async def _admit(self, backend: Backend) -> bool:
        """Whether a server that answered only after the run began fits the order."""
        try:
            await self._preflight(backend, self._request(self.plan.slots[0], ""))
        except (ComfyError, ConfigError, WorkflowError) as exc:
            self._left_out(backend, exc)
            return False
        return True

    def _left_out(self, backend: Backend, exc: Exception) -> None:
        self.ledger.record_event(
            "backend.left_out", detail={"backend": backend.name, "reason": str(exc)}
        )
        self.notify(f"server {backend.name} is left out of this order: {exc}")

    def _request(
        self,
        slot: Slot,
        prompt_id: str,
        params: GenerationParams | None = None,
        attempt: int = 1,
    ) -> GenerationRequest:
        checkpoint = getattr(self, "checkpoint", None)
        return slot_request(
            self.loaded, slot, prompt_id, params, checkpoint=checkpoint, attempt=attempt
        )

    def _guard_event(self, event: GuardEvent) -> None:
        if event.kind == "stepped_down":
            return  # recorded by the scheduler, with the slot and from/to for the report
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

    # -- 4: reconcile --------------------------------------------------------------------

    async def _reconcile(self, scheduler: Scheduler) -> None:
        """Settle the slots a previous run left SUBMITTED (it died, or the server restarted),
        each on the server it was sent to."""
        for record in self.ledger.submitted():
            backend = self._server_of(record.backend)
            if backend is None or not self.pool.is_up(backend):
                # Lost, or no longer configured: asked when it answers, else made elsewhere.
                scheduler.hand_back(record.index)
                continue
            comfy = backend.adapter
            prompt_id = record.prompt_id or ""
            state = await comfy.prompt_state(prompt_id) if prompt_id else "unknown"
            if state == "done":
                request = self._request(
                    self.plan.slots[record.index], prompt_id, attempt=record.attempt
                )
                result = await comfy.collect(request, prompt_id)
                if result.ok:
                    await self._finish_slot(record.index, result, backend)
                    self.notify(f"slot {record.index}: collected from the server's history")
                    continue
                self.ledger.mark_failed(record.index, result.error or ComfyError("?"))
            elif state in ("pending", "running"):
                # Its messages go to the dead runner's socket, so we cannot watch it: cancel it
                # and make it again (at most the two prompts that were in flight).
                await comfy.cancel(prompt_id)
            elif state == "unknown" and prompt_id:
                # Never reached the server (killed before the POST), or lost by a restart:
                # nothing ran, so it goes again under the same id, as the same attempt.
                self.ledger.record_event(
                    "resent",
                    index=record.index,
                    attempt=record.attempt,
                    prompt_id=prompt_id,
                    detail={"reason": "previous run left it unknown on the server"},
                )
                scheduler.resend(record.index, backend)
                continue
            self.ledger.requeue(record.index, f"previous run left it {state} on the server")

    def _server_of(self, name: str | None) -> Backend | None:
        """The server a slot was sent to; with one server, that one (a ledger from before
        servers were named, or a server that moved to another port)."""
        if len(self.pool.backends) == 1:
            return self.pool.backends[0]
        return self.pool.by_name(name)

    # -- 5: schedule ---------------------------------------------------------------------

    async def _schedule(self, scheduler: Scheduler) -> GenerationReport:
        title = f"{self.order.id} ({self.order.quality})"
        try:
            with ProgressDisplay(self.console, title, self.throughput.total) as display:
                self.notify(self._banner(scheduler.waiting))
                self.throughput_display = display
                await scheduler.run()
        except BaseException as exc:  # Ctrl-C (CancelledError) included: save, then re-raise
            await self._stop(exc, scheduler)
            raise
        await self._release_memory()
        return self._finalize(self._end_state())

    async def _release_memory(self) -> None:
        """Free the series' cache on the server and record what it then uses (the smoke test
        shows it: memory is freed there, never by ``gc.collect()`` in our process)."""
        for backend in self.backends:
            if not self.pool.is_up(backend):
                continue
            with contextlib.suppress(ComfyError, ValueError):
                stats = await backend.adapter.free_memory(unload_models=False)
                after = parse_system_stats(stats)
                if after.vram_total_bytes is not None and after.vram_used_bytes is not None:
                    self.ledger.record_reading(
                        vram_free_mb=(after.vram_total_bytes - after.vram_used_bytes) / 2**20,
                        vram_total_mb=after.vram_total_bytes / 2**20,
                        note=AFTER_FREE,
                    )

    async def _finish_slot(self, index: int, result: GenerationResult, backend: Backend) -> None:
        """Write the slot's images once, parameters inside, and mark it done."""
        self._check_ledger_in_place()
        slot = self.plan.slots[index]
        parameters = self._png_parameters(slot, result, backend)
        images = [(i.data, i.width, i.height) for i in result.images]
        written = await asyncio.to_thread(write_images, self.out, slot.stem, images, parameters)
        if not hasattr(self, "qc"):  # the ledger is read here, in the loop's thread
            earlier = {
                file: check["phash"]
                for done in self.ledger.iter_slots(SlotState.DONE)
                for file, check in zip(done.files, done.qc, strict=False)
                if check.get("phash")
            }
            self.qc = SeriesChecker(self.order.qc, earlier)
        checks = await asyncio.to_thread(self._quality_checks, result, written)
        made = result.request.params
        self.ledger.mark_done(
            index,
            [w.path.relative_to(self.out).as_posix() for w in written],
            [w.sha256 for w in written],
            result.seconds,
            made.model_dump(mode="json") if made != slot.params else None,
            sizes=[(w.width, w.height) for w in written],
            wall_seconds=result.wall_seconds or None,
            checkpoint=self.checkpoint,
            qc=[c.to_json() for c in checks],
        )
        for check in checks:
            if not check.ok:
                flags = ", ".join(check.flags)
                more = f" of {check.duplicate_of}" if check.duplicate_of else ""
                self.notify(f"quality: {check.source} is {flags}{more}")

    def _quality_checks(
        self, result: GenerationResult, written: list[WrittenImage]
    ) -> list[QcResult]:
        """Black, blank, near-uniform, blurry and near-duplicate checks of the new images
        (flags only: what to sell is decided at review and export)."""
        return [
            self.qc.check(image.data, Path(w.path).name)
            for image, w in zip(result.images, written, strict=True)
        ]

    def _counted(self, ok: bool) -> None:
        snapshot = self.throughput.image_done(ok)
        if hasattr(self, "throughput_display"):
            self.throughput_display.update(snapshot)

    def _check_ledger_in_place(self) -> None:
        # A folder deleted (or moved) under a run would take the ledger with it while our open
        # handle writes on into nothing: stop rather than "complete" an order nobody can see.
        if _file_id(self.ledger.path) != self._ledger_id:
            raise LedgerError(
                f"the order's ledger {self.ledger.path} was deleted or moved while the run was "
                "writing to it (was the output folder removed?); the run stopped. Run the order "
                "again to make what is missing"
            )

    def _png_parameters(
        self, slot: Slot, result: GenerationResult, backend: Backend
    ) -> dict[str, Any]:
        p = result.request.params
        parameters: dict[str, Any] = {
            "prompt": slot.prompt,
            "negative": slot.negative,
            "seed": slot.seed,
            "steps": p.steps,
            "cfg": p.cfg,
            "sampler": p.sampler,
            "scheduler": p.scheduler,
            "denoise": p.denoise,
            "batch_size": p.batch_size,
            "latent_width": p.width,
            "latent_height": p.height,
            "checkpoint": self.checkpoint,
            "order": self.order.id,
            "index": slot.index,
            "quality": self.order.quality,
            "prompt_id": result.prompt_id,
            "server": "comfyline simulator" if backend.simulated else backend.url,
        }
        if slot.title:
            parameters["title"] = slot.title
        if slot.keywords:
            parameters["keywords"] = list(slot.keywords)
        return parameters

    async def _stop(self, exc: BaseException, scheduler: Scheduler) -> None:
        """Save the state of a run that did not finish, and say how to resume it."""
        if isinstance(exc, GuardTripped):
            # A running prompt is never cut off: the next run collects it from history.
            state = OrderState.CANCELLED
        else:
            if not isinstance(exc, ComfyUnavailable):  # else there is nobody to tell
                await scheduler.stop()
            user_stop = isinstance(exc, asyncio.CancelledError | KeyboardInterrupt)
            state = OrderState.CANCELLED if user_stop else self._end_state()
        with contextlib.suppress(LedgerError):
            self._finalize(state)
        self.notify(f"stopped; state saved. Resume with: {self._resume_command()}")

    def _resume_command(self) -> str:
        if self.options.resume_hint:
            return self.options.resume_hint
        command = f"comfyline run-order {self.loaded.file}"
        backend = getattr(self, "backend", None)
        if self.options.sim or (backend is not None and backend.name == SIMULATOR):
            return command + " --sim"
        if hasattr(self, "pool"):
            return command + "".join(f" --comfyui {b.url}" for b in self.pool.backends)
        return command

    def _banner(self, waiting: int) -> str:
        p = self.order.params
        where = "the built-in simulator" if self.backend.simulated else self.backend.url
        if len(self.backends) > 1:
            where = f"{len(self.backends)} servers: " + ", ".join(b.name for b in self.backends)
        return (
            f"order {self.order.id!r}: {waiting} of {len(self.plan)} prompts to make, "
            f"{self.order.quality} {p.width}x{p.height}, {p.steps} steps, on {where}"
        )

    # -- 6: finish -----------------------------------------------------------------------

    def _end_state(self) -> OrderState:
        counts = self.ledger.counts()
        if counts.done == counts.total:
            return OrderState.COMPLETED
        if counts.done == 0:
            return OrderState.FAILED
        return OrderState.PARTIAL

    def _finalize(self, state: OrderState, *, ran: bool = True) -> GenerationReport:
        if self.ledger.order().state is not state:
            self._move_to(state)
        if ran:
            self.ledger.record_event(RUN_END, detail={"seconds": self.clock() - self.started})
        oom = getattr(self, "oom", None)
        params = oom.params if oom is not None else self.order.params
        report = write_outputs(
            self.ledger,
            self.loaded,
            self.out,
            level=oom.level if oom is not None else self.order.quality,
            parameters={
                **params.model_dump(mode="json"),
                "checkpoint": getattr(self, "checkpoint", None),
            },
            requested=self.plan.images,
            target_c=self.settings.target_temp_c,
        )
        counts = self.ledger.counts()
        self.notify(
            f"order {self.order.id!r} {state.value}: {counts.done}/{counts.total} prompts done, "
            f"{counts.failed} failed; report: {self.out / REPORT_FILE}"
        )
        return report


def _remove_temp_files(folder: Path) -> None:
    """Delete the temp files a runner killed in the middle of an atomic write left behind.

    Called with the order's lock held, so no live runner is writing them. Only the folder
    itself: images, the report, the sheets and the chart are all written there.
    """
    for path in folder.glob(f".*{TEMP_SUFFIX}"):
        if _TEMP_FILE.fullmatch(path.name) and path.is_file():
            path.unlink(missing_ok=True)


def _complete(db: Path) -> bool:
    """Whether the ledger at ``db`` holds an order whose slots are all done (read without the
    lock; the runner checks again once it holds it)."""
    if not db.exists():
        return False
    with contextlib.suppress(LedgerError):
        counts = read_status(db).counts
        return counts.total > 0 and counts.done == counts.total
    return False


def _file_id(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino
