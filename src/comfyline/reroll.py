"""Re-roll: make chosen images of an order again with new seeds, keeping the old ones aside.

:func:`request_reroll` records the intent in the ledger first (old files, their hashes, old
and new seed, where the old files go), then moves the old files to ``<output>/rerolled/`` and
leaves the slots to be made; :func:`reroll` does that and runs the order, as ``run-order``
would. A crash at any point is finished by the next run (:func:`comfyline.revisions.settle_moves`
moves what the ledger set aside; the slots are planned, so the run makes them).

A slot's new seed is derived from its first seed and its re-roll generation (1, 2, ...), so a
re-roll is repeatable and recorded: the report's ``history`` lists each earlier image.

With ``qc.replace`` an image that fails the quality checks is re-rolled the same way during
the run (:func:`replace_flagged`, history reason ``qc``), bounded per order and per image.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console

from comfyline import __version__
from comfyline.errors import ConfigError
from comfyline.ledger import (
    Ledger,
    OrderState,
    SlotRecord,
    SlotState,
    can_transition,
    ledger_path,
)
from comfyline.orders import LoadedOrder, load
from comfyline.quality import QcSettings
from comfyline.review import resolve_images
from comfyline.revisions import REROLLED_DIR, aside_name, settle_moves
from comfyline.schemas.order import SEED_MAX, Order
from comfyline.settings import Settings

if TYPE_CHECKING:  # the pipeline imports much; it is imported when a re-roll runs
    from comfyline.reports.report import GenerationReport


@dataclass(frozen=True)
class Rerolled:
    """One slot set to be made again: its old files and where they went, old and new seed."""

    index: int
    generation: int
    old_files: tuple[str, ...]
    moved_to: tuple[str, ...]
    old_seed: int
    new_seed: int


def reroll_seed(first_seed: int, generation: int) -> int:
    """The seed of re-roll ``generation`` (1, 2, ...) of a slot whose first seed was
    ``first_seed``: a hash, in ``0..SEED_MAX``."""
    digest = hashlib.sha256(f"comfyline/reroll/{first_seed}/{generation}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & SEED_MAX


def request_reroll(
    order: LoadedOrder | Path,
    images: Sequence[str | int],
    *,
    settings: Settings,
    output: Path | None = None,
    notify: Callable[[str], None] = lambda line: None,
) -> list[Rerolled]:
    """Set the made ``images`` (file names, ``.png`` optional, or slot indexes) of an order
    to be made again with new seeds, their files moved to ``rerolled/``; nothing is generated.
    Raises :class:`ConfigError` naming each image the order has not made."""
    from comfyline.pipeline import output_dir

    loaded = order if isinstance(order, LoadedOrder) else load(order)
    out = output if output is not None else output_dir(loaded.order, settings)
    db = ledger_path(out)
    if not db.is_file():
        raise ConfigError(
            f"order {loaded.order.id!r} has made no images yet (no ledger at {db}); run it "
            f"first: comfyline run-order {loaded.file}"
        )
    if not images:
        raise ConfigError("name the images to re-roll: file names or slot indexes")
    with Ledger.open(db, loaded.order.id, None, comfyline_version=__version__) as ledger:
        slots = ledger.slots()
        indexes = resolve_images(slots, images)
        stems = {s.stem for s in slots}
        done: list[Rerolled] = []
        for index in indexes:
            slot = ledger.slot(index)
            done.append(_reopen(ledger, loaded.order, slot, stems))
        if can_transition(ledger.order().state, OrderState.QUEUED):
            # Images are to be made again: the order is no longer complete (status says so).
            ledger.set_order_state(OrderState.QUEUED)
        settle_moves(ledger, out, notify)
    for item in done:
        notify(
            f"re-roll slot {item.index} (generation {item.generation}): seed {item.old_seed} "
            f"-> {item.new_seed}; {', '.join(item.old_files)} moved to "
            f"{', '.join(str(out / m) for m in item.moved_to)}"
        )
    return done


async def reroll(
    order: LoadedOrder | Path,
    images: Sequence[str | int],
    *,
    settings: Settings,
    sim: bool = False,
    urls: tuple[str, ...] = (),
    output: Path | None = None,
    console: Console | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> GenerationReport:
    """Re-roll ``images`` (:func:`request_reroll`) and run the order to make them (as
    :func:`comfyline.pipeline.generate`, same server options); the order's report."""
    from comfyline.pipeline import generate

    loaded = order if isinstance(order, LoadedOrder) else load(order)
    console = console or Console(stderr=True)

    def say(line: str) -> None:
        console.print(line, highlight=False, markup=False)

    request_reroll(loaded, images, settings=settings, output=output, notify=say)
    return await generate(
        loaded,
        settings=settings,
        sim=sim,
        urls=urls,
        output=output,
        console=console,
        clock=clock,
        sleep=sleep,
    )


