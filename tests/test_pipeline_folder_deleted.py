"""The order's output folder deleted while the run makes its images (``rm -rf OUT/<id>``): the
run notices its ledger is gone and stops with one clear line, instead of "completing" an order
whose files do not exist; a rerun makes the order again in full."""

from __future__ import annotations

import shutil
from pathlib import Path

from comfyline.reports.report import REPORT_FILE, read_report
from comfyline.sim import Faults, SimulatorHandle, running_simulator
from line_support import running_prompt
from test_pipeline_support import (
    check_finished,
    done_count,
    finish,
    output_folder,
    run_in_process,
    settings_for,
    sim_config,
    single_order,
    start_runner,
    wait_for,
)

COUNT = 12
HELD = 4
"""The prompt the simulator holds (stuck until interrupted): the folder is deleted while it
waits, so the moment is certain whatever the machine's speed."""


def _held(sim: SimulatorHandle) -> tuple[int, str] | None:
    running: tuple[int, str] | None = sim.call(running_prompt)
    return running if running is not None and running[0] == HELD else None


def test_the_output_folder_deleted_mid_run_stops_the_run_and_a_rerun_makes_it_all(
    tmp_path: Path,
) -> None:
    order_file = single_order(tmp_path / "orders", "deleted", COUNT)
    out_root = tmp_path / "out"
    folder = output_folder(order_file, out_root)
    config = sim_config(tmp_path, faults=Faults(stuck_on_prompts=(HELD,)))
    with running_simulator(config) as sim:
        runner = start_runner(order_file, sim.url, out_root)
        try:
            running = wait_for(lambda: _held(sim), f"prompt {HELD} to be held", timeout_s=60)
            # Those before it are written and in the ledger (the runner fetches them meanwhile).
            wait_for(lambda: done_count(order_file, out_root) == HELD - 1, "the images before it")
            shutil.rmtree(folder)
            # Let the held prompt go: the run goes on to its next image and finds no ledger.
            sim.call(lambda s: s.interrupt(running[1]))
            code, printed = finish(runner)
        finally:
            if runner.poll() is None:
                runner.kill()
                runner.communicate()
        assert code == 1, printed
        assert "Traceback" not in printed, printed
        assert "was deleted or moved while the run was writing" in printed, printed
        assert "completed" not in printed, printed
        assert "state saved" not in printed and "its folder is gone; start it again" in printed
        # Whatever the stopped run left behind lists no file that is not there.
        if (folder / REPORT_FILE).exists():
            stopped = read_report(folder / REPORT_FILE)
            assert stopped.order.state != "completed"
            missing = [i.file for i in stopped.images if not (folder / i.file).is_file()]
            assert missing == [], f"the report lists files that do not exist: {missing}"

        report, printed = run_in_process(order_file, settings_for(sim.url, out_root))
    check_finished(order_file, out_root)
    assert report.totals.succeeded == COUNT
