"""The dashboard as a Starlette app: server-rendered pages over the library, live updates by
server-sent events, a little plain JavaScript. ``create_app(config)`` builds it;
``comfyline serve`` runs it with uvicorn."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from comfyline.errors import ComfylineError
from comfyline.web import export_pages, pages, review_pages
from comfyline.web.catalog import Catalog, UnknownOrder
from comfyline.web.config import WebConfig
from comfyline.web.line_control import LineControl
from comfyline.web.runner import OrderRunner
from comfyline.web.security import AccessGuard

HERE = Path(__file__).parent
_log = logging.getLogger(__name__)


def create_app(config: WebConfig) -> Starlette:
    """The dashboard for ``config``: the line, each order, review, export and a new order."""
    templates = Jinja2Templates(directory=HERE / "templates")
    templates.env.autoescape = True

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.runner = OrderRunner(config.settings, sim=config.sim)
        app.state.line = LineControl(config)
        if config.start_line:
            app.state.line.start()
        try:
            yield
        finally:
            # Ctrl-C on the server saves every running order, the line's and the others.
            await app.state.line.aclose()
            await app.state.runner.aclose()

    app = Starlette(
        routes=[
            *pages.routes(),
            *review_pages.routes(),
            *export_pages.routes(),
            Mount("/static", StaticFiles(directory=HERE / "static")),
        ],
        middleware=[Middleware(AccessGuard, token=config.token)],
        exception_handlers={
            UnknownOrder: _not_found,
            HTTPException: _http_error,
            ComfylineError: _comfyline_error,
            Exception: _unexpected,
        },
        lifespan=lifespan,
    )
    app.state.config = config
    app.state.catalog = Catalog(config.orders_dir, config.settings)
    app.state.templates = templates
    return app


def _error_page(request: Request, status: int, title: str, text: str) -> Response:
    templates: Jinja2Templates = request.app.state.templates
    context: dict[str, Any] = {"title": title, "text": text}
    return templates.TemplateResponse(request, "error.html", context, status_code=status)


async def _not_found(request: Request, exc: Exception) -> Response:
    return _error_page(request, 404, "No such order", f"There is no order {exc} in this line.")


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return _error_page(
        request,
        exc.status_code,
        "Not found" if exc.status_code == 404 else "Error",
        str(exc.detail),
    )


async def _comfyline_error(request: Request, exc: Exception) -> Response:
    return _error_page(request, 400, type(exc).__name__, str(exc))


async def _unexpected(request: Request, exc: Exception) -> Response:
    # A bug: its traceback goes to the server's log, never to the page.
    _log.error("unexpected error on %s", request.url.path, exc_info=exc)
    text = f"{type(exc).__name__}: the server's log has the details."
    return _error_page(request, 500, "Something went wrong", text)
