"""The pacing policy, driven by a scripted sensor and a clock that moves only when slept on."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

import pytest

from comfyline.errors import ComfyUnavailable, ConfigError, GuardTripped
from comfyline.guard import Guard, GuardEvent, Limits, NoSensor, Reading
from comfyline.settings import Settings


class FakeClock:
    """Time stands still until someone sleeps; every sleep is recorded."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class ScriptedSensor:
    """Plays back readings in order (a temperature, a Reading, or None for a failed read);
    the last one repeats."""

    name = "scripted"

    def __init__(self, script: Sequence[float | Reading | None]) -> None:
        self.script = list(script)
        self.reads = 0
        self.last_error: str | None = None

    async def read(self) -> Reading | None:
        item = self.script[min(self.reads, len(self.script) - 1)]
        self.reads += 1
        if item is None:
            self.last_error = "scripted failure"
            return None
        return item if isinstance(item, Reading) else Reading(temperature_c=item, power_w=150.0)


class CoolingCard:
    """A card at ``start`` °C that cools by ``rate`` °C per second of the fake clock."""

    name = "cooling"
    last_error: str | None = None

    def __init__(self, clock: FakeClock, start: float, rate: float) -> None:
        self.clock, self.start, self.rate, self.t0 = clock, start, rate, clock.now

    async def read(self) -> Reading | None:
        return Reading(temperature_c=self.start - self.rate * (self.clock.now - self.t0))


class FreeCounter:
    def __init__(self, error: Exception | None = None) -> None:
        self.calls = 0
        self.error = error

    async def __call__(self) -> None:
        self.calls += 1
        if self.error is not None:
            raise self.error


def make_guard(
    sensor: object,
    clock: FakeClock,
    *,
    limits: Limits | None = None,
    pause: float = 2.0,
    max_batch: int = 50,
    free: FreeCounter | None = None,
) -> tuple[Guard, list[GuardEvent]]:
    seen: list[GuardEvent] = []
    guard = Guard(
        sensor,  # type: ignore[arg-type]
        limits or Limits(),
        pause,
        max_batch,
        clock=clock,
        sleep=clock.sleep,
        free_memory=free,
        on_event=seen.append,
        series_pause_s=30.0,
        margin_c=0.0,  # whole numbers in the tests; the margin has its own test
    )
    return guard, seen


def kinds(events: Sequence[GuardEvent]) -> list[str]:
    return [e.kind for e in events]


async def run_images(guard: Guard, n: int) -> None:
    for _ in range(n):
        await guard.before_prompt()
        await guard.after_prompt()


async def test_under_target_never_pauses() -> None:
    clock = FakeClock()
    # Each prompt starts at 60 °C and ends at 71 °C: 60 + 11 stays under 78.
    guard, events = make_guard(ScriptedSensor([60.0, 71.0] * 10), clock)
    await run_images(guard, 10)
    assert clock.sleeps == []
    assert events == []
    assert len(guard.samples) == 20  # one reading before each prompt and one after each image
    assert guard.samples[-1].temperature_c == 71.0
    assert guard.samples[0].power_w == 150.0
    assert guard.cooling_s_per_image() == 0.0
    assert guard.rise_per_prompt_c() == 11.0


async def test_under_target_without_room_for_the_next_prompt_holds() -> None:
    clock = FakeClock()
    # The first prompt heats the card 50 -> 62 (+12); at 70 the next would reach 82.
    guard, events = make_guard(ScriptedSensor([50.0, 62.0, 70.0, 68.0, 66.0, 60.0]), clock)
    await run_images(guard, 1)
    await guard.before_prompt()
    assert clock.sleeps == [1.0, 1.0]  # released at 66 = 78 - 12
    assert kinds(events) == ["held"]
    assert "would pass the target 78 °C" in events[0].message
    assert "+12.0 °C" in events[0].message


async def test_prompts_in_flight_count_towards_the_heat() -> None:
    clock = FakeClock()
    sensor = ScriptedSensor([50.0, 60.0, 55.0, 59.0, 58.0])
    guard, events = make_guard(sensor, clock)
    await run_images(guard, 1)  # learns +10 per prompt
    await guard.before_prompt()  # 55 + 10 <= 78: goes, and is in flight
    assert clock.sleeps == []
    await guard.before_prompt()  # 59 + 2 x 10 > 78: wait for 58
    assert clock.sleeps == [1.0]
    assert "1 in flight" in events[0].message


