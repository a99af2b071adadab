"""Out-of-memory handling: the step-down sequence and the free / retry bookkeeping."""

from __future__ import annotations

import pytest

from comfyline.errors import ConfigError, OutOfMemory
from comfyline.guard import (
    GuardEvent,
    OomRecovery,
    Reading,
    next_step_down,
    wait_for_memory_freed,
)
from comfyline.presets import params_for

GIB = 2**30


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class FakeServer:
    """A server whose VRAM is freed ``delay`` reads after POST /free (as ComfyUI frees it
    after the running prompt)."""

    name = "fake"
    last_error: str | None = None

    def __init__(self, delay: int = 1, used: int = 11 * GIB) -> None:
        self.used = used
        self.frees = 0
        self.delay = delay
        self._reads_until_freed: int | None = None

    async def free(self) -> None:
        self.frees += 1
        self._reads_until_freed = self.delay

    async def read(self) -> Reading | None:
        if self._reads_until_freed is not None:
            if self._reads_until_freed == 0:
                self.used, self._reads_until_freed = 2 * GIB, None
            else:
                self._reads_until_freed -= 1
        return Reading(vram_used_bytes=self.used, vram_total_bytes=12 * GIB)


def oom() -> OutOfMemory:
    return OutOfMemory(
        prompt_id="p-1",
        node_id="3",
        node_type="KSampler",
        exception_type="torch.OutOfMemoryError",
        exception_message="Allocation on device \n",
    )


def step_sequence(level: str, batch: int, floor: str = "preview") -> list[str]:
    params, steps = params_for(level, batch_size=batch), []
    while (step := next_step_down(params, level, floor)) is not None:
        params, level = step
        steps.append(f"{level} {params.width}x{params.height} b{params.batch_size} s{params.steps}")
    return steps


def test_step_down_halves_the_batch_then_lowers_the_level() -> None:
    assert step_sequence("high", 4) == [
        "high 384x384 b2 s10",
        "high 384x384 b1 s10",
        "standard 320x320 b1 s8",
        "preview 256x256 b1 s6",
    ]


def test_step_down_odd_batch() -> None:
    assert step_sequence("preview", 5) == ["preview 256x256 b2 s6", "preview 256x256 b1 s6"]


def test_step_down_stops_at_the_floor() -> None:
    assert step_sequence("experimental", 1, floor="high") == [
        "max 448x448 b1 s12",
        "high 384x384 b1 s10",
    ]


def test_step_down_at_the_floor_is_none() -> None:
    assert next_step_down(params_for("standard"), "standard", "standard") is None
    assert next_step_down(params_for("preview"), "preview") is None


def test_step_down_never_grows_and_skips_levels_that_would_not_shrink() -> None:
    # A user asked for high at 256x256: standard (320) would not shrink it, preview neither.
    params = params_for("high", width=256, height=256)
    assert next_step_down(params, "high") is None
    tall = params_for("max", width=320, height=640)
    step = next_step_down(tall, "max")
    assert step is not None
    # The lower level's pixel count at the image's own aspect (1:2), not its square's sides.
    assert (step[1], step[0].width, step[0].height) == ("high", 264, 536)


def test_step_down_keeps_sampler_and_cfg() -> None:
    params = params_for("high", sampler="dpmpp_2m", cfg=7.5)
    step = next_step_down(params, "high")
    assert step is not None
    assert (step[0].sampler, step[0].cfg) == ("dpmpp_2m", 7.5)


def test_step_down_unknown_level() -> None:
    with pytest.raises(ConfigError, match="unknown quality level 'ultra'"):
        next_step_down(params_for("high"), "high", floor="ultra")


def make_recovery(
    server: FakeServer,
    clock: FakeClock,
    level: str = "high",
    batch: int = 1,
    floor: str = "preview",
) -> tuple[OomRecovery, list[GuardEvent]]:
    seen: list[GuardEvent] = []
    recovery = OomRecovery(
        params_for(level, batch_size=batch),
        level,
        free_memory=server.free,
        sensor=server,
        clock=clock,
        sleep=clock.sleep,
        floor=floor,
        on_event=seen.append,
    )
    return recovery, seen


