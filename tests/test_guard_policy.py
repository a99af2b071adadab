"""The pacing policy, driven by a scripted sensor and a clock that moves only when slept on.

Every guard here re-reads a cooling card once per ``poll_interval_s`` (``min_poll_s`` set to it),
so that the sleeps are whole seconds; the early re-reads have their own test.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Sequence

import pytest

from comfyline.errors import ComfyUnavailable, ConfigError, GuardTripped
from comfyline.guard import Guard, GuardEvent, Limits, NoSensor, Reading
from comfyline.guard.heat import HeatLearner, HeatModel
from comfyline.settings import Settings

PRIOR = HeatModel(a=37.0, b=0.7)  # the default: 40 -> 65, 60 -> 79, 70 -> 86


class FakeClock:
    """Time stands still until someone sleeps; every sleep is recorded."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(round(seconds, 6))
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
    margin: float = 0.0,
) -> tuple[Guard, list[GuardEvent]]:
    seen: list[GuardEvent] = []
    limits = limits or Limits()
    guard = Guard(
        sensor,  # type: ignore[arg-type]
        limits,
        pause,
        max_batch,
        clock=clock,
        sleep=clock.sleep,
        free_memory=free,
        on_event=seen.append,
        series_pause_s=30.0,
        margin_c=margin,  # whole numbers in the tests; the margin has its own test
        min_poll_s=limits.poll_interval_s,
        resolution_c=0.0,  # whole numbers, but read as exact
    )
    return guard, seen


def kinds(events: Sequence[GuardEvent]) -> list[str]:
    return [e.kind for e in events]


async def run_images(guard: Guard, n: int) -> None:
    """``n`` prompts one after the other (gate, then the end of the prompt)."""
    for _ in range(n):
        await guard.before_prompt()
        await guard.after_prompt()


async def settle() -> None:
    """Let every task that can run now run (no time passes)."""
    for _ in range(20):
        await asyncio.sleep(0)


# -- the forecast -------------------------------------------------------------------------


async def test_idle_card_goes_at_once_and_never_pauses_while_the_forecast_fits() -> None:
    clock = FakeClock()
    # Each prompt starts at 60 °C and ends at 71 °C: learned, 60 -> 71 stays under 78.
    guard, events = make_guard(ScriptedSensor([40.0, 60.0, *[60.0, 71.0] * 9]), clock)
    await run_images(guard, 10)
    assert clock.sleeps == []
    assert events == []
    assert len(guard.samples) == 20  # one reading before each prompt and one after each image
    assert guard.samples[-1].temperature_c == 71.0
    assert guard.samples[0].power_w == 150.0
    assert guard.cooling_s_per_image() == 0.0
    assert guard.heat_model().peak_c(60.0) == pytest.approx(71.0, abs=0.5)


async def test_the_prior_holds_a_hot_card_before_anything_was_measured() -> None:
    clock = FakeClock()
    # Nothing measured yet: 37 + 0.7 * 62 = 80.4 would pass 78; 58 -> 77.6 goes.
    guard, events = make_guard(ScriptedSensor([62.0, 61.0, 60.0, 58.0]), clock)
    await guard.before_prompt()
    assert clock.sleeps == [1.0, 1.0, 1.0]
    assert kinds(events) == ["held"]
    assert "expected peak 80.4 °C" in events[0].message
    assert events[0].temperature_c == 58.0


async def test_under_target_without_room_for_the_next_prompt_holds() -> None:
    clock = FakeClock()
    # 50 -> 72 learned (a = 37 with the prior slope): from 70 the next would peak at 86;
    # at or under (78 - 37) / 0.7 = 58.6 it goes.
    guard, events = make_guard(ScriptedSensor([50.0, 72.0, 70.0, 64.0, 58.5]), clock)
    await run_images(guard, 1)
    await guard.before_prompt()
    assert clock.sleeps == [1.0, 1.0]
    assert kinds(events) == ["held"]
    assert "card at 70.0 °C would pass the target 78 °C" in events[0].message
    assert "expected peak 86.0 °C" in events[0].message
    assert guard.stats.holds == 1 and guard.stats.held_s == 2.0