async def test_margin_is_kept_under_the_target() -> None:
    clock = FakeClock()
    guard, _ = make_guard(ScriptedSensor([50.0, 62.0, 66.0, 65.0]), clock)
    guard.margin_c = 1.0
    await run_images(guard, 1)  # +12
    await guard.before_prompt()  # 66 + 12 = 78 would touch the target: wait for 65
    assert clock.sleeps == [1.0]


async def test_rise_is_learned_from_prompts_that_run_alone() -> None:
    clock = FakeClock()
    sensor = ScriptedSensor([50.0, 62.0, 53.0, 53.0, 70.0, 72.0, 60.0, 68.0])
    guard, _ = make_guard(sensor, clock)
    assert guard.rise_per_prompt_c() == 15.0  # the prior, before any measurement
    await guard.before_prompt()  # 50, alone
    await guard.after_prompt()  # 62: +12
    assert guard.rise_per_prompt_c() == 12.0
    await guard.before_prompt()  # 53
    await guard.before_prompt()  # 53 + 2 x 12 fits: two in flight, neither alone
    await guard.after_prompt()
    await guard.after_prompt()  # 72: not a measure of one prompt
    assert guard.rise_per_prompt_c() == 12.0
    await guard.before_prompt()  # 60, alone
    await guard.after_prompt()  # 68: +8; the most of the recent ones stays
    assert guard.rise_per_prompt_c() == 12.0


async def test_watch_reads_while_prompts_run_and_catches_the_peak() -> None:
    clock = FakeClock()
    stop = asyncio.Event()
    sleeps = 0

    async def sleep(seconds: float) -> None:
        nonlocal sleeps
        sleeps += 1
        clock.now += seconds
        if sleeps >= 3:
            await stop.wait()  # parks the watcher until the test cancels it

    sensor = ScriptedSensor([50.0, 66.0, 71.0, 63.0, 64.0])
    guard = Guard(sensor, Limits(), 2.0, 50, clock=clock, sleep=sleep)
    await guard.before_prompt()  # 50, alone
    watcher = asyncio.create_task(guard.watch())
    while sleeps < 3:
        await asyncio.sleep(0)
    watcher.cancel()
    await asyncio.gather(watcher, return_exceptions=True)
    await guard.after_prompt()  # 64 at the end, but it was 71 while running
    assert guard.rise_per_prompt_c() == 21.0
    assert [s.temperature_c for s in guard.samples] == [50.0, 66.0, 71.0, 63.0, 64.0]


async def test_release_threshold_never_below_the_coolest_reading() -> None:
    clock = FakeClock()
    # A prompt heated the card by 40 °C: 78 - 40 = 38 is below its idle 50 °C, never reached.
    sensor = ScriptedSensor([50.0, 90.0, 70.0, 60.0, 51.0])
    guard, events = make_guard(sensor, clock, free=FreeCounter())
    await run_images(guard, 1)
    await guard.before_prompt()
    assert clock.sleeps == [1.0, 1.0]
    assert events[-1].temperature_c == 51.0


async def test_rise_prior_applies_before_the_first_measurement() -> None:
    clock = FakeClock()
    guard, _ = make_guard(ScriptedSensor([60.0, 64.0, 62.0, 61.0]), clock)
    guard.rise_prior_c = 10.0
    await guard.before_prompt()  # 60 + 10 fits
    await guard.before_prompt()  # 64 + 2 x 10 does not: wait for 78 - 20, but 61 is the floor
    assert clock.sleeps == [1.0, 1.0]


async def test_at_target_holds_until_resume_temperature() -> None:
    clock = FakeClock()
    guard, events = make_guard(ScriptedSensor([78.0, 77.0, 75.0, 72.5, 72.0, 60.0]), clock)
    await guard.before_prompt()
    assert clock.sleeps == [1.0, 1.0, 1.0, 1.0]  # 77, 75 and 72.5 are still above 72
    assert kinds(events) == ["held"]
    assert events[0].seconds == 4.0
    assert events[0].temperature_c == 72.0
    assert "78.0 °C" in events[0].message and "target 78" in events[0].message
    assert guard.stats.holds == 1 and guard.stats.held_s == 4.0
    await guard.before_prompt()  # 60 °C now: straight through
    assert len(clock.sleeps) == 4


async def test_poll_interval_comes_from_settings() -> None:
    clock = FakeClock()
    limits = Limits.from_settings(Settings(sensor_interval_s=0.25, cool_timeout_s=30))
    guard, _ = make_guard(ScriptedSensor([80, 71]), clock, limits=limits)
    await guard.before_prompt()
    assert clock.sleeps == [0.25]
    assert limits.cool_timeout_s == 30


