"""The end of a run: ``generation_report.json``, the contact sheets and the run chart, all from
the ledger, so that a run killed at any moment (even while writing them) is reported truly by
the next one."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from comfyline import __version__
from comfyline.ledger import Ledger, LedgerEvent
from comfyline.orders import LoadedOrder
from comfyline.reports.charts import CHART_FILE, write_chart
from comfyline.reports.contact_sheet import sheet_entries, write_contact_sheets
from comfyline.reports.report import (
    REPORT_FILE,
    GenerationReport,
    ReportBackend,
    ReportOrder,
    ReportRevision,
    build_report,
    write_report,
)

RUN_START = "run.start"
RUN_END = "run.end"


def write_outputs(
    ledger: Ledger,
    loaded: LoadedOrder,
    out: Path,
    *,
    level: str,
    parameters: dict[str, Any],
    requested: int,
    target_c: float,
) -> GenerationReport:
    """Write the report, the sheets and the chart of the order as the ledger holds it now."""
    order = loaded.order
    events = ledger.events()
    backend = _last_backend(events)
    report = build_report(
        order=ReportOrder(
            id=order.id,
            title=order.title,
            type=order.type,
            file=str(loaded.file),
            sha256=hashlib.sha256(loaded.raw).hexdigest(),
            content=loaded.raw.decode("utf-8", errors="replace"),
            state=ledger.order().state.value,
        ),
        backend=backend,
        comfyline_version=__version__,
        level=level,
        parameters={**parameters, **order.models_used},
        sale=order.sale.model_dump(mode="json") if order.sale else None,
        slots=ledger.slots(),
        events=[e for e in events if e.kind.startswith("guard.")],  # the report lists the guard's
        readings=ledger.readings(),
        qc=order.qc,
        requested=requested,
        wall_seconds=run_seconds(events),
        output_dir=out,
        report_dir=out,
        backend_events=[e for e in events if e.kind == RUN_START or e.kind.startswith("backend.")],
        revision=ledger.revision(),
        revisions=[
            ReportRevision(
                revision=r.number,
                reason=r.reason,
                folder=r.folder,
                images=r.images,
                archive=r.archive,
            )
            for r in ledger.revisions()
        ],
    )
    write_report(out / REPORT_FILE, report)
    title = f"{order.id}: {order.title}" if order.title else order.id
    if ledger.revision() > 1:
        title += f" (revision r{ledger.revision()})"
    simulated = sum(1 for image in report.images if image.simulated)
    if backend.simulated and simulated == len(report.images):
        title += " (simulator: synthetic images)"
    elif simulated:
        title += f" ({simulated} synthetic image(s) from the simulator)"
    write_contact_sheets(sheet_entries(ledger.iter_slots(), out), out, title=title)
    write_chart(report, out / CHART_FILE, target_c=target_c)
    return report


def run_seconds(events: Sequence[LedgerEvent]) -> float:
    """The runner's own time over all its runs of the order: from each ``run.start`` to that
    run's ``run.end``, or, for a run that was killed, to the last thing it recorded."""
    if not any(e.kind == RUN_START for e in events):  # a ledger from before run.start existed
        return sum(float(e.detail.get("seconds", 0.0)) for e in events if e.kind == RUN_END)
    total, start, last = 0.0, None, 0.0
    for event in events:
        if event.kind == RUN_START:
            if start is not None:
                total += last - start
            start = last = event.at
        elif start is not None:
            last = event.at
            if event.kind == RUN_END:
                total += last - start
                start = None
    if start is not None:
        total += last - start
    return total


def _last_backend(events: Sequence[LedgerEvent]) -> ReportBackend:
    for event in reversed(events):
        if event.kind == RUN_START:
            d = event.detail
            return ReportBackend(
                url=str(d.get("url", "")),
                simulated=bool(d.get("simulated", False)),
                comfyui_version=d.get("comfyui_version"),
                device=d.get("device"),
            )
    return ReportBackend(url="", simulated=False, comfyui_version=None)
