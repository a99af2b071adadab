"""Recovery: what a run does with the slots a previous run left in flight.

A run that died (``kill -9``, a power cut) or lost its server leaves slots ``SUBMITTED`` in the
ledger. Their prompt ids are deterministic, so the server can be asked about each: finished
-> collected from its history; still queued or running for the dead client -> cancelled and
made again; unknown (never posted, or lost by a restart) -> posted again under the same id.
"""

from __future__ import annotations

from collections.abc import Callable

from comfyline.backends import Backend
from comfyline.errors import ComfyError
from comfyline.generation import GenerationRequest
from comfyline.ledger import Ledger
from comfyline.scheduler import Finish, Notify, Scheduler

__all__ = ["reconcile"]


async def reconcile(
    ledger: Ledger,
    backend: Backend,
    scheduler: Scheduler,
    *,
    request: Callable[[int, str, int], GenerationRequest],
    finish: Finish,
    notify: Notify,
) -> None:
    """Settle the slots a previous run left SUBMITTED (it died, or the server restarted)."""
    comfy = backend.adapter
    for record in ledger.submitted():
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
            scheduler.resend(record.index)
            continue
        ledger.requeue(record.index, f"previous run left it {state} on the server")
