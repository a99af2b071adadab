"""`comfyline validate` as the user runs it: output, exit status, and the real entry point."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from comfyline.cli import app

ROOT = Path(__file__).parent.parent
BAD = ROOT / "tests" / "data" / "bad_orders"


def test_valid_orders_are_listed_and_exit_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)

    examples = ["list-csv", "list-inline", "portraits", "single-lighthouse", "variations-fruit"]

    result = CliRunner().invoke(app, ["validate", *(f"automation/orders/{e}" for e in examples)])

    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    assert result.stdout.splitlines() == [
        "ok: automation/orders/list-csv/project.yaml (list, 6 images, level preview)",
        "ok: automation/orders/list-inline/project.yaml (list, 3 images, level preview)",
        "ok: automation/orders/portraits/project.yaml (variations, 4 images, level standard)",
        "ok: automation/orders/single-lighthouse/project.yaml (single, 4 images, level standard)",
        "ok: automation/orders/variations-fruit/project.yaml (variations, 6 images, level preview)",
    ]


def test_one_bad_order_among_good_ones_fails_the_run(tmp_path: Path) -> None:
    good = ROOT / "automation" / "orders" / "single-lighthouse" / "project.yaml"
    bad = BAD / "count-zero" / "project.yaml"

    result = CliRunner().invoke(app, ["validate", str(good), str(bad)])

    assert result.exit_code == 2
    assert result.stdout == f"ok: {good} (single, 4 images, level standard)\n"
    assert result.stderr.splitlines() == [
        f"{bad}:4:8: count: must be at least 1, got 0",
        "1 problem(s) in 1 order(s)",
    ]


def _comfyline(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "comfyline", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
    )


def test_the_installed_command_exits_2_without_a_traceback() -> None:
    good = "automation/orders/single-lighthouse"
    result = _comfyline("validate", "tests/data/bad_orders/yaml-bomb", good)

    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith(
        "tests/data/bad_orders/yaml-bomb/project.yaml:4:8: YAML syntax error: aliases (*a) are "
        "not allowed"
    )
    assert result.stdout == f"ok: {good}/project.yaml (single, 4 images, level standard)\n"


def test_a_usage_error_is_a_message_not_a_traceback() -> None:
    result = _comfyline("validate")

    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "Missing argument" in result.stderr
