"""``comfyline export``: a finished order's images to upload packages, one per marketplace.

1. **select** what is sold: with ``sale.review: required`` the approved images, else every
   image that passed the quality checks; rejected ones never (the report says what was left
   out and why);
2. **upscale** to the strictest selected market's minimum (or ``sale.min_megapixels``): on the
   ComfyUI server through ``builtin:upscale`` when the order names a model
   (``sale.upscale.model``), as prompts like any other (paced by the guard, checked, written
   atomically under ``<output>/upscaled/``; a rerun reuses what is there), else with Lanczos on
   the CPU (with a note that a model gives better results);
3. **package**: :func:`comfyline.exports.build_package` checks every file and row against each
   market's rules first (nothing is written when one breaks them), then writes
   ``<output>/export/<market>/`` with the JPEGs (sRGB, IPTC/XMP, the AI source type) and the
   market's CSV, resumably.

The order's ledger lock is held throughout: no runner works on the order meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from PIL import Image

from comfyline import __version__
from comfyline.backends import Backend, open_backend
from comfyline.comfy.protocol import combo_options
from comfyline.errors import ConfigError, ExportProblem, ModelNotFound
from comfyline.exports import (
    ExportItem,
    ExportOptions,
    PackageResult,
    build_package,
    check_package,
    resolve_markets,
    target_for_markets,
)
from comfyline.generation import GenerationRequest
from comfyline.images import write_atomic
from comfyline.ledger import Ledger, SlotRecord, ledger_path
from comfyline.orders import LoadedOrder, load
from comfyline.presets import params_for
from comfyline.review import ReviewItem, review_items
from comfyline.settings import Settings
from comfyline.workflows.upscale import load_image_name, upscale_graph

EXPORT_DIR = "export"
UPSCALED_DIR = "upscaled"
LANCZOS_NOTE = (
    "upscaled with Lanczos on the CPU: an upscale model on the ComfyUI server "
    "(sale.upscale.model) gives sharper results"
)

Notify = Callable[[str], None]


@dataclass(frozen=True)
class ExportResult:
    """What an export made and left out."""

    package: PackageResult
    selected: int
    left_out: dict[str, int] = field(default_factory=dict)
    """Why images were not sold, with how many: ``rejected``, ``not approved``, a QC flag."""
    upscaled_on: str | None = None
    """The ComfyUI server that upscaled, or None (Lanczos on the CPU)."""
    notes: tuple[str, ...] = ()


def markets_of(loaded: LoadedOrder, markets: Sequence[str] | None) -> list[str]:
    """The markets asked for, else the order's ``sale.markets``; :class:`ConfigError` if none."""
    chosen = [m for m in (markets or ()) if m] or list(
        loaded.order.sale.markets if loaded.order.sale else ()
    )
    if not chosen:
        raise ConfigError(
            f"order {loaded.order.id!r}: name the marketplaces with --market "
            "adobe,freepik,dreamstime,123rf or list them under sale.markets in the order"
        )
    return chosen


def select(
    loaded: LoadedOrder, slots: Sequence[SlotRecord], out: Path
) -> tuple[list[ExportItem], dict[str, int]]:
    """The images to sell, as export items, and why the others were left out."""
    order = loaded.order
    sale = order.sale
    required = sale is not None and sale.review == "required"
    items: list[ExportItem] = []
    left_out: dict[str, int] = {}
    by_index = {s.index: s for s in slots}
    for review in review_items(slots, order.qc.duplicate_distance):
        why = _left_out(review, required)
        if why is not None:
            left_out[why] = left_out.get(why, 0) + 1
            continue
        slot = by_index[review.index]
        for i, file in enumerate(slot.files):
            items.append(_item(loaded, slot, out / file, i, review.motif))
    return items, left_out


def check_export(
    order_file: Path, settings: Settings, markets: Sequence[str] | None = None
) -> list[ExportProblem]:
    """Every rule the order's images would break in each market (nothing is written)."""
    loaded, out = _order(order_file, settings)
    from comfyline.ledger import read_slots

    items, _ = select(loaded, read_slots(ledger_path(out)), out)
    return check_package(items, ",".join(markets_of(loaded, markets)), _options(loaded, settings))


