"""The simulated card's temperature: a pure two-time-constant model driven by an injected clock.

Model. The temperature is the room temperature plus three parts::

    T = room + idle_rise + D + S
    dD/dt = (die_rise  * u - D) / die_tau       the die: fast
    dS/dt = (sink_rise * u - S) / sink_tau      the heatsink: slow

where ``u`` is 1 while the card works (a prompt executes) and 0 while it idles. Between two
events ``u`` is constant, so each part moves exactly (``x -> target + (x - target) e^(-dt/tau)``);
no integration step, no drift. Time is whatever the clock says: the simulator passes *model*
seconds (real seconds divided by ``time_scale``), tests pass a hand-advanced clock.

Fit (default :class:`~comfyline.sim.config.ThermalConfig`: idle_rise 18, die 56 °C / 3.5 s,
sink 20 °C / 400 s, room 25 °C). The seed's observations, taking its 3.54 s per image as
1.54 s of work plus its 2.0 s pause:

* the seed's schedule, 10 images from an idle card (43 °C): the card reads 63, 70, then
  73.0 .. 75.1 °C at the end of images 3..10 (the seed reports 72-78 °C), never above 75.1;
* no pauses: 85 °C is passed 4.8 s in, during the 4th image (the seed: dark screen on the
  3rd-5th image);
* a long run on the seed's schedule settles just under 83 °C at 25 °C room (it survives), and
  passes 85 °C at 32 °C room (a hot day blacks it out);
* a guard that starts an image only when the image will not take the card past 78 °C makes
  10 images in about 27 s (1.3x the seed's 35.4 s) without passing 78 °C.

``tests/test_sim_thermal.py`` checks each of these with the model's own clock.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from comfyline.sim.config import ThermalConfig


@dataclass(frozen=True)
class Reading:
    """One sensor reading of the simulated card (model time)."""

    temperature_c: float
    power_w: float
    busy: bool


class ThermalModel:
    """The card's temperature over time. Call :meth:`set_busy` when work starts and stops."""

    def __init__(self, config: ThermalConfig, clock: Callable[[], float]) -> None:
        self.config = config
        self._clock = clock
        self._t = clock()
        self._die = 0.0
        self._sink = 0.0
        self._busy = False

    @property
    def busy(self) -> bool:
        """Whether the card is working now."""
        return self._busy

    def set_busy(self, busy: bool) -> None:
        """Record that work started (True) or stopped (False) now."""
        self._advance()
        self._busy = busy

    def temperature(self) -> float:
        """The temperature now, in °C."""
        self._advance()
        return self.config.room_c + self.config.idle_rise_c + self._die + self._sink

    def forecast(self, busy_s: float) -> float:
        """The temperature after working ``busy_s`` seconds from now (the state is unchanged)."""
        self._advance()
        cfg = self.config
        die = _approach(self._die, cfg.die_rise_c, busy_s, cfg.die_tau_s)
        sink = _approach(self._sink, cfg.sink_rise_c, busy_s, cfg.sink_tau_s)
        return cfg.room_c + cfg.idle_rise_c + die + sink

    def reading(self) -> Reading:
        """Temperature, power and load now."""
        temperature = self.temperature()
        power = self.config.busy_power_w if self._busy else self.config.idle_power_w
        return Reading(temperature_c=temperature, power_w=power, busy=self._busy)

    def cool_down(self) -> None:
        """Forget the heat (a card that has been off for a long time)."""
        self._advance()
        self._die = self._sink = 0.0

    def _advance(self) -> None:
        now = self._clock()
        dt = max(0.0, now - self._t)
        self._t = now
        if dt == 0.0:
            return
        u = 1.0 if self._busy else 0.0
        cfg = self.config
        self._die = _approach(self._die, cfg.die_rise_c * u, dt, cfg.die_tau_s)
        self._sink = _approach(self._sink, cfg.sink_rise_c * u, dt, cfg.sink_tau_s)


def _approach(value: float, target: float, dt: float, tau: float) -> float:
    return target + (value - target) * math.exp(-dt / tau)
