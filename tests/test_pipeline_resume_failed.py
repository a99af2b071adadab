"""A resume after the server failed what the dead runner had sent: made again as a new
attempt (a new prompt id), never posted again under the failed one.

Written for a survivor of a mutation run over ``recovery.py`` (docs/TESTING.md): with
``reconcile`` sending a failed prompt again as if the server had never seen it, every test
passed.
"""

from __future__ import annotations

from pathlib import Path

import httpx

from comfyline.ledger import Ledger, ledger_path
from comfyline.orders import load
from comfyline.pipeline import fingerprint
from comfyline.sim import Faults, running_simulator
from test_pipeline_support import (
    check_finished,
    finish,
    output_folder,
    run_in_process,
    server_queue,
    settings_for,
    sim_config,
    single_order,
    start_runner,
    wait_for,
)


def test_a_prompt_that_failed_while_the_runner_was_down_is_made_again_as_a_new_attempt(
    tmp_path: Path,
) -> None:
    order_file = single_order(tmp_path / "orders", "failed-meanwhile", 3)
    out_root = tmp_path / "out"
    # The first prompt hangs until interrupted: the runner is killed while it is certainly on
    # the server, and the interrupt makes it end failed there while nobody listens.
    faults = Faults(stuck_on_prompts=(1,))
    with running_simulator(sim_config(tmp_path, faults=faults)) as sim:
        runner = start_runner(order_file, sim.url, out_root)
        wait_for(lambda: server_queue(sim.url), "a prompt on the server")
        runner.kill()
        finish(runner)
        httpx.post(f"{sim.url}/interrupt", timeout=10).raise_for_status()
        wait_for(lambda: not server_queue(sim.url), "the server to end what it holds")
        (stopped,) = [
            p["prompt_id"] for p in sim.stats()["prompts"] if p["status"] == "interrupted"
        ]
        run_in_process(order_file, settings_for(sim.url, out_root))
        stats = sim.stats()

    check_finished(order_file, out_root)
    loaded = load(order_file)
    db = ledger_path(output_folder(order_file, out_root))
    with Ledger.open(db, loaded.order.id, fingerprint(loaded)) as ledger:
        requeued = {e.prompt_id: e for e in ledger.events("requeued")}
        resent = {e.prompt_id for e in ledger.events("resent")}
        done = {e.index: e.attempt for e in ledger.events("done")}
    assert requeued[stopped].detail["reason"] == "previous run left it failed on the server"
    assert stopped not in resent
    assert sorted(done) == [0, 1, 2]
    assert done[requeued[stopped].index] == 2  # made again as the next attempt, a new prompt id
    # One prompt stopped on the server; the three images were made once each (a second prompt
    # the dead runner left ran while it was down and was collected, or was sent again).
    assert (stats["interrupted"], stats["executed"], stats["failed"]) == (1, 3, 0)