async def export_order(
    order_file: Path,
    settings: Settings,
    markets: Sequence[str] | None = None,
    *,
    sim: bool = False,
    skip_invalid: bool = False,
    notify: Notify = lambda line: None,
) -> ExportResult:
    """Select, upscale and package the order's images (see the module docs); with
    ``skip_invalid``, a market's package leaves out the images that break its rules."""
    loaded, out = _order(order_file, settings)
    chosen = markets_of(loaded, markets)
    market_rules = resolve_markets(",".join(chosen))
    options = replace(_options(loaded, settings), skip_invalid=skip_invalid)
    db = ledger_path(out)
    from comfyline.pipeline import fingerprint

    with Ledger.open(
        db, loaded.order.id, fingerprint(loaded), comfyline_version=__version__
    ) as ledger:
        items, left_out = select(loaded, ledger.slots(), out)
        if not items:
            raise ConfigError(
                f"order {loaded.order.id!r} has no image to sell ({_why(left_out)}); approve "
                f"some with: comfyline review {loaded.file} --approve IMAGE..."
            )
        problems = check_package(items, ",".join(chosen), _options(loaded, settings))
        upscaled_on, notes = None, [LANCZOS_NOTE]
        model = loaded.order.sale.upscale.model if loaded.order.sale else None
        if model and not problems:
            items, upscaled_on = await _upscale_on_comfyui(
                loaded, items, market_rules, model, out, settings, ledger, sim, notify
            )
            notes = []
        ledger.record_event("export.start", detail={"markets": chosen, "images": len(items)})
        package = await asyncio.to_thread(
            build_package, items, ",".join(chosen), out / EXPORT_DIR, options
        )
        ledger.record_event(
            "export.done",
            detail={m: p.written + p.reused for m, p in package.packages.items()},
        )
    return ExportResult(package, len(items), left_out, upscaled_on, (*notes, *package.notes))


# -- the upscale stage on ComfyUI --------------------------------------------------------------


async def _upscale_on_comfyui(
    loaded: LoadedOrder,
    items: list[ExportItem],
    markets: Sequence[Any],
    model: str,
    out: Path,
    settings: Settings,
    ledger: Ledger,
    sim: bool,
    notify: Notify,
) -> tuple[list[ExportItem], str]:
    """Each item below the markets' minimum, upscaled on the server; the items pointing at the
    upscaled files. Files already there at the right size are reused (a rerun after a kill)."""
    min_mp = loaded.order.sale.min_megapixels if loaded.order.sale else None
    todo: list[tuple[int, tuple[int, int], Path]] = []
    result = list(items)
    for n, item in enumerate(items):
        with Image.open(item.source) as image:
            size = image.size
        target = target_for_markets(*size, markets, min_megapixels=min_mp)
        dest = out / UPSCALED_DIR / f"{item.stem}.png"
        if target == size:
            continue
        result[n] = _replace_source(item, dest)
        if _size_of(dest) != target:
            todo.append((n, target, dest))
    if not todo:
        return result, "(already upscaled)"
    async with contextlib.AsyncExitStack() as stack:
        backend = await open_backend(settings, stack, force_sim=sim, notify=notify)
        await _check_model(backend, model, items[todo[0][0]], todo[0][1])
        backend.start_guard(
            settings,
            loaded.order.quality,
            on_event=lambda e: notify(f"guard: {e.message}"),
            clock=asyncio.get_running_loop().time,
            sleep=asyncio.sleep,
        )
        notify(f"upscaling {len(todo)} images with {model} on {backend.url}")
        await _run_upscales(backend, items, todo, model, ledger, notify)
    return result, backend.url


async def _check_model(
    backend: Backend, model: str, item: ExportItem, size: tuple[int, int]
) -> None:
    # The images are not uploaded yet, so LoadImage's file list cannot be checked: the rest is.
    info = await backend.adapter.object_info()
    models = combo_options(info, "UpscaleModelLoader", "model_name")
    if model not in models:
        raise ModelNotFound(model, models, backend.url, kind="upscale model")
    upscale_graph(item.source.name, model, size)  # the target is within ImageScale's range


