"""The pages and their actions: the line, an order, a new order; the images and the event
streams. Handlers read through the library (``status``, the ledger, ``orders``) and render."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.templating import Jinja2Templates

from comfyline.errors import ConfigError
from comfyline.ledger import LedgerReader, ledger_path
from comfyline.progress import format_duration
from comfyline.web import forms, images, stream
from comfyline.web.catalog import Catalog
from comfyline.web.config import WebConfig
from comfyline.web.line_control import LineControl, LineSnapshot
from comfyline.web.log import QUIET_KINDS, log_line
from comfyline.web.runner import OrderRunner

PAGE_IMAGES = 120
"""Thumbnails per page of an order: a page of a 5,000-image order stays quick to show."""
LOG_LINES = 200
CHART_POINTS = 600
HEALTH_EVERY_S = 10.0
_RESUMABLE = {"interrupted", "partial", "failed", "cancelled", "queued", "validated"}


def routes() -> list[Route]:
    return [
        Route("/", line_page),
        Route("/events", line_events),
        Route("/line/{action:str}", steer_line, methods=["POST"]),
        Route("/new", new_order_page, methods=["GET", "POST"]),
        Route("/o/{key}", order_page),
        Route("/o/{key}/events", order_events),
        Route("/o/{key}/start", start_order, methods=["POST"]),
        Route("/o/{key}/cancel", cancel_order, methods=["POST"]),
        Route("/o/{key}/image/{index:int}/{number:int}", image),
        Route("/o/{key}/thumb/{index:int}/{number:int}", thumb),
    ]


# -- shared ------------------------------------------------------------------------------


def catalog_of(request: Request) -> Catalog:
    catalog: Catalog = request.app.state.catalog
    return catalog


def runner_of(request: Request) -> OrderRunner:
    runner: OrderRunner = request.app.state.runner
    return runner


def line_of(request: Request) -> LineControl:
    line: LineControl = request.app.state.line
    return line


def config_of(request: Request) -> WebConfig:
    config: WebConfig = request.app.state.config
    return config


def render(request: Request, name: str, context: dict[str, Any], status: int = 200) -> Response:
    templates: Jinja2Templates = request.app.state.templates
    return templates.TemplateResponse(request, name, context, status_code=status)


def fragment(request: Request, name: str, context: dict[str, Any]) -> str:
    templates: Jinja2Templates = request.app.state.templates
    return templates.get_template(name).render(context)


def _sse(body: Any) -> StreamingResponse:
    headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    return StreamingResponse(body, media_type="text/event-stream", headers=headers)


def duration(seconds: float | None) -> str:
    return format_duration(seconds) if seconds is not None else ""


# -- the line ----------------------------------------------------------------------------

LINE_ACTIONS = ("start", "pause", "resume")
_ON_THE_LINE = {"running", "stopping", "next", "paused", "waiting for its window"}
"""The states of an order the line has not finished with (``Line.queue``)."""


async def line_page(request: Request) -> Response:
    snapshot = line_of(request).snapshot()  # read in the line's loop; rendered in a thread
    html = await asyncio.to_thread(_line_body, request, snapshot)
    return render(request, "line.html", {"body": html, "page": "line"})


async def line_events(request: Request) -> Response:
    async def body() -> str:
        snapshot = line_of(request).snapshot()
        return await asyncio.to_thread(_line_body, request, snapshot)

    return _sse(stream.line_stream(body))


async def steer_line(request: Request) -> Response:
    """Start, pause or resume the line (the buttons of the line page)."""
    action = request.path_params["action"]
    if action not in LINE_ACTIONS:
        raise HTTPException(404, f"no line action {action!r}; there are {', '.join(LINE_ACTIONS)}")
    getattr(line_of(request), action)()
    return RedirectResponse("/", status_code=303)


def _line_body(request: Request, line: LineSnapshot) -> str:
    """The line page's body: the line's state and buttons, its queue in order with each
    order's status row, and its servers."""
    runner = runner_of(request)
    found = {file: (key, row) for key, file, row in catalog_of(request).rows()}
    entries = {e.file: (n, e) for n, e in enumerate(line.queue)}
    files = sorted(found, key=lambda f: entries[f][0] if f in entries else len(entries))
    rows = []
    for file in files:
        key, row = found[file]
        entry = entries[file][1] if file in entries else None
        job = runner.job(file) if row.state != "invalid" else None
        actions = _order_actions(row.state, job, line, entry)
        rows.append({"key": key, "row": row, "job": job, "entry": entry, "actions": actions})
    if line.started:
        servers = _line_servers(line, rows)
    else:
        servers = _backends(request, [r["row"] for r in rows])
    context = {
        "rows": rows,
        "servers": servers,
        "line": line,
        "waiting": _waiting_numbers(line),
        "folder": config_of(request).orders_dir,
    }
    return fragment(request, "_line_body.html", context | {"duration": duration})


