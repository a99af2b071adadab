"""Checks against a REAL ComfyUI server, skipped unless ``REAL_COMFYUI_URL`` names one.

    REAL_COMFYUI_URL=http://127.0.0.1:8188 bash scripts/test.sh -m real

They make a handful of small images (a CPU server with a tiny checkpoint is enough: see
``shared/real-comfyui.md`` beside the project), so they take a minute or two there.
"""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path

import pytest
from PIL import Image

from comfyline import pipeline
from comfyline.comfy import ComfyUIAdapter
from comfyline.errors import ModelNotFound, WorkflowCheckFailed
from comfyline.generation import GenerationRequest
from comfyline.preflight import resolve_checkpoint
from comfyline.presets import params_for
from comfyline.settings import Settings
from comfyline.workflows import Workflow, ensure_graph_fits

URL = os.environ.get("REAL_COMFYUI_URL", "")
ORDERS = Path(__file__).parent.parent / "automation" / "orders"
WORKFLOWS = Path(__file__).parent / "data" / "workflows"

pytestmark = [
    pytest.mark.real,
    pytest.mark.skipif(not URL, reason="set REAL_COMFYUI_URL to run against a real ComfyUI"),
]


async def test_adapter_generates_a_checked_image(tmp_path: Path) -> None:
    async with ComfyUIAdapter(Settings(comfyui_url=URL)) as comfy:
        stats = await comfy.check_ready()
        checkpoint = resolve_checkpoint(await comfy.object_info(), None, comfy.url)
        request = GenerationRequest(
            prompt="a red apple",
            seed=11,
            params=params_for("preview", steps=2),
            checkpoint=checkpoint,
        )
        result = await comfy.generate(request)
    assert "comfyui_version" in stats["system"]
    assert result.ok and len(result.images) == 1
    with Image.open(io.BytesIO(result.images[0].data)) as image:
        assert image.size == (256, 256)


async def test_missing_checkpoint_lists_the_real_ones() -> None:
    async with ComfyUIAdapter(Settings(comfyui_url=URL)) as comfy:
        with pytest.raises(ModelNotFound, match="available: "):
            resolve_checkpoint(await comfy.object_info(), "no-such-model.safetensors", comfy.url)


async def test_a_missing_custom_node_is_found_before_any_image() -> None:
    graph = Workflow.load(WORKFLOWS / "face_detailer.json").graph
    async with ComfyUIAdapter(Settings(comfyui_url=URL)) as comfy:
        with pytest.raises(WorkflowCheckFailed, match="'FaceDetailer'.*is not installed"):
            ensure_graph_fits(graph, await comfy.object_info(), server=comfy.url)


@pytest.mark.parametrize("workflow", ["builtin:txt2img", "builtin:hires_fix"])
async def test_shipped_workflows_run_as_orders(workflow: str, tmp_path: Path) -> None:
    order_dir = tmp_path / "orders" / "real-check"
    order_dir.mkdir(parents=True)
    shutil.copy(ORDERS / "hires-landscape" / "project.yaml", order_dir / "project.yaml")
    text = (order_dir / "project.yaml").read_text()
    text = text.replace("id: hires-landscape", "id: real-check")
    text = text.replace("workflow: builtin:hires_fix", f"workflow: {workflow}")
    (order_dir / "project.yaml").write_text(text)
    settings = Settings(comfyui_url=URL, output_root=tmp_path / "out", pause_s=0)
    report = await pipeline.generate(order_dir / "project.yaml", settings=settings)
    assert report.totals.succeeded == 2 and report.totals.failed == 0
    size = 384 if workflow.endswith("hires_fix") else 256
    saved = json.loads((tmp_path / "out" / "real-check" / "generation_report.json").read_text())
    for image in saved["images"]:
        with Image.open(tmp_path / "out" / "real-check" / image["file"]) as png:
            assert png.size == (size, size)
