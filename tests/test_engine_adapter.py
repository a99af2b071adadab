"""ComfyUIAdapter against the simulator over real sockets: success, every expected fault, and
the batch behaviour (streaming, two in flight, no temp files, no duplicates)."""

from __future__ import annotations

import asyncio
import hashlib
import io
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from comfyline.comfy import ComfyUIAdapter
from comfyline.errors import (
    ComfyTimeout,
    ExecutionFailed,
    ImageInvalid,
    ModelNotFound,
    OutOfMemory,
    PromptRejected,
)
from comfyline.generation import GenerationRequest, GenerationResult
from comfyline.preflight import preflight
from comfyline.presets import params_for
from comfyline.sim import Faults, SimulatorHandle
from comfyline.workflows import Workflow

MakeSim = Callable[..., AbstractContextManager[SimulatorHandle]]
CKPT = "sim-sd15.safetensors"


def _settings(sim: SimulatorHandle, **overrides: Any) -> Any:
    from comfyline.settings import Settings

    return Settings(comfyui_url=sim.url, reconnect_timeout_s=15, **overrides)


def _requests(
    out: Path, count: int, *, level: str = "preview", **kw: Any
) -> list[GenerationRequest]:
    params = params_for(level, **kw)
    return [
        GenerationRequest(
            f"image {i}", 1000 + i, params, checkpoint=CKPT, prompt_id=f"{out.name}-img_{i:03d}"
        )
        for i in range(count)
    ]


def _files(folder: Path) -> list[str]:
    """Every entry of ``folder``, hidden temp files included."""
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


@pytest.fixture
def out(tmp_path: Path) -> Path:
    """Our output folder (the simulator writes its own files under tmp_path/comfy-out)."""
    return tmp_path / "out"


async def _run(comfy: ComfyUIAdapter, requests: list[GenerationRequest]) -> list[GenerationResult]:
    async with asyncio.timeout(60):
        return [result async for result in comfy.generate_batch(requests)]


async def test_generate_writes_one_checked_image(sim: SimulatorHandle, out: Path) -> None:
    request = GenerationRequest(
        "a fox", 7, params_for("standard"), checkpoint=CKPT, prompt_id="slot-0001-a1"
    )
    async with ComfyUIAdapter(_settings(sim)) as comfy:
        result = await comfy.generate(request)
    assert result.ok and result.prompt_id == "slot-0001-a1"
    (image,) = result.images
    assert (image.width, image.height) == (320, 320)
    assert image.server_filename.endswith(".png")
    with Image.open(io.BytesIO(image.data)) as png:
        assert png.size == (320, 320)
    assert _files(out) == []  # the adapter writes nothing: the pipeline writes each file once


async def test_missing_checkpoint_lists_what_the_server_has(
    sim: SimulatorHandle, out: Path
) -> None:
    (request,) = _requests(out, 1)
    async with ComfyUIAdapter(_settings(sim)) as comfy:
        with pytest.raises(ModelNotFound, match="sim-sd15.safetensors"):
            await preflight(comfy, request, "nope.safetensors")
    assert sim.stats()["executed"] == 0  # checked before anything was sent


async def test_400_with_node_errors_is_a_typed_rejection(sim: SimulatorHandle, out: Path) -> None:
    params = params_for("preview")
    request = GenerationRequest("x", 1, params, checkpoint=CKPT, inputs={"3.steps": 0})
    async with ComfyUIAdapter(_settings(sim)) as comfy:
        with pytest.raises(PromptRejected) as info:
            await comfy.generate(request)
    error = info.value
    assert error.status_code == 400
    (node_error,) = error.node_errors
    assert (node_error.node_id, node_error.class_type, node_error.input_name) == (
        "3",
        "KSampler",
        "steps",
    )
    assert node_error.type == "value_smaller_than_min"
    assert _files(out) == []


def _two_output_workflow() -> Workflow:
    """txt2img plus a second output whose upscale factor is out of range: the server runs the
    good output and answers 200 listing the bad one's node_errors."""
    base = Workflow.builtin("txt2img")
    graph = {k: dict(v) for k, v in base.graph.items()}
    graph["20"] = {
        "class_type": "ImageScaleBy",
        "inputs": {"image": ["8", 0], "upscale_method": "nearest-exact", "scale_by": 100.0},
    }
    graph["21"] = {
        "class_type": "SaveImage",
        "inputs": {"images": ["20", 0], "filename_prefix": "broken"},
    }
    return Workflow("two-outputs", graph, "test")