def _waiting_numbers(line: LineSnapshot) -> dict[Any, int]:
    """Each order that waits to start, with its place in the queue (1: next)."""
    waiting = [e.file for e in line.queue if e.state in ("next", "paused")]
    return {file: n for n, file in enumerate(waiting, 1)}


def _line_servers(line: LineSnapshot, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each server of the running line: its state in the line's pool (up, down, cooling), held
    by the guard when an order running there says it stopped on heat (its ledger), the orders
    working on it, its rate over the line's orders and its latest temperature."""
    found = []
    for server in line.servers:
        entry: dict[str, Any] = {
            "name": server.name,
            "state": server.state,
            "why": server.why,
            "temp": server.temperature_c,
            "orders": [],
            "rate": None,
        }
        images, seconds = 0, 0.0
        for r in rows:
            if r["entry"] is None:
                continue
            for use in r["row"].backends:
                if use.name != server.name:
                    continue
                if use.seconds_per_image and use.images:
                    images += use.images
                    seconds += use.seconds_per_image * use.images
                if r["entry"].state != "running":
                    continue
                if use.health == "stopped on heat" and server.state == "up":
                    entry["state"], entry["why"] = "held by the guard", "its guard stopped it"
                elif use.health == "up" and server.state != "down":
                    entry["orders"].append(r["row"].order)
                if entry["temp"] is None and server.state != "down":
                    entry["temp"] = use.temperature_c
        entry["rate"] = 60 * images / seconds if seconds else None
        found.append(entry)
    return found


def _backends(request: Request, rows: list[Any]) -> list[dict[str, Any]]:
    """The configured server (answering or not) and every server the orders' ledgers name,
    with the last temperature an order read there."""
    config = config_of(request)
    health = _health(request)
    main = "built-in simulator" if config.sim else config.settings.comfyui_url
    found: dict[str, dict[str, Any]] = {main: _server(main, health)}
    for url in config.urls:  # the line's servers, answering or not: the line will say
        found.setdefault(url, _server(url, "one of the line's servers"))
    for row in rows:
        for server in row.servers:
            entry = found.setdefault(server, _server(server, ""))
            if row.temperature_c is not None and row.state == "running":
                entry["temp"] = row.temperature_c
    return list(found.values())


def _server(name: str, why: str) -> dict[str, Any]:
    return {"name": name, "state": None, "why": why, "temp": None, "orders": [], "rate": None}


def _health(request: Request) -> str:
    """Whether the configured ComfyUI answers ``/system_stats`` (looked up every 10 s)."""
    config = config_of(request)
    if config.sim:
        return "started with each order"
    cached = getattr(request.app.state, "health", None)
    if cached is not None and time.monotonic() - cached[0] < HEALTH_EVERY_S:
        return str(cached[1])
    try:
        reply = httpx.get(f"{config.settings.comfyui_url.rstrip('/')}/system_stats", timeout=1.5)
        reply.raise_for_status()
        version = reply.json().get("system", {}).get("comfyui_version", "")
        text = f"answers{f' (ComfyUI {version})' if version else ''}"
    except (httpx.HTTPError, ValueError, AttributeError):
        text = "not answering (orders fall back to the simulator only for the default URL)"
    request.app.state.health = (time.monotonic(), text)
    return text


def _order_actions(state: str, job: Any, line: LineSnapshot, entry: Any) -> list[str]:
    """Which buttons an order gets. While the line runs, it starts orders itself: cancel one
    it runs, queue again one that ended on it unfinished; else as without the line."""
    if line.started:
        if entry is not None and entry.state == "running":
            return ["cancel"]
        if entry is not None and entry.state not in _ON_THE_LINE | {"completed"}:
            return ["again"]  # it ended on the line unfinished: cancelled, failed, on heat…
        if entry is not None or job is None or not job.active:
            return []
    return _actions(state, job)


def _actions(state: str, job: Any) -> list[str]:
    """Which buttons an order gets without the line: start, resume or cancel."""
    if job is not None and job.active:
        return ["cancel"]
    if state == "new":
        return ["start"]
    if state in _RESUMABLE:
        return ["resume"]
    return []


# -- an order ----------------------------------------------------------------------------


async def order_page(request: Request) -> Response:
    key = request.path_params["key"]
    page = max(0, int_param(request.query_params.get("page"), 0))
    line = line_of(request).snapshot()
    context = await asyncio.to_thread(_order_context, request, key, page, line)
    return render(request, "order.html", context)


def _order_context(request: Request, key: str, page: int, snapshot: LineSnapshot) -> dict[str, Any]:
    place = catalog_of(request).place(key)
    context: dict[str, Any] = {
        "key": key,
        "page": "order",
        "status_html": _status_html(request, key, snapshot),
        "log": [],
        "thumbs": [],
        "chart": [],
        "after_event": 0,
        "after_reading": 0,
        "page_no": page,
        "pages": 1,
        "order_name": place.file.parent.name,
    }
    db = ledger_path(place.output) if place.output is not None else None
    if db is None or not db.is_file():
        return context
    with LedgerReader.open(db) as view:
        counts = view.counts()
        events = view.latest_events(limit=LOG_LINES, skip_kinds=sorted(QUIET_KINDS))
        context["log"] = [line.to_json() for i, e in events if (line := log_line(i, e))][::-1]
        context["after_event"] = view.last_event_id()
        context["after_reading"] = view.last_reading_id()
        context["chart"] = _chart_points(view)
        slots = view.done_slots(offset=page * PAGE_IMAGES, limit=PAGE_IMAGES, newest_first=True)
    context["thumbs"] = [
        (s.index, n, images.version(h)) for s in slots for n, h in enumerate(s.sha256s)
    ]
    context["pages"] = max(1, -(-counts.done // PAGE_IMAGES))
    return context


def _chart_points(view: LedgerReader) -> list[list[float]]:
    points = [[r.at, r.temperature_c] for _, r in view.readings() if r.temperature_c is not None]
    step = max(1, len(points) // CHART_POINTS)
    return [p for p in points[::step]] + (points[-1:] if points and step > 1 else [])


def _status_html(request: Request, key: str, line: LineSnapshot) -> str:
    catalog = catalog_of(request)
    file = catalog.file(key)
    row = catalog.row(key)
    job = runner_of(request).job(file)
    entry = next((e for e in line.queue if e.file == file), None)
    actions = _order_actions(row.state, job, line, entry)
    context = {"key": key, "row": row, "job": job, "actions": actions, "entry": entry}
    return fragment(request, "_status.html", context | {"duration": duration})


async def order_events(request: Request) -> Response:
    key = request.path_params["key"]
    catalog_of(request).place(key)  # 404 before the stream starts
    event, reading = stream.parse_last_id(request.headers.get("last-event-id"))
    if not event:
        event = int_param(request.query_params.get("after"), 0)
        reading = int_param(request.query_params.get("readings_after"), 0)
    file = catalog_of(request).file(key)
    line, runner = line_of(request), runner_of(request)

    async def status(k: str) -> str:
        snapshot = line.snapshot()  # read in the line's loop; rendered in a thread
        return await asyncio.to_thread(_status_html, request, k, snapshot)

    def runs() -> object:
        job = runner.job(file)
        entry = next((e for e in line.queue() if e.file == file), None)
        return (job.to_json() if job is not None else None, entry, line.running)

    body = stream.order_stream(
        catalog_of(request),
        key,
        after_event=event,
        after_reading=reading,
        render_status=status,
        runs=runs,
    )
    return _sse(body)


async def start_order(request: Request) -> Response:
    """Start (or resume) one order; while the line runs, the line does it: an order that
    ended on it is queued again, any other unfinished one it takes by itself."""
    key = request.path_params["key"]
    start_run(request, catalog_of(request).file(key))
    return RedirectResponse(f"/o/{key}", status_code=303)


def start_run(request: Request, file: Path) -> str:
    """Start (or resume) the order here, or leave it to the running line; says which."""
    line = line_of(request)
    if line.running:
        if not line.retake(file) and not line.has(file):
            raise ConfigError(
                f"the line runs this folder: it takes order {file.parent.name} when it may "
                "(invalid, completed and orders held by another runner are left out)"
            )
        return "is queued on the line"
    runner_of(request).start(file)
    return "runs here"


def running_here(request: Request, file: Path) -> str | None:
    """How the order runs in this process now (here or on the line), None when it does not."""
    job = runner_of(request).job(file)
    if job is not None and job.state == "running":
        return "running here"
    entry = next((e for e in line_of(request).queue() if e.file == file), None)
    if entry is not None and entry.state in ("running", "stopping"):
        return f"{entry.state} on the line"
    return None


async def cancel_order(request: Request) -> Response:
    """Stop the order as Ctrl-C does (its state saved), wherever it runs here."""
    key = request.path_params["key"]
    file = catalog_of(request).file(key)
    if not await line_of(request).cancel(file):
        await runner_of(request).cancel(file)
    return RedirectResponse(f"/o/{key}", status_code=303)


async def image(request: Request) -> Response:
    path, sha256 = await _image_file(request)
    return _cached(request, sha256) or FileResponse(path, headers=_cache_headers(request, sha256))


async def thumb(request: Request) -> Response:
    path, sha256 = await _image_file(request)
    if (unchanged := _cached(request, sha256)) is not None:
        return unchanged
    place = catalog_of(request).place(request.path_params["key"])
    assert place.output is not None
    small = await asyncio.to_thread(images.thumbnail, place.output, path, sha256)
    headers = _cache_headers(request, sha256)
    return FileResponse(small, media_type="image/webp", headers=headers)


async def _image_file(request: Request) -> tuple[Any, str]:
    place = catalog_of(request).place(request.path_params["key"])
    if place.output is None:
        raise HTTPException(404, "this order does not load, so it has no images")
    root = config_of(request).settings.output_root
    index, number = request.path_params["index"], request.path_params["number"]
    try:
        return await asyncio.to_thread(images.image_file, place.output, root, index, number)
    except images.NoImage as exc:
        raise HTTPException(404, str(exc)) from exc


def _cache_headers(request: Request, sha256: str) -> dict[str, str]:
    # A slot's file changes when it is re-rolled. A URL naming the file's version (``?v=``,
    # as the pages write them) names that content for good; any other is checked every time.
    etag = f'"{sha256[:32]}"'
    if request.query_params.get("v") == images.version(sha256):
        return {"Cache-Control": "private, max-age=86400, immutable", "ETag": etag}
    return {"Cache-Control": "private, no-cache", "ETag": etag}


def _cached(request: Request, sha256: str) -> Response | None:
    """304 when the browser's copy is the file's current version (its ETag)."""
    headers = _cache_headers(request, sha256)
    if request.headers.get("if-none-match") == headers["ETag"]:
        return Response(status_code=304, headers=headers)
    return None


# -- a new order -------------------------------------------------------------------------


async def new_order_page(request: Request) -> Response:
    context: dict[str, Any] = {"page": "new", "values": {}, "problems": {}, "yaml_text": ""}
    if request.method == "POST":
        values = {k: str(v) for k, v in (await request.form()).items() if k in forms.FIELDS}
        orders_dir = config_of(request).orders_dir
        try:
            result = await asyncio.to_thread(forms.create_order, orders_dir, values)
        except OSError as exc:
            raise ConfigError(f"cannot write the order under {orders_dir}: {exc}") from exc
        if result.folder is not None:
            key = catalog_of(request).key(result.folder / "project.yaml")
            return RedirectResponse(f"/o/{key}", status_code=303)
        context |= {"values": values, "problems": result.problems, "yaml_text": result.yaml_text}
        return render(request, "new.html", context, status=422)
    return render(request, "new.html", context)


def int_param(value: str | None, default: int) -> int:
    try:
        return int(value) if value is not None else default
    except ValueError:
        return default
