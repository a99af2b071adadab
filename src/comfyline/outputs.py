"""An image file as a run leaves it: parameters embedded, written once, atomically, hashed.

The adapter hands over checked bytes; this writes each one exactly once (a temp file in the
same folder, fsynced, renamed over the final name) with its parameters already inside, and
hashes the bytes it wrote, so nothing is read back. :class:`SlotWriter` does that for each
slot of a run, checks the new images' quality and marks the slot done in the ledger.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from comfyline import reroll
from comfyline.errors import LedgerGone, OutputError
from comfyline.generation import GenerationResult
from comfyline.images import sha256_hex, write_atomic
from comfyline.ledger import Ledger, SlotState
from comfyline.orders import Plan, Slot
from comfyline.quality import QcResult, SeriesChecker
from comfyline.reports.png_metadata import with_parameters
from comfyline.revisions import settle_moves
from comfyline.schemas.order import Order

if TYPE_CHECKING:
    from comfyline.backends import Backend


@dataclass(frozen=True)
class WrittenImage:
    """One file on disk: where, its sha256, and its pixel size."""

    path: Path
    sha256: str
    width: int
    height: int


def image_paths(folder: Path, stem: str, count: int) -> list[Path]:
    """Our own names for a slot's images: ``{stem}.png`` alone, ``{stem}_{i}.png`` (i from 1)
    for a batch. The server's file names are never used as local paths."""
    if count == 1:
        return [folder / f"{stem}.png"]
    return [folder / f"{stem}_{i}.png" for i in range(1, count + 1)]


def write_images(
    folder: Path,
    stem: str,
    images: Sequence[tuple[bytes, int, int]],
    parameters: Mapping[str, Any],
) -> list[WrittenImage]:
    """Write a slot's images ((png bytes, width, height) each) with ``parameters`` embedded:
    all of them, or none (a failure removes the ones already written)."""
    written: list[WrittenImage] = []
    try:
        for path, (data, width, height) in zip(
            image_paths(folder, stem, len(images)), images, strict=True
        ):
            out = with_parameters(data, {**parameters, "width": width, "height": height}, path.name)
            try:
                write_atomic(path, out)
            except OSError as exc:
                raise OutputError(f"cannot write the image {path}: {exc}") from exc
            written.append(WrittenImage(path, sha256_hex(out), width, height))
    except BaseException:
        for image in written:
            image.path.unlink(missing_ok=True)
        raise
    return written


