"""ComfyClient and the adapter's HTTP-only parts, against fake servers made with
``httpx.MockTransport`` (a handler branching on the path) and a closed port."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from PIL import Image
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

from comfyline.comfy import ComfyUIAdapter
from comfyline.comfy.client import ComfyClient
from comfyline.comfy.protocol import ImageRef
from comfyline.errors import (
    ComfyProtocolError,
    ComfyUnavailable,
    ConfigError,
    ImageInvalid,
    ModelNotFound,
    PromptRejected,
)
from comfyline.generation import GenerationRequest
from comfyline.preflight import check_sampler, resolve_checkpoint
from comfyline.presets import params_for
from comfyline.settings import Settings

URL = "http://comfy.test:8188"
SYSTEM_STATS = {
    "system": {"os": "posix", "comfyui_version": "0.3.64"},
    "devices": [{"name": "cpu", "type": "cpu", "vram_total": 1, "vram_free": 1}],
}


def _object_info(checkpoints: list[str]) -> dict[str, Any]:
    return {
        "CheckpointLoaderSimple": {
            "input": {"required": {"ckpt_name": [checkpoints, {"tooltip": "x"}]}}
        },
        "KSampler": {
            "input": {
                "required": {
                    "sampler_name": [["euler", "dpmpp_2m"], {}],
                    "scheduler": [["normal", "karras"], {}],
                }
            }
        },
    }


def _png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), "red").save(buffer, format="PNG")
    return buffer.getvalue()


def _server(routes: dict[str, Callable[[httpx.Request], httpx.Response]]) -> httpx.AsyncClient:
    def handler(request: httpx.Request) -> httpx.Response:
        route = routes.get(request.url.path)
        return route(request) if route else httpx.Response(404)

    return httpx.AsyncClient(transport=httpx.MockTransport(handler))


def _json(body: Any, status: int = 200) -> Callable[[httpx.Request], httpx.Response]:
    return lambda request: httpx.Response(status, json=body)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_nothing_answers_is_one_line_naming_the_url() -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    async with ComfyUIAdapter(Settings(comfyui_url=url, connect_timeout_s=2)) as comfy:
        with pytest.raises(ComfyUnavailable) as info:
            await comfy.check_ready()
    message = str(info.value)
    assert url in message and "\n" not in message and "start ComfyUI" in message


async def test_something_that_is_not_comfyui() -> None:
    html = lambda request: httpx.Response(200, text="<html>router login</html>")  # noqa: E731
    async with _server({"/system_stats": html}) as http:
        async with ComfyUIAdapter(Settings(comfyui_url=URL), http=http) as comfy:
            with pytest.raises(ComfyProtocolError, match="not JSON"):
                await comfy.check_ready()
    async with _server({}) as http:
        async with ComfyUIAdapter(Settings(comfyui_url=URL), http=http) as comfy:
            with pytest.raises(ComfyProtocolError, match="404"):
                await comfy.check_ready()
    async with _server({"/system_stats": _json({"status": "ok"})}) as http:
        async with ComfyUIAdapter(Settings(comfyui_url=URL), http=http) as comfy:
            with pytest.raises(ComfyProtocolError, match="does not look like ComfyUI"):
                await comfy.check_ready()


async def test_ready_returns_system_stats() -> None:
    async with _server({"/system_stats": _json(SYSTEM_STATS)}) as http:
        async with ComfyUIAdapter(Settings(comfyui_url=URL), http=http) as comfy:
            assert (await comfy.check_ready())["system"]["comfyui_version"] == "0.3.64"


async def test_checkpoint_resolution() -> None:
    calls: list[str] = []

    def object_info(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        return httpx.Response(200, json=_object_info(["a.safetensors", "b.safetensors"]))

    async with _server({"/object_info": object_info}) as http:
        async with ComfyUIAdapter(Settings(comfyui_url=URL), http=http) as comfy:
            info = await comfy.object_info()
            assert resolve_checkpoint(info, "b.safetensors", URL) == "b.safetensors"
            with pytest.raises(ModelNotFound) as error:
                resolve_checkpoint(info, "missing.safetensors", URL)
            assert "a.safetensors, b.safetensors" in str(error.value)
            with pytest.raises(ConfigError, match="has 2: a.safetensors, b.safetensors"):
                resolve_checkpoint(info, None, URL)
            await comfy.object_info()
    assert calls == ["/object_info"]  # cached after the first call

    async with _server({"/object_info": _json(_object_info(["only.safetensors"]))}) as http:
        async with ComfyUIAdapter(Settings(comfyui_url=URL), http=http) as comfy:
            info = await comfy.object_info()
            assert resolve_checkpoint(info, None, URL) == "only.safetensors"


async def test_sampler_and_scheduler_must_be_known(tmp_path: Path) -> None:
    def request(**overrides: Any) -> GenerationRequest:
        params = params_for("standard", **overrides)
        return GenerationRequest("p", 1, params)

    async with _server({"/object_info": _json(_object_info(["a.safetensors"]))}) as http:
        async with ComfyUIAdapter(Settings(comfyui_url=URL), http=http) as comfy:
            info = await comfy.object_info()
            check_sampler(info, request(sampler="dpmpp_2m", scheduler="karras"), URL)
            with pytest.raises(ConfigError, match="allowed: euler, dpmpp_2m"):
                check_sampler(info, request(sampler="nope"), URL)
            with pytest.raises(ConfigError, match="scheduler 'nope'"):
                check_sampler(info, request(scheduler="nope"), URL)


async def test_post_prompt_sends_client_and_prompt_id_and_reads_rejections() -> None:
    sent: list[dict[str, Any]] = []

    def prompt(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        sent.append(body)
        if body["prompt_id"] == "bad":
            return httpx.Response(
                400,
                json={
                    "error": {"type": "no_prompt", "message": "No prompt provided", "details": ""},
                    "node_errors": {},
                },
            )
        if body["prompt_id"] == "boom":
            return httpx.Response(
                500, text="500 Internal Server Error\n\nServer got itself in trouble"
            )
        return httpx.Response(
            200, json={"prompt_id": body["prompt_id"], "number": 1, "node_errors": {}}
        )

    async with _server({"/prompt": prompt}) as http:
        client = ComfyClient(URL, http, client_id="me")
        accepted = await client.post_prompt({"9": {}}, prompt_id="mine")
        assert accepted.prompt_id == "mine"
        assert sent[0] == {"prompt": {"9": {}}, "client_id": "me", "prompt_id": "mine"}
        with pytest.raises(PromptRejected, match="no_prompt"):
            await client.post_prompt({}, prompt_id="bad")
        with pytest.raises(ComfyProtocolError, match="text/plain"):
            await client.post_prompt({}, prompt_id="boom")


async def test_view_params_and_missing_file() -> None:
    seen: list[dict[str, str]] = []

    def view(request: httpx.Request) -> httpx.Response:
        seen.append(dict(request.url.params))
        if request.url.params["filename"] == "gone.png":
            return httpx.Response(404)
        return httpx.Response(200, content=_png(8, 8), headers={"content-type": "image/png"})

    async with _server({"/view": view}) as http:
        client = ComfyClient(URL, http, client_id="me")
        data = await client.view(ImageRef("img_00001_.png", "orders/o", "output"))
        assert data.startswith(b"\x89PNG")
        assert seen[0] == {"filename": "img_00001_.png", "subfolder": "orders/o", "type": "output"}
        with pytest.raises(ImageInvalid, match="404"):
            await client.view(ImageRef("gone.png"))


async def test_free_interrupt_and_delete_bodies() -> None:
    bodies: list[tuple[str, Any]] = []

    def record(request: httpx.Request) -> httpx.Response:
        bodies.append((request.url.path, json.loads(request.content)))
        return httpx.Response(200)

    routes = {"/free": record, "/interrupt": record, "/queue": record}
    async with _server({**routes, "/system_stats": _json(SYSTEM_STATS)}) as http:
        async with ComfyUIAdapter(Settings(comfyui_url=URL), http=http) as comfy:
            await comfy.free_memory()
            await comfy.interrupt()
            await comfy.cancel("p7")
    assert bodies == [
        ("/free", {"unload_models": True, "free_memory": True}),
        ("/interrupt", {}),
        ("/queue", {"delete": ["p7"]}),
        ("/interrupt", {"prompt_id": "p7"}),
    ]


async def test_prompt_state_reads_queue_before_history() -> None:
    queue = {
        "queue_running": [[1, "run", {}, {}, ["9"]]],
        "queue_pending": [[2, "wait", {}, {}, ["9"]]],
    }

    def history(request: httpx.Request) -> httpx.Response:
        prompt_id = request.url.path.rsplit("/", 1)[1]
        status = {"done": "success", "bad": "error"}.get(prompt_id)
        if status is None:
            return httpx.Response(200, json={})
        entry = {"outputs": {}, "status": {"status_str": status, "completed": True, "messages": []}}
        return httpx.Response(200, json={prompt_id: entry})

    routes = {"/queue": _json(queue)} | {f"/history/{p}": history for p in ("done", "bad", "nope")}
    async with _server(routes) as http:
        async with ComfyUIAdapter(Settings(comfyui_url=URL), http=http) as comfy:
            states = [await comfy.prompt_state(p) for p in ("run", "wait", "done", "bad", "nope")]
    assert states == ["running", "pending", "done", "failed", "unknown"]


def test_a_url_that_is_not_http_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="http://127.0.0.1:8188"):
        ComfyUIAdapter(Settings(comfyui_url="127.0.0.1:8188"))


@contextlib.contextmanager
def _serve(app: Any) -> Iterator[str]:
    """Serve an ASGI app on 127.0.0.1 (a free port) in a thread; yields its base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])))
    thread.start()
    try:
        # The socket already listens: connections wait in its backlog until uvicorn is up.
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


async def test_wrong_url_over_a_real_socket_is_one_line() -> None:
    async def page(request: Request) -> HTMLResponse:
        return HTMLResponse("<html><body>Welcome to my blog</body></html>")

    app = Starlette(routes=[Route("/", page), Route("/about", page)])
    with _serve(app) as url:
        async with ComfyUIAdapter(Settings(comfyui_url=url)) as comfy:
            with pytest.raises(ComfyProtocolError) as info:
                await comfy.check_ready()
    message = str(info.value)
    assert "\n" not in message and f"{url}/system_stats answered HTTP 404" in message
    assert "ComfyUI" in message
