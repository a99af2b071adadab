"""The review page: a grid and a 100 % loupe over ``comfyline.review``; each decision is saved
to the ledger at once (``review.set_decision``), also while the order runs."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from comfyline.errors import ComfylineError
from comfyline.orders import load
from comfyline.review import list_review, set_decision
from comfyline.web.pages import catalog_of, config_of, int_param, render

REVIEW_PAGE = 200
"""Tiles per review page: keyboard moves stay instant on a 5,000-image order."""
REROLL_NOTE = (
    "Re-roll is not available yet: remaking a rejected image with the next seed comes with "
    "the order-history work. Reject it now; it will not be sold."
)


def routes() -> list[Route]:
    return [
        Route("/o/{key}/review", review_page),
        Route("/o/{key}/review/decide", decide, methods=["POST"]),
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
        "reroll_note": REROLL_NOTE,
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
