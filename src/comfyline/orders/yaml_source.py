"""A YAML file read safely, with the line and column of every key and value kept.

``yaml.safe_load`` forgets where values came from, so an error found later (by pydantic) could
not say where to look. :func:`parse_yaml` composes the node tree instead, builds plain Python data
from it and keeps a map from each value's path (``("output", "folder")``, ``("prompts", 2)``) to
its position. On the way it refuses what ``safe_load`` lets through silently or dangerously:

- bytes that are not UTF-8 (the file's size, at most :data:`MAX_YAML_BYTES`, is checked by
  its reader);
- whole numbers of absurd length (more than 100 characters);
- aliases (``*name``): a "billion laughs" file expands a few lines into gigabytes, and an order
  has no need for them;
- duplicate keys (YAML keeps the last one without a word, which hides typos and merge mistakes);
- keys that are not plain scalars.

Syntax errors carry a hint where the usual cause is known (:mod:`.yaml_hints`): a value
starting with ``{`` or ``[``, a ``: `` or `` #`` inside a value, a tab. Every problem is returned
at once, as :class:`comfyline.errors.Problem`. Reading the file is
:func:`comfyline.orders.sources.read_bounded`'s job; this module parses bytes and text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.composer import Composer
from yaml.constructor import ConstructorError
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from comfyline.errors import Problem
from comfyline.orders.yaml_hints import comment_hint, syntax_hint

MAX_YAML_BYTES = 1024 * 1024
"""Largest YAML file read (1 MiB). An order is a few hundred bytes: more is a mistake or an
attack."""

PathKey = tuple[str | int, ...]


@dataclass(frozen=True)
class Position:
    """A 1-based line and column in a file."""

    line: int
    column: int


@dataclass
class YamlDocument:
    """Plain data read from a YAML file, and where each value and key of it stands.

    ``values[path]`` is the position of the value at ``path``; ``keys[path]`` the position of the
    key that introduces it (for a mapping entry). The empty path is the document itself.
    ``hints[path]`` is said with any problem of an empty value that a `` #`` comment emptied.
    """

    file: str
    data: Any
    values: dict[PathKey, Position] = field(default_factory=dict)
    keys: dict[PathKey, Position] = field(default_factory=dict)
    hints: dict[PathKey, str] = field(default_factory=dict)

    def position(self, path: PathKey, *, key: bool = False) -> Position | None:
        """Where ``path`` is: its key (``key=True``) or its value; the nearest enclosing value
        when the path itself is not in the file (e.g. a missing key: its mapping)."""
        if key and path in self.keys:
            return self.keys[path]
        for end in range(len(path), -1, -1):
            found = self.values.get(path[:end])
            if found is not None:
                return found
        return None

    def problem(self, path: PathKey, message: str, *, key: bool = False) -> Problem:
        """A :class:`Problem` located at ``path`` in this file."""
        where = self.position(path, key=key)
        return Problem(
            file=self.file,
            line=where.line if where else None,
            column=where.column if where else None,
            field=dotted(path),
            message=message + (f" ({self.hints[path]})" if path in self.hints else ""),
        )


def dotted(path: PathKey) -> str:
    """``("prompts", 2, "seed")`` -> ``"prompts[2].seed"``."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


class _NoAliasLoader(yaml.SafeLoader):
    """The safe loader, refusing aliases while composing (before anything is expanded)."""

    def compose_node(self, parent: Node | None, index: object) -> Node | None:
        if self.check_event(AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]
            raise yaml.composer.ComposerError(
                None,
                None,
                f"aliases (*{event.anchor}) are not allowed in comfyline files: write the value "
                "out in full",
                event.start_mark,
            )
        return Composer.compose_node(self, parent, index)  # type: ignore[arg-type]


def parse_yaml_bytes(raw: bytes, name: str) -> tuple[YamlDocument | None, list[Problem]]:
    """Decode ``raw`` (UTF-8, a BOM allowed) and parse it; see :func:`parse_yaml`."""
    text, problem = _decode(raw, name)
    if problem:
        return None, [problem]
    return parse_yaml(text, name)


def parse_yaml(text: str, name: str) -> tuple[YamlDocument | None, list[Problem]]:
    """Parse YAML ``text`` (from the file called ``name``) with positions.

    Returns the document (None when it could not be parsed at all) and every problem found.
    """
    try:
        loader = _NoAliasLoader(text)
    except yaml.reader.ReaderError as exc:
        return None, [_reader_problem(exc, text, name)]
    try:
        root = loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        return None, [_yaml_problem(exc, name, text)]
    except yaml.reader.ReaderError as exc:
        return None, [_reader_problem(exc, text, name)]
    except RecursionError:
        return None, [Problem(name, None, None, "", _TOO_DEEP)]
    finally:
        loader.dispose()
    document = YamlDocument(file=name, data=None)
    if root is None:
        return document, []
    problems: list[Problem] = []
    try:
        builder = _Builder(loader, text.splitlines(), document, problems)
        document.data = builder.build(root, ())
    except RecursionError:
        return None, [Problem(name, None, None, "", _TOO_DEEP)]
    return document, problems


