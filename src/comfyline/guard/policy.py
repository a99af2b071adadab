"""The pacing policy: may the next prompt go, or must the card cool first?

:meth:`Guard.before_prompt` is the gate the adapter awaits before it releases each prompt (a
prompt already running is never cut off). A die heats within seconds: a card read at 77 °C
between images passes 83 °C during the next one. So the gate does not ask "is the card under
the target now?" but "will it still be under the target (less ``margin_c``) when the next prompt
ends?", with the heat of one prompt learned from the run (:mod:`comfyline.guard.heat`:
``peak = a + b * start``, fitted to the last prompts' start and end readings):

- nothing in flight: release when the predicted peak from the reading now stays under
  ``target - margin``; otherwise hold, re-reading the sensor while the card cools;
- a prompt in flight: predict its end from the reading at its start, and the next prompt's
  peak from that. Under the limit: release at once (the server never idles between the two);
  otherwise wait until the prompt in flight finishes, then decide again with a fresh reading;
- at or above the target, or slowing its clocks for heat: also hold until the resume
  temperature (72 °C);
- at or above the critical temperature (83 °C): send nothing, ask the server to free its
  memory, and wait the same way;
- still not cooled after ``cool_timeout_s``: :class:`~comfyline.errors.GuardTripped`;
- after ``max_batch`` images in a row: free the server's memory and cool to the resume
  temperature (without a temperature: ``series_pause_s``);
- no temperature (no sensor, or it stopped answering): the quality level's fixed pause after
  each image, one prompt at a time, as the seed did, said once.

A prompt's end is read the moment the server says it finished (:meth:`Guard.prompt_settled`,
the adapter's ``on_settled`` hook), before its images are downloaded and checked: a die cools
by degrees a second, and a peak read late teaches the guard that prompts heat less than they
do. The margin is a full ``margin_c`` until the heat model has proved itself: once
``trust_after`` prompts in a row ended within ``trust_error_c`` of its forecast (each read
within ``trust_read_s``: on a busy machine an answer comes late, the die cooling meanwhile), the
smaller ``trusted_margin_c`` applies, until one ends hotter than forecast or is read slowly.

Before the first prompt is measured, a conservative prior applies (:data:`heat.PRIOR_A`,
:data:`heat.PRIOR_B`): an idle card goes at once, a hot one cools first. What readings get
wrong errs on the cool side: a reading taken late, after the die began to cool, reads a peak
too low, so the fit takes the hottest of the last prompts, not their mean; a sensor that lags
shows a prompt's peak only after it ended, so while nothing runs a later, hotter reading
replaces the one taken at the end (and a hold re-reads soon while the readings still rise); a
sensor that reads whole degrees (NVML) may be up to 1 °C under the card, so forecasts start
from the top of that degree. While the card cools, the gate re-reads it when it should have
cooled enough, from how fast it cooled so far, not on a fixed beat.

Time is injected (``clock``, ``sleep``) so that tests run the policy without waiting. Every
decision is a :class:`GuardEvent`; every reading is kept as a :class:`Sample` for the report.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

from comfyline.errors import ComfylineError, ConfigError, GuardTripped
from comfyline.guard.heat import HeatLearner, HeatModel
from comfyline.guard.sensors import Reading, Sensor
from comfyline.settings import Settings

EventKind = Literal[
    "no_temperature",  # pacing by the fixed pause: no sensor, or it stopped answering (said once)
    "sensor_back",  # the sensor answers again after it had stopped
    "warning",  # something the user may want to change (said once each)
    "critical",  # the card reached the critical temperature: nothing is sent
    "freed_memory",  # the server was asked to free its memory (or it failed to)
    "series_cooldown",  # max_batch images in a row: cleanup and cool-down
    "held",  # new prompts were held while the card cooled; ``seconds`` says how long
    "tripped",  # the card did not cool in time; the run stops
    "oom_retry",  # out of memory: memory freed, the same settings tried once more
    "stepped_down",  # out of memory again: smaller batch or lower level from now on
    "oom_gave_up",  # out of memory at the smallest settings the order allows
]


@dataclass(frozen=True)
class GuardEvent:
    """One decision of the guard, for the run's log and report. ``t_s``: seconds since the
    guard was made; ``seconds``: how long a hold lasted."""

    t_s: float
    kind: EventKind
    message: str
    temperature_c: float | None = None
    seconds: float | None = None


@dataclass(frozen=True)
class Sample:
    """One reading on the run's time line (``t_s``: seconds since the guard was made)."""

    t_s: float
    temperature_c: float | None
    power_w: float | None
    vram_used_bytes: int | None
    vram_total_bytes: int | None