async def test_critical_frees_memory_sends_nothing_and_waits() -> None:
    clock = FakeClock()
    free = FreeCounter()
    guard, events = make_guard(ScriptedSensor([84.0, 84.5, 80.0, 71.0]), clock, free=free)
    await guard.before_prompt()
    assert free.calls == 1  # once per hold, not once per poll
    assert kinds(events) == ["critical", "freed_memory", "held"]
    assert "critical 83" in events[0].message
    assert events[-1].seconds == 3.0
    assert guard.stats.memory_frees == 1


async def test_rising_past_critical_while_held_frees_memory() -> None:
    # The prompt already running keeps heating the card after the hold began.
    clock = FakeClock()
    free = FreeCounter()
    guard, events = make_guard(ScriptedSensor([79.0, 83.5, 76.0, 72.0]), clock, free=free)
    await guard.before_prompt()
    assert free.calls == 1
    assert kinds(events) == ["freed_memory", "held"]


async def test_a_failed_free_is_recorded_and_the_hold_goes_on() -> None:
    clock = FakeClock()
    free = FreeCounter(ComfyUnavailable("nothing answers at http://127.0.0.1:8188"))
    guard, events = make_guard(ScriptedSensor([85.0, 70.0]), clock, free=free)
    await guard.before_prompt()
    assert kinds(events) == ["critical", "freed_memory", "held"]
    assert "could not free" in events[1].message and "nothing answers" in events[1].message


async def test_card_that_does_not_cool_trips_the_guard() -> None:
    clock = FakeClock()
    limits = Limits(cool_timeout_s=10.0)
    guard, events = make_guard(ScriptedSensor([84.0, 80.0]), clock, limits=limits)
    with pytest.raises(GuardTripped) as caught:
        await guard.before_prompt()
    message = str(caught.value)
    assert "84.0 °C" in message and "80.0 °C" in message  # where it started, where it stuck
    assert "to 72.0 °C" in message and "within 10 s" in message
    assert "state is saved; resume when the card is cool" in message
    assert sum(clock.sleeps) == 10.0
    assert kinds(events) == ["critical", "tripped"]
    assert events[-1].seconds == 10.0


async def test_sensor_silent_during_a_hold_keeps_holding_then_trips() -> None:
    clock = FakeClock()
    guard, events = make_guard(ScriptedSensor([79.0, None]), clock, limits=Limits(cool_timeout_s=5))
    with pytest.raises(GuardTripped, match="last reading unknown \\(scripted failure\\)"):
        await guard.before_prompt()
    assert sum(clock.sleeps) == 5.0
    assert kinds(events) == ["no_temperature", "tripped"]


async def test_thermal_throttling_under_target_holds() -> None:
    clock = FakeClock()
    hot = Reading(
        temperature_c=75.0,
        thermal_throttling=True,
        clock_event_reasons=("sw_thermal_slowdown",),
    )
    guard, events = make_guard(ScriptedSensor([hot, 73.0, 72.0]), clock)
    await guard.before_prompt()
    assert clock.sleeps == [1.0, 1.0]
    assert "sw_thermal_slowdown" in events[0].message


async def test_low_slowdown_threshold_is_warned_about_once() -> None:
    clock = FakeClock()
    reading = Reading(temperature_c=50.0, slowdown_c=76.0)
    guard, events = make_guard(ScriptedSensor([reading]), clock)
    await run_images(guard, 3)
    assert kinds(events) == ["warning"]
    assert "76 °C" in events[0].message


async def test_max_batch_frees_memory_and_cools_to_resume() -> None:
    clock = FakeClock()
    free = FreeCounter()
    sensor = ScriptedSensor([70.0, 70.0, 70.0, 70.0, 70.0, 70.0, 76.0, 74.0, 72.0, 60.0])
    guard, events = make_guard(sensor, clock, max_batch=3, free=free)
    await run_images(guard, 3)
    assert clock.sleeps == [] and free.calls == 0
    await guard.before_prompt()  # the 4th: after 3 in a row, cleanup and cool-down first
    assert free.calls == 1
    assert kinds(events) == ["series_cooldown", "freed_memory", "held"]
    assert clock.sleeps == [1.0, 1.0]
    await guard.after_prompt()
    await run_images(guard, 2)  # the series count restarted
    assert free.calls == 1


