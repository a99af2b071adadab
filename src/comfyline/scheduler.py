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

**Failover** (:mod:`comfyline.failover`): a backend that is lost hands its slots back; they
stay SUBMITTED in the ledger, are asked about when it answers again, and are made elsewhere when
nothing else is left. The run goes on while one backend is left.

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
from comfyline.failover import Failover
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
        self._queue: deque[int] = deque()
        self._retry: deque[int] = deque()
        self._resend: dict[str, deque[int]] = {}
        self._in_flight: dict[str, _Flight] = {}
        self._attempts: dict[int, int] = {}
        self._deleted: dict[int, int] = {}
        self._changed = asyncio.Event()
        self.failover = Failover(
            ledger,
            pool,
            backends,
            request=lambda i, pid, attempt: make_request(i, pid, oom.params, attempt),
            finish=self._finish_slot,
            on_result=on_result,
            notify=notify,
            changed=self._changed,
            admit=admit,
            # Backends known to fit the order; the others are checked by ``admit`` at first.
            admitted=set(admitted if admitted is not None else (b.name for b in backends)),
        )

    # -- the queue ---------------------------------------------------------------------------

    def add(self, indexes: list[int]) -> None:
        """Queue slots (PLANNED in the ledger) to be made."""
        self._queue.extend(indexes)

    def resend(self, index: int, backend: Backend | None = None) -> None:
        """Queue a SUBMITTED slot the server never had, to be posted again to ``backend`` (default:
        the first) under the ledger's prompt id (no new attempt: nothing of it reached a GPU)."""
        name = (backend or self.backends[0]).name
        self._resend.setdefault(name, deque()).append(index)

    def hand_back(self, index: int) -> None:
        """Queue a SUBMITTED slot whose server cannot be asked now (lost, or no longer
        configured): its server is asked when it answers again; another backend makes it when
        nothing else is left."""
        self.failover.orphans.append(index)

    @property
    def waiting(self) -> int:
        """Slots not yet sent in this run."""
        resend = sum(len(q) for q in self._resend.values())
        return len(self._queue) + len(self._retry) + resend + len(self.failover.orphans)

    def _has_work(self, backend: Backend) -> bool:
        orphans = self.failover.orphans
        return bool(self._queue or self._retry or orphans or self._resend.get(backend.name))

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
            if backend.name in self.failover.out:
                return
            if not self.failover.usable(backend):
                await self.failover.rejoin(backend, self._finished)
                continue
            if not self._has_work(backend):
                self._changed.clear()
                await self._changed.wait()  # another backend's result may requeue a slot
                continue
            try:
                await self._run_batch(backend)
            except (ComfyUnavailable, GuardTripped) as exc:
                self._lose(backend, exc)

    async def _run_batch(self, backend: Backend) -> None:
        batch = backend.adapter.generate_batch(
            self._requests(backend),
            gate=lambda: self.pool.gate(backend, self.claim),
            on_posted=self._posted,
            on_settled=lambda: self.pool.settled(backend),
            keep_pictures=True,  # the quality checks look at the pixels the check decoded
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
        index = self.failover.take(backend)
        return self._submit(index, backend) if index is not None else None

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
            if await self._finish_slot(index, result, backend):
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
            if self._oom_target is not None:
                self._oom_target.backend = backend
            if await out_of_memory(self.ledger, self.oom, index, result, error, self._notify):
                self._retry.append(index)
            else:
                self._on_result(False)
        elif self._attempts[index] < MAX_ATTEMPTS_PER_RUN:
            self._again(index, f"{error}; sending it once more")
        else:
            self._on_result(False)
            self._notify(f"slot {index} failed: {error}")

    async def _finish_slot(self, index: int, result: GenerationResult, backend: Backend) -> bool:
        """``finish``; False: it set the slot to be made again (``qc.replace``): queued again."""
        await self._finish(index, result, backend)
        if again := self.ledger.slot(index).state is SlotState.PLANNED:
            self._queue.append(index)
        return not again

    def _again(self, index: int, why: str) -> None:
        self.ledger.requeue(index, why)
        self._retry.append(index)
        self._notify(f"slot {index}: {why}")

    async def _after(self, result: GenerationResult, backend: Backend) -> None:
        """Let the backend's guard learn from the finished prompt; keep its reading."""
        sample = await self.pool.after(backend, len(result.images), self.claim)
        if sample is not None:
            self.ledger.record_reading(
                temperature_c=sample.temperature_c,
                power_w=sample.power_w,
                vram_free_mb=_mb(sample.vram_total_bytes, sample.vram_used_bytes),
                vram_total_mb=_mb(sample.vram_total_bytes, 0),
                note=backend.name,
            )

    def _lose(self, backend: Backend, exc: ComfyUnavailable | GuardTripped) -> None:
        """``backend`` is lost or stopped on heat: the slots it held go back to the queue."""
        handed = [pid for pid, f in self._in_flight.items() if f.backend is backend]
        slots = [self._in_flight.pop(pid).index for pid in handed]
        for _ in handed:
            self.pool.release(backend)
        slots += self._resend.pop(backend.name, ())
        self.failover.lose(backend, exc, slots)

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
        await self.pool.abandon(self.claim)  # (guards shared with the line's other orders)


async def out_of_memory(
    ledger: Ledger,
    oom: OomRecovery,
    index: int,
    result: GenerationResult,
    error: OutOfMemory,
    notify: Notify,
) -> bool:
    """Free the server's memory and retry once; a second one steps down (batch, then level).
    True: the slot goes again (requeued in the ledger); False: it failed, nothing is left."""
    if result.request.params != oom.params:
        # Sent before a step down (it was queued behind the prompt that caused it): its OOM
        # says nothing about the smaller settings now in use. Make it again with those.
        ledger.requeue(index, "out of memory at settings already stepped down from")
        return True
    failed_at = describe(result.request.params, oom.level)
    decision = await oom.on_out_of_memory(error)
    if decision is None:
        notify(f"slot {index} failed: {error}")
        return False
    if decision.stepped_down:
        notify(f"guard: {decision.message}")
        ledger.record_event(
            "guard.step_down",
            index=index,
            detail={
                "from": failed_at,
                "to": describe(decision.params, decision.level),
                "message": decision.message,
                "backend": ledger.slot(index).backend,
            },
        )
    ledger.requeue(index, decision.message)
    return True


def _mb(total: int | None, used: int | None) -> float | None:
    if total is None or used is None:
        return None
    return (total - used) / 2**20