async def test_200_with_node_errors_is_a_rejection_too(sim: SimulatorHandle, out: Path) -> None:
    request = GenerationRequest(
        "x",
        1,
        params_for("preview"),
        checkpoint=CKPT,
        workflow=_two_output_workflow(),
        nodes={"save": "9"},
    )
    async with ComfyUIAdapter(_settings(sim)) as comfy:
        with pytest.raises(PromptRejected) as info:
            await comfy.generate(request)
    assert info.value.status_code == 200
    assert [e.node_id for e in info.value.node_errors] == ["20"]
    assert _files(out) == []


async def test_execution_error_mid_batch_fails_only_that_image(
    make_sim: MakeSim, out: Path
) -> None:
    with make_sim() as sim:
        sim.set_faults(error_on_prompts=[3])
        async with ComfyUIAdapter(_settings(sim)) as comfy:
            results = await _run(comfy, _requests(out, 5))
        stats = sim.stats()
    failed = [r for r in results if not r.ok]
    assert len(results) == 5 and len(failed) == 1
    # A failed prompt is a result, not a reason to send anything again.
    assert (stats["started"], stats["executed"], stats["failed"]) == (5, 4, 1)
    error = failed[0].error
    assert isinstance(error, ExecutionFailed) and error.node_id and error.node_type
    assert error.exception_type and error.prompt_id == failed[0].prompt_id
    assert all(len(r.images) == 1 for r in results if r.ok)


async def test_out_of_memory_is_typed(make_sim: MakeSim, out: Path) -> None:
    with make_sim() as sim:
        sim.set_faults(oom_above_pixels=300 * 300)
        async with ComfyUIAdapter(_settings(sim)) as comfy:
            (small,) = _requests(out, 1, level="preview")
            (big,) = _requests(out / "big", 1, level="standard")
            results = await _run(comfy, [big, small])
    assert isinstance(results[0].error, OutOfMemory)
    assert results[1].ok


async def test_restart_mid_batch_loses_nothing_and_duplicates_nothing(
    make_sim: MakeSim, out: Path
) -> None:
    with make_sim(fixed_prompt_s=0.02) as sim:
        sim.set_faults(restart_after_prompts=3)
        async with ComfyUIAdapter(_settings(sim)) as comfy:
            results = await _run(comfy, _requests(out, 8))
        stats = sim.stats()
    assert stats["restarts"] == 1
    assert [r.ok for r in results] == [True] * 8, [str(r.error) for r in results]
    # The restart follows the 3rd prompt's end (its executing{node: null} reached us first):
    # the prompt waiting behind it vanished unstarted and was posted again. Nothing was cut off
    # mid-run, nothing finished unheard: each image made exactly once.
    assert (stats["started"], stats["executed"]) == (8, 8)
    assert (stats["interrupted"], stats["lost"], stats["cached"]) == (0, 0, 0)
    assert len({r.prompt_id for r in results}) == 8
    hashes = [hashlib.sha256(r.images[0].data).hexdigest() for r in results]
    assert len(set(hashes)) == 8  # distinct seeds -> distinct images, each made once


async def test_dropped_websocket_reconnects_and_finishes(make_sim: MakeSim, out: Path) -> None:
    with make_sim(fixed_prompt_s=0.02) as sim:
        sim.set_faults(drop_ws_after_prompts=2)
        async with ComfyUIAdapter(_settings(sim)) as comfy:
            results = await _run(comfy, _requests(out, 6))
        stats = sim.stats()
    assert stats["ws_drops"] == 1
    assert all(r.ok for r in results) and len(results) == 6
    # A dropped socket loses nothing on the server: each prompt in flight is settled from the
    # queue, the new socket or /history, and none is posted again (no allowance).
    assert (stats["started"], stats["executed"], stats["cached"]) == (6, 6, 0)


