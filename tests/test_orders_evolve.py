"""An order's history instead of a lock (issue #9): count up and down on a made order, an edit
that starts a new revision, re-rolls, and simulator images that never pass for real ones.

Every run goes through ``pipeline.generate`` (or the CLI) against the simulator over real
sockets; "a real ComfyUI" is the simulator with another card name, which comfyline cannot tell
from a real server.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import socket
from pathlib import Path

import pytest
from rich.console import Console

from comfyline import pipeline
from comfyline import reroll as reroll_module
from comfyline.errors import ComfyUnavailable, ConfigError
from comfyline.ledger import Ledger, SlotState, ledger_path, read_slots
from comfyline.orders import load, plan
from comfyline.reports.report import REPORT_FILE, GenerationReport, read_report
from comfyline.revisions import archive, plan_with
from comfyline.settings import Settings
from comfyline.sim import running_simulator
from comfyline.status import order_row
from test_pipeline_support import (
    comfyline,
    output_folder,
    run_in_process,
    settings_for,
    sim_config,
    single_order,
)

REAL_CARD = "cuda:0 NVIDIA GeForce RTX 4090 : cudaMallocAsync"


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _made(folder: Path) -> dict[str, str]:
    """The order's image files (any depth) by path relative to ``folder``, with their sha256."""
    return {
        p.relative_to(folder).as_posix(): _sha(p)
        for p in folder.rglob("*.png")
        if not p.name.startswith(("contact_sheet", "run_chart"))
    }


def _run(order_file: Path, settings: Settings) -> tuple[GenerationReport, str]:
    """``run_in_process``, what it printed with the console's line wrapping undone."""
    report, printed = run_in_process(order_file, settings)
    return report, " ".join(printed.split())


def _set_count(order_file: Path, count: int) -> None:
    text = order_file.read_text("utf-8")
    lines = [f"count: {count}" if line.startswith("count:") else line for line in text.split("\n")]
    order_file.write_text("\n".join(lines), encoding="utf-8")


# -- count up and down -----------------------------------------------------------------------


def test_count_up_on_a_made_order_makes_only_the_new_images(tmp_path: Path) -> None:
    order_file = single_order(tmp_path / "orders", "grow", 3)
    out_root = tmp_path / "out"
    with running_simulator(sim_config(tmp_path)) as sim:
        settings = settings_for(sim.url, out_root)
        run_in_process(order_file, settings)
        folder = output_folder(order_file, out_root)
        before = _made(folder)
        _set_count(order_file, 5)
        report, printed = _run(order_file, settings)
        stats = sim.stats()

    assert "order 'grow': grown by 2 slot(s) (indexes 3, 4); the 3 image(s) made are kept" in (
        printed
    )
    assert stats["executed"] == 5  # 3, then only the 2 new ones
    after = _made(folder)
    assert {k: after[k] for k in before} == before  # the first three untouched
    assert len(after) == 5 and report.order.state == "completed"
    assert [i.index for i in report.images] == [0, 1, 2, 3, 4]
    # The new slots follow the seed policy: the seeds a fresh order of 5 would have.
    fresh = single_order(tmp_path / "fresh", "grow", 5)
    assert [i.seed for i in report.images] == [s.seed for s in plan(load(fresh)).slots]


def test_count_down_drops_what_is_not_made_and_keeps_what_is(tmp_path: Path) -> None:
    order_file = single_order(tmp_path / "orders", "shrink", 4)
    out_root = tmp_path / "out"
    with running_simulator(sim_config(tmp_path, device_name=REAL_CARD)) as sim:
        settings = settings_for(sim.url, out_root)
        run_in_process(order_file, settings)
        folder = output_folder(order_file, out_root)
        made = _made(folder)
    _set_count(order_file, 2)
    # Everything it still wants is made: no server is needed (this one has stopped).
    report, printed = _run(order_file, settings)

    line = "order 'shrink': shrunk: 0 slot(s) not made are dropped; 2 made beyond the new count"
    assert line in printed
    assert _made(folder) == made  # nothing deleted
    assert len(report.images) == 4 and report.order.state == "completed"


def test_count_down_drops_planned_slots(tmp_path: Path) -> None:
    order_file = single_order(tmp_path / "orders", "cut", 2)
    out_root = tmp_path / "out"
    with running_simulator(sim_config(tmp_path)) as sim:
        settings = settings_for(sim.url, out_root)
        run_in_process(order_file, settings)
        folder = output_folder(order_file, out_root)
        # Grown to 4 and stopped before the new slots were made: they are recorded, planned.
        _set_count(order_file, 4)
        loaded = load(order_file)
        with Ledger.open(ledger_path(folder), "cut", pipeline.fingerprint(loaded)) as ledger:
            ledger.ensure_slots(plan_with(loaded, ledger.slots(), 4242).slots)
            assert ledger.counts().planned == 2
        _set_count(order_file, 3)
        report, printed = _run(order_file, settings)

    assert "order 'cut': shrunk: 1 slot(s) not made are dropped (3)" in printed
    assert [i.index for i in report.images] == [0, 1, 2]
    assert report.order.state == "completed"


# -- a new revision --------------------------------------------------------------------------


def test_an_edit_of_what_images_are_starts_a_new_revision(tmp_path: Path) -> None:
    order_file = single_order(tmp_path / "orders", "rev", 2)
    out_root = tmp_path / "out"
    with running_simulator(sim_config(tmp_path)) as sim:
        settings = settings_for(sim.url, out_root)
        first, _ = run_in_process(order_file, settings)
        folder = output_folder(order_file, out_root)
        r1 = _made(folder)
        order_file.write_text(
            order_file.read_text("utf-8").replace("a lighthouse", "a windmill"), "utf-8"
        )
        report, printed = _run(order_file, settings)
        again, printed_again = _run(order_file, settings)

    assert f"revision r1 (2 image(s) in {folder}) is kept, listed in the report" in printed
    assert "order 'rev': new revision r2 because prompt changed" in printed
    assert f"r2's images go to {folder / 'r2'}" in printed
    after = _made(folder)
    assert {k: after[k] for k in r1} == r1  # revision 1's images kept, untouched
    assert sorted(k for k in after if k.startswith("r2/")) == [f"r2/{k}" for k in sorted(r1)]
    assert report.revision == 2 and all("windmill" in i.prompt for i in report.images)
    assert [(r.revision, r.reason, r.folder, r.images) for r in report.revisions] == [
        (1, "prompt changed", ".", 2)
    ]
    archive = folder / report.revisions[0].archive
    assert read_report(archive / REPORT_FILE).images == first.images
    assert [s.files for s in read_slots(archive / "ledger.sqlite3")] == [
        (i.file,) for i in first.images
    ]
    assert "already complete" in printed_again and again.revision == 2
    row = order_row(order_file, settings)
    assert (row.state, row.revision, row.done) == ("completed", 2, 2)
    assert row.revisions == ("r1: 2 images in ., prompt changed",)


def test_a_crash_between_the_copy_and_the_switch_is_finished_by_the_next_run(
    tmp_path: Path,
) -> None:
    order_file = single_order(tmp_path / "orders", "half", 2)
    out_root = tmp_path / "out"
    with running_simulator(sim_config(tmp_path)) as sim:
        settings = settings_for(sim.url, out_root)
        run_in_process(order_file, settings)
        folder = output_folder(order_file, out_root)
        order_file.write_text(order_file.read_text("utf-8") + "negative: fog\n", "utf-8")
        with Ledger.open(ledger_path(folder), "half", None) as ledger:
            archive(ledger, folder)  # the state a kill -9 right after the copy leaves
        report, printed = _run(order_file, settings)

    assert "new revision r2 because negative changed" in printed
    assert report.revision == 2 and len(report.images) == 2
    assert len(_made(folder)) == 4


# -- re-roll ---------------------------------------------------------------------------------


def test_reroll_remakes_chosen_images_with_new_seeds_and_keeps_the_old(tmp_path: Path) -> None:
    order_file = single_order(tmp_path / "orders", "again", 3)
    out_root = tmp_path / "out"
    with running_simulator(sim_config(tmp_path)) as sim:
        settings = settings_for(sim.url, out_root)
        first, _ = run_in_process(order_file, settings)
        folder = output_folder(order_file, out_root)
        before = _made(folder)
        old = {i.index: i for i in first.images}
        with pytest.raises(ConfigError, match="no made image is called 'nope.png', '9'"):
            reroll_module.request_reroll(order_file, ["nope.png", "9"], settings=settings)
        buffer = io.StringIO()
        report = asyncio.run(
            reroll_module.reroll(
                order_file,
                ["1", old[2].file],
                settings=settings,
                console=Console(file=buffer, width=200),
            )
        )
        again = asyncio.run(
            reroll_module.reroll(order_file, [2], settings=settings, console=Console(file=buffer))
        )
    printed = " ".join(buffer.getvalue().split())

    new = {i.index: i for i in report.images}
    assert new[0] == old[0]  # untouched, its review and all
    for index in (1, 2):
        seed = reroll_module.reroll_seed(old[index].seed, 1)
        assert new[index].seed == seed and new[index].sha256 != old[index].sha256
        moved = f"rerolled/{Path(old[index].file).stem}.g1.png"
        assert _sha(folder / moved) == before[old[index].file]  # the old image, kept aside
        assert new[index].history[0]["files"] == [old[index].file]
        assert new[index].history[0]["moved_to"] == [moved]
        assert (new[index].history[0]["seed"], new[index].history[0]["new_seed"]) == (
            old[index].seed,
            seed,
        )
        assert f"re-roll slot {index} (generation 1): seed {old[index].seed} -> {seed}" in printed
    assert report.order.state == "completed"
    twice = {i.index: i for i in again.images}[2]
    assert twice.seed == reroll_module.reroll_seed(old[2].seed, 2)
    assert [h["generation"] for h in twice.history] == [1, 2]


