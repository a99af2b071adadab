"""``kill -9`` with extend and re-roll in the mix: a runner killed while it makes a grown order's
new slots and re-rolled images, or a re-roll killed at any moment, is finished by the next
``run-order``: every image is made once, the re-rolled ones with their new seeds, every old
image kept (in place or in ``rerolled/``), nothing left half-written.
"""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
import sys
import time
from pathlib import Path

from comfyline.ledger import SlotState, ledger_path, read_slots
from comfyline.reroll import reroll_seed
from comfyline.sim import Faults, running_simulator
from test_pipeline_support import (
    ROOT,
    child_env,
    finish,
    output_folder,
    run_in_process,
    server_queue,
    settings_for,
    sim_config,
    single_order,
    temp_files,
    wait_for,
)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _set_count(order_file: Path, count: int) -> None:
    text = order_file.read_text("utf-8")
    lines = [f"count: {count}" if line.startswith("count:") else line for line in text.split("\n")]
    order_file.write_text("\n".join(lines), encoding="utf-8")


def _start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "comfyline", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=child_env(),
        cwd=ROOT,
    )


def _kept_everywhere(folder: Path, images: dict[str, str]) -> None:
    """Each image of ``images`` (file: sha256) is in its place or in ``rerolled/``."""
    here = {_sha(p) for p in folder.rglob("*.png")}
    lost = [file for file, sha in images.items() if sha not in here]
    assert not lost, f"images lost: {lost}"


def test_kill_during_a_grown_and_rerolled_run_then_resume(tmp_path: Path) -> None:
    order_file = single_order(tmp_path / "orders", "mend", 3)
    out_root = tmp_path / "out"
    # Executions 1-3 make the order; the 4th (the first prompt of the re-roll's run) hangs
    # until the resume takes it off the server, so the kill lands while it is in flight.
    config = sim_config(tmp_path, faults=Faults(stuck_on_prompts=(4,)))
    with running_simulator(config) as sim:
        settings = settings_for(sim.url, out_root)
        first, _ = run_in_process(order_file, settings)
        folder = output_folder(order_file, out_root)
        old = {i.index: i for i in first.images}
        _set_count(order_file, 4)  # grown by one, re-rolled slot 1, in the same run
        args = ("--comfyui", sim.url, "--output-root", str(out_root))
        runner = _start("reroll", str(order_file), "1", *args)
        db = ledger_path(folder)
        wait_for(
            lambda: (
                server_queue(sim.url)
                and any(s.state is SlotState.SUBMITTED for s in read_slots(db))
            ),
            "the re-roll's first prompt on the server",
        )
        runner.kill()
        code, text = finish(runner)
        assert code != 0
        # The re-roll's intent and move are done before anything is sent.
        moved = folder / f"rerolled/{Path(old[1].file).stem}.g1.png"
        assert _sha(moved) == old[1].sha256, text
        report, _ = run_in_process(order_file, settings)

    images = {i.index: i for i in report.images}
    assert sorted(images) == [0, 1, 2, 3] and report.order.state == "completed"
    assert images[0] == old[0] and images[2] == old[2]
    assert images[1].seed == reroll_seed(old[1].seed, 1)
    assert images[1].history[0]["moved_to"] == [moved.relative_to(folder).as_posix()]
    for image in images.values():
        assert _sha(folder / image.file) == image.sha256
    assert _sha(moved) == old[1].sha256
    assert temp_files(folder) == []


def test_a_reroll_killed_at_any_moment_is_finished_by_run_order(tmp_path: Path) -> None:
    raw = os.environ.get("KILL_TEST_SEED")
    seed = int(raw) if raw else random.randrange(2**32)
    print(f"kill test seed: {seed} (replay with KILL_TEST_SEED={seed})")
    rng = random.Random(seed)
    order_file = single_order(tmp_path / "orders", "anytime", 4)
    out_root = tmp_path / "out"
    with running_simulator(sim_config(tmp_path, fixed_prompt_s=0.02)) as sim:
        settings = settings_for(sim.url, out_root)
        first, _ = run_in_process(order_file, settings)
        folder = output_folder(order_file, out_root)
        every = {i.file: i.sha256 for i in first.images}
        args = ("--comfyui", sim.url, "--output-root", str(out_root))
        for round_ in range(3):
            runner = _start("reroll", str(order_file), str(round_), str(round_ + 1), *args)
            # Anywhere: while it starts, records the intent, moves the files or runs.
            time.sleep(rng.uniform(0.0, 2.5))
            runner.kill()
            finish(runner)
            _kept_everywhere(folder, every)
            report, printed = run_in_process(order_file, settings)
            assert report.order.state == "completed", printed
            for image in report.images:
                assert _sha(folder / image.file) == image.sha256
                every[f"{image.file}#{image.seed}"] = image.sha256
            _kept_everywhere(folder, every)
        slots = read_slots(ledger_path(folder))

    assert temp_files(folder) == []
    for slot in slots:
        assert slot.state is SlotState.DONE
        # Each re-roll recorded is a generation with its derived seed and its old file aside.
        first_seed = slot.history[0]["seed"] if slot.history else slot.seed
        for entry in slot.history:
            assert entry["new_seed"] == reroll_seed(first_seed, entry["generation"])
            for file, sha in zip(entry["moved_to"], entry["sha256s"], strict=True):
                assert _sha(folder / file) == sha