async def test_margin_is_kept_under_the_target() -> None:
    clock = FakeClock()
    guard, _ = make_guard(ScriptedSensor([50.0, 72.0, 58.5, 57.0]), clock, margin=1.0)
    await run_images(guard, 1)
    await guard.before_prompt()  # 58.5 -> 77.95 would pass 78 - 1: wait for 57 (-> 76.9)
    assert clock.sleeps == [1.0]


async def test_a_hot_card_is_learned_to_heat_less_than_a_cool_one() -> None:
    clock = FakeClock()
    # A card that ends each prompt at 30 + 0.6 * start: from 40 it rises 14, from 70 only 2.
    script: list[float] = []
    for start in (40.0, 50.0, 60.0, 45.0, 55.0, 65.0):
        script += [start, 30.0 + 0.6 * start]
    guard, _ = make_guard(ScriptedSensor(script), clock)
    await run_images(guard, 6)
    model = guard.heat_model()
    assert model.b == pytest.approx(0.62, abs=0.03)  # towards the data's 0.6, off the prior 0.7
    # From 70 °C it heats 2 °C (72), not the 14 it does from 40: forecast a little over, never
    # under (``a`` is the hottest of the last prompts, the slope a little towards the prior's).
    assert 72.0 <= model.peak_c(70.0) <= 74.5
    assert model.peak_c(40.0) - 40.0 > model.peak_c(70.0) - 70.0 + 8
    assert [s.start_c for s in guard.heat.samples] == [40.0, 50.0, 60.0, 45.0, 55.0, 65.0]


def test_the_fit_follows_a_heatsink_that_warms() -> None:
    learner = HeatLearner()
    # Every prompt starts at 64 °C, but ends 0.5 °C hotter than the one before.
    for i in range(10):
        learner.add(64.0, 74.0 + 0.5 * i)
    # The newest, hottest prompt tells: the last end (78.5), not the mean (76.25).
    assert learner.model().peak_c(64.0) == pytest.approx(78.5)
    assert learner.model().b == 0.7  # all from one start: the slope stays the prior's


def test_starts_too_close_to_tell_a_slope_keep_the_prior_slope() -> None:
    learner = HeatLearner()
    learner.add(65.0, 77.0)
    learner.add(65.2, 77.9)  # +0.9 for +0.2: noise, not a slope of 4.5
    model = learner.model()
    assert model.b == pytest.approx(0.7, abs=0.02)
    assert model.peak_c(65.1) == pytest.approx(77.83, abs=0.05)  # the hotter of the two


def test_a_later_reading_only_ever_raises_the_last_end() -> None:
    learner = HeatLearner()
    learner.add(50.0, 60.0)
    assert not learner.raise_last_end(59.0)
    assert learner.raise_last_end(61.0)
    assert learner.samples[-1].end_c == 61.0 and len(learner.samples) == 1


# -- prompts in flight --------------------------------------------------------------------


async def test_a_second_prompt_goes_at_once_when_both_fit() -> None:
    clock = FakeClock()
    guard, _ = make_guard(ScriptedSensor([30.0, 40.0, 39.0]), clock)
    await run_images(guard, 1)  # 30 -> 40: a = 19
    await guard.before_prompt()  # 39, alone
    await guard.before_prompt()  # in flight: 39 -> 46.3; the next: 51.4 fits. No waiting.
    assert clock.sleeps == []
    await guard.after_prompt()  # the first ends at 39 (the scripted last value)
    await guard.after_prompt()
    # The second started when the first ended: it is learned from the reading at that end.
    assert [(s.start_c, s.end_c) for s in guard.heat.samples] == [
        (30.0, 40.0),
        (39.0, 39.0),
        (39.0, 39.0),
    ]