class SlotWriter:
    """Finishes a slot: writes its images once (parameters inside), checks their quality, and
    marks it done in the ledger - the last step of every image of a run. With ``qc.replace`` a
    slot whose images fail the checks is set to be made again (:func:`replace_flagged`);
    ``plan`` then holds its new seed and file name."""

    def __init__(
        self,
        out: Path,
        ledger: Ledger,
        plan: Plan,
        order: Order,
        notify: Callable[[str], None],
        *,
        folder: str = "",
    ) -> None:
        self.out = out
        self.folder = out / folder
        """Where the images go (a revision's own folder); the ledger names them from ``out``."""
        self.ledger = ledger
        self.plan = plan
        self.order = order
        self.notify = notify
        self._ledger_id = _file_id(ledger.path)

    async def finish(
        self, index: int, result: GenerationResult, backend: Backend, checkpoint: str | None
    ) -> None:
        """Write the slot's images once, parameters inside, and mark it done."""
        self._check_ledger_in_place()
        slot = self.plan.slot(index)
        parameters = self._png_parameters(slot, result, backend, checkpoint)
        if not hasattr(self, "qc"):  # the ledger is read here, in the loop's thread
            earlier = {
                file: check["phash"]
                for done in self.ledger.iter_slots(SlotState.DONE)
                for file, check in zip(done.files, done.qc, strict=False)
                if check.get("phash")
            }
            self.qc = SeriesChecker(self.order.qc, earlier)
        self.folder.mkdir(parents=True, exist_ok=True)
        written, checks = await asyncio.to_thread(self._write, slot.stem, result, parameters)
        made = result.request.params
        self.ledger.mark_done(
            index,
            [w.path.relative_to(self.out).as_posix() for w in written],
            [w.sha256 for w in written],
            result.seconds,
            made.model_dump(mode="json") if made != slot.params else None,
            sizes=[(w.width, w.height) for w in written],
            wall_seconds=result.wall_seconds or None,
            checkpoint=checkpoint,
            qc=[c.to_json() for c in checks],
            simulated=backend.simulated,
        )
        for check in checks:
            if not check.ok:
                flags = ", ".join(check.flags)
                more = f" of {check.duplicate_of}" if check.duplicate_of else ""
                self.notify(f"quality: {check.source} is {flags}{more}")
        if self.order.qc.replace and not all(check.ok for check in checks):
            self.replace_flagged([index])  # the scheduler sends it again in this run

    def replace_flagged(self, indexes: Iterable[int] | None = None) -> int:
        """Set the made slots of ``indexes`` (default: all) whose images failed the quality
        checks to be made again, as ``qc.replace`` allows (:func:`reroll.replace_flagged`),
        ``plan`` given their new seeds and file names; then move every file the ledger set
        aside (these, and any a killed run left: :func:`settle_moves`). Returns how many were
        set to be made again; 0 when none (or a limit is reached: the images stay, flagged)."""
        reopened = reroll.replace_flagged(self.ledger, self.order, indexes, notify=self.notify)
        settle_moves(self.ledger, self.out, self.notify)
        if not reopened:
            return 0
        if hasattr(self, "qc"):  # no later image is a near-duplicate of one set aside
            self.qc.forget(n for r in reopened for f in r.old_files for n in (f, Path(f).name))
        new = {r.index: self.ledger.slot(r.index) for r in reopened}
        slots = (
            replace(s, seed=new[s.index].seed, stem=new[s.index].stem) if s.index in new else s
            for s in self.plan.slots
        )
        self.plan = replace(self.plan, slots=tuple(slots))
        return len(reopened)

    def _write(
        self, stem: str, result: GenerationResult, parameters: Mapping[str, Any]
    ) -> tuple[list[WrittenImage], list[QcResult]]:
        """Write the images (in a worker thread), then their black, blank, near-uniform,
        blurry and near-duplicate checks (what to sell is decided at review and export;
        ``qc.replace`` remakes flagged ones)."""
        images = [(i.data, i.width, i.height) for i in result.images]
        written = write_images(self.folder, stem, images, parameters)
        checks = [
            self.qc.check(image.data, w.path.name, image.picture)
            for image, w in zip(result.images, written, strict=True)
        ]
        return written, checks

    def _check_ledger_in_place(self) -> None:
        # A folder deleted (or moved) under a run would take the ledger with it while our open
        # handle writes on into nothing: stop rather than "complete" an order nobody can see.
        if _file_id(self.ledger.path) != self._ledger_id:
            raise LedgerGone(
                f"the order's ledger {self.ledger.path} was deleted or moved while the run was "
                "writing to it (was the output folder removed?); the run stopped. Run the order "
                "again to make what is missing"
            )

    def _png_parameters(
        self, slot: Slot, result: GenerationResult, backend: Backend, checkpoint: str | None
    ) -> dict[str, Any]:
        p = result.request.params
        parameters: dict[str, Any] = {
            "prompt": slot.prompt,
            "negative": slot.negative,
            "seed": slot.seed,
            "steps": p.steps,
            "cfg": p.cfg,
            "sampler": p.sampler,
            "scheduler": p.scheduler,
            "denoise": p.denoise,
            "batch_size": p.batch_size,
            "latent_width": p.width,
            "latent_height": p.height,
            "checkpoint": checkpoint,
            "order": self.order.id,
            "index": slot.index,
            "quality": self.order.quality,
            "prompt_id": result.prompt_id,
            "server": "comfyline simulator" if backend.simulated else backend.url,
        }
        parameters.update(self.order.models_used)
        if slot.title:
            parameters["title"] = slot.title
        if slot.keywords:
            parameters["keywords"] = list(slot.keywords)
        return parameters


def _file_id(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino
