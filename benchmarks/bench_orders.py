"""Benchmark: a big order on a zero-latency simulator, with the pause set to 0.

The question: does the runner stay flat as an order grows? It runs one ``single`` order of
``--count`` images (default 5,000) through ``comfyline run-order`` in a child process against the
simulator in another process (both on this machine), then reports

* the runner's peak memory (max RSS of the child process), also for a ``--small`` order, so
  growth with the order's size shows as a difference;
* its time per image over the first and the last ``--window`` images (from the times the ledger
  recorded each slot as done);
* its CPU time per image over the same windows (sampled from ``/proc`` every 0.2 s), and the
  simulator's: the runner's own cost, which unlike the wall time hardly moves with other work
  on the machine (on 2 cores the simulator's CPU shares the machine, so it shows in the wall
  time too);
* its CPU time per image over the whole run: the difference in CPU seconds (user + system,
  from the child's rusage) between the big and the small order, over the difference in
  images. Start-up cancels out; the report, contact sheets and chart at the end do not.

    python benchmarks/bench_orders.py                 # 5,000 images (a few minutes on 2 cores)
    python benchmarks/bench_orders.py --count 1000    # quicker
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import os
import re
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import NamedTuple

from comfyline.ledger import ledger_path

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


def run_order(
    folder: Path, url: str, count: int, sim_pid: int, runner_src: str | None = None
) -> tuple[float, float, float, float, list[float], list[Sample]]:
    """Run a ``count``-image order: wall seconds, CPU seconds, peak RSS MiB, peak RSS MiB
    while making images, the times its slots were done, and the samples taken meanwhile."""
    order_dir = folder / "orders" / "bench"
    order_dir.mkdir(parents=True)
    (order_dir / "project.yaml").write_text(ORDER.format(count=count))
    out = folder / f"out-{count}"
    cmd = [sys.executable, "-m", "comfyline", "run-order", str(order_dir)]
    cmd += ["--comfyui", url, "--output-root", str(out), "--pause", "0"]
    started = time.monotonic()
    env = {**os.environ, "PYTHONPATH": runner_src} if runner_src else None
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env
    )
    assert proc.stderr is not None
    samples: list[Sample] = []
    sampler = threading.Thread(target=_sample, args=(proc.pid, sim_pid, samples), daemon=True)
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
    # Read as plain SQLite: the event table is the same in every version (--runner-src).
    ledger = sqlite3.connect(f"file:{ledger_path(out / 'bench')}?mode=ro", uri=True)
    with contextlib.closing(ledger):
        done = sorted(at for (at,) in ledger.execute("SELECT at FROM event WHERE kind = 'done'"))
    sampler.join()
    # RSS while images were being made (up to the last image) vs. the peak, which includes
    # writing the report, contact sheets and chart at the end.
    offset = time.time() - time.monotonic()
    samples = [Sample(s.at + offset, s.rss_mib, s.cpu_s, s.sim_cpu_s) for s in samples]
    producing = [s.rss_mib for s in samples if s.at <= done[-1]]
    return wall, cpu, peak_kib / 1024, max(producing, default=0.0), done, samples


class Sample(NamedTuple):
    at: float
    rss_mib: float
    cpu_s: float
    """The runner's CPU seconds so far (user + system)."""
    sim_cpu_s: float


def _sample(pid: int, sim_pid: int, samples: list[Sample]) -> None:
    """Sample the child's resident set size and both processes' CPU time every 0.2 s until
    the child exits."""
    status = Path(f"/proc/{pid}/status")
    while True:
        try:
            text = status.read_text()
            cpu, sim_cpu = _cpu_s(pid), _cpu_s(sim_pid)
        except OSError:
            return
        match = re.search(r"VmRSS:\s+(\d+) kB", text)
        if match is None:  # a zombie: the child has exited
            return
        samples.append(Sample(time.monotonic(), int(match.group(1)) / 1024, cpu, sim_cpu))
        time.sleep(0.2)


def _cpu_s(pid: int) -> float:
    # /proc/PID/stat: utime and stime are fields 14 and 15, after the parenthesised name.
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_per_image_ms(
    samples: list[Sample], times: list[float], window: int
) -> tuple[float, float, float, float]:
    """Runner and simulator CPU ms per image over the first and the last window of images
    (runner first, runner last, simulator first, simulator last), from the samples around the
    times the window's first and last images were done."""

    def at(t: float) -> tuple[float, float]:
        i = bisect.bisect_left([s.at for s in samples], t)
        s = samples[min(i, len(samples) - 1)]
        return s.cpu_s, s.sim_cpu_s

    def per_image(start: float, end: float) -> tuple[float, float]:
        (c0, s0), (c1, s1) = at(start), at(end)
        return (c1 - c0) / window * 1000, (s1 - s0) / window * 1000

    first, last = per_image(times[0], times[window]), per_image(times[-1 - window], times[-1])
    return first[0], last[0], first[1], last[1]


def per_image_ms(times: list[float], window: int) -> tuple[float, float]:
    first = (times[window] - times[0]) / window * 1000
    last = (times[-1] - times[-1 - window]) / window * 1000
    return first, last


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--small", type=int, default=500)
    parser.add_argument("--window", type=int, default=500)
    parser.add_argument(
        "--runner-src",
        help="run the runner from this src folder (another version's checkout), against "
        "this version's simulator: two versions compared on the same server",
    )
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
                wall, cpu, peak, producing, done, samples = run_order(
                    sub, url, count, sim.pid, args.runner_src
                )
                window = min(args.window, len(done) // 2)
                first, last = per_image_ms(done, window)
                cpus = cpu_per_image_ms(samples, done, window)
                rows.append((count, wall, cpu, peak, producing, window, first, last, cpus))
        finally:
            sim.terminate()
            sim.wait(timeout=10)
    print(
        "| images | wall (s) | CPU (s) | peak RSS making images (MiB) "
        "| peak RSS incl. report (MiB) | window | ms/image first | ms/image last "
        "| runner CPU ms/image first, last | simulator CPU ms/image first, last |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for count, wall, cpu, peak, producing, window, first, last, cpus in rows:
        print(
            f"| {count} | {wall:.1f} | {cpu:.1f} | {producing:.0f} | {peak:.0f} | {window} "
            f"| {first:.1f} | {last:.1f} | {cpus[0]:.1f}, {cpus[1]:.1f} "
            f"| {cpus[2]:.1f}, {cpus[3]:.1f} |"
        )
    (small, _, cpu_small, *_), (big, _, cpu_big, *_) = rows
    if big > small:
        per_image = (cpu_big - cpu_small) / (big - small) * 1000
        print(
            f"\nrunner CPU per image over the whole run (the {big} less the {small}, "
            f"the end's report and sheets included): {per_image:.1f} ms"
        )


if __name__ == "__main__":
    main()
