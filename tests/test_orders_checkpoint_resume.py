"""A resumed order is finished with the checkpoint that made its first images: when the server
now resolves another one (the order did not change), the run stops before any prompt, naming
both and the remedy."""

from __future__ import annotations

from pathlib import Path

import pytest

from comfyline.errors import ConfigError
from comfyline.sim import Faults, running_simulator
from test_pipeline_support import (
    run_in_process,
    settings_for,
    sim_config,
    single_order,
    status_of,
    the_plan,
)

OLD, NEW = "old.safetensors", "new.safetensors"


def _partial_order(tmp_path: Path) -> tuple[Path, Path]:
    """An order (naming no checkpoint) whose first image was made with OLD and whose second
    failed; its file and output root."""
    order = single_order(tmp_path / "automation" / "orders", "mugs", 2)
    out = tmp_path / "out"
    failing = the_plan(order).slots[1].seed
    config = sim_config(
        tmp_path / "a", checkpoints=(OLD,), faults=Faults(error_on_seeds=(failing,))
    )
    with running_simulator(config) as sim:
        report, _ = run_in_process(order, settings_for(sim.url, out))
    assert report.totals.succeeded == 1 and report.totals.failed == 1
    return order, out


def test_a_server_that_now_resolves_another_checkpoint_is_refused(tmp_path: Path) -> None:
    order, out = _partial_order(tmp_path)

    with running_simulator(sim_config(tmp_path / "b", checkpoints=(NEW,))) as sim:
        with pytest.raises(ConfigError) as caught:
            run_in_process(order, settings_for(sim.url, out))
        started = sim.stats()["started"]

    message = str(caught.value)
    assert f"made with checkpoint {OLD!r}" in message
    assert f"go on with {NEW!r}" in message
    assert f"set checkpoint: {OLD} in the order" in message
    assert started == 0  # nothing was sent
    status = status_of(order, out)
    assert status is not None and status.counts.done == 1


def test_naming_the_old_checkpoint_in_the_settings_finishes_the_series(tmp_path: Path) -> None:
    order, out = _partial_order(tmp_path)

    with running_simulator(sim_config(tmp_path / "b", checkpoints=(NEW, OLD))) as sim:
        report, _ = run_in_process(order, settings_for(sim.url, out, checkpoint=OLD))

    assert report.totals.succeeded == 2
    assert {image.checkpoint for image in report.images} == {OLD}
