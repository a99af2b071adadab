"""Server-sent events: the line and an order, live.

The ledger is the only source: a runner in this process or in another one (``comfyline
run-order``) writes it, and the stream reads what is new since the last look. SQLite's
``PRAGMA data_version`` tells cheaply whether anything was committed since; only then are the
events, readings and the status row read. Each message carries the last event and reading ids
as its SSE ``id``, so a browser that reconnects gets what it missed and nothing twice.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from comfyline.errors import LedgerError
from comfyline.ledger import LedgerReader, SlotState, ledger_path
from comfyline.web.catalog import Catalog
from comfyline.web.images import version
from comfyline.web.log import log_line

POLL_S = 0.2
"""How often a stream looks for news. 20 images a second arrive in batches of about four."""
ROW_EVERY_S = 0.5
"""The status row (rate, ETA) is recomputed at most this often while images pour in."""
LINE_EVERY_S = 1.0
HEARTBEAT_S = 15.0
"""A comment line this often keeps proxies from closing an idle stream, and finds a closed tab."""
BATCH = 1000


def message(event: str, data: Any, event_id: str | None = None) -> str:
    """One SSE message (JSON data on one line)."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def parse_last_id(value: str | None) -> tuple[int, int]:
    """The (event id, reading id) of an SSE ``Last-Event-ID`` (``"12:7"``), else (0, 0)."""
    try:
        event, reading = (value or "").split(":")
        return max(0, int(event)), max(0, int(reading))
    except ValueError:
        return 0, 0


@dataclass
class _Cursor:
    event: int
    reading: int

    def sse_id(self) -> str:
        return f"{self.event}:{self.reading}"


async def order_stream(
    catalog: Catalog,
    key: str,
    *,
    after_event: int,
    after_reading: int,
    render_status: Callable[[str], Awaitable[str]],
    runs: Callable[[], object],
) -> AsyncIterator[str]:
    """An order's news: ``images`` (slots done, each ``[index, files, versions]``), ``log``
    (lines), ``readings`` (sensor), ``status`` (the status panel's HTML, re-rendered from
    ``order_row`` when the ledger or ``runs()``, how this process runs the order, changed)."""
    place = catalog.place(key)
    cursor = _Cursor(after_event, after_reading)
    reader: LedgerReader | None = None
    seen_version: int | None = None
    seen_runs: Any = None
    row_due, row_at, beat_at = True, 0.0, time.monotonic()
    try:
        while True:
            if reader is None and place.output is not None:
                reader = _open(ledger_path(place.output))
            if reader is not None and (version := reader.version()) != seen_version:
                seen_version = version
                for chunk in _news(reader, cursor):
                    yield chunk
                row_due = True
            if (now_runs := runs()) != seen_runs:
                seen_runs, row_due = now_runs, True
            now = time.monotonic()
            if row_due and now - row_at >= ROW_EVERY_S:
                html = await render_status(key)
                yield message("status", {"html": html}, cursor.sse_id())
                row_due, row_at, beat_at = False, now, now
            elif now - beat_at >= HEARTBEAT_S:
                yield ": keep-alive\n\n"
                beat_at = now
            await asyncio.sleep(POLL_S)
    finally:
        if reader is not None:
            reader.close()


def _open(db: Any) -> LedgerReader | None:
    try:
        return LedgerReader.open(db) if db.is_file() else None
    except LedgerError:
        return None


def _news(reader: LedgerReader, cursor: _Cursor) -> list[str]:
    chunks: list[str] = []
    while True:
        events = reader.events(after=cursor.event, limit=BATCH)
        if not events:
            break
        cursor.event = events[-1][0]
        done = [e.index for _, e in events if e.kind == "done" and e.index is not None]
        images = [_image(reader, index) for index in done]
        lines = [line.to_json() for i, e in events if (line := log_line(i, e)) is not None]
        if images:
            chunks.append(message("images", images, cursor.sse_id()))
        if lines:
            chunks.append(message("log", lines, cursor.sse_id()))
    readings = reader.readings(after=cursor.reading)
    if readings:
        cursor.reading = readings[-1][0]
        points = [[r.at, r.temperature_c] for _, r in readings if r.temperature_c is not None]
        if points:
            chunks.append(message("readings", points, cursor.sse_id()))
    return chunks


def _image(reader: LedgerReader, index: int) -> list[Any]:
    """A made slot as the page adds it: ``[index, files, [version, ...]]``; the versions (as
    :func:`comfyline.web.images.version`) tell a re-rolled image from its cached old one."""
    slot = reader.slot(index)
    versions = [version(h) for h in slot.sha256s] if slot.state is SlotState.DONE else []
    return [index, len(versions), versions]


async def line_stream(render_rows: Callable[[], Awaitable[str]]) -> AsyncIterator[str]:
    """The line's body (HTML), sent again whenever it changes."""
    seen = None
    beat_at = time.monotonic()
    while True:
        html = await render_rows()
        now = time.monotonic()
        if html != seen:
            seen, beat_at = html, now
            yield message("rows", {"html": html})
        elif now - beat_at >= HEARTBEAT_S:
            yield ": keep-alive\n\n"
            beat_at = now
        await asyncio.sleep(LINE_EVERY_S)
