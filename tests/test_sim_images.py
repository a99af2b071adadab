"""The simulator's image faults, its SaveImage path rule, its WebSocket refusal and its
interrupt under a fixed prompt time, seen from a client over real sockets."""

from __future__ import annotations

import asyncio
import io
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from comfyline.quality import QcSettings, SeriesChecker
from comfyline.sim import Faults
from sim_graphs import txt2img
from test_sim_faults import WAIT_S, Client

OUTSIDE = "SaveImage may not write outside the output folder"


async def _image(url: str, graph: dict[str, Any]) -> tuple[dict[str, str], bytes]:
    """Run ``graph``; the first image it lists and the bytes /view gives for it."""
    async with Client(url) as client:
        prompt_id, kinds = await client.run(graph)
        assert "execution_success" in kinds, kinds
        entry = (await client.http.get(f"/history/{prompt_id}")).json()[prompt_id]
        ref = entry["outputs"]["9"]["images"][0]
        return ref, (await client.http.get("/view", params=ref)).content


def test_corrupt_image_does_not_decode(make_sim: Any) -> None:
    with make_sim(faults=Faults(corrupt_image_on_prompts=(1,))) as sim:
        _, data = asyncio.run(_image(sim.url, txt2img()))
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    with pytest.raises(OSError):
        Image.open(io.BytesIO(data))


def test_truncated_image_states_its_size_but_does_not_load(make_sim: Any) -> None:
    with make_sim(faults=Faults(truncated_image_on_prompts=(1,))) as sim:
        _, data = asyncio.run(_image(sim.url, txt2img(width=64, height=48)))
    with Image.open(io.BytesIO(data)) as image:
        assert image.size == (64, 48)  # the header is whole: only a full decode notices
        with pytest.raises(OSError):
            image.load()


def test_wrong_size_image_is_half_the_size_asked_for(make_sim: Any) -> None:
    with make_sim(faults=Faults(wrong_size_on_prompts=(2,))) as sim:
        _, good = asyncio.run(_image(sim.url, txt2img(seed=1, width=64, height=48)))
        _, bad = asyncio.run(_image(sim.url, txt2img(seed=2, width=64, height=48)))
    assert Image.open(io.BytesIO(good)).size == (64, 48)
    assert Image.open(io.BytesIO(bad)).size == (32, 24)


def test_short_view_states_more_than_it_sends_once(make_sim: Any) -> None:
    with make_sim(faults=Faults(short_view_on_prompts=(1,))) as sim:

        async def scenario() -> bytes:
            async with Client(sim.url) as client:
                prompt_id, _ = await client.run(txt2img())
                entry = (await client.http.get(f"/history/{prompt_id}")).json()[prompt_id]
                ref = entry["outputs"]["9"]["images"][0]
                with pytest.raises(httpx.RemoteProtocolError, match="incomplete|complete"):
                    await client.http.get("/view", params=ref)
                return (await client.http.get("/view", params=ref)).content

        whole = asyncio.run(scenario())
        stats = sim.stats()
    Image.open(io.BytesIO(whole)).load()
    assert stats["short_views"] == 1


@pytest.mark.parametrize("where", ["relative", "absolute"])
def test_save_image_refuses_a_prefix_outside_its_output_folder(
    make_sim: Any, tmp_path: Path, where: str
) -> None:
    target = tmp_path / "elsewhere"
    target.mkdir()
    output = tmp_path / "comfy-out"
    prefix = "../elsewhere/x" if where == "relative" else str(target / "x")
    with make_sim() as sim:

        async def scenario() -> tuple[dict[str, Any], dict[str, Any]]:
            async with Client(sim.url) as client:
                prompt_id = await client.post(txt2img(prefix=prefix))
                error = await client.until("execution_error", prompt_id=prompt_id)
                await client.until("executing", node=None, prompt_id=prompt_id)
                history = (await client.http.get(f"/history/{prompt_id}")).json()[prompt_id]
                return error, history

        error, history = asyncio.run(scenario())
    # As a real ComfyUI 0.3.64 answers over its API: an Exception execution_error at SaveImage.
    assert (error["node_id"], error["node_type"]) == ("9", "SaveImage")
    assert error["exception_type"] == "Exception"
    assert error["exception_message"].startswith(OUTSIDE)
    assert f"output folder {output}" in error["exception_message"]
    assert history["status"]["status_str"] == "error" and history["outputs"] == {}
    assert list(target.iterdir()) == []
    assert not any(output.rglob("*.png"))


