"""The review page: a grid and a 100 % loupe over ``comfyline.review``; each decision is saved
to the ledger at once (``review.set_decision``), also while the order runs. A re-roll
(``reroll.request_reroll``) sets an image aside and starts the order's run, as Start/Resume do."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from comfyline.errors import ComfylineError, ConfigError
from comfyline.ledger import LedgerReader, ledger_path
from comfyline.orders import load
from comfyline.reroll import Rerolled, request_reroll
from comfyline.review import list_review, set_decision
from comfyline.settings import Settings
from comfyline.web import images
from comfyline.web.pages import (
    catalog_of,
    config_of,
    int_param,
    render,
    runner_of,
    running_here,
    start_run,
)

REVIEW_PAGE = 200
"""Tiles per review page: keyboard moves stay instant on a 5,000-image order."""


def routes() -> list[Route]:
    return [
        Route("/o/{key}/review", review_page),
        Route("/o/{key}/review/decide", decide, methods=["POST"]),
        Route("/o/{key}/review/reroll", reroll, methods=["POST"]),
    ]


async def review_page(request: Request) -> Response:
    key = request.path_params["key"]
    page = max(0, int_param(request.query_params.get("page"), 0))
    context = await asyncio.to_thread(_review_context, request, key, page)
    return render(request, "review.html", context)


def _review_context(request: Request, key: str, page: int) -> dict[str, Any]:
    file = catalog_of(request).file(key)
    context: dict[str, Any] = {
        "key": key,
        "page": "review",
        "order_name": file.parent.name,
        "items": [],
        "error": None,
        "versions": {},
        "page_no": page,
        "pages": 1,
    }
    try:
        items = list_review(file, config_of(request).settings)
        sale = load(file).order.sale
    except ComfylineError as exc:
        context["error"] = str(exc)
        return context
    groups: dict[int, list[int]] = defaultdict(list)
    for item in items:
        groups[item.motif].append(item.index)
    shown = items[page * REVIEW_PAGE : (page + 1) * REVIEW_PAGE]
    context["versions"] = _versions(request, key, page)
    context |= {
        "items": shown,
        "pages": max(1, -(-len(items) // REVIEW_PAGE)),
        "groups": {m: g for m, g in groups.items() if len(g) > 1},
        "mode": sale.review if sale is not None else "auto",
        "counts": {
            "approved": sum(1 for i in items if i.decision == "approved"),
            "rejected": sum(1 for i in items if i.decision == "rejected"),
            "flagged": sum(1 for i in items if i.flags),
            "total": len(items),
        },
    }
    return context


async def decide(request: Request) -> Response:
    """Record a decision: JSON ``{"images": [3], "decision": "approved" | "rejected" | null}``
    from the page's script, or a plain form post (``image``, ``decision``) without it."""
    key = request.path_params["key"]
    file = catalog_of(request).file(key)
    as_json = request.headers.get("content-type", "").startswith("application/json")
    if as_json:
        body = await request.json()
        images = [int(i) for i in body.get("images", [])]
        decision = body.get("decision")
    else:
        form = await request.form()
        images = [int_param(str(form.get("image")), -1)]
        decision = str(form.get("decision") or "") or None
    try:
        settings = config_of(request).settings
        changed = await asyncio.to_thread(set_decision, file, settings, images, decision)
    except ComfylineError as exc:
        if not as_json:
            raise
        return JSONResponse({"error": f"{type(exc).__name__}: {exc}"}, status_code=400)
    if as_json:
        return JSONResponse({"changed": changed, "decision": decision})
    return RedirectResponse(f"/o/{key}/review#i{images[0]}", status_code=303)


def _versions(request: Request, key: str, page: int) -> dict[int, list[str]]:
    """The shown images' versions (part of their sha256), by slot index: the page's image URLs
    carry them, so a re-rolled image is never the browser's cached old one."""
    place = catalog_of(request).place(key)
    db = ledger_path(place.output) if place.output is not None else None
    if db is None or not db.is_file():
        return {}
    with LedgerReader.open(db) as view:
        slots = view.done_slots(offset=page * REVIEW_PAGE, limit=REVIEW_PAGE)
    return {s.index: [images.version(h) for h in s.sha256s] for s in slots}


async def reroll(request: Request) -> Response:
    """Re-roll one made image, JSON ``{"image": 3}`` (its ledger index): its file goes to
    ``rerolled/`` and the order runs to make it again with a new seed, started as the order
    page's Start/Resume does (the running line takes it itself). Refused while the order runs
    here: a run holds the order's ledger. Answers JSON; a problem as ``{"error": …}``, 400."""
    key = request.path_params["key"]
    file = catalog_of(request).file(key)
    try:
        body = await request.json()
    except ValueError:
        body = None
    index = body.get("image") if isinstance(body, dict) else None
    if not isinstance(index, int) or isinstance(index, bool):
        return _problem('send JSON {"image": INDEX}, the ledger index of a made image')
    try:
        busy = running_here(request, file)
        if busy is not None:
            raise ConfigError(
                f"order {key} is {busy}: re-roll image {index} when the run has stopped "
                "(wait for it, or Cancel it on the order's page)"
            )
        settings = config_of(request).settings
        output = catalog_of(request).place(key).output
        done, after = await asyncio.to_thread(_request_reroll, file, output, settings, index)
        job = runner_of(request).job(file)
        run = "waits to run here" if job is not None and job.active else start_run(request, file)
    except ComfylineError as exc:
        return _problem(f"{type(exc).__name__}: {exc}")
    item = done[0]
    moved = ", ".join(item.moved_to)
    return JSONResponse(
        {
            "image": item.index,
            "generation": item.generation,
            "old_seed": item.old_seed,
            "new_seed": item.new_seed,
            "moved_to": list(item.moved_to),
            "run": run,
            "after": after,
            "message": (
                f"image {item.index}: re-roll {item.generation}, seed {item.old_seed} → "
                f"{item.new_seed}; the old file moved to {moved} in the order's output "
                f"folder; the order {run}"
            ),
        }
    )


def _request_reroll(
    file: Path, output: Path | None, settings: Settings, index: int
) -> tuple[list[Rerolled], int]:
    """Re-roll slot ``index`` of the order; also the ledger's last event id after it (the page's
    event stream starts there and sees the new image made)."""
    if output is None:  # the order does not load: its problem, named by field
        load(file)
        raise ConfigError(f"order {file.parent.name} does not load, so it has no images")
    done = request_reroll(file, [index], settings=settings, output=output)
    with LedgerReader.open(ledger_path(output)) as view:
        return done, view.last_event_id()


def _problem(text: str) -> JSONResponse:
    return JSONResponse({"error": text}, status_code=400)