@dataclass(frozen=True)
class Limits:
    """The temperatures (°C) and times (s) the policy works to.

    >>> Limits(target_c=80, resume_c=74, critical_c=84).target_c
    80
    """

    target_c: float = 78.0
    resume_c: float = 72.0
    critical_c: float = 83.0
    cool_timeout_s: float = 600.0
    poll_interval_s: float = 1.0

    def __post_init__(self) -> None:
        if not self.resume_c < self.target_c <= self.critical_c:
            raise ConfigError(
                "guard temperatures must satisfy resume < target <= critical, but are "
                f"resume_temp_c={self.resume_c}, target_temp_c={self.target_c}, "
                f"critical_temp_c={self.critical_c}"
            )
        if self.cool_timeout_s <= 0 or self.poll_interval_s <= 0:
            raise ConfigError(
                f"cool_timeout_s ({self.cool_timeout_s}) and sensor_interval_s "
                f"({self.poll_interval_s}) must be > 0"
            )

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        """The limits set in ``settings``."""
        return cls(
            target_c=settings.target_temp_c,
            resume_c=settings.resume_temp_c,
            critical_c=settings.critical_temp_c,
            cool_timeout_s=settings.cool_timeout_s,
            poll_interval_s=settings.sensor_interval_s,
        )


@dataclass
class GuardStats:
    """Totals over the run so far. ``held_s`` counts only time the server had nothing to do
    (waiting behind a prompt that runs costs nothing)."""

    images: int = 0
    holds: int = 0
    held_s: float = 0.0
    paused_s: float = 0.0
    memory_frees: int = 0
    missed_readings: int = 0


Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]
FreeMemory = Callable[[], Awaitable[None]]


@dataclass
class _Flight:
    """A released prompt. ``start_c``: the reading when it started; None while it waits on the
    server behind another (it starts when that one ends) or when there was no reading."""

    start_c: float | None
    queued: bool


@dataclass
class _Hold:
    """One gate's wait: why, from what temperature, since when, and what it asks for."""

    began: float | None = None  # when the card started to cool for it (nothing in flight)
    first_c: float | None = None
    why: str = ""
    to_resume: bool = False  # at/over the target: cool to the resume temperature too
    critical: bool = False  # the critical temperature was reached (and said)
    freed: bool = False
    hottest: tuple[float, float] | None = None  # (time, °C) of its hottest reading so far


_GO = "go"
_WAIT = "wait for the prompt in flight"
_COOL = "cool"