def test_a_prefix_that_stays_inside_is_normalised(make_sim: Any, tmp_path: Path) -> None:
    with make_sim() as sim:
        ref, _ = asyncio.run(_image(sim.url, txt2img(prefix="a/./b/../c/img")))
    assert (ref["subfolder"], ref["filename"]) == ("a/c", "img_00001_.png")
    assert (tmp_path / "comfy-out" / "a" / "c" / "img_00001_.png").is_file()


def test_websockets_are_refused_until_the_queue_is_empty(make_sim: Any) -> None:
    faults = Faults(drop_ws_after_prompts=1, ws_down_until_idle=True, stuck_on_prompts=(2,))
    with make_sim(faults=faults) as sim:
        ws_url = sim.url.replace("http://", "ws://") + "/ws?clientId=again"

        async def scenario() -> None:
            async with Client(sim.url) as client:
                first = await client.post(txt2img(seed=1))
                stuck = await client.post(txt2img(seed=2))  # runs until interrupted
                await client.until("executing", node=None, prompt_id=first)
                with pytest.raises(InvalidStatus) as refused:
                    await connect(ws_url, open_timeout=WAIT_S)
                assert refused.value.response.status_code == 403
                await client.http.post("/interrupt", json={"prompt_id": stuck})
                async with asyncio.timeout(WAIT_S):
                    while (await client.http.get("/queue")).json()["queue_running"]:
                        await asyncio.sleep(0.005)
            async with connect(ws_url, open_timeout=WAIT_S) as ws:
                assert "status" in str(await ws.recv())

        asyncio.run(scenario())
        stats = sim.stats()
    assert (stats["ws_drops"], stats["ws_refused"], stats["interrupted"]) == (1, 1, 1)


def test_interrupt_stops_a_prompt_inside_its_fixed_time(make_sim: Any) -> None:
    # A prompt that would take 60 s: only an honoured interrupt ends it within WAIT_S.
    with make_sim(fixed_prompt_s=60.0) as sim:

        async def scenario() -> tuple[dict[str, Any], list[str], float]:
            async with Client(sim.url) as client:
                prompt_id = await client.post(txt2img())
                await client.until("executing", node="3", prompt_id=prompt_id)
                started = time.monotonic()
                await client.http.post("/interrupt", json={"prompt_id": prompt_id})
                interrupted = await client.until("execution_interrupted", prompt_id=prompt_id)
                await client.until("executing", node=None, prompt_id=prompt_id)
                waited = time.monotonic() - started
                history = (await client.http.get(f"/history/{prompt_id}")).json()[prompt_id]
                return interrupted, history["status"]["messages"], waited

        interrupted, messages, waited = asyncio.run(scenario())
        stats = sim.stats()
    assert waited < WAIT_S
    # As recorded (10_interrupt): stopped in the sampler, nothing saved, no error.
    assert (interrupted["node_id"], interrupted["node_type"]) == ("3", "KSampler")
    assert "9" not in interrupted["executed"]
    assert [m[0] for m in messages] == [
        "execution_start",
        "execution_cached",
        "execution_interrupted",
    ]
    assert (stats["interrupted"], stats["executed"], stats["files_written"]) == (1, 0, 0)


def test_images_of_different_seeds_are_not_near_duplicates(make_sim: Any) -> None:
    # A real model's seeds give different pictures; the simulator's too, or the quality
    # checks would flag a whole demo series as near-duplicates of its first image.
    async def series() -> list[bytes]:
        return [(await _image(sim.url, txt2img(seed=seed)))[1] for seed in range(24)]

    with make_sim() as sim:
        images = asyncio.run(series())
    checker = SeriesChecker(QcSettings())
    results = [checker.check(data, f"{i}.png") for i, data in enumerate(images)]
    assert [r.flags for r in results] == [()] * len(images)
