"""Every field of generation_report.json is documented in docs/REPORT_SCHEMA.md."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel

from comfyline.reports.report import (
    GenerationReport,
    ReportBackend,
    ReportError,
    ReportGuardEvent,
    ReportImage,
    ReportOrder,
    ReportQc,
    ReportReading,
    ReportTotals,
)

DOC = Path(__file__).parents[1] / "docs" / "REPORT_SCHEMA.md"
SECTIONS = {
    "## Top level": GenerationReport,
    "## `order`": ReportOrder,
    "## `backend`": ReportBackend,
    "## `images[]`": ReportImage,
    "## `totals`": ReportTotals,
    "## `qc`": ReportQc,
    "## `errors[]`": ReportError,
    "## `guard_events[]`": ReportGuardEvent,
    "## `readings[]`": ReportReading,
}


def section(text: str, heading: str) -> str:
    body = text.split(heading + "\n", 1)[1]
    return body.split("\n## ", 1)[0]


@pytest.mark.parametrize("heading", SECTIONS)
def test_every_field_is_documented(heading: str) -> None:
    model: type[BaseModel] = SECTIONS[heading]
    documented = {
        line.split("|")[1].strip().strip("`")
        for line in section(DOC.read_text("utf-8"), heading).splitlines()
        if line.startswith("| `")
    }
    names = {f.serialization_alias or name for name, f in model.model_fields.items()}
    assert documented == names
