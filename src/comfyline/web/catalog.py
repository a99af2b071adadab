"""The orders the dashboard shows: every ``project.yaml`` below its orders folder, each under a
key for its URLs. A key is looked up in what was found on disk; no path from the browser is
ever opened."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from comfyline.errors import ComfylineError, LedgerError
from comfyline.orders import find_orders, load
from comfyline.settings import Settings
from comfyline.status import OrderRow, order_row


class UnknownOrder(LookupError):
    """No order under this key (the page answers 404)."""


@dataclass(frozen=True)
class OrderPlace:
    """Where an order's files are: its ``project.yaml`` and (if it loads) its output folder."""

    key: str
    file: Path
    output: Path | None


class Catalog:
    """Finds orders under ``orders_dir`` and remembers each one's output folder (reading an
    order file for each of 5,000 thumbnails would be slow); an edited file is read again."""

    def __init__(self, orders_dir: Path, settings: Settings) -> None:
        self.orders_dir = orders_dir
        self.settings = settings
        self._outputs: dict[Path, tuple[tuple[int, int], Path | None]] = {}

    def files(self) -> dict[str, Path]:
        """Every order file below the folder, by key (its folder, ``/`` written ``~``)."""
        if not self.orders_dir.is_dir():
            return {}
        found, _ = find_orders([self.orders_dir])
        return {self.key(file): file for file in found}

    def key(self, file: Path) -> str:
        relative = file.parent.relative_to(self.orders_dir).as_posix()
        return self.orders_dir.name if relative == "." else relative.replace("/", "~")

    def file(self, key: str) -> Path:
        """The order file under ``key``; :class:`UnknownOrder` if there is none."""
        # Found on disk, not built from the key: a key can never name another path.
        file = self.files().get(key)
        if file is None:
            raise UnknownOrder(key)
        return file

    def place(self, key: str) -> OrderPlace:
        """The order's file and output folder (None while the order does not load)."""
        file = self.file(key)
        return OrderPlace(key, file, self._output(file))

    def rows(self) -> list[tuple[str, Path, OrderRow]]:
        """Each order's status row (``comfyline status``'s), with its key and file."""
        return [(k, f, self._row(f)) for k, f in self.files().items()]

    def row(self, key: str) -> OrderRow:
        return self._row(self.file(key))

    def _row(self, file: Path) -> OrderRow:
        try:
            return order_row(file, self.settings)
        except LedgerError:
            # A runner is making its ledger this moment (no tables yet): it is about to run.
            return OrderRow(file.parent.name, str(file), "queued")

    def new_order_folder(self, order_id: str) -> Path:
        """Where the new-order form puts an order with this (already checked) id."""
        return self.orders_dir / order_id

    def _output(self, file: Path) -> Path | None:
        from comfyline.pipeline import output_dir

        try:
            stat = os.stat(file)
        except OSError:
            return None
        signature = (stat.st_mtime_ns, stat.st_size)
        cached = self._outputs.get(file)
        if cached is not None and cached[0] == signature:
            return cached[1]
        try:
            out: Path | None = output_dir(load(file).order, self.settings)
        except ComfylineError:
            out = None
        self._outputs[file] = (signature, out)
        return out
