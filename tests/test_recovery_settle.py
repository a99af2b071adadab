"""How a resume settles what a dead runner left on one server, in the two cases no other test
reaches: prompts still *waiting* in the queue (behind another client's), and a prompt the
server *finished* whose image is gone when the resume comes to collect it; and what a
restarted server lost, sent again, as the log says.

Written for survivors of a mutation run over ``recovery.py`` (docs/TESTING.md): with the
waiting prompts left on the server, the failed collection recorded without its reason (or
not at all), or the log's "resent" lines naming no slot, every test passed.
"""

from __future__ import annotations

from pathlib import Path

from comfyline.ledger import Ledger, ledger_path
from comfyline.orders import load
from comfyline.pipeline import fingerprint
from comfyline.sim import Faults, running_simulator
from line_support import BackgroundRun, foreign_prompt, interrupt, ledger_events
from test_pipeline_support import (
    check_finished,
    kill_runner_leaving,
    output_folder,
    run_in_process,
    server_queue,
    settings_for,
    sim_config,
    single_order,
    wait_for,
)


def test_a_resume_deletes_what_a_dead_runner_left_waiting_in_the_queue(tmp_path: Path) -> None:
    order_file = single_order(tmp_path / "orders", "waiting", 3)
    out = tmp_path / "out"
    # Another client's prompt hangs on the server until interrupted: the dead runner's two
    # prompts wait behind it, and so do the resume's, however slow the machine.
    config = sim_config(tmp_path, fixed_prompt_s=0.05, faults=Faults(stuck_on_prompts=(1,)))
    with running_simulator(config) as sim:
        blocker = foreign_prompt(sim.url)
        wait_for(lambda: server_queue(sim.url) == [blocker], "the other client's prompt")
        kill_runner_leaving(order_file, out, [sim.url], prompts=3)  # two of ours behind it
        left = server_queue(sim.url)[1:]
        run = BackgroundRun(order_file, settings_for(sim.url, out))
        # Both settled (taken off the server, to be made again) before the queue moves on.
        wait_for(lambda: len(ledger_events(order_file, out, "requeued")) == 2, "the two settled")
        interrupt(sim.url, blocker)
        report = run.result()
        stats = sim.stats()

    check_finished(order_file, out)
    reasons = [e["detail"]["reason"] for e in ledger_events(order_file, out, "requeued")]
    assert reasons == ["previous run left it pending on the server"] * 2
    # The two waiting prompts never started: each slot was made once, by the resume.
    started = {p["prompt_id"] for p in stats["prompts"]}
    assert not started & set(left), stats
    assert (stats["executed"], stats["interrupted"], stats["cached"]) == (3, 1, 0), stats
    assert [image.attempts for image in report.images] == [2, 2, 1]


def test_a_finished_prompt_whose_image_is_gone_is_made_again_saying_why(tmp_path: Path) -> None:
    order_file = single_order(tmp_path / "orders", "gone", 2)
    out = tmp_path / "out"
    config = sim_config(tmp_path, fixed_prompt_s=0.05, faults=Faults(stuck_on_prompts=(1,)))
    with running_simulator(config) as sim:
        kill_runner_leaving(order_file, out, [sim.url], prompts=2)
        # While nobody listens, the server fails the first (interrupted) and makes the second;
        # then its output folder is cleaned: the second's history lists an image it no longer
        # has.
        failed, made = server_queue(sim.url)
        interrupt(sim.url, failed)
        wait_for(lambda: not server_queue(sim.url), "the server to finish its queue")
        for image in (tmp_path / "comfy-out").rglob("*.png"):
            image.unlink()
        report, printed = run_in_process(order_file, settings_for(sim.url, out))
        stats = sim.stats()

    check_finished(order_file, out)
    (lost,) = [e for e in ledger_events(order_file, out, "failed") if e["prompt_id"] == made]
    assert lost["detail"]["type"] == "ImageInvalid"
    assert "/view answered 404" in lost["detail"]["message"], lost
    requeued = {
        e["index"]: e["detail"]["reason"] for e in ledger_events(order_file, out, "requeued")
    }
    assert requeued[lost["index"]] == "previous run left it done on the server"
    assert "collected from the server's history" not in printed
    # Both made again, as their second attempt: three images made in all, one interrupted.
    assert [image.attempts for image in report.images] == [2, 2]
    assert (stats["executed"], stats["interrupted"]) == (3, 1), stats


def test_prompts_a_restarted_server_lost_are_sent_again_under_their_ids_and_logged(
    tmp_path: Path,
) -> None:
    order_file = single_order(tmp_path / "orders", "lost", 3)
    out = tmp_path / "out"
    # The first prompt hangs: the dead runner leaves slot 0 running and slot 1 waiting.
    config = sim_config(tmp_path, fixed_prompt_s=0.05, faults=Faults(stuck_on_prompts=(1,)))
    with running_simulator(config) as sim:
        kill_runner_leaving(order_file, out, [sim.url], prompts=2)
        left = server_queue(sim.url)
        sim.restart(away_s=0.1)  # its queue and history go with it
        sim.wait_up()
        sim.set_faults(Faults())
        report, _ = run_in_process(order_file, settings_for(sim.url, out))
        stats = sim.stats()

    check_finished(order_file, out)
    # Each was sent again as it was (same prompt id, same attempt), and the log says which.
    loaded = load(order_file)
    db = ledger_path(output_folder(order_file, out))
    with Ledger.open(db, loaded.order.id, fingerprint(loaded)) as ledger:
        resent = [(e.index, e.attempt, e.prompt_id) for e in ledger.events("resent")]
        reasons = {e.detail["reason"] for e in ledger.events("resent")}
    assert resent == [(0, 1, left[0]), (1, 1, left[1])]
    assert reasons == {"previous run left it unknown on the server"}
    assert [image.attempts for image in report.images] == [1, 1, 1]
    assert {image.prompt_id for image in report.images[:2]} == set(left)
    assert stats["executed"] == 3 and stats["cached"] == 0, stats