class _GuardReadings:
    """The guard's readings and events: every reading kept as a :class:`Sample`, what a reading
    may hide (its resolution), and every decision told as a :class:`GuardEvent`.

    A base of :class:`Guard`, which sets in its ``__init__`` the state declared here.
    """

    sensor: Sensor
    limits: Limits
    level_pause_s: float
    heat: HeatLearner
    stats: GuardStats
    events: list[GuardEvent]
    samples: list[Sample]
    _clock: Clock
    _t0: float
    _on_event: Callable[[GuardEvent], None] | None
    _flight: deque[_Flight]
    _end_open: bool
    _had_temperature: bool
    _whole_degrees: bool
    _resolution_set: float | None
    _lost: bool
    _said: set[str]
    trust_error_c: float
    _on_forecast: int
    _forecast_c: float | None
    trust_read_s: float
    _read_s: float
    _reading: asyncio.Future[Reading | None] | None
    _last_read: tuple[float, Reading | None] | None
    holding: str

    # -- readings ----------------------------------------------------------------------------

    async def _read(self) -> Reading | None:
        """A reading of the sensor. Callers at the same moment (a prompt's end and the gate of
        the next one, with two in flight) share one read. A sensor that answers but has never
        given a temperature is read at most every ``poll_interval_s``: its readings only go on
        the record (VRAM), and each one is a request to the server. (A failed read is tried
        again at once: it may be a glitch.)"""
        if self._reading is not None:
            return await asyncio.shield(self._reading)
        last = self._last_read
        if (
            not self._had_temperature
            and last is not None
            and last[1] is not None
            and self._clock() - last[0] < self.limits.poll_interval_s
        ):
            return last[1]
        self._reading = asyncio.ensure_future(self._take_reading())
        # (its error, if no caller is left to take it, is not "never retrieved")
        self._reading.add_done_callback(lambda f: f.cancelled() or f.exception())
        return await asyncio.shield(self._reading)

    async def _take_reading(self) -> Reading | None:
        try:
            return await self._read_now()
        finally:
            self._reading = None

    async def _read_now(self) -> Reading | None:
        asked = self._clock()
        reading = await self.sensor.read()
        self._read_s = self._clock() - asked
        self._last_read = (asked, reading)
        temp = reading.temperature_c if reading is not None else None
        if reading is None or temp is None:
            self._note_no_temperature(reading)
        elif self._lost:
            self._lost = False
            # Said once, like no_temperature: a card that blacks out again and again would
            # repeat it without end.
            self._once("sensor_back", f"the {self.sensor.name} sensor answers again")
        if reading is not None:
            self._had_temperature |= temp is not None
            if temp is not None:
                self._whole_degrees = self._whole_degrees and temp == int(temp)
                if self._end_open and not self._flight:
                    end = temp + self._resolution_c() / 2
                    if self.heat.raise_last_end(end) and not self._as_forecast(end):
                        self._on_forecast = 0
            self._record(reading)
            self._check_slowdown(reading)
        return reading

    def _as_forecast(self, end_c: float, read_s: float = 0.0) -> bool:
        """Whether the last measured prompt ended within ``trust_error_c`` of its forecast,
        read within ``trust_read_s`` of asking. One that ended hotter (a heatsink warming) or
        was read slowly (a busy machine: the die cooled while the answer came) restores the
        full margin until the fit has proved itself again."""
        if read_s > self.trust_read_s:
            return False
        return self._forecast_c is None or end_c - self._forecast_c <= self.trust_error_c

    def _resolution_c(self) -> float:
        """How much hotter than its reading the card may be: ``resolution_c`` when given, else
        1 °C for a sensor that reads whole degrees (NVML floors: 77 means 77 .. 77.99), else 0."""
        if self._resolution_set is not None:
            return self._resolution_set
        return 1.0 if self._whole_degrees and self._had_temperature else 0.0

    def _note_no_temperature(self, reading: Reading | None) -> None:
        if reading is None:
            self.stats.missed_readings += 1
        if self._had_temperature:
            self._lost = True
        why = self.sensor.last_error if reading is None else "it reports no temperature"
        self._once(
            "no_temperature",
            f"no temperature from the {self.sensor.name} sensor ({why}); the fixed pause of "
            f"{self.level_pause_s:.1f} s after each image applies while there is none",
        )

    def _check_slowdown(self, reading: Reading) -> None:
        if reading.slowdown_c is not None and reading.slowdown_c <= self.limits.target_c:
            self._once(
                "warning",
                f"the card slows itself down at {reading.slowdown_c:.0f} °C, at or under the "
                f"target {self.limits.target_c:.0f} °C: lower target_temp_c below it",
            )

    def _record(self, reading: Reading) -> None:
        self.samples.append(
            Sample(
                t_s=self._clock() - self._t0,
                temperature_c=reading.temperature_c,
                power_w=reading.power_w,
                vram_used_bytes=reading.vram_used_bytes,
                vram_total_bytes=reading.vram_total_bytes,
            )
        )

    # -- events ------------------------------------------------------------------------------

    def _once(self, kind: EventKind, message: str) -> None:
        if kind not in self._said:
            self._said.add(kind)
            self._emit(kind, message)

    def _emit(
        self,
        kind: EventKind,
        message: str,
        temperature_c: float | None = None,
        *,
        seconds: float | None = None,
    ) -> None:
        event = GuardEvent(self._clock() - self._t0, kind, message, temperature_c, seconds)
        self.events.append(event)
        if self._on_event is not None:
            self._on_event(event)


