"""The scheduler: slots from one queue into each backend's ``generate_batch``, and back.

It is the one place that decides what happens to a slot between "planned" and "done":

- every slot is recorded in the ledger as SUBMITTED, with its prompt id and backend, *before*
  its prompt is posted; a server that assigns its own id is followed, and the ledger told;
- a finished prompt goes to ``finish`` (the pipeline writes its files and marks it done);
- a failed one is sent once more in the same run (a timeout or a bad image can be transient),
  then stays failed until the order is run again; a prompt someone deleted from the server's
  queue is sent again without counting as a failure; a rejected graph stops the run (every slot
  would be refused the same way);
- out of memory: :class:`~comfyline.guard.OomRecovery` frees the server's memory and retries,
  then steps down (smaller batch, then lower level); each image records what it was made with.

Each backend is driven by its own task, paced by its own guard, at most two prompts in flight.
:meth:`Scheduler.stop` takes our prompts off every server and puts their slots back.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from comfyline.backends import Backend
from comfyline.errors import ComfyError, OutOfMemory, PromptDeleted, PromptRejected
from comfyline.generation import GenerationRequest, GenerationResult
from comfyline.guard import OomRecovery, describe
from comfyline.ledger import Ledger, SlotState
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
Notify = Callable[[str], None]


@dataclass
class _Flight:
    index: int
    backend: Backend


class Scheduler:
    """Feeds the queued slots of one order to its backends until none is left."""

    def __init__(
        self,
        ledger: Ledger,
        backends: list[Backend],
        *,
        make_request: MakeRequest,
        finish: Finish,
        oom: OomRecovery,
        prompt_id: Callable[[int, int], str],
        notify: Notify,
        on_result: Callable[[bool], object] = lambda ok: None,
    ) -> None:
        self.ledger = ledger
        self.backends = backends
        self.oom = oom
        self._make_request = make_request
        self._finish = finish
        self._prompt_id = prompt_id
        self._notify = notify
        self._on_result = on_result
        self._queue: deque[int] = deque()
        self._retry: deque[int] = deque()
        self._resend: deque[int] = deque()
        self._in_flight: dict[str, _Flight] = {}
        self._attempts: dict[int, int] = {}
        self._deleted: dict[int, int] = {}
        self._changed = asyncio.Event()

    # -- the queue ---------------------------------------------------------------------------

    def add(self, indexes: list[int]) -> None:
        """Queue slots (PLANNED in the ledger) to be made."""
        self._queue.extend(indexes)

    def resend(self, index: int) -> None:
        """Queue a SUBMITTED slot the server never had, to be posted again under the prompt id
        the ledger holds (no new attempt: nothing of it reached a GPU)."""
        self._resend.append(index)

    @property
    def waiting(self) -> int:
        """Slots not yet sent in this run."""
        return len(self._queue) + len(self._retry) + len(self._resend)

    def _has_work(self) -> bool:
        return bool(self._queue or self._retry or self._resend)

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
        guard = backend.guard
        assert guard is not None, "start the backend's guard before scheduling"
        watcher = asyncio.create_task(guard.watch())
        try:
            while True:
                if not self._has_work():
                    if not self._in_flight:
                        return
                    self._changed.clear()
                    await self._changed.wait()  # another backend's result may requeue a slot
                    continue
                batch = backend.adapter.generate_batch(
                    self._requests(backend),
                    gate=guard.before_prompt,
                    on_posted=self._posted,
                )
                async with contextlib.aclosing(batch) as results:
                    async for result in results:
                        await self._handle(result, backend)
                        await self._after(result, backend)
                        self._changed.set()
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)

    async def _requests(self, backend: Backend) -> AsyncIterator[GenerationRequest]:
        """The next slots, each recorded as SUBMITTED (with its prompt id) before it is sent."""
        while self._has_work():
            if self._resend:
                index = self._resend.popleft()
                record = self.ledger.slot(index)
                prompt_id, attempt = record.prompt_id or "", record.attempt
            else:
                index = self._retry.popleft() if self._retry else self._queue.popleft()
                attempt = self.ledger.slot(index).attempt + 1
                prompt_id = self._prompt_id(index, attempt)
                self.ledger.mark_submitted(index, prompt_id, attempt, backend.name)
            self._in_flight[prompt_id] = _Flight(index, backend)
            yield self._make_request(index, prompt_id, self.oom.params, attempt)

    def _posted(self, request: GenerationRequest, prompt_id: str) -> None:
        ours = request.prompt_id or ""
        if prompt_id != ours and ours in self._in_flight:
            # The server chose its own id: record it before we wait, so a resume finds it.
            flight = self._in_flight.pop(ours)
            self._in_flight[prompt_id] = flight
            self.ledger.record_prompt_id(flight.index, prompt_id)

    async def _handle(self, result: GenerationResult, backend: Backend) -> None:
        flight = self._in_flight.pop(result.prompt_id)
        index = flight.index
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
            await self._out_of_memory(index, result, error)
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
                },
            )
        self.ledger.requeue(index, decision.message)
        self._retry.append(index)

    async def _after(self, result: GenerationResult, backend: Backend) -> None:
        """Let the backend's guard learn from the finished prompt; keep its reading."""
        assert backend.guard is not None
        sample = await backend.guard.after_prompt(len(result.images))
        if sample is not None:
            self.ledger.record_reading(
                temperature_c=sample.temperature_c,
                power_w=sample.power_w,
                vram_free_mb=_mb(sample.vram_total_bytes, sample.vram_used_bytes),
                vram_total_mb=_mb(sample.vram_total_bytes, 0),
                note=backend.name,
            )

    # -- stopping ----------------------------------------------------------------------------

    async def stop(self) -> None:
        """Take our prompts off every server (POSTs on the wire are waited for first) and put
        the slots they belonged to back in the queue of the next run."""
        for backend in self.backends:
            with contextlib.suppress(ComfyError, TimeoutError):
                await backend.adapter.cancel_all()
        for flight in self._in_flight.values():
            if self.ledger.slot(flight.index).state is SlotState.SUBMITTED:
                self.ledger.requeue(flight.index, "cancelled by the user")
        self._in_flight.clear()


def _mb(total: int | None, used: int | None) -> float | None:
    if total is None or used is None:
        return None
    return (total - used) / 2**20
