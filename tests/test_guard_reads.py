"""How often the guard reads its sensor: a prompt's end and the next gate share one reading,
and a sensor without a temperature is not asked again within its poll interval (each read of
a server's sensor is an HTTP request, on the path of every image)."""

from __future__ import annotations

import asyncio

from comfyline.guard import Reading
from test_guard_policy import FakeClock, ScriptedSensor, make_guard


class HeldSensor:
    """Answers a read only once let go (``go``); counts the reads asked for."""

    name = "held"
    last_error: str | None = None

    def __init__(self, temperature_c: float) -> None:
        self.temperature_c = temperature_c
        self.reads = 0
        self.go = asyncio.Event()

    async def read(self) -> Reading | None:
        self.reads += 1
        await self.go.wait()
        return Reading(temperature_c=self.temperature_c)


async def settle_loop() -> None:
    """Let every task run up to where it waits (no I/O here: the order is fixed)."""
    for _ in range(20):
        await asyncio.sleep(0)


async def test_a_prompts_end_and_the_next_gate_share_one_reading() -> None:
    clock = FakeClock()
    sensor = HeldSensor(30.0)  # cool: a second prompt may join the first
    guard, _ = make_guard(sensor, clock)
    sensor.go.set()
    await guard.before_prompt()
    assert sensor.reads == 1
    sensor.go.clear()
    # The first prompt ends: the server's news and the gate of the next prompt come together.
    settled = asyncio.create_task(guard.prompt_settled())
    gate = asyncio.create_task(guard.before_prompt())
    await settle_loop()
    assert not settled.done() and not gate.done()  # both wait on the one read under way
    sensor.go.set()
    await asyncio.gather(settled, gate)
    assert sensor.reads == 2
    sample = await guard.after_prompt()  # the end is the reading taken when it settled
    assert sensor.reads == 2
    assert sample is not None and sample.temperature_c == 30.0


async def test_a_sensor_without_temperature_is_read_once_per_poll_interval() -> None:
    clock = FakeClock()
    vram = Reading(vram_used_bytes=4 * 2**30, vram_total_bytes=12 * 2**30)
    sensor = ScriptedSensor([vram, vram, 50.0])
    guard, _ = make_guard(sensor, clock, pause=0.0)
    for _ in range(5):  # the clock stands still: one reading serves every prompt
        await guard.before_prompt()
        await guard.prompt_settled()
        sample = await guard.after_prompt()
        assert sample is not None and sample.vram_used_bytes == 4 * 2**30
    assert sensor.reads == 1
    clock.now += guard.limits.poll_interval_s
    await guard.before_prompt()
    assert sensor.reads == 2
    clock.now += guard.limits.poll_interval_s
    await guard.prompt_settled()
    await guard.after_prompt()
    assert sensor.reads == 3  # a temperature at last: from now on, every reading is taken
    await guard.before_prompt()
    await guard.prompt_settled()
    assert sensor.reads == 5
