"""Benchmark: one coordinator driving many ComfyUI servers (simulated), through the whole
pipeline (ledger, files, report), as ``comfyline run-order --comfyui A --comfyui B ...`` runs.

    .venv/bin/python benchmarks/bench_scale.py                    # every scenario, ~10 min
    .venv/bin/python benchmarks/bench_scale.py --only speedup     # one: speedup|kill|wide|memory

The simulators run in other processes (``--farm``: a few per process, each on its own port),
so the coordinator's CPU time is its own. Each prompt takes ``fixed_prompt_s`` on its server,
whatever its size: the servers' speed is fixed, what is measured is how well one coordinator
keeps them busy.

- ``speedup``: the same work per server on 1 and on 4 servers: images/s (steady state: from the
  first image done to the last) and the ratio (goal >= 3.8);
- ``kill``: 4 servers, one process killed (SIGKILL) after a quarter of the order: the order
  completes on the other three, every image exactly once (ledger and files);
- ``wide``: 64 servers with fast prompts against 1: throughput as a fraction of 64x one, the
  coordinator's CPU seconds per image, its peak memory;
- ``memory``: a 100,000-image order on 4 fast servers, stopped (as Ctrl-C) after 2,000 images:
  the coordinator's memory after planning, while it runs, and after it wrote the report.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import resource
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from comfyline import pipeline
from comfyline.ledger import ledger_path, read_status
from comfyline.orders import load
from comfyline.reports.report import REPORT_FILE, read_report
from comfyline.settings import Settings
from comfyline.sim import SimConfig, ThermalConfig, running_simulator

COLD = ThermalConfig(room_c=-40.0)
"""A card that never nears the guard's target: the guard paces by it, never holds."""


# -- the farm of simulators -------------------------------------------------------------------


def farm_main(count: int, fixed_s: float, folder: Path) -> None:
    """``--farm``: serve ``count`` simulators, print their URLs, serve until stdin closes."""
    with ExitStack() as stack:
        for i in range(count):
            config = SimConfig(fixed_prompt_s=fixed_s, output_dir=folder / f"sim{i}", thermal=COLD)
            sim = stack.enter_context(running_simulator(config))
            print(sim.url, flush=True)
        sys.stdin.read()