_PLAIN_TAGS = {"tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"}
_TOO_DEEP = "the YAML is nested too deeply to be an order: check the indentation and brackets"


def _decode(raw: bytes, name: str) -> tuple[str, Problem | None]:
    try:
        return raw.decode("utf-8-sig"), None
    except UnicodeDecodeError as exc:
        before = raw[: exc.start]
        line = before.count(b"\n") + 1
        column = exc.start - (before.rfind(b"\n") + 1) + 1
        return "", Problem(
            name,
            line,
            column,
            "",
            f"byte 0x{raw[exc.start]:02x} is not UTF-8: save the file "
            "as UTF-8 (most editors offer it under 'Save with encoding')",
        )


def _yaml_problem(exc: yaml.MarkedYAMLError, name: str, text: str) -> Problem:
    mark = exc.problem_mark or exc.context_mark
    message = exc.problem or "not valid YAML"
    if exc.context:
        message = f"{exc.context}, {message}"
    hint = syntax_hint(exc, text.splitlines())
    if hint:
        message = f"{message}: {hint}"
    return Problem(
        name,
        mark.line + 1 if mark else None,
        mark.column + 1 if mark else None,
        "",
        f"YAML syntax error: {message}",
    )


def _reader_problem(exc: yaml.reader.ReaderError, text: str, name: str) -> Problem:
    before = text[: exc.position]
    line = before.count("\n") + 1
    column = exc.position - (before.rfind("\n") + 1) + 1
    return Problem(
        name,
        line,
        column,
        "",
        f"character U+{exc.character:04X} is not allowed in YAML: "
        "remove it (control characters often come from copying text out of other programs)",
    )


_INT_TAG = "tag:yaml.org,2002:int"
_NULL_TAG = "tag:yaml.org,2002:null"
_MAX_NUMBER_CHARS = 100
"""A whole number written with more characters is refused before Python converts it: every
number an order holds has at most 20 digits, and a 5,000-digit one would hit Python's
conversion limit (``Exceeds the limit (4300 digits)``)."""


@dataclass
class _Builder:
    """Plain data from a composed node tree, filling ``doc``'s positions and ``problems``."""

    loader: yaml.SafeLoader
    lines: list[str]
    doc: YamlDocument
    problems: list[Problem]

    def build(self, node: Node, path: PathKey) -> Any:
        at = Position(node.start_mark.line + 1, node.start_mark.column + 1)
        self.doc.values[path] = at
        if isinstance(node, MappingNode | SequenceNode) and node.tag not in _PLAIN_TAGS:
            # safe_load would refuse python/* tags; !!set or !!omap would change the data's shape.
            self._problem(at, path, f"the tag {node.tag!r} is not allowed: remove it")
            return None
        if isinstance(node, MappingNode):
            return self._mapping(node, path)
        if isinstance(node, SequenceNode):
            return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
        return self._scalar(node, path, at)

    def _scalar(self, node: Node, path: PathKey, at: Position) -> Any:
        if node.tag == _INT_TAG and len(node.value) > _MAX_NUMBER_CHARS:
            digits = sum(c.isdigit() for c in node.value)
            self._problem(at, path, f"a number with {digits:,} digits is far too large")
            return None
        if node.tag == _NULL_TAG and node.value == "":
            hint = comment_hint(self.lines, node.start_mark.line, node.start_mark.column)
            if hint:
                self.doc.hints[path] = hint
        try:
            return self.loader.construct_object(node, deep=True)
        except ConstructorError as exc:
            self.problems.append(_yaml_problem(exc, self.doc.file, ""))
            return None

    def _mapping(self, node: MappingNode, path: PathKey) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key_at = Position(key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            if not isinstance(key_node, ScalarNode):
                self._problem(key_at, path, "a key must be plain text, not a list or a mapping")
                continue
            # The key's text as written: `1:` and `yes:` stay "1" and "yes", as the user sees them.
            key = str(key_node.value)
            if key == "<<":
                self._problem(key_at, path, "merge keys (<<) are not allowed: write the keys out")
                continue
            if key in result:
                first = self.doc.keys[(*path, key)]
                self._problem(
                    key_at,
                    (*path, key),
                    f"duplicate key {key!r} (first at line {first.line}); YAML would silently "
                    "keep only the last one: remove one of them",
                )
                continue
            self.doc.keys[(*path, key)] = key_at
            result[key] = self.build(value_node, (*path, key))
        return result

    def _problem(self, at: Position, path: PathKey, message: str) -> None:
        self.problems.append(Problem(self.doc.file, at.line, at.column, dotted(path), message))
