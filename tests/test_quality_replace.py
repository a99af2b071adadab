"""``qc.replace``: an image that fails the quality checks is made again in the same run with the
slot's next re-roll seed, its file kept in ``rerolled/``, bounded per image and per order; a
run killed in the middle of a replacement is finished by the next run.

The simulator makes the black images: ``black_image_on_prompts`` (by execution count) and
``black_image_on_text`` (every prompt whose text contains it, each time).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from PIL import Image

from comfyline.ledger import SlotState, ledger_path, read_slots
from comfyline.reports.report import GenerationReport
from comfyline.reroll import reroll_seed
from comfyline.settings import Settings
from comfyline.sim import Faults, running_simulator
from comfyline.status import order_row
from test_orders_evolve_kill import _start
from test_pipeline_support import (
    comfyline,
    finish,
    output_folder,
    run_in_process,
    server_queue,
    settings_for,
    sim_config,
    sim_stats,
    single_order,
    temp_files,
    wait_for,
)

NO_DUPLICATES = {"duplicate_distance": None}  # count only the flags the faults cause


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _is_black(path: Path) -> bool:
    with Image.open(path) as image:
        return image.convert("L").getextrema()[1] == 0


def _run(
    tmp_path: Path, count: int, faults: Faults, qc: dict[str, Any], **fields: Any
) -> tuple[GenerationReport, str, Path, int]:
    """Run an order of ``count`` images on a simulator with ``faults``: the report, what the
    run printed, the order's folder, and how many prompts the simulator ran."""
    order_file = single_order(
        tmp_path / "orders", "qcr", count, qc={**NO_DUPLICATES, **qc}, **fields
    )
    out_root = tmp_path / "out"
    with running_simulator(sim_config(tmp_path, faults=faults)) as sim:
        report, printed = run_in_process(order_file, settings_for(sim.url, out_root))
        ran = sim_stats(sim.url)["executed"]
    return report, printed, output_folder(order_file, out_root), ran


def _check_history(report: GenerationReport, folder: Path) -> None:
    """Every earlier image is kept where the history says, black, with the derived seed."""
    for image in report.images:
        first = image.history[0]["seed"] if image.history else image.seed
        for entry in image.history:
            assert entry["reason"] == "qc"
            assert entry["new_seed"] == reroll_seed(first, entry["generation"])
            assert entry["flags"] == [["black", "uniform"]]
            for file, sha in zip(entry["moved_to"], entry["sha256s"], strict=True):
                assert file.startswith("rerolled/") and _sha(folder / file) == sha
                assert _is_black(folder / file)
        assert _sha(folder / image.file) == image.sha256


def test_a_black_image_is_replaced_once_and_the_order_completes(tmp_path: Path) -> None:
    faults = Faults(black_image_on_prompts=(1,))
    report, printed, folder, ran = _run(tmp_path, 3, faults, {"replace": True})

    assert report.order.state == "completed", printed
    assert ran == 4  # three images and one replacement
    assert len(report.images) == 3 and report.totals.succeeded == 3
    assert report.totals.missing == 0 and report.totals.failed == 0
    assert all(image.qc_flags == [] for image in report.images)
    replaced = [image for image in report.images if image.history]
    assert len(replaced) == 1 and len(replaced[0].history) == 1
    entry = replaced[0].history[0]
    assert replaced[0].seed == entry["new_seed"] != entry["seed"]
    assert not _is_black(folder / replaced[0].file)
    _check_history(report, folder)
    assert report.qc is not None
    assert (report.qc.replaced, report.qc.flagged, report.qc.budget_spent) == (1, 0, False)
    assert report.qc.allowed == 1  # 10 % of 3, at least 1
    assert "replaced (seed" in printed
    slots = read_slots(ledger_path(folder))
    assert [s.state for s in slots] == [SlotState.DONE] * 3
    assert temp_files(folder) == []


def test_a_prompt_that_always_makes_black_stops_at_the_per_image_limit(tmp_path: Path) -> None:
    faults = Faults(black_image_on_text="moonless")
    qc = {"replace": True, "max_extra": 10, "max_per_image": 2}
    report, printed, folder, ran = _run(
        tmp_path, 2, faults, qc, prompt="a moonless night, test pattern"
    )

    assert ran == 2 * 3  # each image made once and replaced twice
    assert len(report.images) == 2 and report.totals.succeeded == 2
    for image in report.images:
        assert image.qc_flags == ["black", "uniform"]
        assert [e["generation"] for e in image.history] == [1, 2]
        assert _is_black(folder / image.file)
    _check_history(report, folder)
    assert report.qc is not None
    assert (report.qc.replaced, report.qc.flagged, report.qc.budget_spent) == (4, 2, False)
    assert "replaced 2 time(s) already" in printed
    # Not `count` good images: partial, with the reason (issue #11).
    assert report.order.state == "partial"
    assert "2 image(s) still fail the quality checks" in printed