async def test_a_prompt_that_would_not_fit_waits_for_the_one_in_flight() -> None:
    clock = FakeClock()
    # 50 -> 65 learned (a = 30). Released at 60 (-> 72); the next would peak at 80.4.
    sensor = ScriptedSensor([50.0, 65.0, 60.0, 66.0, 74.0, 73.0, 64.0])
    guard, events = make_guard(sensor, clock)
    await run_images(guard, 1)
    await guard.before_prompt()  # 60: goes
    second = asyncio.create_task(guard.before_prompt())
    await settle()
    assert not second.done()  # waits for the end of the prompt in flight, without polling
    assert sensor.reads == 4 and clock.sleeps == []
    await guard.after_prompt()  # ends at 74: learned (60, 74), the gate decides again
    await second
    # Fresh readings: 73 is too hot for the new fit (under 64.8 may go), 64 goes.
    assert clock.sleeps == [1.0]
    assert kinds(events) == ["held"]
    assert "card at 73.0 °C" in events[0].message
    assert events[0].seconds == 1.0  # only the time the card had nothing to do counts


async def test_a_prompt_that_ends_while_the_gate_frees_memory_is_not_waited_for() -> None:
    clock = FakeClock()
    guard: Guard | None = None

    async def free_while_the_prompt_ends() -> None:
        assert guard is not None
        await guard.after_prompt()  # the prompt in flight ends during POST /free

    sensor = ScriptedSensor([40.0, 84.0, 60.0, 50.0])
    guard = Guard(
        sensor,
        Limits(),
        2.0,
        50,
        clock=clock,
        sleep=clock.sleep,
        free_memory=free_while_the_prompt_ends,
        min_poll_s=1.0,
        resolution_c=0.0,
    )
    await guard.before_prompt()  # 40: goes
    async with asyncio.timeout(5):  # a deadline, should the gate wait for an end already past
        await guard.before_prompt()  # 84 with one in flight: free memory, wait for its end
    # It ended (60) during the free: the gate read again at once (50) and let the next go.
    assert sensor.reads == 4 and clock.sleeps == []


async def test_a_failed_prompt_teaches_nothing() -> None:
    clock = FakeClock()
    guard, _ = make_guard(ScriptedSensor([50.0, 51.0, 50.0, 60.0]), clock)
    await guard.before_prompt()
    await guard.after_prompt(images=0)  # rejected or failed: maybe it never ran
    await guard.before_prompt()
    await guard.after_prompt()
    assert [(s.start_c, s.end_c) for s in guard.heat.samples] == [(50.0, 60.0)]
    assert guard.stats.images == 1


# -- the rules on top -------------------------------------------------------------


async def test_at_target_holds_until_resume_temperature() -> None:
    clock = FakeClock()
    guard, events = make_guard(ScriptedSensor([78.0, 77.0, 75.0, 72.5, 72.0, 40.0]), clock)
    guard.heat.add(50.0, 55.0)  # a card that barely heats: the forecast would let it go
    await guard.before_prompt()
    assert clock.sleeps == [1.0, 1.0, 1.0, 1.0]  # 77, 75 and 72.5 are still above 72
    assert kinds(events) == ["held"]
    assert events[0].seconds == 4.0
    assert events[0].temperature_c == 72.0
    assert "78.0 °C" in events[0].message and "target 78" in events[0].message
    assert guard.stats.holds == 1 and guard.stats.held_s == 4.0
    await guard.after_prompt()
    await guard.before_prompt()  # 40 °C now: straight through
    assert len(clock.sleeps) == 4


async def test_poll_interval_comes_from_settings() -> None:
    clock = FakeClock()
    limits = Limits.from_settings(Settings(sensor_interval_s=0.25, cool_timeout_s=30))
    guard, _ = make_guard(ScriptedSensor([80, 50]), clock, limits=limits)
    await guard.before_prompt()
    assert clock.sleeps == [0.25]
    assert limits.cool_timeout_s == 30


