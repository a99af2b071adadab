"""``comfyline sensor-agent``: a remote card's readings over HTTP, a token beyond loopback, and
the guard of a backend reading it (``sensor: http://...`` in backends.yaml)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import uvicorn

from comfyline.errors import ConfigError
from comfyline.guard import NoSensor, Reading, SimSensor
from comfyline.guard.remote import RemoteSensor
from comfyline.sensor_agent import check_listen, create_agent_app
from comfyline.sim import ThermalConfig, running_simulator
from test_pipeline_support import (
    check_finished,
    comfyline,
    run_in_process,
    settings_for,
    sim_config,
    single_order,
)


class CardOf:
    """The thermal model of a simulator, read with a client of its own each time (the agent
    reads it from its own thread and event loop)."""

    name = "sim card"
    last_error: str | None = None

    def __init__(self, url: str) -> None:
        self.url = url

    async def read(self) -> Reading | None:
        async with httpx.AsyncClient() as http:
            return await SimSensor(self.url, http).read()


class FixedSensor:
    name = "fixed"
    last_error: str | None = None

    async def read(self) -> Reading | None:
        return Reading(temperature_c=61.0, vram_used_bytes=1024, vram_total_bytes=4096)


async def test_the_agent_serves_readings_to_those_with_the_token() -> None:
    app = create_agent_app(FixedSensor(), token="s3cret")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://agent") as http:
        assert (await http.get("/reading")).status_code == 401
        wrong = await http.get("/reading", headers={"authorization": "Bearer nope"})
        assert wrong.status_code == 401
        sensor = RemoteSensor("http://agent", http, token="s3cret")
        reading = await sensor.read()
        refused = RemoteSensor("http://agent", http, token="nope")
        assert await refused.read() is None and "refused the token" in str(refused.last_error)
    assert reading == Reading(temperature_c=61.0, vram_used_bytes=1024, vram_total_bytes=4096)


async def test_an_agent_without_a_card_says_why() -> None:
    app = create_agent_app(NoSensor("no NVIDIA driver here"))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app)) as http:
        body = (await http.get("http://agent/reading")).json()
        sensor = RemoteSensor("http://agent", http)
        assert await sensor.read() is None
    assert body == {"sensor": "none", "reading": None, "error": "no NVIDIA driver here"}
    assert "no NVIDIA driver here" in str(sensor.last_error)


def test_beyond_loopback_a_token_is_required() -> None:
    check_listen("127.0.0.1", None)
    check_listen("::1", None)
    check_listen("0.0.0.0", "t")
    with pytest.raises(ConfigError, match="without a token"):
        check_listen("0.0.0.0", None)
    with pytest.raises(ConfigError, match="without a token"):
        check_listen("192.168.1.20", None)


def test_the_cli_refuses_to_listen_everywhere_without_a_token() -> None:
    done = comfyline("sensor-agent", "--host", "0.0.0.0", "--port", "0")
    assert done.returncode == 1
    assert "ConfigError" in done.stderr and "without a token" in done.stderr


@contextmanager
def agent_serving(sensor: CardOf, token: str) -> Iterator[str]:
    """The agent app on a real socket, in a thread; yields its URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(create_agent_app(sensor, token=token), log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def test_a_backend_guard_reads_its_card_through_the_agent(tmp_path: Path) -> None:
    order_file = single_order(tmp_path / "orders", "remote", 4)
    out = tmp_path / "out"
    # The card the agent reads is a thermal simulator's; the ComfyUI the order runs on is
    # another simulator without a thermal model, as a remote server reports no temperature.
    config = sim_config(tmp_path / "card", thermal=ThermalConfig(room_c=-40.0))
    with (
        running_simulator(config) as card,
        running_simulator(sim_config(tmp_path / "gpu", thermal=None)) as gpu,
    ):
        with agent_serving(CardOf(card.url), token="tok") as agent:
            backends = tmp_path / "backends.yaml"
            backends.write_text(
                "backends:\n"
                f"  - name: remote-4090\n    url: {gpu.url}\n"
                f"    sensor: {agent}\n    sensor_token: tok\n    tags: [night]\n",
                encoding="utf-8",
            )
            report, printed = run_in_process(
                order_file, settings_for(gpu.url, out, backends_file=backends)
            )

    check_finished(order_file, out)
    (use,) = report.backends
    assert (use.name, use.tags, use.images) == ("remote-4090", ["night"], 4)
    temps = [r.temperature_c for r in report.readings if r.note == "remote-4090"]
    assert temps and all(t is not None for t in temps)
    assert use.last_temperature_c == temps[-1]
    assert "no temperature" not in printed