class _GuardHold(_GuardReadings):
    """The gate's hold: forecast the next prompt's peak, then release it, wait for the prompt in
    flight, or hold while the card cools (re-read when it should have cooled enough) until it
    may go or the hold times out.

    A base of :class:`Guard`, which sets in its ``__init__`` the state declared here.
    """

    margin_c: float
    trusted_margin_c: float
    trust_after: int
    min_poll_s: float
    _sleep: Sleep
    _free_memory: FreeMemory | None
    _released: int
    _ended: int
    _finished: asyncio.Event

    def heat_model(self) -> HeatModel:
        """How one prompt heats the card, as learned so far (the prior before any)."""
        return self.heat.model()

    def release_below_c(self) -> float:
        """The hottest reading from which a lone prompt may go now (the resume and critical
        rules aside)."""
        limit = self.limits.target_c - self.margin_now_c()
        return self.heat_model().start_for_peak_c(limit) - self._resolution_c()

    def margin_now_c(self) -> float:
        """The margin kept under the target now: ``trusted_margin_c`` once the last
        ``trust_after`` prompts each ended within ``trust_error_c`` of what the heat model
        forecast for them, else ``margin_c``."""
        if self._on_forecast >= self.trust_after:
            return min(self.trusted_margin_c, self.margin_c)
        return self.margin_c

    # -- the decisions -----------------------------------------------------------------------

    async def _pass(self, hold: _Hold) -> float | None:
        """Wait until the next prompt may go; the reading it goes at (None: no temperature)."""
        while True:
            ended = self._ended
            reading = await self._read()
            temp = reading.temperature_c if reading is not None else None
            if temp is None or reading is None:
                if hold.first_c is None:  # nothing says the card is hot: pace by the pause
                    await self._fixed_pause()
                    return None
                await self._cool_step(hold, None)  # it was hot when the sensor went silent
                continue
            verdict = self._verdict(temp, reading, hold)
            if verdict == _GO:
                self._end_hold(hold, temp)
                return temp
            if hold.to_resume and not hold.why:  # over the target: say so, not the forecast
                hold.why = self._why(temp, reading, hold)
            if temp >= self.limits.critical_c and not hold.critical:
                hold.critical = True
                why = self._why(temp, reading, hold)
                self._emit("critical", f"{why}: nothing is sent until it cools", temp)
            if temp >= self.limits.critical_c and not hold.freed:
                hold.freed = True
                await self._free(f"card at {temp:.1f} °C")
            if verdict == _WAIT:
                await self._wait_for_flight(ended)
                continue
            if hold.first_c is None:
                hold.first_c, hold.why = temp, hold.why or self._why(temp, reading, hold)
            await self._cool_step(hold, temp)

    def _verdict(self, temp: float, reading: Reading, hold: _Hold) -> str:
        lim = self.limits
        if temp >= lim.target_c or reading.thermal_throttling:
            hold.to_resume = True
        model, limit = self.heat.model(), lim.target_c - self.margin_now_c()
        if self._flight:
            if not hold.to_resume and model.peak_c(self._flight_end_c(temp, model)) <= limit:
                return _GO
            return _WAIT
        if hold.to_resume and temp > lim.resume_c:
            return _COOL
        return _GO if model.peak_c(temp + self._resolution_c()) <= limit else _COOL

    def _flight_end_c(self, temp: float, model: HeatModel) -> float:
        """The expected temperature when everything in flight has finished (readings taken at
        the top of their resolution: a whole-degree T may be T + 0.99)."""
        step = self._resolution_c()
        end: float | None = None
        for flight in self._flight:
            start = flight.start_c + step if flight.start_c is not None else end
            end = model.peak_c(start if start is not None else temp + step)
        assert end is not None
        return max(end, temp + step)  # hotter than expected already: the reading wins

    async def _wait_for_flight(self, ended: int) -> None:
        """Until a prompt ends after ``ended`` had (a count taken before the decision to wait:
        one that ended meanwhile is not waited for). No poll: after_prompt sets the event. The
        adapter bounds every prompt with its own timeout and always reports it (a result, or an
        error that cancels this gate)."""
        while self._ended == ended:
            self._finished.clear()
            await self._finished.wait()

    async def _cool_step(self, hold: _Hold, temp: float | None) -> None:
        """One wait while the card cools with nothing in flight; trips past the timeout."""
        now = self._clock()
        if hold.began is None:
            hold.began = now
        self.holding = hold.why or "the card cools"
        if now - hold.began >= self.limits.cool_timeout_s:
            self._trip(hold, temp, now - hold.began)
        delay = self.limits.poll_interval_s
        if temp is not None:
            if hold.hottest is None or temp > hold.hottest[1]:
                # A second reading soon tells how fast it cools; or, while the readings still
                # rise (a sensor that lags behind the die), catches the peak they show late.
                hold.hottest = (now, temp)
                delay = self.min_poll_s
            else:
                delay = self._time_to_goal(hold, now, temp)
        await self._sleep(delay)

    def _time_to_goal(self, hold: _Hold, now: float, temp: float) -> float:
        """When to read next: when the card, cooling at its mean rate since its hottest reading
        in this hold, reaches the release temperature. Cooling slows as it goes (an
        exponential), so this errs early, never late; bounded by ``min_poll_s`` and
        ``poll_interval_s``."""
        assert hold.hottest is not None
        t0, first = hold.hottest
        rate = (first - temp) / (now - t0) if now > t0 else 0.0
        goal = self.release_below_c()
        if hold.to_resume:
            goal = min(goal, self.limits.resume_c)
        if rate <= 0:
            return self.limits.poll_interval_s
        eta = (temp - goal) / rate
        return min(self.limits.poll_interval_s, max(self.min_poll_s, eta))

    def _end_hold(self, hold: _Hold, temp: float) -> None:
        if hold.began is None:
            return  # it went at once, or only waited behind a prompt that ran
        held = self._clock() - hold.began
        self.stats.holds += 1
        self.stats.held_s += held
        self._emit(
            "held",
            f"held new prompts for {held:.1f} s: {hold.why}; released at {temp:.1f} °C",
            temp,
            seconds=held,
        )

    async def _fixed_pause(self) -> None:
        if self._released == 0 or self.level_pause_s <= 0:
            return  # nothing ran yet (nothing to cool down from), or no pause is asked for
        while self._flight:  # the pause is a rest: it starts when the card has nothing to do
            await self._wait_for_flight(self._ended)
        await self._sleep(self.level_pause_s)
        self.stats.paused_s += self.level_pause_s

    def _why(self, temp: float, reading: Reading, hold: _Hold) -> str:
        lim = self.limits
        if temp >= lim.critical_c:
            return f"card at {temp:.1f} °C, at or over the critical {lim.critical_c:.0f} °C"
        if temp >= lim.target_c:
            return f"card at {temp:.1f} °C, at or over the target {lim.target_c:.0f} °C"
        if reading.thermal_throttling:
            reasons = ", ".join(reading.clock_event_reasons) or "thermal"
            return f"card at {temp:.1f} °C slows its clocks for heat ({reasons})"
        if hold.why:
            return hold.why
        model = self.heat.model()
        start = self._flight_end_c(temp, model) if self._flight else temp + self._resolution_c()
        return (
            f"card at {temp:.1f} °C would pass the target {lim.target_c:.0f} °C with the next "
            f"prompt (expected peak {model.peak_c(start):.1f} °C, {len(self._flight)} in flight)"
        )

    async def _free(self, why: str) -> None:
        if self._free_memory is None:
            return
        self.stats.memory_frees += 1
        try:
            await self._free_memory()
        except ComfylineError as exc:  # a hot card matters more than a failed cleanup
            self._emit("freed_memory", f"could not free the server's memory ({why}): {exc}")
            return
        self._emit("freed_memory", f"asked the server to free its memory ({why})")

    def _trip(self, hold: _Hold, last: float | None, elapsed: float) -> None:
        lim = self.limits
        goal = self.release_below_c()
        if hold.to_resume:
            goal = min(goal, lim.resume_c)
        first = f"{hold.first_c:.1f} °C" if hold.first_c is not None else "unknown"
        now = f"{last:.1f} °C" if last is not None else f"unknown ({self.sensor.last_error})"
        message = (
            f"the GPU did not cool from {first} to {goal:.1f} °C (where the next prompt "
            f"may go; target {lim.target_c:.0f} °C, resume {lim.resume_c:.0f} °C) within "
            f"{elapsed:.0f} s (cool_timeout_s={lim.cool_timeout_s:.0f}; last reading {now}); "
            "nothing more was sent. The order's state is saved; resume when the card is cool "
            "(check its fans and the room temperature; if it idles above that, one image heats "
            "it past the target even from idle: choose a lower quality level)"
        )
        self._emit("tripped", message, last, seconds=elapsed)
        raise GuardTripped(message)


