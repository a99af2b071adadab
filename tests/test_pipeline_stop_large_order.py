"""Ctrl-C on a large order with a few images made stops quickly: the report and contact sheets
it writes on the way out cost what was made, not what was planned (one sheet of three cells,
not 50 sheets of "missing" cells at 10,000 slots, 500 at the issue's 100,000: the same path,
a tenth of the start-up time for the suite)."""

from __future__ import annotations

import signal
from pathlib import Path

from PIL import Image

from comfyline.reports.contact_sheet import PER_SHEET, SheetEntry, render_sheet
from comfyline.reports.report import REPORT_FILE, read_report
from comfyline.sim import Faults, running_simulator
from line_support import running_execution
from test_pipeline_support import (
    done_count,
    finish,
    output_folder,
    sim_config,
    single_order,
    start_runner,
    wait_for,
)

COUNT = 10_000
HELD = 4
"""The prompt the simulator holds when Ctrl-C comes: three images are made by then."""


def _one_row_sheet_size(cells: int) -> tuple[int, int]:
    """The pixel size of a sheet of ``cells`` thumbnails in one row: a sheet drawn for three
    cells, not for a page of PER_SHEET (its size grows with the cells drawn)."""
    return render_sheet([SheetEntry(i, i, None) for i in range(cells)]).size


def test_ctrl_c_on_a_large_order_draws_sheets_of_the_made_images_only(
    tmp_path: Path,
) -> None:
    order_file = single_order(tmp_path / "orders", "huge", COUNT)
    out_root = tmp_path / "out"
    folder = output_folder(order_file, out_root)
    config = sim_config(tmp_path, faults=Faults(stuck_on_prompts=(HELD,)))
    with running_simulator(config) as sim:
        runner = start_runner(order_file, sim.url, out_root)
        try:
            wait_for(lambda: sim.call(running_execution) == HELD, "the held prompt", timeout_s=120)
            wait_for(lambda: done_count(order_file, out_root) == HELD - 1, "the images before it")
            runner.send_signal(signal.SIGINT)
            # Generous: drawing 100,000 cells took minutes; three take well under a second.
            code, printed = finish(runner, timeout_s=120)
        finally:
            if runner.poll() is None:
                runner.kill()
                runner.communicate()
    assert code == 130, printed
    assert "Traceback" not in printed, printed
    sheets = sorted(p.name for p in folder.glob("contact_sheet*.png"))
    assert sheets == ["contact_sheet.png"], sheets[:5]
    with Image.open(folder / "contact_sheet.png") as sheet:
        assert sheet.size == _one_row_sheet_size(HELD - 1)
    report = read_report(folder / REPORT_FILE)
    assert report.order.state == "cancelled"
    assert len(report.images) == HELD - 1
    assert (report.totals.requested, report.totals.succeeded) == (COUNT, HELD - 1)
    assert COUNT >= 50 * PER_SHEET  # drawn whole, the plan would fill dozens of sheets
