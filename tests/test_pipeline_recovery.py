"""Resuming: a restarted server, a runner killed while the server works, Ctrl-C, two runners
on one order, and a temp file left by a kill in the middle of a write."""

from __future__ import annotations

import signal
from collections import Counter
from pathlib import Path

from comfyline.ledger import Ledger, ledger_path
from comfyline.orders import load
from comfyline.pipeline import fingerprint
from comfyline.sim import Faults, running_simulator
from test_pipeline_support import (
    check_finished,
    comfyline,
    finish,
    output_folder,
    run_in_process,
    server_queue,
    settings_for,
    sim_config,
    single_order,
    start_runner,
    status_of,
    temp_files,
    wait_for,
)


def done_events(order_file: Path, output_root: Path) -> Counter[int | None]:
    """How often each slot was recorded done in the ledger's log (taken with the lock: no
    runner may be active)."""
    loaded = load(order_file)
    db = ledger_path(output_folder(order_file, output_root))
    with Ledger.open(db, loaded.order.id, fingerprint(loaded)) as ledger:
        return Counter(event.index for event in ledger.events("done"))


def test_server_restart_mid_order_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    order_file = single_order(tmp_path / "orders", "restart", 12)
    out_root = tmp_path / "out"
    config = sim_config(tmp_path, faults=Faults(restart_after_prompts=5))
    with running_simulator(config) as sim:
        report, _ = run_in_process(order_file, settings_for(sim.url, out_root))
        stats = sim.stats()

    assert stats["restarts"] == 1
    check_finished(order_file, out_root)
    assert report.totals.succeeded == 12
    assert done_events(order_file, out_root) == Counter(range(12))
    # The restart follows the 5th prompt's end: the one waiting behind it vanished unstarted
    # and was posted again; nothing was cut off or made twice (no allowance).
    assert (stats["started"], stats["executed"], stats["cached"]) == (12, 12, 0)
    assert (stats["interrupted"], stats["lost"]) == (0, 0)


def test_restart_while_the_runner_is_down_resubmits_what_the_server_lost(tmp_path: Path) -> None:
    order_file = single_order(tmp_path / "orders", "lost", 6)
    out_root = tmp_path / "out"
    with running_simulator(sim_config(tmp_path, fixed_prompt_s=0.3)) as sim:
        runner = start_runner(order_file, sim.url, out_root)
        wait_for(lambda: server_queue(sim.url), "a prompt on the server")
        runner.kill()
        finish(runner)
        sim.restart(away_s=0.1)  # queue and history gone with it
        sim.wait_up()
        sim.set_faults(Faults())
        run_in_process(order_file, settings_for(sim.url, out_root))
        stats = sim.stats()

    check_finished(order_file, out_root)
    loaded = load(order_file)
    db = ledger_path(output_folder(order_file, out_root))
    with Ledger.open(db, loaded.order.id, fingerprint(loaded)) as ledger:
        reasons = [e.detail.get("reason", "") for e in ledger.events("resent")]
    # Lost by the restart: sent again under the same prompt id, as the same attempt.
    assert any("unknown on the server" in reason for reason in reasons)
    assert done_events(order_file, out_root) == Counter(range(6))
    # The dead runner left at most two prompts (MAX_IN_FLIGHT) on the server. The restart cut
    # off the one running ("lost") and dropped the one waiting (never started); one that
    # finished before the restart lost its history with it, so its slot was made again. Each
    # of the two is at most one of these; nothing else ran twice and nothing was interrupted.
    extra = stats["executed"] - 6
    assert 0 <= extra and extra + stats["lost"] <= 2, stats
    assert stats["started"] == stats["executed"] + stats["lost"]
    assert (stats["interrupted"], stats["cached"]) == (0, 0)


