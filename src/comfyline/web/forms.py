"""The new-order form: fields in, ``project.yaml`` out, through the same schema and loader as
every order. The file is written to a hidden folder beside the orders first and loaded there
(:func:`comfyline.orders.load`), so the form shows exactly the problems ``comfyline validate``
would, each at its field; only an order that loads is moved into place."""

from __future__ import annotations

import re
import shutil
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from comfyline.errors import OrderError
from comfyline.images import write_atomic
from comfyline.orders import ORDER_FILE, load

FIELDS = (
    "id",
    "type",
    "title",
    "quality",
    "count",
    "prompt",
    "template",
    "variables",
    "prompts",
    "negative",
    "profiles",
    "checkpoint",
    "seed_mode",
    "seed_base",
    "sale_title",
    "sale_keywords",
)
"""The form's fields, in the order the page shows them."""
_SAFE_FOLDER = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_PROBLEM_FIELD = {"seed": "seed_base", "sale.title": "sale_title", "sale.keywords": "sale_keywords"}


@dataclass
class FormResult:
    """What the form gives back: the order's folder when it was written, else the problems by
    field (``""``: problems of the whole order) and the YAML that was checked."""

    folder: Path | None = None
    problems: dict[str, list[str]] = field(default_factory=dict)
    yaml_text: str = ""


def order_data(form: Mapping[str, str]) -> dict[str, Any]:
    """The order the form describes, as the mapping ``project.yaml`` will hold. Empty fields
    are left out (the schema's defaults apply); nothing is corrected here, the schema judges."""
    text = {name: (form.get(name) or "").strip() for name in FIELDS}
    data: dict[str, Any] = {"id": text["id"], "type": text["type"] or "single"}
    for name in ("title", "quality", "negative", "checkpoint"):
        if text[name]:
            data[name] = text[name]
    if text["count"]:
        data["count"] = _number(text["count"])
    kind = data["type"]
    if kind == "single" and text["prompt"]:
        data["prompt"] = text["prompt"]
    if kind == "variations":
        if text["template"]:
            data["template"] = text["template"]
        data["variables"] = _variables(text["variables"])
    if kind == "list":
        data["prompts"] = [line.strip() for line in text["prompts"].splitlines() if line.strip()]
    if text["profiles"]:
        data["profiles"] = _words(text["profiles"])
    if text["seed_mode"] == "fixed" or text["seed_base"]:
        data["seed"] = {"mode": "fixed", "base": _number(text["seed_base"])}
    sale: dict[str, Any] = {}
    if text["sale_title"]:
        sale["title"] = text["sale_title"]
    if text["sale_keywords"]:
        sale["keywords"] = _words(text["sale_keywords"])
    if sale:
        data["sale"] = sale
    return data


def create_order(orders_dir: Path, form: Mapping[str, str]) -> FormResult:
    """Check the order the form describes and, when it loads, write it to
    ``orders_dir/<id>/project.yaml`` (never over an existing order)."""
    data = order_data(form)
    yaml_text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
    result = FormResult(yaml_text=yaml_text)
    order_id = str(data["id"])
    # A hidden folder beside the orders: the same project (shared profiles), skipped by find.
    scratch = orders_dir / f".new-{uuid.uuid4().hex[:12]}"
    folder = order_id if _SAFE_FOLDER.fullmatch(order_id) else "new-order"
    try:
        write_atomic(scratch / folder / ORDER_FILE, yaml_text.encode("utf-8"))
        load(scratch / folder / ORDER_FILE)
    except OrderError as exc:
        for problem in exc.problems:
            result.problems.setdefault(_form_field(problem.field), []).append(problem.message)
        return result
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    target = orders_dir / order_id
    try:
        target.mkdir(parents=False)
    except FileExistsError:
        result.problems["id"] = [f"an order folder {order_id!r} already exists: choose another id"]
        return result
    write_atomic(target / ORDER_FILE, yaml_text.encode("utf-8"))
    result.folder = target
    return result


def _form_field(path: str) -> str:
    for prefix, name in _PROBLEM_FIELD.items():
        if path == prefix or path.startswith(prefix + "."):
            return name
    head = re.split(r"[.\[]", path, maxsplit=1)[0]
    return head if head in FIELDS else ""


def _number(value: str) -> int | str:
    # A whole number becomes one; anything else stays text for the schema to refuse by name.
    return int(value) if re.fullmatch(r"-?\d+", value) else value


def _words(value: str) -> list[str]:
    return [word.strip() for word in value.split(",") if word.strip()]


def _variables(value: str) -> dict[str, list[str]]:
    """``colour: red, blue`` one per line."""
    variables: dict[str, list[str]] = {}
    for line in value.splitlines():
        name, _, values = line.partition(":")
        if name.strip():
            variables[name.strip()] = _words(values)
    return variables
