"""The simulator's ASGI app: ComfyUI's HTTP + WebSocket routes, and ``/sim/`` for tests.

Every ComfyUI route also answers under ``/api/``. Bodies, status codes and empty answers follow
the recordings in ``shared/comfyui-protocol`` (see ``tests/test_sim_contract.py``). The
``/sim/`` routes exist only in the simulator and are never aliased under ``/api/``.
"""

from __future__ import annotations

import email
import email.policy
import io
import json
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from PIL import Image
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from comfyline.errors import ConfigError
from comfyline.sim.config import Faults, SimConfig, deep_json
from comfyline.sim.simulator import Simulator

_SERVER_ERROR = "500 Internal Server Error\n\nServer got itself in trouble"
_MODEL_FOLDERS = [
    "checkpoints", "configs", "loras", "vae", "text_encoders", "diffusion_models", "clip_vision",
    "style_models", "embeddings", "diffusers", "vae_approx", "controlnet", "gligen",
    "upscale_models", "custom_nodes", "hypernetworks", "photomaker", "classifiers",
    "model_patches", "audio_encoders",
]  # fmt: skip
_FEATURES = {"supports_preview_metadata": True, "max_upload_size": 104857600}

Handler = Callable[[Request], Awaitable[Response]]


class _BadBody(Exception):
    """A body ComfyUI cannot parse: it answers 500 text/plain."""


async def _json_body(request: Request, *, empty: Any = None) -> Any:
    raw = await request.body()
    if not raw.strip() and empty is not None:
        return empty
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise _BadBody() from exc


def _server_error() -> Response:
    return PlainTextResponse(_SERVER_ERROR, status_code=500)


def _empty(status: int = 200) -> Response:
    return Response(b"", status_code=status)


def create_app(sim: Simulator | SimConfig | None = None) -> Starlette:
    """The ASGI app of a simulator (a new one from ``SimConfig()`` when none is given)."""
    if not isinstance(sim, Simulator):
        sim = Simulator(sim or SimConfig())
    routes = _Routes(sim)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await sim.start()
        try:
            yield
        finally:
            await sim.stop()

    comfy: list[BaseRoute] = [
        Route("/system_stats", routes.system_stats),
        Route("/object_info", routes.object_info),
        Route("/object_info/{node_class:path}", routes.object_info_one),
        Route("/prompt", routes.prompt, methods=["GET", "POST"]),
        Route("/queue", routes.queue, methods=["GET", "POST"]),
        Route("/history", routes.history, methods=["GET", "POST"]),
        Route("/history/{prompt_id:path}", routes.history_one),
        Route("/view", routes.view, methods=["GET", "HEAD"]),
        Route("/free", routes.free, methods=["POST"]),
        Route("/upload/image", routes.upload_image, methods=["POST"]),
        Route("/interrupt", routes.interrupt, methods=["POST"]),
        Route("/features", routes.features),
        Route("/models", routes.models),
        Route("/models/{folder}", routes.models_one),
        Route("/embeddings", routes.embeddings),
        Route("/extensions", routes.extensions),
        WebSocketRoute("/ws", routes.websocket),
    ]
    aliased = comfy + [_api_alias(r) for r in comfy]
    sim_routes: list[BaseRoute] = [
        Route("/sim/stats", routes.sim_stats),
        Route("/sim/faults", routes.sim_faults, methods=["GET", "POST"]),
        Route("/sim/restart", routes.sim_restart, methods=["POST"]),
        Route("/sim/sensor", routes.sim_sensor),
    ]
    app = Starlette(routes=aliased + sim_routes, lifespan=lifespan)
    app.add_exception_handler(404, _not_found)
    app.add_exception_handler(405, _not_allowed)
    app.state.simulator = sim
    return app


def _api_alias(route: BaseRoute) -> BaseRoute:
    if isinstance(route, WebSocketRoute):
        return WebSocketRoute("/api" + route.path, route.endpoint)
    assert isinstance(route, Route)
    return Route("/api" + route.path, route.endpoint, methods=sorted(route.methods or ()))


async def _not_found(request: Request, exc: Exception) -> Response:
    return _empty(404)


async def _not_allowed(request: Request, exc: Exception) -> Response:
    return _empty(405)


