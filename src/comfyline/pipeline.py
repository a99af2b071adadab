"""``pipeline.generate(order)``: an order in, a finished series out, on a crash-safe ledger.

The run reads top to bottom:

1. **load** the order once (:func:`comfyline.orders.load`) and open its ledger (the lock keeps
   a second runner out);
2. **plan** its slots (pure) and record them; an order whose slots are all done rebuilds a
   report that is not final and says there is nothing to do;
3. **check** against each server before any GPU time (:mod:`comfyline.fitting`): the
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
import os
import re
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from comfyline import __version__
from comfyline.backends import SIMULATOR, Backend
from comfyline.errors import (
    ComfyError,
    ComfyUnavailable,
    ConfigError,
    DiskFull,
    GuardTripped,
    LedgerError,
    LedgerGone,
    OrderError,
    OutputError,
)
from comfyline.finish import RUN_END, RUN_START, write_outputs
from comfyline.fitting import Admission, fit_backends
from comfyline.generation import GenerationRequest, GenerationResult
from comfyline.guard import OomRecovery
from comfyline.images import TEMP_SUFFIX
from comfyline.ledger import (
    Ledger,
    LedgerReader,
    OrderState,
    SlotRecord,
    SlotState,
    ledger_path,
    read_identity,
    read_revisions,
    read_slots,
    read_status,
    slot_prompt_id,
)
from comfyline.orders import LoadedOrder, Plan, Slot, load
from comfyline.outputs import SlotWriter
from comfyline.pool import BackendPool, Claim, open_pool
from comfyline.presets import GenerationParams
from comfyline.progress import ProgressDisplay, Throughput
from comfyline.recovery import reconcile
from comfyline.reports.report import REPORT_FILE, GenerationReport, read_report
from comfyline.revisions import (
    SIMULATED_DIR,
    Survey,
    aside_name,
    fingerprint_of,
    identity,
    plan_with,
    revision_folder,
    settle_moves,
    start_revision,
    survey,
)
from comfyline.runlog import AFTER_FREE as AFTER_FREE  # smoke.py reads it here
from comfyline.runlog import RunLog
from comfyline.scheduler import OomTarget, Scheduler
from comfyline.schemas.order import Order
from comfyline.settings import Settings

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
    """A hash of what the order's images are (not of its formatting, comments, title, sale
    data or quality thresholds, nor of when it runs, how many images it makes or how future
    ones are named), and of the content of every file it uses (CSV, profiles, workflow): a
    run whose order gives another one starts a new revision (:mod:`comfyline.revisions`)."""
    return fingerprint_of(identity(loaded))


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
        recorded = _recorded(db)
        found = _survey(self.loaded, db, recorded)
        line = found.message(self.out) if found is not None else None
        if line:  # which case it is, before anything is done about it
            self.notify(line)
        real = _real_servers(db, recorded)
        if _made(found, recorded, self.options.sim):
            with self._open_ledger(db):
                if self.ledger.counts().done == self.ledger.counts().total:
                    return self._already_complete()
        async with contextlib.AsyncExitStack() as stack:
            # The servers first: none answering is an error before anything is written (and
            # a simulator that stands in says so before the run starts).
            pool = self.options.pool or await _open_pool(self, stack, real)
            with self._open_ledger(db):
                if not any(b.simulated for b in pool.backends):
                    _set_aside_simulated(self.ledger, self.out, self.order.id, self.notify)
                if self.ledger.counts().done == self.ledger.counts().total:
                    return self._already_complete()
                self.log.move_to(OrderState.QUEUED)
                return await self._run_on(pool)

    @contextlib.contextmanager
    def _open_ledger(self, db: Path) -> Iterator[Ledger]:
        with Ledger.open(db, self.order.id, None, comfyline_version=__version__) as ledger:
            self.ledger = ledger
            self.log = RunLog(ledger, self.notify)
            _evolve(ledger, self.loaded, self.out)
            self.folder = revision_folder(ledger.revision())
            _remove_temp_files(self.out, self.out / self.folder)
            self.plan = self._plan()
            ledger.ensure_slots(self.plan.slots)
            planned = {s.index for s in self.plan.slots}
            beyond = [r.index for r in ledger.iter_slots() if r.index not in planned]
            ledger.drop_slots(beyond, "the order's count went down")
            self.writer = SlotWriter(
                self.out, ledger, self.plan, self.order, self.notify, folder=self.folder
            )
            self.writer.replace_flagged(planned)  # (a killed run's); moves what was set aside
            yield ledger

    def _plan(self) -> Plan:
        slots = self.ledger.slots()
        first = plan_with(self.loaded, slots, self.ledger.order().seed_base)
        base = self.ledger.ensure_seed_base(first.seed_base)
        return first if base == first.seed_base else plan_with(self.loaded, slots, base)

    def _already_complete(self) -> GenerationReport:
        """Nothing to make. A report that is not the final one (a run killed while it wrote
        it, or a state left 'running') is rebuilt, so what the user sees never lies."""
        report_file = self.out / REPORT_FILE
        with contextlib.suppress(ComfyError, OutputError, OSError, ValueError):
            if report_file.exists() and self.ledger.order().state is OrderState.COMPLETED:
                report = read_report(report_file)
                if report.order.state == OrderState.COMPLETED.value and not report.totals.missing:
                    self.notify(f"order {self.order.id!r} is already complete: nothing to do.")
                    return report
        self.notify(f"order {self.order.id!r} was already made; its report is brought up to date.")
        return self._finalize(self.log.end_state(self.order.qc), ran=False)

    # -- 3: check ------------------------------------------------------------------------

    async def _run_on(self, pool: BackendPool) -> GenerationReport:
        self.pool = pool
        up = pool.answering()
        self.backend = up[0]
        self.ledger.record_event(RUN_START, detail=_run_start(self.backend, pool))
        self.started = self.clock()
        first = self._request(self.plan.slots[0], "")
        fit = await fit_backends(up, first, self.order.checkpoint or self.settings.checkpoint)
        admission = Admission(self.ledger, self.notify, first, fit)
        self.checkpoint, self.backend = fit.checkpoint, fit.backends[0]
        self.backends = [b for b in pool.backends if b in fit.backends or not pool.is_up(b)]
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
            on_event=self.log.guard_event,
        )
        self.log.move_to(OrderState.RUNNING)
        counts = self.ledger.counts()
        self.throughput = Throughput(counts.total, counts.done, clock=self.clock)
        claim = Claim(self.order.id, self.order.priority, self.order.quality, self.log.guard_event)
        scheduler = Scheduler(
            self.ledger,
            self.backends,
            pool=pool,
            claim=claim,
            make_request=lambda i, pid, params, attempt: self._request(
                self.writer.plan.slot(i), pid, params, attempt
            ),
            finish=self._finish_slot,
            oom=self.oom,
            prompt_id=lambda i, attempt: slot_prompt_id(
                self.order.id, i, attempt, self.ledger.nonce
            ),
            notify=self.notify,
            on_result=self._counted,
            oom_target=target,
            admit=admission.admit,
            admitted=tuple(b.name for b in fit.backends),
        )
        try:
            await self._reconcile(scheduler)
            for record in self.ledger.failed():
                self.ledger.requeue(record.index, "retried by a new run")
            scheduler.add([r.index for r in self.ledger.iter_slots(SlotState.PLANNED)])
            return await self._schedule(scheduler)
        finally:
            pool.forget(claim)

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

    # -- 4: reconcile --------------------------------------------------------------------

    async def _reconcile(self, scheduler: Scheduler) -> None:
        """Settle the slots a previous run left SUBMITTED (:mod:`comfyline.recovery`)."""
        await reconcile(
            self.ledger,
            self.pool,
            scheduler,
            request=lambda i, pid, attempt: self._request(self.plan.slot(i), pid, attempt=attempt),
            finish=self._finish_slot,
            notify=self.notify,
        )

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
        for backend in self.backends:
            if self.pool.is_up(backend):
                await self.log.release_memory(backend.adapter)
        return self._finalize(self.log.end_state(self.order.qc))

    async def _finish_slot(self, index: int, result: GenerationResult, backend: Backend) -> None:
        """Write the slot's images once, parameters inside, and mark it done."""
        await self.writer.finish(index, result, backend, self.checkpoint)

    def _counted(self, ok: bool) -> None:
        snapshot = self.throughput.image_done(ok)
        if hasattr(self, "throughput_display"):
            self.throughput_display.update(snapshot)

    async def _stop(self, exc: BaseException, scheduler: Scheduler) -> None:
        """Save the state of a run that did not finish, and say how to resume it."""
        if isinstance(exc, GuardTripped):
            # A running prompt is never cut off: the next run collects it from history.
            state = OrderState.CANCELLED
        else:
            if not isinstance(exc, ComfyUnavailable):  # else there is nobody to tell
                with contextlib.suppress(DiskFull):  # its ledger notes may not fit: stop anyway
                    await scheduler.stop()
            user_stop = isinstance(exc, asyncio.CancelledError | KeyboardInterrupt)
            state = OrderState.CANCELLED if user_stop else self.log.end_state(self.order.qc)
        with contextlib.suppress(LedgerError):
            # A full disk: write no more (status says interrupted). A ledger gone with its
            # folder: a report from it would list images that are no longer there.
            if not isinstance(exc, DiskFull | LedgerGone):
                self._finalize(state)
        where = getattr(self, "backend", None), getattr(self, "pool", None)
        saved = "its folder is gone; start it again" if isinstance(exc, LedgerGone) else None
        command = _resume(self.loaded, self.options, *where)
        self.notify(f"stopped; {saved or 'state saved. Resume'} with: {command}")

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

    def _finalize(self, state: OrderState, *, ran: bool = True) -> GenerationReport:
        if self.ledger.order().state is not state:
            self.log.move_to(state)
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


