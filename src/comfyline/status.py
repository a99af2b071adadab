"""Where each order stands, as data: the rows ``comfyline status`` prints (and ``--json``
writes), for any front end. Read from the order files and their ledgers, without the runner's
lock, so it works while a runner is busy.

States (documented in docs/ORDER_CONTRACT.md): ``new`` (never run), ``validated``, ``queued``,
``running`` (a runner holds the order now), ``interrupted`` (its runner died: run it again to
resume), ``completed``, ``partial``, ``failed``, ``cancelled``, and ``invalid`` (the order file
has problems; nothing can run until they are fixed).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from comfyline.errors import ComfylineError, OrderError, Problem
from comfyline.ledger import (
    Activity,
    BackendActivity,
    OrderState,
    ledger_path,
    read_activity,
    read_backends,
    read_revisions,
    read_slots,
    read_status,
)
from comfyline.orders import find_orders, load, plan
from comfyline.reroll import QcReplacements, qc_replacements
from comfyline.settings import Settings

STATES = (
    "new",
    "validated",
    "queued",
    "running",
    "interrupted",
    "completed",
    "partial",
    "failed",
    "cancelled",
    "invalid",
)
_UNFINISHED = {OrderState.QUEUED, OrderState.RUNNING}


@dataclass(frozen=True)
class OrderRow:
    """One order's status line."""

    order: str
    file: str
    state: str
    done: int = 0
    failed: int = 0
    total: int = 0
    per_minute: float | None = None
    eta_s: float | None = None
    temperature_c: float | None = None
    servers: tuple[str, ...] = ()
    elapsed_s: float | None = None
    runner_pid: int | None = None
    resume: str | None = None
    """The command that resumes an unfinished order that no runner holds."""
    problem: str | None = None
    """Why an invalid order is invalid (its first problem)."""
    backends: tuple[BackendActivity, ...] = ()
    """Each server of its latest run: health, images made, s/image, temperature."""
    revision: int = 1
    """The order's current revision (a new one starts when an edit changes its images)."""
    revisions: tuple[str, ...] = ()
    """The earlier revisions, kept: ``r1: 6 images in ., prompt changed``."""
    qc: str | None = None
    """The quality checks' replacements (``qc.replace``) and images still flagged:
    ``2 replaced (of 3 allowed), 1 image(s) flagged``; None when
    nothing was replaced or flagged."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def order_rows(
    paths: Iterable[Path], settings: Settings, *, now: float | None = None
) -> tuple[list[OrderRow], list[Problem]]:
    """A row for every order found under ``paths``, and the problems of finding them."""
    files, problems = find_orders(paths)
    return [order_row(file, settings, now=now) for file in files], problems


def order_row(file: Path, settings: Settings, *, now: float | None = None) -> OrderRow:
    """The status of the order whose ``project.yaml`` is ``file``."""
    from comfyline.pipeline import output_dir

    try:
        loaded = load(file)
        out = output_dir(loaded.order, settings)
    except OrderError as exc:
        first = exc.problems[0] if exc.problems else None
        return OrderRow(file.parent.name, str(file), "invalid", problem=str(first or exc))
    except ComfylineError as exc:
        return OrderRow(file.parent.name, str(file), "invalid", problem=str(exc))
    db = ledger_path(out)
    if not db.exists():
        return OrderRow(loaded.order.id, str(file), "new", total=len(plan(loaded)))
    status = read_status(db)
    activity = read_activity(db)
    counts = status.counts
    state = status.order.state.value
    resume = None
    if not status.running and status.order.state in _UNFINISHED:
        state = "interrupted"
    if not status.running and status.order.state is not OrderState.COMPLETED:
        resume = f"comfyline run-order {file}" + _server_option(activity)
    per_minute, eta = _rate(activity, counts.total - counts.done - counts.failed)
    revision, earlier = read_revisions(db)
    return OrderRow(
        order=loaded.order.id,
        file=str(file),
        state=state,
        done=counts.done,
        failed=counts.failed,
        total=counts.total,
        per_minute=per_minute if status.running else None,
        eta_s=eta if status.running else None,
        temperature_c=activity.last_temperature_c,
        servers=activity.servers,
        elapsed_s=_elapsed(activity, status.running, time.time() if now is None else now),
        runner_pid=status.runner_pid,
        resume=resume,
        backends=read_backends(db),
        revision=revision,
        revisions=tuple(
            f"r{r.number}: {r.images} images in {r.folder}, {r.reason}" for r in earlier
        ),
        qc=_qc_line(qc_replacements(read_slots(db), loaded.order.qc)),
    )


def _qc_line(standing: QcReplacements) -> str | None:
    if not standing.replaced and not standing.flagged:
        return None
    parts = [f"{standing.flagged} image(s) flagged"]
    if standing.allowed or standing.replaced:
        parts.insert(0, f"{standing.replaced} replaced (of {standing.allowed} allowed)")
    if standing.exhausted:
        parts.append("the replacement budget is spent (qc.max_extra)")
    return ", ".join(parts)


def _server_option(activity: Activity) -> str:
    servers = [s for s in activity.servers if s != "simulator"]
    if "simulator" in activity.servers and not servers:
        return " --sim"
    return f" --comfyui {servers[-1]}" if servers else ""


def _rate(activity: Activity, left: int) -> tuple[float | None, float | None]:
    times = activity.recent_done_at
    if len(times) < 2 or times[-1] <= times[0]:
        return None, None
    rate = (len(times) - 1) / (times[-1] - times[0])
    return rate * 60, left / rate


def _elapsed(activity: Activity, running: bool, now: float) -> float | None:
    if not activity.runs:
        return None
    total = 0.0
    for i, (start, end) in enumerate(activity.runs):
        if end is None:
            last_run = i == len(activity.runs) - 1
            end = now if (running and last_run) else (activity.last_event_at or start)
            if not last_run:
                end = min(end, activity.runs[i + 1][0])
        total += max(0.0, end - start)
    return total