async def test_first_oom_frees_memory_waits_and_retries_the_same() -> None:
    server, clock = FakeServer(delay=2), FakeClock()
    recovery, events = make_recovery(server, clock)
    decision = await recovery.on_out_of_memory(oom())
    assert decision is not None and not decision.stepped_down
    assert (decision.level, decision.params) == ("high", params_for("high"))
    assert server.frees == 1
    # Two equal readings in a row count as settled: ComfyUI applies /free before its next
    # prompt anyway, so the retry never runs on unfreed memory and nothing waits longer.
    assert clock.sleeps == [0.5]
    assert [e.message for e in events] == [
        "OOM at high 384x384 batch 1 -> freed the server's memory, retrying once"
    ]


async def test_oom_sequence_steps_down_to_the_floor_then_gives_up() -> None:
    server, clock = FakeServer(delay=0), FakeClock()
    recovery, events = make_recovery(server, clock, level="high", batch=2, floor="standard")
    levels = []
    for _ in range(3):
        decision = await recovery.on_out_of_memory(oom())
        assert decision is not None
        levels.append((decision.level, decision.params.batch_size, decision.stepped_down))
    assert levels == [("high", 2, False), ("high", 1, True), ("standard", 1, True)]
    assert await recovery.on_out_of_memory(oom()) is None
    assert server.frees == 4
    assert [e.kind for e in events] == ["oom_retry", "stepped_down", "stepped_down", "oom_gave_up"]
    assert events[2].message == (
        "OOM at high 384x384 batch 1 -> stepped down to standard 320x320 batch 1"
    )
    assert "floor level 'standard'" in events[-1].message
    assert "Allocation on device" in events[-1].message
    assert (recovery.level, recovery.params.width) == ("standard", 320)


async def test_success_resets_the_count() -> None:
    server, clock = FakeServer(delay=0), FakeClock()
    recovery, events = make_recovery(server, clock)
    await recovery.on_out_of_memory(oom())
    recovery.on_success()
    decision = await recovery.on_out_of_memory(oom())
    assert decision is not None and not decision.stepped_down
    assert [e.kind for e in events] == ["oom_retry", "oom_retry"]


async def test_wait_for_memory_freed_returns_at_once_when_already_free() -> None:
    server, clock = FakeServer(delay=10**6), FakeClock()
    before = await server.read()
    await server.free()
    freed = await wait_for_memory_freed(
        server, before, clock=clock, sleep=clock.sleep, timeout_s=3.0, interval_s=0.5
    )
    assert freed is True
    assert clock.sleeps == [0.5]


class Filling:
    """A sensor whose free VRAM keeps falling (another process filling the card)."""

    name = "filling"
    last_error: str | None = None

    def __init__(self) -> None:
        self.used = 4 * GIB

    async def read(self) -> Reading | None:
        self.used += GIB // 16
        return Reading(vram_used_bytes=self.used, vram_total_bytes=12 * GIB)


async def test_wait_for_memory_freed_is_bounded() -> None:
    sensor, clock = Filling(), FakeClock()
    before = await sensor.read()
    freed = await wait_for_memory_freed(
        sensor, before, clock=clock, sleep=clock.sleep, timeout_s=3.0, interval_s=0.5
    )
    assert freed is False
    assert sum(clock.sleeps) == 3.0


async def test_wait_for_memory_freed_without_vram_to_watch_returns_at_once() -> None:
    clock = FakeClock()
    freed = await wait_for_memory_freed(
        FakeServer(), Reading(temperature_c=60.0), clock=clock, sleep=clock.sleep
    )
    assert freed is False and clock.sleeps == []


def test_step_down_keeps_the_aspect_of_a_wide_image() -> None:
    """``aspect: 3:2`` at standard is 392x264; a level lower it stays about 3:2 (not the
    lower level's square), within the lower level's pixel count."""
    params = params_for("standard").model_copy(update={"width": 392, "height": 264})
    step = next_step_down(params, "standard")
    assert step is not None
    smaller, level = step
    assert level == "preview"
    assert smaller.width * smaller.height <= 256 * 256
    assert abs(smaller.width / smaller.height - 1.5) < 0.05
    assert smaller.width % 8 == 0 and smaller.height % 8 == 0
