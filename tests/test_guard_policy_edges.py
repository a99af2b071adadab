"""The pacing policy at its edges: the limits a user sets, a temperature exactly at a limit, the
cool-down after a series, the totals the report and the ETA read.

Written for the survivors of a mutation run over ``guard/policy.py`` (docs/TESTING.md); driven,
like ``test_guard_policy.py``, by a scripted sensor and a clock that moves only when slept on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from comfyline.errors import ConfigError, GuardTripped
from comfyline.guard import Guard, GuardEvent, Limits, NoSensor, Reading
from comfyline.guard.heat import HeatModel
from comfyline.settings import Settings
from test_guard_policy import (
    FakeClock,
    FreeCounter,
    ScriptedSensor,
    kinds,
    make_guard,
    run_images,
    settle,
)


def test_every_limit_comes_from_the_settings() -> None:
    settings = Settings(
        target_temp_c=80.0,
        resume_temp_c=70.0,
        critical_temp_c=86.0,
        cool_timeout_s=45.0,
        sensor_interval_s=0.5,
    )
    assert Limits.from_settings(settings) == Limits(
        target_c=80.0, resume_c=70.0, critical_c=86.0, cool_timeout_s=45.0, poll_interval_s=0.5
    )


async def test_a_card_exactly_at_the_target_is_said_to_be_at_it() -> None:
    clock = FakeClock()
    guard, events = make_guard(ScriptedSensor([78.0, 72.0]), clock)
    guard.heat.add(50.0, 55.0)  # a card that barely heats: only the target holds it
    await guard.before_prompt()
    assert kinds(events) == ["held"]
    assert "card at 78.0 °C, at or over the target 78 °C" in events[0].message


async def test_a_card_exactly_at_the_critical_temperature_is_critical() -> None:
    clock = FakeClock()
    free = FreeCounter()
    guard, events = make_guard(ScriptedSensor([83.0, 72.0]), clock, free=free)
    guard.heat.add(50.0, 55.0)
    await guard.before_prompt()
    assert kinds(events) == ["critical", "freed_memory", "held"]
    assert "at or over the critical 83 °C" in events[0].message
    assert events[0].temperature_c == 83.0
    assert events[1].message == "asked the server to free its memory (card at 83.0 °C)"


async def test_throttling_without_named_reasons_is_called_thermal() -> None:
    clock = FakeClock()
    hot = Reading(temperature_c=75.0, thermal_throttling=True)
    guard, events = make_guard(ScriptedSensor([hot, 72.0]), clock)
    guard.heat.add(50.0, 55.0)  # the forecast alone would let 75 go
    await guard.before_prompt()
    assert "card at 75.0 °C slows its clocks for heat (thermal)" in events[0].message


async def test_each_memory_free_is_counted() -> None:
    clock = FakeClock()
    free = FreeCounter()
    guard, _ = make_guard(ScriptedSensor([45.0]), clock, max_batch=1, free=free)
    await run_images(guard, 3)
    assert free.calls == 2 and guard.stats.memory_frees == 2


def barely_heats(guard: Guard) -> None:
    """Teach the guard a card that heats little (50 -> 55; the first image below goes 70 -> 73):
    the forecast lets 73 °C go, so what holds the card there is the rule under test. (Every
    reading after the first image, while nothing runs, may raise its end: so none is hotter
    than 73 before the rule is tested.)"""
    guard.heat.add(50.0, 55.0)


async def test_after_a_series_a_card_under_the_target_still_cools_to_resume() -> None:
    clock = FakeClock()
    free = FreeCounter()
    sensor = ScriptedSensor([70.0, 73.0, 73.0, 73.0, 72.0])
    guard, events = make_guard(sensor, clock, max_batch=1, free=free)
    barely_heats(guard)
    await run_images(guard, 1)
    await guard.before_prompt()  # 73 °C would go by the forecast; the cool-down wants 72
    assert clock.sleeps == [1.0]
    assert kinds(events) == ["series_cooldown", "freed_memory", "held"]
    assert events[0].temperature_c == 73.0
    assert events[0].message == (
        "1 images in a row (max batch 1): memory cleanup on the server and a cool-down"
    )
    assert events[1].message == "asked the server to free its memory (after a series of images)"
    assert events[2].message == (
        "held new prompts for 1.0 s: a cool-down after 1 images, card at 73.0 °C; "
        "released at 72.0 °C"
    )


async def test_a_series_cool_down_that_reaches_critical_frees_memory_once() -> None:
    clock = FakeClock()
    free = FreeCounter()
    sensor = ScriptedSensor([70.0, 73.0, 73.0, 84.0, 72.0, 40.0])
    guard, events = make_guard(sensor, clock, max_batch=1, free=free)
    barely_heats(guard)
    await run_images(guard, 1)
    await guard.before_prompt()
    assert free.calls == 1  # the series' own free counts for the critical card too
    assert kinds(events) == ["series_cooldown", "freed_memory", "critical", "held"]


async def test_a_card_at_resume_after_a_series_is_not_hot_when_the_sensor_then_fails() -> None:
    # At 72 °C (the resume temperature) the cool-down has nothing to wait for: when the sensor
    # goes silent next, the fixed pause applies, not a hold for a card that was never hot.
    clock = FakeClock()
    guard, events = make_guard(ScriptedSensor([70.0, 73.0, 72.0, None]), clock, max_batch=1)
    barely_heats(guard)
    await run_images(guard, 1)
    await guard.before_prompt()
    assert clock.sleeps == [2.0]
    assert kinds(events) == ["series_cooldown", "no_temperature"]


async def test_a_trip_names_where_it_stuck_in_its_event() -> None:
    clock = FakeClock()
    guard, events = make_guard(ScriptedSensor([79.0, 76.0]), clock, limits=Limits(cool_timeout_s=3))
    with pytest.raises(GuardTripped) as caught:
        await guard.before_prompt()
    message = str(caught.value)
    assert kinds(events) == ["tripped"]
    assert events[0].temperature_c == 76.0 and events[0].message == message
    assert message.startswith("the GPU did not cool from 79.0 °C to ")


async def test_a_no_sensor_series_pause_is_counted_in_the_cooling_time() -> None:
    clock = FakeClock()
    guard, _ = make_guard(NoSensor(), clock, pause=1.5, max_batch=2)
    await run_images(guard, 3)
    assert clock.sleeps == [1.5, 30.0]
    assert guard.stats.paused_s == 31.5
    assert guard.cooling_s_per_image() == 10.5


async def test_a_pause_under_a_second_is_still_taken() -> None:
    clock = FakeClock()
    guard, _ = make_guard(NoSensor(), clock, pause=0.5)
    await run_images(guard, 3)
    assert clock.sleeps == [0.5, 0.5]
    assert guard.stats.paused_s == 1.0


async def test_with_a_sensor_the_estimate_before_any_image_is_no_cooling() -> None:
    guard, _ = make_guard(ScriptedSensor([40.0]), FakeClock(), pause=2.5)
    await guard.before_prompt()
    assert guard.cooling_s_per_image() == 0.0
    assert guard.estimated_cooling_s(4) == 0.0


async def test_the_guard_keeps_every_event_it_told_timed_from_its_start() -> None:
    clock = FakeClock()
    guard, seen = make_guard(ScriptedSensor([80.0, 76.0, 72.0]), clock)
    guard.heat.add(50.0, 55.0)
    await guard.before_prompt()
    assert guard.events == seen and kinds(guard.events) == ["held"]
    assert guard.events[0].t_s == 2.0  # two 1 s re-reads after the guard was made


async def test_a_trip_names_the_release_temperature_under_the_margin() -> None:
    clock = FakeClock()
    guard, _ = make_guard(
        ScriptedSensor([70.0, 65.0]), clock, limits=Limits(cool_timeout_s=3), margin=1.0
    )
    with pytest.raises(GuardTripped, match="to 57.1 °C"):  # the prior's start for 78 - 1
        await guard.before_prompt()


async def test_a_card_hot_after_a_series_keeps_holding_when_the_sensor_then_fails() -> None:
    clock = FakeClock()
    sensor = ScriptedSensor([70.0, 73.0, 73.0, None])
    guard, events = make_guard(sensor, clock, max_batch=1, limits=Limits(cool_timeout_s=5))
    barely_heats(guard)
    await run_images(guard, 1)
    with pytest.raises(GuardTripped, match="did not cool from 73.0 °C"):
        await guard.before_prompt()
    assert kinds(events) == ["series_cooldown", "no_temperature", "tripped"]


async def test_a_reading_without_a_temperature_is_said_as_such() -> None:
    clock = FakeClock()
    vram = Reading(vram_used_bytes=4 * 2**30, vram_total_bytes=12 * 2**30)
    guard, events = make_guard(ScriptedSensor([vram]), clock)
    await guard.before_prompt()
    assert "no temperature from the scripted sensor (it reports no temperature)" in (
        events[0].message
    )


async def test_throttling_names_each_reason() -> None:
    clock = FakeClock()
    reasons = ("sw_thermal_slowdown", "hw_thermal_slowdown")
    hot = Reading(temperature_c=75.0, thermal_throttling=True, clock_event_reasons=reasons)
    guard, events = make_guard(ScriptedSensor([hot, 72.0]), clock)
    guard.heat.add(50.0, 55.0)
    await guard.before_prompt()
    assert "(sw_thermal_slowdown, hw_thermal_slowdown)" in events[0].message


# -- a whole-degree sensor (NVML, nvidia-smi: 77 means 77.0 to 77.99) ------------------------
# The prior heat model: a prompt started at T ends at 37 + 0.7 T; under the target 78 (no
# margin here), a lone prompt may start up to 58.57 °C. Each reading counts as the top of its
# degree (T + 1) wherever it is a start.


def whole_degree_guard(
    sensor: object, clock: FakeClock, limits: Limits | None = None, margin_c: float = 0.0
) -> tuple[Guard, list[GuardEvent]]:
    """A guard as a run makes one: no ``resolution_c`` given, so whole readings mean 1 °C."""
    seen: list[GuardEvent] = []
    limits = limits or Limits()
    guard = Guard(
        sensor,  # type: ignore[arg-type]
        limits,
        2.0,
        50,
        clock=clock,
        sleep=clock.sleep,
        on_event=seen.append,
        margin_c=margin_c,
        min_poll_s=limits.poll_interval_s,
    )
    return guard, seen


async def second_prompt_waits(guard: Guard) -> None:
    """The next prompt, with one in flight, waits for its end (decided without a sleep; the
    end is read, and the gate reads again)."""
    second = asyncio.create_task(guard.before_prompt())
    await settle()
    assert not second.done(), "the next prompt went with the one in flight"
    await guard.after_prompt()
    await second


async def test_whole_degrees_a_lone_prompt_goes_from_the_top_of_its_degree() -> None:
    # 58 may be 58.99: it would end at 78.3. 57 (at most 57.99: 77.6) goes.
    clock = FakeClock()
    guard, events = whole_degree_guard(ScriptedSensor([58.0, 57.0]), clock)
    await guard.before_prompt()
    assert clock.sleeps == [1.0] and kinds(events) == ["held"]
    assert "released at 57.0 °C" in events[0].message


async def test_whole_degrees_a_prompt_in_flight_is_forecast_from_the_top_of_its_start() -> None:
    # The one in flight went at 30 (up to 30.99): it ends at up to 58.7, from which the next
    # would end at 78.09. (Read as exactly 30, the two would fit: 58.0, then 77.6.)
    clock = FakeClock()
    sensor = ScriptedSensor([30.0, 30.0, 30.0])
    guard, _ = whole_degree_guard(sensor, clock)
    await guard.before_prompt()
    await second_prompt_waits(guard)
    assert sensor.reads == 4 and clock.sleeps == []


async def test_whole_degrees_a_card_hotter_than_forecast_is_taken_at_the_top_of_its_reading() -> (
    None
):
    # The one in flight went at 20 (forecast end 51.7), but the card reads 58 already: it may
    # be 58.99, and from there the next would end at 78.3.
    clock = FakeClock()
    sensor = ScriptedSensor([20.0, 58.0, 30.0])
    guard, _ = whole_degree_guard(sensor, clock)
    await guard.before_prompt()
    await second_prompt_waits(guard)
    assert sensor.reads == 4 and clock.sleeps == []


async def test_whole_degrees_a_prompt_that_went_unread_is_forecast_from_the_reading() -> None:
    # The sensor failed when the first prompt went: nothing says where it started, so it is
    # taken to end where one started at the next reading's top (30 -> 31: 58.7) would.
    clock = FakeClock()
    sensor = ScriptedSensor([None, 30.0, 30.0])
    guard, events = whole_degree_guard(sensor, clock)
    await guard.before_prompt()
    await second_prompt_waits(guard)
    assert sensor.reads == 4 and clock.sleeps == []
    assert kinds(events) == ["no_temperature"]


async def test_whole_degrees_a_trip_names_the_release_under_the_top_of_the_degree() -> None:
    # A lone prompt may go from 58.57 °C; a reading of 57 may be 57.99: 57.6 is the goal.
    clock = FakeClock()
    guard, _ = whole_degree_guard(ScriptedSensor([70.0, 65.0]), clock, Limits(cool_timeout_s=3))
    with pytest.raises(GuardTripped, match=r"to 57\.6 °C"):
        await guard.before_prompt()


# -- the rules at their exact bounds -----------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda: Limits(target_c=72, resume_c=72),  # resume must be under the target
        lambda: Limits(poll_interval_s=0),
    ],
)
def test_limits_at_a_bound_that_is_not_allowed_are_refused(make: Callable[[], Limits]) -> None:
    with pytest.raises(ConfigError, match=r"must satisfy resume < target <= critical|must be > 0"):
        make()


def test_limits_at_a_bound_that_is_allowed_are_kept() -> None:
    # A critical temperature equal to the target, and a cool-down timeout under a second.
    limits = Limits(target_c=83, critical_c=83, cool_timeout_s=0.5)
    assert (limits.critical_c, limits.cool_timeout_s) == (83, 0.5)


def exact_guard(sensor: object, clock: FakeClock) -> Guard:
    """A guard with a heat model of exact binary numbers (40 + 0.5 T: 76 -> 78, the target)."""
    return Guard(
        sensor,  # type: ignore[arg-type]
        Limits(),
        2.0,
        50,
        clock=clock,
        sleep=clock.sleep,
        margin_c=0.0,
        min_poll_s=1.0,
        resolution_c=0.0,
        prior=HeatModel(a=40.0, b=0.5),
    )


async def test_a_prompt_forecast_to_end_exactly_at_the_limit_goes() -> None:
    clock = FakeClock()
    guard = exact_guard(ScriptedSensor([76.0]), clock)
    await guard.before_prompt()  # 76 -> 78: at the target, not over it
    assert clock.sleeps == []


async def test_a_second_prompt_forecast_to_end_exactly_at_the_limit_goes() -> None:
    clock = FakeClock()
    sensor = ScriptedSensor([72.0, 72.0])
    guard = exact_guard(sensor, clock)
    await guard.before_prompt()  # 72 -> 76
    await guard.before_prompt()  # after the one in flight (76): 78, at the target
    assert sensor.reads == 2 and clock.sleeps == []


async def test_a_slowdown_threshold_exactly_at_the_target_is_warned_about() -> None:
    clock = FakeClock()
    guard, events = make_guard(
        ScriptedSensor([Reading(temperature_c=40.0, slowdown_c=78.0)]), clock
    )
    await guard.before_prompt()
    assert kinds(events) == ["warning"]


async def test_each_sample_keeps_the_cards_memory() -> None:
    clock = FakeClock()
    reading = Reading(temperature_c=40.0, vram_used_bytes=2 * 2**30, vram_total_bytes=8 * 2**30)
    guard, _ = make_guard(ScriptedSensor([reading]), clock)
    await guard.before_prompt()
    sample = guard.samples[0]
    assert (sample.vram_used_bytes, sample.vram_total_bytes) == (2 * 2**30, 8 * 2**30)


async def test_the_sensor_coming_back_is_said_in_words() -> None:
    clock = FakeClock()
    guard, events = make_guard(ScriptedSensor([50.0, 61.0, None, 50.0]), clock)
    await run_images(guard, 2)
    assert [e.message for e in events if e.kind == "sensor_back"] == [
        "the scripted sensor answers again"
    ]


BARELY_HEATS = HeatModel(a=20.0, b=0.5)
"""A card that heats little (72 -> 56): only the target and the resume temperature hold it."""


async def test_holds_and_their_time_add_up_over_the_run() -> None:
    clock = FakeClock()
    sensor = ScriptedSensor([80.0, 72.0, 72.0, 80.0, 80.0, 72.0])
    guard = Guard(
        sensor,
        Limits(),
        2.0,
        50,
        clock=clock,
        sleep=clock.sleep,
        min_poll_s=1.0,
        resolution_c=0.0,
        prior=BARELY_HEATS,
    )
    # Held 1 s, then 2 s (each over the target, until 72). The prompt between them fails:
    # nothing is learned from it (a reading of 80 after a measured prompt would be its end).
    await guard.before_prompt()
    await guard.after_prompt(images=0)
    await guard.before_prompt()
    assert (guard.stats.holds, guard.stats.held_s) == (2, 3.0)


async def test_holding_says_why_while_the_gate_holds_and_nothing_once_it_released() -> None:
    clock = FakeClock()
    seen: list[str] = []
    guard: Guard | None = None

    async def sleep(seconds: float) -> None:
        assert guard is not None
        seen.append(guard.holding)
        await clock.sleep(seconds)

    guard = Guard(
        ScriptedSensor([80.0, 72.0]),
        Limits(),
        2.0,
        50,
        clock=clock,
        sleep=sleep,
        min_poll_s=1.0,
        resolution_c=0.0,
        prior=BARELY_HEATS,
    )
    assert guard.holding == ""
    await guard.before_prompt()
    assert seen == ["card at 80.0 °C, at or over the target 78 °C"]
    assert guard.holding == ""


# -- what the guard learns from each prompt -------------------------------------------------------


async def test_whole_degrees_a_prompt_is_learned_at_the_middle_of_its_degrees() -> None:
    # Read 40 at its start and 60 at its end: it went at 40 .. 40.99 and ended at 60 .. 60.99.
    clock = FakeClock()
    guard, _ = whole_degree_guard(ScriptedSensor([40.0, 60.0]), clock)
    await run_images(guard, 1)
    assert [(s.start_c, s.end_c) for s in guard.heat.samples] == [(40.5, 60.5)]


async def test_a_prompt_that_waited_behind_another_started_when_that_one_ended() -> None:
    clock = FakeClock()
    # 30 -> 40 learned; the next goes at 39, a second goes (reading 41) while it runs; the
    # first ends at 44, which is when the second started; it ends at 50.
    guard, _ = make_guard(ScriptedSensor([30.0, 40.0, 39.0, 41.0, 44.0, 50.0]), clock)
    await run_images(guard, 1)
    await guard.before_prompt()
    await guard.before_prompt()
    await guard.after_prompt()
    await guard.after_prompt()
    assert [(s.start_c, s.end_c) for s in guard.heat.samples] == [
        (30.0, 40.0),
        (39.0, 44.0),
        (44.0, 50.0),
    ]


async def test_after_a_failed_prompt_the_one_behind_it_teaches_nothing() -> None:
    # The failed one may never have run: when the one behind it started is unknown.
    clock = FakeClock()
    guard, _ = make_guard(ScriptedSensor([30.0, 40.0, 39.0, 41.0, 44.0, 50.0]), clock)
    await run_images(guard, 1)
    await guard.before_prompt()
    await guard.before_prompt()
    await guard.after_prompt(images=0)
    await guard.after_prompt()
    assert [(s.start_c, s.end_c) for s in guard.heat.samples] == [(30.0, 40.0)]


async def test_the_end_a_prompt_is_reported_with_is_the_one_read_when_it_settled() -> None:
    clock = FakeClock()
    guard, _ = make_guard(ScriptedSensor([30.0, 40.0, 39.0, 60.0, 55.0, 57.0]), clock)
    await run_images(guard, 1)
    await guard.before_prompt()
    await guard.prompt_settled()  # 60, the moment the server said it finished
    sample = await guard.after_prompt()
    assert sample is not None and sample.temperature_c == 60.0
    await guard.before_prompt()  # 55
    second = await guard.after_prompt()  # no hook: read now
    assert second is not None and second.temperature_c == 57.0


async def test_whole_degrees_a_later_hotter_reading_is_the_end_at_the_middle_of_its_degree() -> (
    None
):
    clock = FakeClock()
    # Ended at 60 by its first reading; the next, while nothing runs, reads 62: the end.
    guard, _ = whole_degree_guard(ScriptedSensor([40.0, 60.0, 62.0, 30.0]), clock)
    await run_images(guard, 1)
    await guard.before_prompt()
    assert [(s.start_c, s.end_c) for s in guard.heat.samples] == [(40.5, 62.5)]


# -- the trusted margin ----------------------------------------------------------------------------


def trusting_guard(sensor: ScriptedSensor, clock: FakeClock) -> Guard:
    """A guard with the run's trust rules (the defaults: 5 prompts within 0.25 °C) and the
    run's margins (1 °C, 0.5 once trusted)."""
    return Guard(sensor, Limits(), 2.0, 50, clock=clock, sleep=clock.sleep, resolution_c=0.0)


