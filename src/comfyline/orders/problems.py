"""Problems located in their file: pydantic's validation errors reworded for people.

:func:`translate` turns each error of a :class:`pydantic.ValidationError` into a
:class:`~comfyline.errors.Problem` at the line and column of the value (or key) to fix, in
words a user understands: "must be a whole number, got '3'", "unknown key 'cuont' (did you
mean 'count'?)", the keys a key belongs to when it is in the wrong order type.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, get_args

from pydantic import BaseModel, ValidationError

from comfyline.errors import Problem
from comfyline.orders.yaml_source import PathKey, YamlDocument
from comfyline.schemas.order import ORDER_TYPES, OrderBase, suggest


def translate(
    exc: ValidationError, doc: YamlDocument, model: type[BaseModel], prefix: PathKey = ()
) -> list[Problem]:
    """Each pydantic error as a located problem; ``prefix`` is where ``model``'s data sits in
    ``doc`` (e.g. a profile's name in a profiles file)."""
    problems: list[Problem] = []
    for error in exc.errors():
        loc: PathKey = tuple(p for p in error["loc"] if p != "[key]")
        at = (*prefix, *loc)
        if error["type"] == "comfyline_rules":
            for sub, message in error["ctx"]["problems"]:
                problems.append(doc.problem((*at, *sub), message))
        elif error["type"] == "extra_forbidden":
            problems.append(doc.problem(at, _unknown_key(loc, model), key=True))
        elif error["type"] == "missing":
            problems.append(doc.problem(at, _missing(loc, model)))
        else:
            key = "[key]" in error["loc"]
            problems.append(doc.problem(at, reword(error), key=key))
    return problems


def _unknown_key(loc: PathKey, model: type[BaseModel]) -> str:
    key = str(loc[-1])
    owner = _model_at(model, loc[:-1])
    allowed = list(owner.model_fields) if owner else []
    message = f"unknown key {key!r}{suggest(key, allowed)}"
    if len(loc) == 1 and model is not OrderBase:
        others = [name for name, m in ORDER_TYPES.items() if key in m.model_fields]
        if others:
            kind = model.model_fields["type"].annotation
            this = get_args(kind)[0] if get_args(kind) else "this"
            return (
                f"key {key!r} belongs to orders of type {' or '.join(others)}, not "
                f"{this!r}{suggest(key, allowed)}"
            )
    if allowed:
        message += f" (allowed: {', '.join(allowed)})"
    if " " in key:  # `- a mug: on a table` is a mapping to YAML, not text with a colon
        message += "; a ': ' inside a value starts a key in YAML: if this is text, quote all of it"
    return message


def _missing(loc: PathKey, model: type[BaseModel]) -> str:
    if loc == ("type",) or model is OrderBase:
        return "required, but missing"
    kind = model.model_fields.get("type")
    if len(loc) == 1 and kind is not None:
        return f"required for orders of type {get_args(kind.annotation)[0]!r}, but missing"
    return "required, but missing"


def _model_at(model: type[BaseModel], path: PathKey) -> type[BaseModel] | None:
    current: type[BaseModel] | None = model
    for part in path:
        if isinstance(part, int) or current is None:
            continue  # a list item: the item's model was found at the list's key
        found = current.model_fields.get(part)
        current = _find_model(found.annotation) if found else None
    return current


def _find_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _find_model(arg)
        if found is not None:
            return found
    return None


_KINDS = {
    "string": "text",
    "int": "a whole number",
    "float": "a number",
    "bool": "true or false",
    "dict": "a mapping (key: value)",
    "model": "a mapping (key: value)",
    "tuple": "a list ([a, b], or lines starting with '- ')",
    "list": "a list ([a, b], or lines starting with '- ')",
}
_BOUNDS = {
    "greater_than_equal": ("at least", "ge"),
    "greater_than": ("more than", "gt"),
    "less_than_equal": ("at most", "le"),
    "less_than": ("less than", "lt"),
}


def reword(error: Any) -> str:
    """One pydantic error (an item of ``ValidationError.errors()``) as a user's sentence."""
    kind, value, ctx = error["type"], error.get("input"), error.get("ctx") or {}
    if kind.endswith("_type") and kind[: -len("_type")] in _KINDS:
        message = f"must be {_KINDS[kind[: -len('_type')]]}, got {_show(value)}"
        if isinstance(value, bool) and kind == "string_type":
            message += (
                " (YAML reads yes/no/on/off/true/false as true/false: put the text in quotes)"
            )
        return message
    if kind == "int_from_float":
        return f"must be a whole number, got {_show(value)}"
    if kind in _BOUNDS:
        words, name = _BOUNDS[kind]
        return f"must be {words} {ctx[name]}, got {_show(value)}"
    if kind == "literal_error":
        allowed = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
        shown = str(value)
        return f"{shown!r} is not allowed{suggest(shown, allowed)} (allowed: {', '.join(allowed)})"
    if kind in {"string_too_long", "too_long"}:
        unit = "characters" if "string" in kind else "items"
        return f"too long: at most {ctx.get('max_length')} {unit}"
    if kind in {"string_too_short", "too_short"}:
        return "must not be empty"
    message = str(error["msg"])
    return message.removeprefix("Value error, ")


def _show(value: object) -> str:
    if value is None:
        return "nothing (an empty value)"
    if isinstance(value, bool):
        return "true" if value else "false"
    text = repr(value)
    text = text if len(text) <= 60 else text[:57] + "..."
    if isinstance(value, str | int | float):
        return text
    return f"{describe_kind(value)} {text}"


def describe_kind(value: object) -> str:
    """What kind of YAML value ``value`` is, in words: "a mapping", "a list", "text"..."""
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return {bool: "true/false", int: "a number", float: "a number", str: "text"}.get(
        type(value), type(value).__name__
    )


def sort_problems(problems: Iterable[Problem]) -> list[Problem]:
    """``problems`` in file order: by file, line, column."""
    return sorted(problems, key=lambda p: (p.file, p.line or 0, p.column or 0))
