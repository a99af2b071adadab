"""``RunLog``: what a run records in the ledger besides its slots.

The order's state as the run walks it, the guard's events (the long ones said on the console
too), and the server's memory once the series is done.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from comfyline.comfy import ComfyUIAdapter
from comfyline.errors import ComfyError
from comfyline.guard import GuardEvent
from comfyline.guard.sensors import parse_system_stats
from comfyline.ledger import Ledger, OrderState, SlotState
from comfyline.quality import QcSettings

__all__ = ["AFTER_FREE", "LONG_HOLD_S", "RunLog"]

AFTER_FREE = "after /free"
"""The note of the reading taken once the series' memory was freed on the server."""

LONG_HOLD_S = 10.0
"""A hold of the guard at least this long is said on the console (all are in the report)."""


class RunLog:
    """The run's bookkeeping in ``ledger``; ``notify`` prints a line on the console."""

    def __init__(self, ledger: Ledger, notify: Callable[[str], None]) -> None:
        self.ledger = ledger
        self.notify = notify

    def move_to(self, state: OrderState) -> None:
        """Record ``state``, passing through the states the order skipped to get there."""
        current = self.ledger.order().state
        if current is state:
            return  # a finished order whose report is rebuilt stays completed
        if current is OrderState.NEW:
            self.ledger.set_order_state(OrderState.VALIDATED)
            current = OrderState.VALIDATED
        if state is OrderState.COMPLETED and current is not OrderState.RUNNING:
            self.move_to(OrderState.RUNNING)  # a run killed while it finished: settle it now
            current = OrderState.RUNNING
        if state is OrderState.RUNNING and current is not OrderState.QUEUED:
            self.move_to(OrderState.QUEUED)
            current = OrderState.QUEUED
        # RUNNING -> QUEUED too: the last runner died mid-run and this one picks the order up.
        if current is not state:
            self.ledger.set_order_state(state)

    def end_state(self, qc: QcSettings | None = None) -> OrderState:
        """The state a run ends in: completed, partial, or failed when nothing is done. With
        ``qc.replace`` on, images that still fail the quality checks (not approved in review)
        once the replacements' limits are reached leave it partial, said with the reason."""
        counts = self.ledger.counts()
        if counts.done == counts.total:
            left = _still_flagged(self.ledger) if qc is not None and qc.replace else 0
            if left:
                self.notify(
                    f"{left} image(s) still fail the quality checks, the replacements' limits "
                    f"reached (qc.max_extra, qc.max_per_image): the order is partial; approve "
                    "them in review, or raise the limits and run it again"
                )
                return OrderState.PARTIAL
            return OrderState.COMPLETED
        if counts.done == 0:
            return OrderState.FAILED
        return OrderState.PARTIAL

    def guard_event(self, event: GuardEvent) -> None:
        """Record what the guard did (a step down is the scheduler's to record)."""
        if event.kind == "stepped_down":
            return  # recorded by the scheduler, with the slot and from/to for the report
        detail: dict[str, Any] = {"message": event.message}
        if event.temperature_c is not None:
            detail["temperature_c"] = event.temperature_c
        if event.seconds is not None:
            detail["seconds"] = event.seconds
        self.ledger.record_event(f"guard.{event.kind}", detail=detail)
        # Short holds come before nearly every image of a warm card: they are in the report
        # and the rate, and a line each would bury everything else.
        if event.kind != "held" or (event.seconds or 0.0) >= LONG_HOLD_S:
            self.notify(f"guard: {event.message}")

    async def release_memory(self, adapter: ComfyUIAdapter) -> None:
        """Free the series' cache on the server and record what it then uses (the smoke test
        shows it: memory is freed there, never by ``gc.collect()`` in our process)."""
        with contextlib.suppress(ComfyError, ValueError):
            stats = await adapter.free_memory(unload_models=False)
            after = parse_system_stats(stats)
            if after.vram_total_bytes is not None and after.vram_used_bytes is not None:
                self.ledger.record_reading(
                    vram_free_mb=(after.vram_total_bytes - after.vram_used_bytes) / 2**20,
                    vram_total_mb=after.vram_total_bytes / 2**20,
                    note=AFTER_FREE,
                )


def _still_flagged(ledger: Ledger) -> int:
    """Made images that failed a quality check and were not approved in review."""
    return sum(
        1
        for slot in ledger.iter_slots(SlotState.DONE)
        if slot.review != "approved" and slot.flagged
    )
