"""The order keys for common model features: ``loras``, ``vae`` and ``aspect``.

The graph grows LoraLoader / VAELoader nodes only when asked; the simulator offers and checks
LoRA and VAE names as ComfyUI does; an order using them runs end to end and names them in its
report and PNGs; ``aspect`` keeps each level's pixel count.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from comfyline.errors import OrderError
from comfyline.orders import load, plan
from comfyline.presets import LEVELS
from comfyline.reports.png_metadata import read_text_chunks
from comfyline.schemas.order import ASPECTS, aspect_size
from comfyline.sim import SimConfig, running_simulator
from comfyline.workflows import Workflow
from sim_graphs import txt2img
from test_pipeline_support import output_folder, run_in_process, settings_for, write_order

ROOT = Path(__file__).parent.parent
DOC = (ROOT / "docs" / "ORDER_CONTRACT.md").read_text("utf-8")
LORA, VAE = "tiny-lora.safetensors", "vae-ft-mse.safetensors"


def _order(tmp_path: Path, body: str, **files: str) -> Path:
    return write_order(tmp_path / "automation" / "orders", "mugs", body, **files)


def _graph_of(order_file: Path) -> dict[str, Any]:
    loaded = load(order_file)
    slot = plan(loaded, random_base=0).slots[0]
    from comfyline.orders.graphs import slot_graph_request

    return slot_graph_request(loaded, slot).graph()


def _by_class(graph: dict[str, Any], class_type: str) -> list[str]:
    return [i for i, node in graph.items() if node["class_type"] == class_type]


# -- the graph ---------------------------------------------------------------------------------


def test_an_order_without_models_keeps_the_shipped_graph(tmp_path: Path) -> None:
    plain = _order(tmp_path, "type: single\nprompt: a mug\n")

    graph = _graph_of(plain)

    assert load(plain).workflow is None  # the default txt2img, untouched
    assert set(graph) == set(Workflow.builtin("txt2img").graph)
    assert not _by_class(graph, "LoraLoader") and not _by_class(graph, "VAELoader")


def test_loras_and_vae_are_wired_between_the_checkpoint_and_its_users(tmp_path: Path) -> None:
    order = _order(
        tmp_path,
        "type: single\nprompt: a mug\n"
        f"loras:\n  - {{name: {LORA}, strength: 0.6}}\n  - {{name: b.safetensors, strength: 1, "
        f"clip_strength: 0.25}}\nvae: {VAE}\n",
    )

    graph = _graph_of(order)

    first, second = _by_class(graph, "LoraLoader")
    (checkpoint,) = _by_class(graph, "CheckpointLoaderSimple")
    (vae,) = _by_class(graph, "VAELoader")
    assert graph[first]["inputs"] == {
        "lora_name": LORA,
        "strength_model": 0.6,
        "strength_clip": 0.6,
        "model": [checkpoint, 0],
        "clip": [checkpoint, 1],
    }
    assert graph[second]["inputs"]["model"] == [first, 0]
    assert graph[second]["inputs"]["clip"] == [first, 1]
    assert graph[second]["inputs"]["strength_clip"] == 0.25
    assert graph[vae]["inputs"] == {"vae_name": VAE}
    (sampler,) = _by_class(graph, "KSampler")
    assert graph[sampler]["inputs"]["model"] == [second, 0]
    for encoder in _by_class(graph, "CLIPTextEncode"):
        assert graph[encoder]["inputs"]["clip"] == [second, 1]
    (decode,) = _by_class(graph, "VAEDecode")
    assert graph[decode]["inputs"]["vae"] == [vae, 0]


def test_a_custom_workflow_gets_the_loras_after_its_checkpoint_loader(tmp_path: Path) -> None:
    body = "type: single\nprompt: a mug\nworkflow: graph.json\nloras: [" + LORA + "]\n"
    order = _order(tmp_path, body, **{"graph.json": json.dumps(txt2img())})

    graph = _graph_of(order)

    (lora,) = _by_class(graph, "LoraLoader")
    assert graph[lora]["inputs"]["model"] == ["4", 0]
    assert graph[lora]["inputs"]["strength_model"] == 1.0
    assert graph["3"]["inputs"]["model"] == [lora, 0]


def test_a_workflow_without_a_checkpoint_loader_refuses_loras(tmp_path: Path) -> None:
    custom = txt2img()
    custom["4"] = {"class_type": "UNETLoader", "inputs": {"unet_name": "flux.safetensors"}}
    body = f"type: single\nprompt: a mug\nworkflow: graph.json\nloras: [{LORA}]\n"
    order = _order(tmp_path, body, **{"graph.json": json.dumps(custom)})

    with pytest.raises(OrderError) as caught:
        load(order)

    (problem,) = caught.value.problems
    assert problem.field == "loras"
    assert "no checkpoint loader" in problem.message
    assert "add LoraLoader / VAELoader nodes to the graph itself" in problem.message


@pytest.mark.parametrize(
    ("where", "body"),
    [
        ("prompt", "type: single\nprompt: a mug <lora:detail:0.6>\n"),
        ("negative", "type: single\nprompt: a mug\nnegative: <lora:bad:1>\n"),
        ("template", "type: variations\ntemplate: a {c} mug <lora:x:1>\nvariables: {c: [red]}\n"),
        ("prompts[0].prompt", "type: list\nprompts: ['a mug <LORA:detail>']\n"),
        ("variables.c[0]", "type: variations\ntemplate: a {c} mug\nvariables: {c: ['<lora:x>']}\n"),
    ],
)
def test_an_a1111_lora_tag_is_refused_with_the_loras_key(
    tmp_path: Path, where: str, body: str
) -> None:
    with pytest.raises(OrderError) as caught:
        load(_order(tmp_path, body))

    (problem,) = caught.value.problems
    assert problem.field == where
    assert "ComfyUI reads it as plain text" in problem.message
    assert "loras: [{name: " in problem.message


def test_a_lora_listed_twice_and_aspect_with_a_width_are_refused(tmp_path: Path) -> None:
    body = (
        f"type: single\nprompt: a mug\naspect: 3:2\noverrides: {{width: 512}}\n"
        f"loras: [{LORA}, {LORA}]\n"
    )
    with pytest.raises(OrderError) as caught:
        load(_order(tmp_path, body))

    messages = {p.field: p.message for p in caught.value.problems}
    assert "remove overrides.width" in messages["overrides.width"]
    assert f"LoRA {LORA!r} is listed twice" in messages["loras[1]"]


# -- aspect --------------------------------------------------------------------------------------


@pytest.mark.parametrize("level", list(LEVELS))
@pytest.mark.parametrize("aspect", list(ASPECTS))
def test_aspect_keeps_the_level_pixel_count_in_multiples_of_8(
    tmp_path: Path, level: str, aspect: str
) -> None:
    order = _order(tmp_path, f"type: single\nprompt: a mug\nquality: {level}\naspect: {aspect}\n")

    params = load(order).order.params

    side = LEVELS[level].params.width
    across, down = ASPECTS[aspect]
    assert params.width % 8 == 0 and params.height % 8 == 0
    assert abs(params.width * params.height / side**2 - 1) < 0.02
    assert abs(params.width / params.height - across / down) < 0.05
    # The table in the docs says the same sizes.
    row = re.search(rf"^\| `{level}` \|(.*)\|$", DOC.split("### LoRAs, VAE and aspect")[1], re.M)
    assert row is not None
    cells = [c.strip() for c in row.group(1).split("|")]
    assert cells[list(ASPECTS).index(aspect)] == f"{params.width}×{params.height}"


def test_aspect_size_rounds_each_side_to_the_nearest_multiple_of_8() -> None:
    assert aspect_size(320, "3:2") == (392, 264)  # 391.9 x 261.3
    assert aspect_size(320, "16:9") == (424, 240)  # 426.7 x 240
    assert aspect_size(512, "1:1") == (512, 512)


def test_quoted_and_unquoted_aspect_are_the_same_and_others_refused(tmp_path: Path) -> None:
    unquoted = load(_order(tmp_path, "type: single\nprompt: a mug\naspect: 16:9\n"))
    quoted = load(_order(tmp_path, 'type: single\nprompt: a mug\naspect: "16:9"\n'))
    assert unquoted.order.aspect == quoted.order.aspect == "16:9"

    with pytest.raises(OrderError) as caught:
        load(_order(tmp_path, "type: single\nprompt: a mug\naspect: 4:3\n"))
    assert "allowed: 1:1, 3:2, 2:3, 16:9, 9:16" in str(caught.value)


# -- the simulator -------------------------------------------------------------------------------


def _with_models(lora: str, vae: str) -> dict[str, Any]:
    graph = txt2img()
    graph["20"] = {
        "class_type": "LoraLoader",
        "inputs": {
            "lora_name": lora,
            "strength_model": 0.5,
            "strength_clip": 0.5,
            "model": ["4", 0],
            "clip": ["4", 1],
        },
    }
    graph["21"] = {"class_type": "VAELoader", "inputs": {"vae_name": vae}}
    graph["3"]["inputs"]["model"] = ["20", 0]
    graph["8"]["inputs"]["vae"] = ["21", 0]
    return graph


def test_the_simulator_lists_and_checks_loras_and_vaes_like_comfyui(make_sim: Any) -> None:
    with make_sim(loras=(LORA,), vaes=(VAE,)) as sim:
        info = httpx.get(sim.url + "/object_info").json()
        vaes = httpx.get(sim.url + "/api/models/vae").json()
        accepted = httpx.post(sim.url + "/prompt", json={"prompt": _with_models(LORA, VAE)})
        refused = httpx.post(
            sim.url + "/prompt", json={"prompt": _with_models("missing.safetensors", "nope")}
        )

    assert info["LoraLoader"]["input"]["required"]["lora_name"][0] == [LORA]
    # ComfyUI lists the VAE files, then "pixel_space" (as in the recorded object_info).
    assert info["VAELoader"]["input"]["required"]["vae_name"][0] == [VAE, "pixel_space"]
    assert vaes == [VAE]
    assert accepted.status_code == 200, accepted.text
    assert refused.status_code == 400
    errors = refused.json()["node_errors"]
    assert errors["20"]["errors"][0]["type"] == "value_not_in_list"
    assert errors["20"]["errors"][0]["details"].startswith("lora_name: 'missing.safetensors' not")
    assert errors["21"]["errors"][0]["type"] == "value_not_in_list"


def test_an_order_with_loras_vae_and_aspect_runs_on_the_simulator(tmp_path: Path) -> None:
    order = _order(
        tmp_path,
        "type: single\nquality: preview\ncount: 2\nprompt: a mug\naspect: 3:2\n"
        f"loras:\n  - name: {LORA}\n    strength: 0.6\nvae: {VAE}\n",
    )
    out = tmp_path / "out"
    config = SimConfig(output_dir=tmp_path / "comfy-out", loras=(LORA,), vaes=(VAE,))
    with running_simulator(config) as sim:
        report, printed = run_in_process(order, settings_for(sim.url, out))

    assert report.totals.succeeded == 2, printed
    assert report.parameters["loras"] == [{"name": LORA, "strength": 0.6, "clip_strength": 0.6}]
    assert report.parameters["vae"] == VAE
    assert (report.parameters["width"], report.parameters["height"]) == (312, 208)
    folder = output_folder(order, out)
    for entry in report.images:
        chunks = read_text_chunks(folder / entry.file)
        ours = json.loads(chunks["comfyline"])
        assert ours["loras"] == report.parameters["loras"]
        assert ours["vae"] == VAE
        assert f"VAE: {VAE}" in chunks["parameters"]
        assert f'LoRAs: "{LORA}:0.6:0.6"' in chunks["parameters"]
        ran = json.loads(chunks["prompt"])  # the graph ComfyUI ran
        assert [n["inputs"]["lora_name"] for n in ran.values() if n["class_type"] == "LoraLoader"]
        assert [n for n in ran.values() if n["class_type"] == "VAELoader"]
        assert (entry.width, entry.height) == (312, 208)
