"""Serving the simulator on a real socket: in a background thread for tests, or in the
foreground for ``comfyline sim``.

A restart (``POST /sim/restart``, the restart fault, or a thermal blackout) really stops the
uvicorn server: connections are dropped and the port refuses connections for the time away,
as a restarting ComfyUI does; then a server starts again on the same port with an empty queue,
history and cache.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import uvicorn

from comfyline.errors import ConfigError
from comfyline.sim.app import create_app
from comfyline.sim.config import Faults, SimConfig
from comfyline.sim.simulator import Simulator


def _bind(host: str, port: int) -> socket.socket:
    # IPPROTO_TCP named, so that asyncio sets TCP_NODELAY on every accepted connection (it only
    # does for proto == IPPROTO_TCP); with proto 0 every keep-alive answer waited ~40 ms for
    # Nagle and the client's delayed ACK.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(
            f"the simulator cannot listen on {host}:{port}: {exc}; "
            "choose another --port (0 picks a free one)"
        ) from exc
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


class SimServer:
    """The simulator behind uvicorn, with restarts. Run :meth:`serve` in an event loop."""

    def __init__(self, config: SimConfig) -> None:
        self.simulator = Simulator(config)
        self.simulator.restart_hook = self._on_restart
        self.app = create_app(self.simulator)
        self.host = config.host
        self.port = config.port
        self.loop: asyncio.AbstractEventLoop | None = None
        self.up = threading.Event()  # listening now
        self.down = threading.Event()  # not listening now
        self._server: uvicorn.Server | None = None
        self._away_s: float | None = None
        self._closing = False
        self.on_listening: Callable[[str], None] | None = None

    @property
    def url(self) -> str:
        """The base URL, e.g. ``http://127.0.0.1:8188``."""
        return f"http://{self.host}:{self.port}"

    async def serve(self) -> None:
        """Serve until :meth:`close` (or a signal in the foreground), restarting on request."""
        self.loop = asyncio.get_running_loop()
        sock = _bind(self.host, self.port)
        self.port = sock.getsockname()[1]
        while True:
            await self._serve_once(sock)
            sock.close()
            self.up.clear()
            self.down.set()
            away, self._away_s = self._away_s, None
            if self._closing or away is None:
                return
            self.simulator.reset()
            if not await self._away(away):
                return
            sock = _bind(self.host, self.port)

    async def _away(self, seconds: float) -> bool:
        """Stay away (port closed); False when closed meanwhile."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while not self._closing and loop.time() < deadline:
            await asyncio.sleep(min(0.02, max(0.0, deadline - loop.time())))
        return not self._closing

    async def _serve_once(self, sock: socket.socket) -> None:
        config = uvicorn.Config(
            self.app,
            log_level="warning",
            ws="websockets-sansio",
            lifespan="on",
            timeout_graceful_shutdown=1,
        )
        server = uvicorn.Server(config)
        self._server = server
        task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started and not task.done():
            await asyncio.sleep(0.005)
        if server.started:
            self.down.clear()
            self.up.set()
            if self.on_listening is not None:
                self.on_listening(self.url)
        await task

    def _on_restart(self, away_s: float) -> None:
        """Called in the server's loop (by the simulator) to go away for ``away_s`` seconds."""
        self._away_s = away_s
        self.up.clear()  # going away now: wait_up() waits for the next start
        server = self._server
        if server is not None:
            server.should_exit = True
            asyncio.ensure_future(self.simulator.close_sockets())

    def close(self) -> None:
        """Stop serving for good (thread-safe)."""
        self._closing = True
        server = self._server
        if server is not None:
            server.should_exit = True


class SimulatorHandle:
    """A simulator running in a background thread; what :func:`running_simulator` yields."""

    def __init__(self, server: SimServer) -> None:
        self._server = server

    @property
    def url(self) -> str:
        """Base URL of the simulated ComfyUI, e.g. ``http://127.0.0.1:39211``."""
        return self._server.url

    @property
    def port(self) -> int:
        """The TCP port it listens on."""
        return self._server.port

    @property
    def simulator(self) -> Simulator:
        """The simulator itself (read it only through :meth:`call` from another thread)."""
        return self._server.simulator

    def call(self, fn: Callable[[Simulator], Any], timeout_s: float = 10.0) -> Any:
        """Run ``fn(simulator)`` in the server's event loop and return its result."""
        loop = self._server.loop
        assert loop is not None

        async def run() -> Any:
            return fn(self._server.simulator)

        return asyncio.run_coroutine_threadsafe(run(), loop).result(timeout_s)

    def stats(self) -> dict[str, Any]:
        """The same data as ``GET /sim/stats``."""
        return dict(self.call(lambda sim: sim.stats.to_json()))

    def set_faults(self, faults: Faults | None = None, **changes: Any) -> Faults:
        """Replace the faults (or change some: ``set_faults(error_on_prompts=[2])``)."""

        def apply(sim: Simulator) -> Faults:
            new = faults if faults is not None else sim.faults
            if changes:
                new = Faults.from_json(json.loads(json.dumps(changes)), new)
            sim.set_faults(new)
            return new

        result: Faults = self.call(apply)
        return result

    def restart(self, away_s: float = 0.5, timeout_s: float = 10.0) -> None:
        """Simulate a restart: returns once the port refuses connections; the server is back
        after ``away_s`` real seconds (see :meth:`wait_up`)."""
        self._server.down.clear()
        self.call(lambda sim: sim.request_restart(away_s))
        if not self._server.down.wait(timeout_s):
            raise TimeoutError(f"the simulator did not stop within {timeout_s} s")

    def wait_up(self, timeout_s: float = 10.0) -> None:
        """Wait until the server listens again (after a restart or blackout)."""
        if not self._server.up.wait(timeout_s):
            raise TimeoutError(f"the simulator was not back within {timeout_s} s")


@contextlib.contextmanager
def running_simulator(
    config: SimConfig | None = None, **overrides: Any
) -> Iterator[SimulatorHandle]:
    """Serve a simulator on 127.0.0.1 (a free port unless ``config.port`` says otherwise) in a
    background thread for the duration of the ``with`` block.

    >>> with running_simulator(SimConfig(output_dir=tmp_path)) as sim:  # doctest: +SKIP
    ...     httpx.get(sim.url + "/system_stats")
    """
    config = replace(config or SimConfig(), **overrides)
    server = SimServer(config)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(server.serve())
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            errors.append(exc)
            server.up.set()

    thread = threading.Thread(target=run, name="comfy-sim", daemon=True)
    thread.start()
    server.up.wait(30)
    if errors:
        thread.join(5)
        raise errors[0]
    try:
        yield SimulatorHandle(server)
    finally:
        server.close()
        loop = server.loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(lambda: None)  # wake the loop to notice
        thread.join(30)
        if errors:
            raise errors[0]


def serve_forever(config: SimConfig, on_listening: Callable[[str], None]) -> None:
    """Serve in the foreground until interrupted (``comfyline sim``)."""
    server = SimServer(config)
    server.on_listening = on_listening
    asyncio.run(server.serve())
