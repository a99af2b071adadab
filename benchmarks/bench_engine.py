"""Engine throughput against the simulator: does the server ever wait on us?

    .venv/bin/python benchmarks/bench_engine.py [--images 200] [--baseline-images 20]

The simulator takes a fixed 50 ms per prompt (no per-step time) and the level's pause is 0, so
any time above ``images x 50 ms`` is the client's overhead. The simulator measures, per prompt,
when it started and ended; the gap between one prompt ending and the next starting is time the
"GPU" sat idle. Goals: total <= +2 % over ``images x 50 ms``; median gap < 10 ms.

The baseline is the seed's loop (stage 1): POST a prompt, poll ``/history`` every 1 s until it
is there, fetch the image, sleep 2 s. It is run on fewer images and extrapolated per image (said
so in its row); a second baseline row drops the 2 s sleep to show what the polling alone costs.
Prints markdown table rows for docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from comfyline.comfy import ComfyUIAdapter
from comfyline.generation import GenerationRequest
from comfyline.preflight import preflight
from comfyline.presets import params_for
from comfyline.settings import Settings
from comfyline.sim import SimConfig, running_simulator
from comfyline.workflows import build_graph

PROMPT_S = 0.050


@dataclass(frozen=True)
class Row:
    """One measured run."""

    name: str
    images: int
    total_s: float
    median_gap_ms: float | None
    server_ms: float | None
    """Median time the simulator itself took per prompt (start to end), as it measures it."""
    busy_s: float | None
    """The simulator's per-prompt spans summed: the least any client could take."""
    note: str = ""

    @property
    def per_image_ms(self) -> float:
        return self.total_s / self.images * 1000

    def markdown(self, target_images: int) -> str:
        ideal = target_images * PROMPT_S
        total = self.per_image_ms / 1000 * target_images
        over = (total / ideal - 1) * 100
        gap = "-" if self.median_gap_ms is None else f"{self.median_gap_ms:.2f}"
        server = "-" if self.server_ms is None else f"{self.server_ms:.1f}"
        busy = "-" if self.busy_s is None else f"{(self.total_s / self.busy_s - 1) * 100:+.1f} %"
        return (
            f"| {self.name} | {self.images} | {self.total_s:.2f} | {self.per_image_ms:.1f} | "
            f"{server} | {total:.2f} | {over:+.1f} % | {busy} | {gap} | {self.note} |"
        )


def _requests(out: Path, count: int) -> list[GenerationRequest]:
    # 64x64: the smallest image keeps the simulator's own PNG work (not ours) small.
    params = params_for("preview", width=64, height=64)
    return [
        GenerationRequest(f"bench {i}", 10_000 + i, params, checkpoint="sim-sd15.safetensors")
        for i in range(count)
    ]


def _median_gap_ms(stats: dict[str, Any]) -> float | None:
    gaps = stats.get("gaps_s") or []
    return statistics.median(gaps) * 1000 if gaps else None


def _spans(stats: dict[str, Any]) -> list[float]:
    return [p["end_s"] - p["start_s"] for p in stats["prompts"] if p.get("end_s") is not None]


def _server(stats: dict[str, Any]) -> tuple[float | None, float | None]:
    """Median ms per prompt and summed busy seconds, as the simulator measured them."""
    spans = _spans(stats)
    return (statistics.median(spans) * 1000, sum(spans)) if spans else (None, None)


async def _engine(sim: Any, out: Path, count: int) -> Row:
    async with ComfyUIAdapter(Settings(comfyui_url=sim.url)) as comfy:
        requests = _requests(out, count)
        await preflight(comfy, requests[0], None)  # object_info fetched before the clock starts
        started = time.monotonic()
        results = [r async for r in comfy.generate_batch(requests)]
        total = time.monotonic() - started
    failed = [r for r in results if not r.ok]
    if failed:
        raise SystemExit(f"{len(failed)} prompts failed, e.g. {failed[0].error}")
    stats = sim.stats()
    return Row("comfyline generate_batch", count, total, _median_gap_ms(stats), *_server(stats))