def test_rerun_collects_what_the_server_finished_while_the_runner_was_down(
    tmp_path: Path,
) -> None:
    order_file = single_order(tmp_path / "orders", "collect", 5)
    out_root = tmp_path / "out"
    with running_simulator(sim_config(tmp_path, fixed_prompt_s=0.25)) as sim:
        runner = start_runner(order_file, sim.url, out_root)
        queued = wait_for(lambda: server_queue(sim.url), "a prompt on the server")
        runner.kill()
        finish(runner)
        # The server goes on with what it holds while nobody listens.
        wait_for(lambda: not server_queue(sim.url), "the server to finish its queue")
        finished_meanwhile = {
            p["prompt_id"] for p in sim.stats()["prompts"] if p["status"] == "success"
        }
        assert set(queued) <= finished_meanwhile

        report, printed = run_in_process(order_file, settings_for(sim.url, out_root))
        stats = sim.stats()

    assert "collected from the server's history" in printed
    check_finished(order_file, out_root)
    # Each slot made once: what was finished while the runner was down was not made again.
    assert (stats["started"], stats["executed"], stats["cached"]) == (5, 5, 0)
    assert (stats["interrupted"], stats["lost"]) == (0, 0)
    collected = {image.prompt_id for image in report.images} & finished_meanwhile
    assert collected == finished_meanwhile
    # Their seconds are the server's, from the history's execution timestamps (not 0).
    server_s = {p["prompt_id"]: p["end_s"] - p["start_s"] for p in stats["prompts"]}
    for image in report.images:
        if image.prompt_id in finished_meanwhile:
            assert image.seconds is not None
            assert 0.2 <= image.seconds <= server_s[image.prompt_id] + 0.1, image


def test_ctrl_c_cancels_on_the_server_saves_the_state_and_says_how_to_resume(
    tmp_path: Path,
) -> None:
    order_file = single_order(tmp_path / "orders", "ctrl-c", 6)
    out_root = tmp_path / "out"
    # The first prompt hangs until interrupted: when the signal comes, slot 0 is running and
    # slot 1 waits behind it, however slow the machine.
    config = sim_config(tmp_path, fixed_prompt_s=0.3, faults=Faults(stuck_on_prompts=(1,)))
    with running_simulator(config) as sim:
        runner = start_runner(order_file, sim.url, out_root)
        wait_for(lambda: len(server_queue(sim.url)) == 2, "two prompts on the server")
        runner.send_signal(signal.SIGINT)
        code, printed = finish(runner)

        assert code == 130, printed
        assert f"Resume with: comfyline run-order {order_file}" in printed
        assert "Traceback" not in printed
        assert server_queue(sim.url) == []  # nothing of ours left running or waiting there
        status = status_of(order_file, out_root)
        assert status is not None
        assert status.order.state.value == "cancelled"
        assert status.counts.submitted == 0  # what was in flight is back to be made
        assert not status.running
        stats = sim.stats()
        # The server-side cancel: the running prompt is interrupted and the waiting one deleted
        # (or, if it started in between, interrupted too). Nothing else was ever sent.
        assert (stats["posted"], stats["executed"]) == (2, 0), stats
        assert 1 <= stats["interrupted"] == stats["started"] <= 2

        report, _ = run_in_process(order_file, settings_for(sim.url, out_root))
        stats = sim.stats()

    assert report.order.state == "completed"
    check_finished(order_file, out_root)
    # Nothing made twice: one image per slot, all in the resume.
    assert (stats["executed"], stats["cached"], stats["lost"]) == (6, 0, 0)


def test_a_second_runner_on_the_same_order_refuses(tmp_path: Path) -> None:
    order_file = single_order(tmp_path / "orders", "locked", 40)  # ~4 s: outlasts a start-up
    out_root = tmp_path / "out"
    with running_simulator(sim_config(tmp_path, fixed_prompt_s=0.1)) as sim:
        first = start_runner(order_file, sim.url, out_root)
        status = wait_for(
            lambda: (s := status_of(order_file, out_root)) is not None and s.running and s,
            "the first runner to hold the order",
        )
        assert status and status.runner_pid == first.pid
        second = comfyline(
            "run-order", str(order_file), "--comfyui", sim.url, "--output-root", str(out_root)
        )
        still_running = first.poll() is None
        code, printed = finish(first)

    assert still_running, "the first runner ended before the second one was tried"
    assert second.returncode != 0
    assert "OrderLocked" in second.stderr
    assert f"already being run by process {first.pid}" in second.stderr
    assert "Traceback" not in second.stderr
    assert code == 0, printed
    check_finished(order_file, out_root)


def test_a_temp_file_left_by_a_kill_mid_write_is_removed_by_the_next_run(
    tmp_path: Path,
) -> None:
    order_file = single_order(tmp_path / "orders", "temp", 3)
    out_root = tmp_path / "out"
    folder = output_folder(order_file, out_root)
    folder.mkdir(parents=True)
    # What write_atomic leaves when the process dies between writing and renaming.
    stale = folder / ".0001_123.png.0123456789ab.tmp"
    stale.write_bytes(b"\x89PNG half an image")
    with running_simulator(sim_config(tmp_path)) as sim:
        run_in_process(order_file, settings_for(sim.url, out_root))

    assert temp_files(folder) == []
    check_finished(order_file, out_root)
