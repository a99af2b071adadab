"""Benchmark: a big order on a zero-latency simulator, with the pause set to 0.

The question: does the runner stay flat as an order grows? It runs one ``single`` order of
``--count`` images (default 5,000) through ``comfyline run-order`` in a child process against the
simulator in another process (both on this machine), then reports

* the runner's peak memory (max RSS of the child process), also for a ``--small`` order, so
  growth with the order's size shows as a difference;
* its time per image over the first and the last ``--window`` images (from the times the ledger
  recorded each slot as done);
* its CPU time per image: the difference in CPU seconds (user + system, from the child's
  rusage) between the big and the small order, over the difference in images. Start-up and
  the report cancel out, and unlike the wall time it hardly moves with other work on the
  machine.

    python benchmarks/bench_orders.py                 # 5,000 images (a few minutes on 2 cores)
    python benchmarks/bench_orders.py --count 1000    # quicker
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from comfyline.ledger import Ledger, ledger_path
from comfyline.orders import load
from comfyline.pipeline import fingerprint

ORDER = """\
id: bench
title: Runner benchmark
type: single
quality: preview
count: {count}
prompt: a lighthouse on a rocky coast, benchmark
seed: {{mode: fixed, base: 7}}
"""


def start_simulator(folder: Path) -> tuple[subprocess.Popen[str], str]:
    cmd = [sys.executable, "-m", "comfyline", "sim", "--port", "0"]
    cmd += ["--output-dir", str(folder / "comfy-out")]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    match = re.search(r"http://\S+", line)
    if not match:
        proc.kill()
        raise SystemExit(f"the simulator did not start: {line!r}")
    return proc, match.group(0)


def run_order(folder: Path, url: str, count: int) -> tuple[float, float, float, float, list[float]]:
    """Run a ``count``-image order: wall seconds, CPU seconds, peak RSS MiB, peak RSS MiB
    while making images, and the times its slots were done."""
    order_dir = folder / "orders" / "bench"
    order_dir.mkdir(parents=True)
    (order_dir / "project.yaml").write_text(ORDER.format(count=count))
    out = folder / f"out-{count}"
    cmd = [sys.executable, "-m", "comfyline", "run-order", str(order_dir)]
    cmd += ["--comfyui", url, "--output-root", str(out), "--pause", "0"]
    started = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    samples: list[tuple[float, float]] = []
    sampler = threading.Thread(target=_sample_rss, args=(proc.pid, samples), daemon=True)
    sampler.start()
    stderr = proc.stderr.read()
    # wait4 gives this child's own rusage: its peak RSS, not the largest of all children's.
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - started
    if proc.returncode:
        raise SystemExit(f"run-order failed ({proc.returncode}):\n{stderr[-2000:]}")
    peak_kib = usage.ru_maxrss
    cpu = usage.ru_utime + usage.ru_stime
    loaded = load(order_dir / "project.yaml")
    with Ledger.open(ledger_path(out / "bench"), loaded.order.id, fingerprint(loaded)) as ledger:
        done = sorted(e.at for e in ledger.events("done"))
    sampler.join()
    # RSS while images were being made (up to the last image) vs. the peak, which includes
    # writing the report, contact sheets and chart at the end.
    offset = time.time() - time.monotonic()
    producing = [rss for t, rss in samples if t + offset <= done[-1]]
    return wall, cpu, peak_kib / 1024, max(producing, default=0.0), done


def _sample_rss(pid: int, samples: list[tuple[float, float]]) -> None:
    """Sample the child's resident set size (MiB) every 0.2 s until it exits."""
    status = Path(f"/proc/{pid}/status")
    while True:
        try:
            text = status.read_text()
        except OSError:
            return
        match = re.search(r"VmRSS:\s+(\d+) kB", text)
        if match is None:  # a zombie: the child has exited
            return
        samples.append((time.monotonic(), int(match.group(1)) / 1024))
        time.sleep(0.2)


def per_image_ms(times: list[float], window: int) -> tuple[float, float]:
    first = (times[window] - times[0]) / window * 1000
    last = (times[-1] - times[-1 - window]) / window * 1000
    return first, last


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--small", type=int, default=500)
    parser.add_argument("--window", type=int, default=500)
    args = parser.parse_args()
    os.environ.pop("COMFYUI_URL", None)
    # "Pause set to 0": no fixed pause between images nor after a level's max batch.
    os.environ["COMFYLINE_SERIES_PAUSE_S"] = "0"
    with tempfile.TemporaryDirectory(prefix="bench-orders-") as tmp:
        folder = Path(tmp)
        sim, url = start_simulator(folder)
        try:
            rows = []
            for count in (args.small, args.count):
                sub = folder / str(count)
                sub.mkdir()
                wall, cpu, peak, producing, done = run_order(sub, url, count)
                window = min(args.window, len(done) // 2)
                first, last = per_image_ms(done, window)
                rows.append((count, wall, cpu, peak, producing, window, first, last))
        finally:
            sim.terminate()
            sim.wait(timeout=10)
    print(
        "| images | wall (s) | CPU (s) | peak RSS making images (MiB) "
        "| peak RSS incl. report (MiB) | window | ms/image first | ms/image last |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for count, wall, cpu, peak, producing, window, first, last in rows:
        print(
            f"| {count} | {wall:.1f} | {cpu:.1f} | {producing:.0f} | {peak:.0f} | {window} "
            f"| {first:.1f} | {last:.1f} |"
        )
    (small, _, cpu_small, *_), (big, _, cpu_big, *_) = rows
    if big > small:
        per_image = (cpu_big - cpu_small) / (big - small) * 1000
        print(f"\nrunner CPU per image (the {big} less the {small}): {per_image:.1f} ms")


if __name__ == "__main__":
    main()