async def _seed_loop(sim: Any, out: Path, count: int, *, sleep_s: float) -> Row:
    """The stage-1 loop: submit, poll /history every second, fetch, sleep."""
    checkpoint = "sim-sd15.safetensors"
    async with httpx.AsyncClient(base_url=sim.url, timeout=30) as http:
        started = time.monotonic()
        for i, request in enumerate(_requests(out, count)):
            prompt_id = str(uuid.uuid4())
            graph = build_graph(request, checkpoint)
            await http.post("/prompt", json={"prompt": graph, "prompt_id": prompt_id})
            while True:
                await asyncio.sleep(1.0)
                entry = (await http.get(f"/history/{prompt_id}")).json().get(prompt_id)
                if entry:
                    break
            for output in entry["outputs"].values():
                for image in output.get("images", []):
                    data = (await http.get("/view", params=image)).content
                    (out / f"img_{i:04d}.png").write_bytes(data)
            await asyncio.sleep(sleep_s)
        total = time.monotonic() - started
    note = f"measured on {count}, extrapolated per image"
    name = f"seed loop (poll 1 s, sleep {sleep_s:g} s)"
    stats = sim.stats()
    return Row(name, count, total, _median_gap_ms(stats), *_server(stats), note)


class _SimProcess:
    """``comfyline sim`` in its own process, as a real server would be: its work does not share
    our interpreter (and GIL). Same ``url``/``stats()`` as the in-process handle."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.url = ""
        self._process: subprocess.Popen[str] | None = None

    def __enter__(self) -> _SimProcess:
        command = [
            sys.executable,
            "-m",
            "comfyline",
            "sim",
            "--port",
            "0",
            "--fixed-ms",
            str(PROMPT_S * 1000),
            "--output-dir",
            str(self.folder / "server"),
        ]
        self._process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        assert self._process.stdout is not None
        line = self._process.stdout.readline()  # "ComfyUI simulator listening on http://..."
        if "listening on" not in line:
            self.__exit__()
            raise SystemExit(f"the simulator did not start: {line!r}")
        self.url = line.rsplit(" ", 1)[1].strip()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(10)

    def stats(self) -> dict[str, Any]:
        body: dict[str, Any] = httpx.get(f"{self.url}/sim/stats", timeout=30).json()
        return body


def _sim(folder: Path, *, in_process: bool) -> Any:
    if not in_process:
        return _SimProcess(folder)
    config = SimConfig(step_s=0.0, fixed_prompt_s=PROMPT_S, output_dir=folder / "server")
    return running_simulator(config)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--baseline-images", type=int, default=20)
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument(
        "--in-process", action="store_true", help="run the simulator in a thread of this process"
    )
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        with _sim(root / "a", in_process=args.in_process) as sim:
            rows.append(asyncio.run(_engine(sim, root / "a" / "out", args.images)))
        if not args.no_baseline:
            for sleep_s, count in ((2.0, args.baseline_images), (0.0, args.baseline_images)):
                folder = root / f"seed-{sleep_s:g}"
                (folder / "out").mkdir(parents=True)
                with _sim(folder, in_process=args.in_process) as sim:
                    loop = _seed_loop(sim, folder / "out", count, sleep_s=sleep_s)
                    rows.append(asyncio.run(loop))
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(
        f"machine: {platform.processor() or platform.machine()}, Python {platform.python_version()}"
    )
    print(f"simulator: fixed {PROMPT_S * 1000:.0f} ms per prompt, no step time; pause 0\n")
    print(
        f"| run | images run | total s | ms / image | server ms / prompt | s for {args.images} "
        f"| vs {args.images} x 50 ms | vs server busy | median gap ms | note |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(row.markdown(args.images))


if __name__ == "__main__":
    main()
