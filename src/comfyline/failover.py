"""Failover: what an order's scheduler does when one of its servers is lost, and when it is back.

A backend is lost when its adapter gave up reconnecting (:class:`ComfyUnavailable` past
``reconnect_timeout_s``), or taken out of the order when its guard stopped on heat. The slots it
held are handed back: they stay SUBMITTED in the ledger with that backend recorded, and wait at
the back of the queue. Another backend takes them when nothing else is left (the ledger moves
each on as a new attempt there). When the lost one answers again it is asked first: what it
finished meanwhile is collected from *its* history, and what it still holds for our dead socket
is cancelled; an attempt that was made again elsewhere is cancelled there too if it still
waits, and never collected (the ledger keeps one image per slot). The order goes on while one
backend is left; when none is, it stops with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable

from comfyline.backends import Backend
from comfyline.errors import ComfyError, ComfyUnavailable, GuardTripped
from comfyline.generation import GenerationRequest, GenerationResult
from comfyline.ledger import Ledger, SlotState
from comfyline.pool import BackendPool

__all__ = ["Failover"]

Request = Callable[[int, str, int], GenerationRequest]
Finish = Callable[[int, GenerationResult, Backend], Awaitable[object]]
Admit = Callable[[Backend], Awaitable[bool]]


class Failover:
    """The slots handed back by lost backends of one order, and its backends' comings and
    goings. ``request(index, prompt_id, attempt)`` rebuilds a slot's request (to collect it);
    ``finish`` writes a collected slot; ``changed`` is set whenever the queue may have moved."""

    def __init__(
        self,
        ledger: Ledger,
        pool: BackendPool,
        backends: list[Backend],
        *,
        request: Request,
        finish: Finish,
        on_result: Callable[[bool], object],
        notify: Callable[[str], None],
        changed: asyncio.Event,
        admit: Admit | None,
        admitted: set[str],
    ) -> None:
        self.ledger = ledger
        self.pool = pool
        self.backends = backends
        self.orphans: deque[int] = deque()
        self.out: dict[str, BaseException] = {}
        self.admitted = admitted
        self._moved: dict[int, tuple[str, str]] = {}
        self._request = request
        self._finish = finish
        self._on_result = on_result
        self._notify = notify
        self._changed = changed
        self._admit = admit

    def usable(self, backend: Backend) -> bool:
        """Whether ``backend`` is up, fits the order, and was not taken out of it."""
        known = backend.name in self.admitted and backend.name not in self.out
        return known and self.pool.is_up(backend)

    def take(self, backend: Backend) -> int | None:
        """A handed-back slot for ``backend`` to make, moved on in the ledger (its next
        attempt is for the caller to submit); None when none is left."""
        while self.orphans:
            index = self.orphans.popleft()
            record = self.ledger.slot(index)
            if record.state is not SlotState.SUBMITTED:
                continue  # collected from its server meanwhile
            if record.backend and record.prompt_id:
                self._moved[index] = (record.backend, record.prompt_id)
            why = f"its server {record.backend} was lost; made again on {backend.name}"
            self.ledger.requeue(index, why)
            return index
        return None

    def lose(
        self, backend: Backend, exc: ComfyUnavailable | GuardTripped, slots: list[int]
    ) -> None:
        """``backend`` is lost (or stopped on heat): hand back ``slots``, record and say it;
        raises when the order has no backend left."""
        kind = "stopped_on_heat" if isinstance(exc, GuardTripped) else "lost"
        if isinstance(exc, GuardTripped):
            self.out[backend.name] = exc
        else:
            self.pool.lost(backend, str(exc))
        self.orphans.extend(slots)
        detail = {"backend": backend.name, "reason": str(exc), "slots": sorted(slots)}
        self.ledger.record_event(f"backend.{kind}", detail=detail)
        self._changed.set()
        if any(b.name not in self.out and self.pool.is_up(b) for b in self.backends):
            what = "lost" if kind == "lost" else "stopped on heat"
            again = f"; it is asked again every {self.pool.settings.probe_interval_s:g} s"
            self._notify(
                f"server {backend.name} {what}: {exc}\n{len(slots)} slot(s) it held go back to "
                "the queue" + (again if kind == "lost" else "")
            )
            return
        if len(self.backends) == 1 or isinstance(exc, GuardTripped):
            raise exc  # the reason of the last one: the order stops as with one server
        raise ComfyUnavailable(
            f"every server of this order is lost or stopped (the last: {backend.name}: "
            f"{exc}); what was made is kept: run the order again when one answers"
        ) from exc

    async def rejoin(self, backend: Backend, finished: Callable[[], bool]) -> None:
        """Wait until ``backend`` answers (or the order has nothing left); check that it fits
        the order the first time; then settle what it held for us while it was away."""
        if not self.pool.is_up(backend):
            up = asyncio.ensure_future(self.pool.wait_up(backend))
            try:
                while not up.done() and not finished():
                    self._changed.clear()
                    changed = asyncio.ensure_future(self._changed.wait())
                    await asyncio.wait({up, changed}, return_when=asyncio.FIRST_COMPLETED)
                    changed.cancel()
            finally:
                up.cancel()
            if not self.pool.is_up(backend):
                return
            self.ledger.record_event("backend.back", detail={"backend": backend.name})
        if backend.name not in self.admitted:
            if self._admit is not None and not await self._admit(backend):
                self.out[backend.name] = ComfyError(f"{backend.name} does not fit the order")
                return
            self.admitted.add(backend.name)
        await self._recover(backend)

    async def _recover(self, backend: Backend) -> None:
        """Ask ``backend`` about the slots it held when it was lost: collect what it finished,
        cancel what it still holds (its messages went to a socket we no longer have)."""
        comfy = backend.adapter
        try:
            for index in list(self.orphans):
                record = self.ledger.slot(index)
                if record.state is not SlotState.SUBMITTED or record.backend != backend.name:
                    continue
                prompt_id = record.prompt_id or ""
                state = await comfy.prompt_state(prompt_id) if prompt_id else "unknown"
                if state == "done":
                    await self._collect(index, prompt_id, record.attempt, backend)
                elif state in ("pending", "running"):
                    await comfy.cancel(prompt_id)
            for index, (server, prompt_id) in list(self._moved.items()):
                if server == backend.name:
                    del self._moved[index]
                    if await comfy.prompt_state(prompt_id) in ("pending", "running"):
                        await comfy.cancel(prompt_id)  # made again elsewhere: not needed
        except ComfyError:
            return  # gone again: its driver finds out at its next prompt

    async def _collect(self, index: int, prompt_id: str, attempt: int, backend: Backend) -> None:
        result = await backend.adapter.collect(self._request(index, prompt_id, attempt), prompt_id)
        if not result.ok:
            return  # made again like any slot handed back
        with contextlib.suppress(ValueError):
            self.orphans.remove(index)
        await self._finish(index, result, backend)
        self._on_result(True)
        detail = {"backend": backend.name}
        self.ledger.record_event(
            "backend.collected", index=index, prompt_id=prompt_id, detail=detail
        )
        self._notify(f"slot {index}: collected from {backend.name}'s history after it came back")
