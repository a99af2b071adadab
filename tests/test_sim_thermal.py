"""The simulated card's thermal model: the fit to the seed's observations (with the model's own
clock, no waiting) and the blackout of the simulated server (with ``time_scale``)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from comfyline.sim import ThermalConfig, ThermalModel
from sim_graphs import txt2img
from test_sim_faults import Client

WORK_S = 1.54  # the seed's 3.54 s per image less its 2.0 s pause
PAUSE_S = 2.0


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def card(room_c: float = 25.0) -> tuple[ThermalModel, Clock]:
    clock = Clock()
    return ThermalModel(ThermalConfig(room_c=room_c), clock), clock


def work(model: ThermalModel, clock: Clock, seconds: float) -> float:
    model.set_busy(True)
    clock.now += seconds
    model.set_busy(False)
    return model.temperature()


def seed_schedule(room_c: float, images: int) -> tuple[list[float], float]:
    """Temperatures at the end of each image, and the highest temperature seen."""
    model, clock = card(room_c)
    ends = []
    for _ in range(images):
        ends.append(work(model, clock, WORK_S))  # the peak: the card heats only while busy
        clock.now += PAUSE_S
    return ends, max(ends)


def test_seed_schedule_stays_within_72_and_78() -> None:
    ends, peak = seed_schedule(25.0, 10)
    assert peak <= 78.0
    assert all(72.0 <= t <= 78.0 for t in ends[2:]), ends
    assert ends[0] < ends[1] < ends[2]  # it starts from an idle card and warms up


def test_without_pauses_the_card_passes_85_by_the_fifth_image() -> None:
    model, clock = card()
    temps = [work(model, clock, WORK_S) for _ in range(5)]
    assert temps[4] > 85.0
    assert temps[1] < 85.0  # not already at the 2nd: the seed saw it at the 3rd-5th


def test_long_seed_run_survives_at_25_and_blacks_out_at_32() -> None:
    _, peak_25 = seed_schedule(25.0, 300)
    _, peak_32 = seed_schedule(32.0, 300)
    assert 78.0 < peak_25 < 85.0
    assert peak_32 > 85.0


def test_a_predictive_guard_can_beat_the_seed_by_1_2x_under_78() -> None:
    model, clock = card()
    peak = 0.0
    for _ in range(10):
        while model.forecast(WORK_S) > 78.0:  # wait (model time) until safe
            clock.now += 0.05
        peak = max(peak, work(model, clock, WORK_S))
    assert peak <= 78.0
    assert clock.now * 1.2 <= 10 * (WORK_S + PAUSE_S)


def test_idle_card_cools_towards_room_plus_idle_rise() -> None:
    model, clock = card(30.0)
    work(model, clock, 60.0)
    clock.now += 10_000.0
    assert model.temperature() == pytest.approx(30.0 + model.config.idle_rise_c, abs=0.01)


def test_time_scale_makes_model_time_run_fast(make_sim: Any) -> None:
    with make_sim(thermal=ThermalConfig(), fixed_prompt_s=0.0, time_scale=0.001) as sim:
        sensor = httpx.get(sim.url + "/sim/sensor").json()
        stats = httpx.get(sim.url + "/system_stats").json()
    assert set(sensor) >= {
        "temperature_c",
        "power_w",
        "vram_used_bytes",
        "vram_total_bytes",
        "utilization",
        "blackouts",
    }
    assert sensor["temperature_c"] == pytest.approx(43.0, abs=0.5)
    assert stats["devices"][0]["temperature_c"] == pytest.approx(43.0, abs=0.5)


def test_overheating_blacks_the_server_out(make_sim: Any) -> None:
    thermal = ThermalConfig(blackout_s=20.0)
    # The model load (not heating) holds the first prompt until all ten are queued.
    timing = {"fixed_prompt_s": WORK_S, "model_load_s": 20.0, "time_scale": 0.02}
    with make_sim(thermal=thermal, **timing) as sim:
        graph = txt2img(seed=0, text="hot", width=32, height=32, prefix="hot", steps=1)

        async def scenario() -> None:
            url = sim.url.replace("http://", "ws://") + "/ws?clientId=hot"
            async with connect(url, open_timeout=10) as ws, httpx.AsyncClient() as http:
                for seed in range(10):
                    graph["3"]["inputs"]["seed"] = seed
                    body = {"prompt": graph, "client_id": "hot"}
                    assert (await http.post(sim.url + "/prompt", json=body)).status_code == 200
                with pytest.raises(ConnectionClosed):
                    async with asyncio.timeout(10):
                        while True:
                            json.loads(await ws.recv())

        asyncio.run(scenario())
        sim.wait_up()
        sensor = httpx.get(sim.url + "/sim/sensor").json()
        stats = sim.stats()
    assert sensor["blackouts"] == 1
    assert stats["lost"] == 1 and stats["executed"] == 3  # the 4th image took it past 85 °C
    assert sensor["temperature_c"] < 85.0  # it cooled while away


def test_each_prompt_is_timed_on_the_model_clock_too(make_sim: Any) -> None:
    # A benchmark compares a schedule with the optimum on the thermal model's clock: there a
    # prompt's work lasts exactly its simulated seconds, whatever the machine's real time.
    async def run() -> None:
        async with Client(sim.url) as client:
            _, kinds = await client.run(txt2img())
            assert "execution_success" in kinds

    with make_sim(thermal=ThermalConfig(), fixed_prompt_s=0.3, time_scale=0.5) as sim:
        asyncio.run(run())
        (record,) = httpx.get(sim.url + "/sim/stats").json()["prompts"]
    model_span = record["end_model_s"] - record["start_model_s"]
    # Its 0.3 s of work, and the moments around it (real time x 2 there: a busy machine's
    # pause of a second between two messages is two model seconds).
    assert 0.3 <= model_span < 0.3 + 5.0
    assert record["end_s"] - record["start_s"] >= 0.3 * 0.5  # real time: half of it
