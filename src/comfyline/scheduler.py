"""The scheduler: slots from one queue into each backend's ``generate_batch``, and back.

It is the one place that decides what happens to a slot between "planned" and "done":

- every slot is recorded in the ledger as SUBMITTED, with its prompt id and backend, *before*
  its prompt is posted; a server that assigns its own id is followed, and the ledger told;
- a finished prompt goes to ``finish`` (the pipeline writes its files and marks it done); a
  result for a slot the ledger no longer holds under that prompt id is *surplus*: logged, never
  written (one image per slot, whatever the servers did);
- a failed one is sent once more in the same run (a timeout - the adapter's watchdog - or a bad
  image can be transient), then stays failed until the order is run again; a prompt someone
  deleted from the server's queue is sent again without counting as a failure; a rejected graph
  stops the run (every slot would be refused the same way);
- out of memory: :class:`~comfyline.guard.OomRecovery` frees that server's memory and retries,
  then steps down (smaller batch, then lower level); each image records what it was made with.

Each backend is driven by its own task, paced by its guard and limited to its
``max_in_flight`` through the :class:`~comfyline.pool.BackendPool` (shared with other orders).

**Failover.** A backend that is lost (the adapter gave up reconnecting) hands its slots in flight
back: they stay SUBMITTED in the ledger, with that backend recorded, and wait at the back of the
queue. Another backend takes them when nothing else is left (the ledger moves them on as a new
attempt); the lost one, when it answers again, is asked first: what it finished meanwhile is
collected from *its* history, what it still holds for our dead socket is cancelled. A backend
whose guard stopped on heat is taken out of the run the same way. The run goes on while one
backend is left; when none is, it stops with :class:`ComfyUnavailable` (or the guard's
:class:`GuardTripped`) and the ledger holds everything for the next run.

:meth:`Scheduler.stop` takes this order's prompts off every server and puts their slots back.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from comfyline.backends import Backend
from comfyline.errors import (
    ComfyError,
    ComfyUnavailable,
    GuardTripped,
    OutOfMemory,
    PromptDeleted,
    PromptRejected,
)
from comfyline.generation import GenerationRequest, GenerationResult
from comfyline.guard import OomRecovery, Reading, describe
from comfyline.ledger import Ledger, SlotState
from comfyline.pool import BackendPool, Claim
from comfyline.presets import GenerationParams

MAX_ATTEMPTS_PER_RUN = 2
"""A slot that fails is sent once more in the same run; after that it stays failed until the
order is run again."""
MAX_DELETED_PER_RUN = 3
"""A prompt deleted from the server's queue is sent again, this many times per run at most
(someone who keeps clearing the queue wants it empty)."""

MakeRequest = Callable[[int, str, GenerationParams | None, int], GenerationRequest]
"""(slot index, prompt id, parameters after a step down, attempt) -> the request."""
Finish = Callable[[int, GenerationResult, Backend], Awaitable[None]]
Admit = Callable[[Backend], Awaitable[bool]]
Notify = Callable[[str], None]


@dataclass
class _Flight:
    index: int
    backend: Backend


class OomTarget:
    """The backend of the latest out-of-memory error: what an order's
    :class:`~comfyline.guard.OomRecovery` frees and reads (the scheduler points it)."""

    name = "oom target"

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.last_error: str | None = None

    async def read(self) -> Reading | None:
        """A reading of that backend's sensor."""
        reading = await self.backend.sensor.read()
        self.last_error = self.backend.sensor.last_error
        return reading

    async def free_memory(self) -> None:
        """Free that backend's memory."""
        await self.backend.free_memory()


