"""A YAML file read safely, with the line and column of every key and value kept.

``yaml.safe_load`` forgets where values came from, so an error found later (by pydantic) could
not say where to look. :func:`read_yaml` composes the node tree instead, builds plain Python data
from it and keeps a map from each value's path (``("output", "folder")``, ``("prompts", 2)``) to
its position. On the way it refuses what ``safe_load`` lets through silently or dangerously:

- files over :data:`MAX_YAML_BYTES` and bytes that are not UTF-8;
- aliases (``*name``): a "billion laughs" file expands a few lines into gigabytes, and an order
  has no need for them;
- duplicate keys (YAML keeps the last one without a word, which hides typos and merge mistakes);
- keys that are not plain scalars.

Every problem is returned at once, as :class:`comfyline.errors.Problem`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.composer import Composer
from yaml.constructor import ConstructorError
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from comfyline.errors import Problem

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
    """

    file: str
    data: Any
    values: dict[PathKey, Position] = field(default_factory=dict)
    keys: dict[PathKey, Position] = field(default_factory=dict)

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
            message=message,
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


def read_yaml(
    path: Path, *, display: str | None = None
) -> tuple[YamlDocument | None, list[Problem]]:
    """Read ``path`` as YAML with positions.

    Returns the document (None when it could not be read at all) and every problem found.
    ``display`` is the file name used in problems (default: ``str(path)``).
    """
    name = display or str(path)
    raw, problem = _read_bytes(path, name)
    if problem:
        return None, [problem]
    text, problem = _decode(raw, name)
    if problem:
        return None, [problem]
    return parse_yaml(text, name)


def parse_yaml(text: str, name: str) -> tuple[YamlDocument | None, list[Problem]]:
    """Parse YAML ``text`` (from the file called ``name``) with positions; see :func:`read_yaml`."""
    try:
        loader = _NoAliasLoader(text)
    except yaml.reader.ReaderError as exc:
        return None, [_reader_problem(exc, text, name)]
    try:
        root = loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        return None, [_yaml_problem(exc, name)]
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
        document.data = _build(root, (), document, problems, loader)
    except RecursionError:
        return None, [Problem(name, None, None, "", _TOO_DEEP)]
    return document, problems


_PLAIN_TAGS = {"tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"}
_TOO_DEEP = "the YAML is nested too deeply to be an order: check the indentation and brackets"


def _read_bytes(path: Path, name: str) -> tuple[bytes, Problem | None]:
    try:
        with path.open("rb") as stream:
            raw = stream.read(MAX_YAML_BYTES + 1)
    except FileNotFoundError:
        return b"", Problem(name, None, None, "", "no such file")
    except IsADirectoryError:
        return b"", Problem(name, None, None, "", "is a folder, not a file")
    except OSError as exc:
        return b"", Problem(name, None, None, "", f"cannot read the file: {exc.strerror}")
    if len(raw) > MAX_YAML_BYTES:
        return b"", Problem(
            name,
            None,
            None,
            "",
            f"the file is larger than {MAX_YAML_BYTES // 1024} KiB; "
            "an order is a short file: move long prompt lists to a CSV file (prompts_file)",
        )
    return raw, None


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


def _yaml_problem(exc: yaml.MarkedYAMLError, name: str) -> Problem:
    mark = exc.problem_mark or exc.context_mark
    message = exc.problem or "not valid YAML"
    if exc.context:
        message = f"{exc.context}, {message}"
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


def _build(
    node: Node, path: PathKey, doc: YamlDocument, problems: list[Problem], loader: yaml.SafeLoader
) -> Any:
    at = Position(node.start_mark.line + 1, node.start_mark.column + 1)
    doc.values[path] = at
    if isinstance(node, MappingNode | SequenceNode) and node.tag not in _PLAIN_TAGS:
        # safe_load would refuse python/* tags; !!set or !!omap would change the data's shape.
        problems.append(
            Problem(
                doc.file,
                at.line,
                at.column,
                dotted(path),
                f"the tag {node.tag!r} is not allowed: remove it",
            )
        )
        return None
    if isinstance(node, MappingNode):
        return _build_mapping(node, path, doc, problems, loader)
    if isinstance(node, SequenceNode):
        return [
            _build(item, (*path, i), doc, problems, loader) for i, item in enumerate(node.value)
        ]
    try:
        return loader.construct_object(node, deep=True)
    except ConstructorError as exc:
        problems.append(_yaml_problem(exc, doc.file))
        return None


def _build_mapping(
    node: MappingNode,
    path: PathKey,
    doc: YamlDocument,
    problems: list[Problem],
    loader: yaml.SafeLoader,
) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key_node, value_node in node.value:
        key_at = Position(key_node.start_mark.line + 1, key_node.start_mark.column + 1)
        if not isinstance(key_node, ScalarNode):
            problems.append(
                Problem(
                    doc.file,
                    key_at.line,
                    key_at.column,
                    dotted(path),
                    "a key must be plain text, not a list or a mapping",
                )
            )
            continue
        # The key's text as written: `1:` and `yes:` stay "1" and "yes", as the user sees them.
        key = str(key_node.value)
        if key == "<<":
            problems.append(
                Problem(
                    doc.file,
                    key_at.line,
                    key_at.column,
                    dotted(path),
                    "merge keys (<<) are not allowed: write the keys out",
                )
            )
            continue
        if key in result:
            first = doc.keys[(*path, key)]
            problems.append(
                Problem(
                    doc.file,
                    key_at.line,
                    key_at.column,
                    dotted((*path, key)),
                    f"duplicate key {key!r} (first at line {first.line}); YAML would silently keep "
                    "only the last one: remove one of them",
                )
            )
            continue
        doc.keys[(*path, key)] = key_at
        result[key] = _build(value_node, (*path, key), doc, problems, loader)
    return result