async def test_the_margin_is_trusted_after_exactly_five_prompts_as_forecast() -> None:
    # Each goes at 40 and ends at 60: the prior forecasts 65, then the fit 60 each time.
    clock = FakeClock()
    guard = trusting_guard(ScriptedSensor([40.0, 60.0] * 5), clock)
    margins = []
    for _ in range(5):
        await run_images(guard, 1)
        margins.append(guard.margin_now_c())
    assert margins == [1.0, 1.0, 1.0, 1.0, 0.5]


async def test_a_prompt_half_a_degree_hotter_than_forecast_restores_the_full_margin() -> None:
    clock = FakeClock()
    # Five as forecast, one 0.5 °C hotter, then four as forecast again: not yet five.
    script = [40.0, 60.0] * 5 + [40.0, 60.5] + [40.0, 60.5] * 4
    guard = trusting_guard(ScriptedSensor(script), clock)
    await run_images(guard, 5)
    assert guard.margin_now_c() == 0.5
    await run_images(guard, 1)
    assert guard.margin_now_c() == 1.0
    await run_images(guard, 4)
    assert guard.margin_now_c() == 1.0


async def test_a_prompt_exactly_at_the_trusted_error_is_as_forecast() -> None:
    clock = FakeClock()
    # Four as forecast (60), the fifth 0.25 °C over it: still within the trusted error.
    guard = trusting_guard(ScriptedSensor([40.0, 60.0] * 4 + [40.0, 60.25]), clock)
    await run_images(guard, 5)
    assert guard.margin_now_c() == 0.5


