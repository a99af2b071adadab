"""A server that keeps going away (an overheating card blacking out, a crash loop): the prompts
it lost are sent again on each reconnect, and at the ``flap_reconnects``-th drop within
``flap_window_s`` with no prompt finished the run stops with the reason and its resume command.
A drop followed by a finished prompt starts the count again. The simulator blacks out on chosen
prompts (by execution count), so each drop is certain, not a matter of timing."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from comfyline.sim import Faults, running_simulator
from test_pipeline_support import (
    check_finished,
    finish,
    run_in_process,
    settings_for,
    sim_config,
    single_order,
    start_runner,
    status_of,
)


def test_a_server_that_keeps_blacking_out_stops_the_run_with_the_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COMFYLINE_FLAP_RECONNECTS", "3")
    order_file = single_order(tmp_path / "orders", "flap", 3)
    out_root = tmp_path / "out"
    faults = Faults(blackout_on_prompts=tuple(range(1, 50)), blackout_away_s=0.3)
    with running_simulator(sim_config(tmp_path, faults=faults)) as sim:
        code, printed = finish(start_runner(order_file, sim.url, out_root))
        stats = sim.stats()

    assert code == 1, printed
    assert "Traceback" not in printed
    assert "went away 3 times within 600 s without finishing a prompt" in printed
    assert f"Resume with: comfyline run-order {order_file} --comfyui {sim.url}" in printed
    # Each blackout took a prompt with it, and each lost prompt was sent again on the reconnect
    # (under its own id) until the run gave up: no prompt ran that did not black out.
    # (A POST under way when the run gave up may still land, so at least 3 blackouts.)
    assert stats["executed"] == 0 and stats["started"] == stats["blackouts"] >= 3
    starts = Counter(p["prompt_id"] for p in stats["prompts"])
    assert max(starts.values()) >= 2, starts
    status = status_of(order_file, out_root)
    assert status is not None and status.counts.done == 0


def test_drops_between_finished_prompts_never_add_up(tmp_path: Path) -> None:
    order_file = single_order(tmp_path / "orders", "flapok", 4)
    out_root = tmp_path / "out"
    # Every other prompt blacks out: 4 drops in all, never 2 without a finished prompt between.
    faults = Faults(blackout_on_prompts=(1, 3, 5, 7), blackout_away_s=0.3)
    with running_simulator(sim_config(tmp_path, faults=faults)) as sim:
        run_in_process(order_file, settings_for(sim.url, out_root, flap_reconnects=2))
        stats = sim.stats()

    check_finished(order_file, out_root)
    assert stats["blackouts"] == 4 and stats["executed"] == 4


def test_a_server_gone_past_the_reconnect_timeout_stops_with_one_clean_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COMFYLINE_RECONNECT_TIMEOUT_S", "0.5")
    order_file = single_order(tmp_path / "orders", "gone", 3)
    faults = Faults(blackout_on_prompts=(2,), blackout_away_s=3.0)
    with running_simulator(sim_config(tmp_path, faults=faults)) as sim:
        code, printed = finish(start_runner(order_file, sim.url, tmp_path / "out"))

    assert code == 1, printed
    assert "did not come back within 0.5 s" in printed
    assert "Resume with: comfyline run-order" in printed
    # Nothing after the clean stop: no task left failing on its own.
    assert "Traceback" not in printed and "never retrieved" not in printed, printed
