"""Someone presses "Clear queue" while our prompts wait behind another client's: the runner
notices from ``/queue`` (not 50 s later as "stuck"), says what happened, sends them again, and
the order completes."""

from __future__ import annotations

from pathlib import Path

import httpx

from comfyline.sim import Faults, running_simulator
from sim_graphs import txt2img
from test_pipeline_support import (
    check_finished,
    finish,
    server_queue,
    sim_config,
    single_order,
    start_runner,
    wait_for,
)

OTHER_SEED = 777_777
"""The other client's prompt: it hangs (the stuck fault) until the test interrupts it."""


def test_our_prompts_cleared_from_the_queue_are_sent_again(tmp_path: Path) -> None:
    order_file = single_order(tmp_path / "orders", "cleared", 2)
    faults = Faults(stuck_on_seeds=(OTHER_SEED,))
    with running_simulator(sim_config(tmp_path, faults=faults)) as sim:
        other = httpx.post(f"{sim.url}/prompt", json={"prompt": txt2img(seed=OTHER_SEED)})
        other_id = other.json()["prompt_id"]
        runner = start_runner(order_file, sim.url, tmp_path / "out")
        try:
            waiting = wait_for(lambda: server_queue(sim.url)[1:], "ours behind the other")
            httpx.post(f"{sim.url}/queue", json={"clear": True}).raise_for_status()
            # Ours come back under new ids (sent again) while the other still runs: noticed
            # from /queue, as the other never ends by itself.
            wait_for(lambda: set(server_queue(sim.url)[1:]) - set(waiting), "our prompt sent again")
            httpx.post(f"{sim.url}/interrupt", json={"prompt_id": other_id}).raise_for_status()
        finally:
            code, printed = finish(runner)

    assert code == 0, printed
    assert "removed from the queue" in printed and "sending it again" in printed
    check_finished(order_file, tmp_path / "out")