async def test_a_later_reading_a_little_hotter_keeps_the_trust() -> None:
    clock = FakeClock()
    # Five as forecast; then, while nothing runs, the last one's end reads 0.125 °C hotter:
    # within the trusted error, so the margin stays the trusted one.
    guard = trusting_guard(ScriptedSensor([40.0, 60.0] * 5 + [60.125]), clock)
    await run_images(guard, 5)
    await guard.before_prompt()
    assert guard.margin_now_c() == 0.5


async def test_a_later_reading_much_hotter_starts_the_count_again() -> None:
    clock = FakeClock()
    # Five as forecast; a later reading shows the fifth ended 1 °C hotter: the count starts
    # again from nothing, so four more as forecast are not yet enough.
    script = [40.0, 60.0] * 5 + [61.0, 40.0] + [60.0, 40.0] * 3 + [60.0]
    guard = trusting_guard(ScriptedSensor(script), clock)
    await run_images(guard, 5)
    await run_images(guard, 4)
    assert guard.margin_now_c() == 1.0


class SlowSensor(ScriptedSensor):
    """A scripted sensor whose every answer takes ``answer_s`` of the fake clock."""

    def __init__(self, clock: FakeClock, answer_s: float, script: list[float]) -> None:
        super().__init__(script)
        self.clock, self.answer_s = clock, answer_s

    async def read(self) -> Reading | None:
        self.clock.now += self.answer_s
        return await super().read()


