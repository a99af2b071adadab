"""How much one prompt heats the card, learned from the run: ``peak = a + b * start``.

A GPU die heats towards a hot level while it works and cools between prompts, fast (seconds);
its heatsink warms slowly (minutes) under it. Over one prompt the heatsink barely moves, so the
die's first-order step holds for the whole card::

    T_end = a + b * T_start        b = e^(-work / tau),  a = T_hot * (1 - b)

``T_end`` is the prompt's peak (the die heats as long as it works). A hot card heats less than
a cool one (``b < 1``), so one fixed "rise per prompt" over-predicts after a cool start and goes
stale as the heatsink warms (``a`` drifts up). :class:`HeatLearner` fits the slope ``b`` to the
last few prompts (weighted towards the newest) by least squares, regularised towards a prior
slope: when the prompts all started at about the same temperature, which is what a paced run
does, the data say nothing about the slope and it stays the prior's. ``a`` is then the hottest
of the last few prompts' ``T_end - b * T_start``, not their mean: a reading that comes late, after
the die began to cool, only ever reads a peak too low, so the hottest is the best witness; and a
heatsink that warms makes the newest prompt the hottest, so ``a`` follows it at once. Nothing
here is specific to a card: ``a`` and ``b`` come from the card's own readings.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

#: Before any prompt was measured: a prompt heats a card at 40 °C by 25 °C, one at 70 °C by
#: 16 °C. More than a typical card's first image, so that the guard errs on the cool side.
PRIOR_A = 37.0
PRIOR_B = 0.7


@dataclass(frozen=True)
class HeatModel:
    """One prompt's effect: a prompt started at ``T`` °C ends (peaks) at ``a + b * T``.

    >>> HeatModel(a=37.0, b=0.7).peak_c(40.0)
    65.0
    >>> round(HeatModel(a=37.0, b=0.7).start_for_peak_c(72.0), 1)
    50.0
    """

    a: float
    b: float

    def peak_c(self, start_c: float) -> float:
        """The temperature at the end of a prompt started at ``start_c``."""
        return self.a + self.b * start_c

    def start_for_peak_c(self, peak_c: float) -> float:
        """The hottest start from which a prompt ends at or under ``peak_c``."""
        return (peak_c - self.a) / self.b


@dataclass(frozen=True)
class HeatSample:
    """One measured prompt: the reading when it started and the hottest one at its end."""

    start_c: float
    end_c: float


class HeatLearner:
    """Fits :class:`HeatModel` to the last ``window`` measured prompts.

    The slope: weighted least squares (weight ``decay ** age``) with a ridge penalty ``ridge``
    (°C²) pulling it towards ``prior.b``, kept within [0.2, 0.98] (a die that forgets nothing,
    or everything, in one prompt is a bad fit, not a card). ``a``: the hottest
    ``end - b * start`` of the last ``witnesses`` prompts.

    >>> learner = HeatLearner()
    >>> learner.add(43.0, 62.9)
    >>> model = learner.model()
    >>> (round(model.a, 2), model.b)
    (32.8, 0.7)
    """

    def __init__(
        self,
        *,
        prior: HeatModel | None = None,
        window: int = 10,
        decay: float = 0.8,
        ridge: float = 20.0,
        witnesses: int = 4,
    ) -> None:
        self.prior = prior or HeatModel(PRIOR_A, PRIOR_B)
        self.decay = decay
        self.ridge = ridge
        self.witnesses = witnesses
        self._samples: deque[HeatSample] = deque(maxlen=window)
        self._model = self.prior

    @property
    def samples(self) -> tuple[HeatSample, ...]:
        """The prompts the fit uses, oldest first."""
        return tuple(self._samples)

    def add(self, start_c: float, end_c: float) -> None:
        """Learn from a prompt that started at ``start_c`` and ended at ``end_c``."""
        self._samples.append(HeatSample(start_c, end_c))
        self._model = self._fit()

    def raise_last_end(self, end_c: float) -> bool:
        """A later reading shows the last prompt's end hotter than read (a sensor that lags, or
        a read that came late): use it. True when it changed the fit."""
        if not self._samples or end_c <= self._samples[-1].end_c:
            return False
        last = self._samples.pop()
        self.add(last.start_c, end_c)
        return True

    def model(self) -> HeatModel:
        """The current fit (the prior before any prompt was measured)."""
        return self._model

    def _fit(self) -> HeatModel:
        n = len(self._samples)
        if n == 0:
            return self.prior
        weights = [self.decay ** (n - 1 - i) for i in range(n)]
        total = sum(weights)
        mean_x = sum(w * s.start_c for w, s in zip(weights, self._samples, strict=True)) / total
        mean_y = sum(w * s.end_c for w, s in zip(weights, self._samples, strict=True)) / total
        sxx = sxy = 0.0
        for w, s in zip(weights, self._samples, strict=True):
            sxx += w * (s.start_c - mean_x) ** 2
            sxy += w * (s.start_c - mean_x) * (s.end_c - mean_y)
        b = (sxy + self.ridge * self.prior.b) / (sxx + self.ridge)
        b = min(max(b, 0.2), 0.98)
        if not math.isfinite(b):  # pragma: no cover - only with non-finite readings
            b = self.prior.b
        recent = list(self._samples)[-self.witnesses :]
        return HeatModel(max(s.end_c - b * s.start_c for s in recent), b)
