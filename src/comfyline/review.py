"""Review: the user's decision per image (approve, reject, undo), kept in the order's ledger.

An order with ``sale.review: required`` sells only the images approved here; with ``auto`` (the
default) every image that passed the quality checks, less the rejected ones. Decisions are
written at once, in one short transaction, also while a runner works on the order (SQLite
serialises the writers), so the command line and the web page can review during a run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from comfyline.errors import ConfigError
from comfyline.ledger import SlotRecord, SlotState, ledger_path, read_slots, record_review
from comfyline.orders import LoadedOrder, load
from comfyline.quality import group_near_duplicates
from comfyline.settings import Settings

DECISIONS = ("approved", "rejected")


@dataclass(frozen=True)
class ReviewItem:
    """One made image (slot) as the review shows it."""

    index: int
    files: tuple[str, ...]
    seed: int
    title: str | None
    flags: tuple[str, ...]
    """What the quality checks found (empty: it passed)."""
    duplicate_of: str | None
    motif: int
    """Near-duplicates share a motif number (the index of the first of them)."""
    decision: str | None

    @property
    def sellable(self) -> bool:
        """Passed the checks and was not rejected (``auto`` review sells these)."""
        return not self.flags and self.decision != "rejected"


def list_review(order_file: Path, settings: Settings) -> list[ReviewItem]:
    """Every made image of the order, with its checks, motif group and decision."""
    loaded, db = _ledger_of(order_file, settings)
    return review_items(read_slots(db), loaded.order.qc.duplicate_distance)


def review_items(slots: Sequence[SlotRecord], duplicate_distance: int | None) -> list[ReviewItem]:
    """:class:`ReviewItem` s of the done ``slots`` (motifs from their perceptual hashes)."""
    done = [s for s in slots if s.state is SlotState.DONE]
    hashes = {s.index: s.qc[0]["phash"] for s in done if s.qc and s.qc[0].get("phash")}
    motif = {s.index: s.index for s in done}
    if duplicate_distance is not None:
        for group in group_near_duplicates(hashes, duplicate_distance):
            for index in group:
                motif[index] = group[0]
    return [
        ReviewItem(
            index=s.index,
            files=s.files,
            seed=s.seed,
            title=s.title,
            flags=tuple(flag for check in s.qc for flag in check.get("flags", ())),
            duplicate_of=next((c["duplicate_of"] for c in s.qc if c.get("duplicate_of")), None),
            motif=motif[s.index],
            decision=s.review,
        )
        for s in done
    ]


def set_decision(
    order_file: Path, settings: Settings, images: Sequence[str | int], decision: str | None
) -> list[int]:
    """Record ``decision`` (approved, rejected, or None to undo) for ``images`` (file names,
    with or without ``.png``, or slot indexes); the slot indexes changed."""
    if decision is not None and decision not in DECISIONS:
        raise ConfigError(f"a decision is approved or rejected, not {decision!r}")
    _, db = _ledger_of(order_file, settings)
    indexes = resolve_images(read_slots(db), images)
    return record_review(db, indexes, decision)


def resolve_images(slots: Sequence[SlotRecord], images: Sequence[str | int]) -> list[int]:
    """The slot indexes ``images`` name: made images' file names (``.png`` optional) or
    indexes. :class:`ConfigError` naming each one that matches no made image."""
    by_name: dict[str, int] = {}
    done = {s.index for s in slots if s.state is SlotState.DONE}
    for slot in slots:
        for file in slot.files:
            name = Path(file).name
            by_name[name] = by_name[Path(name).stem] = slot.index
    found, unknown = [], []
    for image in images:
        text = str(image)
        if text in by_name:
            found.append(by_name[text])
        elif text.isdigit() and int(text) in done:
            found.append(int(text))
        else:
            unknown.append(text)
    if unknown:
        raise ConfigError(
            f"no made image is called {', '.join(map(repr, unknown))}; name images by their "
            "file name (e.g. 0003_123456.png) or slot index, as 'comfyline review PATH --list' "
            "shows them"
        )
    return list(dict.fromkeys(found))


def _ledger_of(order_file: Path, settings: Settings) -> tuple[LoadedOrder, Path]:
    from comfyline.pipeline import output_dir

    loaded = load(order_file)
    db = ledger_path(output_dir(loaded.order, settings))
    if not db.exists():
        raise ConfigError(
            f"order {loaded.order.id!r} has made no images yet (no ledger at {db}); run it "
            f"first: comfyline run-order {loaded.file}"
        )
    return loaded, db
