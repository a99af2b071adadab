"""plan: one slot per prompt sent; deterministic seeds, prompts, names and identities."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from comfyline.errors import OrderError
from comfyline.orders import LoadedOrder, derive_seed, load, plan
from comfyline.schemas.order import SEED_MAX

EXAMPLES = Path(__file__).parent.parent / "automation" / "orders"


def order_at(tmp_path: Path, text: str, name: str = "demo", **files: str) -> LoadedOrder:
    folder = tmp_path / name
    folder.mkdir(parents=True)
    (folder / "project.yaml").write_text(text, "utf-8")
    for file_name, content in files.items():
        (folder / file_name.replace("__", ".")).write_text(content, "utf-8")
    return load(folder / "project.yaml")


SINGLE = "id: demo\ntype: single\nprompt: a cat\ncount: 5\nseed: {mode: fixed, base: 42}\n"


def test_single_order_gives_count_slots_with_derived_distinct_seeds(tmp_path: Path) -> None:
    loaded = order_at(tmp_path, SINGLE)

    planned = plan(loaded)

    assert [s.index for s in planned] == [0, 1, 2, 3, 4]
    assert [s.seed for s in planned] == [derive_seed(42, i) for i in range(5)]
    assert len({s.seed for s in planned}) == 5
    assert all(0 <= s.seed <= SEED_MAX for s in planned)
    assert planned.seed_base == 42
    assert planned.images == 5


def test_planning_twice_gives_the_same_slots(tmp_path: Path) -> None:
    for example in sorted(EXAMPLES.iterdir()):
        loaded = load(example)
        assert plan(loaded, random_base=9) == plan(loaded, random_base=9)


def test_a_new_base_gives_new_seeds_not_shifted_ones(tmp_path: Path) -> None:
    # With base+index seeds, base 43 would repeat 42's images shifted by one; a hash does not.
    seeds_42 = {derive_seed(42, i) for i in range(100)}
    seeds_43 = {derive_seed(43, i) for i in range(100)}
    assert not seeds_42 & seeds_43


def test_random_seed_base_is_drawn_once_and_replayed(tmp_path: Path) -> None:
    loaded = order_at(tmp_path, "id: demo\ntype: single\nprompt: a cat\ncount: 3\n")

    first = plan(loaded)
    replay = plan(loaded, random_base=first.seed_base)
    other = plan(loaded, random_base=(first.seed_base + 1) % SEED_MAX)

    assert replay == first
    assert [s.seed for s in other] != [s.seed for s in first]
    with pytest.raises(ValueError, match="random_base"):
        plan(loaded, random_base=-1)


def test_batch_size_makes_fewer_slots_of_several_images(tmp_path: Path) -> None:
    text = SINGLE.replace("count: 5", "count: 6") + "overrides: {batch_size: 3}\n"
    loaded = order_at(tmp_path, text)

    planned = plan(loaded)

    assert len(planned) == 2
    assert [s.images for s in planned] == [3, 3]
    assert planned.images == 6


def test_profiles_and_negatives_are_joined_in_order(tmp_path: Path) -> None:
    text = (
        "id: demo\ntype: list\nnegative: blurry\nprofiles: [portrait, stock]\n"
        "seed: {mode: fixed, base: 1}\n"
        "prompts:\n  - {prompt: 'a woman,  ', negative: hats}\n"
    )
    loaded = order_at(tmp_path, text)

    slot = plan(loaded).slots[0]

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
    loaded = order_at(tmp_path, text)

    planned = plan(loaded)

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
    loaded = order_at(tmp_path, text)

    first = [s.prompt for s in plan(loaded)]
    again = [s.prompt for s in plan(loaded)]
    other = [s.prompt for s in plan(order_at(tmp_path / "b", text.replace("11}", "12}")))]

    assert first == again
    assert len(set(first)) == 7
    assert first != other


def test_a_huge_variation_space_can_be_sampled(tmp_path: Path) -> None:
    values = ", ".join(f"v{i}" for i in range(1000))
    text = (
        "id: demo\ntype: variations\ntemplate: '{a} {b} {c}'\nmode: sample\nsample: 3\n"
        f"variables:\n  a: [{values}]\n  b: [{values}]\n  c: [{values}]\n"
    )
    loaded = order_at(tmp_path, text)

    assert len(plan(loaded, random_base=1)) == 3  # of 10^9 combinations


def test_csv_rows_keep_their_seed_title_and_keywords(tmp_path: Path) -> None:
    csv_text = (
        'prompt,seed,title,keywords\n"a cat, sleeping",100,Sleeping cat,cat; sleep\na dog,,,\n'
    )
    text = (
        "id: demo\ntype: list\nprompts_file: p.csv\ncount: 2\nseed: {mode: fixed, base: 3}\n"
        "sale: {title: Pets, keywords: [pet, cat]}\n"
    )
    loaded = order_at(tmp_path, text, p__csv=csv_text)

    slots = plan(loaded).slots

    assert [s.prompt for s in slots] == ["a cat, sleeping"] * 2 + ["a dog"] * 2
    assert [s.seed for s in slots[:2]] == [100, 101]
    assert slots[2].seed == derive_seed(3, 2)
    assert [s.title for s in slots] == ["Sleeping cat"] * 2 + ["Pets"] * 2
    assert slots[0].keywords == ("cat", "sleep", "pet")
    assert slots[2].keywords == ("pet", "cat")


def test_naming_template_makes_the_stems(tmp_path: Path) -> None:
    text = SINGLE + "output: {folder: cats/run1, naming: '{id}-{level}-{number:03d}-{seed}'}\n"
    loaded = order_at(tmp_path, text)

    planned = plan(loaded)

    assert planned.output_folder == "cats/run1"
    assert planned.slots[0].stem == f"demo-standard-001-{derive_seed(42, 0)}"


def test_slot_key_is_stable_and_follows_content(tmp_path: Path) -> None:
    loaded = order_at(tmp_path, SINGLE)
    changed = order_at(
        tmp_path, SINGLE.replace("a cat", "a dog").replace("id: demo", "id: demo2"), name="demo2"
    )

    keys = [s.key for s in plan(loaded)]

    assert keys == [s.key for s in plan(loaded)]
    assert len(set(keys)) == 5
    assert not set(keys) & {s.key for s in plan(changed)}


def test_slot_to_dict_is_json_ready(tmp_path: Path) -> None:
    import json

    loaded = order_at(tmp_path, SINGLE)
    data = plan(loaded).slots[0].to_dict()

    assert json.loads(json.dumps(data)) == data
    assert data["params"]["width"] == loaded.order.params.width


def test_plan_reads_no_file_the_loaded_order_holds_what_it_needs(tmp_path: Path) -> None:
    loaded = order_at(
        tmp_path, "id: demo\ntype: list\nprompts_file: p.csv\n", p__csv="prompt\na cat\n"
    )
    (loaded.folder / "p.csv").unlink()
    (loaded.folder / "project.yaml").unlink()

    assert [s.prompt for s in plan(loaded, random_base=0)] == ["a cat"]


# -- per-image sale data -----------------------------------------------------------------------

FRUIT = (
    "id: demo\ntype: variations\ntemplate: '{fruit} on a {surface}'\n"
    "variables:\n  fruit: [apple, Pear]\n  surface: [wooden table]\n"
    "seed: {mode: fixed, base: 1}\n"
)


def test_sale_title_is_filled_with_each_slots_variation_values(tmp_path: Path) -> None:
    text = FRUIT + "sale: {title: '{fruit} on a {surface}, {{still life}}'}\n"

    slots = plan(order_at(tmp_path, text)).slots

    assert [s.title for s in slots] == [
        "apple on a wooden table, {still life}",
        "Pear on a wooden table, {still life}",
    ]


def test_keywords_are_the_entrys_then_the_variation_values_then_the_orders(tmp_path: Path) -> None:
    text = FRUIT + "sale: {keywords: [Fruit, APPLE, pear, still life]}\n"

    slots = plan(order_at(tmp_path, text)).slots

    # Each keyword once whatever its case; the first spelling wins.
    assert slots[0].keywords == ("apple", "wooden table", "Fruit", "pear", "still life")
    assert slots[1].keywords == ("Pear", "wooden table", "Fruit", "APPLE", "still life")


def test_an_entrys_own_title_and_keywords_come_first(tmp_path: Path) -> None:
    text = (
        "id: demo\ntype: list\ntitle: Pets\nsale: {keywords: [pet, Cat]}\n"
        "prompts:\n  - {prompt: a cat, title: Sleeping cat, keywords: [cat, sleep]}\n  - a dog\n"
    )

    slots = plan(order_at(tmp_path, text)).slots

    assert [(s.title, s.keywords) for s in slots] == [
        ("Sleeping cat", ("cat", "sleep", "pet")),
        ("Pets", ("pet", "Cat")),  # no sale.title: the order's title
    ]


def test_without_any_title_a_slot_has_none(tmp_path: Path) -> None:
    assert plan(order_at(tmp_path, SINGLE)).slots[0].title is None


# -- file names ----------------------------------------------------------------------------------


def refused(loaded: LoadedOrder) -> list[str]:
    with pytest.raises(OrderError) as caught:
        plan(loaded, random_base=0)
    return [str(p).replace(f"{loaded.folder}/", "") for p in caught.value.problems]


def test_names_differing_only_in_case_are_refused_naming_both_slots(tmp_path: Path) -> None:
    # {index:x}{seed:X}: slot 1 with seed 0xAB is '1AB', slot 26 (0x1a) with seed 0xB is '1aB'.
    seeds = {1: 0xAB, 26: 0xB}
    entries = "".join(
        f"  - {{prompt: p{i}, seed: {seeds.get(i, 1000 + 7 * i)}}}\n" for i in range(27)
    )
    text = f"id: demo\ntype: list\noutput: {{naming: '{{index:x}}{{seed:X}}'}}\nprompts:\n{entries}"

    assert refused(order_at(tmp_path, text)) == [
        "project.yaml:3:18: output.naming: slots 1 and 26 would be written to '1AB.png' and "
        "'1aB.png', which differ only in letter case (one file on Windows and macOS): every "
        "image needs a file name of its own; use {index} or {number} as a plain number, "
        "e.g. {index:04d}"
    ]


def test_the_batch_suffix_counts_in_the_length(tmp_path: Path) -> None:
    stem = "画" * 77  # 231 bytes; + "0_1.png" = 238: one more than a name may have
    text = (
        "id: demo\ntype: single\nprompt: a\ncount: 2\noverrides: {batch_size: 2}\n"
        f"seed: {{mode: fixed, base: 1}}\noutput: {{naming: '{stem}{{index}}'}}\n"
    )

    assert refused(order_at(tmp_path, text)) == [
        f"project.yaml:7:18: output.naming: slot 0: {'画' * 40 + '...' + '画' * 5 + '0_1.png'!r} "
        "is 238 bytes long in UTF-8; names may have at most 237 (18 more are for the temporary "
        "file written first): shorten it"
    ]
    shorter = plan(order_at(tmp_path / "b", text.replace(stem, stem[:-1])))
    assert [s.file_names for s in shorter] == [(f"{stem[:-1]}0_1.png", f"{stem[:-1]}0_2.png")]


def test_random_seeds_are_checked_at_their_longest(tmp_path: Path) -> None:
    # Base 7 gives slot 0 a 15-digit seed: its name fits, but another base's 16 digits would not.
    stem = "画" * 72  # 216 bytes; + "0_" + 16 digits + ".png" = 238
    text = f"id: demo\ntype: single\nprompt: a\noutput: {{naming: '{stem}{{index}}_{{seed}}'}}\n"
    loaded = order_at(tmp_path, text)
    assert len(str(derive_seed(7, 0))) == 15

    with pytest.raises(OrderError) as caught:
        plan(loaded, random_base=7)

    assert str(caught.value).endswith(
        "output.naming: slot 0, with the longest seed a random base can give: "
        f"{'画' * 40 + '...' + '54740991.png'!r} is 238 bytes long in UTF-8; names may have at "
        "most 237 (18 more are for the temporary file written first): shorten it"
    )


def test_own_file_names_match_what_the_reports_write(tmp_path: Path) -> None:
    from comfyline.orders.plan import OWN_FILES
    from comfyline.reports.charts import CHART_FILE
    from comfyline.reports.contact_sheet import PER_SHEET, SheetEntry, write_contact_sheets

    one = write_contact_sheets([], tmp_path / "one")
    two = write_contact_sheets(
        [SheetEntry(i, i, None) for i in range(PER_SHEET + 1)], tmp_path / "two"
    )

    assert [p.name for p in one + two] == [
        "contact_sheet.png",
        "contact_sheet_001.png",
        "contact_sheet_002.png",
    ]
    assert all(OWN_FILES.fullmatch(name) for name in [CHART_FILE, *(p.name for p in one + two)])