async def test_critical_frees_memory_sends_nothing_and_waits() -> None:
    clock = FakeClock()
    free = FreeCounter()
    guard, events = make_guard(ScriptedSensor([84.0, 84.5, 80.0, 71.0, 55.0]), clock, free=free)
    await guard.before_prompt()
    assert free.calls == 1  # once per hold, not once per poll
    assert kinds(events) == ["critical", "freed_memory", "held"]
    assert "critical 83" in events[0].message
    assert events[-1].seconds == 4.0 and events[-1].temperature_c == 55.0
    assert guard.stats.memory_frees == 1


async def test_rising_past_critical_while_held_frees_memory() -> None:
    # The card went on heating after the hold began (a prompt's heat spreading).
    clock = FakeClock()
    free = FreeCounter()
    guard, events = make_guard(ScriptedSensor([79.0, 83.5, 76.0, 72.0, 55.0]), clock, free=free)
    await guard.before_prompt()
    assert free.calls == 1
    assert kinds(events) == ["critical", "freed_memory", "held"]
    assert "79.0 °C, at or over the target" in events[-1].message


async def test_critical_while_a_prompt_runs_frees_memory_at_once() -> None:
    clock = FakeClock()
    free = FreeCounter()
    guard, events = make_guard(ScriptedSensor([40.0, 84.0, 70.0, 69.0, 50.0]), clock, free=free)
    await guard.before_prompt()  # 40: goes
    second = asyncio.create_task(guard.before_prompt())  # reads 84 with a prompt in flight
    await settle()
    assert not second.done()
    assert free.calls == 1 and kinds(events) == ["critical", "freed_memory"]
    await guard.after_prompt()  # 70: learned (40, 70); at 69 the next would peak at 90
    await second
    assert clock.sleeps == [1.0]  # 50 on the next read


async def test_a_failed_free_is_recorded_and_the_hold_goes_on() -> None:
    clock = FakeClock()
    free = FreeCounter(ComfyUnavailable("nothing answers at http://127.0.0.1:8188"))
    guard, events = make_guard(ScriptedSensor([85.0, 50.0]), clock, free=free)
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
    assert "to 58.6 °C" in message  # where the prior lets the next prompt go (under 72)
    assert "within 10 s" in message
    assert "state is saved; resume when the card is cool" in message
    assert "choose a lower quality level" in message
    assert sum(clock.sleeps) == 10.0
    assert kinds(events) == ["critical", "tripped"]  # (no free_memory given)
    assert events[-1].seconds == 10.0


async def test_sensor_silent_during_a_hold_keeps_holding_then_trips() -> None:
    clock = FakeClock()
    guard, events = make_guard(ScriptedSensor([79.0, None]), clock, limits=Limits(cool_timeout_s=5))
    with pytest.raises(GuardTripped, match="last reading unknown \\(scripted failure\\)"):
        await guard.before_prompt()
    assert sum(clock.sleeps) == 5.0
    assert kinds(events) == ["no_temperature", "tripped"]


async def test_thermal_throttling_under_target_holds_until_resume() -> None:
    clock = FakeClock()
    hot = Reading(
        temperature_c=75.0,
        thermal_throttling=True,
        clock_event_reasons=("sw_thermal_slowdown",),
    )
    guard, events = make_guard(ScriptedSensor([hot, 73.0, 72.0, 50.0]), clock)
    guard.heat.add(50.0, 55.0)  # the forecast alone would let 75 go
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
    sensor = ScriptedSensor([40.0, 55.0, 40.0, 55.0, 40.0, 55.0, 76.0, 74.0, 72.0, 40.0])
    guard, events = make_guard(sensor, clock, max_batch=3, free=free)
    await run_images(guard, 3)
    assert clock.sleeps == [] and free.calls == 0
    await guard.before_prompt()  # the 4th: after 3 in a row, cleanup and cool-down first
    assert free.calls == 1
    assert kinds(events) == ["series_cooldown", "freed_memory", "held"]
    assert clock.sleeps == [1.0, 1.0]  # 74 is over the resume temperature, 72 is not
    assert "a cool-down after 3 images" in events[-1].message
    await guard.after_prompt()
    await run_images(guard, 2)  # the series count restarted
    assert free.calls == 1


