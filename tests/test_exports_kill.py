"""``kill -9`` an export at chosen and at random moments, rerun it: the package must come out
exactly as an uninterrupted run makes it, with no half file at any time.

The export runs in a child process. Chosen moments: the child kills itself from the progress
callback (after encoding image N, after moving file N into a market folder). Random moments:
the parent kills it after a random delay; the seed is printed, ``KILL_TEST_SEED=N`` replays.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from comfyline.exports import ExportItem, ExportOptions, build_package
from comfyline.images import TEMP_SUFFIX
from sale_images import save, scene

MARKETS = "adobe,dreamstime"
CHILD = """
import json, os, signal, sys
from pathlib import Path
from comfyline.exports import ExportItem, ExportOptions, build_package

spec = json.loads(sys.argv[1])
items = [ExportItem(Path(i["source"]), i["stem"], i["title"], i["description"], i["keywords"],
                    i["parameters"]) for i in spec["items"]]
kill_at = tuple(spec["kill_at"]) if spec["kill_at"] else None

def progress(step, done, total):
    if (step, done) == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)

build_package(items, spec["markets"], Path(spec["out"]), ExportOptions(creator="Jane Doe"),
              progress=progress)
"""


def _items(folder: Path) -> list[ExportItem]:
    return [
        ExportItem(
            source=save(scene((512, 768), seed=i), folder / f"src_{i}.png"),
            stem=f"fox_{i:02}",
            title=f"Red fox {i} in fresh snow",
            description=f"A red fox, number {i}, sits in the fresh snow of a quiet forest.",
            keywords=["fox", "snow", "winter", "forest", "animal", f"fox {i}"],
            parameters={"prompt": "a red fox", "seed": i},
        )
        for i in range(4)
    ]


def _spawn(
    items: list[ExportItem], out: Path, kill_at: tuple[str, int] | None
) -> subprocess.Popen[bytes]:
    spec = {
        "items": [
            {
                "source": str(it.source),
                "stem": it.stem,
                "title": it.title,
                "description": it.description,
                "keywords": list(it.keywords),
                "parameters": dict(it.parameters),
            }
            for it in items
        ],
        "markets": MARKETS,
        "out": str(out),
        "kill_at": list(kill_at) if kill_at else None,
    }
    return subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(spec)])


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def _check_no_half_file(out: Path) -> None:
    """Whatever a kill left: every file at a final name in a market folder is complete."""
    for market in MARKETS.split(","):
        folder = out / market
        if not folder.is_dir():
            continue
        for path in folder.iterdir():
            if path.name.endswith(TEMP_SUFFIX):
                continue  # a temp file: never a final name, removed by the next run
            if path.suffix == ".jpg":
                with Image.open(path) as image:
                    image.load()  # raises on a truncated file
            elif path.suffix == ".csv":
                assert path.read_bytes().endswith(b"\r\n")


@pytest.mark.slow
def test_kill_at_chosen_and_random_moments_then_rerun_gives_the_same_package(
    tmp_path: Path,
) -> None:
    raw = os.environ.get("KILL_TEST_SEED")
    seed = int(raw) if raw else random.randrange(2**32)
    print(f"kill test seed: {seed} (replay with KILL_TEST_SEED={seed})")
    rng = random.Random(seed)
    items = _items(tmp_path / "src")
    reference = tmp_path / "reference"
    build_package(items, MARKETS, reference, ExportOptions(creator="Jane Doe"))
    expected = _snapshot(reference)

    out = tmp_path / "export"
    # Each point is reached given the runs before it (a rerun reuses what is in place).
    for kill_at in [("encode", 1), ("encode", 3), ("commit", 1), ("commit", 3)]:
        child = _spawn(items, out, kill_at)
        assert child.wait(timeout=120) == -signal.SIGKILL
        _check_no_half_file(out)
    _finish_and_compare(items, out, expected)

    out = tmp_path / "export-random"
    for _ in range(3):
        child = _spawn(items, out, None)
        time.sleep(rng.uniform(0.5, 3.0))  # a random moment to cut it off, not a wait
        child.kill()
        child.wait(timeout=60)
        _check_no_half_file(out)
    _finish_and_compare(items, out, expected)


def _finish_and_compare(items: list[ExportItem], out: Path, expected: dict[str, bytes]) -> None:
    final = _spawn(items, out, None)
    assert final.wait(timeout=120) == 0
    assert _snapshot(out) == expected
    assert not any(p.name.endswith(TEMP_SUFFIX) for p in out.rglob("*"))
