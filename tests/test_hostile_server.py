"""A hostile or broken server: answers nested 100,000 levels deep and a ``comfyui_version`` that
is not text end in a clear protocol error or are read around, never in a ``RecursionError`` or a
run without a report. Served by the simulator's faults over real sockets."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from comfyline.comfy.client import ComfyClient
from comfyline.errors import ComfyProtocolError
from comfyline.ledger import slot_prompt_id
from comfyline.sim import Faults, running_simulator
from test_pipeline_support import (
    check_finished,
    finish,
    run_in_process,
    settings_for,
    sim_config,
    single_order,
    start_runner,
)


async def _history_of(url: str) -> None:
    async with httpx.AsyncClient(timeout=10.0) as http:
        await ComfyClient(url, http, client_id="hostile").history("some-prompt")


def test_history_nested_100000_deep_is_a_protocol_error(tmp_path: Path) -> None:
    with running_simulator(sim_config(tmp_path, faults=Faults(deep_json_history=True))) as sim:
        with pytest.raises(ComfyProtocolError, match="deeper than 64 levels") as caught:
            asyncio.run(_history_of(sim.url))
    assert "/history/some-prompt" in str(caught.value)


def test_websocket_frames_nested_100000_deep_are_skipped_and_the_order_completes(
    tmp_path: Path,
) -> None:
    order_file = single_order(tmp_path / "orders", "deepws", 3)
    out_root = tmp_path / "out"
    with running_simulator(sim_config(tmp_path, faults=Faults(deep_json_ws=True))) as sim:
        run_in_process(order_file, settings_for(sim.url, out_root))
    check_finished(order_file, out_root)


@pytest.mark.parametrize("version", [12345, None, {"major": 0}, ["0", "3"]])
def test_a_comfyui_version_that_is_not_text_is_left_out_of_the_report(
    tmp_path: Path, version: Any
) -> None:
    order_file = single_order(tmp_path / "orders", "version", 2)
    out_root = tmp_path / "out"
    with running_simulator(sim_config(tmp_path, faults=Faults(comfyui_version=version))) as sim:
        report, _ = run_in_process(order_file, settings_for(sim.url, out_root))
    check_finished(order_file, out_root)
    assert report.backend.comfyui_version is None


def test_a_run_whose_history_is_nested_too_deep_stops_with_one_clear_line(tmp_path: Path) -> None:
    """The WebSocket is down when the prompt ends, so the runner must read /history for it."""
    order_file = single_order(tmp_path / "orders", "deephist", 2)
    faults = Faults(deep_json_history=True, drop_ws_on_prompts=(1,), ws_down_until_idle=True)
    with running_simulator(sim_config(tmp_path, faults=faults)) as sim:
        code, printed = finish(start_runner(order_file, sim.url, tmp_path / "out"))
    assert code != 0, printed
    assert "Traceback" not in printed and "RecursionError" not in printed
    assert "deeper than 64 levels" in printed


def test_a_server_that_assigns_its_own_prompt_ids_is_followed(tmp_path: Path) -> None:
    order_file = single_order(tmp_path / "orders", "ownids", 3)
    out_root = tmp_path / "out"
    faults = Faults(own_prompt_ids=True)
    # Short deadlines: a prompt waited for under the id we sent would time out, not hang.
    settings = settings_for("", out_root, first_prompt_timeout_s=5.0, min_prompt_timeout_s=5.0)
    with running_simulator(sim_config(tmp_path, faults=faults)) as sim:
        report, _ = run_in_process(order_file, settings.model_copy(update={"comfyui_url": sim.url}))
        stats = sim.stats()
    check_finished(order_file, out_root)
    assert (stats["started"], stats["executed"]) == (3, 3)  # each made once, none "stuck"
    planned = {slot_prompt_id("ownids", i, 1, "") for i in range(3)}
    server_ids = {p["prompt_id"] for p in stats["prompts"]}
    assert {image.prompt_id for image in report.images} == server_ids
    assert not server_ids & planned


def test_a_prompt_listing_more_images_than_its_batch_is_refused_and_sent_again(
    tmp_path: Path,
) -> None:
    """The server decides what it lists: 40 images for a prompt of batch 1 write no 40 files."""
    order_file = single_order(tmp_path / "orders", "extra", 3)
    out_root = tmp_path / "out"
    faults = Faults(extra_images_on_prompts=(2,))
    with running_simulator(sim_config(tmp_path, faults=faults)) as sim:
        report, printed = run_in_process(order_file, settings_for(sim.url, out_root))
        stats = sim.stats()
    assert "the server saved 40 images for a prompt that makes 1" in printed
    assert stats["files_written"] == 3 + 40  # the server did list (and save) 40
    check_finished(order_file, out_root)  # exactly the 3 planned files, each once
    assert len(report.images) == 3


def test_an_executed_output_that_is_a_list_stops_the_run_cleanly_and_it_resumes(
    tmp_path: Path,
) -> None:
    order_file = single_order(tmp_path / "orders", "listout", 3)
    out_root = tmp_path / "out"
    faults = Faults(list_output_on_prompts=(2,))
    with running_simulator(sim_config(tmp_path, faults=faults)) as sim:
        code, printed = finish(start_runner(order_file, sim.url, out_root))
        assert code == 1, printed
        assert "Traceback" not in printed and "AttributeError" not in printed, printed
        assert "an 'executed' message's output is not an object" in printed, printed
        assert "Resume with: comfyline run-order" in printed, printed
        sim.set_faults(list_output_on_prompts=())
        run_in_process(order_file, settings_for(sim.url, out_root))
    check_finished(order_file, out_root)
