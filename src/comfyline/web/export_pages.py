"""The export page over ``comfyline.exporting``: choose markets, see every problem the
packages would have, run the export (as a task in the server), download a package as a zip
(``comfyline.exports.zip_package``)."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from comfyline.errors import ComfylineError, ExportProblem
from comfyline.exporting import EXPORT_DIR, check_export, export_order
from comfyline.exports import MARKETS, zip_package
from comfyline.ledger import LEDGER_DIR
from comfyline.orders import load
from comfyline.web.pages import catalog_of, config_of, render

ZIP_DIR = "zips"
_log = logging.getLogger(__name__)


@dataclass
class ExportJob:
    """One export started from the page."""

    markets: list[str]
    state: str = "running"
    """running, finished, failed."""
    lines: deque[str] = field(default_factory=lambda: deque(maxlen=200))
    error: str | None = None
    summary: list[str] = field(default_factory=list)
    task: asyncio.Task[None] | None = None

    def to_json(self) -> dict[str, Any]:
        return {"state": self.state, "error": self.error, "lines": list(self.lines)[-30:]}


def routes() -> list[Route]:
    return [
        Route("/o/{key}/export", export_page, methods=["GET", "POST"]),
        Route("/o/{key}/export/status", export_status),
        Route("/o/{key}/export/{market}.zip", download),
    ]


def _jobs(request: Request) -> dict[Path, ExportJob]:
    if not hasattr(request.app.state, "exports"):
        request.app.state.exports = {}
    jobs: dict[Path, ExportJob] = request.app.state.exports
    return jobs


async def export_page(request: Request) -> Response:
    key = request.path_params["key"]
    file = catalog_of(request).file(key)
    if request.method == "POST":
        form = await request.form()
        markets = [str(m) for m in form.getlist("market") if str(m) in MARKETS]
        skip = form.get("skip_invalid") == "on"
        _start(request, file, markets, skip)
        return RedirectResponse(f"/o/{key}/export?{_query(markets)}", status_code=303)
    asked = request.query_params.getlist("market")
    context = await asyncio.to_thread(_context, request, key, file, asked)
    return render(request, "export.html", context)


def _query(markets: list[str]) -> str:
    return "&".join(f"market={m}" for m in markets)


def _context(request: Request, key: str, file: Path, asked: list[str]) -> dict[str, Any]:
    settings = config_of(request).settings
    context: dict[str, Any] = {
        "key": key,
        "page": "export",
        "order_name": file.parent.name,
        "markets": list(MARKETS.values()),
        "chosen": [m for m in asked if m in MARKETS],
        "problems": None,
        "error": None,
        "job": _jobs(request).get(file),
        "packages": [],
    }
    try:
        sale = load(file).order.sale
        if not context["chosen"] and sale is not None:
            context["chosen"] = [m for m in sale.markets if m in MARKETS]
        if context["chosen"]:
            problems = check_export(file, settings, context["chosen"])
            context["problems"] = _by_market(problems)
    except ComfylineError as exc:
        context["error"] = f"{type(exc).__name__}: {exc}"
    context["packages"] = _packages(request, key)
    return context


def _by_market(problems: list[ExportProblem]) -> dict[str, list[ExportProblem]]:
    grouped: dict[str, list[ExportProblem]] = {}
    for problem in problems:
        grouped.setdefault(problem.market, []).append(problem)
    return grouped


def _packages(request: Request, key: str) -> list[dict[str, Any]]:
    """The market folders an export wrote, with their JPEG and CSV counts."""
    output = catalog_of(request).place(key).output
    if output is None:
        return []
    found = []
    for market in MARKETS:
        folder = output / EXPORT_DIR / market
        if folder.is_dir():
            files = [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")]
            jpegs = sum(1 for p in files if p.suffix.lower() in (".jpg", ".jpeg"))
            csvs = [p.name for p in files if p.suffix == ".csv"]
            found.append({"market": market, "jpegs": jpegs, "csvs": csvs})
    return found


def _start(request: Request, file: Path, markets: list[str], skip_invalid: bool) -> None:
    jobs = _jobs(request)
    current = jobs.get(file)
    if current is not None and current.state == "running":
        return  # one export of an order at a time; the page shows the running one
    job = ExportJob(markets)
    config = config_of(request)

    async def run() -> None:
        try:
            result = await export_order(
                file,
                config.settings,
                markets,
                sim=config.sim,
                skip_invalid=skip_invalid,
                notify=job.lines.append,
            )
        except ComfylineError as exc:
            job.state, job.error = "failed", f"{type(exc).__name__}: {exc}"
            return
        except Exception as exc:  # a bug: logged with its traceback, not shown
            _log.exception("export of %s failed", file)
            job.state = "failed"
            job.error = f"unexpected {type(exc).__name__} (the server's log has the details)"
            return
        for market, package in result.package.packages.items():
            job.summary.append(f"{market}: {len(package.files)} images in {package.folder.name}/")
        job.summary += [f"left out: {n} {why}" for why, n in result.left_out.items()]
        job.summary += [f"skipped: {p}" for p in result.package.skipped]
        job.summary += [f"note: {n}" for n in result.notes]
        job.state = "finished"

    job.task = asyncio.create_task(run(), name=f"export {file.parent.name}")
    jobs[file] = job


async def export_status(request: Request) -> Response:
    file = catalog_of(request).file(request.path_params["key"])
    job = _jobs(request).get(file)
    return JSONResponse(job.to_json() if job is not None else {"state": "none"})


async def download(request: Request) -> Response:
    key, market = request.path_params["key"], request.path_params["market"]
    output = catalog_of(request).place(key).output
    # The market is looked up among the known ones: never a path from the browser.
    if market not in MARKETS or output is None:
        raise HTTPException(404, f"no package {market!r}")
    folder = output / EXPORT_DIR / MARKETS[market].key
    if not folder.is_dir():
        raise HTTPException(404, f"no {market} package yet: run the export first")
    dest = output / LEDGER_DIR / ZIP_DIR / f"{market}.zip"
    dest.parent.mkdir(parents=True, exist_ok=True)
    archive = await asyncio.to_thread(zip_package, folder, dest)
    name = f"{output.name}-{market}.zip"
    return FileResponse(archive, media_type="application/zip", filename=name)
