"""``comfyline line``: every unfinished order of a folder, on every server, one process.

The line keeps no state of its own: each order's ledger says what is done, so a line killed
at any moment (``kill -9`` included) and started again picks up where it was. What it does:

1. opens the servers once (:func:`comfyline.backends.open_backends`) into one
   :class:`~comfyline.pool.BackendPool` that every order shares;
2. finds the orders under ``ORDERS_DIR``; those not completed are candidates, by
   ``priority:`` (higher first), then age (the order file's modification time, oldest first);
3. runs up to ``line_max_orders`` of them at once, each through ``pipeline.generate`` (so each
   is exactly what ``comfyline run-order`` would make). Orders running together share the
   servers: a free place on a server goes to the higher priority, and among equals in turn.
   A candidate of higher priority than one running starts at once;
4. an order with ``schedule: {after, before}`` is only started inside its window, and is
   stopped cleanly (its prompts taken off the servers, its state saved) when the window closes;
5. with ``--watch`` it looks for new order folders every ``line_poll_s`` and never ends;
   without, it ends when every order it found has run (waiting for windows that are to come).

An order that ends unfinished (failed, partial, stopped on heat, its servers lost) is not
started again by the same line: start the line again (or ``comfyline run-order``) to retry it,
or (from the dashboard) :meth:`Line.retake` it. An order found completed is not read again
until its file changes.

A front end in the line's process (the dashboard of ``comfyline serve``) reads the line with
:meth:`Line.queue` and :meth:`Line.servers`, and steers it with :meth:`Line.pause`,
:meth:`Line.resume`, :meth:`Line.cancel` and :meth:`Line.retake`; call them in the line's
event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from rich.console import Console

from comfyline.backends import Backend, open_backends
from comfyline.errors import ComfylineError, GuardTripped, LedgerError, OrderError, OrderLocked
from comfyline.ledger import OrderState, ledger_path, read_status
from comfyline.notify import Notifier
from comfyline.orders import LoadedOrder, find_orders, load
from comfyline.pool import BackendPool
from comfyline.settings import Settings


@dataclass(frozen=True)
class Outcome:
    """How one order's run on the line ended: ``state`` is the order's state, or
    ``stopped on heat`` / ``error``; ``message`` the report line or the error."""

    order: str
    file: Path
    state: str
    message: str = ""


@dataclass(frozen=True)
class QueueEntry:
    """One order as the line sees it now. ``state``: ``running``; ``stopping`` (its window
    closed or the line was paused: it saves its state); ``next`` (it starts when a place is
    free; ``paused`` while the line is); ``waiting for its window``; or how it ended here:
    ``completed``, ``cancelled``, ``stopped on heat``, ``error``, ``failed``, ``partial``…
    ``detail``: the window, or the outcome's line."""

    order: str
    file: Path
    priority: int
    state: str
    detail: str = ""


@dataclass(frozen=True)
class ServerState:
    """One server of the line now: ``state`` ``up``, ``down`` (``why``: why it was lost; it is
    asked again every ``probe_interval_s``) or ``cooling`` (``why``: why its guard holds new
    prompts); ``temperature_c``: its guard's latest reading (None before one or while down)."""

    name: str
    url: str
    state: str
    why: str
    temperature_c: float | None


@dataclass
class _Candidate:
    file: Path
    loaded: LoadedOrder
    mtime: float

    @property
    def key(self) -> tuple[int, float, str]:
        return (-self.loaded.order.priority, self.mtime, str(self.file))

    def in_window(self, now: datetime) -> bool:
        schedule = self.loaded.order.schedule
        return schedule is None or schedule.allows(now.hour, now.minute)

    def window(self) -> str:
        schedule = self.loaded.order.schedule
        if schedule is None:
            return ""
        return f"{schedule.after or '00:00'}–{schedule.before or '24:00'}"

    def entry(self, state: str, detail: str = "") -> QueueEntry:
        order = self.loaded.order
        return QueueEntry(order.id, self.file, order.priority, state, detail)


@dataclass
class _Running:
    candidate: _Candidate
    task: asyncio.Task[Outcome]
    paused: bool = False  # stopped for its window or a paused line: it goes again after


