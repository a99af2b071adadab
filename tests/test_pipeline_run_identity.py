"""Two runs of one order id on one server (a new output root, another project with the same id)
never share a prompt id: each ledger has its own nonce in its prompt ids, so one never collects
the other's image from the server's history."""

from __future__ import annotations

from pathlib import Path

from comfyline.sim import running_simulator
from test_pipeline_support import (
    check_finished,
    run_in_process,
    settings_for,
    sim_config,
    single_order,
)


def test_two_ledgers_of_one_order_id_never_share_a_prompt_id(tmp_path: Path) -> None:
    first = single_order(tmp_path / "a", "same", 3, prompt="a red lighthouse, test pattern")
    second = single_order(tmp_path / "b", "same", 3, prompt="a blue lighthouse, test pattern")
    with running_simulator(sim_config(tmp_path)) as sim:
        made_b, _ = run_in_process(first, settings_for(sim.url, tmp_path / "out-B"))
        made_c, _ = run_in_process(second, settings_for(sim.url, tmp_path / "out-C"))
        stats = sim.stats()

    check_finished(first, tmp_path / "out-B")
    check_finished(second, tmp_path / "out-C")
    ids_b = {image.prompt_id for image in made_b.images}
    ids_c = {image.prompt_id for image in made_c.images}
    assert len(ids_b) == len(ids_c) == 3 and not ids_b & ids_c
    assert stats["executed"] == 6  # the second run made its own images, none taken over
    assert all("blue" in image.prompt for image in made_c.images)
