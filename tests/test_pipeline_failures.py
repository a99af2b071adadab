"""Failures on the server: an execution error is retried once in the same run; a slot that
fails every time leaves the order partial (exit 1) with the error in the report, and the next
run retries it; out of memory frees, retries and steps down, recorded in the report."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

from comfyline.reports.png_metadata import read_text_chunks
from comfyline.reports.report import REPORT_FILE, read_report
from comfyline.sim import Faults, running_simulator
from test_pipeline_support import (
    FastTime,
    check_finished,
    finish,
    image_files,
    output_folder,
    run_in_process,
    settings_for,
    sim_config,
    single_order,
    start_runner,
    status_of,
    the_plan,
)


def test_an_execution_error_is_retried_once_in_the_same_run(tmp_path: Path) -> None:
    order_file = single_order(tmp_path / "orders", "retry", 4)
    out_root = tmp_path / "out"
    with running_simulator(sim_config(tmp_path, faults=Faults(error_on_prompts=(2,)))) as sim:
        report, printed = run_in_process(order_file, settings_for(sim.url, out_root))
        stats = sim.stats()

    assert stats["failed"] == 1
    assert stats["executed"] == 4
    check_finished(order_file, out_root)
    failed_id = stats["prompts"][1]["prompt_id"]
    retried = [image for image in report.images if image.attempts == 2]
    assert len(retried) == 1 and retried[0].prompt_id != failed_id
    assert f"slot {retried[0].index}:" in printed and "sending it once more" in printed


def test_a_slot_failing_every_time_leaves_the_order_partial_until_run_again(
    tmp_path: Path,
) -> None:
    order_file = single_order(tmp_path / "orders", "partial", 4)
    out_root = tmp_path / "out"
    bad = the_plan(order_file).slots[1]
    with running_simulator(sim_config(tmp_path, faults=Faults(error_on_seeds=(bad.seed,)))) as sim:
        code, printed = finish(start_runner(order_file, sim.url, out_root))
        stats = sim.stats()

        assert code == 1, printed
        assert "Traceback" not in printed
        assert stats["failed"] == 2  # sent twice in the run, then left failed
        folder = output_folder(order_file, out_root)
        report = read_report(folder / REPORT_FILE)
        assert report.order.state == "partial"
        assert (report.totals.succeeded, report.totals.failed, report.totals.missing) == (3, 1, 0)
        (error,) = report.errors
        assert (error.index, error.type, error.attempts) == (1, "ExecutionFailed", 2)
        assert error.node == "3"  # the KSampler of the built-in txt2img graph
        assert "KSampler" in error.message
        assert bad.stem not in image_files(folder)
        status = status_of(order_file, out_root)
        assert status is not None and status.order.state.value == "partial"
        assert (status.counts.done, status.counts.failed) == (3, 1)

        sim.set_faults(Faults())
        executed = stats["executed"]
        again, _ = run_in_process(order_file, settings_for(sim.url, out_root))
        assert sim.stats()["executed"] == executed + 1  # only the failed slot

    check_finished(order_file, out_root)
    (retried,) = [image for image in again.images if image.index == 1]
    assert retried.attempts == 3


def test_out_of_memory_frees_retries_and_steps_down_the_level(tmp_path: Path) -> None:
    # standard is 320x320 (102,400 px): over the limit; preview's 256x256 (65,536 px) fits.
    order_file = single_order(tmp_path / "orders", "oom", 3, quality="standard")
    out_root = tmp_path / "out"
    faults = Faults(oom_above_pixels=80_000)
    with running_simulator(sim_config(tmp_path, faults=faults)) as sim:
        report, printed = run_in_process(
            order_file, settings_for(sim.url, out_root), **FastTime().seams()
        )
        stats = sim.stats()

    # The first OOM, the same settings once more (and what was already queued behind them).
    assert stats["failed"] >= 2
    assert stats["executed"] == 3
    kinds = [e.kind for e in report.guard_events]
    assert "oom_retry" in kinds and kinds.index("oom_retry") < kinds.index("step_down")
    assert report.order.state == "completed"
    assert report.totals.succeeded == 3
    steps = [e for e in report.guard_events if e.kind == "step_down"]
    assert [(e.step_from, e.step_to) for e in steps] == [
        ("standard 320x320 batch 1", "preview 256x256 batch 1")
    ]
    assert report.level == "preview"
    assert (report.parameters["width"], report.parameters["height"]) == (256, 256)
    assert "stepped down" in printed
    check_finished(order_file, out_root)
    folder = output_folder(order_file, out_root)
    for image in report.images:  # every image made at the lower level, and says so
        with Image.open(folder / image.file) as png:
            assert png.size == (256, 256)
        ours = json.loads(read_text_chunks(folder / image.file)["comfyline"])
        assert (ours["width"], ours["steps"]) == (256, 6)


def test_the_report_gives_each_image_the_parameters_it_was_made_with(tmp_path: Path) -> None:
    order_file = single_order(tmp_path / "orders", "oom-params", 2, quality="standard")
    faults = Faults(oom_above_pixels=80_000)
    with running_simulator(sim_config(tmp_path, faults=faults)) as sim:
        report, _ = run_in_process(
            order_file, settings_for(sim.url, tmp_path / "out"), **FastTime().seams()
        )

    assert report.level == "preview"
    assert [image.parameters["width"] for image in report.images] == [256, 256]


def test_out_of_memory_never_shrinks_a_batch_the_order_asked_for(tmp_path: Path) -> None:
    # 4 images in 2 slots of batch 2 at `standard`: 2 x 320x320 is over the limit and so is
    # 1 x 320x320; a batch of 2 at 256x256 (131,072 px) fits. Halving the batch would make
    # 1 image per slot and silently lose the other, so the run steps down the level instead.
    order_file = single_order(
        tmp_path / "orders", "oom-batch", 4, quality="standard", overrides={"batch_size": 2}
    )
    faults = Faults(oom_above_pixels=150_000)
    with running_simulator(sim_config(tmp_path, faults=faults)) as sim:
        report, _ = run_in_process(
            order_file, settings_for(sim.url, tmp_path / "out"), **FastTime().seams()
        )

    steps = [e for e in report.guard_events if e.kind == "step_down"]
    assert [(e.step_from, e.step_to) for e in steps] == [
        ("standard 320x320 batch 2", "preview 256x256 batch 2")
    ]
    assert (report.totals.requested, report.totals.succeeded) == (4, 4)
    assert [image.parameters["width"] for image in report.images] == [256] * 4