async def test_max_batch_already_cool_only_frees_memory() -> None:
    clock = FakeClock()
    free = FreeCounter()
    guard, events = make_guard(ScriptedSensor([65.0]), clock, max_batch=2, free=free)
    await run_images(guard, 3)
    assert free.calls == 1
    assert clock.sleeps == []
    assert kinds(events) == ["series_cooldown", "freed_memory"]


async def test_max_batch_counts_images_not_prompts() -> None:
    clock = FakeClock()
    free = FreeCounter()
    guard, _ = make_guard(ScriptedSensor([65.0]), clock, max_batch=4, free=free)
    for _ in range(2):
        await guard.before_prompt()
        await guard.after_prompt(images=2)  # a batch of 2
    await guard.before_prompt()
    assert free.calls == 1


async def test_no_sensor_fixed_pause_between_images_said_once() -> None:
    clock = FakeClock()
    guard, events = make_guard(NoSensor(), clock, pause=2.0)
    await run_images(guard, 4)
    assert clock.sleeps == [2.0, 2.0, 2.0]  # between images, not before the first
    assert kinds(events) == ["no_temperature"]
    assert "fixed pause of 2.0 s" in events[0].message
    assert guard.samples == []
    assert guard.cooling_s_per_image() == 1.5
    assert guard.estimated_cooling_s(10) == 15.0


async def test_no_sensor_estimate_before_any_image_is_the_level_pause() -> None:
    guard, _ = make_guard(NoSensor(), FakeClock(), pause=2.5)
    assert guard.estimated_cooling_s(4) == 10.0


async def test_no_sensor_max_batch_pauses_for_the_series() -> None:
    clock = FakeClock()
    free = FreeCounter()
    guard, _ = make_guard(NoSensor(), clock, pause=1.5, max_batch=2, free=free)
    await run_images(guard, 3)
    assert clock.sleeps == [1.5, 30.0]
    assert free.calls == 1


async def test_vram_only_sensor_uses_the_fixed_pause() -> None:
    clock = FakeClock()
    vram = Reading(vram_used_bytes=4 * 2**30, vram_total_bytes=12 * 2**30)
    guard, events = make_guard(ScriptedSensor([vram]), clock, pause=2.0)
    await run_images(guard, 2)
    assert clock.sleeps == [2.0]
    assert "reports no temperature" in events[0].message
    assert guard.samples[0].vram_used_bytes == 4 * 2**30  # VRAM is still on the time line


async def test_sensor_failing_mid_run_falls_back_to_the_pause_and_says_so_once() -> None:
    clock = FakeClock()
    # before/after pairs: image 1 fine; images 2-3 the sensor fails; image 4 it is back.
    sensor = ScriptedSensor([60.0, 61.0, None, None, None, None, 62.0, 62.0])
    guard, events = make_guard(sensor, clock, pause=2.0)
    await run_images(guard, 4)
    assert clock.sleeps == [2.0, 2.0]
    assert kinds(events) == ["no_temperature", "sensor_back"]
    assert "scripted failure" in events[0].message
    assert guard.stats.missed_readings == 4


async def test_cooling_estimate_from_the_run_so_far() -> None:
    clock = FakeClock()
    card = CoolingCard(clock, start=80.0, rate=2.0)
    guard, _ = make_guard(card, clock)
    await run_images(guard, 2)
    # 80 -> 72 at 2 °C/s: one hold of 4 s over two images.
    assert guard.stats.held_s == 4.0
    assert guard.cooling_s_per_image() == 2.0
    assert guard.estimated_cooling_s(5) == 10.0


async def test_samples_are_timed_from_the_start_of_the_guard() -> None:
    clock = FakeClock()
    card = CoolingCard(clock, start=79.0, rate=1.0)
    guard, _ = make_guard(card, clock)
    await guard.before_prompt()
    times = [s.t_s for s in guard.samples]
    assert times == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]
    assert [s.temperature_c for s in guard.samples][-1] == 72.0


@pytest.mark.parametrize(
    "make",
    [
        lambda: Limits(target_c=70, resume_c=72),
        lambda: Limits(target_c=85, critical_c=83),
        lambda: Limits(cool_timeout_s=0),
        lambda: Limits.from_settings(Settings(resume_temp_c=80)),
    ],
)
def test_inconsistent_limits_are_refused(make: Callable[[], Limits]) -> None:
    with pytest.raises(ConfigError, match="must"):
        make()
