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
    # The first prompt hangs until interrupted (so the runner is killed while its prompts are
    # certainly on the server); the second, if the runner sent one, fails when it runs.
    faults = Faults(stuck_on_prompts=(1,), error_on_prompts=(2,))
    with running_simulator(sim_config(tmp_path, faults=faults)) as sim:
        runner = start_runner(order_file, sim.url, out_root)
        wait_for(lambda: server_queue(sim.url), "a prompt on the server")
        runner.kill()
        finish(runner)
        left = set(server_queue(sim.url))  # what the dead runner left there (nothing more comes)
        httpx.post(f"{sim.url}/interrupt", timeout=10).raise_for_status()
        wait_for(lambda: not server_queue(sim.url), "the server to end what it holds")
        run_in_process(order_file, settings_for(sim.url, out_root))
        stats = sim.stats()

    check_finished(order_file, out_root)
    loaded = load(order_file)
    db = ledger_path(output_folder(order_file, out_root))
    with Ledger.open(db, loaded.order.id, fingerprint(loaded)) as ledger:
        requeued = {e.prompt_id: e.detail["reason"] for e in ledger.events("requeued")}
        resent = {e.prompt_id for e in ledger.events("resent")}
        done = {e.index: e.attempt for e in ledger.events("done")}
    assert left and left <= set(requeued)
    assert all(requeued[p] == "previous run left it failed on the server" for p in left)
    assert not left & resent
    assert sorted(done) == [0, 1, 2]
    assert sorted(done.values())[-len(left) :] == [2] * len(left)  # each a second attempt
    # The left prompts ended on the server (interrupted, or failed); the three images were
    # made by three new prompts: nothing ran under a failed prompt's id again.
    assert (stats["interrupted"], stats["executed"]) == (1, 3)
    assert stats["failed"] == len(left) - 1
