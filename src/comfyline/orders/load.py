"""Loading an order: ``project.yaml`` and every file it names, read once, checked strictly.

:func:`load` returns a :class:`LoadedOrder` (the validated model, the file's bytes and hash,
the prompts, profiles and workflow graph it resolves to, and a hash of those other files), or
raises :class:`~comfyline.errors.OrderError` with *every* problem found, each located as
``file:line:column: field.path: message``. Nothing is written. Planning
(:func:`comfyline.orders.plan`) then needs no file at all.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from comfyline.errors import OrderError, Problem
from comfyline.orders.problems import describe_kind, sort_problems, translate
from comfyline.orders.sources import SourceFile, read_bounded, resolve
from comfyline.orders.yaml_source import (
    MAX_YAML_BYTES,
    PathKey,
    YamlDocument,
    parse_yaml_bytes,
)
from comfyline.schemas.order import ORDER_TYPES, Order, OrderBase, Profile, PromptEntry, suggest
from comfyline.workflows import Workflow

ORDER_FILE = "project.yaml"
_TOO_LARGE = (
    f"the file is larger than {MAX_YAML_BYTES // 1024} KiB; an order is a short file: move long "
    "prompt lists to a CSV file (prompts_file)"
)


@dataclass(frozen=True)
class LoadedOrder:
    """An order file and everything it names, read once and checked.

    ``raw`` is the order file's bytes and ``sha256`` their hash. ``entries`` are a list
    order's prompts (inline, or the CSV's rows; empty for other types), ``profiles`` the
    profiles it names, in its order, and ``workflow`` its graph (``builtin:NAME`` or a file;
    None for the default txt2img). ``sources`` are the files read besides the order's own
    (CSV, profile files, workflow JSON), each with the sha256 of its bytes, and
    ``sources_sha256`` one hash over them: it changes when any of them is edited.
    """

    order: Order
    file: Path
    raw: bytes = field(repr=False)
    sha256: str
    entries: tuple[PromptEntry, ...]
    profiles: tuple[Profile, ...]
    workflow: Workflow | None
    sources: tuple[SourceFile, ...]
    sources_sha256: str
    document: YamlDocument = field(repr=False, compare=False)
    """Where each key and value of the order file stands, to locate later problems."""

    @property
    def folder(self) -> Path:
        """The folder of the order file (files the order names are relative to it)."""
        return self.file.parent

    def problem(self, path: PathKey, message: str) -> Problem:
        """A problem located at ``path`` (``("output", "naming")``) in the order file."""
        return self.document.problem(path, message)


def load(path: Path | str) -> LoadedOrder:
    """Read and check the order at ``path`` (its ``project.yaml``, or the folder holding it)
    and every file it names.

    Raises :class:`OrderError` holding every problem: size, encoding, YAML syntax (with a hint
    to quote the value where that is the likely cause), aliases, duplicate keys, unknown keys
    (with the closest allowed one), wrong types and ranges, rules across fields, an ``id``
    that is not its folder's name, file and folder names that some system refuses, paths that
    leave the order's folder or project, a missing or malformed prompts CSV, unknown profiles,
    a workflow file that is not an API-format graph. Reads files; writes nothing.
    """
    file = Path(path)
    if file.is_dir():
        file = file / ORDER_FILE
    loaded, problems = _load(file)
    if problems or loaded is None:
        raise OrderError(sort_problems(problems))
    return loaded


def _load(file: Path) -> tuple[LoadedOrder | None, list[Problem]]:
    raw, reason = read_bounded(file, MAX_YAML_BYTES, _TOO_LARGE)
    if reason is not None:
        return None, [Problem(str(file), None, None, "", reason)]
    doc, problems = parse_yaml_bytes(raw, str(file))
    if doc is None:
        return None, problems
    shape = _shape_problem(doc)
    if shape is not None:
        return None, [shape]
    order, found = _validate(doc)
    # A value the reader already refused (a tag, a duplicate) is not reported twice.
    refused = {problem.field for problem in problems}
    problems += [problem for problem in found if problem.field not in refused]
    if order is None:
        return None, problems
    problems += _check_home(order, file, doc)
    resolved, found = resolve(order, file.parent, doc)
    problems += found
    if problems:
        return None, problems
    loaded = LoadedOrder(
        order=order,
        file=file,
        raw=raw,
        sha256=hashlib.sha256(raw).hexdigest(),
        entries=resolved.entries,
        profiles=resolved.profiles,
        workflow=resolved.workflow,
        sources=resolved.files,
        sources_sha256=_sources_hash(file.parent, resolved.files),
        document=doc,
    )
    return loaded, []


def _shape_problem(doc: YamlDocument) -> Problem | None:
    if doc.data is None:
        return doc.problem(
            (),
            "the file is empty: an order needs at least id, type and its prompts "
            "(see docs/ORDER_CONTRACT.md)",
        )
    if not isinstance(doc.data, dict):
        return doc.problem(
            (), f"an order is a mapping of keys (id: ..., type: ...), not {describe_kind(doc.data)}"
        )
    return None


def _sources_hash(folder: Path, files: tuple[SourceFile, ...]) -> str:
    # Paths relative to the order's folder, so that moving the whole project changes nothing.
    digest = hashlib.sha256()
    for source in files:
        relative = Path(os.path.relpath(source.path, folder)).as_posix()
        digest.update(f"{relative}\0{source.sha256}\n".encode())
    return digest.hexdigest()


# -- the model ---------------------------------------------------------------------------------


def _validate(doc: YamlDocument) -> tuple[Order | None, list[Problem]]:
    data: dict[str, Any] = doc.data
    kind = data.get("type")
    model = ORDER_TYPES.get(kind) if isinstance(kind, str) else None
    if model is None:
        return None, [_type_problem(doc, kind)] + _validate_common(doc)
    try:
        return model.model_validate(data), []  # type: ignore[return-value]
    except ValidationError as exc:
        return None, translate(exc, doc, model)


def _type_problem(doc: YamlDocument, kind: object) -> Problem:
    allowed = ", ".join(ORDER_TYPES)
    if "type" not in doc.data:
        return doc.problem(("type",), f"required, but missing (allowed: {allowed})")
    shown = kind if isinstance(kind, str) else str(kind)
    return doc.problem(
        ("type",),
        f"unknown order type {shown!r}{suggest(shown, list(ORDER_TYPES))} (allowed: {allowed})",
    )


def _validate_common(doc: YamlDocument) -> list[Problem]:
    # Without a valid type we cannot pick a model; still report what is wrong in the fields
    # every type shares, so the user sees every problem at once.
    type_keys = {k for m in ORDER_TYPES.values() for k in m.model_fields} - set(
        OrderBase.model_fields
    )
    common = {k: v for k, v in doc.data.items() if k not in type_keys}
    try:
        OrderBase.model_validate(common)
    except ValidationError as exc:
        return translate(exc, doc, OrderBase)
    return []


def _check_home(order: Order, path: Path, doc: YamlDocument) -> list[Problem]:
    home = path.resolve().parent.name if path.name == ORDER_FILE else path.stem
    if order.id != home:
        where = f"folder {home!r}" if path.name == ORDER_FILE else f"file name {path.name!r}"
        return [
            doc.problem(
                ("id",),
                f"id {order.id!r} does not match its {where}: the id names "
                "the order's folder (automation/orders/<id>/project.yaml); rename one",
            )
        ]
    return []
