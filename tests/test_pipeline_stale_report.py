"""A run killed while it wrote the final report leaves the previous run's report (a write is
atomic: old or new, never torn). Running the finished order again rebuilds a report that is not
the final one instead of saying "nothing to do" over a report that lies."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from comfyline.reports.report import REPORT_FILE, read_report
from comfyline.sim import running_simulator
from test_pipeline_support import (
    check_finished,
    output_folder,
    run_in_process,
    settings_for,
    sim_config,
    single_order,
)


def _cancelled(text: str) -> str:
    """The report as a cancelled earlier run of the same order left it."""
    data = json.loads(text)
    data["order"]["state"] = "cancelled"
    return json.dumps(data)


@pytest.mark.parametrize("left", ["cancelled", "unreadable"])
def test_a_report_that_is_not_final_is_rebuilt_when_the_order_is_complete(
    tmp_path: Path, left: str
) -> None:
    order_file = single_order(tmp_path / "orders", "stale", 3)
    out_root = tmp_path / "out"
    with running_simulator(sim_config(tmp_path)) as sim:
        settings = settings_for(sim.url, out_root)
        run_in_process(order_file, settings)
        report_file = output_folder(order_file, out_root) / REPORT_FILE
        text = report_file.read_text(encoding="utf-8")
        report_file.write_text(_cancelled(text) if left == "cancelled" else "{", encoding="utf-8")
        started = sim.stats()["started"]

        report, printed = run_in_process(order_file, settings)
        assert sim.stats()["started"] == started  # nothing made again

    assert "its report is brought up to date" in printed
    assert report.order.state == "completed"
    assert read_report(report_file).order.state == "completed"
    check_finished(order_file, out_root)
