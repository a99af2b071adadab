"""Golden values: the seeds, file stems, slot keys and prompt ids comfyline gives a few orders.

A resume matches the ledger's slots to the plan by these values, and makes each missing image
with its planned seed; a change to any of them makes a resumed order differ from the order
it continues (other seeds, other files, slots not recognised). So they are pinned here, written
out, not computed by the code under test.

CHANGING A VALUE BELOW IS A MIGRATION: do it only on purpose, say so in the changelog, and give
orders begun with the old values a way to finish (or refuse to resume them, saying why).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from comfyline.ledger import slot_prompt_id
from comfyline.orders import derive_seed, load, plan

ORDERS = {
    "golden-single": """type: single
quality: preview
count: 3
prompt: a red fox in fresh snow
negative: blurry
seed: {mode: fixed, base: 1234}
""",
    "golden-variations": """type: variations
quality: preview
template: a {fruit} on a {colour} background
variables:
  fruit: [apple, pear, plum]
  colour: [red, blue]
mode: sample
sample: 3
count: 1
seed: {mode: fixed, base: 7}
""",
    "golden-csv": """type: list
quality: preview
prompts_file: prompts.csv
count: 2
seed: {mode: fixed, base: 99}
""",
    "golden-random": """type: single
quality: preview
count: 2
prompt: a lighthouse at dusk
seed: {mode: random}
""",
}
CSV = "prompt,negative,seed\na city skyline at night,people,\na harbour at dawn,,4242\n"
RECORDED_BASE = 123456789
"""The seed base a ledger recorded for ``golden-random`` (a resume plans with it)."""

# (index, seed, file stem, slot key, prompt, negative) per slot.
GOLDEN: dict[str, list[tuple[int, int, str, str, str, str]]] = {
    "golden-single": [
        (0, 7400949810082689, "0000_7400949810082689", "9021f65b511f3f5ce6b9e4547d2cd4dc",
         "a red fox in fresh snow", "blurry"),
        (1, 7053451198684483, "0001_7053451198684483", "bd4123b80bc552e3b84fa382b6d742f9",
         "a red fox in fresh snow", "blurry"),
        (2, 5451793353684819, "0002_5451793353684819", "7aa0f5a68d8d491ac66f9fbf30f739c8",
         "a red fox in fresh snow", "blurry"),
    ],
    "golden-variations": [
        (0, 592484203525380, "0000_592484203525380", "633357f3aefee1feb89ec4e1706fe519",
         "a pear on a red background", ""),
        (1, 8855790730313481, "0001_8855790730313481", "1d9802fd6bbb4254cb0ab1bfd4d7738d",
         "a plum on a red background", ""),
        (2, 3711151630716193, "0002_3711151630716193", "866c8dedab40f5c5739b0dbd0ba1ae46",
         "a plum on a blue background", ""),
    ],
    "golden-csv": [
        (0, 4921347688285723, "0000_4921347688285723", "b20d2752ef441c1248721d89769a3390",
         "a city skyline at night", "people"),
        (1, 6456605569412422, "0001_6456605569412422", "7d7ec7cebd5e43b089771df057702f55",
         "a city skyline at night", "people"),
        # A CSV seed is used as written, then + 1 for each further image of that row.
        (2, 4242, "0002_4242", "6686f932adcef8283bb06f0a5b6029e3", "a harbour at dawn", ""),
        (3, 4243, "0003_4243", "b8c8b81aa1a3a0817c4f9e742f3779c0", "a harbour at dawn", ""),
    ],
    "golden-random": [
        (0, 2014786330111698, "0000_2014786330111698", "d9308d28262e85c933e153596c1d3b96",
         "a lighthouse at dusk", ""),
        (1, 6465700331490637, "0001_6465700331490637", "e6b0789373feda3bf54a78ed5a0d4502",
         "a lighthouse at dusk", ""),
    ],
}  # fmt: skip


def _order_file(root: Path, order_id: str) -> Path:
    folder = root / order_id
    folder.mkdir(parents=True)
    (folder / "project.yaml").write_text(f"id: {order_id}\n{ORDERS[order_id]}", encoding="utf-8")
    (folder / "prompts.csv").write_text(CSV, encoding="utf-8")
    return folder / "project.yaml"


@pytest.mark.parametrize("order_id", sorted(GOLDEN))
def test_plan_gives_the_golden_slots(order_id: str, tmp_path: Path) -> None:
    path = _order_file(tmp_path, order_id)
    base = RECORDED_BASE if order_id == "golden-random" else None
    the_plan = plan(load(path), random_base=base)
    got = [(s.index, s.seed, s.stem, s.key, s.prompt, s.negative) for s in the_plan.slots]
    assert got == GOLDEN[order_id]


def test_a_random_order_keeps_its_recorded_base(tmp_path: Path) -> None:
    path = _order_file(tmp_path, "golden-random")
    the_plan = plan(load(path), random_base=RECORDED_BASE)
    assert the_plan.seed_base == RECORDED_BASE


def test_derive_seed_is_golden() -> None:
    assert [derive_seed(1234, i) for i in range(3)] == [
        7400949810082689,
        7053451198684483,
        5451793353684819,
    ]
    assert derive_seed(0, 0) == 1274890529736186
    assert derive_seed(2**32, 7, 2) == 3129549878059463  # the salt, for a seed already used


def test_slot_prompt_ids_are_golden() -> None:
    # The id a slot's attempt is posted under: a resume finds it again in the server's queue
    # and history by it.
    assert slot_prompt_id("golden-single", 0, 1) == "135c14fd-eb7a-52ff-bfbb-ed718f513951"
    assert slot_prompt_id("golden-single", 1, 1) == "c08245c8-4f6d-5984-8db3-457923ff56e5"
    assert slot_prompt_id("golden-single", 2, 3) == "0e223b3f-b636-57c7-be05-d5efcc347573"