async def test_stuck_prompt_is_interrupted_and_fails_with_timeout(
    make_sim: MakeSim, out: Path
) -> None:
    with make_sim() as sim:
        sim.set_faults(stuck_on_prompts=[2])
        settings = _settings(sim, first_prompt_timeout_s=1.0, min_prompt_timeout_s=1.0)
        async with ComfyUIAdapter(settings) as comfy:
            results = await _run(comfy, _requests(out, 3))
        stats = sim.stats()
    assert [r.ok for r in results] == [True, False, True]
    assert isinstance(results[1].error, ComfyTimeout)
    assert (stats["started"], stats["interrupted"], stats["executed"]) == (3, 1, 2)


async def test_batch_size_4_writes_four_numbered_files(sim: SimulatorHandle, out: Path) -> None:
    (request,) = _requests(out, 1, batch_size=4)
    async with ComfyUIAdapter(_settings(sim)) as comfy:
        result = await comfy.generate(request)
    assert len(result.images) == 4
    assert all((i.width, i.height) == (256, 256) for i in result.images)


async def test_at_most_two_in_flight_and_the_server_never_idles(
    make_sim: MakeSim, out: Path
) -> None:
    """The next prompt goes out while the one before still runs (the server never idles
    between two), and never more than one of ours waits behind it. The first prompt hangs on
    the server until the test interrupts it, so "still runs" is certain, not a race."""
    depths: list[int] = []
    with make_sim(fixed_prompt_s=0.05, faults=Faults(stuck_on_prompts=(1,))) as sim:
        async with ComfyUIAdapter(_settings(sim)) as comfy:

            async def gate() -> None:
                queue = await comfy.client.queue()  # ours on the server before this release
                depths.append(len(queue.running) + len(queue.pending))
                if len(depths) == 2:  # the second goes out while the first (hung) runs
                    await comfy.interrupt()  # now let the first go

            async with asyncio.timeout(60):
                results = [r async for r in comfy.generate_batch(_requests(out, 4), gate=gate)]
    assert depths[:2] == [0, 1]  # the second was released while the first ran
    assert max(depths) <= 1  # never two of ours on the server when the next goes out
    assert [r.ok for r in results].count(True) == 3  # the interrupted one, and three made


async def test_results_stream_as_they_finish(sim: SimulatorHandle, out: Path) -> None:
    first, second, third = _requests(out, 3)
    got_one = asyncio.Event()

    async def requests() -> AsyncIterator[GenerationRequest]:
        yield first
        yield second
        await got_one.wait()  # only after a result came out: a batching adapter would hang here
        yield third

    async with ComfyUIAdapter(_settings(sim)) as comfy:
        seen = []
        async with asyncio.timeout(30):
            async for result in comfy.generate_batch(requests()):
                seen.append(result.request.prompt)
                got_one.set()
    assert sorted(seen) == ["image 0", "image 1", "image 2"]


async def test_gate_error_lets_in_flight_finish_then_raises(
    sim: SimulatorHandle, out: Path
) -> None:
    calls = 0

    class Stop(Exception):
        pass

    async def gate() -> None:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise Stop

    seen: list[GenerationResult] = []
    async with ComfyUIAdapter(_settings(sim)) as comfy:
        with pytest.raises(Stop):
            async for result in comfy.generate_batch(_requests(out, 5), gate=gate):
                seen.append(result)
    assert [r.ok for r in seen] == [True, True]


async def test_prompt_state_and_collect_after_the_fact(sim: SimulatorHandle, out: Path) -> None:
    (request,) = _requests(out / "first", 1)
    async with ComfyUIAdapter(_settings(sim)) as comfy:
        result = await comfy.generate(request)
        assert await comfy.prompt_state(result.prompt_id) == "done"
        assert await comfy.prompt_state("never-sent") == "unknown"
        collected = await comfy.collect(request, result.prompt_id)
        other = GenerationRequest("another prompt", request.seed, request.params, checkpoint=CKPT)
        refused = await comfy.collect(other, result.prompt_id)
    assert collected.ok and collected.images[0].data == result.images[0].data
    # A history entry made from another graph is never taken for this slot's.
    assert isinstance(refused.error, ImageInvalid) and "another graph" in str(refused.error)
