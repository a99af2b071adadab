"""Re-roll: make chosen images of an order again with new seeds, keeping the old ones aside.

:func:`request_reroll` records the intent in the ledger first (old files, their hashes, old
and new seed, where the old files go), then moves the old files to ``<output>/rerolled/`` and
leaves the slots to be made; :func:`reroll` does that and runs the order, as ``run-order``
would. A crash at any point is finished by the next run (:func:`comfyline.revisions.settle_moves`
moves what the ledger set aside; the slots are planned, so the run makes them).

A slot's new seed is derived from its first seed and its re-roll generation (1, 2, ...), so a
re-roll is repeatable and recorded: the report's ``history`` lists each earlier image.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

from comfyline import __version__
from comfyline.errors import ConfigError
from comfyline.ledger import Ledger, OrderState, SlotRecord, can_transition, ledger_path
from comfyline.orders import LoadedOrder, load
from comfyline.review import resolve_images
from comfyline.revisions import REROLLED_DIR, aside_name, settle_moves
from comfyline.schemas.order import SEED_MAX
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
            done.append(_reopen(ledger, loaded, slot, stems))
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


def _reopen(ledger: Ledger, loaded: LoadedOrder, slot: SlotRecord, stems: set[str]) -> Rerolled:
    generation = slot.generation + 1
    first = int(slot.history[0]["seed"]) if slot.history else slot.seed
    seed = reroll_seed(first, generation)
    order = loaded.order
    stem = order.output.naming.format(
        index=slot.index, number=slot.index + 1, seed=seed, id=order.id, level=order.quality
    )
    if stem != slot.stem and stem in stems:  # a template without the seed: keep the name
        stem = slot.stem
    stems.add(stem)
    moved = [aside_name(REROLLED_DIR, f, generation) for f in slot.files]
    ledger.reopen(slot.index, reason="reroll", moved_to=moved, seed=seed, stem=stem)
    return Rerolled(slot.index, generation, slot.files, tuple(moved), slot.seed, seed)