async def _run_upscales(
    backend: Backend,
    items: Sequence[ExportItem],
    todo: Sequence[tuple[int, tuple[int, int], Path]],
    model: str,
    ledger: Ledger,
    notify: Notify,
) -> None:
    guard = backend.guard
    assert guard is not None
    requests: list[GenerationRequest] = []
    dests: dict[str, Path] = {}
    for n, target, dest in todo:
        item = items[n]
        ref = await backend.adapter.client.upload_image(
            f"comfyline-{item.stem}.png", item.source.read_bytes()
        )
        graph = upscale_graph(load_image_name(ref), model, target)
        prompt_id = str(uuid.uuid4())
        dests[prompt_id] = dest
        requests.append(
            GenerationRequest(
                prompt="", seed=0, params=params_for("preview"), prompt_id=prompt_id, prebuilt=graph
            )
        )
    watcher = asyncio.create_task(guard.watch())
    try:
        batch = backend.adapter.generate_batch(
            requests, gate=guard.before_prompt, on_settled=guard.prompt_settled
        )
        async with contextlib.aclosing(batch) as results:
            async for result in results:
                await guard.after_prompt(len(result.images))
                if result.error is not None:
                    raise result.error
                dest = dests[result.prompt_id]
                await asyncio.to_thread(write_atomic, dest, result.images[0].data)
                ledger.record_event("upscale.done", detail={"file": dest.name})
                notify(
                    f"upscaled {dest.name} to {result.images[0].width}x{result.images[0].height}"
                )
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)


def _size_of(path: Path) -> tuple[int, int] | None:
    try:
        with Image.open(path) as image:
            return image.size
    except (OSError, ValueError):
        return None


# -- helpers -----------------------------------------------------------------------------------


def _order(order_file: Path, settings: Settings) -> tuple[LoadedOrder, Path]:
    from comfyline.pipeline import output_dir

    loaded = load(order_file)
    out = output_dir(loaded.order, settings)
    if not ledger_path(out).exists():
        raise ConfigError(
            f"order {loaded.order.id!r} has made no images yet; run it first: "
            f"comfyline run-order {loaded.file}"
        )
    return loaded, out


def _options(loaded: LoadedOrder, settings: Settings) -> ExportOptions:
    sale = loaded.order.sale
    return ExportOptions(
        creator=settings.creator,
        copyright=settings.copyright,
        min_megapixels=sale.min_megapixels if sale else None,
        max_per_motif=sale.max_per_motif if sale else None,
    )


def _left_out(review: ReviewItem, required: bool) -> str | None:
    if review.decision == "rejected":
        return "rejected"
    if required and review.decision != "approved":
        return "not approved (sale.review: required)"
    if review.flags and review.decision != "approved":
        return "quality: " + ", ".join(review.flags)
    return None


def _item(loaded: LoadedOrder, slot: SlotRecord, source: Path, i: int, motif: int) -> ExportItem:
    order = loaded.order
    sale = order.sale
    title = slot.title or order.title or slot.prompt.split(",")[0]
    stem = source.stem
    parameters = {
        "prompt": slot.prompt,
        "negative": slot.negative,
        "seed": slot.seed,
        **(slot.made_with or slot.params),
        "checkpoint": slot.checkpoint,
        "order": order.id,
        "index": slot.index,
    }
    score = float(slot.qc[i].get("score") or 0.0) if i < len(slot.qc) else 0.0
    return ExportItem(
        source=source,
        stem=stem,
        title=title,
        description=(sale.description if sale and sale.description else title),
        keywords=tuple(slot.keywords),
        parameters=parameters,
        motif=str(motif),
        score=score,
    )


def _replace_source(item: ExportItem, source: Path) -> ExportItem:
    return replace(item, source=source)


def _why(left_out: dict[str, int]) -> str:
    return "; ".join(f"{n} {why}" for why, n in left_out.items()) or "none made"


__all__ = [
    "EXPORT_DIR",
    "ExportResult",
    "check_export",
    "export_order",
    "markets_of",
    "select",
]