class _LineControls:
    """What a front end in the line's process calls: steer the line and read it. A base of
    :class:`Line`, which sets in its ``__post_init__`` the state declared here."""

    paused: bool
    pool: BackendPool | None
    outcomes: list[Outcome]
    now: Callable[[], datetime]
    _running: dict[Path, _Running]
    _waiting: list[_Candidate]
    _ended: set[Path]
    _cancelled: set[Path]
    _completed: dict[Path, float]
    _wake: asyncio.Event

    console: Console

    def say(self, line: str) -> None:
        self.console.print(f"line: {line}", highlight=False, markup=False)

    def pause(self) -> None:
        """Stop every running order cleanly (each saves its state, as when its window closes)
        and start none until :meth:`resume`; the servers stay open."""
        if self.paused:
            return
        self.paused = True
        self.say("paused: stopping the running orders")
        for running in self._running.values():
            if not running.paused:
                running.paused = True
                running.task.cancel()
        self._wake.set()

    def resume(self) -> None:
        """Start orders again after :meth:`pause` (those stopped resume where they were)."""
        if self.paused:
            self.paused = False
            self.say("resumed")
            self._wake.set()

    async def cancel(self, file: Path) -> bool:
        """Stop the order of ``file`` as Ctrl-C stops ``run-order`` (its prompts taken off the
        servers, its state saved) and wait for it; this line does not start it again unless
        :meth:`retake` is called. False when the line is not running it."""
        running = self._running.get(file)
        if running is None:
            return False
        self._cancelled.add(file)
        self.say(f"{running.candidate.loaded.order.id}: cancelled")
        running.task.cancel()
        await asyncio.wait([running.task])
        return True

    def retake(self, file: Path) -> bool:
        """Queue again an order that ended on this line (cancelled, failed, partial…) or was
        found completed (a re-roll reopened it); False when neither."""
        if file not in self._ended and file not in self._completed:
            return False
        self._ended.discard(file)
        self._completed.pop(file, None)
        self._cancelled.discard(file)
        self.outcomes = [o for o in self.outcomes if o.file != file]
        self._wake.set()
        return True

    def queue(self) -> list[QueueEntry]:
        """Every order the line knows, in its order: running, stopping, next (by priority, then
        age), waiting for a window, then those that ended here (latest first) and those found
        completed."""
        now = self.now()
        running = sorted(self._running.values(), key=lambda r: r.candidate.key)
        entries = [r.candidate.entry("stopping" if r.paused else "running") for r in running]
        later = []
        for candidate in self._waiting:
            if candidate.file in self._running or candidate.file in self._ended:
                continue
            if not candidate.in_window(now):
                later.append(candidate.entry("waiting for its window", candidate.window()))
            else:
                entries.append(candidate.entry("paused" if self.paused else "next"))
        entries += later
        ended = {o.file: o for o in self.outcomes}
        for file in self._cancelled - set(ended):
            if file not in self._running:
                ended[file] = Outcome(file.parent.name, file, "cancelled")
        shown = {e.file for e in entries}
        for outcome in reversed(list(ended.values())):
            if outcome.file not in shown:
                shown.add(outcome.file)
                entries.append(
                    QueueEntry(outcome.order, outcome.file, 0, outcome.state, outcome.message)
                )
        for file in self._completed:
            if file not in shown:
                entries.append(QueueEntry(file.parent.name, file, 0, "completed"))
        return entries

    def servers(self) -> list[ServerState]:
        """Each server of the line now (none while the line is not running)."""
        if self.pool is None:
            return []
        found = []
        for backend in self.pool.backends:
            guard = backend.guard
            temps = [s.temperature_c for s in guard.samples] if guard is not None else []
            temp = next((t for t in reversed(temps) if t is not None), None)
            if not self.pool.is_up(backend):
                state, why = "down", self.pool.lost_reason(backend)
            elif guard is not None and guard.holding:
                state, why = "cooling", guard.holding
            else:
                state, why = "up", ""
            found.append(ServerState(backend.name, backend.url, state, why, temp))
        return found


