"""An order's history instead of a lock: what an edit means for the images already made.

Every run compares the order with what its ledger recorded and says which case it is before
it acts (:func:`survey`, :meth:`Survey.message`):

- **resume**: nothing that shapes the images changed;
- **grown**: ``count`` went up: new slots are appended with the next indexes, their seeds from
  the order's seed policy; the slots recorded are untouched;
- **shrunk**: ``count`` went down: the slots beyond it that are not made are dropped, the made
  ones kept and listed (never deleted);
- **restart**: what the images are changed before any prompt was sent: the order starts over;
- **revision**: what the images are changed (prompt, negative, seed policy, level, workflow,
  checkpoint, the entries, a file the order reads): a new revision starts. The old ledger is
  copied to ``.comfyline/revisions/r<N>/`` with the report, sheets and chart of that moment, its
  images stay where they are, and the new revision's images go to ``<output>/r<N+1>/``.

Sale data, quality thresholds, priority, schedule and the naming of future images are safe
edits: they apply on the next run. A revision switch is crash-safe: the copy is made (again,
identically) until the one transaction that starts the new revision commits.

Images set aside (a re-roll, a simulator's images in a real run) are recorded in the ledger
first, then moved by :func:`settle_moves`, which every run calls: a crash between the two is
finished by the next run.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from comfyline.errors import OutputError
from comfyline.images import sha256_hex, write_atomic
from comfyline.ledger import Ledger, SlotRecord, SlotState
from comfyline.orders import LoadedOrder, Placed, Plan, plan

SAFE_FIELDS = frozenset(
    {"title", "description", "sale", "qc", "priority", "schedule", "count", "output"}
)
"""Order keys whose edits keep the images made: they apply on the next run. (``output.folder``
names another folder, hence another ledger: a fresh order.)"""
REVISIONS_DIR = "revisions"
"""Below the ledger's folder: ``revisions/r<N>/`` holds revision N's ledger and report."""
SIMULATED_DIR = "simulated"
"""Where a real run moves the simulator's images (below the output folder)."""
REROLLED_DIR = "rerolled"
"""Where a re-roll moves the images it replaces (below the output folder)."""
_ARCHIVED = ("generation_report.json", "run_chart.png", "contact_sheet.png")


def identity(loaded: LoadedOrder) -> dict[str, str]:
    """What the order's images are, one hash per order key (``files``: the files it reads),
    leaving out the safe fields (:data:`SAFE_FIELDS`)."""
    data = loaded.order.model_dump(mode="json", exclude=set(SAFE_FIELDS))
    parts = {key: _hash(json.dumps(value, sort_keys=True)) for key, value in data.items()}
    parts["files"] = loaded.sources_sha256
    return parts


def fingerprint_of(parts: dict[str, str]) -> str:
    """One hash over :func:`identity`."""
    return _hash(json.dumps(parts, sort_keys=True))


def legacy_fingerprint(loaded: LoadedOrder) -> str:
    """The fingerprint ledgers recorded before revisions (count and naming included)."""
    exclude = {"title", "description", "sale", "qc", "priority", "schedule"}
    text = loaded.order.model_dump_json(exclude=exclude) + loaded.sources_sha256
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def revision_folder(revision: int) -> str:
    """Where revision ``revision``'s images go, relative to the output folder."""
    return "" if revision <= 1 else f"r{revision}"


@dataclass(frozen=True)
class Survey:
    """What a run finds: the case, and what it will do about it."""

    kind: str  # new | resume | grown | shrunk | restart | revision
    order_id: str
    revision: int
    fields: tuple[str, ...] = ()
    added: tuple[int, ...] = ()
    dropped: tuple[int, ...] = ()
    kept: tuple[str, ...] = ()
    """Files of done slots beyond the new count: kept."""
    made: int = 0
    """Images the current revision has made."""
    plan: Plan | None = field(default=None, compare=False)

    def message(self, out: Path) -> str | None:
        """The line the run prints before it acts (None for a new order: the banner says it)."""
        who = f"order {self.order_id!r}"
        if self.kind == "resume":
            return None
        if self.kind == "grown" or (self.kind == "shrunk" and self.added):
            line = f"{who}: grown by {len(self.added)} slot(s) (indexes {_span(self.added)}); "
            return line + f"the {self.made} image(s) made are kept"
        if self.kind == "shrunk":
            line = f"{who}: shrunk: {len(self.dropped)} slot(s) not made are dropped"
            if self.dropped:
                line += f" ({_span(self.dropped)})"
            if self.kept:
                line += f"; {len(self.kept)} made beyond the new count are kept: "
                line += ", ".join(self.kept[:5]) + (" ..." if len(self.kept) > 5 else "")
            return line
        changed = ", ".join(self.fields) or "its content"
        if self.kind == "restart":
            return (
                f"{who}: edited before any prompt was sent ({changed} changed): it starts over "
                "with the new content"
            )
        if self.kind == "revision":
            old = self.revision - 1
            where = out / revision_folder(self.revision)
            return (
                f"{who}: new revision r{self.revision} because {changed} changed; revision "
                f"r{old} ({self.made} image(s) in {out / revision_folder(old)}) is kept, "
                f"listed in the report; r{self.revision}'s images go to {where}"
            )
        return None


