"""The README documents every setting and every command (a setting nobody can find is a bug)."""

from __future__ import annotations

from pathlib import Path

import pytest

from comfyline.cli import app
from comfyline.settings import Settings

README = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("field", sorted(Settings.model_fields))
def test_every_setting_is_in_the_readme(field: str) -> None:
    assert f"COMFYLINE_{field.upper()}" in README, f"document setting {field!r} in README.md"


@pytest.mark.parametrize("command", [c.name for c in app.registered_commands])
def test_every_command_is_in_the_readme(command: str | None) -> None:
    assert f"comfyline {command}" in README, f"document command {command!r} in README.md"


def test_readme_opens_with_the_two_commands() -> None:
    first_block = README.split("```")[1]
    assert "bash scripts/demo.sh" in first_block
    assert "bash scripts/test.sh" in first_block
    assert (Path(__file__).parent.parent / ".ci" / "run").read_text().count("scripts/test.sh") == 1
