"""From a finished order to upload packages, through the public commands: quality checks in the
run, review decisions in the ledger, export (Lanczos on the CPU, or the upscale model on the
ComfyUI server) honouring them, and a rerun after a kill that gives the same package."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
from pathlib import Path

from PIL import Image
from typer.testing import CliRunner

from comfyline.cli import app
from comfyline.ledger import ledger_path, read_slots
from comfyline.sim import Faults, SimulatorHandle, running_simulator
from line_support import running_prompt
from test_pipeline_support import (
    ROOT,
    child_env,
    finish,
    output_folder,
    run_in_process,
    settings_for,
    sim_config,
    wait_for,
    write_order,
)

ORDER = """type: variations
title: Fresh fruit
quality: preview
count: 1
template: "a {fruit} on a {surface}, studio photo"
variables:
  fruit: [red apple, ripe pear]
  surface: [oak table, slate board]
seed: {mode: fixed, base: 42}
qc: {duplicate_distance: null}
sale:
  title: "{fruit} on a {surface}"
  keywords: [fruit, food, fresh]
  description: Fresh fruit on a wooden table, a bright studio photo for stock.
  review: required
  markets: [adobe, dreamstime, 123rf]
"""


def _made(tmp_path: Path, body: str = ORDER) -> tuple[Path, Path]:
    order_file = write_order(tmp_path / "orders", "fruit", body)
    out_root = tmp_path / "out"
    with running_simulator(sim_config(tmp_path)) as sim:
        report, _ = run_in_process(order_file, settings_for(sim.url, out_root))
    assert report.totals.succeeded == 4
    return order_file, out_root


def _cli(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def test_review_then_export_sells_only_the_approved_images(tmp_path: Path) -> None:
    order_file, out_root = _made(tmp_path)
    folder = output_folder(order_file, out_root)
    report = json.loads((folder / "generation_report.json").read_text())
    assert all(image["qc_flags"] == [] for image in report["images"])  # synthetic but fine
    assert report["images"][0]["title"] == "red apple on a oak table"
    root = ["--output-root", str(out_root)]
    _cli("review", str(order_file), *root, "--approve", "0,1,2", "--reject", "3")
    _cli("review", str(order_file), *root, "--undo", "2")
    decisions = {s.index: s.review for s in read_slots(ledger_path(folder))}
    assert decisions == {0: "approved", 1: "approved", 2: None, 3: "rejected"}

    printed = _cli("export", str(order_file), *root)
    assert "left out: 1 rejected" in printed and "left out: 1 not approved" in printed
    for market, header in [
        ("adobe", "Filename,Title,Keywords,Category,Releases"),
        ("dreamstime", "Filename,Image Name,Description,Category 1"),
        ("123rf", '"oldfilename","123rf_filename","description","keywords","country"'),
    ]:
        package = folder / "export" / market
        text = (package / f"{market}.csv").read_text("utf-8")
        assert text.splitlines()[0].startswith(header)
        jpegs = sorted(p.name for p in package.glob("*.jpg"))
        assert len(jpegs) == 2, jpegs  # the two approved images only
        with Image.open(package / jpegs[0]) as jpeg:
            assert jpeg.width * jpeg.height >= 6_000_000  # 123rf's AI minimum, the strictest
            xmp = jpeg.getxmp()
        assert "trainedAlgorithmicMedia" in json.dumps(xmp)
    with (folder / "export/adobe/adobe.csv").open(encoding="utf-8", newline="") as file:
        rows = list(csv.DictReader(file))
    assert rows[0]["Title"] == "red apple on a oak table"
    assert rows[0]["Keywords"].split(",")[:2] == ["red apple", "oak table"]


def test_export_refuses_a_market_that_refuses_ai_images(tmp_path: Path) -> None:
    order_file, out_root = _made(tmp_path)
    result = CliRunner().invoke(
        app,
        ["export", str(order_file), "--output-root", str(out_root), "--market", "shutterstock"],
    )
    assert result.exit_code != 0
    assert "does not accept AI-generated images" in str(result.exception or result.output)


def test_upscale_on_the_server_then_package(tmp_path: Path) -> None:
    body = ORDER.replace("  review: required\n", "  upscale: {model: 4x-sim.pth}\n")
    order_file, out_root = _made(tmp_path, body)
    folder = output_folder(order_file, out_root)
    with running_simulator(sim_config(tmp_path, upscale_models=("4x-sim.pth",))) as sim:
        printed = _cli(
            "export", str(order_file), "--output-root", str(out_root), "--comfyui", sim.url
        )
        executed = sim.stats()["executed"]
    assert "Lanczos" not in printed
    assert executed == 4  # one upscale prompt per image
    upscaled = sorted((folder / "upscaled").glob("*.png"))
    assert len(upscaled) == 4
    with Image.open(upscaled[0]) as image:
        assert image.width * image.height >= 6_000_000
    assert len(list((folder / "export" / "adobe").glob("*.jpg"))) == 4


def test_kill_during_export_then_rerun_gives_the_same_package(tmp_path: Path) -> None:
    order_file, out_root = _made(tmp_path, ORDER.replace("  review: required\n", ""))
    folder = output_folder(order_file, out_root)
    command = [sys.executable, "-m", "comfyline", "export", str(order_file)]
    command += ["--output-root", str(out_root)]
    proc = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=child_env(),
        cwd=ROOT,
    )
    wait_for(
        lambda: any((folder / "export").rglob("*.jpg")) or proc.poll() is not None,
        "the first JPEG",
    )
    proc.send_signal(signal.SIGKILL)
    finish(proc)
    _cli("export", str(order_file), "--output-root", str(out_root))
    first = {p.relative_to(folder): p.read_bytes() for p in (folder / "export").rglob("*.jpg")}
    _cli("export", str(order_file), "--output-root", str(out_root))
    again = {p.relative_to(folder): p.read_bytes() for p in (folder / "export").rglob("*.jpg")}
    assert first == again and len(first) == 3 * 4
    leftovers = [p for p in (folder / "export").rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []


def _held_upscale(sim: SimulatorHandle) -> str | None:
    """The prompt id of the upscale prompt the simulator holds (its 3rd), once it runs."""
    now: tuple[int, str] | None = sim.call(running_prompt)
    return now[1] if now is not None and now[0] == 3 else None


def test_kill_during_the_upscale_on_comfyui_then_rerun_gives_the_same_package(
    tmp_path: Path,
) -> None:
    """kill -9 while the server upscales the 3rd image (held there, so the moment is certain):
    the two upscales made are kept whole, the rerun upscales only the other two, and the
    package is the one an export without the kill gives, with no half file."""
    body = ORDER.replace("  review: required\n", "  upscale: {model: 4x-sim.pth}\n")
    order_file, out_root = _made(tmp_path, body)
    folder = output_folder(order_file, out_root)
    faults = Faults(stuck_on_prompts=(3,))
    config = sim_config(tmp_path, upscale_models=("4x-sim.pth",), faults=faults)
    with running_simulator(config) as sim:
        command = [sys.executable, "-m", "comfyline", "export", str(order_file)]
        command += ["--output-root", str(out_root), "--comfyui", sim.url]
        proc = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=child_env(),
            cwd=ROOT,
        )
        held = wait_for(lambda: _held_upscale(sim), "the 3rd upscale to be held", timeout_s=120)
        wait_for(lambda: len(list((folder / "upscaled").glob("*.png"))) == 2, "two upscales")
        proc.send_signal(signal.SIGKILL)
        finish(proc)
        for path in (folder / "upscaled").iterdir():  # what the kill left is whole, or a temp
            if not path.name.endswith(".tmp"):
                with Image.open(path) as image:
                    image.load()
        sim.call(lambda s: s.interrupt(held))  # the dead export's prompt, let go
        before = sim.stats()["executed"]
        _cli("export", str(order_file), "--output-root", str(out_root), "--comfyui", sim.url)
        after = sim.stats()["executed"]
    assert len(list((folder / "upscaled").glob("*.png"))) == 4
    # The rerun upscaled what was missing (two), plus at most the dead export's queued one.
    assert 2 <= after - before <= 3
    first = {p.relative_to(folder): p.read_bytes() for p in (folder / "export").rglob("*.jpg")}
    _cli("export", str(order_file), "--output-root", str(out_root))  # reuses the upscales
    again = {p.relative_to(folder): p.read_bytes() for p in (folder / "export").rglob("*.jpg")}
    assert first == again and len(first) == 3 * 4
    assert [p for p in folder.rglob("*") if p.name.endswith(".tmp")] == []
