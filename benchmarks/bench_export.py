"""Benchmark: export N images to the four marketplaces on the CPU (Lanczos path).

It makes ``--count`` small synthetic PNGs (``--size`` px square, a textured scene of coloured
spots), then runs ``build_package`` in a child process to adobe, freepik, dreamstime and 123rf:
each image is upscaled with Lanczos to 123RF's 6 MP (2450x2450), encoded once as a quality-95
JPEG, and written four times with each market's IPTC/XMP metadata, plus the four CSVs. Then it
runs the same export again (nothing changed: every file is checked by its SHA-256 and kept).

Reported: wall time per image for both runs (and the encode/commit split of the first), the
child's peak memory (max RSS), and the package's size on disk.

    python benchmarks/bench_export.py                # 100 images (about a minute on 2 cores)
    python benchmarks/bench_export.py --count 1000   # the figure in docs/BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image, ImageDraw

MARKETS = "adobe,freepik,dreamstime,123rf"


def make_sources(folder: Path, count: int, size: int) -> None:
    """``count`` PNGs of coloured spots, deterministic per index."""
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        rng = random.Random(index)
        image = Image.new("RGB", (size, size), _colour(rng))
        draw = ImageDraw.Draw(image)
        for _ in range(size * size // 440):
            x, y, r = rng.randrange(size), rng.randrange(size), rng.randrange(3, 30)
            draw.ellipse([x, y, x + r, y + r], fill=_colour(rng))
        image.save(folder / f"img_{index:05}.png")


def _colour(rng: random.Random) -> tuple[int, int, int]:
    return rng.randrange(256), rng.randrange(256), rng.randrange(256)


def child(sources: Path, out: Path) -> None:
    """Run the export once and print its timings as JSON (run in a fresh process)."""
    from comfyline.exports import ExportItem, ExportOptions, build_package

    items = [
        ExportItem(
            source=path,
            stem=path.stem,
            title=f"Colourful spots on a plain ground, abstract pattern number {index}",
            description="An abstract pattern of colourful spots on a plain ground, for tests.",
            keywords=["spots", "pattern", "abstract", "background", "colourful", "texture"],
            parameters={"prompt": "colourful spots", "seed": index, "steps": 20},
        )
        for index, path in enumerate(sorted(sources.glob("*.png")))
    ]
    marks: dict[str, float] = {}

    def progress(step: str, done: int, total: int) -> None:
        marks.setdefault(f"{step}_first", time.perf_counter())
        marks[f"{step}_last"] = time.perf_counter()

    start = time.perf_counter()
    result = build_package(items, MARKETS, out, ExportOptions(creator="Bench"), progress=progress)
    end = time.perf_counter()
    print(
        json.dumps(
            {
                "images": len(items),
                "wall_s": end - start,
                "encode_s": marks.get("encode_last", start) - start,
                "commit_s": end - marks.get("encode_last", start),
                "written": sum(p.written for p in result.packages.values()),
                "reused": sum(p.reused for p in result.packages.values()),
                "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            }
        )
    )


def run_child(sources: Path, out: Path) -> dict[str, float]:
    """One export in a fresh process (so its peak memory is its own): its JSON report."""
    done = subprocess.run(
        [sys.executable, __file__, "--child", str(sources), str(out)],
        capture_output=True,
        text=True,
        check=True,
    )
    report: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--size", type=int, default=256, help="side of the square sources, px")
    parser.add_argument("--child", nargs=2, type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    with tempfile.TemporaryDirectory(prefix="bench-export-") as tmp:
        sources, out = Path(tmp) / "src", Path(tmp) / "export"
        made = time.perf_counter()
        make_sources(sources, args.count, args.size)
        took = time.perf_counter() - made
        print(f"made {args.count} PNGs of {args.size}x{args.size} in {took:.1f} s")
        first = run_child(sources, out)
        again = run_child(sources, out)
        on_disk = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    n = first["images"]
    print(f"export of {n} images to {MARKETS} (Lanczos to 2450x2450, JPEG q95):")
    print(
        f"  first run: {first['wall_s']:.1f} s, {1000 * first['wall_s'] / n:.0f} ms per image "
        f"(encode {1000 * first['encode_s'] / n:.0f} ms, commit {1000 * first['commit_s'] / n:.1f} "
        f"ms); {first['written']:.0f} JPEGs written"
    )
    print(
        f"  rerun, nothing changed: {again['wall_s']:.1f} s, "
        f"{1000 * again['wall_s'] / n:.0f} ms per image; {again['reused']:.0f} JPEGs kept"
    )
    print(
        f"  peak memory (max RSS of the export process): {first['peak_mib']:.0f} MiB "
        f"(rerun {again['peak_mib']:.0f} MiB)"
    )
    print(f"  package on disk: {on_disk / 1e9:.2f} GB ({on_disk / n / 4e6:.2f} MB per JPEG)")


if __name__ == "__main__":
    main()
