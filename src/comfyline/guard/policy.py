"""The pacing policy: may the next prompt go, or must the card cool first?

:meth:`Guard.before_prompt` is the gate the adapter awaits before it releases each prompt (a prompt
already running is never cut off):

- card under the target temperature (78 °C), with room for the heat of the prompts in flight and
  of this one: no pause at all. (A die heats within seconds: a card read at 77 °C between images
  passes 83 °C in the next one. How much one prompt heats it is learned from the run: the most
  of the last 3 prompts that ran alone, each from its release to its hottest reading; until one
  is measured, ``rise_prior_c``.)
- under the target but without that room: hold until there is;
- at or above the target, or slowing its clocks for heat: hold until it reaches the resume
  temperature (72 °C), and has that room;
- at or above the critical temperature (83 °C): send nothing, ask the server to free its memory,
  and wait the same way;
- still not cooled after ``cool_timeout_s``: :class:`~comfyline.errors.GuardTripped`;
- after ``max_batch`` images in a row: free the server's memory and cool to the resume temperature;
- no temperature (no sensor, or it stopped answering): the quality level's fixed pause between
  images, as the seed did, said once.

Time is injected (``clock``, ``sleep``) so that tests run the policy without waiting. Every
decision is a :class:`GuardEvent`; every reading is kept as a :class:`Sample` for the report.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

from comfyline.errors import ComfylineError, ConfigError, GuardTripped
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
    """Totals over the run so far."""

    images: int = 0
    holds: int = 0
    held_s: float = 0.0
    paused_s: float = 0.0
    memory_frees: int = 0
    missed_readings: int = 0


Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]
FreeMemory = Callable[[], Awaitable[None]]


class Guard:
    """Paces the release of prompts by the card's temperature (see the module docs).

    ``level_pause_s`` and ``max_batch`` come from the quality level; ``series_pause_s`` is the
    cool-down after ``max_batch`` images when there is no temperature to wait for.
    ``free_memory`` asks the server to free its memory (the adapter's POST /free).

    ``rise_prior_c`` is the heat of one prompt assumed before the first one is measured;
    ``margin_c`` is kept under the target for what readings miss (a peak between two reads).

    Use ``guard.before_prompt`` as the adapter's gate and call ``await guard.after_prompt(n)``
    for every prompt that finished (n images).
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
        rise_prior_c: float = 15.0,
        margin_c: float = 1.0,
    ) -> None:
        self.sensor = sensor
        self.limits = limits
        self.level_pause_s = level_pause_s
        self.max_batch = max_batch
        self.series_pause_s = series_pause_s
        self.rise_prior_c = rise_prior_c
        self.margin_c = margin_c
        self._clock = clock
        self._sleep = sleep
        self._free_memory = free_memory
        self._on_event = on_event
        self._t0 = clock()
        self.events: list[GuardEvent] = []
        self.samples: list[Sample] = []
        self.stats = GuardStats()
        self._released = 0
        self._finished = 0
        self._in_series = 0
        # The heat of a prompt is measured on prompts that run alone: from the reading at their
        # release to the hottest reading before they finish (the hold loop reads while they run).
        self._lone_start_c: float | None = None
        self._peak_c = -math.inf
        self._rises: deque[float] = deque(maxlen=3)
        self._coolest_c = math.inf
        self._holding = False
        self._had_temperature = False
        self._lost = False
        self._said: set[str] = set()

    # -- the gate ----------------------------------------------------------------------------

    async def before_prompt(self) -> None:
        """Return when the next prompt may be sent; hold (or pause) while the card must cool.

        Raises :class:`GuardTripped` when the card does not cool within ``cool_timeout_s``.
        """
        reading = await self._read()
        temp = reading.temperature_c if reading is not None else None
        lim = self.limits
        if self._in_series >= self.max_batch:
            temp = await self._series_cooldown(reading)
        elif reading is None or temp is None:
            await self._fixed_pause()
        elif temp >= lim.critical_c:
            temp = await self._hold(temp, self._why(reading), critical=True)
        elif temp >= lim.target_c or reading.thermal_throttling:
            temp = await self._hold(temp, self._why(reading), over_target=True)
        elif temp > self._release_threshold(over_target=False):
            temp = await self._hold(temp, self._why(reading))
        alone = self._in_flight() == 0 and temp is not None
        self._lone_start_c = temp if alone else None
        self._peak_c = temp if temp is not None else -math.inf
        self._released += 1

    async def after_prompt(self, images: int = 1) -> Sample | None:
        """Call once for every prompt that finished (``images``: how many it made, 0 when it
        failed). Takes a reading for the report (returned; None: no reading) and learns from it
        how much one prompt heats the card."""
        self.stats.images += images
        self._in_series += images
        self._finished += 1
        reading = await self._read()
        start, self._lone_start_c = self._lone_start_c, None
        if start is not None and self._in_flight() == 0 and images > 0:
            self._rises.append(max(0.0, self._peak_c - start))
        return self.samples[-1] if reading is not None and self.samples else None

    async def watch(self) -> None:
        """Read the sensor every ``poll_interval_s`` while prompts are in flight, until
        cancelled. Run it as a task for the length of a run: it gives the report its time
        series and catches the peak of each prompt (the gate reads only when it holds)."""
        while True:
            if self._in_flight() > 0 and not self._holding:
                await self._read()
            await self._sleep(self.limits.poll_interval_s)

    # -- what the ETA needs ------------------------------------------------------------------

    def rise_per_prompt_c(self) -> float:
        """How much one prompt is expected to heat the card (the most of the last few)."""
        return max(self._rises, default=self.rise_prior_c)

    def cooling_s_per_image(self) -> float:
        """Seconds of holding and pausing per image so far (before any image: the level's pause
        without a temperature sensor, nothing with one)."""
        if self.stats.images == 0:
            return 0.0 if self._had_temperature else self.level_pause_s
        return (self.stats.held_s + self.stats.paused_s) / self.stats.images

    def estimated_cooling_s(self, remaining_images: int) -> float:
        """Expected seconds of cooling for ``remaining_images`` more images, from the run so far."""
        return self.cooling_s_per_image() * remaining_images

    # -- the decisions -----------------------------------------------------------------------

    def _in_flight(self) -> int:
        return self._released - self._finished

    def _release_threshold(self, *, over_target: bool) -> float:
        """The temperature at or under which the next prompt may go.

        A die heats within seconds of work starting, so a card read at 77 °C between images can
        pass 83 °C during the next one: the next prompt goes only when the card, plus the heat
        of every prompt in flight and of this one, stays under the target. Never below the
        coolest reading of the run (+1 °C), which a hold can always reach. Over the target,
        the resume temperature also applies (hysteresis, so that one reading does not toggle).
        """
        lim = self.limits
        rise = self.rise_per_prompt_c() * (self._in_flight() + 1)
        threshold = max(lim.target_c - self.margin_c - rise, self._coolest_c + 1.0)
        threshold = min(threshold, lim.target_c - 0.1)
        return min(threshold, lim.resume_c) if over_target else threshold

    async def _fixed_pause(self) -> None:
        if self._released == 0 or self.level_pause_s <= 0:
            return  # nothing ran yet: there is nothing to cool down from
        await self._sleep(self.level_pause_s)
        self.stats.paused_s += self.level_pause_s

    async def _series_cooldown(self, reading: Reading | None) -> float | None:
        temp = reading.temperature_c if reading else None
        self._emit(
            "series_cooldown",
            f"{self._in_series} images in a row (max batch {self.max_batch}): memory cleanup "
            "on the server and a cool-down",
            temp,
        )
        self._in_series = 0
        await self._free("after a series of images")
        if temp is None:
            await self._sleep(self.series_pause_s)
            self.stats.paused_s += self.series_pause_s
            return None
        if temp > self.limits.resume_c or temp > self._release_threshold(over_target=True):
            critical = temp >= self.limits.critical_c
            why = f"a cool-down after {self.max_batch} images, card at {temp:.1f} °C"
            return await self._hold(temp, why, critical=critical, over_target=True, freed=True)
        return temp

    async def _hold(
        self,
        first: float,
        why: str,
        *,
        critical: bool = False,
        over_target: bool = False,
        freed: bool = False,
    ) -> float:
        """Wait until the card is at or under the release threshold; the temperature then."""
        start = self._clock()
        self._holding = True
        try:
            return await self._hold_until_cool(start, first, why, critical, over_target, freed)
        finally:
            self._holding = False

    async def _hold_until_cool(
        self, start: float, first: float, why: str, critical: bool, over_target: bool, freed: bool
    ) -> float:
        temp: float | None = first
        if critical:
            self._emit("critical", f"{why}: nothing is sent until it cools", first)
        over_target = over_target or critical
        while temp is None or temp > self._release_threshold(over_target=over_target):
            if temp is not None and temp >= self.limits.critical_c and not freed:
                freed = True
                await self._free(f"card at {temp:.1f} °C")
            if self._clock() - start >= self.limits.cool_timeout_s:
                goal = self._release_threshold(over_target=over_target)
                self._trip(first, temp, self._clock() - start, goal)
            await self._sleep(self.limits.poll_interval_s)
            latest = await self._read()
            temp = latest.temperature_c if latest else None
        held = self._clock() - start
        self.stats.holds += 1
        self.stats.held_s += held
        self._emit(
            "held",
            f"held new prompts for {held:.1f} s: {why}; released at {temp:.1f} °C",
            temp,
            seconds=held,
        )
        return temp

    def _why(self, reading: Reading) -> str:
        temp, lim = reading.temperature_c, self.limits
        if temp is not None and temp >= lim.critical_c:
            return f"card at {temp:.1f} °C, at or over the critical {lim.critical_c:.0f} °C"
        if temp is not None and temp >= lim.target_c:
            return f"card at {temp:.1f} °C, at or over the target {lim.target_c:.0f} °C"
        if reading.thermal_throttling:
            reasons = ", ".join(reading.clock_event_reasons) or "thermal"
            return f"card at {temp:.1f} °C slows its clocks for heat ({reasons})"
        return (
            f"card at {temp:.1f} °C would pass the target {lim.target_c:.0f} °C with the next "
            f"prompt (about +{self.rise_per_prompt_c():.1f} °C each, {self._in_flight()} in flight)"
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

    def _trip(self, first: float, last: float | None, elapsed: float, goal: float) -> None:
        lim = self.limits
        now = f"{last:.1f} °C" if last is not None else f"unknown ({self.sensor.last_error})"
        message = (
            f"the GPU did not cool from {first:.1f} °C to {goal:.1f} °C (where the next prompt "
            f"may go; target {lim.target_c:.0f} °C, resume {lim.resume_c:.0f} °C) within "
            f"{elapsed:.0f} s (cool_timeout_s={lim.cool_timeout_s:.0f}; last reading {now}); "
            "nothing more was sent. The order's state is saved; resume when the card is cool "
            "(check its fans and the room temperature)"
        )
        self._emit("tripped", message, last, seconds=elapsed)
        raise GuardTripped(message)

    # -- readings ----------------------------------------------------------------------------

    async def _read(self) -> Reading | None:
        reading = await self.sensor.read()
        if reading is None or reading.temperature_c is None:
            self._note_no_temperature(reading)
        elif self._lost:
            self._lost = False
            self._emit("sensor_back", f"the {self.sensor.name} sensor answers again", None)
        if reading is not None:
            self._had_temperature |= reading.temperature_c is not None
            if reading.temperature_c is not None:
                self._coolest_c = min(self._coolest_c, reading.temperature_c)
                self._peak_c = max(self._peak_c, reading.temperature_c)
            self._record(reading)
            self._check_slowdown(reading)
        return reading

    def _note_no_temperature(self, reading: Reading | None) -> None:
        if reading is None:
            self.stats.missed_readings += 1
        if self._had_temperature:
            self._lost = True
        why = self.sensor.last_error if reading is None else "it reports no temperature"
        self._once(
            "no_temperature",
            f"no temperature from the {self.sensor.name} sensor ({why}); the fixed pause of "
            f"{self.level_pause_s:.1f} s between images applies while there is none",
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
