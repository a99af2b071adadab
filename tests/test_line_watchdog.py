"""The watchdog: a prompt of ours that shows no progress while it runs is interrupted and made
again once, then failed with the reason; time spent queued behind another client's long
prompt never counts."""

from __future__ import annotations

from pathlib import Path

from comfyline.ledger import Ledger, SlotState, ledger_path
from comfyline.orders import load, plan
from comfyline.pipeline import fingerprint
from comfyline.sim import Faults, running_simulator
from line_support import BackgroundRun, foreign_prompt, ledger_events
from test_pipeline_support import (
    check_finished,
    output_folder,
    run_in_process,
    settings_for,
    sim_config,
    single_order,
    wait_for,
)

QUICK_WATCHDOG = {"first_prompt_timeout_s": 2.0, "min_prompt_timeout_s": 2.0}
"""No progress for 2 s is stuck (our prompts take a few ms each here, with a message at each
step: far from 2 s of silence even on a busy machine)."""


def test_a_prompt_that_hangs_once_is_interrupted_and_made_again(tmp_path: Path) -> None:
    order_file = single_order(tmp_path / "orders", "hang", 4)
    out = tmp_path / "out"
    config = sim_config(tmp_path, fixed_prompt_s=0.005, faults=Faults(stuck_on_prompts=(2,)))
    with running_simulator(config) as sim:
        report, printed = run_in_process(order_file, settings_for(sim.url, out, **QUICK_WATCHDOG))
        stats = sim.stats()

    check_finished(order_file, out)
    assert stats["interrupted"] == 1  # the hung prompt was interrupted on the server
    hung = stats["prompts"][1]["prompt_id"]
    failed = ledger_events(order_file, out, "failed")
    assert [(e["prompt_id"], e["detail"]["type"]) for e in failed] == [(hung, "ComfyTimeout")]
    assert "showed no progress" in failed[0]["detail"]["message"]
    assert "sending it once more" in printed
    remade = next(i for i in report.images if i.index == failed[0]["index"])
    assert remade.attempts == 2


def test_a_prompt_that_always_hangs_fails_with_the_reason_after_one_retry(tmp_path: Path) -> None:
    order_file = single_order(tmp_path / "orders", "always", 3)
    stuck_seed = plan(load(order_file)).slots[1].seed
    out = tmp_path / "out"
    faults = Faults(stuck_on_seeds=(stuck_seed,))
    with running_simulator(sim_config(tmp_path, fixed_prompt_s=0.005, faults=faults)) as sim:
        report, _ = run_in_process(order_file, settings_for(sim.url, out, **QUICK_WATCHDOG))
        assert sim.stats()["interrupted"] == 2  # sent twice, interrupted twice

    assert report.order.state == "partial"
    assert [image.index for image in report.images] == [0, 2]
    (error,) = report.errors
    assert (error.index, error.type, error.attempts) == (1, "ComfyTimeout", 2)
    assert "showed no progress for more than" in error.message and "stuck" in error.message
    loaded = load(order_file)
    db = ledger_path(output_folder(order_file, out))
    with Ledger.open(db, loaded.order.id, fingerprint(loaded)) as ledger:
        assert ledger.slot(1).state is SlotState.FAILED


def test_another_clients_long_prompt_ahead_of_ours_is_not_stuck(tmp_path: Path) -> None:
    """The other client's prompt runs four times our watchdog's budget while ours wait behind
    it: ours are never interrupted, each is sent once."""
    order_file = single_order(tmp_path / "orders", "behind", 3)
    out = tmp_path / "out"
    # 0.05 s per step at 512x512: ours (256x256, 6 steps) take 0.075 s; the other client's
    # (1024x1024, 20 steps) 4 s, its progress sent to its own socket only.
    budget = {"first_prompt_timeout_s": 1.0, "min_prompt_timeout_s": 1.0}
    with running_simulator(sim_config(tmp_path, step_s=0.05)) as sim:
        other = foreign_prompt(sim.url, size=1024, steps=20)
        wait_for(lambda: sim.call(lambda s: s.running is not None), "the other prompt to run")
        run = BackgroundRun(order_file, settings_for(sim.url, out, **budget))
        report = run.result()
        stats = sim.stats()

    check_finished(order_file, out)
    first = stats["prompts"][0]
    assert first["prompt_id"] == other and first["end_s"] - first["start_s"] > 4 * 1.0
    assert stats["interrupted"] == 0
    assert all(image.attempts == 1 for image in report.images)
    assert ledger_events(order_file, out, "failed") == []
