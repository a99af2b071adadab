"""Benchmark: the ledger's cost per image, and the runner lock's cost per run.

    .venv/bin/python benchmarks/bench_ledger.py [--images 300] [--rounds 5] [--dir DIR]

Per image the runner does what this script does: ``mark_submitted`` (before the POST), writes the
PNG with ``write_atomic`` (temp file, fsync, rename, fsync of the folder), then ``mark_done``.
Each of the three commits or syncs to disk, so the figures are mostly the disk's fsync latency.
Per run: ``Ledger.open`` (take the lock, open SQLite, create the schema) and ``close``.

The files go to a temp folder under ``--dir`` (default: the current folder, so that the disk is
the real one and not a RAM-backed /tmp). Each round uses a fresh ledger; the table gives the
median over rounds of each round's median. To compare two versions, run the script from each
checkout's root (``PYTHONPATH=<checkout>/src``), alternating, on the same machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import comfyline
from comfyline.images import write_atomic
from comfyline.ledger import Ledger, ledger_path, slot_prompt_id

IMAGE_BYTES = 120_000  # about one 512x512 PNG of a real image


@dataclass(frozen=True)
class BenchSlot:
    index: int
    key: str
    prompt: str
    seed: int
    negative: str = ""
    params: dict[str, Any] = field(default_factory=lambda: {"steps": 20, "width": 512})


@dataclass
class Round:
    submitted_ms: list[float] = field(default_factory=list)
    write_ms: list[float] = field(default_factory=list)
    done_ms: list[float] = field(default_factory=list)
    image_ms: list[float] = field(default_factory=list)
    open_close_ms: list[float] = field(default_factory=list)


def one_round(folder: Path, images: int, opens: int) -> Round:
    result = Round()
    db = ledger_path(folder)
    data = os.urandom(IMAGE_BYTES)
    with Ledger.open(db, "bench", "fp") as ledger:
        ledger.ensure_slots(BenchSlot(i, f"k{i}", f"prompt {i}", 1000 + i) for i in range(images))
        for i in range(images):
            t0 = time.perf_counter()
            ledger.mark_submitted(i, slot_prompt_id("bench", i, 1), 1)
            t1 = time.perf_counter()
            write_atomic(folder / f"{i:04d}.png", data)
            t2 = time.perf_counter()
            ledger.mark_done(i, [f"{i:04d}.png"], ["0" * 64], 1.0)
            t3 = time.perf_counter()
            result.submitted_ms.append((t1 - t0) * 1000)
            result.write_ms.append((t2 - t1) * 1000)
            result.done_ms.append((t3 - t2) * 1000)
            result.image_ms.append((t3 - t0) * 1000)
    for _ in range(opens):
        t0 = time.perf_counter()
        Ledger.open(db, "bench", "fp").close()
        result.open_close_ms.append((time.perf_counter() - t0) * 1000)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=300, help="images per round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds, each on a fresh ledger")
    parser.add_argument("--opens", type=int, default=50, help="Ledger.open + close per round")
    parser.add_argument("--dir", type=Path, default=Path("."), help="where the temp folder goes")
    args = parser.parse_args()

    rounds: list[Round] = []
    for _ in range(args.rounds):
        with tempfile.TemporaryDirectory(prefix="bench-ledger-", dir=args.dir) as tmp:
            rounds.append(one_round(Path(tmp), args.images, args.opens))

    def med(name: str) -> float:
        return statistics.median(statistics.median(getattr(r, name)) for r in rounds)

    def p90(name: str) -> float:
        return statistics.median(statistics.quantiles(getattr(r, name), n=10)[-1] for r in rounds)

    print(
        f"comfyline {Path(comfyline.__file__).parent} on {platform.system()} "
        f"{platform.machine()}, Python {sys.version.split()[0]}: {args.rounds} rounds x "
        f"{args.images} images, {args.opens} opens"
    )
    print("| step | median ms | p90 ms |")
    print("|---|---|---|")
    for label, name in (
        ("mark_submitted", "submitted_ms"),
        ("write_atomic (120 kB)", "write_ms"),
        ("mark_done", "done_ms"),
        ("**per image** (all three)", "image_ms"),
        ("Ledger.open + close (per run)", "open_close_ms"),
    ):
        print(f"| {label} | {med(name):.2f} | {p90(name):.2f} |")


if __name__ == "__main__":
    main()
