"""Checking filled graphs against a server's /object_info (the recorded one, via the simulator's
node definitions), every problem at once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from comfyline.errors import WorkflowCheckFailed
from comfyline.generation import GenerationRequest
from comfyline.presets import GenerationParams
from comfyline.sim.nodeinfo import load_node_defs
from comfyline.workflows import (
    BUILTIN,
    Graph,
    Workflow,
    build_graph,
    check_graph,
    ensure_graph_fits,
)

DATA = Path(__file__).parent / "data" / "workflows"
SERVER = "http://127.0.0.1:8188"
CKPT = "tiny-sd15.safetensors"


def object_info(**models: Any) -> dict[str, Any]:
    return load_node_defs(checkpoints=(CKPT,), **models)


def filled(workflow: Workflow, **changes: Any) -> Graph:
    params = GenerationParams(width=256, height=256, steps=6, cfg=4.0)
    req = GenerationRequest(
        prompt="a fox",
        seed=1,
        params=params,
        workflow=workflow,
        **changes,
    )
    return build_graph(req, CKPT)


@pytest.mark.parametrize("name", BUILTIN)
def test_shipped_graphs_fit_the_recorded_server(name: str) -> None:
    assert check_graph(filled(Workflow.builtin(name)), object_info(), server=SERVER) == []


def test_custom_node_missing_is_reported_with_how_to_fix() -> None:
    graph = filled(Workflow.load(DATA / "face_detailer.json"))
    problems = check_graph(graph, object_info(), server=SERVER)
    assert problems == [
        f"node type 'FaceDetailer' (node '20') is not installed on the ComfyUI server at {SERVER}: "
        "install its custom node pack or change the workflow",
        f"node type 'UltralyticsDetectorProvider' (node '21') is not installed on the ComfyUI "
        f"server at {SERVER}: install its custom node pack or change the workflow",
        f"node type 'SAMLoader' (node '22') is not installed on the ComfyUI server at {SERVER}: "
        "install its custom node pack or change the workflow",
    ]
    with pytest.raises(WorkflowCheckFailed) as caught:
        ensure_graph_fits(graph, object_info(), server=SERVER)
    assert len(caught.value.problems) == 3 and caught.value.server == SERVER


def test_custom_nodes_described_by_an_extra_object_info_pass() -> None:
    info = load_node_defs(checkpoints=(CKPT,), extra_files=(DATA / "impact_pack_object_info.json",))
    graph = filled(Workflow.load(DATA / "face_detailer.json"))
    assert check_graph(graph, info, server=SERVER) == []


def test_lora_not_on_the_server() -> None:
    graph = filled(Workflow.load(DATA / "lora.json"))
    assert check_graph(graph, object_info(), server=SERVER) == [
        "node '10' (LoraLoader, title 'Load LoRA') input 'lora_name': LoRA "
        "'watercolor_style.safetensors' is not on the server (the server has none); put it in "
        "ComfyUI's models/loras folder or name one that is there"
    ]
    info = object_info(loras=("watercolor_style.safetensors",))
    assert check_graph(graph, info, server=SERVER) == []


def test_upscale_model_not_on_the_server_v3_combo() -> None:
    graph = filled(Workflow.load(DATA / "upscale_model.json"))
    problems = check_graph(graph, object_info(upscale_models=("RealESRGAN_x2.pth",)))
    assert problems == [
        "node '10' (UpscaleModelLoader, title 'Load Upscale Model') input 'model_name': upscale "
        "model '4x-UltraSharp.pth' is not on the server (it has: RealESRGAN_x2.pth); put it in "
        "ComfyUI's models/upscale_models folder or name one that is there"
    ]


def test_every_value_problem_at_once() -> None:
    graph = filled(Workflow.builtin("txt2img"))
    graph["3"]["inputs"].update(steps=0, cfg="lots", sampler_name="euler_z", scheduler="karras")
    graph["4"]["inputs"]["ckpt_name"] = "sdxl.safetensors"
    del graph["5"]["inputs"]["batch_size"]
    graph["5"]["inputs"]["width"] = 20000
    problems = check_graph(graph, object_info(), server=SERVER)
    assert problems == [
        "node '3' (KSampler) input 'steps': 0 is below the server's minimum 1",
        "node '3' (KSampler) input 'cfg': expects a number (FLOAT), got 'lots'",
        "node '3' (KSampler) input 'sampler_name': 'euler_z' is not one of the server's choices "
        "(it has: euler, euler_cfg_pp, euler_ancestral, euler_ancestral_cfg_pp, heun, heunpp2, "
        "dpm_2, dpm_2_ancestral, lms, dpm_fast, dpm_adaptive, dpmpp_2s_ancestral and 30 more)",
        "node '4' (CheckpointLoaderSimple, title 'Load Checkpoint') input 'ckpt_name': checkpoint "
        "'sdxl.safetensors' is not on the server (it has: tiny-sd15.safetensors); put it in "
        "ComfyUI's models/checkpoints folder or name one that is there",
        "node '5' (EmptyLatentImage, title 'Empty Latent Image'): required input 'batch_size' is "
        "missing",
        "node '5' (EmptyLatentImage, title 'Empty Latent Image') input 'width': 20000 is above "
        "the server's maximum 16384",
    ]


def test_link_problems() -> None:
    graph = filled(Workflow.builtin("txt2img"))
    graph["3"]["inputs"]["model"] = ["99", 0]  # no such node
    graph["8"]["inputs"]["vae"] = ["4", 3]  # the loader has 3 outputs
    graph["9"]["inputs"]["images"] = ["5", 0]  # a LATENT where an IMAGE goes
    assert check_graph(graph, object_info(), server=SERVER) == [
        "node '3' (KSampler) input 'model': linked to node '99', which is not in the workflow",
        "node '8' (VAEDecode, title 'VAE Decode') input 'vae': linked to output 3 of node '4' "
        "(CheckpointLoaderSimple, title 'Load Checkpoint'), which has 3 output(s)",
        "node '9' (SaveImage, title 'Save Image') input 'images': expects IMAGE, but is linked "
        "to output 0 of node '5' (EmptyLatentImage, title 'Empty Latent Image'), which gives "
        "LATENT",
    ]


def test_graph_without_output_node() -> None:
    graph = filled(Workflow.builtin("txt2img"))
    del graph["9"]
    assert check_graph(graph, object_info(), server=SERVER) == [
        "the workflow has no output node (SaveImage, PreviewImage...), so ComfyUI would run "
        "nothing: add a Save Image node"
    ]


def test_numeric_strings_pass_as_comfyui_accepts_them() -> None:
    graph = filled(Workflow.builtin("txt2img"))
    graph["3"]["inputs"]["steps"] = "8"
    graph["3"]["inputs"]["denoise"] = 1
    assert check_graph(graph, object_info(), server=SERVER) == []


def test_wired_primitives_and_custom_sampler_fit() -> None:
    for name in ("primitive_seed", "sampler_custom_advanced"):
        graph = filled(Workflow.load(DATA / f"{name}.json"))
        assert check_graph(graph, object_info(), server=SERVER) == [], name