# -- replacing images that fail the quality checks (``qc.replace``) ---------------------------


@dataclass(frozen=True)
class QcReplacements:
    """Where an order's QC replacements stand (read from its ledger): how many were made, how
    many it may make in all and per image, and its images still flagged."""

    allowed: int
    per_image: int
    replaced: int
    flagged: int
    """Made images that still fail the checks."""
    exhausted: bool
    """True when a flagged image could have been replaced but the order's budget is spent."""

    @property
    def left(self) -> int:
        """Replacements the order may still make."""
        return max(0, self.allowed - self.replaced)


def qc_replacements(slots: Sequence[SlotRecord], qc: QcSettings) -> QcReplacements:
    """The order's QC replacements, from its ledger's ``slots``."""
    allowed = qc.replace_budget(len(slots))
    replaced = sum(_qc_count(s) for s in slots)
    flagged = [s for s in slots if s.state is SlotState.DONE and s.flagged]
    exhausted = replaced >= allowed and any(
        s.review != "approved" and _qc_count(s) < qc.max_per_image for s in flagged
    )
    return QcReplacements(
        allowed, qc.max_per_image, replaced, len(flagged), qc.replace and exhausted
    )


def replace_flagged(
    ledger: Ledger,
    order: Order,
    indexes: Iterable[int] | None = None,
    *,
    notify: Callable[[str], None] = lambda line: None,
) -> list[Rerolled]:
    """Set each made slot of ``indexes`` (default: all) whose image failed the quality checks to
    be made again with its next re-roll seed, while ``order.qc`` allows (``replace`` on, the
    order's budget and the per-image limit not reached, the image not approved in review).

    Records the intent in the ledger (reason ``qc``, the flags); the caller moves the files
    (:func:`comfyline.revisions.settle_moves`). Deterministic from the ledger, so a run killed
    between a failed check and its replacement is finished by the next run.
    """
    qc = order.qc
    if not qc.replace:
        return []
    slots = ledger.slots()
    left = qc.replace_budget(len(slots)) - sum(_qc_count(s) for s in slots)
    wanted = None if indexes is None else set(indexes)
    stems = {s.stem for s in slots}
    done: list[Rerolled] = []
    for slot in slots:
        if wanted is not None and slot.index not in wanted:
            continue
        if slot.state is not SlotState.DONE or not slot.flagged or slot.review == "approved":
            continue
        files = ", ".join(slot.files)
        if _qc_count(slot) >= qc.max_per_image:
            notify(f"quality: {files} stays flagged: replaced {qc.max_per_image} time(s) already")
            continue
        if left <= 0:
            notify(f"quality: {files} stays flagged: the order's replacements are spent")
            continue
        flags = [list(check.get("flags", ())) for check in slot.qc]
        item = _reopen(ledger, order, slot, stems, reason="qc", detail={"flags": flags})
        left -= 1
        done.append(item)
        notify(
            f"quality: {files} replaced (seed {item.old_seed} -> {item.new_seed}); "
            f"moved to {', '.join(item.moved_to)}"
        )
    return done


def _qc_count(slot: SlotRecord) -> int:
    return sum(1 for entry in slot.history if entry.get("reason") == "qc")


def _reopen(
    ledger: Ledger,
    order: Order,
    slot: SlotRecord,
    stems: set[str],
    *,
    reason: str = "reroll",
    detail: Mapping[str, Any] | None = None,
) -> Rerolled:
    generation = slot.generation + 1
    first = int(slot.history[0]["seed"]) if slot.history else slot.seed
    seed = reroll_seed(first, generation)
    stem = order.output.naming.format(
        index=slot.index, number=slot.index + 1, seed=seed, id=order.id, level=order.quality
    )
    if stem != slot.stem and stem in stems:  # a template without the seed: keep the name
        stem = slot.stem
    stems.add(stem)
    moved = [aside_name(REROLLED_DIR, f, generation) for f in slot.files]
    ledger.reopen(slot.index, reason=reason, moved_to=moved, seed=seed, stem=stem, detail=detail)
    return Rerolled(slot.index, generation, slot.files, tuple(moved), slot.seed, seed)
