"""``builtin:upscale`` posted through ComfyClient: upload the image, run the graph, fetch the
result and check its size. The same checks run against the simulator and, when
``REAL_COMFYUI_URL`` names one with the tiny 4x model (``shared/tools/make_tiny_upscaler.py``)
in its upscale_models, against a real ComfyUI."""

from __future__ import annotations

import asyncio
import io
import os
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import httpx
import pytest
from PIL import Image

from comfyline.comfy import ComfyClient, ImageRef
from comfyline.comfy.protocol import parse_ws_message
from comfyline.errors import ComfyProtocolError, WorkflowCheckFailed, WorkflowError
from comfyline.exports.markets import resolve_markets
from comfyline.exports.upscale import target_for_markets
from comfyline.sim import SimulatorHandle
from comfyline.workflows import ensure_graph_fits
from comfyline.workflows.upscale import load_image_name, upscale_graph
from sale_images import scene

MakeSim = Callable[..., AbstractContextManager[SimulatorHandle]]
REAL_URL = os.environ.get("REAL_COMFYUI_URL", "")
SIM_MODEL = "4x-UltraSharp.pth"


def _png(size: tuple[int, int], seed: int = 0) -> bytes:
    buffer = io.BytesIO()
    scene(size, seed=seed, spots=60).save(buffer, "PNG")
    return buffer.getvalue()


async def _run(client: ComfyClient, graph: dict[str, Any]) -> list[ImageRef]:
    """Post ``graph`` and wait (WS, with a deadline) for its end; its saved images."""
    ws = await client.connect_ws()
    try:
        accepted = await client.post_prompt(graph, prompt_id=str(uuid.uuid4()))
        async with asyncio.timeout(300):
            while True:
                message = parse_ws_message(await ws.recv())
                if message and message.is_prompt_end and message.prompt_id == accepted.prompt_id:
                    break
    finally:
        await ws.close()
    entry = await client.history(accepted.prompt_id)
    assert entry is not None and entry.error() is None, entry
    return list(entry.images)


async def _upscale(
    url: str, model: str, size: tuple[int, int], target: tuple[int, int]
) -> Image.Image:
    async with httpx.AsyncClient(timeout=httpx.Timeout(60.0)) as http:
        client = ComfyClient(url, http, client_id=uuid.uuid4().hex)
        name = f"comfyline-test-{uuid.uuid4().hex[:8]}.png"
        ref = await client.upload_image(name, _png(size))
        assert (ref.filename, ref.subfolder, ref.type) == (name, "", "input")
        graph = upscale_graph(load_image_name(ref), model, target, prefix="comfyline-test/up")
        ensure_graph_fits(graph, await client.object_info(), server=url)
        (saved,) = await _run(client, graph)
        data = await client.view(saved)
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        return image


async def test_simulator_upscales_to_the_exact_market_target(make_sim: MakeSim) -> None:
    target = target_for_markets(320, 480, resolve_markets("adobe,123rf"))
    assert target == (2000, 3000)
    with make_sim(upscale_models=[SIM_MODEL], upscale_model_factor=4) as sim:
        image = await _upscale(sim.url, SIM_MODEL, (320, 480), target)
        smaller = await _upscale(sim.url, SIM_MODEL, (64, 48), (200, 150))  # x4, then down
    assert image.size == (2000, 3000) and smaller.size == (200, 150)


async def test_missing_upscale_model_is_found_before_posting(make_sim: MakeSim) -> None:
    with make_sim(upscale_models=["2x-Other.pth"]) as sim:
        with pytest.raises(WorkflowCheckFailed, match="4x-UltraSharp.pth"):
            await _upscale(sim.url, SIM_MODEL, (64, 64), (256, 256))
        async with httpx.AsyncClient() as http:
            stats = (await http.get(f"{sim.url}/sim/stats")).json()
    assert stats["started"] == 0


def test_graph_refuses_targets_comfyui_cannot_make() -> None:
    with pytest.raises(WorkflowError, match="outside ComfyUI's ImageScale range"):
        upscale_graph("a.png", SIM_MODEL, (20000, 100))
    with pytest.raises(WorkflowError, match="'sinc' is not one of"):
        upscale_graph("a.png", SIM_MODEL, (200, 100), method="sinc")


@pytest.mark.real
@pytest.mark.skipif(not REAL_URL, reason="set REAL_COMFYUI_URL to run against a real ComfyUI")
async def test_real_comfyui_upscales_with_the_tiny_4x_model() -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        models = (await http.get(f"{REAL_URL}/models/upscale_models")).json()
    model = next((m for m in models if "4x" in m), None)
    if model is None:
        pytest.skip(f"no 4x model in the server's upscale_models ({models})")
    target = target_for_markets(96, 64, resolve_markets("dreamstime"))
    image = await _upscale(REAL_URL, model, (96, 64), target)
    assert image.size == target == (2122, 1415)


async def test_upload_sends_comfyuis_multipart_fields_and_reads_the_answer() -> None:
    seen: dict[str, bytes] = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen["type"] = request.headers["content-type"].encode()
        seen["body"] = request.read()
        if b"taken.png" in seen["body"]:
            return httpx.Response(
                200, json={"name": "taken (1).png", "subfolder": "", "type": "input"}
            )
        return httpx.Response(400, text="bad upload")

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        client = ComfyClient("http://comfy.test", http, client_id="me")
        ref = await client.upload_image("taken.png", b"\x89PNG...", overwrite=False)
        assert ref == ImageRef("taken (1).png", "", "input")
        assert load_image_name(ImageRef("a.png", "sale", "input")) == "sale/a.png"
        body = seen["body"]
        assert seen["type"].startswith(b"multipart/form-data")
        assert b'name="image"; filename="taken.png"' in body and b"image/png" in body
        assert b'name="overwrite"\r\n\r\nfalse' in body and b'name="type"\r\n\r\ninput' in body
        with pytest.raises(ComfyProtocolError, match="upload/image of 'x.png' .* HTTP 400"):
            await client.upload_image("x.png", b"data")
