"""Benchmark: the hardware guard against the seed's fixed pause, on the simulator's thermal model.

    .venv/bin/python benchmarks/bench_guard.py [--smoke-time-scale 1.0] [--time-scale 0.2]
                                               [--long 300] [--quick] [--guard-only]
                                               [--margin 1.0]

Each scenario starts a fresh simulator (an idle card) with its thermal model on and runs
``standard`` images (320x320, 8 steps; 1.54 s of work each, the seed's 3.54 s per image less its
2.0 s pause) through the real adapter:

- ``seed``: the seed's schedule: one image at a time, a fixed pause after each (its smoke test:
  10 x 3.54 s = 35.41 s). ``seed-between`` pauses only between images (one pause less);
- ``guard``: comfyline's guard as the adapter's gate (two prompts in flight, pacing by the
  card's temperature read from the simulator's ``/sim/sensor``, default settings: 1 s sensor
  interval, 1 °C margin);
- ``off``: no pause at all (two prompts in flight): the guard switched off.

- ``optimum``: no run, a computation: the best schedule any controller could follow with full
  knowledge of the simulator's thermal model, at the same 78 °C limit (:func:`offline_optimum`:
  each image starts at the earliest moment from which its end, its peak, stays at or under
  78 °C; on this model nothing beats that). The guard's images per hour are reported as a
  fraction of the optimum's; the goal is 0.95 or more.

Times are the simulator's *model* seconds (real seconds / time_scale), from the adapter's start
to the last image (and the seed's last pause); ``span s`` is from the first prompt's start to
the last one's end on the simulator's model clock itself (where its own rendering and saving,
real time, stand still), the span the optimum is computed for and compared with. HTTP and the
simulator's own work count 1/time_scale times over in model time, so the 10-image runs go at
``--smoke-time-scale`` 1.0 (real time, honest overheads) and the long runs at ``--time-scale``
0.2 (5x faster). Peaks are the simulator's own record of the card's temperature at the end of
each prompt's work (a die is hottest there), so a peak between two sensor reads is not missed.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from comfyline.comfy import ComfyUIAdapter
from comfyline.errors import ComfylineError
from comfyline.generation import GenerationRequest
from comfyline.guard import Guard, Limits, SimSensor
from comfyline.presets import get_level, params_for
from comfyline.settings import Settings
from comfyline.sim import SimConfig, SimulatorHandle, ThermalConfig, ThermalModel, running_simulator

WORK_S = 1.54  # the seed's 3.54 s per image, less its 2.0 s pause
LEVEL = "standard"
LIMIT_C = 78.0


@dataclass
class RunResult:
    """One run. ``model_s``: the whole run, start to end (the seed's last pause included),
    real seconds / time_scale; ``span_s``: from the first prompt's start to the last one's end
    on the thermal model's own clock, the span the offline optimum is the shortest of."""

    name: str
    images: int
    model_s: float
    peak_c: float
    blackouts: int
    errors: int
    holds: int | None = None
    span_s: float = math.nan

    @property
    def s_per_image(self) -> float:
        return self.model_s / max(self.images, 1)

    def row(self) -> str:
        holds = "-" if self.holds is None else str(self.holds)
        return (
            f"| {self.name:<44} | {self.images:>4} | {self.model_s:>7.1f} | {self.span_s:>7.1f} | "
            f"{self.s_per_image:>5.2f} | {self.peak_c:>6.1f} | {self.blackouts:>3} | "
            f"{self.errors:>3} | {holds:>5} |"
        )


HEADER = (
    "| schedule                                     | imgs | model s |  span s | s/img | peak C "
    "| blk | err | holds |\n"
    "|----------------------------------------------|------|---------|---------|-------|--------"
    "|-----|-----|-------|"
)


def sim_config(out: Path, time_scale: float, room_c: float) -> SimConfig:
    params = params_for(LEVEL)
    step_s = WORK_S / params.steps / (params.width * params.height / (512 * 512))
    return SimConfig(
        step_s=step_s,
        time_scale=time_scale,
        output_dir=out,
        thermal=ThermalConfig(room_c=room_c),
    )


def requests(n: int, out: Path) -> list[GenerationRequest]:
    params = params_for(LEVEL)
    return [
        GenerationRequest(
            prompt="a lighthouse at dusk",
            seed=1000 + i,
            params=params,
            checkpoint="sim-sd15.safetensors",
        )
        for i in range(n)
    ]


def model_clock(time_scale: float) -> Callable[[], float]:
    return lambda: time.monotonic() / time_scale


def model_sleep(time_scale: float) -> Callable[[float], Any]:
    async def sleep(seconds: float) -> None:
        await asyncio.sleep(seconds * time_scale)

    return sleep


def peaks(handle: SimulatorHandle) -> list[float]:
    """The card's temperature at the end of each prompt's work (its peak: a die heats while it
    works), as the simulator's thermal model recorded it; nothing between two reads is missed."""
    return [
        p.end_temperature_c
        for p in handle.simulator.stats.prompts
        if p.end_temperature_c is not None
    ]


MARGIN_C = [1.0]
"""The guard's margin under the target (``--margin``; 1.0 is the pipeline's)."""


async def drive(
    url: str, n: int, out: Path, schedule: str, time_scale: float, pause_s: float = 2.0
) -> tuple[int, int, Guard | None]:
    """Run ``n`` images with ``schedule`` (seed, seed-between, guard, off)."""
    settings = Settings(comfyui_url=url, reconnect_timeout_s=60.0)
    made = errors = 0
    async with ComfyUIAdapter(settings) as comfy, httpx.AsyncClient(timeout=5.0) as http:
        if schedule in ("seed", "seed-between"):
            for i, request in enumerate(requests(n, out)):
                if i and schedule == "seed-between":
                    await asyncio.sleep(pause_s * time_scale)
                try:
                    await comfy.generate(request)
                    made += 1
                except ComfylineError:
                    errors += 1
                if schedule == "seed":
                    await asyncio.sleep(pause_s * time_scale)
            return made, errors, None
        guard = make_guard(comfy, http, url, time_scale) if schedule == "guard" else None
        gate = guard.before_prompt if guard is not None else None
        watcher = asyncio.create_task(guard.watch()) if guard is not None else None
        try:
            settled = guard.prompt_settled if guard is not None else None
            batch = comfy.generate_batch(requests(n, out), gate=gate, on_settled=settled)
            async for result in batch:
                made += len(result.images)
                errors += 0 if result.ok else 1
                if guard is not None:
                    await guard.after_prompt(len(result.images))
        finally:
            if watcher is not None:
                watcher.cancel()
                await asyncio.gather(watcher, return_exceptions=True)
    return made, errors, guard


def make_guard(
    comfy: ComfyUIAdapter, http: httpx.AsyncClient, url: str, time_scale: float
) -> Guard:
    """The guard as the pipeline makes it, with default settings, on the model clock."""
    level = get_level(LEVEL)

    async def free_memory() -> None:
        await comfy.free_memory(unload_models=False)

    return Guard(
        SimSensor(url, http),
        Limits.from_settings(Settings()),
        level.pause_s,
        level.max_batch,
        clock=model_clock(time_scale),
        sleep=model_sleep(time_scale),
        free_memory=free_memory,
        margin_c=MARGIN_C[0],
    )


def scenario(
    name: str, schedule: str, n: int, *, room_c: float, time_scale: float, pause_s: float = 2.0
) -> RunResult:
    """One run on a fresh simulator (an idle card)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        config = sim_config(out / "comfy", time_scale, room_c)
        with running_simulator(config) as sim:
            start = time.monotonic()
            made, errors, guard = asyncio.run(
                drive(sim.url, n, out / "ours", schedule, time_scale, pause_s)
            )
            model_s = (time.monotonic() - start) / time_scale
            ends = peaks(sim)
            blackouts = int(sim.stats()["blackouts"])
            span = span_s(sim)
    holds = guard.stats.holds if guard is not None else None
    peak = max(ends, default=math.nan)
    return RunResult(name, made, model_s, peak, blackouts, errors, holds, span)


def span_s(handle: SimulatorHandle) -> float:
    """Model seconds from the first prompt's start to the last prompt's end on the server, on
    the thermal model's own clock (the one the optimum is computed on: the real time the
    simulator spends rendering and saving its PNGs stands still there)."""
    prompts = handle.simulator.stats.prompts
    starts = [p.start_model_s for p in prompts if p.start_model_s is not None]
    ends = [p.end_model_s for p in prompts if p.end_model_s is not None]
    return max(ends) - min(starts) if ends and starts else math.nan


def seed_pause_for_limit(limit_c: float, n: int, room_c: float) -> float:
    """The shortest fixed pause (0.1 s steps) that keeps the seed's schedule at or under
    ``limit_c`` for ``n`` images, found on the thermal model alone (no server)."""
    pause = 2.0
    while _seed_peak(pause, n, room_c) > limit_c:
        pause += 0.1
    while pause > 0.1 and _seed_peak(pause - 0.1, n, room_c) <= limit_c:
        pause -= 0.1
    return round(pause, 1)


def _seed_peak(pause_s: float, n: int, room_c: float) -> float:
    now = [0.0]
    model = ThermalModel(ThermalConfig(room_c=room_c), lambda: now[0])
    peak = 0.0
    for _ in range(n):
        model.set_busy(True)
        now[0] += WORK_S
        peak = max(peak, model.temperature())
        model.set_busy(False)
        now[0] += pause_s
    return peak


def offline_optimum(n: int, room_c: float, limit_c: float = LIMIT_C) -> tuple[float, float]:
    """The shortest time (model s) to make ``n`` images of ``WORK_S`` each on the thermal model
    from an idle card in a ``room_c`` room, without its temperature ever passing ``limit_c``;
    and the hottest peak of that schedule, replayed through :class:`ThermalModel` itself.

    While it works the card only heats, while it idles it only cools, so each image's peak is
    at its end. The schedule starts every image at the earliest moment whose end stays under
    the limit (found by bisection on the idle time). That is optimal on this model: by
    induction the k-th image of this schedule starts no later than the k-th of any feasible
    schedule, so at any moment it has done as many images, each earlier; the model is linear,
    so heat from earlier work has decayed more and its card is no hotter, and an image that
    may start in the other schedule may start in this one too.
    """
    cfg = ThermalConfig(room_c=room_c)
    die = sink = 0.0  # the model's two parts above the idle card (see comfyline.sim.thermal)

    def after(d: float, s: float, seconds: float, busy: bool) -> tuple[float, float]:
        u = 1.0 if busy else 0.0
        d = cfg.die_rise_c * u + (d - cfg.die_rise_c * u) * math.exp(-seconds / cfg.die_tau_s)
        s = cfg.sink_rise_c * u + (s - cfg.sink_rise_c * u) * math.exp(-seconds / cfg.sink_tau_s)
        return d, s

    def end_c(idle_s: float) -> float:
        d, s = after(*after(die, sink, idle_s, False), WORK_S, True)
        return cfg.room_c + cfg.idle_rise_c + d + s

    if end_c(1e6) > limit_c:
        raise ValueError(f"at room {room_c} C one image from idle passes {limit_c} C")
    idles = []
    for _ in range(n):
        low, high = 0.0, 0.0
        if end_c(0.0) > limit_c:
            high = 1.0
            while end_c(high) > limit_c:
                low, high = high, high * 2
            for _ in range(60):  # far below a microsecond
                mid = (low + high) / 2
                low, high = (mid, high) if end_c(mid) > limit_c else (low, mid)
        idles.append(high)
        die, sink = after(*after(die, sink, high, False), WORK_S, True)
    return sum(idles) + n * WORK_S, _replayed_peak(idles, room_c)


def _replayed_peak(idles: list[float], room_c: float) -> float:
    """The schedule's hottest image end on the simulator's own :class:`ThermalModel`."""
    now = [0.0]
    model = ThermalModel(ThermalConfig(room_c=room_c), lambda: now[0])
    peak = 0.0
    for idle in idles:
        now[0] += idle
        model.set_busy(True)
        now[0] += WORK_S
        peak = max(peak, model.temperature())
        model.set_busy(False)
    return peak


OPTIMUM_GOAL = 0.95
"""The guard's images per hour as a fraction of the offline optimum's: the goal."""


def versus_optimum(result: RunResult, n: int, room_c: float) -> tuple[str, bool]:
    """The check line of ``result`` (a guard row) against the offline optimum."""
    optimum_s, peak = offline_optimum(n, room_c)
    fraction = optimum_s / result.span_s  # images per hour: n / span_s over n / optimum_s
    # The guard aims at the target less its margin: the optimum at that line says how much
    # of the gap is the margin and how much the control.
    line_c = LIMIT_C - MARGIN_C[0]
    at_line_s, _ = offline_optimum(n, room_c, line_c)
    text = (
        f"optimum {n}, room {room_c:.0f}: {optimum_s:.1f} s ({optimum_s / n:.2f} s/img, "
        f"{n / optimum_s * 3600:.0f} img/h, peak {peak:.2f} C); guard {result.span_s:.1f} s "
        f"({n / result.span_s * 3600:.0f} img/h) = {fraction:.3f} of it (goal >= {OPTIMUM_GOAL});"
        f" {at_line_s / result.span_s:.3f} of the optimum at its own line, {line_c:.1f} C; "
        f"{optimum_s / result.model_s:.3f} of it over the whole run"
    )
    return text, fraction >= OPTIMUM_GOAL


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke-time-scale", type=float, default=1.0)
    parser.add_argument("--time-scale", type=float, default=0.2, help="of the long runs")
    parser.add_argument("--long", type=int, default=300, help="images in the long runs")
    parser.add_argument("--quick", action="store_true", help="only the 10-image runs")
    parser.add_argument(
        "--guard-only", action="store_true", help="only the guard's rows and the optimum"
    )
    parser.add_argument("--margin", type=float, default=1.0, help="the guard's margin, C")
    parser.add_argument(
        "--only",
        choices=("smoke", "long", "hot"),
        help="one of the guard's runs (10 images; the long run at 25 C; at 32 C), its optimum",
    )
    args = parser.parse_args(argv)
    MARGIN_C[0] = args.margin
    rows: list[RunResult] = []

    def run(*a: Any, **k: Any) -> RunResult:
        result = scenario(*a, **k)
        rows.append(result)
        print(result.row(), flush=True)
        return result

    ts, sts = args.time_scale, args.smoke_time_scale
    print(
        f"smoke time_scale={sts}, long time_scale={ts}, guard "
        f"{Limits.from_settings(Settings())}, margin {args.margin} C\n\n{HEADER}",
        flush=True,
    )
    checks: list[tuple[str, bool]] = []
    notes: list[str] = []
    if args.only:
        n, room, scale = (10, 25, sts) if args.only == "smoke" else (args.long, 25, ts)
        if args.only == "hot":
            room = 32
        result = run(f"{n}, room {room}: guard", "guard", n, room_c=room, time_scale=scale)
        checks += [
            (f"guard peak {result.peak_c:.1f} C <= 78", result.peak_c <= LIMIT_C),
            versus_optimum(result, n, float(room)),
        ]
        for text, ok in checks:
            print(f"{'PASS' if ok else 'FAIL'}  {text}")
        return 0 if all(ok for _, ok in checks) else 1
    guard10 = run("smoke 10, room 25: guard", "guard", 10, room_c=25, time_scale=sts)
    checks.append((f"smoke: guard peak {guard10.peak_c:.1f} C <= 78", guard10.peak_c <= LIMIT_C))
    checks.append(versus_optimum(guard10, 10, 25.0))
    if not args.guard_only:
        checks += smoke_rows(run, guard10, sts, notes)
    if not args.quick:
        n = args.long
        guard_long = run(f"{n}, room 25: guard", "guard", n, room_c=25, time_scale=ts)
        guard_hot = run(f"{n}, room 32: guard", "guard", n, room_c=32, time_scale=ts)
        checks += [
            (f"long: guard peak {guard_long.peak_c:.1f} C <= 78", guard_long.peak_c <= LIMIT_C),
            (
                f"hot: guard peak {guard_hot.peak_c:.1f} C <= 78, blackouts {guard_hot.blackouts}",
                guard_hot.peak_c <= LIMIT_C and guard_hot.blackouts == 0,
            ),
        ]
        checks += [versus_optimum(guard_long, n, 25.0), versus_optimum(guard_hot, n, 32.0)]
        if not args.guard_only:
            checks += long_rows(run, guard_long, n, ts, notes)
    print()
    for text, ok in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {text}")
    for text in notes:
        print(f"note  {text}")
    return 0 if all(ok for _, ok in checks) else 1


Run = Callable[..., RunResult]
Checks = list[tuple[str, bool]]


def smoke_rows(run: Run, guard10: RunResult, sts: float, notes: list[str]) -> Checks:
    """The seed's schedules and the guard switched off, 10 images: the checks."""
    seed10 = run(
        "smoke 10, room 25: seed (2.0 s pause after each)", "seed", 10, room_c=25, time_scale=sts
    )
    between10 = run(
        "smoke 10, room 25: seed, pauses between only",
        "seed-between",
        10,
        room_c=25,
        time_scale=sts,
    )
    off10 = run("smoke 10, room 25: guard off (no pause)", "off", 10, room_c=25, time_scale=sts)
    notes.append(
        f"smoke: guard {between10.model_s / guard10.model_s:.2f}x the seed pausing only "
        "between images (for reference)"
    )
    return [
        (
            f"smoke: guard {seed10.model_s / guard10.model_s:.2f}x the seed's schedule (>= 1.2)",
            seed10.model_s / guard10.model_s >= 1.2,
        ),
        (f"smoke: guard off blacks out ({off10.blackouts})", off10.blackouts >= 1),
    ]


