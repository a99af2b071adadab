"""The order's log for people: the ledger's events worth reading (holds, out-of-memory steps,
restarts, failures, the runs and the order's states), each as one line. Each image's
``submitted`` and ``done`` are left out: the progress bar and the thumbnails show those."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from comfyline.ledger import LedgerEvent

QUIET_KINDS = frozenset({"submitted", "done", "prompt_id"})


@dataclass(frozen=True)
class LogLine:
    """One line of the page's log; ``level`` is info, warn or error (its colour)."""

    id: int
    at: float
    kind: str
    level: str
    text: str

    def to_json(self) -> dict[str, Any]:
        clock = time.strftime("%H:%M:%S", time.localtime(self.at))
        return {
            "id": self.id,
            "at": clock,
            "kind": self.kind,
            "level": self.level,
            "text": self.text,
        }


def log_line(event_id: int, event: LedgerEvent) -> LogLine | None:
    """The line for a ledger event, or None for an event the log leaves out."""
    if event.kind in QUIET_KINDS:
        return None
    text, level = _describe(event)
    return LogLine(event_id, event.at, event.kind, level, text)


def _describe(event: LedgerEvent) -> tuple[str, str]:
    d, kind = event.detail, event.kind
    slot = f"image {event.index}" if event.index is not None else ""
    if kind == "run.start":
        where = "the built-in simulator" if d.get("simulated") else d.get("url", "?")
        return f"run started on {where}", "info"
    if kind == "run.end":
        return f"run ended after {float(d.get('seconds', 0)):.0f} s", "info"
    if kind.startswith("order."):
        return f"order {kind.removeprefix('order.')}", _order_level(kind)
    if kind == "failed":
        return f"{slot} failed: {d.get('type', '')}: {d.get('message', '')}", "error"
    if kind in ("requeued", "resent"):
        return f"{slot} {kind}: {d.get('reason', '')}", "warn"
    if kind.startswith("guard."):
        message = d.get("message") or kind
        temp = d.get("temperature_c")
        suffix = f" ({temp:.0f} °C)" if isinstance(temp, int | float) else ""
        level = "error" if kind in ("guard.tripped", "guard.stop", "guard.critical") else "warn"
        return f"guard: {message}{suffix}", level
    return f"{kind} {slot} {d or ''}".strip(), "info"


def _order_level(kind: str) -> str:
    if kind in ("order.failed", "order.cancelled"):
        return "error" if kind == "order.failed" else "warn"
    return "info"
