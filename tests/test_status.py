"""``comfyline status`` tells the truth a user needs: an order whose runner died says so and
gives the command that resumes it (with its server), and ``--json`` gives the same rows."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from comfyline.cli import app
from comfyline.status import STATES
from test_pipeline_support import (
    done_count,
    finish,
    sim_process,
    single_order,
    start_runner,
    wait_for,
)

ROOT = Path(__file__).resolve().parents[1]


def _status_json(orders: Path, out_root: Path) -> list[dict[str, object]]:
    result = CliRunner().invoke(
        app, ["status", str(orders), "--output-root", str(out_root), "--json"]
    )
    assert result.exit_code == 0, result.output
    rows: list[dict[str, object]] = json.loads(result.output)
    return rows


def test_a_killed_runner_shows_interrupted_with_the_resume_command(tmp_path: Path) -> None:
    orders = tmp_path / "orders"
    order_file = single_order(orders, "cats", 30)
    single_order(orders, "later", 2)
    out_root = tmp_path / "out"
    with sim_process(tmp_path, "--fixed-ms", "20") as url:
        runner = start_runner(order_file, url, out_root)
        wait_for(lambda: done_count(order_file, out_root) >= 2, "two images")
        rows = {row["order"]: row for row in _status_json(orders, out_root)}
        assert rows["cats"]["state"] == "running" and rows["cats"]["runner_pid"]
        runner.kill()
        finish(runner)
    rows = {row["order"]: row for row in _status_json(orders, out_root)}
    cats, later = rows["cats"], rows["later"]
    assert cats["state"] == "interrupted"
    assert cats["resume"] == f"comfyline run-order {order_file} --comfyui {url}"
    assert cats["servers"] == [url] and cats["elapsed_s"]
    assert 2 <= int(cats["done"]) < 30 and cats["total"] == 30  # type: ignore[call-overload]
    assert later["state"] == "new" and later["total"] == 2
    table = CliRunner().invoke(app, ["status", str(orders), "--output-root", str(out_root)])
    assert f"cats: interrupted; resume with: comfyline run-order {order_file}" in " ".join(
        table.output.split()
    )


def test_an_invalid_order_is_a_documented_state_with_its_problem(tmp_path: Path) -> None:
    orders = tmp_path / "orders"
    (orders / "broken").mkdir(parents=True)
    (orders / "broken" / "project.yaml").write_text(
        "id: broken\ntype: single\nprompt: a cat\ncount: 0\n"
    )
    (row,) = _status_json(orders, tmp_path / "out")
    assert row["state"] == "invalid" and "count" in str(row["problem"])
    doc = (ROOT / "docs" / "ORDER_CONTRACT.md").read_text("utf-8")
    for state in STATES:
        assert f"`{state}`" in doc, f"document the status state {state!r}"
