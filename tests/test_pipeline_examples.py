"""Every example order under automation/orders/ runs on the simulator and makes its series:
exactly the planned images, the report, the contact sheet and the run chart. A finished order
run again does nothing and says so."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from comfyline.reports.png_metadata import read_text_chunks
from comfyline.sim import SimulatorHandle, running_simulator
from test_pipeline_support import (
    EXAMPLE_ORDERS,
    check_finished,
    output_folder,
    run_in_process,
    settings_for,
    sim_config,
    the_plan,
)

EXAMPLES = sorted(p.parent.name for p in EXAMPLE_ORDERS.glob("*/project.yaml"))


@pytest.fixture(scope="module")
def shared_sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimulatorHandle]:
    """One simulator for the module: starting one per test costs more than the test."""
    # The LoRA and VAE the example orders lora-product and vae-portrait name.
    models = {
        "loras": ("tiny-lora.safetensors",),
        "vaes": ("vae-ft-mse-840000-ema-pruned.safetensors",),
    }
    with running_simulator(sim_config(tmp_path_factory.mktemp("sim"), **models)) as handle:
        yield handle


def copy_example(name: str, tmp_path: Path) -> Path:
    """The example order copied into a project layout under ``tmp_path`` (with the shared
    profiles file), so that nothing is written into the repository."""
    orders = tmp_path / "project" / "automation" / "orders"
    shutil.copytree(EXAMPLE_ORDERS / name, orders / name)
    shared = EXAMPLE_ORDERS.parent / "profiles.yaml"
    if shared.exists():
        shutil.copy(shared, orders.parent / "profiles.yaml")
    return orders / name / "project.yaml"


def test_every_order_type_has_an_example() -> None:
    types = {
        line.split(":", 1)[1].strip()
        for name in EXAMPLES
        for line in (EXAMPLE_ORDERS / name / "project.yaml").read_text().splitlines()
        if line.startswith("type:")
    }
    assert types == {"single", "variations", "list"}


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_order_makes_its_series(
    name: str, shared_sim: SimulatorHandle, tmp_path: Path
) -> None:
    order_file = copy_example(name, tmp_path)
    out_root = tmp_path / "out"
    executed_before = shared_sim.stats()["executed"]

    report, printed = run_in_process(order_file, settings_for(shared_sim.url, out_root))

    planned = the_plan(order_file, out_root)
    finished = check_finished(order_file, out_root)
    assert report == finished.report  # generate() returns what the file holds
    assert shared_sim.stats()["executed"] - executed_before == len(planned.slots)
    assert f"order {planned.order_id!r} completed" in printed
    folder = output_folder(order_file, out_root)
    assert list(folder.glob("contact_sheet*.png"))
    assert (folder / "run_chart.png").stat().st_size > 0
    assert report.backend.simulated and report.backend.url == shared_sim.url
    assert report.backend.comfyui_version
    assert report.order.content == order_file.read_text(encoding="utf-8")
    assert report.parameters["width"] == planned.slots[0].params.width
    for entry in report.images:
        chunks = read_text_chunks(folder / entry.file)
        assert {"parameters", "comfyline", "prompt"} <= set(chunks)
        ours = json.loads(chunks["comfyline"])
        assert (ours["seed"], ours["prompt"], ours["index"]) == (
            entry.seed,
            entry.prompt,
            entry.index,
        )
        assert chunks["parameters"].startswith(entry.prompt)
        assert f"Seed: {entry.seed}" in chunks["parameters"]
        # ComfyUI's own chunk: the graph it ran, with this image's seed in its (first) sampler.
        graph = json.loads(chunks["prompt"])
        seeds = [n["inputs"].get("seed") for n in graph.values() if "KSampler" in n["class_type"]]
        assert entry.seed in seeds


def test_running_a_finished_order_again_does_nothing(
    shared_sim: SimulatorHandle, tmp_path: Path
) -> None:
    order_file = copy_example("single-lighthouse", tmp_path)
    settings = settings_for(shared_sim.url, tmp_path / "out")
    first, _ = run_in_process(order_file, settings)
    folder = output_folder(order_file, tmp_path / "out")
    files = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    started = shared_sim.stats()["started"]

    again, printed = run_in_process(order_file, settings)

    assert "already complete: nothing to do" in printed
    assert shared_sim.stats()["started"] == started  # no prompt reached the server
    assert again == first
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()} == files
