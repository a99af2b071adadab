"""docs/ORDER_CONTRACT.md documents every key, and its examples are the tested example orders."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import BaseModel

from comfyline.ledger import OrderState
from comfyline.orders import parse_profiles
from comfyline.presets import LEVELS
from comfyline.profiles import builtin_text
from comfyline.schemas.order import (
    NAMING_FIELDS,
    ORDER_TYPES,
    NodeNames,
    OutputSpec,
    Overrides,
    Profile,
    PromptEntry,
    SaleInfo,
    SeedPolicy,
)

ROOT = Path(__file__).parent.parent
DOC = (ROOT / "docs" / "ORDER_CONTRACT.md").read_text("utf-8")
# One example per order type (and the shared profiles); other example orders may exist.
EXAMPLES = [
    ROOT / "automation" / name
    for name in (
        "orders/single-lighthouse/project.yaml",
        "orders/variations-fruit/project.yaml",
        "orders/portraits/project.yaml",
        "orders/list-inline/project.yaml",
        "orders/list-csv/project.yaml",
        "orders/list-csv/prompts.csv",
        "orders/lora-product/project.yaml",
        "orders/vae-portrait/project.yaml",
        "orders/aspect-banner/project.yaml",
        "profiles.yaml",
    )
]
# Keys written with a prefix in the docs (`seed.base`), and models documented bare.
PREFIXED: dict[str, type[BaseModel]] = {
    "seed": SeedPolicy,
    "output": OutputSpec,
    "sale": SaleInfo,
    "nodes": NodeNames,
}
BARE: list[type[BaseModel]] = [*ORDER_TYPES.values(), Overrides, PromptEntry, Profile]


def _documented(key: str) -> bool:
    # A key is documented when it heads a row of one of the tables.
    return re.search(rf"^\| `{re.escape(key)}` \|", DOC, re.MULTILINE) is not None


@pytest.mark.parametrize(
    "key",
    sorted({k for m in BARE for k in m.model_fields} - {"description"})
    + [f"{p}.{k}" for p, m in PREFIXED.items() for k in m.model_fields],
)
def test_every_key_is_documented(key: str) -> None:
    assert _documented(key), f"{key} has no row in docs/ORDER_CONTRACT.md"


def test_description_keys_are_documented() -> None:
    # `description` is a key of the order, of a profile and of sale metadata.
    assert _documented("description") and _documented("sale.description")
    assert "`prompt`, `negative` (at least one of the two not empty) and `description`" in DOC


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: str(p.relative_to(ROOT)))
def test_example_files_appear_verbatim(path: Path) -> None:
    assert path.read_text("utf-8").rstrip("\n") in DOC


def test_builtin_profiles_levels_states_and_naming_fields_are_documented() -> None:
    profiles, problems = parse_profiles(builtin_text(), "builtin")
    assert not problems
    for name, profile in profiles.items():
        assert f"| `{name}` | {profile.prompt} | {profile.negative} |" in DOC
    for level in LEVELS.values():
        p = level.params
        assert f"| `{level.name}` | {p.width}×{p.height} | {p.steps} | {p.cfg} |" in DOC
    for state in OrderState:
        assert _documented(state.value)
    for field in NAMING_FIELDS:
        assert _documented("{" + field + "}")


def test_the_report_section_is_there() -> None:
    assert "## generation_report.json" in DOC