async def test_max_batch_already_cool_only_frees_memory() -> None:
    clock = FakeClock()
    free = FreeCounter()
    guard, events = make_guard(ScriptedSensor([45.0]), clock, max_batch=2, free=free)
    await run_images(guard, 3)
    assert free.calls == 1
    assert clock.sleeps == []
    assert kinds(events) == ["series_cooldown", "freed_memory"]


async def test_max_batch_counts_images_not_prompts() -> None:
    clock = FakeClock()
    free = FreeCounter()
    guard, _ = make_guard(ScriptedSensor([45.0]), clock, max_batch=4, free=free)
    for _ in range(2):
        await guard.before_prompt()
        await guard.after_prompt(images=2)  # a batch of 2
    await guard.before_prompt()
    assert free.calls == 1


async def test_max_batch_waits_for_the_prompt_in_flight_before_the_cleanup() -> None:
    clock = FakeClock()
    free = FreeCounter()
    guard, events = make_guard(ScriptedSensor([30.0, 32.0]), clock, max_batch=1, free=free)
    await guard.before_prompt()
    await guard.before_prompt()  # in flight: 30 -> 58, the next 77.6: fits, goes
    await guard.after_prompt()  # one image in a row: the next gate cools down
    third = asyncio.create_task(guard.before_prompt())
    await settle()
    assert not third.done() and free.calls == 0  # the second one still runs
    await guard.after_prompt()
    await third
    assert free.calls == 1 and kinds(events) == ["series_cooldown", "freed_memory"]


# -- without a temperature ----------------------------------------------------------------


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


async def test_no_sensor_pause_starts_when_the_prompt_in_flight_ends() -> None:
    clock = FakeClock()
    guard, _ = make_guard(NoSensor(), clock, pause=2.0)
    await guard.before_prompt()
    second = asyncio.create_task(guard.before_prompt())
    await settle()
    assert not second.done() and clock.sleeps == []  # one prompt at a time, as the seed did
    await guard.after_prompt()
    await second
    assert clock.sleeps == [2.0]


async def test_no_sensor_and_no_pause_lets_prompts_through() -> None:
    clock = FakeClock()
    guard, _ = make_guard(NoSensor(), clock, pause=0.0)
    for _ in range(3):
        await guard.before_prompt()  # nothing waits for the prompts in flight
    assert clock.sleeps == []


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
    sensor = ScriptedSensor([50.0, 61.0, None, None, None, None, 52.0, 62.0])
    guard, events = make_guard(sensor, clock, pause=2.0)
    await run_images(guard, 4)
    assert clock.sleeps == [2.0, 2.0]
    assert kinds(events) == ["no_temperature", "sensor_back"]
    assert "scripted failure" in events[0].message
    assert guard.stats.missed_readings == 4
    assert [(s.start_c, s.end_c) for s in guard.heat.samples] == [(50.0, 61.0), (52.0, 62.0)]


async def test_a_sensor_that_keeps_coming_and_going_is_reported_once_each_way() -> None:
    clock = FakeClock()
    # A card that blacks out again and again: its sensor fails and comes back three times.
    fine, gone = [50.0, 61.0], [None, None]
    sensor = ScriptedSensor(fine + (gone + fine) * 3)
    guard, events = make_guard(sensor, clock, pause=2.0)
    await run_images(guard, 7)
    assert kinds(events) == ["no_temperature", "sensor_back"]
    assert guard.stats.missed_readings == 6


