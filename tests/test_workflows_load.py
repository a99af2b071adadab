"""Loading workflow files: the API format is taken, anything else refused with a way out."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from comfyline.errors import WorkflowError
from comfyline.workflows import BUILTIN, Workflow, parse_graph

DATA = Path(__file__).parent / "data" / "workflows"


@pytest.mark.parametrize("name", BUILTIN)
def test_builtin_graphs_load_with_titles(name: str) -> None:
    workflow = Workflow.builtin(name)
    assert workflow.source == f"builtin:{name}"
    assert all(node["_meta"]["title"] for node in workflow.graph.values())


def test_unknown_builtin_names_the_known_ones() -> None:
    with pytest.raises(WorkflowError, match="txt2img, hires_fix"):
        Workflow.builtin("img2img")


def test_user_graph_loads_with_its_file_name() -> None:
    workflow = Workflow.load(DATA / "lora.json")
    assert (workflow.name, workflow.source) == ("lora", str(DATA / "lora.json"))
    assert workflow.graph["10"]["class_type"] == "LoraLoader"


def test_ui_format_is_refused_with_export_instructions() -> None:
    with pytest.raises(WorkflowError) as caught:
        Workflow.load(DATA / "ui_format.json")
    message = str(caught.value)
    assert "ui_format.json" in message and "UI) format" in message
    assert "Workflow > Export (API)" in message


def test_missing_file_is_a_workflow_error(tmp_path: Path) -> None:
    with pytest.raises(WorkflowError, match="cannot read the workflow file"):
        Workflow.load(tmp_path / "nope.json")


def test_invalid_json_names_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{\n  "3": {"class_type": "KSampler",,}\n}', encoding="utf-8")
    with pytest.raises(WorkflowError, match=r"broken\.json:2:\d+: .*not valid JSON"):
        Workflow.load(path)


def test_every_malformed_node_is_reported_at_once(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"1": {"inputs": {}}, "2": {"class_type": "X"}, "3": 5}), "utf-8")
    with pytest.raises(WorkflowError) as caught:
        Workflow.load(path)
    message = str(caught.value)
    assert "node '1' has no class_type" in message
    assert "node '2' has no 'inputs'" in message
    assert "node '3' is int" in message


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ([], "got a list"),
        ({}, "got an empty object"),
        ({"prompt": {"3": {}}, "client_id": "x"}, "POST /prompt request body"),
    ],
)
def test_not_a_graph(data: object, expected: str) -> None:
    with pytest.raises(WorkflowError, match="API-format|request body") as caught:
        parse_graph(data, "order.yaml workflow")
    assert expected in str(caught.value)


def test_public_surface_is_pinned() -> None:
    import comfyline.workflows as workflows

    assert set(workflows.__all__) == {
        "BUILTIN",
        "ROLES",
        "Assignment",
        "Graph",
        "GraphValues",
        "LoraValues",
        "ObjectInfo",
        "Request",
        "RoleMap",
        "Workflow",
        "add_models",
        "build_graph",
        "check_graph",
        "ensure_graph_fits",
        "fill_graph",
        "map_roles",
        "output_size",
        "parse_graph",
    }
    assert all(hasattr(workflows, name) for name in workflows.__all__)