class Guard(_GuardHold):
    """Paces the release of prompts by the card's temperature (see the module docs).

    ``level_pause_s`` and ``max_batch`` come from the quality level; ``series_pause_s`` is the
    cool-down after ``max_batch`` images when there is no temperature to wait for.
    ``free_memory`` asks the server to free its memory (the adapter's POST /free).

    ``margin_c`` is kept under the target for what the readings miss (a read that came a little
    after the peak, a heatsink that warmed since the last prompts). ``prior`` is the heat of a
    prompt assumed before one is measured. While the card cools, the gate re-reads it when it
    expects it to have reached the release temperature (from how fast it cooled so far), at
    least every ``limits.poll_interval_s`` and at most every ``min_poll_s``. ``resolution_c``:
    how much hotter than a reading the card may be (None: 1 °C while every reading is a whole
    number, as NVML and nvidia-smi report, else 0); forecasts start from the top of it.

    Use ``guard.before_prompt`` as the adapter's gate, ``guard.prompt_settled`` as its
    ``on_settled`` hook, and call ``await guard.after_prompt(n)`` for every prompt that finished
    (n images); run ``guard.watch()`` as a task.

    ``trusted_margin_c`` replaces ``margin_c`` once ``trust_after`` prompts in a row ended
    within ``trust_error_c`` of the heat model's forecast, each read within ``trust_read_s``;
    one that ends hotter than that, or is read slower, brings the full margin back. (A sensor
    reads when the request reaches it, about half way through the round trip: 0.1 s of it is
    0.05 s late, a quarter of a degree on a die that cools 5 degrees a second.)
    """

    def __init__(
        self,
        sensor: Sensor,
        limits: Limits,
        level_pause_s: float,
        max_batch: int,
        *,
        clock: Clock,
        sleep: Sleep,
        free_memory: FreeMemory | None = None,
        on_event: Callable[[GuardEvent], None] | None = None,
        series_pause_s: float = 30.0,
        margin_c: float = 1.0,
        trusted_margin_c: float = 0.5,
        trust_after: int = 5,
        trust_error_c: float = 0.25,
        trust_read_s: float = 0.1,
        prior: HeatModel | None = None,
        min_poll_s: float = 0.05,
        resolution_c: float | None = None,
    ) -> None:
        self.sensor = sensor
        self.limits = limits
        self.level_pause_s = level_pause_s
        self.max_batch = max_batch
        self.series_pause_s = series_pause_s
        self.margin_c = margin_c
        self.trusted_margin_c = trusted_margin_c
        self.trust_after = trust_after
        self.trust_error_c = trust_error_c
        self._on_forecast = 0  # prompts in a row that ended within trust_error_c of forecast
        self._forecast_c: float | None = None  # the last measured prompt's forecast end
        self.min_poll_s = min(min_poll_s, limits.poll_interval_s)
        self.heat = HeatLearner(prior=prior)
        self._clock = clock
        self._sleep = sleep
        self._free_memory = free_memory
        self._on_event = on_event
        self._t0 = clock()
        self.events: list[GuardEvent] = []
        self.samples: list[Sample] = []
        self.stats = GuardStats()
        self._released = 0
        self._in_series = 0
        self._flight: deque[_Flight] = deque()
        # The readings prompt_settled took (with how long each took), for after_prompt.
        self._ends: deque[tuple[Reading | None, Sample | None, float]] = deque()
        self.trust_read_s = trust_read_s
        self._read_s = 0.0  # how long the last reading took to come
        self._reading = None  # the read under way, shared by whoever asks meanwhile
        self._last_read = None  # (when it was asked for, what came)
        self._ended = 0  # prompts reported by after_prompt
        self._finished = asyncio.Event()  # set by after_prompt: a prompt in flight ended
        self._end_open = False  # the last measured end may still show hotter (nothing ran since)
        self._had_temperature = False
        self._whole_degrees = True  # every reading so far a whole number (NVML, nvidia-smi)
        self._resolution_set = resolution_c
        self._lost = False
        self._said: set[str] = set()
        self.holding = ""
        """Why the gate holds new prompts now while the card cools ("" while they go): for
        a live view of the server (the dashboard)."""

    # -- the gate ----------------------------------------------------------------------------

    async def before_prompt(self) -> None:
        """Return when the next prompt may be sent; hold (or pause) while the card must cool.

        Raises :class:`GuardTripped` when the card does not cool within ``cool_timeout_s``.
        """
        hold = _Hold()
        try:
            if self._in_series >= self.max_batch:
                if not await self._series_cooldown(hold):
                    self._release(None)
                    return
            self._release(await self._pass(hold))
        finally:
            self.holding = ""

    async def prompt_settled(self) -> None:
        """Call the moment the server finished (or failed) a prompt, before anything else is
        done with it: the reading taken now is its end for :meth:`after_prompt`. A die cools
        by degrees a second after a prompt; a reading taken after the downloads reads the peak
        low, and the guard would then let the next prompts run hotter than it thinks."""
        reading = await self._read()
        sample = self.samples[-1] if reading is not None else None
        self._ends.append((reading, sample, self._read_s))

    async def after_prompt(self, images: int = 1) -> Sample | None:
        """Call once for every prompt that finished (``images``: how many it made, 0 when it
        failed). Its end reading is the one :meth:`prompt_settled` took, or one taken now;
        returned for the report (None: no reading). Learns from it how much one prompt heats
        the card."""
        self.stats.images += images
        self._in_series += images
        reading, sample, read_s = self._ends.popleft() if self._ends else (None, None, 0.0)
        if reading is None:  # no hook, or its reading failed (one without a temperature is
            reading = await self._read()  # kept: reading again would find none either)
            sample, read_s = (self.samples[-1] if reading is not None else None), self._read_s
        end_c = reading.temperature_c if reading is not None else None
        flight = self._flight.popleft() if self._flight else None
        learned = False
        if flight is not None and flight.start_c is not None and end_c is not None and images:
            half = self._resolution_c() / 2  # a whole-degree reading T means T .. T+1
            self._forecast_c = self.heat.model().peak_c(flight.start_c + half)
            as_forecast = self._as_forecast(end_c + half, read_s)
            self._on_forecast = self._on_forecast + 1 if as_forecast else 0
            self.heat.add(flight.start_c + half, end_c + half)
            learned = True
        if self._flight and (self._flight[0].queued or not images):
            # It waited on the server behind this one, so it started when this one ended. (A
            # prompt that failed may never have run: then when the next one started is unknown.)
            self._flight[0] = _Flight(end_c if images else None, queued=False)
        self._end_open = learned and not self._flight
        self._ended += 1
        self._finished.set()
        return sample

    async def watch(self) -> None:
        """Read the sensor every ``poll_interval_s`` while prompts are in flight, until
        cancelled. Run it as a task for the length of a run: it gives the report its time
        series while the gate has nothing to read for."""
        while True:
            if self._flight:  # (with nothing in flight, a holding gate reads for itself)
                await self._read()
            await self._sleep(self.limits.poll_interval_s)

    # -- what the ETA and the report need ----------------------------------------------------

    def cooling_s_per_image(self) -> float:
        """Seconds of holding and pausing per image so far (before any image: the level's pause
        without a temperature sensor, nothing with one)."""
        if self.stats.images == 0:
            return 0.0 if self._had_temperature else self.level_pause_s
        return (self.stats.held_s + self.stats.paused_s) / self.stats.images

    def estimated_cooling_s(self, remaining_images: int) -> float:
        """Expected seconds of cooling for ``remaining_images`` more images, from the run so far."""
        return self.cooling_s_per_image() * remaining_images

    # -- a series of images ------------------------------------------------------------------

    def _release(self, start_c: float | None) -> None:
        queued = bool(self._flight)
        self._flight.append(_Flight(None if queued else start_c, queued))
        self._released += 1
        self._end_open = False

    async def _series_cooldown(self, hold: _Hold) -> bool:
        """Free memory and cool down after ``max_batch`` images; False: no temperature, the
        series pause was taken instead (the prompt may go)."""
        while self._flight:
            await self._wait_for_flight(self._ended)
        reading = await self._read()
        temp = reading.temperature_c if reading is not None else None
        self._emit(
            "series_cooldown",
            f"{self._in_series} images in a row (max batch {self.max_batch}): memory cleanup "
            "on the server and a cool-down",
            temp,
        )
        self._in_series = 0
        await self._free("after a series of images")
        hold.freed = True
        if temp is None:
            await self._sleep(self.series_pause_s)
            self.stats.paused_s += self.series_pause_s
            return False
        hold.to_resume = True
        hold.why = f"a cool-down after {self.max_batch} images, card at {temp:.1f} °C"
        if temp > self.limits.resume_c:
            hold.first_c = temp
        return True
