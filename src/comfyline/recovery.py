"""Recovery: what a run does with the slots a previous run left in flight.

A run that died (``kill -9``, a power cut) or lost its server leaves slots ``SUBMITTED`` in the
ledger. Their prompt ids are deterministic, so the server each was sent to (the ledger records
it per attempt) can be asked about it: finished -> collected from its history; still queued or
running for the dead client -> cancelled and made again; unknown (never posted, or lost by a
restart) -> posted again to it under the same id. A slot whose server is lost now, or no longer
configured, is handed to the scheduler: that server is asked when it answers again, and the
slot is made elsewhere when nothing else is left.
"""

from __future__ import annotations

from collections.abc import Callable

from comfyline.backends import Backend
from comfyline.errors import ComfyError
from comfyline.generation import GenerationRequest
from comfyline.ledger import Ledger
from comfyline.pool import BackendPool
from comfyline.scheduler import Finish, Notify, Scheduler

__all__ = ["reconcile"]


async def reconcile(
    ledger: Ledger,
    pool: BackendPool,
    scheduler: Scheduler,
    *,
    request: Callable[[int, str, int], GenerationRequest],
    finish: Finish,
    notify: Notify,
) -> None:
    """Settle the slots a previous run left SUBMITTED (it died, or the server restarted),
    each on the server it was sent to."""
    for record in ledger.submitted():
        backend = _server_of(pool, record.backend)
        if backend is None or not pool.is_up(backend):
            scheduler.hand_back(record.index)
            continue
        comfy = backend.adapter
        prompt_id = record.prompt_id or ""
        state = await comfy.prompt_state(prompt_id) if prompt_id else "unknown"
        if state == "done":
            made = request(record.index, prompt_id, record.attempt)
            result = await comfy.collect(made, prompt_id)
            if result.ok:
                await finish(record.index, result, backend)
                notify(f"slot {record.index}: collected from the server's history")
                continue
            ledger.mark_failed(record.index, result.error or ComfyError("?"))
        elif state in ("pending", "running"):
            # Its messages go to the dead runner's socket, so we cannot watch it: cancel it
            # and make it again (at most the two prompts that were in flight).
            await comfy.cancel(prompt_id)
        elif state == "unknown" and prompt_id:
            # Never reached the server (killed before the POST), or lost by a restart:
            # nothing ran, so it goes again under the same id, as the same attempt.
            ledger.record_event(
                "resent",
                index=record.index,
                attempt=record.attempt,
                prompt_id=prompt_id,
                detail={"reason": "previous run left it unknown on the server"},
            )
            scheduler.resend(record.index, backend)
            continue
        ledger.requeue(record.index, f"previous run left it {state} on the server")


def _server_of(pool: BackendPool, name: str | None) -> Backend | None:
    """The server a slot was sent to; with one server, that one (a ledger from before servers
    were named, or a server that moved to another port)."""
    if len(pool.backends) == 1:
        return pool.backends[0]
    return pool.by_name(name)
