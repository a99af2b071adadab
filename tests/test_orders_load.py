"""load: valid orders load into the right model; problems are located and complete."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest
from pydantic import ValidationError

from comfyline.errors import OrderError
from comfyline.ledger import ORDER_TRANSITIONS, OrderState, can_transition
from comfyline.orders import load, plan
from comfyline.presets import params_for
from comfyline.schemas.order import (
    ListOrder,
    SingleOrder,
    VariationsOrder,
    order_adapter,
)
from comfyline.workflows import Workflow

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
        load(path)
    return [str(p).replace(f"{path.parent}/", "") for p in caught.value.problems]


@pytest.mark.parametrize("example", sorted(p.name for p in EXAMPLES.iterdir()))
def test_every_example_order_loads_and_plans(example: str) -> None:
    path = EXAMPLES / example / "project.yaml"

    loaded = load(path)
    order = loaded.order
    planned = plan(loaded, random_base=1)

    assert order.id == example
    assert planned.images >= 1


def test_every_order_type_has_an_example() -> None:
    kinds = {load(EXAMPLES / p.name / "project.yaml").order.type for p in EXAMPLES.iterdir()}
    assert kinds == {"single", "variations", "list"}


def test_a_minimal_single_order_gets_documented_defaults(tmp_path: Path) -> None:
    order = load(write_order(tmp_path, "id: demo\ntype: single\nprompt: a cat\n")).order

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
    order = load(write_order(tmp_path, text)).order

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
        "loras, vae, aspect, "
        "seed, output, sale, qc, workflow, nodes, inputs, priority, schedule, type, template, "
        "variables, mode, sample)",
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
        load(path)

    assert str(caught.value) == (
        f"{path}:1:5: id: id 'dogs' does not match its file name 'cats.yaml': the id names the "
        "order's folder (automation/orders/<id>/project.yaml); rename one"
    )
    path.write_text("id: cats\ntype: single\nprompt: a cat\n")
    assert load(path).order.id == "cats"


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

    slot = plan(load(path)).slots[0]

    assert (slot.prompt, slot.negative) == ("a man, my face words", "harsh light")


def test_profiles_file_beside_the_order_wins_over_the_shared_one(tmp_path: Path) -> None:
    (tmp_path / "automation").mkdir()
    (tmp_path / "automation" / "profiles.yaml").write_text("soft:\n  prompt: shared\n")
    text = "id: demo\ntype: single\nprompt: a man\nprofiles: [soft]\nprofiles_file: mine.yaml\n"
    path = write_order(tmp_path, text, mine__yaml="soft:\n  prompt: mine\n")

    slot = plan(load(path), random_base=3).slots[0]

    assert slot.prompt == "a man, mine"


def test_an_invalid_shared_profiles_file_is_reported_in_that_file(tmp_path: Path) -> None:
    (tmp_path / "automation").mkdir()
    shared = tmp_path / "automation" / "profiles.yaml"
    shared.write_text("Bad Name:\n  prompt: x\nempty: {}\n")
    path = write_order(tmp_path, "id: demo\ntype: single\nprompt: a\nprofiles: [portrait]\n")

    with pytest.raises(OrderError) as caught:
        load(path)

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

    order = load(write_order(tmp_path, text)).order

    assert order.workflow == "../../workflows/g.json"


def test_list_entries_may_be_text_or_mappings(tmp_path: Path) -> None:
    text = (
        "id: demo\ntype: list\nprompts:\n  - a cat\n  - {prompt: a dog, seed: 5, keywords: [dog]}\n"
    )
    order = load(write_order(tmp_path, text)).order

    assert isinstance(order, ListOrder)
    assert order.prompts is not None
    assert [(e.prompt, e.seed, e.keywords) for e in order.prompts] == [
        ("a cat", None, ()),
        ("a dog", 5, ("dog",)),
    ]


def test_variation_values_may_be_numbers_but_not_booleans(tmp_path: Path) -> None:
    text = "id: demo\ntype: variations\ntemplate: '{n} cats'\nvariables: {n: [2, 3.5]}\n"
    order = load(write_order(tmp_path, text)).order
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


def test_rules_raised_outside_load_read_well() -> None:
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
    assert can_transition(OrderState.COMPLETED, OrderState.QUEUED)  # grown, or a re-roll
    assert not can_transition(OrderState.COMPLETED, OrderState.RUNNING)
    assert not can_transition(OrderState.NEW, OrderState.RUNNING)
    assert set(ORDER_TRANSITIONS) == set(OrderState)


# -- LoadedOrder: everything read once ---------------------------------------------------------

GRAPH = '{"1": {"class_type": "KSampler", "inputs": {}}}'


def test_load_reads_the_order_and_what_it_names_once(tmp_path: Path) -> None:
    (tmp_path / "automation").mkdir()
    (tmp_path / "automation" / "profiles.yaml").write_text("soft:\n  negative: harsh light\n")
    text = (
        "id: demo\ntype: list\nprompts_file: p.csv\nprofiles: [soft, stock]\nworkflow: graph.json\n"
    )
    path = write_order(tmp_path, text, p__csv="prompt,title\na cat,Cat\n", graph__json=GRAPH)

    loaded = load(path.parent)  # the folder, or the file

    assert loaded.file == path and loaded.folder == path.parent
    assert loaded.raw == path.read_bytes()
    assert loaded.sha256 == hashlib.sha256(loaded.raw).hexdigest()
    assert [(e.prompt, e.title) for e in loaded.entries] == [("a cat", "Cat")]
    assert [p.negative for p in loaded.profiles][0] == "harsh light"
    assert loaded.workflow is not None and loaded.workflow.graph == json.loads(GRAPH)
    assert loaded.workflow == Workflow.load(path.parent / "graph.json")
    assert [s.path.name for s in loaded.sources] == ["p.csv", "profiles.yaml", "graph.json"]
    assert all(s.sha256 == hashlib.sha256(s.path.read_bytes()).hexdigest() for s in loaded.sources)
    assert load(path) == loaded


def test_the_workflow_is_resolved_builtin_file_or_none(tmp_path: Path) -> None:
    hires = load(
        write_order(tmp_path, "id: a\ntype: single\nprompt: x\nworkflow: builtin:hires_fix\n", "a")
    )
    plain = load(write_order(tmp_path, "id: b\ntype: single\nprompt: x\n", "b"))

    assert hires.workflow == Workflow.builtin("hires_fix")
    assert plain.workflow is None
    assert hires.sources == plain.sources == ()


@pytest.mark.parametrize("edited", ["p.csv", "mine.yaml", "graph.json"])
def test_sources_hash_changes_when_a_named_file_is_edited(tmp_path: Path, edited: str) -> None:
    text = (
        "id: demo\ntype: list\nprompts_file: p.csv\nprofiles: [soft]\nprofiles_file: mine.yaml\n"
        "workflow: graph.json\n"
    )
    files = {
        "p__csv": "prompt\na cat\n",
        "mine__yaml": "soft:\n  prompt: soft\n",
        "graph__json": GRAPH,
    }
    path = write_order(tmp_path, text, **files)
    before = load(path)

    target = path.parent / edited
    target.write_bytes(target.read_bytes() + b"\n")
    after = load(path)

    assert after.sources_sha256 != before.sources_sha256
    changed = [a.path.name for a, b in zip(after.sources, before.sources, strict=True) if a != b]
    assert changed == [edited]
    assert after.sha256 == before.sha256  # the order file itself did not change


def test_sources_hash_ignores_the_order_file_and_a_moved_project(tmp_path: Path) -> None:
    text = "id: demo\ntype: list\nprompts_file: p.csv\n"
    path = write_order(tmp_path / "one", text, p__csv="prompt\na cat\n")
    moved = write_order(tmp_path / "two", text + "title: Cats\n", p__csv="prompt\na cat\n")

    assert load(path).sources_sha256 == load(moved).sources_sha256


def _sparse(path: Path, size: int) -> None:
    with path.open("wb") as stream:
        stream.truncate(size)  # no disk blocks; reading it would still cost `size` bytes


def _peak_while(action: Callable[[], object]) -> int:
    tracemalloc.start()
    try:
        with contextlib.suppress(OrderError):
            action()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize(
    ("name", "order_key", "message"),
    [
        (
            "w.json",
            "workflow: w.json",
            "project.yaml:4:11: workflow: cannot read 'w.json': larger than 16 MiB",
        ),
        ("p.csv", "prompts_file: p.csv", "p.csv: larger than 16 MiB: split it into several orders"),
        (
            "pr.yaml",
            "profiles_file: pr.yaml",
            "pr.yaml: the file is larger than 1024 KiB; a profiles file holds a few short profiles",
        ),
    ],
)
def test_a_huge_named_file_is_refused_without_reading_it(
    tmp_path: Path, name: str, order_key: str, message: str
) -> None:
    prompt = "prompt: a cat\n" if "prompts_file" not in order_key else ""
    kind = "list" if "prompts_file" in order_key else "single"
    path = write_order(tmp_path, f"id: demo\ntype: {kind}\n{prompt}{order_key}\n")
    _sparse(path.parent / name, 200 * 2**20)

    peak = _peak_while(lambda: load(path))

    assert peak < 8 * 2**20  # the 200 MiB file was never read
    assert problems_of(path) == [message]


def test_a_huge_order_file_is_refused_without_reading_it(tmp_path: Path) -> None:
    folder = tmp_path / "demo"
    folder.mkdir()
    _sparse(folder / "project.yaml", 200 * 2**20)

    assert _peak_while(lambda: load(folder)) < 8 * 2**20
    assert problems_of(folder / "project.yaml") == [
        "project.yaml: the file is larger than 1024 KiB; an order is a short file: move long "
        "prompt lists to a CSV file (prompts_file)"
    ]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
def test_a_named_pipe_is_refused_not_read(tmp_path: Path) -> None:
    path = write_order(tmp_path, "id: demo\ntype: list\nprompts_file: p.csv\n")
    os.mkfifo(path.parent / "p.csv")  # reading it would wait for a writer forever

    assert problems_of(path) == ["p.csv: is not a regular file"]


def test_a_folder_where_a_file_should_be_is_refused(tmp_path: Path) -> None:
    path = write_order(tmp_path, "id: demo\ntype: list\nprompts_file: p.csv\n")
    (path.parent / "p.csv").mkdir()

    assert problems_of(path) == ["p.csv: is a folder, not a file"]


def test_a_deeply_nested_workflow_is_refused_without_a_traceback(tmp_path: Path) -> None:
    path = write_order(tmp_path, "id: demo\ntype: single\nprompt: a\nworkflow: w.json\n")
    (path.parent / "w.json").write_text("[" * 200_000 + "]" * 200_000)

    assert problems_of(path) == [
        "project.yaml:4:11: workflow: cannot read 'w.json': the JSON is nested too deeply"
    ]


def test_a_workflow_with_a_5000_digit_number_is_refused_cleanly(tmp_path: Path) -> None:
    path = write_order(tmp_path, "id: demo\ntype: single\nprompt: a\nworkflow: w.json\n")
    (path.parent / "w.json").write_text(
        '{"1": {"class_type": "K", "inputs": {"seed": ' + "9" * 5000 + "}}}"
    )

    assert problems_of(path) == [
        "project.yaml:4:11: workflow: cannot read 'w.json': it holds a number of absurd length"
    ]


def test_an_order_id_some_system_refuses_is_refused() -> None:
    for order_id, reason in [
        ("con", "'con' is a reserved device name on Windows"),
        ("lpt1.v2", "'lpt1.v2' is a reserved device name on Windows"),
        ("cats.", "'cats.' ends with a dot"),
    ]:
        with pytest.raises(ValidationError) as caught:
            order_adapter.validate_python({"id": order_id, "type": "single", "prompt": "a"})
        assert reason in str(caught.value)
        assert "(the id is also the order's folder name)" in str(caught.value)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            "prompt: 'it's a cat'",
            "4:13: YAML syntax error: while parsing a block mapping, expected <block end>, but "
            "found '<scalar>': a value that starts with ' ends at the next ': put all of it in "
            """quotes, e.g. prompt: "it's a cat\"""",
        ),
        (
            "prompt: @cat #1",
            "4:9: YAML syntax error: while scanning for the next token, found character '@' that "
            "cannot start any token: a plain value cannot start with '@': put it in quotes, e.g. "
            "prompt: \"@cat #1\" (a ' #' outside quotes starts a comment)",
        ),
        (
            "seed: {mode: fixed",
            "5:1: YAML syntax error: while parsing a flow mapping, expected ',' or '}', but got "
            "'<stream end>': the value on line 4 starts with '{', so YAML reads a mapping up to a "
            "closing '}': if it is text, put it in quotes, e.g. seed: \"{mode: fixed\"; if it is a "
            "mapping, close it with '}'",
        ),
    ],
)
def test_yaml_syntax_errors_say_how_to_quote_the_value(
    tmp_path: Path, line: str, expected: str
) -> None:
    path = write_order(tmp_path, f"id: demo\ntype: single\ncount: 1\n{line}\n")

    assert problems_of(path) == [f"project.yaml:{expected}"]


def test_a_colon_in_a_list_item_says_to_quote_it(tmp_path: Path) -> None:
    # Valid YAML: the item is the mapping {"a mug": "on a table"}.
    path = write_order(tmp_path, "id: demo\ntype: list\nprompts:\n  - a mug: on a table\n")

    assert problems_of(path) == [
        "project.yaml:4:5: prompts[0].prompt: required, but missing",
        "project.yaml:4:5: prompts[0].a mug: unknown key 'a mug' (allowed: prompt, negative, "
        "seed, title, keywords); a ': ' inside a value starts a key in YAML: if this is text, "
        "quote all of it",
    ]
