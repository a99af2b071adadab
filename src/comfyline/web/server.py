"""Running the dashboard: one process, uvicorn on the address asked for."""

from __future__ import annotations

import socket
from collections.abc import Callable

import uvicorn

from comfyline.errors import ConfigError
from comfyline.web.app import create_app
from comfyline.web.config import WebConfig

GRACE_S = 3
"""On Ctrl-C, open event streams get this long before they are closed; then every order
started here is stopped the way Ctrl-C stops ``run-order`` (state saved)."""


def dashboard_url(host: str, port: int, token: str | None) -> str:
    """The link to print: with ``?token=`` when one is needed (it becomes a cookie)."""
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/" + (f"?token={token}" if token else "")


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (0: a free port), or :class:`ConfigError`.
    It listens at once: a client that connects before the server loop runs waits in the
    backlog instead of being refused."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    return sock


def serve(config: WebConfig, sock: socket.socket, on_ready: Callable[[str], None]) -> None:
    """Serve the dashboard on ``sock`` until Ctrl-C; ``on_ready`` gets the link first."""
    host, port = sock.getsockname()[:2]
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(config),
            log_level="warning",
            timeout_graceful_shutdown=GRACE_S,
            lifespan="on",
        )
    )
    on_ready(dashboard_url(host, port, config.token))
    server.run(sockets=[sock])
