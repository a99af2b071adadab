"""No duplicate server work: orders run through ``pipeline.generate`` and the CLI, with every
prompt the simulator started counted (``/sim/stats``).

* a socket that drops while prompts run unheard: they are settled from ``/history``, none is
  posted again;
* a resume that finds a dead runner's prompts still on the server (one running, one waiting):
  it takes them off the server and makes those slots again, so nothing is made twice.
"""

from __future__ import annotations

import signal
from pathlib import Path

from comfyline.sim import Faults, running_simulator
from test_pipeline_support import (
    check_finished,
    finish,
    kill_runner_leaving,
    run_in_process,
    server_queue,
    settings_for,
    sim_config,
    single_order,
    start_runner,
    wait_for,
)


def test_prompts_finished_while_the_socket_was_down_are_settled_from_history(
    tmp_path: Path,
) -> None:
    order_file = single_order(tmp_path / "orders", "unheard", 6)
    out_root = tmp_path / "out"
    # The sockets close as the 3rd prompt starts, and no new one is accepted until the queue
    # is empty: the 3rd prompt (and any posted behind it) finish while nobody hears them.
    faults = Faults(drop_ws_on_prompts=(3,), ws_down_until_idle=True)
    with running_simulator(sim_config(tmp_path, faults=faults, fixed_prompt_s=0.05)) as sim:
        report, printed = run_in_process(order_file, settings_for(sim.url, out_root))
        stats = sim.stats()

    check_finished(order_file, out_root)
    # The unheard ones too have the server's seconds, from their history's timestamps.
    assert all(image.seconds and image.seconds >= 0.04 for image in report.images), report
    assert stats["ws_drops"] == 1, printed
    # Every prompt was posted once and made once: no allowance (a re-post of a finished
    # prompt would show as a 7th start, executed or cached).
    assert (stats["started"], stats["executed"], stats["cached"]) == (6, 6, 0)
    assert (stats["interrupted"], stats["lost"]) == (0, 0)
    assert [image.attempts for image in report.images] == [1] * 6


def test_a_resume_cancels_what_a_dead_runner_left_on_the_server(tmp_path: Path) -> None:
    order_file = single_order(tmp_path / "orders", "leftover", 3)
    out_root = tmp_path / "out"
    # The first prompt hangs until interrupted, so the runner never gets past two in flight:
    # slot 0 running (stuck), slot 1 waiting behind it. Each prompt takes 0.5 s, so a prompt
    # the resume finds waiting cannot finish before its cancel reaches the server.
    config = sim_config(tmp_path, fixed_prompt_s=0.5, faults=Faults(stuck_on_prompts=(1,)))
    with running_simulator(config) as sim:
        kill_runner_leaving(order_file, out_root, [sim.url], prompts=2)
        left = server_queue(sim.url)
        # A short first deadline: without the cancel, the stuck prompt would hold the queue.
        settings = settings_for(sim.url, out_root, first_prompt_timeout_s=10.0)
        report, printed = run_in_process(order_file, settings)
        stats = sim.stats()

    check_finished(order_file, out_root)
    assert len(left) == 2  # slot 0's prompt running (listed first), slot 1's waiting
    outcome = {p["prompt_id"]: p["status"] for p in stats["prompts"]}
    # Slot 0's first prompt was interrupted; slot 1's was deleted before it started, or
    # interrupted if it started in between: neither was made.
    assert outcome[left[0]] == "interrupted", printed
    assert outcome.get(left[1], "deleted") in ("deleted", "interrupted")
    assert stats["interrupted"] == 1 + (left[1] in outcome)
    # Each slot made exactly once, as its second attempt.
    assert (stats["executed"], stats["cached"], stats["lost"]) == (3, 0, 0)
    assert [image.attempts for image in report.images[:2]] == [2, 2]


def test_ctrl_c_posts_nothing_after_it_cancels(tmp_path: Path) -> None:
    order_file = single_order(tmp_path / "orders", "no-more", 4)
    out_root = tmp_path / "out"
    # Slot 0 hangs until interrupted: at the signal, slot 0 runs and slot 1 waits.
    config = sim_config(tmp_path, fixed_prompt_s=0.5, faults=Faults(stuck_on_prompts=(1,)))
    with running_simulator(config) as sim:
        runner = start_runner(order_file, sim.url, out_root)
        wait_for(lambda: len(server_queue(sim.url)) == 2, "two prompts on the server")
        runner.send_signal(signal.SIGINT)
        code, printed = finish(runner)
        left = server_queue(sim.url)
        stats = sim.stats()

    assert code == 130, printed
    assert left == []
    # Only the two prompts in flight were ever sent; both were taken off the server.
    assert stats["posted"] == 2, stats
    assert stats["executed"] == 0
    assert 1 <= stats["interrupted"] == stats["started"] <= 2