def survey(
    loaded: LoadedOrder,
    slots: Sequence[SlotRecord],
    *,
    stored_fingerprint: str | None,
    stored_identity: dict[str, str] | None,
    revision: int,
    seed_base: int | None,
) -> Survey:
    """Compare the order with what its ledger recorded (nothing recorded: a new order)."""
    order_id = loaded.order.id
    made = sum(len(s.files) for s in slots if s.state is SlotState.DONE)
    if stored_fingerprint is None:
        return Survey("new", order_id, revision)
    parts = identity(loaded)
    if stored_identity is not None:
        fields = tuple(
            _field_name(k)
            for k in sorted(parts.keys() | stored_identity.keys())
            if parts.get(k) != stored_identity.get(k)
        )
    elif stored_fingerprint in ("", fingerprint_of(parts), legacy_fingerprint(loaded)):
        fields = ()
    else:
        fields = ("the order (its ledger is from an older comfyline and records no detail)",)
    if fields:
        never_sent = all(s.attempt == 0 for s in slots)
        kind = "restart" if never_sent else "revision"
        return Survey(kind, order_id, revision + (kind == "revision"), fields, made=made)
    the_plan = plan_with(loaded, slots, seed_base)
    planned = {s.index for s in the_plan.slots}
    recorded = {s.index: s for s in slots}
    added = tuple(sorted(planned - recorded.keys()))
    beyond = [recorded[i] for i in sorted(recorded.keys() - planned)]
    dropped = tuple(s.index for s in beyond if s.state is not SlotState.DONE)
    kept = tuple(f for s in beyond if s.state is SlotState.DONE for f in s.files)
    kind = "shrunk" if beyond else "grown" if added and recorded else "resume"
    if not recorded:
        kind = "new"
    return Survey(kind, order_id, revision, (), added, dropped, kept, made, the_plan)


def plan_with(loaded: LoadedOrder, slots: Sequence[SlotRecord], seed_base: int | None) -> Plan:
    """The order's plan with its recorded slots in place (their indexes, seeds, file names)."""
    placed = {
        (s.prompt_index, s.repeat): Placed(s.index, s.seed, s.stem)
        for s in slots
        if s.prompt_index is not None and s.repeat is not None
    }
    if slots and not placed:  # a ledger from before slots recorded their place
        return plan(loaded, random_base=seed_base)
    return plan(loaded, random_base=seed_base, placed=placed, taken={s.index for s in slots})


def archive(ledger: Ledger, out: Path) -> str:
    """Copy the current revision's ledger and its report, sheet and chart to
    ``.comfyline/revisions/r<N>/``; the folder, relative to the output folder. Safe to repeat."""
    number = ledger.revision()
    folder = ledger.path.parent / REVISIONS_DIR / f"r{number}"
    folder.mkdir(parents=True, exist_ok=True)
    ledger.copy_to(folder / ledger.path.name)
    sheets = sorted(p.name for p in out.glob("contact_sheet_*.png"))
    for name in (*_ARCHIVED, *sheets):
        source = out / name
        if source.is_file():
            try:
                write_atomic(folder / name, source.read_bytes())
            except OSError as exc:
                raise OutputError(f"cannot keep {source} in {folder}: {exc}") from exc
    return folder.relative_to(out).as_posix()


def start_revision(ledger: Ledger, loaded: LoadedOrder, out: Path, fields: Sequence[str]) -> int:
    """Keep the current revision (:func:`archive`) and start the next; its number."""
    kept = archive(ledger, out)
    parts = identity(loaded)
    return ledger.start_revision(
        fingerprint_of(parts),
        parts,
        reason=", ".join(fields) + " changed",
        folder=revision_folder(ledger.revision()) or ".",
        archive=kept,
    )


def settle_moves(ledger: Ledger, out: Path, notify: Callable[[str], None]) -> int:
    """Move the images the ledger set aside (a re-roll, a simulator's in a real run) that are
    still in place: each file whose bytes are the recorded ones goes to its recorded place.
    Returns how many moved. Only slots not done again: their new files may bear the old names.
    """
    moved = 0
    for slot in ledger.iter_slots():
        if slot.state is SlotState.DONE or not slot.history:
            continue
        entry = slot.history[-1]
        pairs = zip(entry.get("files", ()), entry.get("moved_to", ()), strict=False)
        for (old, new), sha in zip(pairs, entry.get("sha256s", ()), strict=False):
            source, target = out / old, out / new
            if not source.is_file() or sha256_hex(source.read_bytes()) != sha:
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.replace(source, target)
            except OSError as exc:
                raise OutputError(f"cannot move {source} to {target}: {exc}") from exc
            moved += 1
    if moved:
        notify(f"{moved} earlier image(s) moved aside (see the report's 'history')")
    return moved


def aside_name(folder: str, file: str, generation: int = 0) -> str:
    """Where an image set aside goes: ``<folder>/<its path>``, with ``.g<N>`` before ``.png``
    for a re-roll's generation N (one file per generation, none overwritten)."""
    path = Path(file)
    name = path.name if not generation else f"{path.stem}.g{generation}{path.suffix}"
    return (Path(folder) / path.parent / name).as_posix()


def remove_empty(folder: Path) -> None:
    """Remove ``folder`` if it is empty (a revision that made nothing)."""
    with contextlib.suppress(OSError):
        folder.rmdir()


def _field_name(key: str) -> str:
    return {"files": "a file it reads (CSV, profile or workflow)"}.get(key, key)


def _span(indexes: Sequence[int]) -> str:
    if not indexes:
        return ""
    if list(indexes) == list(range(indexes[0], indexes[-1] + 1)) and len(indexes) > 2:
        return f"{indexes[0]}-{indexes[-1]}"
    return ", ".join(map(str, indexes))


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