def _resume(
    loaded: LoadedOrder, options: _Options, backend: Backend | None, pool: BackendPool | None
) -> str:
    """The command that resumes a run on the servers it ran on."""
    if options.resume_hint:
        return options.resume_hint
    command = f"comfyline run-order {loaded.file}"
    if options.sim or (backend is not None and backend.name == SIMULATOR):
        return command + " --sim"
    if pool is not None:
        return command + "".join(f" --comfyui {b.url}" for b in pool.backends)
    return command


def _run_start(first: Backend, pool: BackendPool) -> dict[str, Any]:
    """What ``run.start`` records: the first server (as one-server runs always did), every
    server, and our pid."""
    return {
        "url": first.url,
        "simulated": first.simulated,
        "comfyui_version": first.comfyui_version,
        "device": first.device,
        "backends": [b.describe() for b in pool.backends],
        "pid": os.getpid(),
    }


def _remove_temp_files(*folders: Path) -> None:
    """Delete the temp files a runner killed in the middle of an atomic write left behind.

    Called with the order's lock held, so no live runner is writing them. Only the folders
    themselves: the output folder (the report, the sheets, the chart, revision 1's images) and
    the current revision's.
    """
    for folder in dict.fromkeys(folders):
        for path in folder.glob(f".*{TEMP_SUFFIX}"):
            if _TEMP_FILE.fullmatch(path.name) and path.is_file():
                path.unlink(missing_ok=True)


