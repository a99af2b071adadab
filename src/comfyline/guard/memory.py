"""What to do when ComfyUI runs out of memory: free the server's memory, retry, then step down.

The rule, for each :class:`~comfyline.errors.OutOfMemory` in a row:

1. the first: free the server's memory (``POST /free``), wait until its free VRAM rises (bounded),
   and retry with the same settings;
2. every further one: free again and step down (:func:`next_step_down`): first halve the batch
   (down to 1), then the next lower quality level, as far as the order's floor level allows;
3. nothing left to step down to: give up (the slot fails with the error).

A success resets the count. Every retry and step down is a :class:`~comfyline.guard.GuardEvent`
for the report, e.g. ``OOM at high 384x384 batch 1 -> stepped down to standard 320x320 batch 1``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from comfyline.errors import OutOfMemory
from comfyline.guard.policy import Clock, EventKind, FreeMemory, GuardEvent, Sleep
from comfyline.guard.sensors import Reading, Sensor
from comfyline.presets import LEVEL_ORDER, GenerationParams, get_level, lower_level


def next_step_down(
    params: GenerationParams, level: str, floor: str = "preview", *, min_batch: int = 1
) -> tuple[GenerationParams, str] | None:
    """The next smaller settings after an out-of-memory error, or None when there are none.

    A batch is halved first (down to ``min_batch``: an order whose slots must each make n
    images passes n, so that no image is silently dropped); then the next lower level's size
    and steps apply
    (never larger than the current ones), skipping levels that would not shrink the image,
    down to ``floor``. Sampler, scheduler, CFG and denoise stay as they are.

    >>> from comfyline.presets import params_for
    >>> p, lvl = next_step_down(params_for("high", batch_size=1), "high")
    >>> (lvl, p.width, p.steps)
    ('standard', 320, 8)
    """
    floor_index = LEVEL_ORDER.index(get_level(floor).name)
    get_level(level)  # a ConfigError naming the levels for a wrong name
    if params.batch_size // 2 >= max(1, min_batch):
        return params.model_copy(update={"batch_size": params.batch_size // 2}), level
    lower = lower_level(level)
    while lower is not None and LEVEL_ORDER.index(lower) >= floor_index:
        base = get_level(lower).params
        width, height = _within_area(params.width, params.height, base.width * base.height)
        smaller = params.model_copy(
            update={"width": width, "height": height, "steps": min(params.steps, base.steps)}
        )
        if smaller.width * smaller.height < params.width * params.height:
            return smaller, lower
        lower = lower_level(lower)
    return None


def _within_area(width: int, height: int, area: int) -> tuple[int, int]:
    """``width`` x ``height`` scaled down to at most ``area`` pixels, its aspect kept (an order
    with ``aspect: 3:2`` stays 3:2 a level lower), each side a multiple of 8.

    >>> _within_area(392, 264, 256 * 256)
    (304, 208)
    """
    if width * height <= area:
        return width, height
    scale = math.sqrt(area / (width * height))
    return max(8, int(width * scale) // 8 * 8), max(8, int(height * scale) // 8 * 8)


def describe(params: GenerationParams, level: str) -> str:
    """``high 384x384 batch 1``: the settings as the report shows them."""
    return f"{level} {params.width}x{params.height} batch {params.batch_size}"


@dataclass(frozen=True)
class OomDecision:
    """Retry with these settings. ``stepped_down``: they are smaller than the failed ones."""

    params: GenerationParams
    level: str
    stepped_down: bool
    message: str


async def wait_for_memory_freed(
    sensor: Sensor,
    before: Reading | None,
    *,
    clock: Clock,
    sleep: Sleep,
    timeout_s: float = 30.0,
    interval_s: float = 0.5,
) -> bool:
    """Wait (at most ``timeout_s``) until ``sensor`` shows the server's memory freed: more free
    VRAM than ``before``, or the same amount in two readings in a row.

    The second case matters: ComfyUI unloads its models on an out-of-memory error by itself,
    so often there is nothing left to free, and waiting for a rise would only burn the
    timeout. ComfyUI applies ``/free`` before it starts its next prompt, so a retry never runs
    on unfreed memory either way. True when freed; False when not in time, or when there is
    no VRAM to watch.
    """
    baseline = before.vram_free_bytes if before is not None else None
    if baseline is None:
        return False
    deadline = clock() + timeout_s
    previous: int | None = None
    while clock() < deadline:
        reading = await sensor.read()
        free = reading.vram_free_bytes if reading is not None else None
        if free is not None and (free > baseline or free == previous):
            return True
        previous = free
        await sleep(interval_s)
    return False


class OomRecovery:
    """The retry bookkeeping of the rule in the module docs, for one run on one server.

    ``params`` / ``level`` are the settings to use for new prompts; they shrink as it steps
    down, and stay down for the rest of the run (the card will not have more memory later).
    """

    def __init__(
        self,
        params: GenerationParams,
        level: str,
        *,
        free_memory: FreeMemory,
        sensor: Sensor,
        clock: Clock,
        sleep: Sleep,
        floor: str = "preview",
        min_batch: int = 1,
        free_timeout_s: float = 30.0,
        on_event: Callable[[GuardEvent], None] | None = None,
    ) -> None:
        # Unknown level names fail now, not at the first out-of-memory error.
        get_level(level)
        get_level(floor)
        self.params = params
        self.level = level
        self.floor = floor
        self.min_batch = min_batch
        self._free_memory = free_memory
        self._sensor = sensor
        self._clock = clock
        self._sleep = sleep
        self._free_timeout_s = free_timeout_s
        self._on_event = on_event
        self._t0 = clock()
        self._in_a_row = 0
        self.events: list[GuardEvent] = []

    def on_success(self) -> None:
        """A prompt finished: the next out-of-memory error is a first one again."""
        self._in_a_row = 0

    async def on_out_of_memory(self, error: OutOfMemory) -> OomDecision | None:
        """Free the server's memory and say how to retry; None: nothing left to try."""
        self._in_a_row += 1
        failed = describe(self.params, self.level)
        await self._free_and_wait()
        if self._in_a_row == 1:
            message = f"OOM at {failed} -> freed the server's memory, retrying once"
            self._emit("oom_retry", message)
            return OomDecision(self.params, self.level, False, message)
        step = next_step_down(self.params, self.level, self.floor, min_batch=self.min_batch)
        if step is None:
            message = (
                f"OOM at {failed} again, and nothing smaller is allowed (floor level "
                f"{self.floor!r}): {error.exception_message.strip()}"
            )
            self._emit("oom_gave_up", message)
            return None
        self.params, self.level = step
        message = f"OOM at {failed} -> stepped down to {describe(*step)}"
        self._emit("stepped_down", message)
        return OomDecision(self.params, self.level, True, message)

    async def _free_and_wait(self) -> None:
        before = await self._sensor.read()
        await self._free_memory()
        await wait_for_memory_freed(
            self._sensor,
            before,
            clock=self._clock,
            sleep=self._sleep,
            timeout_s=self._free_timeout_s,
        )

    def _emit(self, kind: EventKind, message: str) -> None:
        event = GuardEvent(self._clock() - self._t0, kind, message)
        self.events.append(event)
        if self._on_event is not None:
            self._on_event(event)