class _Routes:
    """The route handlers, bound to one simulator."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim

    # --- read-only ---------------------------------------------------------------------

    async def system_stats(self, request: Request) -> Response:
        sim = self.sim
        device: dict[str, Any] = {
            "name": sim.config.device_name,
            "type": "cuda",
            "index": 0,
            "vram_total": sim.config.vram_total_bytes,
            "vram_free": sim.vram_free(),
            "torch_vram_total": sim.config.vram_total_bytes,
            "torch_vram_free": sim.vram_free(),
        }
        if sim.thermal is not None:
            device["temperature_c"] = round(sim.thermal.temperature(), 2)
        system = {
            "os": "posix",
            "ram_total": 32 * 1024**3,
            "ram_free": 24 * 1024**3,
            "comfyui_version": sim.faults.comfyui_version,
            "required_frontend_version": "1.27.10",
            "installed_templates_version": "0.1.95",
            "required_templates_version": "0.1.95",
            "python_version": "3.11.7 (comfyline simulator)",
            "pytorch_version": "2.14.1+sim",
            "embedded_python": False,
            "argv": ["main.py", "--comfyline-simulator"],
        }
        return JSONResponse({"system": system, "devices": [device]})

    async def object_info(self, request: Request) -> Response:
        self.sim.refresh_input_files()
        return JSONResponse(self.sim.node_defs)

    async def object_info_one(self, request: Request) -> Response:
        self.sim.refresh_input_files()
        name = request.path_params["node_class"]
        node = self.sim.node_defs.get(name)
        return JSONResponse({name: node} if node is not None else {})

    async def features(self, request: Request) -> Response:
        return JSONResponse(_FEATURES)

    async def models(self, request: Request) -> Response:
        return JSONResponse(_MODEL_FOLDERS)

    async def models_one(self, request: Request) -> Response:
        folder = request.path_params["folder"]
        lists = {
            "checkpoints": self.sim.config.checkpoints,
            "loras": self.sim.config.loras,
            "vae": self.sim.config.vaes,
            "upscale_models": self.sim.config.upscale_models,
        }
        if folder not in _MODEL_FOLDERS:
            return _empty(404)
        return JSONResponse(sorted(lists.get(folder, ())))

    async def embeddings(self, request: Request) -> Response:
        return JSONResponse([])

    async def extensions(self, request: Request) -> Response:
        return JSONResponse([])

    # --- prompts and queue -------------------------------------------------------------

    async def prompt(self, request: Request) -> Response:
        if request.method == "GET":
            return JSONResponse({"exec_info": {"queue_remaining": self.sim.queue_remaining()}})
        try:
            body = await _json_body(request)
            status, answer = await self.sim.submit(body)
        except (_BadBody, TypeError, AttributeError, KeyError, ValueError):
            return _server_error()
        return JSONResponse(answer, status_code=status)

    async def queue(self, request: Request) -> Response:
        if request.method == "GET":
            return JSONResponse(self.sim.queue_json())
        try:
            body = await _json_body(request)
            await self.sim.queue_change(body)
        except (_BadBody, AttributeError, TypeError):
            return _server_error()
        return _empty()

    async def history(self, request: Request) -> Response:
        if request.method == "POST":
            try:
                self.sim.history_change(await _json_body(request))
            except (_BadBody, AttributeError, TypeError):
                return _server_error()
            return _empty()
        query = request.query_params
        try:
            max_items = int(query["max_items"]) if "max_items" in query else None
            offset = int(query.get("offset", -1))
        except ValueError:
            return _server_error()
        if self.sim.faults.deep_json_history:
            return Response(deep_json(), media_type="application/json")
        return JSONResponse(self.sim.history_json(max_items, offset))

    async def history_one(self, request: Request) -> Response:
        if self.sim.faults.deep_json_history:
            return Response(deep_json(), media_type="application/json")
        prompt_id = request.path_params["prompt_id"]
        entry = self.sim.history.get(prompt_id)
        return JSONResponse({prompt_id: entry} if entry is not None else {})

    async def free(self, request: Request) -> Response:
        try:
            self.sim.free(await _json_body(request))
        except (_BadBody, AttributeError, TypeError):
            return _server_error()
        return _empty()

    async def interrupt(self, request: Request) -> Response:
        try:
            body = await _json_body(request, empty={})
            prompt_id = body.get("prompt_id") if isinstance(body, dict) else None
        except _BadBody:
            return _server_error()
        self.sim.interrupt(prompt_id)
        return _empty()

    # --- files -------------------------------------------------------------------------

    async def view(self, request: Request) -> Response:
        query = request.query_params
        filename = query.get("filename")
        if not filename:
            return _empty(404)
        if filename.startswith("/") or ".." in filename:
            return _empty(400)
        roots = {
            "output": self.sim.config.output_dir,
            "temp": self.sim.config.resolved_temp_dir,
            "input": self.sim.config.resolved_input_dir,
        }
        kind = query.get("type", "output")
        if kind not in roots:
            return _empty(400)
        root = os.path.abspath(roots[kind])
        folder = os.path.abspath(os.path.join(root, query.get("subfolder", "")))
        if os.path.commonpath((folder, root)) != root:
            return _empty(403)
        path = Path(folder) / filename
        if not path.is_file():
            return _empty(404)
        if self.sim.take_short_view(path):
            return _ShortResponse(path.read_bytes())
        return _image_response(path, query.get("preview"), query.get("channel"))

    async def upload_image(self, request: Request) -> Response:
        fields = _multipart(request.headers.get("content-type", ""), await request.body())
        upload = fields.get("image")
        if not isinstance(upload, tuple) or not upload[0]:
            return _empty(400)
        name, data = upload
        subfolder = str(fields.get("subfolder", ""))
        root = os.path.abspath(self.sim.config.resolved_input_dir)
        folder = os.path.abspath(os.path.join(root, subfolder))
        if os.path.commonpath((folder, root)) != root or "/" in name or ".." in name:
            return _empty(400)
        Path(folder).mkdir(parents=True, exist_ok=True)
        Path(folder, name).write_bytes(data)
        return JSONResponse({"name": name, "subfolder": subfolder, "type": "input"})

    # --- WebSocket ---------------------------------------------------------------------

    async def websocket(self, websocket: WebSocket) -> None:
        sid = websocket.query_params.get("clientId") or uuid.uuid4().hex
        if not self.sim.accepts_sockets():
            await websocket.close()  # before accept: the handshake is answered 403
            return
        await websocket.accept()
        await self.sim.connect(sid, websocket)
        try:
            while True:
                text = await websocket.receive_text()
                await self._ws_message(websocket, text)
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            self.sim.disconnect(sid, websocket)

    async def _ws_message(self, websocket: WebSocket, text: str) -> None:
        try:
            message = json.loads(text)
        except ValueError:
            return
        if isinstance(message, dict) and message.get("type") == "feature_flags":
            await websocket.send_text(json.dumps({"type": "feature_flags", "data": _FEATURES}))

    # --- /sim/ -------------------------------------------------------------------------

    async def sim_stats(self, request: Request) -> Response:
        return JSONResponse(self.sim.stats.to_json())

    async def sim_faults(self, request: Request) -> Response:
        if request.method == "POST":
            try:
                body = await _json_body(request)
                self.sim.set_faults(Faults.from_json(body, self.sim.faults))
            except (_BadBody, ConfigError, TypeError, ValueError) as exc:
                return JSONResponse({"error": str(exc) or "body is not JSON"}, status_code=400)
        return JSONResponse(self.sim.faults.to_json())

    async def sim_restart(self, request: Request) -> Response:
        try:
            body = await _json_body(request, empty={})
            away_s = float(body.get("away_s", 0.5))
        except (_BadBody, AttributeError, TypeError, ValueError):
            return JSONResponse({"error": 'body must be {"away_s": seconds}'}, status_code=400)
        self.sim.request_restart(away_s)
        return _empty()

    async def sim_sensor(self, request: Request) -> Response:
        sim = self.sim
        if sim.thermal is None:
            return JSONResponse(
                {"error": "the thermal model is off; start the simulator with --thermal"},
                status_code=404,
            )
        reading = sim.thermal.reading()
        total = sim.config.vram_total_bytes
        return JSONResponse(
            {
                "temperature_c": round(reading.temperature_c, 3),
                "power_w": reading.power_w,
                "vram_used_bytes": total - sim.vram_free(),
                "vram_total_bytes": total,
                "utilization": 1.0 if reading.busy else 0.0,
                "blackouts": sim.stats.blackouts,
                "model_time_s": round(sim.model_time(), 3),
            }
        )


def _multipart(content_type: str, body: bytes) -> dict[str, str | tuple[str, bytes]]:
    """Form fields of a multipart body (files as ``(filename, bytes)``), stdlib only."""
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    message = email.message_from_bytes(head + body, policy=email.policy.HTTP)
    fields: dict[str, str | tuple[str, bytes]] = {}
    if not message.is_multipart():
        return fields
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        filename = part.get_filename()
        if isinstance(name, str) and isinstance(payload, bytes):
            fields[name] = (filename, payload) if filename else payload.decode(errors="replace")
    return fields


class _ShortResponse(Response):
    """A PNG whose Content-Length is the whole file, but only the first half is sent before
    the connection is dropped (the short_view fault): a download cut off mid-way."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data, media_type="image/png")

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        half = self.body[: len(self.body) // 2]
        await send({"type": "http.response.body", "body": half, "more_body": True})
        # Returning without the last body message makes the server close the connection.


def _image_response(path: Path, preview: str | None, channel: str | None) -> Response:
    headers = {"Content-Disposition": f'filename="{path.name}"'}
    if not preview and channel in (None, "rgba"):
        return FileResponse(path, media_type="image/png", headers=headers)
    with Image.open(path) as opened:
        image: Image.Image = opened
        if channel == "a":
            image = opened.convert("RGBA").getchannel("A")
        elif channel == "rgb":
            image = opened.convert("RGB")
        buffer = io.BytesIO()
        if preview:
            fmt, _, quality = preview.partition(";")
            fmt = fmt if fmt in ("webp", "jpeg") else "webp"
            image.convert("RGB").save(buffer, format=fmt, quality=int(quality or 90))
            media = f"image/{fmt}"
        else:
            image.save(buffer, format="PNG")
            media = "image/png"
    return Response(buffer.getvalue(), media_type=media, headers=headers)