class Scheduler:
    """Feeds the queued slots of one order to its backends until none is left."""

    def __init__(
        self,
        ledger: Ledger,
        backends: list[Backend],
        *,
        pool: BackendPool,
        claim: Claim,
        make_request: MakeRequest,
        finish: Finish,
        oom: OomRecovery,
        prompt_id: Callable[[int, int], str],
        notify: Notify,
        on_result: Callable[[bool], object] = lambda ok: None,
        oom_target: OomTarget | None = None,
        admit: Admit | None = None,
        admitted: tuple[str, ...] | None = None,
    ) -> None:
        self.ledger = ledger
        self.backends = backends
        self.pool = pool
        self.claim = claim
        self.oom = oom
        self._make_request = make_request
        self._finish = finish
        self._prompt_id = prompt_id
        self._notify = notify
        self._on_result = on_result
        self._oom_target = oom_target
        self._admit = admit
        # Backends known to fit the order; the others are checked with ``admit`` when they
        # first answer.
        self._admitted = set(admitted if admitted is not None else (b.name for b in backends))
        self._queue: deque[int] = deque()
        self._retry: deque[int] = deque()
        self._resend: dict[str, deque[int]] = {}
        self._orphans: deque[int] = deque()
        self._moved: dict[int, tuple[str, str]] = {}
        self._in_flight: dict[str, _Flight] = {}
        self._attempts: dict[int, int] = {}
        self._deleted: dict[int, int] = {}
        self._out: dict[str, BaseException] = {}
        self._changed = asyncio.Event()

    # -- the queue ---------------------------------------------------------------------------

    def add(self, indexes: list[int]) -> None:
        """Queue slots (PLANNED in the ledger) to be made."""
        self._queue.extend(indexes)

    def resend(self, index: int, backend: Backend | None = None) -> None:
        """Queue a SUBMITTED slot the server never had, to be posted again to that server
        (default: the first) under the prompt id the ledger holds (no new attempt: nothing of
        it reached a GPU)."""
        name = (backend or self.backends[0]).name
        self._resend.setdefault(name, deque()).append(index)

    def hand_back(self, index: int) -> None:
        """Queue a SUBMITTED slot whose server cannot be asked now (lost, or no longer
        configured): its server is asked when it answers again; another backend makes it when
        nothing else is left."""
        self._orphans.append(index)

    @property
    def waiting(self) -> int:
        """Slots not yet sent in this run."""
        resend = sum(len(q) for q in self._resend.values())
        return len(self._queue) + len(self._retry) + resend + len(self._orphans)

    def _has_work(self, backend: Backend) -> bool:
        return bool(self._queue or self._retry or self._orphans or self._resend.get(backend.name))

    def _finished(self) -> bool:
        return self.waiting == 0 and not self._in_flight

    # -- running -----------------------------------------------------------------------------

    async def run(self) -> None:
        """Until every queued slot is done or failed for this run."""
        drivers = [asyncio.create_task(self._drive(b), name=b.name) for b in self.backends]
        try:
            await asyncio.gather(*drivers)
        finally:
            for task in drivers:
                task.cancel()
            await asyncio.gather(*drivers, return_exceptions=True)

    async def _drive(self, backend: Backend) -> None:
        while not self._finished():
            if backend.name in self._out:
                return
            if not self.pool.is_up(backend) or backend.name not in self._admitted:
                await self._rejoin(backend)
                continue
            if not self._has_work(backend):
                self._changed.clear()
                await self._changed.wait()  # another backend's result may requeue a slot
                continue
            try:
                await self._run_batch(backend)
            except ComfyUnavailable as exc:
                self._lose(backend, exc, "lost")
            except GuardTripped as exc:
                self._lose(backend, exc, "stopped_on_heat")

    async def _run_batch(self, backend: Backend) -> None:
        batch = backend.adapter.generate_batch(
            self._requests(backend),
            gate=lambda: self.pool.gate(backend, self.claim),
            on_posted=self._posted,
        )
        async with contextlib.aclosing(batch) as results:
            async for result in results:
                await self._handle(result, backend)
                await self._after(result, backend)
                self._changed.set()

    async def _requests(self, backend: Backend) -> AsyncIterator[GenerationRequest]:
        """The next slots, each recorded as SUBMITTED (with its prompt id) before it is sent;
        each waits for a place on the backend first."""
        while True:
            await self.pool.claim(backend, self.claim)
            # A place freed because the backend was lost (another order's prompts left it)
            # is no place: end the batch, the driver waits for the backend to come back.
            taken = self._take(backend) if self.pool.is_up(backend) else None
            if taken is None:
                self.pool.release(backend)
                return
            index, prompt_id, attempt = taken
            self._in_flight[prompt_id] = _Flight(index, backend)
            yield self._make_request(index, prompt_id, self.oom.params, attempt)

    def _take(self, backend: Backend) -> tuple[int, str, int] | None:
        """The next slot for ``backend``, its prompt id and attempt: its own resends, then
        retries, then new slots, then slots handed back by a lost backend."""
        resend = self._resend.get(backend.name)
        if resend:
            record = self.ledger.slot(resend.popleft())
            return record.index, record.prompt_id or "", record.attempt
        for source in (self._retry, self._queue):
            if source:
                return self._submit(source.popleft(), backend)
        while self._orphans:
            index = self._orphans.popleft()
            record = self.ledger.slot(index)
            if record.state is not SlotState.SUBMITTED:
                continue  # collected from its server meanwhile
            if record.backend and record.prompt_id:
                self._moved[index] = (record.backend, record.prompt_id)
            self.ledger.requeue(
                index, f"its server {record.backend} was lost; made again on {backend.name}"
            )
            return self._submit(index, backend)
        return None

    def _submit(self, index: int, backend: Backend) -> tuple[int, str, int]:
        attempt = self.ledger.slot(index).attempt + 1
        prompt_id = self._prompt_id(index, attempt)
        self.ledger.mark_submitted(index, prompt_id, attempt, backend.name)
        return index, prompt_id, attempt

    def _posted(self, request: GenerationRequest, prompt_id: str) -> None:
        ours = request.prompt_id or ""
        if prompt_id != ours and ours in self._in_flight:
            # The server chose its own id: record it before we wait, so a resume finds it.
            flight = self._in_flight.pop(ours)
            self._in_flight[prompt_id] = flight
            self.ledger.record_prompt_id(flight.index, prompt_id)

    async def _handle(self, result: GenerationResult, backend: Backend) -> None:
        flight = self._in_flight.pop(result.prompt_id)
        self.pool.release(backend)
        index = flight.index
        record = self.ledger.slot(index)
        if record.state is not SlotState.SUBMITTED or record.prompt_id != result.prompt_id:
            # The slot was settled another way meanwhile (collected from a server that came
            # back): this result is surplus, and the ledger keeps one image per slot.
            self.ledger.record_event(
                "surplus",
                index=index,
                prompt_id=result.prompt_id,
                detail={"backend": backend.name, "ok": result.ok},
            )
            return
        self._attempts[index] = self._attempts.get(index, 0) + 1
        if result.ok:
            self.oom.on_success()
            await self._finish(index, result, backend)
            self._on_result(True)
            return
        error = result.error
        assert error is not None
        self.ledger.mark_failed(index, error)
        if isinstance(error, PromptRejected):
            raise error  # the same graph is refused for every slot: stop here, say why
        if isinstance(error, PromptDeleted) and self._deleted.get(index, 0) < MAX_DELETED_PER_RUN:
            self._deleted[index] = self._deleted.get(index, 0) + 1
            self._attempts[index] -= 1  # nothing ran: not a failure of the slot
            self._again(index, f"{error}; sending it again")
        elif isinstance(error, OutOfMemory):
            await self._out_of_memory(index, result, error, backend)
        elif self._attempts[index] < MAX_ATTEMPTS_PER_RUN:
            self._again(index, f"{error}; sending it once more")
        else:
            self._on_result(False)
            self._notify(f"slot {index} failed: {error}")

    def _again(self, index: int, why: str) -> None:
        self.ledger.requeue(index, why)
        self._retry.append(index)
        self._notify(f"slot {index}: {why}")

    async def _out_of_memory(
        self, index: int, result: GenerationResult, error: OutOfMemory, backend: Backend
    ) -> None:
        """Free the server's memory and retry once; a second one steps down (batch, then level)."""
        if result.request.params != self.oom.params:
            # Sent before a step down (it was queued behind the prompt that caused it): its
            # OOM says nothing about the smaller settings now in use. Make it again with those.
            self.ledger.requeue(index, "out of memory at settings already stepped down from")
            self._retry.append(index)
            return
        if self._oom_target is not None:
            self._oom_target.backend = backend
        failed_at = describe(result.request.params, self.oom.level)
        decision = await self.oom.on_out_of_memory(error)
        if decision is None:
            self._on_result(False)
            self._notify(f"slot {index} failed: {error}")
            return
        if decision.stepped_down:
            self._notify(f"guard: {decision.message}")
            self.ledger.record_event(
                "guard.step_down",
                index=index,
                detail={
                    "from": failed_at,
                    "to": describe(decision.params, decision.level),
                    "message": decision.message,
                    "backend": backend.name,
                },
            )
        self.ledger.requeue(index, decision.message)
        self._retry.append(index)

    async def _after(self, result: GenerationResult, backend: Backend) -> None:
        """Let the backend's guard learn from the finished prompt; keep its reading."""
        sample = await self.pool.after(backend, len(result.images))
        if sample is not None:
            self.ledger.record_reading(
                temperature_c=sample.temperature_c,
                power_w=sample.power_w,
                vram_free_mb=_mb(sample.vram_total_bytes, sample.vram_used_bytes),
                vram_total_mb=_mb(sample.vram_total_bytes, 0),
                note=backend.name,
            )

    # -- failover ----------------------------------------------------------------------------

    def _lose(self, backend: Backend, exc: ComfyUnavailable | GuardTripped, kind: str) -> None:
        """Take ``backend`` out (lost, or stopped on heat): its slots go back to the queue."""
        if isinstance(exc, GuardTripped):
            self._out[backend.name] = exc
        else:
            self.pool.lost(backend, str(exc))
        handed = [(pid, f) for pid, f in self._in_flight.items() if f.backend is backend]
        for prompt_id, flight in handed:
            del self._in_flight[prompt_id]
            self.pool.release(backend)
            self._orphans.append(flight.index)
        resends = self._resend.pop(backend.name, deque())
        self._orphans.extend(resends)
        slots = sorted([f.index for _, f in handed] + list(resends))
        self.ledger.record_event(
            f"backend.{kind}",
            detail={"backend": backend.name, "reason": str(exc), "slots": slots},
        )
        what = "lost" if kind == "lost" else "stopped on heat"
        self._notify(
            f"server {backend.name} {what} ({exc}); {len(slots)} slot(s) it held go back to "
            "the queue"
        )
        self._changed.set()
        alive = [b for b in self.backends if b.name not in self._out and self.pool.is_up(b)]
        if alive:
            return
        if len(self.backends) == 1 or isinstance(exc, GuardTripped):
            raise exc  # the reason of the last one: the run stops as with one server
        raise ComfyUnavailable(
            f"every server of this order is lost or stopped (the last: {backend.name}: "
            f"{exc}); what was made is kept: run the order again when one answers"
        ) from exc

    async def _rejoin(self, backend: Backend) -> None:
        """Wait until ``backend`` answers (or the run has nothing left); check that it fits
        the order the first time; then settle what it held for us while it was away."""
        if not self.pool.is_up(backend):
            up = asyncio.ensure_future(self.pool.wait_up(backend))
            try:
                while not up.done() and not self._finished():
                    self._changed.clear()
                    changed = asyncio.ensure_future(self._changed.wait())
                    await asyncio.wait({up, changed}, return_when=asyncio.FIRST_COMPLETED)
                    changed.cancel()
            finally:
                up.cancel()
            if not self.pool.is_up(backend):
                return
            self.ledger.record_event("backend.back", detail={"backend": backend.name})
        if backend.name not in self._admitted:
            if self._admit is not None and not await self._admit(backend):
                self._out[backend.name] = ComfyError(f"{backend.name} does not fit the order")
                return
            self._admitted.add(backend.name)
        await self._recover(backend)

    async def _recover(self, backend: Backend) -> None:
        """Ask ``backend`` about the slots it held when it was lost: collect what it finished,
        cancel what it still holds (its messages went to a socket we no longer have)."""
        comfy = backend.adapter
        try:
            for index in list(self._orphans):
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
        request = self._make_request(index, prompt_id, self.oom.params, attempt)
        result = await backend.adapter.collect(request, prompt_id)
        if not result.ok:
            return  # made again like any slot handed back
        with contextlib.suppress(ValueError):
            self._orphans.remove(index)
        await self._finish(index, result, backend)
        self._on_result(True)
        self.ledger.record_event(
            "backend.collected",
            index=index,
            prompt_id=prompt_id,
            detail={"backend": backend.name},
        )
        self._notify(f"slot {index}: collected from {backend.name}'s history after it came back")

    # -- stopping ----------------------------------------------------------------------------

    async def stop(self) -> None:
        """Take this order's prompts off every server (POSTs on the wire are waited for
        first) and put the slots they belonged to back in the queue of the next run."""
        flights = list(self._in_flight.values())
        for backend in self.backends:
            ids = [pid for pid, f in self._in_flight.items() if f.backend is backend]
            if ids:
                with contextlib.suppress(ComfyError, TimeoutError):
                    await backend.adapter.cancel_prompts(ids)
        for flight in flights:
            self.pool.release(flight.backend)
            if self.ledger.slot(flight.index).state is SlotState.SUBMITTED:
                self.ledger.requeue(flight.index, "cancelled by the user")
        self._in_flight.clear()


def _mb(total: int | None, used: int | None) -> float | None:
    if total is None or used is None:
        return None
    return (total - used) / 2**20
