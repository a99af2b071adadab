"""`comfyline validate` finds every problem in one pass, with and without a server: each at
the order field that set the value, with the closest name the server has; every order given is
checked; one exit status (2) for any invalid order; ``ok:`` only for an order without any."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from comfyline.cli import app
from sim_graphs import txt2img
from test_pipeline_support import write_order

LORA = "tiny-lora.safetensors"
CHECKPOINTS = ("tiny-sd15.safetensors", "tiny-sd15-klvae.safetensors")


def _order(tmp_path: Path, name: str, body: str, **files: str) -> Path:
    return write_order(tmp_path / "automation" / "orders", name, body, **files)


def _validate(*args: str) -> Any:
    return CliRunner().invoke(app, ["validate", *args])


def test_every_server_problem_is_reported_at_once_at_its_field(
    make_sim: Any, tmp_path: Path
) -> None:
    order = _order(
        tmp_path,
        "mugs",
        "type: single\n"  # line 2
        "prompt: a mug\n"
        "checkpoint: tiny-sd15.safetensor\n"  # line 4
        "overrides:\n"
        "  sampler: euler_anc\n"  # line 6
        "  scheduler: karas\n"
        "loras:\n"
        "  - name: tiny-lora\n"  # line 9
        "vae: vae-ft-mse.safetensor\n",  # line 10
    )
    with make_sim(checkpoints=CHECKPOINTS, loras=(LORA,), vaes=("vae-ft-mse.safetensors",)) as sim:
        result = _validate("--comfyui", sim.url, str(order))

    assert result.exit_code == 2
    assert result.stdout == ""  # no "ok:" for an order with a problem
    lines = result.stderr.splitlines()
    on = f"on {sim.url}"
    assert lines[:-1] == [
        f"{order}:4:13: checkpoint: 'tiny-sd15.safetensor' is not a checkpoint {on}; did you "
        f"mean 'tiny-sd15.safetensors'? (it has: {', '.join(CHECKPOINTS)}); put it in "
        "ComfyUI's models/checkpoints folder or name one of those",
        f"{order}:6:12: overrides.sampler: 'euler_anc' is not a sampler {on}; did you mean "
        f"'euler_ancestral'? (it has: {lines[1].split('(it has: ')[1]}",
        f"{order}:7:14: overrides.scheduler: 'karas' is not a scheduler {on}; did you mean "
        f"'karras'? (it has: {lines[2].split('(it has: ')[1]}",
        f"{order}:9:11: loras[0].name: 'tiny-lora' is not a LoRA {on}; did you mean "
        f"'{LORA}'? (it has: {LORA}); put it in ComfyUI's models/loras folder or name one of "
        "those",
        f"{order}:10:6: vae: 'vae-ft-mse.safetensor' is not a VAE {on}; did you mean "
        "'vae-ft-mse.safetensors'? (it has: vae-ft-mse.safetensors, pixel_space); put it in "
        "ComfyUI's models/vae folder or name one of those",
    ]
    assert lines[-1] == "5 problem(s) in 1 order(s)"


def test_a_graph_problem_and_a_model_problem_come_together(make_sim: Any, tmp_path: Path) -> None:
    graph = txt2img()
    graph["5"]["inputs"]["width"] = 100_000  # above EmptyLatentImage's maximum
    graph["10"] = {"class_type": "FaceDetailer", "inputs": {}}  # not installed
    order = _order(
        tmp_path,
        "mugs",
        "type: single\nprompt: a mug\ninputs: {'5.width': 100000}\nworkflow: graph.json\n"
        "overrides: {sampler: eulr}\n",
        **{"graph.json": json.dumps(graph)},
    )
    with make_sim() as sim:
        result = _validate("--comfyui", sim.url, str(order))

    assert result.exit_code == 2
    assert result.stdout == ""
    assert "overrides.sampler: 'eulr' is not a sampler" in result.stderr
    assert "did you mean 'euler'?" in result.stderr
    assert "workflow: node type 'FaceDetailer' (node '10') is not installed" in result.stderr
    assert "input 'width': 100000 is above the server's maximum" in result.stderr
    assert result.stderr.splitlines()[-1] == "3 problem(s) in 1 order(s)"


def test_several_orders_are_all_checked_whatever_the_others_hold(
    make_sim: Any, tmp_path: Path
) -> None:
    missing = _order(tmp_path, "a-missing", "type: single\nprompt: a\ncheckpoint: gone.ckpt\n")
    unnamed = _order(tmp_path, "b-unnamed", "type: single\nprompt: b\n")
    good = _order(tmp_path, "c-good", f"type: single\nprompt: c\ncheckpoint: {CHECKPOINTS[0]}\n")
    broken = _order(tmp_path, "d-broken", "type: single\nprompt: d\ncount: 0\n")

    with make_sim(checkpoints=CHECKPOINTS) as sim:
        result = _validate("--comfyui", sim.url, str(tmp_path / "automation" / "orders"))

    assert result.exit_code == 2
    assert result.stdout.splitlines() == [
        f"ok: {good} (single, 1 images, level standard; fits the ComfyUI server at {sim.url}, "
        f"checkpoint {CHECKPOINTS[0]})"
    ]
    lines = result.stderr.splitlines()
    assert lines[0].startswith(f"{missing}:4:13: checkpoint: 'gone.ckpt' is not a checkpoint")
    assert lines[1] == (
        f"{unnamed}: no checkpoint is named and the ComfyUI server at {sim.url} has 2: "
        f"{', '.join(CHECKPOINTS)}; set the order's 'checkpoint:' key (or COMFYLINE_CHECKPOINT "
        "for every order) to one of them"
    )
    assert "--checkpoint" not in result.stderr
    assert lines[2] == f"{broken}:4:8: count: must be at least 1, got 0"
    assert lines[3] == "3 problem(s) in 3 order(s)"


def test_the_checkpoint_setting_settles_an_order_that_names_none(
    make_sim: Any, tmp_path: Path, monkeypatch: Any
) -> None:
    order = _order(tmp_path, "mugs", "type: single\nprompt: a mug\n")
    monkeypatch.setenv("COMFYLINE_CHECKPOINT", CHECKPOINTS[1])
    with make_sim(checkpoints=CHECKPOINTS) as sim:
        result = _validate("--comfyui", sim.url, str(order))

    assert result.exit_code == 0, result.output
    assert result.stdout.endswith(f"checkpoint {CHECKPOINTS[1]})\n")


def test_plain_validate_refuses_a_graph_with_two_samplers(tmp_path: Path) -> None:
    graph = txt2img()
    graph["11"] = {**graph["3"], "inputs": {**graph["3"]["inputs"], "latent_image": ["3", 0]}}
    order = _order(
        tmp_path,
        "mugs",
        "type: single\nprompt: a mug\nworkflow: graph.json\n",
        **{"graph.json": json.dumps(graph)},
    )

    result = _validate(str(order))

    assert result.exit_code == 2
    assert result.stdout == ""
    first = result.stderr.splitlines()[0]
    assert first.startswith(f"{order}:4:11: workflow: the workflow has 2 sampler nodes")
    assert "name one in the order's nodes: {sampler: <title or id>}" in first

    named = _order(
        tmp_path,
        "mugs",
        "type: single\nprompt: a mug\nworkflow: graph.json\nnodes: {sampler: '11'}\n",
        **{"graph.json": json.dumps(graph)},
    )
    assert _validate(str(named)).exit_code == 0


def test_an_unreachable_server_is_not_an_invalid_order(tmp_path: Path) -> None:
    order = _order(tmp_path, "mugs", "type: single\nprompt: a mug\n")

    result = _validate("--comfyui", "http://127.0.0.1:9", str(order))

    assert result.exit_code != 2
    assert "ok:" not in result.stdout


def test_a_missing_checkpoint_from_the_setting_says_where_it_came_from(
    make_sim: Any, tmp_path: Path, monkeypatch: Any
) -> None:
    order = _order(tmp_path, "mugs", "type: single\nprompt: a mug\n")
    monkeypatch.setenv("COMFYLINE_CHECKPOINT", "tiny-sd15")
    with make_sim(checkpoints=CHECKPOINTS) as sim:
        result = _validate("--comfyui", sim.url, str(order))

    assert result.exit_code == 2
    assert result.stderr.splitlines()[0] == (
        f"{order}: 'tiny-sd15' (the checkpoint setting, COMFYLINE_CHECKPOINT) is not a "
        f"checkpoint on {sim.url}; did you mean 'tiny-sd15.safetensors'? (it has: "
        f"{', '.join(CHECKPOINTS)}); put it in ComfyUI's models/checkpoints folder or name one "
        "of those"
    )
