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
started again by the same line: start the line again (or ``comfyline run-order``) to retry it.
An order found completed is not read again until its file changes.
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


@dataclass
class _Running:
    candidate: _Candidate
    task: asyncio.Task[Outcome]
    paused: bool = False  # stopped because its window closed: it goes again when it reopens


@dataclass
class Line:
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

    def __post_init__(self) -> None:
        self.outcomes: list[Outcome] = []
        self._running: dict[Path, _Running] = {}
        self._ended: set[Path] = set()
        self._said: dict[Path, float] = {}
        self._completed: dict[Path, float] = {}  # order file -> its mtime when found completed
        self._known: set[Path] | None = None
        self._wake = asyncio.Event()
        if self.notifier is None:
            self.notifier = Notifier(self.settings.notify_urls, say=self.say)

    def say(self, line: str) -> None:
        self.console.print(f"line: {line}", highlight=False, markup=False)

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
            try:
                await self._loop(pool)
            finally:
                await self._stop_all()
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
            if not candidate.in_window(now):
                waiting.append(candidate)
            elif self._may_start(candidate):
                self._start(candidate, pool)
            else:
                waiting.append(candidate)
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
        if status.order.state is OrderState.COMPLETED:
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
                resume_hint=f"comfyline line {self.orders_dir}",
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
