"""The report of an order finished after a ``kill -9``: the killed run's time counts in its
throughput, a slot the dead run marked sent but that never ran on the server is not counted as
sent twice, and every image has the server's seconds."""

from __future__ import annotations

from pathlib import Path

from comfyline.sim import Faults, running_simulator
from line_support import running_execution
from test_pipeline_support import (
    check_finished,
    done_count,
    finish,
    run_in_process,
    settings_for,
    sim_config,
    single_order,
    start_runner,
    wait_for,
)

COUNT = 7
HELD = 6
"""The prompt the simulator holds when the runner is killed: the five before it are made (most
of the order's work, in the killed run), and the held one never finishes there."""
PROMPT_S = 0.4


def test_after_kill_9_the_report_counts_the_killed_runs_time_and_no_second_attempt(
    tmp_path: Path,
) -> None:
    order_file = single_order(tmp_path / "orders", "killrep", COUNT)
    out_root = tmp_path / "out"
    config = sim_config(tmp_path, fixed_prompt_s=PROMPT_S, faults=Faults(stuck_on_prompts=(HELD,)))
    with running_simulator(config) as sim:
        runner = start_runner(order_file, sim.url, out_root)
        try:
            wait_for(lambda: sim.call(running_execution) == HELD, "the held prompt", timeout_s=60)
            wait_for(lambda: done_count(order_file, out_root) == HELD - 1, "the images before it")
        finally:
            runner.kill()
            finish(runner)
        # The server restarts and loses what it held: the slots the dead run marked sent are
        # unknown there now, exactly as if it had been killed before each POST.
        sim.set_faults(stuck_on_prompts=())
        sim.restart(away_s=0.1)
        sim.wait_up()
        report, printed = run_in_process(order_file, settings_for(sim.url, out_root))
        stats = sim.stats()

    check_finished(order_file, out_root)
    assert stats["executed"] == COUNT  # the held prompt was lost, not made: each made once
    # Nothing ran for them, so they went again as the same attempt.
    assert [image.attempts for image in report.images] == [1] * COUNT, report.images
    # Every image has the server's own seconds, the ones the killed run collected included.
    for image in report.images:
        assert image.seconds is not None and image.seconds >= PROMPT_S * 0.9, image
    # One server made the prompts one after another, so the runner's time over its runs
    # (the killed one included) holds at least the server's time making them.
    totals = report.totals
    assert totals.generation_seconds >= COUNT * PROMPT_S * 0.9
    assert totals.wall_seconds >= totals.generation_seconds, totals
    assert totals.images_per_minute is not None
    assert totals.images_per_minute <= 60 / PROMPT_S, totals