def test_the_order_budget_caps_the_replacements(tmp_path: Path) -> None:
    faults = Faults(black_image_on_text="moonless")
    qc = {"replace": True, "max_extra": 2}
    report, printed, folder, ran = _run(
        tmp_path, 3, faults, qc, prompt="a moonless night, test pattern"
    )

    assert ran == 3 + 2
    assert len(report.images) == 3 and report.totals.succeeded == 3
    assert sum(len(image.history) for image in report.images) == 2
    assert all(image.qc_flags for image in report.images)
    _check_history(report, folder)
    assert report.qc is not None
    assert (report.qc.replaced, report.qc.allowed, report.qc.flagged) == (2, 2, 3)
    assert report.qc.budget_spent
    assert "the order's replacements are spent" in printed
    assert report.order.state == "partial"
    written = (folder / "generation_report.json").read_text("utf-8")
    assert '"budget_spent": true' in written
    shown = comfyline(
        "status", str(tmp_path / "orders" / "qcr"), "--output-root", str(tmp_path / "out")
    )
    assert shown.returncode == 0, shown.stderr
    assert (
        "qcr: quality: 2 replaced (of 2 allowed), 3 image(s) flagged, the replacement budget "
        "is spent (qc.max_extra)"
    ) in shown.stdout


def test_without_replace_a_black_image_is_only_flagged(tmp_path: Path) -> None:
    faults = Faults(black_image_on_prompts=(1,))
    report, _, folder, ran = _run(tmp_path, 3, faults, {})

    assert ran == 3
    flagged = [image for image in report.images if image.qc_flags]
    assert len(flagged) == 1 and flagged[0].qc_flags == ["black", "uniform"]
    assert all(image.history == [] for image in report.images)
    assert not (folder / "rerolled").exists()
    assert report.qc is not None
    assert (report.qc.replace, report.qc.allowed, report.qc.replaced) == (False, 0, 0)
    assert not report.qc.budget_spent


def test_replace_turned_on_later_replaces_what_an_earlier_run_flagged(tmp_path: Path) -> None:
    """The state a kill between the check and the replacement leaves (the slot done, its image
    flagged): the next run replaces it. ``qc`` is not part of what the images are: no new
    revision."""
    order_file = single_order(tmp_path / "orders", "later", 2, qc=NO_DUPLICATES)
    out_root = tmp_path / "out"
    with running_simulator(sim_config(tmp_path, faults=Faults(black_image_on_prompts=(1,)))) as sim:
        settings = settings_for(sim.url, out_root)
        first, _ = run_in_process(order_file, settings)
        black = next(image for image in first.images if image.qc_flags)
        single_order(tmp_path / "orders", "later", 2, qc={**NO_DUPLICATES, "replace": True})
        report, printed = run_in_process(order_file, settings)
        row = order_row(order_file, Settings(output_root=out_root))
    folder = output_folder(order_file, out_root)

    assert report.revision == 1 and report.order.state == "completed", printed
    assert all(image.qc_flags == [] for image in report.images)
    again = next(image for image in report.images if image.index == black.index)
    assert again.history[0]["sha256s"] == [black.sha256]
    _check_history(report, folder)
    assert row.qc == "1 replaced (of 1 allowed), 0 image(s) flagged"


def test_a_run_killed_during_a_replacement_is_finished_by_the_next_run(tmp_path: Path) -> None:
    order_file = single_order(
        tmp_path / "orders", "killed", 1, qc={**NO_DUPLICATES, "replace": True}
    )
    out_root = tmp_path / "out"
    folder = output_folder(order_file, out_root)
    db = ledger_path(folder)
    # Execution 1 is black; 2 (its replacement) hangs until the next run takes it off the
    # server, so the kill lands while the replacement is in flight.
    faults = Faults(black_image_on_prompts=(1,), stuck_on_prompts=(2,))
    with running_simulator(sim_config(tmp_path, faults=faults)) as sim:
        args = ("--comfyui", sim.url, "--output-root", str(out_root))
        runner = _start("run-order", str(order_file), *args)
        wait_for(
            lambda: (
                db.is_file()
                and server_queue(sim.url)
                and any(s.state is SlotState.SUBMITTED and s.history for s in read_slots(db))
            ),
            "the replacement's prompt on the server",
        )
        runner.kill()
        code, text = finish(runner)
        assert code != 0
        (slot,) = read_slots(db)
        moved = folder / slot.history[0]["moved_to"][0]
        assert _is_black(moved), text  # recorded and moved before the replacement was sent
        report, printed = run_in_process(order_file, settings_for(sim.url, out_root))

    assert report.order.state == "completed", printed
    (image,) = report.images
    assert image.qc_flags == [] and len(image.history) == 1
    assert report.totals.succeeded == 1 and report.qc is not None and report.qc.replaced == 1
    _check_history(report, folder)
    made = {p.relative_to(folder).as_posix() for p in folder.rglob("0*.png")}
    assert made == {image.file, moved.relative_to(folder).as_posix()}  # one of each, no more
    assert temp_files(folder) == []