# -- a lagging sensor, early re-reads, the ETA, the time line -----------------------------


async def test_a_later_hotter_reading_raises_the_last_prompts_end() -> None:
    clock = FakeClock()
    # The sensor lags: at the end it reads 60, the peak (70) shows a moment later. With 60
    # (a = 25) the next prompt would go at once from 70; with 70 (a = 35), under 61.4.
    guard, _ = make_guard(ScriptedSensor([50.0, 60.0, 70.0, 68.0, 64.0, 60.0]), clock)
    await run_images(guard, 1)
    await guard.before_prompt()
    assert guard.heat.samples[0].end_c == 70.0
    assert clock.sleeps == [1.0, 1.0, 1.0]


async def test_watch_reads_while_a_prompt_runs_and_leaves_the_last_end_alone() -> None:
    clock = FakeClock()
    slept = asyncio.Event()

    async def sleep(seconds: float) -> None:
        clock.now += seconds
        slept.set()
        await asyncio.Event().wait()  # parks the watcher until the test cancels it

    sensor = ScriptedSensor([50.0, 60.0, 55.0, 70.0])
    guard = Guard(sensor, Limits(), 2.0, 50, clock=clock, sleep=sleep, resolution_c=0.0)
    await run_images(guard, 1)
    await guard.before_prompt()  # 55: goes
    watcher = asyncio.create_task(guard.watch())
    await slept.wait()
    watcher.cancel()
    await asyncio.gather(watcher, return_exceptions=True)
    assert [s.temperature_c for s in guard.samples] == [50.0, 60.0, 55.0, 70.0]
    assert guard.heat.samples[0].end_c == 60.0  # 70 is the running prompt's heat


class ExponentialCard:
    """A card cooling from 80 °C towards 40 °C with a time constant of 5 s (the fake clock)."""

    name = "exponential"
    last_error: str | None = None

    def __init__(self, clock: FakeClock) -> None:
        self.clock, self.t0 = clock, clock.now

    async def read(self) -> Reading | None:
        return Reading(temperature_c=40.0 + 40.0 * math.exp(-(self.clock.now - self.t0) / 5.0))


async def test_a_cooling_card_is_read_again_when_it_should_have_cooled_enough() -> None:
    clock = FakeClock()
    guard = Guard(
        ExponentialCard(clock),
        Limits(poll_interval_s=5.0),
        2.0,
        50,
        clock=clock,
        sleep=clock.sleep,
        margin_c=0.0,
        min_poll_s=0.25,
    )
    await guard.before_prompt()
    # The prior lets the next prompt go at 58.57 °C, reached after 3.84 s. Polling every 5 s
    # would release it at 54.7 °C, 1.2 s late. Here: one early read to see how fast it cools,
    # then reads timed by that rate, which err early as the cooling slows, never late.
    assert clock.sleeps[0] == 0.25
    assert sum(clock.sleeps) == pytest.approx(3.84, abs=0.26)
    assert 58.0 <= (guard.samples[-1].temperature_c or 0) <= 58.58
    assert len(clock.sleeps) <= 6


async def test_cooling_estimate_from_the_run_so_far() -> None:
    clock = FakeClock()
    card = CoolingCard(clock, start=80.0, rate=2.0)
    guard, _ = make_guard(card, clock)
    guard.heat.add(50.0, 52.0)  # a card that barely heats: cooling to 72 is what it waits for
    await run_images(guard, 2)
    # 80 -> 72 at 2 °C/s: one hold of 4 s over two images.
    assert guard.stats.held_s == 4.0
    assert guard.cooling_s_per_image() == 2.0
    assert guard.estimated_cooling_s(5) == 10.0


async def test_samples_are_timed_from_the_start_of_the_guard() -> None:
    clock = FakeClock()
    card = CoolingCard(clock, start=79.0, rate=1.0)
    guard, _ = make_guard(card, clock)
    guard.heat.add(50.0, 52.0)
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
