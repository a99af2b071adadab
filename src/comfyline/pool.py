"""The servers of a run (or of the line), shared by the orders that run on them.

For each backend the pool keeps:

- its **health**: up, or lost (a run saw :class:`~comfyline.errors.ComfyUnavailable` past the
  adapter's reconnect timeout, or it did not answer when opened). A lost backend is asked for
  its ``/system_stats`` every ``probe_interval_s``; when it answers it is up again, with a fresh
  guard (the old one still counted the prompts the server lost);
- its **capacity**: at most ``max_in_flight`` prompts of all orders at once. A free place goes
  to the waiting order of the highest ``priority``; among equals, to the one served least
  recently (round robin), so a long order cannot starve a short one;
- its **guard**, one per card whatever the order: the gate before each prompt is passed by one
  order at a time, paced by the quality level of the order whose prompt goes next; the guard's
  events go to that order.

Nothing here is durable: what a run must not lose lives in its order's ledger.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from comfyline.backends import Backend, connect, open_backends
from comfyline.errors import ComfyError, ComfyUnavailable
from comfyline.guard import Guard, GuardEvent, Limits, Sample
from comfyline.presets import get_level
from comfyline.settings import Settings

OnEvent = Callable[[GuardEvent], None]
OnHealth = Callable[[Backend, bool, str], None]
"""Told when a backend is lost (False, why) or back (True, "")."""


@dataclass(eq=False)
class Claim:
    """An order that uses the pool: who it is, how urgent, and where its guard events go."""

    name: str
    priority: int = 0
    level: str = "standard"
    on_event: OnEvent = lambda event: None


@dataclass(eq=False)
class _Waiter:
    claim: Claim
    future: asyncio.Future[None]
    seq: int


@dataclass(eq=False)
class _State:
    backend: Backend
    up: bool
    up_event: asyncio.Event = field(default_factory=asyncio.Event)
    used: int = 0
    waiters: list[_Waiter] = field(default_factory=list)
    gate_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    guard: Guard | None = None
    watch: asyncio.Task[None] | None = None
    probe: asyncio.Task[None] | None = None
    listener: OnEvent = lambda event: None
    lost_reason: str = ""
    gated: dict[int, int] = field(default_factory=dict)  # id(claim) -> its prompts in flight


async def open_pool(
    settings: Settings,
    stack: contextlib.AsyncExitStack,
    *,
    urls: tuple[str, ...] = (),
    force_sim: bool = False,
    sim_if_unreachable: bool | None = None,
    notify: Callable[[str], None] = lambda line: None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> BackendPool:
    """The servers :func:`~comfyline.backends.open_backends` opens, in a pool closed with
    ``stack``; a server that comes back is said through ``notify``."""
    backends = await open_backends(
        settings,
        stack,
        urls=urls,
        force_sim=force_sim,
        sim_if_unreachable=sim_if_unreachable,
        notify=notify,
        clock=clock,
        sleep=sleep,
    )

    def health(backend: Backend, up: bool, why: str) -> None:
        if up:  # (a loss is said by each order it hits, with the slots it hands back)
            notify(f"server {backend.name} is back")

    pool = BackendPool(backends, settings, on_health=health, clock=clock, sleep=sleep)
    stack.push_async_callback(pool.aclose)
    return pool


class BackendPool:
    """Health, capacity and guard of each backend (see the module docs). Close it with
    :meth:`aclose` (its probe and watch tasks)."""

    def __init__(
        self,
        backends: list[Backend],
        settings: Settings,
        *,
        on_health: OnHealth = lambda backend, up, why: None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.backends = list(backends)
        self.settings = settings
        self._on_health = on_health
        self._clock = clock
        self._sleep = sleep
        self._seq = itertools.count()
        self._served: dict[int, int] = {}  # id(claim) -> tick of its latest grant
        self._state = {b.name: _State(b, up=bool(b.stats)) for b in backends}
        for state in self._state.values():
            if state.up:
                state.up_event.set()
            else:
                state.lost_reason = "it did not answer when the run started"
                self._start_probe(state)

    def by_name(self, name: str | None) -> Backend | None:
        """The backend called ``name`` (None when there is none)."""
        state = self._state.get(name or "")
        return state.backend if state is not None else None

    # -- health ------------------------------------------------------------------------------

    def answering(self) -> list[Backend]:
        """The backends up now; :class:`ComfyUnavailable` naming why when none is."""
        up = [b for b in self.backends if self.is_up(b)]
        if not up:
            why = "; ".join(f"{b.name} ({self.lost_reason(b)})" for b in self.backends)
            raise ComfyUnavailable(f"no ComfyUI server of the run answers now: {why}")
        return up

    def is_up(self, backend: Backend) -> bool:
        """Whether ``backend`` is believed to answer."""
        return self._state[backend.name].up

    async def wait_up(self, backend: Backend) -> None:
        """Until ``backend`` is up (at once when it is)."""
        await self._state[backend.name].up_event.wait()

    def lost(self, backend: Backend, why: str) -> None:
        """Record that ``backend`` went away; it is asked again every ``probe_interval_s``."""
        state = self._state[backend.name]
        if not state.up:
            return
        state.up = False
        state.up_event.clear()
        state.lost_reason = why
        self._reset_guard(state)
        self._on_health(backend, False, why)
        self._start_probe(state)

    def lost_reason(self, backend: Backend) -> str:
        """Why ``backend`` is not up ("" when it is)."""
        state = self._state[backend.name]
        return "" if state.up else state.lost_reason

    def _start_probe(self, state: _State) -> None:
        if state.probe is None or state.probe.done():
            name = f"probe {state.backend.name}"
            state.probe = asyncio.create_task(self._probe(state), name=name)

    async def _probe(self, state: _State) -> None:
        while True:
            await self._sleep(self.settings.probe_interval_s)
            try:
                await connect(state.backend, self.settings)
            except ComfyError:
                continue
            state.up, state.lost_reason = True, ""
            state.up_event.set()
            self._on_health(state.backend, True, "")
            return

    # -- capacity ----------------------------------------------------------------------------

    async def claim(self, backend: Backend, claim: Claim) -> None:
        """Wait for a place on ``backend`` for one prompt of ``claim``; give it back with
        :meth:`release`."""
        state = self._state[backend.name]
        if state.used < backend.max_in_flight and not state.waiters:
            self._grant(state, claim)
            return
        waiter = _Waiter(claim, asyncio.get_running_loop().create_future(), next(self._seq))
        state.waiters.append(waiter)
        try:
            await waiter.future
        except BaseException:
            if waiter in state.waiters:
                state.waiters.remove(waiter)
            elif waiter.future.done() and not waiter.future.cancelled():
                self.release(backend)  # granted as we were cancelled: pass it on
            raise

    def release(self, backend: Backend) -> None:
        """Give back a place taken with :meth:`claim`."""
        state = self._state[backend.name]
        state.used = max(0, state.used - 1)
        self._wake(state)

    def _grant(self, state: _State, claim: Claim) -> None:
        state.used += 1
        self._served[id(claim)] = next(self._seq)

    def _wake(self, state: _State) -> None:
        while state.waiters and state.used < state.backend.max_in_flight:
            best = min(
                state.waiters,
                key=lambda w: (-w.claim.priority, self._served.get(id(w.claim), -1), w.seq),
            )
            state.waiters.remove(best)
            if best.future.done():
                continue
            self._grant(state, best.claim)
            best.future.set_result(None)

    def forget(self, claim: Claim) -> None:
        """``claim`` has ended (its run is over)."""
        self._served.pop(id(claim), None)

    # -- the guard ---------------------------------------------------------------------------

    async def gate(self, backend: Backend, claim: Claim) -> None:
        """The guard's gate for the next prompt of ``claim`` on ``backend`` (one at a time):
        paced by ``claim``'s quality level, its events told to ``claim``."""
        state = self._state[backend.name]
        async with state.gate_lock:
            guard = self.guard(backend, claim)
            level = get_level(claim.level)
            guard.level_pause_s = (
                level.pause_s if self.settings.pause_s is None else self.settings.pause_s
            )
            guard.max_batch = level.max_batch
            state.listener = claim.on_event
            await guard.before_prompt()
            state.gated[id(claim)] = state.gated.get(id(claim), 0) + 1

    async def settled(self, backend: Backend) -> None:
        """Tell ``backend``'s guard that the server just finished a prompt (its peak)."""
        guard = self._state[backend.name].guard
        if guard is not None:
            await guard.prompt_settled()

    async def after(
        self, backend: Backend, images: int, claim: Claim | None = None
    ) -> Sample | None:
        """Tell ``backend``'s guard that a prompt (of ``claim``) finished (``images`` made);
        its reading."""
        state = self._state[backend.name]
        if claim is not None and state.gated.get(id(claim)):
            state.gated[id(claim)] -= 1
        return await state.guard.after_prompt(images) if state.guard is not None else None

    async def abandon(self, claim: Claim) -> None:
        """``claim``'s prompts in flight were taken off the servers: they never end, so no
        guard waits for them (the orders of a line share the guards)."""
        for state in self._state.values():
            for _ in range(state.gated.pop(id(claim), 0)):
                if state.guard is not None:
                    await state.guard.after_prompt(0)

    def guard(self, backend: Backend, claim: Claim) -> Guard:
        """``backend``'s guard, made (at ``claim``'s level) and watched on first use."""
        state = self._state[backend.name]
        if state.guard is None:
            level = get_level(claim.level)
            settings = self.settings
            state.listener = claim.on_event
            state.guard = Guard(
                backend.sensor,
                Limits.from_settings(settings),
                level.pause_s if settings.pause_s is None else settings.pause_s,
                level.max_batch,
                clock=self._clock,
                sleep=self._sleep,
                free_memory=backend.free_memory,
                on_event=lambda event: state.listener(event),
                series_pause_s=settings.series_pause_s,
            )
            backend.guard = state.guard
            state.watch = asyncio.create_task(state.guard.watch(), name=f"watch {backend.name}")
        return state.guard

    def _reset_guard(self, state: _State) -> None:
        if state.watch is not None:
            state.watch.cancel()
        state.guard = state.watch = None
        state.backend.guard = None
        state.gated.clear()

    # -- closing -----------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Stop probing and watching."""
        tasks = [t for s in self._state.values() for t in (s.probe, s.watch) if t is not None]
        for task in tasks:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*tasks, return_exceptions=True)
