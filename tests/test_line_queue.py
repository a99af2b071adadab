"""``comfyline line`` in-process: orders by priority then age, time windows (waiting for one,
and stopping cleanly when one closes), several orders sharing a server."""

from __future__ import annotations

import asyncio
import io
import os
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

from rich.console import Console

from comfyline.ledger import read_status
from comfyline.line import Line
from comfyline.sim import Faults, running_simulator
from line_support import foreign_prompt, interrupt, ledger_events
from test_pipeline_support import (
    check_finished,
    settings_for,
    sim_config,
    single_order,
    wait_for,
)

NOON = datetime(2026, 3, 1, 12, 0)
NIGHT = datetime(2026, 3, 1, 23, 0)


def line_for(orders: Path, url: str, out: Path, **settings: Any) -> Line:
    settings.setdefault("line_poll_s", 0.05)
    console = Console(file=io.StringIO(), width=200, force_terminal=False)
    return Line(orders, settings_for(url, out, **settings), console=console)


def said(line: Line) -> str:
    out = line.console.file
    assert isinstance(out, io.StringIO)
    return out.getvalue()


def event_times(order_file: Path, out: Path, kind: str) -> list[float]:
    import sqlite3

    from test_pipeline_support import output_folder

    db = output_folder(order_file, out) / ".comfyline" / "ledger.sqlite3"
    with sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True) as conn:
        rows = conn.execute("SELECT at FROM event WHERE kind = ? ORDER BY id", (kind,))
        return [row[0] for row in rows]


async def test_orders_run_by_priority_then_age(tmp_path: Path) -> None:
    orders, out = tmp_path / "orders", tmp_path / "out"
    old = single_order(orders, "old-low", 3)
    new_high = single_order(orders, "new-high", 3, priority=5)
    newest_low = single_order(orders, "newest-low", 3)
    for age, path in enumerate([old, new_high, newest_low]):
        os.utime(path, (1_700_000_000 + age, 1_700_000_000 + age))
    with running_simulator(sim_config(tmp_path, fixed_prompt_s=0.005)) as sim:
        line = line_for(orders, sim.url, out, line_max_orders=1)
        outcomes = await line.run()

    assert [o.order for o in outcomes] == ["new-high", "old-low", "newest-low"]
    assert all(o.state == "completed" for o in outcomes)
    for path in (old, new_high, newest_low):
        check_finished(path, out)


async def test_an_order_waits_for_its_window(tmp_path: Path) -> None:
    orders, out = tmp_path / "orders", tmp_path / "out"
    day = single_order(orders, "day", 3)
    night = single_order(orders, "night", 3, schedule={"after": "22:00", "before": "07:00"})
    with running_simulator(sim_config(tmp_path, fixed_prompt_s=0.005)) as sim:
        line = line_for(orders, sim.url, out)
        # Noon until the day order is done; then the night comes.
        line.now = lambda: NIGHT if line.outcomes else NOON
        outcomes = await line.run()

    assert [(o.order, o.state) for o in outcomes] == [("day", "completed"), ("night", "completed")]
    (day_done,) = event_times(day, out, "order.completed")
    assert min(event_times(night, out, "run.start")) >= day_done
    check_finished(night, out)


async def test_a_closing_window_stops_the_order_cleanly_and_it_resumes(tmp_path: Path) -> None:
    orders, out = tmp_path / "orders", tmp_path / "out"
    evening = single_order(orders, "evening", 8, schedule={"after": "18:00", "before": "23:00"})
    db = out / "evening" / ".comfyline" / "ledger.sqlite3"
    phase = {"now": 0}

    def now() -> datetime:
        # In the window until three images are done (the fourth hangs on the server), then
        # past its end until the line has stopped the order, then in the window again.
        status = read_status(db) if db.exists() else None
        if phase["now"] == 0 and status is not None and status.counts.done >= 3:
            phase["now"] = 1
        if phase["now"] == 1 and status is not None and status.order.state.value == "cancelled":
            phase["now"] = 2
        return datetime(2026, 3, 1, 23, 30) if phase["now"] == 1 else datetime(2026, 3, 1, 20)

    faults = Faults(stuck_on_prompts=(4,))
    patient = {"first_prompt_timeout_s": 60.0, "min_prompt_timeout_s": 60.0}
    with running_simulator(sim_config(tmp_path, fixed_prompt_s=0.005, faults=faults)) as sim:
        line = line_for(orders, sim.url, out, **patient)
        line.now = now
        outcomes = await line.run()
        stats = sim.stats()

    assert [(o.order, o.state) for o in outcomes] == [("evening", "completed")]
    assert "its window closed" in said(line)
    assert stats["interrupted"] == 1  # the hung prompt, taken off the server when it stopped
    assert len(ledger_events(evening, out, "order.cancelled")) == 1
    check_finished(evening, out)


async def test_orders_of_equal_priority_share_one_server(tmp_path: Path) -> None:
    orders, out = tmp_path / "orders", tmp_path / "out"
    first = single_order(orders, "first", 8)
    second = single_order(orders, "second", 8)
    config = sim_config(tmp_path, fixed_prompt_s=0.02, faults=Faults(stuck_on_prompts=(1,)))
    with running_simulator(config) as sim:
        # Another client's prompt holds the server until both orders wait for it: then the
        # server's places go to each order in turn.
        blocker = foreign_prompt(sim.url)
        line = line_for(orders, sim.url, out)
        task = asyncio.create_task(line.run())
        for order_file in (first, second):
            running = partial(ledger_events, order_file, out, "order.running")
            await asyncio.to_thread(wait_for, running, f"{order_file.parent.name} to run")
        interrupt(sim.url, blocker)
        outcomes = await task

    assert sorted(o.state for o in outcomes) == ["completed", "completed"]
    # Both ran together: each had images done before the other completed.
    done_first = event_times(first, out, "done")
    done_second = event_times(second, out, "done")
    assert min(done_second) < max(done_first) and min(done_first) < max(done_second)
    check_finished(first, out)
    check_finished(second, out)


async def test_an_invalid_order_is_skipped_and_said(tmp_path: Path) -> None:
    orders, out = tmp_path / "orders", tmp_path / "out"
    good = single_order(orders, "good", 2)
    (orders / "bad").mkdir()
    (orders / "bad" / "project.yaml").write_text("id: bad\ntype: single\ncount: zero\n")
    with running_simulator(sim_config(tmp_path, fixed_prompt_s=0.005)) as sim:
        line = line_for(orders, sim.url, out)
        outcomes = await line.run()

    assert [o.order for o in outcomes] == ["good"]
    assert "invalid, skipped until it changes" in said(line) and "count" in said(line)
    check_finished(good, out)