def test_reroll_cli_says_what_it_does(tmp_path: Path) -> None:
    order_file = single_order(tmp_path / "orders", "cli", 2)
    out_root = tmp_path / "out"
    with running_simulator(sim_config(tmp_path)) as sim:
        run_in_process(order_file, settings_for(sim.url, out_root))
        args = ("--comfyui", sim.url, "--output-root", str(out_root))
        bad = comfyline("reroll", str(order_file), "7", *args)
        ok = comfyline("reroll", str(order_file), "0", *args)
    assert bad.returncode != 0 and "no made image is called '7'" in bad.stderr
    assert "Traceback" not in bad.stderr
    assert ok.returncode == 0, ok.stderr
    assert "re-roll slot 0 (generation 1)" in ok.stderr
    assert "order 'cli' completed: 2/2 prompts done" in ok.stderr


def test_a_requested_reroll_leaves_the_order_unfinished_until_it_runs(tmp_path: Path) -> None:
    """Between the request and the run that makes the new image, the order is not complete:
    status says so, with the command that makes it (what the dashboard's re-roll leaves when
    its run is yet to come)."""
    order_file = single_order(tmp_path / "orders", "pending", 2)
    out_root = tmp_path / "out"
    with running_simulator(sim_config(tmp_path)) as sim:
        settings = settings_for(sim.url, out_root)
        run_in_process(order_file, settings)
        reroll_module.request_reroll(order_file, [1], settings=settings)
        row = order_row(order_file, settings)
        assert row.state == "interrupted" and (row.done, row.total) == (1, 2)
        assert row.resume is not None and row.resume.startswith("comfyline run-order")
        report, _ = run_in_process(order_file, settings)
    assert report.order.state == "completed"


def test_a_reroll_recorded_but_not_moved_is_finished_by_the_next_run(tmp_path: Path) -> None:
    order_file = single_order(tmp_path / "orders", "midway", 2)
    out_root = tmp_path / "out"
    with running_simulator(sim_config(tmp_path)) as sim:
        settings = settings_for(sim.url, out_root)
        first, _ = run_in_process(order_file, settings)
        folder = output_folder(order_file, out_root)
        old = first.images[1]
        with Ledger.open(ledger_path(folder), "midway", None) as ledger:
            # The intent is recorded; a kill -9 came before the file moved.
            ledger.reopen(1, reason="reroll", moved_to=["rerolled/x.g1.png"], seed=77)
        report, _ = run_in_process(order_file, settings)

    assert _sha(folder / "rerolled/x.g1.png") == old.sha256
    assert {i.index: i.seed for i in report.images} == {0: first.images[0].seed, 1: 77}
    assert report.order.state == "completed"


# -- simulator and real runs never mix -------------------------------------------------------


def test_a_real_run_makes_again_what_the_simulator_made(tmp_path: Path) -> None:
    order_file = single_order(tmp_path / "orders", "mixed", 3)
    out_root = tmp_path / "out"
    with running_simulator(sim_config(tmp_path)) as sim:
        made, _ = run_in_process(order_file, settings_for(sim.url, out_root))
    folder = output_folder(order_file, out_root)
    simulated = _made(folder)
    assert all(i.simulated for i in made.images)
    real = sim_config(tmp_path, device_name=REAL_CARD, output_dir=tmp_path / "real-out")
    with running_simulator(real) as server:
        report, printed = _run(order_file, settings_for(server.url, out_root))
        stats = server.stats()

    assert (
        f"order 'mixed': 3 image(s) made by the simulator are moved to {folder / 'simulated'} "
        "and made again on the real server"
    ) in printed
    assert stats["executed"] == 3
    assert report.order.state == "completed" and not report.backend.simulated
    assert [i.simulated for i in report.images] == [False] * 3
    assert [i.history[0]["reason"] for i in report.images] == ["simulated"] * 3
    for name, sha in simulated.items():
        assert _sha(folder / "simulated" / name) == sha


def test_a_real_order_never_falls_back_to_the_simulator(tmp_path: Path) -> None:
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", 8188)) == 0:
            pytest.skip("something listens on the default ComfyUI port 8188")
    order_file = single_order(tmp_path / "orders", "solid", 2)
    out_root = tmp_path / "out"
    real = sim_config(tmp_path, device_name=REAL_CARD)
    with running_simulator(real) as server:
        run_in_process(order_file, settings_for(server.url, out_root))
    _set_count(order_file, 3)
    # No server named: the default URL, where nothing answers. A new order would fall back
    # to the simulator; this one has real images, so it stops and says how to resume.
    with pytest.raises(ComfyUnavailable) as info:
        run_in_process(order_file, Settings(output_root=out_root))
    message = str(info.value)
    assert f"Order 'solid' ran on a real ComfyUI ({server.url})" in message
    assert "does not fall back to the simulator. Start the server, then resume with: " in message
    assert f"comfyline run-order {order_file} --comfyui {server.url}" in message
    slots = read_slots(ledger_path(output_folder(order_file, out_root)))
    assert [s.state for s in slots] == [SlotState.DONE] * 2  # nothing simulated was added
