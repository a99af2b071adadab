"""``comfyline line --watch`` as a user runs it: orders dropped into the folder while it runs
are made by priority; ``kill -9`` mid-order and a restart make both exactly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

from comfyline.sim import Faults, running_simulator
from line_support import ledger_events, running_execution
from test_line_queue import event_times
from test_pipeline_support import (
    ROOT,
    check_finished,
    child_env,
    finish,
    sim_config,
    single_order,
    status_of,
    wait_for,
)


def start_line(orders: Path, url: str, out: Path) -> subprocess.Popen[str]:
    env = child_env()
    env["COMFYLINE_LINE_POLL_S"] = "0.1"
    return subprocess.Popen(
        [sys.executable, "-m", "comfyline", "line", str(orders), "--watch"]
        + ["--comfyui", url, "--output-root", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=ROOT,
    )


def drop(staging: Path, orders: Path, order_id: str) -> Path:
    """Move a finished order folder into the watched folder at once (as a user drops it)."""
    os.replace(staging / order_id, orders / order_id)
    return orders / order_id / "project.yaml"


def completed(order_file: Path, out: Path) -> bool:
    status = status_of(order_file, out)
    return status is not None and status.order.state.value == "completed"


def test_watch_takes_new_orders_by_priority_and_survives_kill_9(tmp_path: Path) -> None:
    orders, staging, out = tmp_path / "orders", tmp_path / "staging", tmp_path / "out"
    orders.mkdir()
    single_order(staging, "high", 10, priority=5)
    single_order(staging, "low", 10, priority=1)
    # The fifth prompt hangs: the line is certainly mid-order when it is killed.
    config = sim_config(tmp_path, fixed_prompt_s=0.05, faults=Faults(stuck_on_prompts=(5,)))
    with running_simulator(config) as sim:
        line = start_line(orders, sim.url, out)
        try:
            high = drop(staging, orders, "high")
            low = drop(staging, orders, "low")
            wait_for(lambda: sim.call(running_execution) == 5, "the 5th prompt", timeout_s=60)
            line.send_signal(signal.SIGKILL)
            code, printed = finish(line)
            assert code == -signal.SIGKILL
            assert not completed(high, out)

            line = start_line(orders, sim.url, out)
            wait_for(
                lambda: completed(high, out) and completed(low, out),
                "both orders to complete after the restart",
                timeout_s=90,
            )
        finally:
            line.send_signal(signal.SIGINT)
            code, printed = finish(line)
    assert code in (0, 130), printed

    for order_file, count in ((high, 10), (low, 10)):
        check_finished(order_file, out)
        done = Counter(e["index"] for e in ledger_events(order_file, out, "done"))
        assert done == Counter(range(count))  # each image made once, across the kill
    # High first: it completed before low did.
    (high_end,) = event_times(high, out, "order.completed")
    (low_end,) = event_times(low, out, "order.completed")
    assert high_end < low_end