def long_rows(run: Run, guard_long: RunResult, n: int, ts: float, notes: list[str]) -> Checks:
    """The seed's schedules over the long runs: the checks."""
    pause78 = seed_pause_for_limit(LIMIT_C, n, 25.0)
    seed78 = run(
        f"{n}, room 25: seed ({pause78:.1f} s pause: <= 78 C)",
        "seed",
        n,
        room_c=25,
        pause_s=pause78,
        time_scale=ts,
    )
    seed_long = run(f"{n}, room 25: seed (2.0 s pause)", "seed", n, room_c=25, time_scale=ts)
    seed_hot = run(f"{n}, room 32: seed (2.0 s pause)", "seed", n, room_c=32, time_scale=ts)
    notes.append(
        f"long: the seed's 2.0 s pause peaks at {seed_long.peak_c:.1f} C "
        f"({seed_long.s_per_image:.2f} s/img)"
    )
    return [
        (
            f"long: guard {guard_long.s_per_image:.2f} s/img vs the seed at 78 C "
            f"{seed78.s_per_image:.2f} ({seed78.s_per_image / guard_long.s_per_image:.2f}x)",
            guard_long.s_per_image <= seed78.s_per_image,
        ),
        (f"hot: seed blacks out ({seed_hot.blackouts})", seed_hot.blackouts >= 1),
    ]


if __name__ == "__main__":
    sys.exit(main())
