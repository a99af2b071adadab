"""The guard against the simulator's thermal model, sped up with ``time_scale``: it keeps the
card at or under 78 °C, and the same run with no guard blacks the simulated card out."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import httpx

from comfyline.comfy import ComfyUIAdapter
from comfyline.generation import GenerationRequest
from comfyline.guard import Guard, Limits, SimSensor
from comfyline.presets import get_level, params_for
from comfyline.settings import Settings
from comfyline.sim import SimulatorHandle, ThermalConfig

# 2x faster than real time. Faster distorts: a reading that comes late (a busy machine, the
# event loop behind) counts 1/TIME_SCALE times over, and the die cools about 5 degrees a
# model second after a prompt; at 2x, the 2 degree margin below covers 0.2 s of lateness.
TIME_SCALE = 0.5
WORK_S = 1.54  # model seconds of work per standard image (the seed's 3.54 s less its 2 s pause)
THERMAL = ThermalConfig(room_c=25.0, blackout_s=2.0)


def sim_options(tmp_path: Path) -> dict[str, Any]:
    params = params_for("standard")
    return {
        "step_s": WORK_S / params.steps / (params.width * params.height / 512**2),
        "time_scale": TIME_SCALE,
        "thermal": THERMAL,
        "output_dir": tmp_path / "comfy-out",
    }


def requests(n: int, out: Path) -> list[GenerationRequest]:
    params = params_for("standard")
    return [
        GenerationRequest("a lighthouse", 7 + i, params, checkpoint="sim-sd15.safetensors")
        for i in range(n)
    ]


async def run(url: str, n: int, out: Path, *, guarded: bool) -> Guard | None:
    level = get_level("standard")
    async with ComfyUIAdapter(Settings(comfyui_url=url)) as comfy, httpx.AsyncClient() as http:

        async def free_memory() -> None:
            await comfy.free_memory(unload_models=False)

        async def sleep(seconds: float) -> None:
            await asyncio.sleep(seconds * TIME_SCALE)

        guard = Guard(
            SimSensor(url, http),
            Limits(),
            level.pause_s,
            level.max_batch,
            clock=lambda: time.monotonic() / TIME_SCALE,
            sleep=sleep,
            free_memory=free_memory,
            # What a reading misses grows with its delay: at 5x, 10 ms late is 0.05 model s,
            # half a degree of a die cooling from its peak; on a loaded machine, more.
            margin_c=2.0,
            trusted_margin_c=2.0,
        )
        watcher = asyncio.create_task(guard.watch()) if guarded else None
        gate = guard.before_prompt if guarded else None
        try:
            settled = guard.prompt_settled if guarded else None
            batch = comfy.generate_batch(requests(n, out), gate=gate, on_settled=settled)
            async for result in batch:
                if guarded:
                    await guard.after_prompt(len(result.images))
        finally:
            if watcher is not None:
                watcher.cancel()
                await asyncio.gather(watcher, return_exceptions=True)
    return guard if guarded else None


def peak_temperatures(sim: SimulatorHandle) -> list[float]:
    """The card's temperature at the end of each prompt's work (where a die is hottest), as the
    simulator's thermal model recorded it: nothing between two reads is missed."""
    ends = (prompt.end_temperature_c for prompt in sim.simulator.stats.prompts)
    return [end for end in ends if end is not None]


async def test_guard_keeps_the_card_at_or_under_target(
    make_sim: Callable[..., AbstractContextManager[SimulatorHandle]], tmp_path: Path
) -> None:
    with make_sim(**sim_options(tmp_path)) as sim:
        guard = await run(sim.url, 6, tmp_path / "ours", guarded=True)
        stats = sim.stats()
        peaks = peak_temperatures(sim)
    assert guard is not None
    assert stats["blackouts"] == 0
    assert len(peaks) == 6
    # The guard aims at 76 °C (its margin) from its own readings: a degree spare for what
    # late readings miss; the peaks are the simulator's own record.
    assert max(peaks) <= 78.0, peaks
    assert guard.stats.holds > 0  # it had to hold: the test would fail without the guard
    assert max(s.temperature_c or 0 for s in guard.samples) <= 78.0


async def test_without_the_guard_the_card_blacks_out(
    make_sim: Callable[..., AbstractContextManager[SimulatorHandle]], tmp_path: Path
) -> None:
    with make_sim(**sim_options(tmp_path)) as sim:
        await run(sim.url, 5, tmp_path / "ours", guarded=False)
        assert sim.stats()["blackouts"] >= 1
        assert max(peak_temperatures(sim)) > THERMAL.blackout_c
