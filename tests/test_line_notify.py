"""Notifications through Apprise: a local endpoint hears an order complete and a server get
lost; a notifier URL that fails never stops the line."""

from __future__ import annotations

import asyncio
import io
import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from comfyline.errors import ConfigError
from comfyline.line import Line
from comfyline.notify import Notifier
from comfyline.sim import Faults, running_simulator
from line_support import running_execution
from test_pipeline_support import check_finished, settings_for, sim_config, single_order, wait_for


@contextmanager
def hook() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A tiny HTTP endpoint on 127.0.0.1 keeping every JSON body posted to it; yields its
    Apprise URL (``json://``) and the list of bodies."""
    received: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            length = int(self.headers.get("content-length", "0"))
            received.append(json.loads(self.rfile.read(length)))
            self.send_response(200)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"json://127.0.0.1:{server.server_address[1]}/hook", received
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_the_line_tells_completion_and_a_lost_server(tmp_path: Path) -> None:
    orders, out = tmp_path / "orders", tmp_path / "out"
    order_file = single_order(orders, "told", 12)
    dead = f"json://127.0.0.1:{closed_port()}/nobody"
    with (
        hook() as (url, received),
        running_simulator(sim_config(tmp_path / "a", fixed_prompt_s=0.05)) as a,
        # B's third prompt hangs: the order cannot end before B is lost.
        running_simulator(
            sim_config(tmp_path / "b", fixed_prompt_s=0.05, faults=Faults(stuck_on_prompts=(3,)))
        ) as b,
    ):
        settings = settings_for(
            a.url,
            out,
            comfyui_urls=(a.url, b.url),
            notify_urls=(url, dead),
            reconnect_timeout_s=0.3,
            probe_interval_s=0.1,
            line_poll_s=0.05,
        )
        console = Console(file=io.StringIO(), width=200, force_terminal=False)
        line = Line(orders, settings, console=console)
        task = asyncio.create_task(line.run())
        hung = lambda: b.call(running_execution) == 3  # noqa: E731
        await asyncio.to_thread(wait_for, hung, "B to hang on its third prompt")
        b.restart(away_s=120)  # lost for good
        outcomes = await task

    assert [(o.order, o.state) for o in outcomes] == [("told", "completed")]
    check_finished(order_file, out)
    titles = [body["title"] for body in received]
    assert f"comfyline: server {b.url} lost" in titles
    assert "comfyline: order told completed" in titles
    done = next(body for body in received if "completed" in body["title"])
    assert done["message"].startswith("12/12 images") and done["type"] == "success"
    # The dead URL failed every time; the line said so and went on.
    printed = console.file.getvalue()  # type: ignore[attr-defined]
    assert "was not accepted by every notifier URL" in printed


async def test_a_failing_notifier_never_raises() -> None:
    lines: list[str] = []
    notifier = Notifier([f"json://127.0.0.1:{closed_port()}/x"], say=lines.append)
    assert await notifier.send("failed", "order x failed", "0/3 images") is False
    assert lines and "not accepted" in lines[0]


def test_an_unknown_notifier_url_is_a_clear_error_without_its_secret() -> None:
    with pytest.raises(ConfigError) as caught:
        Notifier(["nosuchservice://bot-token-1234@host"])
    assert "entry 1 (nosuchservice://...)" in str(caught.value)
    assert "bot-token-1234" not in str(caught.value)


async def test_no_urls_sends_nothing() -> None:
    notifier = Notifier([])
    assert not notifier.enabled
    assert await notifier.send("completed", "order x completed", "") is True
