"""Hints for the YAML mistakes people make in orders, added to PyYAML's own message.

PyYAML says *what* it could not parse ("expected <block end>, but found '<scalar>'", "mapping
values are not allowed here"); almost always the cause is a plain value that YAML reads as
something else: one starting with ``{`` or ``[`` (a mapping or a list), one starting with a
quote but going on after it, a ``: `` inside it (a new key), a `` #`` inside it (a comment), or
a tab. Each hint says so and shows the line with the value quoted.
"""

from __future__ import annotations

import re

import yaml

_KEY = re.compile(r"""^\s*(?:-\s+)*(?:"[^"]*"|'[^']*'|[^\s:#'"{\[][^:#]*?):(?=\s|$)""")
"""A line's leading ``key:`` (after any ``- `` list marks); its end is where the value starts."""
_OPENERS = {"{": ("a mapping", "}"), "[": ("a list", "]")}
_MAX_EXAMPLE = 60


def syntax_hint(exc: yaml.MarkedYAMLError, lines: list[str]) -> str | None:
    """What probably caused ``exc`` and how to fix it, or None when there is no likely cause."""
    problem, mark, start = exc.problem or "", exc.problem_mark, exc.context_mark
    if "'\\t'" in problem:
        return "YAML does not allow tabs here: indent and separate with spaces"
    if (exc.context or "").startswith("while parsing a flow") and start is not None:
        return _opener_hint(lines, start.line) if start.line < len(lines) else None
    if mark is None or mark.line >= len(lines):
        return None
    line = lines[mark.line]
    if problem == "mapping values are not allowed here":
        return _colon_hint(line, mark.column)
    if "cannot start any token" in problem:
        return _value_hint(lines, mark.line, bad_start=True)
    if "expected <block end>" in problem:
        return _value_hint(lines, mark.line, bad_start=False)
    return None


def comment_hint(lines: list[str], line: int, column: int) -> str | None:
    """For an empty value at ``line``/``column`` (0-based): the hint when a `` #`` comment
    right after its key is what emptied it (``naming: #{index}``), else None."""
    if line >= len(lines):
        return None
    text = lines[line]
    rest = text[column:].strip()
    if not rest.startswith("#"):
        return None
    return (
        "a ' #' starts a comment in YAML, so the value is empty: put it in quotes, e.g. "
        f"{_example(text[:column], rest)}"
    )


def _colon_hint(line: str, column: int) -> str:
    key = _KEY.match(line)
    if key is None or column < key.end():
        return (
            "check the indentation: a line indented further than the key above it is read as "
            "part of that key's value; keys of one mapping start in the same column"
        )
    value = line[key.end() :].strip()
    return (
        "a ': ' inside a value starts a new key in YAML: put the value in quotes, e.g. "
        f"{_example(line[: key.end()], value)}"
    )


def _opener_hint(lines: list[str], line: int) -> str | None:
    key = _KEY.match(lines[line])
    value = lines[line][key.end() :].strip() if key else lines[line].strip()
    if not value or value[0] not in _OPENERS:
        return None
    prefix = lines[line][: key.end()] if key else ""
    kind, closer = _OPENERS[value[0]]
    return (
        f"the value on line {line + 1} starts with {value[0]!r}, so YAML reads {kind} up to a "
        f"closing {closer!r}: if it is text, put it in quotes, e.g. {_example(prefix, value)}; "
        f"if it is {kind}, close it with {closer!r}"
    )


def _value_hint(lines: list[str], line: int, *, bad_start: bool) -> str | None:
    key = _KEY.match(lines[line])
    if key is None:
        return None
    prefix, value = lines[line][: key.end()], lines[line][key.end() :].strip()
    if not value:
        return None
    first = value[0]
    if first in _OPENERS:
        kind, closer = _OPENERS[first]
        return (
            f"the value starts with {first!r}, so YAML reads {kind} that ends at {closer!r}: "
            f"if it is text, put all of it in quotes, e.g. {_example(prefix, value)}"
        )
    if first in "\"'":
        text = value[1:-1] if len(value) > 1 and value[-1] == first else value
        return (
            f"a value that starts with {first} ends at the next {first}: put all of it in "
            f"quotes, e.g. {_example(prefix, text)}"
        )
    if not bad_start:
        return None
    return (
        f"a plain value cannot start with {first!r}: put it in quotes, e.g. "
        f"{_example(prefix, value)}"
    )


def _example(prefix: str, value: str) -> str:
    """``key: "value"``, the value quoted the YAML way (shortened when long)."""
    if len(value) > _MAX_EXAMPLE:
        value = value[: _MAX_EXAMPLE - 3] + "..."
    if '"' not in value and "\\" not in value:
        quoted = f'"{value}"'
    else:
        quoted = "'" + value.replace("'", "''") + "'"
    note = " (a ' #' outside quotes starts a comment)" if " #" in value else ""
    return f"{prefix.strip()} {quoted}{note}"