@dataclass
class Line(_LineControls):
    """The line over ``orders_dir`` (see the module docs). ``urls``, ``sim``: the servers, as
    for ``run-order``; ``now``: local time of day for the windows (a test seam)."""

    orders_dir: Path
    settings: Settings
    watch: bool = False
    urls: tuple[str, ...] = ()
    sim: bool = False
    console: Console = field(default_factory=lambda: Console(stderr=True, highlight=False))
    notifier: Notifier | None = None
    now: Callable[[], datetime] = datetime.now
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    resume_hint: str = ""
    """How an order stopped on the line is resumed, in its messages (default: this command)."""

    def __post_init__(self) -> None:
        self.outcomes: list[Outcome] = []
        self._running: dict[Path, _Running] = {}
        self._ended: set[Path] = set()
        self._said: dict[Path, float] = {}
        self._completed: dict[Path, float] = {}  # order file -> its mtime when found completed
        self._known: set[Path] | None = None
        self._waiting: list[_Candidate] = []
        self._cancelled: set[Path] = set()
        self._wake = asyncio.Event()
        self.paused = False
        """While True no order starts; those running were stopped (see :meth:`pause`)."""
        self.pool: BackendPool | None = None
        """The servers, while :meth:`run` runs."""
        if self.notifier is None:
            self.notifier = Notifier(self.settings.notify_urls, say=self.say)

    async def run(self) -> list[Outcome]:
        """Run the line until it is done (never, with ``watch``); the outcome of each order
        it ran. Cancelling it stops every order cleanly (each saves its state)."""
        if not self.orders_dir.is_dir():
            raise ComfylineError(f"the orders folder {self.orders_dir} does not exist")
        async with contextlib.AsyncExitStack() as stack:
            backends = await open_backends(
                self.settings,
                stack,
                urls=self.urls,
                force_sim=self.sim,
                notify=self.say,
                clock=self.clock,
                sleep=self.sleep,
            )
            pool = BackendPool(
                backends,
                self.settings,
                on_health=self._health,
                clock=self.clock,
                sleep=self.sleep,
            )
            stack.push_async_callback(pool.aclose)
            self.say(f"{len(backends)} server(s): " + ", ".join(b.name for b in backends))
            self.pool = pool
            try:
                await self._loop(pool)
            finally:
                await self._stop_all()
                self.pool = None
                assert self.notifier is not None
                await self.notifier.drain()
        return self.outcomes

    async def _loop(self, pool: BackendPool) -> None:
        while True:
            waiting = self._schedule(pool)
            if not self.watch and not self._running and not waiting:
                return
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.line_poll_s):
                    await self._wake.wait()

    def _schedule(self, pool: BackendPool) -> list[_Candidate]:
        """Pause what left its window, start what may run; the candidates still waiting."""
        now = self.now()
        for running in self._running.values():
            if not running.paused and not running.candidate.in_window(now):
                running.paused = True
                self.say(f"{running.candidate.loaded.order.id}: its window closed; stopping it")
                running.task.cancel()
        candidates = sorted(self._candidates(), key=lambda c: c.key)
        waiting = []
        for candidate in candidates:
            if self.paused or not candidate.in_window(now):
                waiting.append(candidate)
            elif self._may_start(candidate):
                self._start(candidate, pool)
            else:
                waiting.append(candidate)
        self._waiting = waiting
        return waiting

    def _may_start(self, candidate: _Candidate) -> bool:
        active = [r for r in self._running.values() if not r.paused]
        if len(active) < self.settings.line_max_orders:
            return True
        lowest = min(r.candidate.loaded.order.priority for r in active)
        return candidate.loaded.order.priority > lowest  # it takes the servers from them

    # -- the orders --------------------------------------------------------------------------

    def _candidates(self) -> list[_Candidate]:
        files, _ = find_orders([self.orders_dir])
        if self._known is None or self.watch:
            known = set(files) if self._known is None else self._known | set(files)
            self._known = known
        found = []
        for file in files:
            if file not in self._known or file in self._running or file in self._ended:
                continue
            candidate = self._candidate(file)
            if candidate is not None:
                found.append(candidate)
        return found

    def _candidate(self, file: Path) -> _Candidate | None:
        try:
            mtime = file.stat().st_mtime
            if self._completed.get(file) == mtime:
                return None  # found completed before, unchanged since: not read again
            loaded = load(file)
        except OrderError as exc:
            self._say_once(file, mtime, f"{file}: invalid, skipped until it changes:\n{exc}")
            return None
        except OSError:
            return None  # removed meanwhile
        if self._finished(loaded, file, mtime):
            return None
        return _Candidate(file, loaded, mtime)

    def _finished(self, loaded: LoadedOrder, file: Path, mtime: float) -> bool:
        from comfyline.pipeline import output_dir

        try:
            db = ledger_path(output_dir(loaded.order, self.settings))
            if not db.exists():
                return False
            status = read_status(db)
        except (LedgerError, ComfylineError) as exc:
            self._say_once(file, mtime, f"{file}: skipped: {exc}")
            return True
        if status.running:
            self._say_once(file, mtime, f"{file}: another runner holds it; left to it")
            return True
        # A re-roll leaves a completed order with slots to make again: it is not finished.
        left = status.counts.planned + status.counts.submitted
        if status.order.state is OrderState.COMPLETED and not left:
            self._completed[file] = mtime
            return True
        return False

    def _say_once(self, file: Path, mtime: float, line: str) -> None:
        if self._said.get(file) != mtime:
            self._said[file] = mtime
            self.say(line)

    def _start(self, candidate: _Candidate, pool: BackendPool) -> None:
        order = candidate.loaded.order
        self.say(f"starting {order.id} (priority {order.priority})")
        task = asyncio.create_task(self._run_order(candidate, pool), name=f"order {order.id}")
        self._running[candidate.file] = _Running(candidate, task)
        task.add_done_callback(lambda _: self._done(candidate.file))

    async def _run_order(self, candidate: _Candidate, pool: BackendPool) -> Outcome:
        from comfyline.pipeline import generate

        order = candidate.loaded.order
        try:
            report = await generate(
                candidate.loaded,
                settings=self.settings,
                pool=pool,
                console=self.console,
                resume_hint=self.resume_hint or f"comfyline line {self.orders_dir}",
                clock=self.clock,
                sleep=self.sleep,
            )
        except GuardTripped as exc:
            return await self._tell(Outcome(order.id, candidate.file, "stopped on heat", str(exc)))
        except OrderLocked as exc:
            return Outcome(order.id, candidate.file, "locked", str(exc))
        except ComfylineError as exc:
            return await self._tell(Outcome(order.id, candidate.file, "error", str(exc)))
        totals = report.totals
        message = (
            f"{totals.succeeded}/{totals.requested} images, {totals.failed} failed, "
            f"{totals.missing} missing"
        )
        return await self._tell(Outcome(order.id, candidate.file, report.order.state, message))

    async def _tell(self, outcome: Outcome) -> Outcome:
        assert self.notifier is not None
        title = f"order {outcome.order} {outcome.state}"
        if outcome.state == OrderState.COMPLETED.value:
            await self.notifier.send("completed", title, outcome.message)
        elif outcome.state == "stopped on heat":
            await self.notifier.send("heat", title, outcome.message)
        elif outcome.state != OrderState.CANCELLED.value:
            await self.notifier.send("failed", title, outcome.message)
        return outcome

    def _done(self, file: Path) -> None:
        running = self._running.pop(file)
        self._wake.set()
        if running.task.cancelled():
            if not running.paused:
                self._ended.add(file)
            return
        exc = running.task.exception()
        if exc is not None:  # a bug: the line goes on with the other orders
            outcome = Outcome(running.candidate.loaded.order.id, file, "error", repr(exc))
        else:
            outcome = running.task.result()
        if outcome.state != "locked":
            self._ended.add(file)
        self.outcomes.append(outcome)
        detail = f" ({outcome.message})" if outcome.message else ""
        self.say(f"{outcome.order}: {outcome.state}{detail}")

    async def _stop_all(self) -> None:
        tasks = [r.task for r in self._running.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _health(self, backend: Backend, up: bool, why: str) -> None:
        assert self.notifier is not None
        if up:
            self.say(f"server {backend.name} is back")
            self.notifier.post("back", f"server {backend.name} is back", backend.url)
        else:
            self.say(f"server {backend.name} lost: {why}")
            self.notifier.post("lost", f"server {backend.name} lost", why)
