"""``comfyline sensor-agent``: the temperature of a card on another machine, over HTTP.

Run it beside a remote ComfyUI; the guard of that backend reads it
(:class:`comfyline.guard.remote.RemoteSensor`, configured with ``sensor: http://host:port`` in
``backends.yaml``). It is a small Starlette app:

``GET /reading``
    ``{"sensor": "nvml", "reading": {temperature_c, power_w, vram_used_bytes, ...}, "error":
    null}`` - a fresh reading of the local card (NVML, else ``nvidia-smi``); ``reading`` is null
    and ``error`` says why when there is none.

It listens on 127.0.0.1 by default. Listening on any other address needs a token
(``--token`` or ``COMFYLINE_SENSOR_TOKEN``), which every request must then send as
``Authorization: Bearer <token>``; a token given on loopback is required too.
"""

from __future__ import annotations

import hmac
import ipaddress
import socket
from collections.abc import Callable

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from comfyline.errors import ConfigError
from comfyline.guard.remote import READING_PATH, TOKEN_HEADER, reading_to_json
from comfyline.guard.sensors import NoSensor, NvidiaSmiSensor, NvmlSensor, Sensor

DEFAULT_PORT = 9108


def create_agent_app(sensor: Sensor, *, token: str | None = None) -> Starlette:
    """The agent's app, serving ``sensor``'s readings; ``token`` (if any) is required."""

    async def reading(request: Request) -> JSONResponse:
        if token is not None and not _token_ok(request, token):
            return JSONResponse({"error": "a valid token is required"}, status_code=401)
        value = await sensor.read()
        return JSONResponse(
            {
                "sensor": sensor.name,
                "reading": reading_to_json(value) if value is not None else None,
                "error": None if value is not None else sensor.last_error,
            }
        )

    return Starlette(routes=[Route(READING_PATH, reading)])


def _token_ok(request: Request, token: str) -> bool:
    given = request.headers.get(TOKEN_HEADER, "")
    scheme, _, value = given.partition(" ")
    # A constant-time compare: the time an answer takes says nothing about the token.
    return scheme.lower() == "bearer" and hmac.compare_digest(value.encode(), token.encode())


def check_listen(host: str, token: str | None) -> None:
    """:class:`ConfigError` when the agent would listen beyond this machine without a token."""
    if not token and not _loopback(host):
        raise ConfigError(
            f"the sensor agent would listen on {host} without a token: anyone who reaches the "
            "port could read it. Give --token (or COMFYLINE_SENSOR_TOKEN), or listen on "
            "127.0.0.1 and tunnel to it"
        )


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host == "localhost"


async def local_sensor(gpu_index: int = 0) -> Sensor:
    """This machine's card: NVML, else ``nvidia-smi``; a :class:`NoSensor` saying why neither
    reads it."""
    reasons = []
    try:
        nvml = await NvmlSensor.open(gpu_index)
    except ConfigError as exc:
        reasons.append(str(exc))
    else:
        if await nvml.read() is not None:
            return nvml
        reasons.append(f"nvml: {nvml.last_error}")
    smi = NvidiaSmiSensor(gpu_index)
    if await smi.read() is not None:
        return smi
    reasons.append(f"nvidia-smi: {smi.last_error}")
    return NoSensor("; ".join(reasons))


def serve_agent(
    sensor: Sensor,
    *,
    host: str,
    port: int,
    token: str | None,
    on_listening: Callable[[str], None] = lambda url: None,
) -> None:
    """Serve the agent in the foreground until interrupted; ``on_listening`` gets its URL
    (``port`` 0 picks a free one)."""
    check_listen(host, token)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"the sensor agent cannot listen on {host}:{port}: {exc}") from exc
    bound = sock.getsockname()[1]
    app = create_agent_app(sensor, token=token)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    on_listening(f"http://{host}:{bound}")
    server.run(sockets=[sock])
