"""Shipped and user workflows run end to end: filled by role, checked against the simulator's
/object_info, generated through the ComfyUIAdapter over real sockets."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from comfyline.comfy import ComfyUIAdapter
from comfyline.errors import WorkflowCheckFailed
from comfyline.generation import GenerationRequest, GenerationResult
from comfyline.preflight import preflight
from comfyline.presets import params_for
from comfyline.settings import Settings
from comfyline.sim import SimulatorHandle
from comfyline.workflows import Workflow

MakeSim = Callable[..., AbstractContextManager[SimulatorHandle]]
DATA = Path(__file__).parent / "data" / "workflows"


def _request(out: Path, workflow: Workflow | None, **changes: Any) -> GenerationRequest:
    params = params_for("preview", width=320, height=384)
    return GenerationRequest("a fox", 11, params, workflow=workflow, **changes)


async def _generate(sim: SimulatorHandle, request: GenerationRequest) -> GenerationResult:
    """Check the filled graph against the server, then generate (the order of a real run)."""
    async with asyncio.timeout(60), ComfyUIAdapter(Settings(comfyui_url=sim.url)) as comfy:
        checked = await preflight(comfy, request, None)
        return await comfy.generate(replace(request, checkpoint=checked.checkpoint))


def _size(result: GenerationResult) -> tuple[int, int]:
    (image,) = result.images
    assert image.data.startswith(b"\x89PNG")
    return image.width, image.height


@pytest.mark.parametrize(("name", "size"), [("txt2img", (320, 384)), ("hires_fix", (480, 576))])
async def test_shipped_workflows_run(
    sim: SimulatorHandle, tmp_path: Path, name: str, size: tuple[int, int]
) -> None:
    result = await _generate(sim, _request(tmp_path, Workflow.builtin(name)))
    assert result.ok and _size(result) == size


async def test_lora_workflow_runs_when_the_server_has_the_lora(
    make_sim: MakeSim, tmp_path: Path
) -> None:
    with make_sim(loras=["watercolor_style.safetensors"]) as sim:
        result = await _generate(sim, _request(tmp_path, Workflow.load(DATA / "lora.json")))
    assert _size(result) == (320, 384)


async def test_lora_missing_on_the_server_stops_before_any_prompt(
    sim: SimulatorHandle, tmp_path: Path
) -> None:
    with pytest.raises(WorkflowCheckFailed, match="LoRA 'watercolor_style.safetensors' is not"):
        await _generate(sim, _request(tmp_path, Workflow.load(DATA / "lora.json")))
    await _assert_nothing_posted(sim)


async def test_upscale_model_workflow_runs(make_sim: MakeSim, tmp_path: Path) -> None:
    with make_sim(upscale_models=["4x-UltraSharp.pth"], upscale_model_factor=4) as sim:
        workflow = Workflow.load(DATA / "upscale_model.json")
        result = await _generate(sim, _request(tmp_path, workflow))
    assert _size(result) == (640, 768)  # x4 by the model, then x0.5


async def test_two_samplers_named_in_the_order_run(sim: SimulatorHandle, tmp_path: Path) -> None:
    workflow = Workflow.load(DATA / "hires_two_samplers.json")
    request = _request(tmp_path, workflow, nodes={"sampler": "Base"})
    result = await _generate(sim, request)
    assert _size(result) == (768, 768)


async def test_custom_node_the_server_lacks_is_refused_before_any_prompt(
    sim: SimulatorHandle, tmp_path: Path
) -> None:
    workflow = Workflow.load(DATA / "face_detailer.json")
    with pytest.raises(WorkflowCheckFailed) as caught:
        await _generate(sim, _request(tmp_path, workflow))
    assert (
        f"node type 'FaceDetailer' (node '20') is not installed on the ComfyUI server at "
        f"{sim.url}: install its custom node pack or change the workflow"
    ) in caught.value.problems
    assert len(caught.value.problems) == 3
    await _assert_nothing_posted(sim)
    assert not (tmp_path / "img.png").exists()


async def test_custom_node_described_by_an_extra_object_info_runs(
    make_sim: MakeSim, tmp_path: Path
) -> None:
    workflow = Workflow.load(DATA / "face_detailer.json")
    request = _request(tmp_path, workflow, inputs={"Face Detailer.denoise": 0.4})
    with make_sim(object_info_files=[DATA / "impact_pack_object_info.json"]) as sim:
        result = await _generate(sim, request)
    assert _size(result) == (320, 384)


@pytest.mark.parametrize(
    ("name", "seed_at"),
    [("sampler_custom_advanced", ("25", "noise_seed")), ("primitive_seed", ("10", "value"))],
)
async def test_custom_sampler_and_wired_seed_workflows_run(
    sim: SimulatorHandle, tmp_path: Path, name: str, seed_at: tuple[str, str]
) -> None:
    result = await _generate(sim, _request(tmp_path, Workflow.load(DATA / f"{name}.json")))
    assert _size(result) == (320, 384)
    async with httpx.AsyncClient(base_url=sim.url, timeout=10) as http:
        entry = (await http.get(f"/history/{result.prompt_id}")).json()[result.prompt_id]
    graph = entry["prompt"][2]  # [number, prompt_id, graph, extra_data, outputs]
    node, name_of_input = seed_at
    assert graph[node]["inputs"][name_of_input] == 11


async def _assert_nothing_posted(sim: SimulatorHandle) -> None:
    async with httpx.AsyncClient(base_url=sim.url, timeout=10) as http:
        queue = (await http.get("/queue")).json()
        history = (await http.get("/history")).json()
    assert queue == {"queue_running": [], "queue_pending": []}
    assert history == {}
