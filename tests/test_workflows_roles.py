"""Filling graphs by node role: the shipped graphs and realistic user graphs (API format)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from comfyline.errors import WorkflowError
from comfyline.generation import GenerationRequest
from comfyline.presets import GenerationParams
from comfyline.workflows import Workflow, build_graph, map_roles, output_size

DATA = Path(__file__).parent / "data" / "workflows"


def request(workflow: Workflow | None = None, **changes: Any) -> GenerationRequest:
    params = GenerationParams(
        width=320,
        height=384,
        steps=9,
        cfg=5.5,
        sampler="dpmpp_2m",
        scheduler="karras",
        batch_size=2,
        denoise=1.0,
    )
    fields: dict[str, Any] = {
        "prompt": "a red fox",
        "seed": 77,
        "params": params,
        "negative": "blurry",
        "filename_prefix": "order-1/img",
        "workflow": workflow,
    }
    return GenerationRequest(**{**fields, **changes})


def user(name: str) -> Workflow:
    return Workflow.load(DATA / f"{name}.json")


def test_txt2img_gets_every_value() -> None:
    graph = build_graph(request(), "tiny-sd15.safetensors")
    assert graph["3"]["inputs"] | {"model": None} == {
        "seed": 77,
        "steps": 9,
        "cfg": 5.5,
        "sampler_name": "dpmpp_2m",
        "scheduler": "karras",
        "denoise": 1.0,
        "model": None,
        "positive": ["6", 0],
        "negative": ["7", 0],
        "latent_image": ["5", 0],
    }
    assert graph["4"]["inputs"]["ckpt_name"] == "tiny-sd15.safetensors"
    assert graph["5"]["inputs"] == {"width": 320, "height": 384, "batch_size": 2}
    assert (graph["6"]["inputs"]["text"], graph["7"]["inputs"]["text"]) == ("a red fox", "blurry")
    assert graph["9"]["inputs"]["filename_prefix"] == "order-1/img"
    assert output_size(graph) == (320, 384)


def test_building_leaves_the_workflow_untouched() -> None:
    workflow = Workflow.builtin("txt2img")
    before = json.dumps(workflow.graph)
    build_graph(request(workflow), "x.safetensors")
    assert json.dumps(workflow.graph) == before


def test_hires_fix_order_size_is_the_first_pass_and_output_is_scaled() -> None:
    graph = build_graph(request(Workflow.builtin("hires_fix")), "tiny-sd15.safetensors")
    assert graph["5"]["inputs"]["width"] == 320
    assert graph["3"]["inputs"]["seed"] == 77 and graph["3"]["inputs"]["steps"] == 9
    # The hires pass keeps its own values.
    assert graph["11"]["inputs"]["denoise"] == 0.5 and graph["11"]["inputs"]["steps"] == 8
    assert output_size(graph) == (480, 576)


def test_hires_fix_pass_reached_by_override() -> None:
    req = request(Workflow.builtin("hires_fix"), inputs={"Hires pass.steps": 12, "10.scale_by": 2})
    graph = build_graph(req, None)
    assert graph["11"]["inputs"]["steps"] == 12
    assert graph["4"]["inputs"]["ckpt_name"] == "model.safetensors"  # None keeps the graph's
    assert output_size(graph) == (640, 768)


def test_lora_graph_keeps_the_lora_and_fills_the_rest() -> None:
    graph = build_graph(request(user("lora")), "tiny-sd15.safetensors")
    assert graph["10"]["inputs"]["lora_name"] == "watercolor_style.safetensors"
    assert graph["6"]["inputs"]["text"] == "a red fox"
    assert graph["3"]["inputs"]["model"] == ["10", 0]
    assert graph["4"]["inputs"]["ckpt_name"] == "tiny-sd15.safetensors"


def test_upscale_model_graph_has_no_known_output_size() -> None:
    graph = build_graph(request(user("upscale_model")), "tiny-sd15.safetensors")
    assert graph["9"]["inputs"]["filename_prefix"] == "order-1/img"
    assert output_size(graph) is None  # the model's factor is only known to its file


def test_two_samplers_without_a_name_is_an_error_listing_both() -> None:
    with pytest.raises(WorkflowError) as caught:
        build_graph(request(user("hires_two_samplers")), "x")
    message = str(caught.value)
    assert "2 sampler nodes" in message
    assert "'3' (KSampler, title 'Base')" in message
    assert "'12' (KSampler, title 'Hires pass')" in message
    assert "nodes: {sampler:" in message


@pytest.mark.parametrize("name", ["Base", "3"])
def test_two_samplers_named_by_title_or_id(name: str) -> None:
    graph = build_graph(request(user("hires_two_samplers"), nodes={"sampler": name}), "x")
    assert graph["3"]["inputs"]["seed"] == 77 and graph["3"]["inputs"]["steps"] == 9
    assert graph["12"]["inputs"]["seed"] == 2002 and graph["12"]["inputs"]["denoise"] == 0.45
    assert output_size(graph) == (768, 768)


def test_sampler_custom_advanced_values_go_to_its_component_nodes() -> None:
    graph = build_graph(request(user("sampler_custom_advanced")), "x")
    assert graph["25"]["inputs"]["noise_seed"] == 77
    assert graph["22"]["inputs"]["cfg"] == 5.5
    assert graph["16"]["inputs"]["sampler_name"] == "dpmpp_2m"
    assert graph["17"]["inputs"] | {"model": None} == {
        "scheduler": "karras",
        "steps": 9,
        "denoise": 1.0,
        "model": None,
    }
    assert (graph["6"]["inputs"]["text"], graph["7"]["inputs"]["text"]) == ("a red fox", "blurry")
    assert output_size(graph) == (320, 384)


def test_wired_values_are_set_where_they_live() -> None:
    graph = build_graph(request(user("primitive_seed")), "x")
    assert graph["3"]["inputs"]["seed"] == ["10", 0]
    assert graph["10"]["inputs"]["value"] == 77
    assert graph["6"]["inputs"]["text"] == ["11", 0]
    assert graph["11"]["inputs"]["value"] == "a red fox"
    # Followed through conditioning nodes to the negative encoder.
    assert graph["7"]["inputs"]["text"] == "blurry"


def test_override_reaches_any_input_by_title() -> None:
    req = request(
        user("face_detailer"), inputs={"Face Detailer.denoise": 0.4, "21.model_name": "m"}
    )
    graph = build_graph(req, "x")
    assert graph["20"]["inputs"]["denoise"] == 0.4
    assert graph["21"]["inputs"]["model_name"] == "m"
    assert graph["3"]["inputs"]["seed"] == 77  # the face detailer is not a sampler candidate


def test_override_title_with_dots_splits_at_the_last_dot() -> None:
    workflow = user("lora")
    workflow.graph["10"]["_meta"]["title"] = "LoRA v1.5"
    graph = build_graph(request(workflow, inputs={"LoRA v1.5.strength_model": 0.3}), "x")
    assert graph["10"]["inputs"]["strength_model"] == 0.3


@pytest.mark.parametrize(
    ("inputs", "expected"),
    [
        ({"Face Fixer.denoise": 0.4}, "no node with id or title 'Face Fixer'"),
        ({"Face Detailer.strength": 0.4}, "has no input 'strength'; its inputs are"),
        ({"denoise": 0.4}, "write '<node title or id>.<input name>'"),
        ({"CLIP Text Encode (Prompt).text": "x"}, "2 nodes have the title"),
    ],
)
def test_bad_override_names_list_what_exists(inputs: dict[str, Any], expected: str) -> None:
    with pytest.raises(WorkflowError, match="inputs") as caught:
        build_graph(request(user("face_detailer"), inputs=inputs), "x")
    assert expected in str(caught.value)


def test_unknown_input_message_lists_the_inputs() -> None:
    with pytest.raises(WorkflowError) as caught:
        build_graph(request(inputs={"KSampler.strength": 1}), "x")
    assert "'seed', 'steps', 'cfg'" in str(caught.value)


def test_unknown_node_message_lists_the_nodes() -> None:
    with pytest.raises(WorkflowError) as caught:
        build_graph(request(inputs={"Refiner.steps": 1}), "x")
    assert "'3' (KSampler)" in str(caught.value) and "'9' (SaveImage" in str(caught.value)


def test_unknown_role_name_is_an_error() -> None:
    with pytest.raises(WorkflowError, match="unknown role.*'refiner'"):
        build_graph(request(nodes={"refiner": "3"}), "x")


def test_named_role_that_matches_nothing_is_an_error() -> None:
    with pytest.raises(WorkflowError, match=r"nodes\.sampler: .*no node .*'Refiner'"):
        build_graph(request(user("hires_two_samplers"), nodes={"sampler": "Refiner"}), "x")


def test_ambiguous_positive_prompt_is_settled_by_naming_it() -> None:
    workflow = Workflow.builtin("txt2img")
    graph = workflow.graph
    graph["20"] = {
        "class_type": "CLIPTextEncode",
        "inputs": {"text": "oil painting", "clip": ["4", 1]},
        "_meta": {"title": "Style"},
    }
    graph["21"] = {
        "class_type": "ConditioningCombine",
        "inputs": {"conditioning_1": ["6", 0], "conditioning_2": ["20", 0]},
    }
    graph["3"]["inputs"]["positive"] = ["21", 0]
    with pytest.raises(WorkflowError, match="positive prompt .*'6'.*'20'"):
        build_graph(request(workflow), "x")
    filled = build_graph(request(workflow, nodes={"positive": "6"}), "x")
    assert filled["6"]["inputs"]["text"] == "a red fox"
    assert filled["20"]["inputs"]["text"] == "oil painting"


def test_negative_prompt_without_a_negative_input_is_an_error() -> None:
    workflow = user("sampler_custom_advanced")
    graph = workflow.graph
    graph["22"] = {
        "class_type": "BasicGuider",
        "inputs": {"model": ["4", 0], "conditioning": ["6", 0]},
    }
    del graph["7"]
    with pytest.raises(WorkflowError, match="negative prompt.*takes none"):
        build_graph(request(workflow), "x")
    filled = build_graph(request(workflow, negative=""), "x")
    assert filled["6"]["inputs"]["text"] == "a red fox"
    assert "cfg" not in filled["22"]["inputs"]  # BasicGuider has no CFG: the graph keeps its own


def test_denoise_with_nowhere_to_go_is_an_error() -> None:
    workflow = Workflow.builtin("txt2img")
    inputs = workflow.graph["3"]["inputs"]
    workflow.graph["3"]["class_type"] = "KSamplerAdvanced"
    inputs["noise_seed"] = inputs.pop("seed")
    del inputs["denoise"]
    params = request().params.model_copy(update={"denoise": 0.6})
    with pytest.raises(WorkflowError, match="no denoise input"):
        build_graph(request(workflow, params=params), "x")
    assert build_graph(request(workflow), "x")["3"]["inputs"]["noise_seed"] == 77


def test_no_sampler_is_an_error_naming_the_known_types() -> None:
    workflow = Workflow.builtin("txt2img")
    del workflow.graph["3"]
    with pytest.raises(WorkflowError, match="no sampler node .*KSampler, KSamplerAdvanced"):
        build_graph(request(workflow), "x")


def test_two_save_nodes_need_a_name() -> None:
    workflow = Workflow.builtin("txt2img")
    workflow.graph["10"] = {
        "class_type": "SaveImage",
        "inputs": {"images": ["8", 0], "filename_prefix": "copy"},
    }
    with pytest.raises(WorkflowError, match="2 save nodes"):
        build_graph(request(workflow), "x")
    graph = build_graph(request(workflow, nodes={"save": "10"}), "x")
    assert (graph["10"]["inputs"]["filename_prefix"], graph["9"]["inputs"]["filename_prefix"]) == (
        "order-1/img",
        "comfyline/img",
    )


def test_a_seed_node_with_several_inputs_needs_an_explicit_override() -> None:
    workflow = user("primitive_seed")
    workflow.graph["10"] = {"class_type": "SeedGenerator", "inputs": {"base": 1, "offset": 2}}
    with pytest.raises(WorkflowError, match="cannot tell which of its inputs"):
        build_graph(request(workflow), "x")


def test_map_roles_reports_the_nodes() -> None:
    roles = map_roles(user("hires_two_samplers").graph, {"sampler": "Hires pass"})
    assert (roles.sampler, roles.positive, roles.negative) == ("12", "6", "7")
    assert (roles.latent, roles.checkpoint, roles.save) == ("5", "4", "9")


def test_builtin_hires_fix_roles_can_be_overridden_by_the_order() -> None:
    req = request(Workflow.builtin("hires_fix"), nodes={"sampler": "Hires pass"})
    graph = build_graph(req, "x")
    assert graph["11"]["inputs"]["seed"] == 77 and graph["3"]["inputs"]["seed"] == 0