def _recorded(db: Path) -> list[SlotRecord]:
    """The slots the ledger at ``db`` holds, read without the lock ([] when none)."""
    if not db.is_file():
        return []
    with contextlib.suppress(LedgerError):
        return read_slots(db)
    return []


async def _open_pool(run: _Run, stack: contextlib.AsyncExitStack, real: list[str]) -> BackendPool:
    """Open the run's servers. An order that ran on a real ComfyUI (``real``: those servers)
    never falls back to the simulator on its own: the simulator's images would pass for the
    order's."""
    fallback = run.options.sim_if_unreachable
    if real and fallback is None:
        fallback = False
    try:
        return await open_pool(
            run.settings,
            stack,
            urls=run.options.urls,
            force_sim=run.options.sim,
            sim_if_unreachable=fallback,
            notify=run.notify,
            clock=run.clock,
            sleep=run.sleep,
        )
    except ComfyUnavailable as exc:
        if not real or run.options.sim_if_unreachable:
            raise
        urls = [u for u in real if "://" in u] or [run.settings.comfyui_url]
        command = f"comfyline run-order {run.loaded.file}" + "".join(
            f" --comfyui {u}" for u in urls
        )
        raise ComfyUnavailable(
            f"{exc}. Order {run.order.id!r} ran on a real ComfyUI ({', '.join(real)}), so it "
            f"does not fall back to the simulator. Start the server, then resume with: {command}"
        ) from exc


