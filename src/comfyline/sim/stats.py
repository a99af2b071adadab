"""Measurements the simulator keeps for benchmarks and tests (``GET /sim/stats``).

Times are ``time.monotonic()`` seconds of the simulator's process: real time, not model time.
On Linux that clock is shared by every process, so a benchmark may compare them with its own.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class PromptRecord:
    """One prompt the worker took from the queue."""

    prompt_id: str
    number: float
    execution: int
    start_s: float
    end_s: float | None = None
    #: success | error | interrupted | lost (a restart or blackout cut it off)
    status: str = "running"
    #: Every node came from the cache (nothing ran, no file written).
    cached: bool = False
    #: The card's temperature (thermal model) when the prompt's work started and ended; the end
    #: is the prompt's peak (a die heats while it works). None: no thermal model, or no work.
    start_temperature_c: float | None = None
    end_temperature_c: float | None = None
    #: ``start_s`` and ``end_s`` on the model clock (the thermal model's time: a prompt's work
    #: lasts exactly its simulated seconds there, the simulator's own rendering not counted).
    start_model_s: float | None = None
    end_model_s: float | None = None


@dataclass
class SimStats:
    """Counters and per-prompt times since the simulator started (restarts do not reset them)."""

    prompts: list[PromptRecord] = field(default_factory=list)
    #: Prompts accepted by POST /prompt (queued), whether or not they ever started.
    posted: int = 0
    files_written: int = 0
    restarts: int = 0
    blackouts: int = 0
    ws_drops: int = 0
    #: /view answers cut off by the short_view fault.
    short_views: int = 0
    #: WebSocket connections refused by the ws_down_until_idle fault.
    ws_refused: int = 0

    def start(self, prompt_id: str, number: float, now: float) -> PromptRecord:
        """Record that a prompt started; returns its record."""
        record = PromptRecord(prompt_id, number, len(self.prompts) + 1, now)
        self.prompts.append(record)
        return record

    def to_json(self) -> dict[str, Any]:
        """The body of ``GET /sim/stats``."""
        done = [p for p in self.prompts if p.end_s is not None]
        gaps = [
            round(b.start_s - a.end_s, 6)
            for a, b in zip(self.prompts, self.prompts[1:], strict=False)
            if a.end_s is not None
        ]
        return {
            "prompts": [asdict(p) for p in self.prompts],
            "gaps_s": gaps,
            "posted": self.posted,
            "started": len(self.prompts),
            "executed": sum(1 for p in done if p.status == "success" and not p.cached),
            "cached": sum(1 for p in done if p.status == "success" and p.cached),
            "failed": sum(1 for p in done if p.status == "error"),
            "interrupted": sum(1 for p in done if p.status == "interrupted"),
            "lost": sum(1 for p in done if p.status == "lost"),
            "files_written": self.files_written,
            "restarts": self.restarts,
            "blackouts": self.blackouts,
            "ws_drops": self.ws_drops,
            "short_views": self.short_views,
            "ws_refused": self.ws_refused,
        }
