"""The runner's commands as the user runs them: ``comfyline status`` for a finished and a
partial order, ``comfyline validate --comfyui`` against a server that lacks a custom node, and
``comfyline run-order`` on an invalid order."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

from comfyline.sim import Faults, running_simulator
from test_pipeline_support import (
    ROOT,
    comfyline,
    finish,
    output_folder,
    run_in_process,
    settings_for,
    sim_config,
    single_order,
    start_runner,
    the_plan,
    write_order,
)

BAD_ORDERS = ROOT / "tests" / "data" / "bad_orders"
WORKFLOWS = ROOT / "tests" / "data" / "workflows"


def status_rows(*args: str) -> dict[str, list[str]]:
    """``comfyline status ARGS``: its table's rows by order id (cells stripped)."""
    done = comfyline("status", *args)
    assert done.returncode == 0, done.stderr
    rows: dict[str, list[str]] = {}
    for line in done.stdout.splitlines():
        cells = [cell.strip() for cell in line.strip().split("│")[1:-1]]
        if len(cells) >= 5 and cells[0] and cells[0] != "order":
            rows[cells[0]] = cells
    return rows


def closed_port_url() -> str:
    """A URL where nothing listens."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def test_status_shows_a_finished_a_partial_and_a_new_order(tmp_path: Path) -> None:
    orders = tmp_path / "orders"
    out_root = tmp_path / "out"
    finished = single_order(orders, "finished", 3)
    partial = single_order(orders, "partial", 3, seed_base=77)
    single_order(orders, "untouched", 2)
    bad_seed = the_plan(partial).slots[0].seed
    with running_simulator(sim_config(tmp_path, faults=Faults(error_on_seeds=(bad_seed,)))) as sim:
        run_in_process(finished, settings_for(sim.url, out_root))
        code, printed = finish(start_runner(partial, sim.url, out_root))
    assert code == 1, printed

    rows = status_rows(str(orders), "--output-root", str(out_root))

    # order, state, done, failed, total, runner
    assert rows["finished"][:5] == ["finished", "completed", "3", "0", "3"]
    assert rows["partial"][:5] == ["partial", "partial", "2", "1", "3"]
    assert rows["untouched"][:3] == ["untouched", "new", "0"]


def test_validate_against_the_server_reports_a_missing_custom_node(tmp_path: Path) -> None:
    order_file = single_order(tmp_path / "orders", "faces", 2, workflow="face_detailer.json")
    shutil.copy(WORKFLOWS / "face_detailer.json", order_file.parent / "face_detailer.json")
    with running_simulator(sim_config(tmp_path)) as sim:
        done = comfyline("validate", str(order_file), "--comfyui", sim.url)
        started = sim.stats()["started"]

    assert done.returncode == 2, done.stdout + done.stderr
    assert "FaceDetailer" in done.stderr
    assert "not installed" in done.stderr
    assert "Traceback" not in done.stderr
    assert started == 0  # nothing generated


def test_validate_against_the_server_accepts_an_order_that_fits(tmp_path: Path) -> None:
    order_file = single_order(tmp_path / "orders", "fits", 2)
    with running_simulator(sim_config(tmp_path)) as sim:
        done = comfyline("validate", str(order_file), "--comfyui", sim.url)
        started = sim.stats()["started"]

    assert done.returncode == 0, done.stderr
    assert f"fits the ComfyUI server at {sim.url}" in done.stdout
    assert started == 0


def test_run_order_on_an_invalid_order_exits_2_with_the_place_and_writes_nothing(
    tmp_path: Path,
) -> None:
    order_dir = tmp_path / "orders" / "many-problems"
    shutil.copytree(BAD_ORDERS / "many-problems", order_dir)
    out_root = tmp_path / "out"
    expected = (order_dir / "expected.txt").read_text(encoding="utf-8").splitlines()

    # No server answers either: the order is checked before anything is contacted.
    done = comfyline(
        "run-order",
        str(order_dir / "project.yaml"),
        "--comfyui",
        closed_port_url(),
        "--output-root",
        str(out_root),
    )

    assert done.returncode == 2, done.stdout + done.stderr
    assert "OrderError" in done.stderr
    assert "Traceback" not in done.stderr
    for line in expected:
        assert f"{order_dir}/{line}" in done.stderr
    assert not out_root.exists()


def test_run_order_on_a_valid_order_whose_server_is_down_exits_1(tmp_path: Path) -> None:
    order_file = write_order(tmp_path / "orders", "down", "type: single\nprompt: a cat\n")
    out_root = tmp_path / "out"

    done = comfyline(
        "run-order", str(order_file), "--comfyui", closed_port_url(), "--output-root", str(out_root)
    )

    assert done.returncode == 1
    assert "ComfyUnavailable" in done.stderr
    assert "Traceback" not in done.stderr
    assert not output_folder(order_file, out_root).exists()
