"""A resume on two servers: a dead runner's slots sit on both, and one of them is down when
the order resumes. Each slot is settled on the server its ledger row names: the one that
answers is asked about its own slots (collected, or made again), the one that is down is not
asked at all, and every slot it held is handed back and made on the other. What a restarted
server lost goes back to that server, under the same prompt ids."""

from __future__ import annotations

from pathlib import Path

from comfyline.ledger import ledger_path, read_slots
from comfyline.sim import Faults, running_simulator
from line_support import interrupt, ledger_events
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


def test_a_resume_hands_back_every_slot_of_the_server_that_is_down(tmp_path: Path) -> None:
    order_file = single_order(tmp_path / "orders", "two-left", 4)
    out = tmp_path / "out"
    # Each server's first prompt hangs until interrupted: the dead runner leaves exactly two
    # prompts on each (one running, one waiting), however slow the machine.
    stuck = Faults(stuck_on_prompts=(1,))
    with (
        running_simulator(sim_config(tmp_path / "a", fixed_prompt_s=0.05, faults=stuck)) as a,
        running_simulator(sim_config(tmp_path / "b", fixed_prompt_s=0.05, faults=stuck)) as b,
    ):
        kill_runner_leaving(order_file, out, [a.url, b.url], prompts=2)
        # While nobody listens, A fails the one (interrupted) and makes the other; B goes down
        # and stays down past the end of the order.
        failed_on_a, made_on_a = server_queue(a.url)
        interrupt(a.url, failed_on_a)
        wait_for(lambda: not server_queue(a.url), "A to finish its queue")
        b.restart(away_s=120)
        held = {r.index: r for r in read_slots(ledger_path(output_folder(order_file, out)))}
        settings = settings_for(
            a.url,
            out,
            comfyui_urls=(a.url, b.url),
            reconnect_timeout_s=0.3,
            probe_interval_s=0.1,
        )
        report, printed = run_in_process(order_file, settings)
        stats = a.stats()

    on_a = {r.prompt_id: i for i, r in held.items() if r.backend == a.url}
    on_b = sorted(i for i, r in held.items() if r.backend == b.url)
    assert set(on_a) == {failed_on_a, made_on_a} and len(on_b) == 2, held
    assert all(r.state.value == "submitted" for r in held.values())

    check_finished(order_file, out)
    requeued = ledger_events(order_file, out, "requeued")
    reasons = {e["index"]: e["detail"]["reason"] for e in requeued}
    # A was asked about its own two: the failed one made again, the finished one collected.
    assert reasons[on_a[failed_on_a]] == "previous run left it failed on the server"
    assert on_a[made_on_a] not in reasons
    assert "collected from the server's history" in printed
    # B's two were handed back without asking B (a down server cannot say "unknown": nothing
    # is posted again under B's prompt ids), and made on A as new attempts.
    for index in on_b:
        assert reasons[index] == f"its server {b.url} was lost; made again on {a.url}"
    assert ledger_events(order_file, out, "resent") == []
    images = {image.index: image for image in report.images}
    assert all(images[i].backend == a.url and images[i].attempts == 2 for i in on_b)
    assert images[on_a[made_on_a]].attempts == 1
    # Made once each: the one A made meanwhile, then the failed one and B's two.
    assert (stats["executed"], stats["interrupted"], stats["cached"]) == (4, 1, 0), stats


def test_what_a_restarted_server_lost_is_sent_again_to_that_server(tmp_path: Path) -> None:
    order_file = single_order(tmp_path / "orders", "lost-on-b", 4)
    out = tmp_path / "out"
    stuck = Faults(stuck_on_prompts=(1,))
    with (
        running_simulator(sim_config(tmp_path / "a", fixed_prompt_s=0.05, faults=stuck)) as a,
        running_simulator(sim_config(tmp_path / "b", fixed_prompt_s=0.05, faults=stuck)) as b,
    ):
        kill_runner_leaving(order_file, out, [a.url, b.url], prompts=2)
        lost_on_b = set(server_queue(b.url))
        b.restart(away_s=0.1)  # B's queue and history go with it; it is back for the resume
        b.wait_up()
        b.set_faults(Faults())
        settings = settings_for(a.url, out, comfyui_urls=(a.url, b.url))
        report, _ = run_in_process(order_file, settings)
        made_on_b = {p["prompt_id"] for p in b.stats()["prompts"] if p["status"] == "success"}

    check_finished(order_file, out)
    resent = {e["prompt_id"] for e in ledger_events(order_file, out, "resent")}
    assert resent == lost_on_b
    # Sent again under the same ids to B, the server the ledger names for them (on another,
    # a second crash would send them to B once more: made twice).
    again = [image for image in report.images if image.prompt_id in lost_on_b]
    assert len(again) == 2 and all(i.backend == b.url and i.attempts == 1 for i in again)
    assert lost_on_b <= made_on_b