async def test_readings_that_take_exactly_the_trusted_time_are_trusted() -> None:
    clock = FakeClock()
    sensor = SlowSensor(clock, 0.125, [40.0, 60.0] * 5)
    guard = Guard(
        sensor,
        Limits(),
        2.0,
        50,
        clock=clock,
        sleep=clock.sleep,
        resolution_c=0.0,
        trust_read_s=0.125,
    )
    await run_images(guard, 5)
    assert guard.margin_now_c() == 0.5


async def test_whole_degrees_the_forecasts_are_judged_at_the_middle_of_their_degrees() -> None:
    # Each goes at 40 (40.5) and ends at 61 (61.5): as forecast from the first on, so five
    # of them are trusted.
    clock = FakeClock()
    guard, _ = whole_degree_guard(ScriptedSensor([40.0, 61.0] * 5), clock, margin_c=1.0)
    await run_images(guard, 5)
    assert guard.margin_now_c() == 0.5


async def test_whole_degrees_a_prompt_a_degree_hotter_than_forecast_is_not_trusted() -> None:
    clock = FakeClock()
    sensor = ScriptedSensor([40.0, 61.0] * 4 + [40.0, 62.0])
    guard, _ = whole_degree_guard(sensor, clock, margin_c=1.0)
    await run_images(guard, 5)
    assert guard.margin_now_c() == 1.0
