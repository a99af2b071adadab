"""The smoke test end to end: the CLI command, the user's script, the simulator fallback, the
report, and the guard against clearing a folder that holds someone else's files."""

from __future__ import annotations

import io
import json
import socket
import subprocess
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from comfyline.cli import app
from comfyline.errors import ConfigError
from comfyline.settings import Settings
from comfyline.sim import SimulatorHandle, ThermalConfig
from comfyline.smoke import REPORT_NAME, SmokeOptions, clear_previous_run, run_smoke_test

ROOT = Path(__file__).resolve().parents[1]
MakeSim = Callable[..., AbstractContextManager[SimulatorHandle]]


def _console() -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    return Console(file=buffer, width=400, highlight=False), buffer


def _closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def test_cli_smoke_test_on_the_simulator_writes_10_images_and_a_report(tmp_path: Path) -> None:
    out = tmp_path / "sd" / "outputs" / "test"
    out.mkdir(parents=True)
    (out / "wedding_001.png").write_bytes(b"a user's own image: never ours to delete")
    args = ["smoke-test", "--sim", "--pause", "0", "--out", str(out), "--seed", "5"]
    for _ in range(2):  # the second run replaces the first run's files, and only those
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
    assert "built-in simulator" in result.output and "Smoke test" in result.output
    pngs = sorted(p.name for p in out.glob("smoke_*.png"))
    assert pngs == [f"smoke_{i:02d}.png" for i in range(1, 11)]
    assert (out / "wedding_001.png").read_bytes().startswith(b"a user's own image")
    made = {*pngs, REPORT_NAME, "generation_report.json", "contact_sheet.png", "run_chart.png"}
    assert sorted(p.name for p in out.iterdir()) == sorted(
        {*made, "wedding_001.png", ".comfyline"}
    )  # no temp files
    report = json.loads((out / REPORT_NAME).read_text())
    assert (report["requested"], report["succeeded"], report["failed"]) == (10, 10, 0)
    assert report["simulated"] is True and report["level"] == "standard"
    assert [image["seed"] for image in report["images"]] == list(range(5, 15))
    assert all(image["file"] == f"smoke_{i:02d}.png" for i, image in enumerate(report["images"], 1))
    assert report["total_s"] > 0 and report["mean_s_per_image"] > 0
    assert report["gpu_temp_max_c"] is not None and report["vram_total_bytes"] > 0


def test_failed_image_makes_the_exit_status_non_zero(make_sim: MakeSim, tmp_path: Path) -> None:
    out = tmp_path / "out"
    with make_sim() as sim:
        sim.set_faults(error_on_seeds=[101])  # slot 2 fails, and fails again when retried
        args = ["smoke-test", "--comfyui", sim.url, "--count", "3", "--pause", "0", "--seed", "100"]
        result = CliRunner().invoke(app, [*args, "--out", str(out)])
    assert result.exit_code == 1, result.output
    report = json.loads((out / REPORT_NAME).read_text())
    assert (report["succeeded"], report["failed"]) == (2, 1)
    assert (
        report["images"][1]["ok"] is False and "ExecutionFailed" not in report["images"][1]["error"]
    )
    assert sorted(p.name for p in out.glob("smoke_*.png")) == ["smoke_01.png", "smoke_03.png"]


async def test_falls_back_to_the_simulator_when_nothing_answers(tmp_path: Path) -> None:
    url = _closed_port_url()
    console, buffer = _console()
    options = SmokeOptions(count=2, pause_s=0, out_dir=tmp_path / "out", sim_if_unreachable=True)
    report = await run_smoke_test(Settings(comfyui_url=url), options, console=console)
    lines = buffer.getvalue().splitlines()
    assert report.simulated and report.succeeded == 2
    assert lines[0] == (
        f"No ComfyUI answered at {url}; running on the built-in simulator (images are synthetic)."
    )


@pytest.mark.parametrize("entry", ["module", "script"])
def test_a_named_url_that_does_not_answer_is_a_one_line_error(entry: str, tmp_path: Path) -> None:
    url = _closed_port_url()
    command = (
        [sys.executable, "-m", "comfyline"]
        if entry == "module"
        else [sys.executable, str(ROOT / "scripts" / "smoke_test.py")]
    )
    if entry == "module":
        command.append("smoke-test")
    out = tmp_path / "out"
    done = subprocess.run(
        [*command, "--comfyui", url, "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("ComfyUnavailable: nothing answers at " + url)
    assert not out.exists()


def test_refuses_an_orders_output_folder_and_deletes_nothing(tmp_path: Path) -> None:
    from comfyline.ledger import Ledger, ledger_path

    Ledger.open(ledger_path(tmp_path), "cats", "fp").close()  # an order ran here
    (tmp_path / "cat_01.png").write_bytes(b"x")
    with pytest.raises(ConfigError, match=r"output folder of an order.*--out"):
        clear_previous_run(tmp_path)
    assert (tmp_path / "cat_01.png").exists()


async def test_the_guard_paces_the_smoke_test_by_the_cards_temperature(
    make_sim: MakeSim, tmp_path: Path
) -> None:
    # The user's card (the simulator's fit): 1.54 s of work per standard image, 2x faster (a
    # reading late on a busy machine counts 1/time_scale times over: see test_guard_thermal).
    work_s, steps, pixels = 1.54, 8, 320 * 320 / 512**2
    console, _ = _console()
    out = tmp_path / "out"
    with make_sim(step_s=work_s / steps / pixels, time_scale=0.5, thermal=ThermalConfig()) as sim:
        options = SmokeOptions(count=4, pause_s=0, out_dir=out, seed=1)
        report = await run_smoke_test(Settings(comfyui_url=sim.url), options, console=console)
        assert sim.stats()["blackouts"] == 0
    assert report.succeeded == 4
    assert "paced by the card's temperature" in report.notes and not report.paused
    # Without a pause, the 3rd image in a row would pass 78 °C (4th: 85) on an idle machine;
    # how often the guard had to hold depends on how busy this one is (a slow machine gives the
    # card time to cool), so the promise tested is the ceiling, below, not the number of holds.
    assert report.gpu_temp_max_c is not None and report.gpu_temp_max_c <= 78.0


async def test_without_a_sensor_the_pause_follows_each_image(
    make_sim: MakeSim, tmp_path: Path
) -> None:
    console, buffer = _console()
    with make_sim() as sim:  # no thermal model: no temperature anywhere
        options = SmokeOptions(count=3, pause_s=0.3, out_dir=tmp_path / "out")
        settings = Settings(comfyui_url=sim.url, sensor="comfyui")
        report = await run_smoke_test(settings, options, console=console)
        gaps = sim.stats()["gaps_s"]
    lines = buffer.getvalue().splitlines()
    assert report.succeeded == 3 and report.gpu_temp_max_c is None
    assert "no temperature sensor: a fixed pause of 0.3 s after each image" in report.notes
    assert len(gaps) == 2 and min(gaps) >= 0.3  # one prompt at a time, then the pause
    assert sum("fixed pause of 0.3 s" in line for line in lines) == 1  # said once