@contextmanager
def farm(total: int, fixed_s: float, folder: Path, per_process: int) -> Iterator[list[Farm]]:
    """``total`` simulators in processes of ``per_process`` each."""
    procs: list[Farm] = []
    try:
        for start in range(0, total, per_process):
            count = min(per_process, total - start)
            proc = subprocess.Popen(
                [sys.executable, __file__, "--farm", str(count), "--fixed-s", str(fixed_s)]
                + ["--dir", str(folder / f"farm{start}")],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            assert proc.stdout is not None
            urls = [proc.stdout.readline().strip() for _ in range(count)]
            procs.append(Farm(proc, urls))
        yield procs
    finally:
        for f in procs:
            if f.proc.poll() is None:
                assert f.proc.stdin is not None
                f.proc.stdin.close()
        for f in procs:
            try:
                f.proc.wait(30)
            except subprocess.TimeoutExpired:
                f.proc.kill()


@dataclass
class Farm:
    proc: subprocess.Popen[str]
    urls: list[str]


# -- one run ----------------------------------------------------------------------------------


@dataclass
class Run:
    images: int
    wall_s: float
    steady_per_s: float
    cpu_s: float
    peak_rss_mb: float
    steady_cpu_ms: float
    """Coordinator CPU per image while images come in (10 % to 90 % of the order done)."""
    running_rss_mb: float
    """The coordinator's resident memory at the last sample while images came in."""
    done_events: int
    distinct_done: int
    files: int

    @property
    def cpu_ms_per_image(self) -> float:
        return self.cpu_s / max(self.images, 1) * 1000


def write_order(folder: Path, order_id: str, count: int) -> Path:
    order_dir = folder / order_id
    order_dir.mkdir(parents=True)
    path = order_dir / "project.yaml"
    path.write_text(
        f"id: {order_id}\ntype: single\nquality: preview\ncount: {count}\n"
        "prompt: a lighthouse on a rock, test pattern\nseed: {mode: fixed, base: 4242}\n",
        encoding="utf-8",
    )
    return path


def settings_for(urls: list[str], out: Path) -> Settings:
    # A lost server is given up after 2 s and asked again every second (defaults: 120 s, 5 s).
    return Settings(
        comfyui_urls=tuple(urls), output_root=out, reconnect_timeout_s=2.0, probe_interval_s=1.0
    )


def run_order(order: Path, settings: Settings, *, stop_after: int | None = None) -> Run:
    """Run ``order`` through ``pipeline.generate``; with ``stop_after``, cancel it (as Ctrl-C)
    once that many images are done."""
    console = Console(file=io.StringIO(), width=200)
    out = pipeline.output_dir(load(order).order, settings)
    db = ledger_path(out)
    cpu0, wall0 = time.process_time(), time.monotonic()

    samples: list[tuple[int, float, float]] = []

    async def main() -> None:
        task = asyncio.create_task(pipeline.generate(order, settings=settings, console=console))
        while not task.done():  # a sample of (images done, CPU so far) every quarter second
            done = read_status(db).counts.done if db.exists() else 0
            samples.append((done, time.process_time(), rss_mb()))
            if stop_after is not None and done >= stop_after:
                task.cancel()
                break
            await asyncio.wait({task}, timeout=0.25)
        try:
            await task
        except asyncio.CancelledError:
            pass

    asyncio.run(main())
    wall, cpu = time.monotonic() - wall0, time.process_time() - cpu0
    with sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True) as conn:
        done = [r[0] for r in conn.execute("SELECT at FROM event WHERE kind = 'done'")]
        first = conn.execute("SELECT min(at) FROM event WHERE kind = 'submitted'").fetchone()[0]
        distinct = conn.execute("SELECT count(DISTINCT slot_idx) FROM event WHERE kind='done'")
        distinct_done = int(distinct.fetchone()[0])
    files = sum(1 for p in out.glob("*.png") if not p.name.startswith(("contact", "run_chart")))
    # From the first prompt sent to the last image done: the time the servers were given.
    steady = len(done) / (max(done) - first) if done else 0.0
    total = stop_after or len(done)
    window = [s for s in samples if 0.1 * total <= s[0] <= 0.9 * total]
    steady_cpu = (
        (window[-1][1] - window[0][1]) / (window[-1][0] - window[0][0]) * 1000
        if len(window) > 1 and window[-1][0] > window[0][0]
        else float("nan")
    )
    return Run(
        images=len(done),
        wall_s=wall,
        steady_per_s=steady,
        cpu_s=cpu,
        peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        steady_cpu_ms=steady_cpu,
        running_rss_mb=max((s[2] for s in window), default=float("nan")),
        done_events=len(done),
        distinct_done=distinct_done,
        files=files,
    )


