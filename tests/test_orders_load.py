"""load_order: valid orders load into the right model; problems are located and complete."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from comfyline.errors import OrderError
from comfyline.ledger import ORDER_TRANSITIONS, OrderState, can_transition
from comfyline.orders import load_order, plan
from comfyline.presets import params_for
from comfyline.schemas.order import (
    ListOrder,
    SingleOrder,
    VariationsOrder,
    order_adapter,
)

EXAMPLES = Path(__file__).parent.parent / "automation" / "orders"


def write_order(root: Path, text: str, name: str = "demo", **files: str) -> Path:
    folder = root / "automation" / "orders" / name
    folder.mkdir(parents=True)
    (folder / "project.yaml").write_text(text, "utf-8")
    for file_name, content in files.items():
        (folder / file_name.replace("__", ".")).write_text(content, "utf-8")
    return folder / "project.yaml"


def problems_of(path: Path) -> list[str]:
    with pytest.raises(OrderError) as caught:
        load_order(path)
    return [str(p).replace(f"{path.parent}/", "") for p in caught.value.problems]


@pytest.mark.parametrize("example", sorted(p.name for p in EXAMPLES.iterdir()))
def test_every_example_order_loads_and_plans(example: str) -> None:
    path = EXAMPLES / example / "project.yaml"

    order = load_order(path)
    planned = plan(order, path.parent, random_base=1)

    assert order.id == example
    assert planned.images >= 1


def test_every_order_type_has_an_example() -> None:
    kinds = {load_order(EXAMPLES / p.name / "project.yaml").type for p in EXAMPLES.iterdir()}
    assert kinds == {"single", "variations", "list"}


def test_a_minimal_single_order_gets_documented_defaults(tmp_path: Path) -> None:
    order = load_order(write_order(tmp_path, "id: demo\ntype: single\nprompt: a cat\n"))

    assert isinstance(order, SingleOrder)
    assert (order.count, order.quality, order.seed.mode, order.output_folder) == (
        1,
        "standard",
        "random",
        "demo",
    )
    assert order.output.naming == "{index:04d}_{seed}"
    assert order.params == params_for("standard")


def test_overrides_apply_on_top_of_the_level(tmp_path: Path) -> None:
    text = "id: demo\ntype: single\nprompt: a cat\nquality: high\noverrides: {steps: 20, cfg: 7}\n"
    order = load_order(write_order(tmp_path, text))

    assert order.params == params_for("high", steps=20, cfg=7.0)


def test_every_problem_is_reported_at_once_in_file_order(tmp_path: Path) -> None:
    text = (
        "id: demo\n"
        "type: variations\n"
        "template: a {colour} {animl}\n"
        "variables:\n"
        "  colour: [red, true]\n"
        "  animal: [cat]\n"
        "quality: ultra\n"
        "sed: 3\n"
    )
    assert problems_of(write_order(tmp_path, text)) == [
        "project.yaml:5:17: variables.colour[1]: must be text or a number, got bool True",
        "project.yaml:7:10: quality: 'ultra' is not allowed (allowed: preview, standard, high, "
        "max, experimental)",
        "project.yaml:8:1: sed: unknown key 'sed' (did you mean 'seed'?) (allowed: id, title, "
        "description, quality, overrides, count, negative, profiles, profiles_file, checkpoint, "
        "seed, output, sale, workflow, nodes, inputs, type, template, variables, mode, sample)",
    ]


def test_rules_across_fields_are_reported_together(tmp_path: Path) -> None:
    # They run once every field on its own is valid (pydantic checks fields first).
    text = (
        "id: demo\n"
        "type: variations\n"
        "template: a {colour} {animl}\n"
        "variables:\n"
        "  colour: [red, red]\n"
        "  animal: [cat]\n"
    )
    assert problems_of(write_order(tmp_path, text)) == [
        "project.yaml:3:11: template: placeholder {animl} is not defined in variables (did you "
        "mean 'animal'?) (defined: colour, animal)",
        "project.yaml:5:17: variables.colour[1]: value 'red' is listed twice",
        "project.yaml:6:11: variables.animal: variable 'animal' is not used in the template: use "
        "it as {animal} or remove it",
    ]


def test_id_must_match_the_file_name_outside_the_project_layout(tmp_path: Path) -> None:
    path = tmp_path / "cats.yaml"
    path.write_text("id: dogs\ntype: single\nprompt: a cat\n")

    with pytest.raises(OrderError) as caught:
        load_order(path)

    assert str(caught.value) == (
        f"{path}:1:5: id: id 'dogs' does not match its file name 'cats.yaml': the id names the "
        "order's folder (automation/orders/<id>/project.yaml); rename one"
    )
    path.write_text("id: cats\ntype: single\nprompt: a cat\n")
    assert load_order(path).id == "cats"


def test_shared_profiles_file_adds_and_replaces_profiles(tmp_path: Path) -> None:
    (tmp_path / "automation").mkdir()
    (tmp_path / "automation" / "profiles.yaml").write_text(
        "portrait:\n  prompt: my face words\nsoft:\n  negative: harsh light\n"
    )
    path = write_order(
        tmp_path,
        "id: demo\ntype: single\nprompt: a man\nprofiles: [portrait, soft]\n"
        "seed: {mode: fixed, base: 1}\n",
    )

    slot = plan(load_order(path), path.parent).slots[0]

    assert (slot.prompt, slot.negative) == ("a man, my face words", "harsh light")


def test_profiles_file_beside_the_order_wins_over_the_shared_one(tmp_path: Path) -> None:
    (tmp_path / "automation").mkdir()
    (tmp_path / "automation" / "profiles.yaml").write_text("soft:\n  prompt: shared\n")
    text = "id: demo\ntype: single\nprompt: a man\nprofiles: [soft]\nprofiles_file: mine.yaml\n"
    path = write_order(tmp_path, text, mine__yaml="soft:\n  prompt: mine\n")

    slot = plan(load_order(path), path.parent, random_base=3).slots[0]

    assert slot.prompt == "a man, mine"


def test_an_invalid_shared_profiles_file_is_reported_in_that_file(tmp_path: Path) -> None:
    (tmp_path / "automation").mkdir()
    shared = tmp_path / "automation" / "profiles.yaml"
    shared.write_text("Bad Name:\n  prompt: x\nempty: {}\n")
    path = write_order(tmp_path, "id: demo\ntype: single\nprompt: a\nprofiles: [portrait]\n")

    with pytest.raises(OrderError) as caught:
        load_order(path)

    assert [str(p) for p in caught.value.problems] == [
        f"{shared}:1:1: Bad Name: 'Bad Name' is not a valid profile name: use lower-case "
        "letters, digits, '_' or '-'",
        f"{shared}:3:8: empty: a profile must add a prompt, a negative, or both",
    ]


def test_a_workflow_inside_the_project_is_accepted(tmp_path: Path) -> None:
    graphs = tmp_path / "automation" / "workflows"
    graphs.mkdir(parents=True)
    (graphs / "g.json").write_text('{"1": {"class_type": "KSampler", "inputs": {}}}', "utf-8")
    text = "id: demo\ntype: single\nprompt: a\nworkflow: ../../workflows/g.json\n"

    order = load_order(write_order(tmp_path, text))

    assert order.workflow == "../../workflows/g.json"


def test_list_entries_may_be_text_or_mappings(tmp_path: Path) -> None:
    text = (
        "id: demo\ntype: list\nprompts:\n  - a cat\n  - {prompt: a dog, seed: 5, keywords: [dog]}\n"
    )
    order = load_order(write_order(tmp_path, text))

    assert isinstance(order, ListOrder)
    assert order.prompts is not None
    assert [(e.prompt, e.seed, e.keywords) for e in order.prompts] == [
        ("a cat", None, ()),
        ("a dog", 5, ("dog",)),
    ]


def test_variation_values_may_be_numbers_but_not_booleans(tmp_path: Path) -> None:
    text = "id: demo\ntype: variations\ntemplate: '{n} cats'\nvariables: {n: [2, 3.5]}\n"
    order = load_order(write_order(tmp_path, text))
    assert isinstance(order, VariationsOrder)
    assert order.variables == {"n": ("2", "3.5")}

    text = "id: demo2\ntype: variations\ntemplate: '{n} cats'\nvariables: {n: [yes]}\n"
    assert problems_of(write_order(tmp_path, text, name="demo2")) == [
        "project.yaml:4:17: variables.n[0]: must be text or a number, got bool True"
    ]


def test_the_models_are_frozen_and_strict() -> None:
    order = order_adapter.validate_python({"id": "x", "type": "single", "prompt": "a"})
    with pytest.raises(ValidationError):
        order.count = 3  # type: ignore[misc]
    with pytest.raises(ValidationError):
        order_adapter.validate_python({"id": "x", "type": "single", "prompt": "a", "count": "3"})


def test_rules_raised_outside_load_order_read_well() -> None:
    with pytest.raises(ValidationError) as caught:
        order_adapter.validate_python(
            {"id": "x", "type": "single", "prompt": "a", "output": {"naming": "{seed}"}}
        )
    assert "naming: must contain {index} or {number}" in str(caught.value)


def test_life_cycle_allows_the_documented_moves_only() -> None:
    assert [s.value for s in OrderState] == [
        "new",
        "validated",
        "queued",
        "running",
        "completed",
        "partial",
        "failed",
        "cancelled",
    ]
    assert can_transition(OrderState.NEW, OrderState.VALIDATED)
    assert can_transition(OrderState.RUNNING, OrderState.PARTIAL)
    assert can_transition(OrderState.CANCELLED, OrderState.QUEUED)
    assert not can_transition(OrderState.COMPLETED, OrderState.QUEUED)
    assert not can_transition(OrderState.NEW, OrderState.RUNNING)
    assert set(ORDER_TRANSITIONS) == set(OrderState)
