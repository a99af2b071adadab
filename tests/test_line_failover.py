"""One order on several servers: shared queue, a server left out for lacking the checkpoint, a
server lost mid-order (its work handed on, or collected from its history when it comes back),
and nothing made twice."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from comfyline.errors import NoFittingBackend
from comfyline.ledger import Ledger, ledger_path, read_backends
from comfyline.orders import load
from comfyline.pipeline import fingerprint
from comfyline.reports.charts import render_chart
from comfyline.sim import Faults, running_simulator
from comfyline.status import order_rows
from line_support import (
    BackgroundRun,
    TcpProxy,
    foreign_prompt,
    interrupt,
    ledger_events,
    running_execution,
)
from test_pipeline_support import (
    check_finished,
    output_folder,
    run_in_process,
    settings_for,
    sim_config,
    single_order,
    wait_for,
)


def done_events(order_file: Path, output_root: Path) -> Counter[int | None]:
    loaded = load(order_file)
    db = ledger_path(output_folder(order_file, output_root))
    with Ledger.open(db, loaded.order.id, fingerprint(loaded)) as ledger:
        return Counter(event.index for event in ledger.events("done"))


def test_one_order_runs_on_two_servers_each_image_once(tmp_path: Path) -> None:
    order_file = single_order(tmp_path / "orders", "two", 12)
    out = tmp_path / "out"
    with (
        running_simulator(sim_config(tmp_path / "a", fixed_prompt_s=0.02)) as a,
        running_simulator(sim_config(tmp_path / "b", fixed_prompt_s=0.02)) as b,
    ):
        settings = settings_for(a.url, out, comfyui_urls=(a.url, b.url))
        report, printed = run_in_process(order_file, settings)
        made = a.stats()["executed"], b.stats()["executed"]

    check_finished(order_file, out)
    assert done_events(order_file, out) == Counter(range(12))
    assert sum(made) == 12 and min(made) > 0  # both worked, nothing ran twice
    assert "on 2 servers" in printed
    uses = {b.name: b for b in report.backends}
    assert set(uses) == {a.url, b.url}
    assert sum(u.images for u in uses.values()) == 12
    assert all(u.seconds_per_image is not None and u.lost == 0 for u in uses.values())
    assert {i.backend for i in report.images} == {a.url, b.url}
    assert report.backend.url in (a.url, b.url)  # kept for readers of one server
    # The chart: a temperature line per card, an images-per-minute line per server and one
    # for the total.
    rate_axis, temp_axis = render_chart(report).axes
    assert sorted(line.get_label() for line in temp_axis.get_lines()) == sorted([a.url, b.url])
    assert len(rate_axis.get_lines()) == 3
    # Status: each server, its images and its seconds per image.
    (row,) = order_rows([order_file], settings)[0]
    assert {x.name: x.images for x in row.backends} == {a.url: made[0], b.url: made[1]}
    assert all(x.health == "up" and x.seconds_per_image for x in row.backends)


def test_a_server_without_the_checkpoint_is_left_out_and_the_run_says_so(tmp_path: Path) -> None:
    order_file = single_order(tmp_path / "orders", "fit", 4, checkpoint="sim-sd15.safetensors")
    out = tmp_path / "out"
    other = sim_config(tmp_path / "b", checkpoints=("other.safetensors",))
    with running_simulator(sim_config(tmp_path / "a")) as a, running_simulator(other) as b:
        report, printed = run_in_process(
            order_file, settings_for(a.url, out, comfyui_urls=(a.url, b.url))
        )
        assert b.stats()["executed"] == 0

    check_finished(order_file, out)
    assert f"server {b.url} is left out of this order" in printed
    assert "sim-sd15.safetensors" in printed
    left = {u.name: u.left_out for u in report.backends}
    assert left[a.url] is None and "sim-sd15.safetensors" in (left[b.url] or "")
    health = {x.name: x.health for x in read_backends(ledger_path(output_folder(order_file, out)))}
    assert health == {a.url: "up", b.url: "left out"}


def test_no_server_fitting_names_each_reason(tmp_path: Path) -> None:
    order_file = single_order(tmp_path / "orders", "none", 2, checkpoint="wanted.safetensors")
    with (
        running_simulator(sim_config(tmp_path / "a")) as a,
        running_simulator(sim_config(tmp_path / "b")) as b,
    ):
        settings = settings_for(a.url, tmp_path / "out", comfyui_urls=(a.url, b.url))
        with pytest.raises(NoFittingBackend) as caught:
            run_in_process(order_file, settings)
    assert {name for name, _ in caught.value.reasons} == {a.url, b.url}
    assert "wanted.safetensors" in str(caught.value)


def test_a_server_killed_mid_order_hands_its_slots_to_the_other(tmp_path: Path) -> None:
    order_file = single_order(tmp_path / "orders", "killed", 16)
    out = tmp_path / "out"
    # B's fourth prompt hangs, so the order cannot end before B is killed.
    b_config = sim_config(tmp_path / "b", fixed_prompt_s=0.05, faults=Faults(stuck_on_prompts=(4,)))
    with (
        running_simulator(sim_config(tmp_path / "a", fixed_prompt_s=0.05)) as a,
        running_simulator(b_config) as b,
    ):
        settings = settings_for(
            a.url,
            out,
            comfyui_urls=(a.url, b.url),
            reconnect_timeout_s=0.3,
            probe_interval_s=0.1,
        )
        run = BackgroundRun(order_file, settings)
        wait_for(lambda: b.call(running_execution) == 4, "B to hang on its fourth prompt")
        b.restart(away_s=120)  # killed: it stays away past the end of the order
        report = run.result()
        lost = ledger_events(order_file, out, "backend.lost")

    check_finished(order_file, out)
    assert done_events(order_file, out) == Counter(range(16))
    assert [e["detail"]["backend"] for e in lost] == [b.url]
    uses = {u.name: u for u in report.backends}
    assert uses[b.url].lost == 1 and uses[a.url].images >= 16 - 3


def test_a_lost_server_that_returns_gives_what_it_made_meanwhile(tmp_path: Path) -> None:
    """A network cut: B keeps working while we cannot reach it. Its slots wait at the back of
    the queue; A is busy behind another client's long prompt, so only B can make them, and
    when B answers again they are collected from its history, not made again."""
    order_file = single_order(tmp_path / "orders", "cut", 10)
    out = tmp_path / "out"
    with (
        running_simulator(sim_config(tmp_path / "a", faults=Faults(stuck_on_prompts=(1,)))) as a,
        running_simulator(sim_config(tmp_path / "b", fixed_prompt_s=0.1)) as b,
    ):
        blocker = foreign_prompt(a.url)  # hangs on A until interrupted: ours queue behind it
        proxy = TcpProxy(b.port)
        try:
            settings = settings_for(
                a.url,
                out,
                comfyui_urls=(a.url, proxy.url),
                reconnect_timeout_s=0.3,
                probe_interval_s=0.1,
                first_prompt_timeout_s=2.0,
                min_prompt_timeout_s=2.0,
            )
            run = BackgroundRun(order_file, settings)
            wait_for(lambda: b.stats()["executed"] >= 2, "B to make two images")
            proxy.cut()
            wait_for(lambda: ledger_events(order_file, out, "backend.lost"), "B to be lost")
            wait_for(lambda: b.call(lambda sim: sim.queue_remaining()) == 0, "B to finish")
            proxy.restore()
            wait_for(lambda: ledger_events(order_file, out, "backend.back"), "B to be back")
            wait_for(lambda: _done_count(order_file, out) >= 8, "B to make all but A's two")
            interrupt(a.url, blocker)
            report = run.result()
            executed_b = b.stats()["executed"]
        finally:
            proxy.close()
        executed_a = a.stats()["executed"]

    check_finished(order_file, out)
    assert done_events(order_file, out) == Counter(range(10))
    collected = ledger_events(order_file, out, "backend.collected")
    assert collected and all(e["detail"]["backend"] == proxy.url for e in collected)
    # Nothing was made twice: B's images plus A's two are the ten (the other client's prompt
    # on A was interrupted, not executed).
    assert executed_b + executed_a == 10
    uses = {u.name: u for u in report.backends}
    assert uses[proxy.url].lost == 1 and uses[proxy.url].collected == len(collected)
    # Queued behind the other client's prompt far past their deadline, A's prompts were never
    # taken for stuck: each slot was sent once.
    assert all(image.attempts == 1 for image in report.images if image.backend == a.url)


def _done_count(order_file: Path, out: Path) -> int:
    return len(ledger_events(order_file, out, "done"))