def rss_mb() -> float:
    """The coordinator's resident memory now."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# -- the scenarios ----------------------------------------------------------------------------


def speedup(tmp: Path, fixed_s: float, per_server: int) -> list[tuple[str, bool]]:
    with farm(4, fixed_s, tmp / "sims", per_process=1) as farms:
        urls = [u for f in farms for u in f.urls]
        one = run_order(write_order(tmp / "o1", "one", per_server), settings_for(urls[:1], tmp))
        four = run_order(
            write_order(tmp / "o4", "four", 4 * per_server), settings_for(urls, tmp / "4")
        )
    ratio = four.steady_per_s / one.steady_per_s
    print(
        f"speedup: 1 server {one.steady_per_s:.2f} img/s ({one.steady_per_s * fixed_s:.3f} of "
        f"its {1 / fixed_s:.2f}), 4 servers {four.steady_per_s:.2f} img/s: {ratio:.2f}x "
        f"(wall {one.wall_s:.1f} s / {four.wall_s:.1f} s; coordinator CPU per image "
        f"{one.steady_cpu_ms:.1f} / {four.steady_cpu_ms:.1f} ms while images come in, "
        f"{one.cpu_ms_per_image:.1f} / {four.cpu_ms_per_image:.1f} ms with start and report)"
    )
    exact = four.images == four.distinct_done == four.files == 4 * per_server
    return [(f"4 servers {ratio:.2f}x one (goal >= 3.8)", ratio >= 3.8), ("each once", exact)]


def kill(tmp: Path, fixed_s: float, count: int) -> list[tuple[str, bool]]:
    order = write_order(tmp / "ok", "killed", count)
    with farm(4, fixed_s, tmp / "sims-k", per_process=1) as farms:
        settings = settings_for([u for f in farms for u in f.urls], tmp / "k")
        db = ledger_path(pipeline.output_dir(load(order).order, settings))
        victim = farms[3].proc

        def killer() -> None:
            while not (db.exists() and read_status(db).counts.done >= count // 4):
                time.sleep(0.05)
            os.kill(victim.pid, signal.SIGKILL)

        thread = threading.Thread(target=killer, daemon=True)
        thread.start()
        run = run_order(order, settings)
        thread.join(5)
    report = read_report(db.parent.parent / REPORT_FILE)
    lost = {b.name: b.lost for b in report.backends}
    exact = run.images == run.distinct_done == run.files == count
    print(
        f"kill: {count} images on 4 servers, one killed at {count // 4} done: "
        f"{run.images} done events, {run.distinct_done} distinct slots, {run.files} files, "
        f"state {report.order.state}, lost {sum(lost.values())} server(s), "
        f"{run.steady_per_s:.2f} img/s, wall {run.wall_s:.1f} s"
    )
    return [
        ("kill: completed", report.order.state == "completed"),
        ("kill: every image exactly once", exact),
        ("kill: one server lost", sum(lost.values()) == 1),
    ]


def wide(tmp: Path, servers: int, fixed_s: float, per_server: int) -> list[tuple[str, bool]]:
    with farm(servers, fixed_s, tmp / "sims-w", per_process=16) as farms:
        urls = [u for f in farms for u in f.urls]
        one = run_order(
            write_order(tmp / "w1", "wide1", per_server * 2), settings_for(urls[:1], tmp / "w1o")
        )
        many = run_order(
            write_order(tmp / "wn", "wide", servers * per_server), settings_for(urls, tmp / "wno")
        )
    fraction = many.steady_per_s / (servers * one.steady_per_s)
    print(
        f"wide: 1 server {one.steady_per_s:.2f} img/s; {servers} servers "
        f"{many.steady_per_s:.2f} img/s = {fraction:.3f} of {servers}x one; coordinator CPU "
        f"{many.steady_cpu_ms:.1f} ms per image while images come in, "
        f"{many.cpu_ms_per_image:.1f} ms with start and report ({many.cpu_s:.1f} s for "
        f"{many.images}); peak RSS {many.peak_rss_mb:.0f} MB, wall {many.wall_s:.1f} s"
    )
    exact = many.images == many.distinct_done == many.files == servers * per_server
    return [(f"wide: {servers} servers, each image once", exact)]


def memory(tmp: Path, fixed_s: float, count: int, stop_after: int) -> list[tuple[str, bool]]:
    order = write_order(tmp / "m", "big", count)
    before = rss_mb()
    with farm(4, fixed_s, tmp / "sims-m", per_process=4) as farms:
        settings = settings_for(farms[0].urls, tmp / "mo")
        t0 = time.monotonic()
        run = run_order(order, settings, stop_after=stop_after)
    print(
        f"memory: {count:,}-image order, stopped after {run.images:,} images: RSS {before:.0f} MB "
        f"before, {run.running_rss_mb:.0f} MB while making images (plan, ledger, queue), "
        f"peak {run.peak_rss_mb:.0f} MB (with the stop's report of {count:,} slots); "
        f"{run.steady_cpu_ms:.1f} ms CPU per image; {time.monotonic() - t0:.0f} s"
    )
    return [("memory: stopped cleanly, each image once", run.images == run.distinct_done)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["speedup", "kill", "wide", "memory"])
    parser.add_argument("--servers", type=int, default=64, help="of the wide scenario")
    parser.add_argument("--farm", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--fixed-s", type=float, default=0.5, help=argparse.SUPPRESS)
    parser.add_argument("--dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.farm:
        farm_main(args.farm, args.fixed_s, args.dir)
        return 0
    checks: list[tuple[str, bool]] = []
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        root = Path(tmp)
        if args.only in (None, "speedup"):
            checks += speedup(root / "s", fixed_s=0.5, per_server=40)
        if args.only in (None, "kill"):
            checks += kill(root / "k", fixed_s=0.25, count=160)
        if args.only in (None, "wide"):
            checks += wide(root / "w", args.servers, fixed_s=1.0, per_server=8)
        if args.only in (None, "memory"):
            checks += memory(root / "m", fixed_s=0.02, count=100_000, stop_after=2000)
    print(f"load average at the end {os.getloadavg()[0]:.1f}")
    for text, ok in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {text}")
    return 0 if all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
