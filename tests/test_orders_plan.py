"""plan: one slot per prompt sent; deterministic seeds, prompts, names and identities."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from comfyline.errors import OrderError
from comfyline.orders import derive_seed, load_order, plan
from comfyline.schemas.order import SEED_MAX, Order

EXAMPLES = Path(__file__).parent.parent / "automation" / "orders"


def order_at(tmp_path: Path, text: str, name: str = "demo", **files: str) -> tuple[Order, Path]:
    folder = tmp_path / name
    folder.mkdir()
    (folder / "project.yaml").write_text(text, "utf-8")
    for file_name, content in files.items():
        (folder / file_name.replace("__", ".")).write_text(content, "utf-8")
    return load_order(folder / "project.yaml"), folder


SINGLE = "id: demo\ntype: single\nprompt: a cat\ncount: 5\nseed: {mode: fixed, base: 42}\n"


def test_single_order_gives_count_slots_with_derived_distinct_seeds(tmp_path: Path) -> None:
    order, folder = order_at(tmp_path, SINGLE)

    planned = plan(order, folder)

    assert [s.index for s in planned] == [0, 1, 2, 3, 4]
    assert [s.seed for s in planned] == [derive_seed(42, i) for i in range(5)]
    assert len({s.seed for s in planned}) == 5
    assert all(0 <= s.seed <= SEED_MAX for s in planned)
    assert planned.seed_base == 42
    assert planned.images == 5


def test_planning_twice_gives_the_same_slots(tmp_path: Path) -> None:
    for example in sorted(EXAMPLES.iterdir()):
        order = load_order(example / "project.yaml")
        assert plan(order, example, random_base=9) == plan(order, example, random_base=9)


def test_a_new_base_gives_new_seeds_not_shifted_ones(tmp_path: Path) -> None:
    # With base+index seeds, base 43 would repeat 42's images shifted by one; a hash does not.
    seeds_42 = {derive_seed(42, i) for i in range(100)}
    seeds_43 = {derive_seed(43, i) for i in range(100)}
    assert not seeds_42 & seeds_43


def test_random_seed_base_is_drawn_once_and_replayed(tmp_path: Path) -> None:
    order, folder = order_at(tmp_path, "id: demo\ntype: single\nprompt: a cat\ncount: 3\n")

    first = plan(order, folder)
    replay = plan(order, folder, random_base=first.seed_base)
    other = plan(order, folder, random_base=(first.seed_base + 1) % SEED_MAX)

    assert replay == first
    assert [s.seed for s in other] != [s.seed for s in first]
    with pytest.raises(ValueError, match="random_base"):
        plan(order, folder, random_base=-1)


def test_batch_size_makes_fewer_slots_of_several_images(tmp_path: Path) -> None:
    text = SINGLE.replace("count: 5", "count: 6") + "overrides: {batch_size: 3}\n"
    order, folder = order_at(tmp_path, text)

    planned = plan(order, folder)

    assert len(planned) == 2
    assert [s.images for s in planned] == [3, 3]
    assert planned.images == 6


def test_profiles_and_negatives_are_joined_in_order(tmp_path: Path) -> None:
    text = (
        "id: demo\ntype: list\nnegative: blurry\nprofiles: [portrait, stock]\n"
        "seed: {mode: fixed, base: 1}\n"
        "prompts:\n  - {prompt: 'a woman,  ', negative: hats}\n"
    )
    order, folder = order_at(tmp_path, text)

    slot = plan(order, folder).slots[0]

    assert slot.prompt == (
        "a woman, perfect facial proportions, symmetrical face, detailed eyes, "
        "high quality, sharp focus, professional photography"
    )
    assert slot.negative.startswith(
        "blurry, hats, asymmetrical face, distorted face, deformed eyes"
    )
    assert slot.negative.endswith(
        "watermark, signature, logo, caption, frame, border, blurry, jpeg artifacts"
    )


def test_variations_all_cover_every_combination_last_variable_fastest(tmp_path: Path) -> None:
    text = (
        "id: demo\ntype: variations\ntemplate: '{size} {colour} ball'\ncount: 2\n"
        "variables:\n  size: [big, small]\n  colour: [red, green, blue]\n"
        "seed: {mode: fixed, base: 5}\n"
    )
    order, folder = order_at(tmp_path, text)

    planned = plan(order, folder)

    combos = [
        f"{s} {c} ball" for s, c in itertools.product(["big", "small"], ["red", "green", "blue"])
    ]
    assert [s.prompt for s in planned] == [p for p in combos for _ in range(2)]
    assert [s.prompt_index for s in planned] == [i for i in range(6) for _ in range(2)]
    assert [s.repeat for s in planned] == [0, 1] * 6
    assert dict(planned.slots[2].variables) == {"size": "big", "colour": "green"}


def test_variations_sample_is_seeded_by_the_base(tmp_path: Path) -> None:
    values = ", ".join(f"v{i}" for i in range(50))
    text = (
        "id: demo\ntype: variations\ntemplate: '{a} and {b}'\nmode: sample\nsample: 7\n"
        f"variables:\n  a: [{values}]\n  b: [{values}]\nseed: {{mode: fixed, base: 11}}\n"
    )
    order, folder = order_at(tmp_path, text)

    first = [s.prompt for s in plan(order, folder)]
    again = [s.prompt for s in plan(order, folder)]
    other = [
        s.prompt
        for s in plan(
            order.model_copy(update={"seed": order.seed.model_copy(update={"base": 12})}), folder
        )
    ]

    assert first == again
    assert len(set(first)) == 7
    assert first != other


def test_a_huge_variation_space_can_be_sampled(tmp_path: Path) -> None:
    values = ", ".join(f"v{i}" for i in range(1000))
    text = (
        "id: demo\ntype: variations\ntemplate: '{a} {b} {c}'\nmode: sample\nsample: 3\n"
        f"variables:\n  a: [{values}]\n  b: [{values}]\n  c: [{values}]\n"
    )
    order, folder = order_at(tmp_path, text)

    assert len(plan(order, folder, random_base=1)) == 3  # of 10^9 combinations


def test_csv_rows_keep_their_seed_title_and_keywords(tmp_path: Path) -> None:
    csv_text = (
        'prompt,seed,title,keywords\n"a cat, sleeping",100,Sleeping cat,cat; sleep\na dog,,,\n'
    )
    text = (
        "id: demo\ntype: list\nprompts_file: p.csv\ncount: 2\nseed: {mode: fixed, base: 3}\n"
        "sale: {title: Pets, keywords: [pet, cat]}\n"
    )
    order, folder = order_at(tmp_path, text, p__csv=csv_text)

    slots = plan(order, folder).slots

    assert [s.prompt for s in slots] == ["a cat, sleeping"] * 2 + ["a dog"] * 2
    assert [s.seed for s in slots[:2]] == [100, 101]
    assert slots[2].seed == derive_seed(3, 2)
    assert [s.title for s in slots] == ["Sleeping cat"] * 2 + ["Pets"] * 2
    assert slots[0].keywords == ("cat", "sleep", "pet")
    assert slots[2].keywords == ("pet", "cat")


def test_naming_template_makes_the_stems(tmp_path: Path) -> None:
    text = SINGLE + "output: {folder: cats/run1, naming: '{id}-{level}-{number:03d}-{seed}'}\n"
    order, folder = order_at(tmp_path, text)

    planned = plan(order, folder)

    assert planned.output_folder == "cats/run1"
    assert planned.slots[0].stem == f"demo-standard-001-{derive_seed(42, 0)}"


def test_slot_key_is_stable_and_follows_content(tmp_path: Path) -> None:
    order, folder = order_at(tmp_path, SINGLE)
    changed, folder2 = order_at(
        tmp_path, SINGLE.replace("a cat", "a dog").replace("id: demo", "id: demo2"), name="demo2"
    )

    keys = [s.key for s in plan(order, folder)]

    assert keys == [s.key for s in plan(order, folder)]
    assert len(set(keys)) == 5
    assert not set(keys) & {s.key for s in plan(changed, folder2)}


def test_slot_to_dict_is_json_ready(tmp_path: Path) -> None:
    import json

    order, folder = order_at(tmp_path, SINGLE)
    data = plan(order, folder).slots[0].to_dict()

    assert json.loads(json.dumps(data)) == data
    assert data["params"]["width"] == order.params.width


def test_plan_reports_files_that_changed_since_loading(tmp_path: Path) -> None:
    order, folder = order_at(
        tmp_path, "id: demo\ntype: list\nprompts_file: p.csv\n", p__csv="prompt\na cat\n"
    )
    (folder / "p.csv").unlink()

    with pytest.raises(OrderError, match="'p.csv' does not exist"):
        plan(order, folder, random_base=0)