def _survey(loaded: LoadedOrder, db: Path, recorded: list[SlotRecord]) -> Survey | None:
    """What the run finds, read without the lock (the runner settles it with the lock)."""
    if not db.is_file():
        return None
    with contextlib.suppress(LedgerError, OrderError):
        order = read_status(db).order
        revision, _ = read_revisions(db)
        return survey(
            loaded,
            recorded,
            stored_fingerprint=order.fingerprint,
            stored_identity=read_identity(db),
            revision=revision,
            seed_base=order.seed_base,
        )
    return None


def _evolve(ledger: Ledger, loaded: LoadedOrder, out: Path) -> None:
    """Settle an edited order under the lock: start over, or start a new revision."""
    order = ledger.order()
    found = survey(
        loaded,
        ledger.slots(),
        stored_fingerprint=order.fingerprint,
        stored_identity=ledger.identity(),
        revision=ledger.revision(),
        seed_base=order.seed_base,
    )
    parts = identity(loaded)
    if found.kind == "restart":
        ledger.restart(fingerprint_of(parts), parts)
    elif found.kind == "revision":
        start_revision(ledger, loaded, out, found.fields)
    else:
        ledger.set_identity(fingerprint_of(parts), parts)


def _set_aside_simulated(
    ledger: Ledger, out: Path, order_id: str, notify: Callable[[str], None]
) -> None:
    """A real run never counts the simulator's images as made: they move to ``simulated/``
    (recorded first) and their slots are made again, for real."""
    made = [s for s in ledger.iter_slots(SlotState.DONE) if s.simulated]
    for slot in made:
        moved = [aside_name(SIMULATED_DIR, f) for f in slot.files]
        ledger.reopen(slot.index, reason="simulated", moved_to=moved)
    if made:
        notify(
            f"order {order_id!r}: {len(made)} image(s) made by the simulator are moved to "
            f"{out / SIMULATED_DIR} and made again on the real server"
        )
        settle_moves(ledger, out, notify)


def _made(found: Survey | None, recorded: list[SlotRecord], sim: bool) -> bool:
    """Whether the order looks made already (checked again with the lock): nothing edited
    but the count, every slot it wants done, and no simulator's image that a real run would
    make again. Then no server is needed."""
    if found is None or found.kind not in ("resume", "shrunk") or not recorded:
        return False
    wanted = {s.index for s in found.plan.slots} if found.plan else {s.index for s in recorded}
    done = all(s.state is SlotState.DONE for s in recorded if s.index in wanted)
    return done and (sim or not any(s.simulated for s in recorded))


def _real_servers(db: Path, recorded: list[SlotRecord]) -> list[str]:
    """The real ComfyUI servers the order ran on (its images', and its runs' from the log):
    empty for an order that only ever ran on the simulator, or never ran."""
    servers = [s.backend for s in recorded if s.simulated is False and s.backend]
    if db.is_file():
        with contextlib.suppress(LedgerError), LedgerReader.open(db) as view:
            for _, event in view.events(limit=100_000):
                if event.kind == RUN_START:
                    for backend in event.detail.get("backends") or ():
                        if not backend.get("simulated") and backend.get("url"):
                            servers.append(str(backend["url"]))
    return list(dict.fromkeys(servers))
