"""Helpers of the dashboard tests (tests/test_web_*.py); it holds no tests.

The dashboard is served for real: uvicorn on a loopback socket in a thread (the way
``comfyline serve`` runs it), orders made on the simulator, and Chromium from the system's
packages driven by Playwright.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest
import uvicorn

from comfyline.web import WebConfig, bind, create_app

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[1]
SCREENSHOTS = ROOT / "test-artifacts" / "web"
"""Screenshots of every page (ignored by git), to look at after a run."""
PHONE = {"width": 390, "height": 844}
WIDE = {"width": 1440, "height": 900}


@contextmanager
def serving(config: WebConfig, host: str = "127.0.0.1") -> Iterator[str]:
    """Serve the dashboard for ``config`` in a thread; yields its base URL."""
    sock = bind(host, 0)  # already listening: no need to wait for the server thread
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(config), log_level="warning", lifespan="on", timeout_graceful_shutdown=1
        )
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()
        assert not thread.is_alive(), "the dashboard did not stop within 30 s"


def chromium_path() -> str:
    """Debian's Chromium (scripts/test.sh installs it as root); the browser tests are skipped
    with this reason where there is none."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip("no Chromium on this machine: apt-get install chromium (scripts/test.sh does)")
    return path


def screenshot(page: object, name: str) -> None:
    """Save the page, as the user sees it, under test-artifacts/web/."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)  # type: ignore[attr-defined]


def in_thread(fn: Callable[..., T], *args: Any) -> T:
    """Run ``fn`` in a thread of its own: Playwright's sync API keeps an event loop running
    in the test's thread, where ``asyncio.run`` cannot start another."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(fn, *args).result(timeout=300)
