"""Orders: reading ``project.yaml`` files strictly, and planning them into image slots.

- :func:`load_order` reads one order file and returns a validated :data:`Order`, or raises
  :class:`~comfyline.errors.OrderError` with *every* problem found, each located as
  ``file:line:column: field.path: message``. Nothing is written.
- :func:`plan` turns an order into :class:`Slot` s, one per prompt sent: pure and deterministic
  (given the same files and, for ``seed: {mode: random}``, the same recorded ``random_base``).
- :func:`find_orders` and :func:`check_orders` serve ``comfyline validate``.

The models themselves are in :mod:`comfyline.schemas.order`; the contract for users is
``docs/ORDER_CONTRACT.md``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import random
import re
import secrets
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args

from pydantic import BaseModel, ValidationError

from comfyline import profiles as builtin_profiles
from comfyline.errors import OrderError, Problem, WorkflowError
from comfyline.presets import GenerationParams
from comfyline.schemas.order import (
    COMFY_SEED_MAX,
    MAX_IMAGES,
    ORDER_TYPES,
    SEED_MAX,
    ListOrder,
    Order,
    OrderBase,
    Profile,
    PromptEntry,
    SingleOrder,
    VariationsOrder,
    suggest,
)
from comfyline.schemas.yaml_source import PathKey, YamlDocument, dotted, parse_yaml, read_yaml
from comfyline.workflows import Workflow

ORDER_FILE = "project.yaml"
SHARED_PROFILES_FILE = "profiles.yaml"
CSV_COLUMNS = ("prompt", "negative", "seed", "title", "keywords")
MAX_CSV_BYTES = 16 * 1024 * 1024
MAX_WORKFLOW_BYTES = 16 * 1024 * 1024
_SKIP_DIRS = {"node_modules", "__pycache__", "site-packages"}

# ---------------------------------------------------------------------------------------------
# loading


def load_order(path: Path | str) -> Order:
    """Read and check the order file at ``path``; return the order.

    Raises :class:`OrderError` holding every problem: YAML syntax, encoding, size, aliases,
    duplicate keys, unknown keys (with the closest allowed one), wrong types and ranges, rules
    across fields, an ``id`` that is not its folder's name, paths that leave the order's folder
    or project, a missing or malformed prompts CSV, unknown profiles, a workflow file that is
    not an API-format graph. Reads files; writes nothing.
    """
    order, problems = _load(Path(path))
    if problems or order is None:
        raise OrderError(_sorted(problems))
    return order


def _load(path: Path) -> tuple[Order | None, list[Problem]]:
    doc, problems = read_yaml(path)
    if doc is None:
        return None, problems
    if doc.data is None:
        return None, [
            doc.problem(
                (),
                "the file is empty: an order needs at least id, type and "
                "its prompts (see docs/ORDER_CONTRACT.md)",
            )
        ]
    if not isinstance(doc.data, dict):
        return None, [
            doc.problem(
                (), f"an order is a mapping of keys (id: ..., type: ...), not {_kind(doc.data)}"
            )
        ]
    order, found = _validate(doc)
    # A value the reader already refused (a tag, a duplicate) is not reported twice.
    refused = {problem.field for problem in problems}
    problems += [problem for problem in found if problem.field not in refused]
    if order is not None:
        problems += _check_home(order, path, doc)
        problems += _resolve(order, path.parent, doc)[1]
    return (order if not problems else None), problems


def _validate(doc: YamlDocument) -> tuple[Order | None, list[Problem]]:
    data: dict[str, Any] = doc.data
    kind = data.get("type")
    model = ORDER_TYPES.get(kind) if isinstance(kind, str) else None
    if model is None:
        return None, [_type_problem(doc, kind)] + _validate_common(doc)
    try:
        return model.model_validate(data), []  # type: ignore[return-value]
    except ValidationError as exc:
        return None, _translate(exc, doc, model)


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
        return _translate(exc, doc, OrderBase)
    return []


# -- pydantic errors -> located problems ------------------------------------------------------


def _translate(
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
            problems.append(doc.problem(at, _reword(error), key=key))
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
    return f"{message} (allowed: {', '.join(allowed)})" if allowed else message


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


def _reword(error: Any) -> str:
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
    return f"{_kind(value)} {text}"


def _kind(value: object) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return {bool: "true/false", int: "a number", float: "a number", str: "text"}.get(
        type(value), type(value).__name__
    )


def _sorted(problems: Iterable[Problem]) -> list[Problem]:
    return sorted(problems, key=lambda p: (p.file, p.line or 0, p.column or 0))


# -- checks against the file system -----------------------------------------------------------


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


def project_root(order_dir: Path) -> Path:
    """The project an order belongs to: the folder holding ``automation/orders/...``, or the
    order's own folder when it does not sit in that layout. Files an order names (workflow,
    profiles_file) must stay inside it."""
    for folder in [order_dir, *order_dir.parents]:
        if folder.name == "orders" and folder.parent.name == "automation":
            return folder.parent.parent
    return order_dir


def shared_profiles_path(order_dir: Path) -> Path | None:
    """``automation/profiles.yaml`` of the order's project, or None outside that layout."""
    root = project_root(order_dir)
    return root / "automation" / SHARED_PROFILES_FILE if root != order_dir else None


def _inside(target: Path, base: Path) -> bool:
    return target.resolve().is_relative_to(base.resolve())


@dataclass(frozen=True)
class _Resolved:
    prompts: tuple[PromptEntry, ...] = ()
    profiles: tuple[Profile, ...] = ()


def _resolve(
    order: Order, order_dir: Path, doc: YamlDocument | None
) -> tuple[_Resolved, list[Problem]]:
    """Read what the order names outside its own file; every problem found."""
    doc = doc or YamlDocument(file=str(order_dir / ORDER_FILE), data=None)
    prompts, problems = _list_prompts(order, order_dir, doc)
    profiles, found = _order_profiles(order, order_dir, doc)
    problems += found + _check_workflow(order, order_dir, doc)
    if isinstance(order, ListOrder) and order.prompts_file and prompts:
        total = len(prompts) * order.count
        if total > MAX_IMAGES:
            problems.append(
                doc.problem(
                    ("count",),
                    f"{len(prompts):,} prompts × count "
                    f"{order.count} = {total:,} images, more than the "
                    f"{MAX_IMAGES:,} one order may make: split the CSV",
                )
            )
    return _Resolved(tuple(prompts), tuple(profiles)), problems


def _list_prompts(
    order: Order, order_dir: Path, doc: YamlDocument
) -> tuple[list[PromptEntry], list[Problem]]:
    if not isinstance(order, ListOrder):
        return [], []
    if order.prompts is not None:
        return list(order.prompts), []
    assert order.prompts_file is not None
    target = order_dir / order.prompts_file
    if not _inside(target, order_dir):
        return [], [
            doc.problem(
                ("prompts_file",),
                f"{order.prompts_file!r} is outside the "
                "order's folder: put the CSV beside project.yaml",
            )
        ]
    if not target.is_file():
        return [], [
            doc.problem(
                ("prompts_file",), f"{order.prompts_file!r} does not exist (looked for {target})"
            )
        ]
    return read_prompts_csv(target)


def _order_profiles(
    order: Order, order_dir: Path, doc: YamlDocument
) -> tuple[list[Profile], list[Problem]]:
    if not order.profiles and order.profiles_file is None:
        return [], []
    available, problems = _available_profiles(order, order_dir, doc)
    chosen: list[Profile] = []
    for position, name in enumerate(order.profiles):
        if name in available:
            chosen.append(available[name])
        else:
            names = sorted(available)
            problems.append(
                doc.problem(
                    ("profiles", position),
                    f"unknown profile {name!r}{suggest(name, names)} (allowed: {', '.join(names)})",
                )
            )
    return chosen, problems


def _available_profiles(
    order: Order, order_dir: Path, doc: YamlDocument
) -> tuple[dict[str, Profile], list[Problem]]:
    available, problems = parse_profiles(builtin_profiles.builtin_text(), "comfyline:profiles")
    shared = shared_profiles_path(order_dir)
    if shared is not None and shared.is_file():
        found, more = read_profiles(shared)
        available.update(found)
        problems += more
    if order.profiles_file is not None:
        target = order_dir / order.profiles_file
        if not _inside(target, project_root(order_dir)):
            problems.append(
                doc.problem(
                    ("profiles_file",),
                    f"{order.profiles_file!r} is outside the project: keep profile files in it",
                )
            )
        elif not target.is_file():
            problems.append(
                doc.problem(
                    ("profiles_file",),
                    f"{order.profiles_file!r} does not exist (looked for {target})",
                )
            )
        else:
            found, more = read_profiles(target)
            available.update(found)
            problems += more
    return available, problems


def read_profiles(path: Path) -> tuple[dict[str, Profile], list[Problem]]:
    """Read a profiles file (``name: {prompt, negative, description}``), with every problem."""
    doc, problems = read_yaml(path)
    if doc is None:
        return {}, problems
    return _profiles_from(doc, problems)


def parse_profiles(text: str, name: str) -> tuple[dict[str, Profile], list[Problem]]:
    """Like :func:`read_profiles`, from text (``name`` is used in problems)."""
    doc, problems = parse_yaml(text, name)
    if doc is None:
        return {}, problems
    return _profiles_from(doc, problems)


def _profiles_from(
    doc: YamlDocument, problems: list[Problem]
) -> tuple[dict[str, Profile], list[Problem]]:
    if doc.data is None:
        return {}, problems
    if not isinstance(doc.data, dict):
        return {}, [
            *problems,
            doc.problem(
                (),
                "a profiles file is a mapping of profile names to {prompt, negative, description}",
            ),
        ]
    result: dict[str, Profile] = {}
    for name, body in doc.data.items():
        if not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,63}", name):
            problems.append(
                doc.problem(
                    (name,),
                    f"{name!r} is not a valid profile name: use "
                    "lower-case letters, digits, '_' or '-'",
                    key=True,
                )
            )
            continue
        try:
            result[name] = Profile.model_validate(body)
        except ValidationError as exc:
            problems += _translate(exc, doc, Profile, prefix=(name,))
    return result, problems


BUILTIN_PREFIX = "builtin:"
"""``workflow: builtin:hires_fix`` names a graph shipped with comfyline instead of a file."""


def _check_workflow(order: Order, order_dir: Path, doc: YamlDocument) -> list[Problem]:
    if order.workflow is None:
        return []
    if order.workflow.startswith(BUILTIN_PREFIX):
        from comfyline.workflows import BUILTIN

        name = order.workflow.removeprefix(BUILTIN_PREFIX)
        if name in BUILTIN:
            return []
        allowed = ", ".join(BUILTIN_PREFIX + b for b in BUILTIN)
        return [doc.problem(("workflow",), f"no built-in workflow {name!r} (allowed: {allowed})")]
    target = order_dir / order.workflow
    if not _inside(target, project_root(order_dir)):
        return [
            doc.problem(
                ("workflow",),
                f"{order.workflow!r} is outside the order's project: "
                "copy the workflow beside project.yaml",
            )
        ]
    if not target.is_file():
        return [
            doc.problem(("workflow",), f"{order.workflow!r} does not exist (looked for {target})")
        ]
    try:
        raw = target.read_bytes()[: MAX_WORKFLOW_BYTES + 1]
        if len(raw) > MAX_WORKFLOW_BYTES:
            raise ValueError(f"larger than {MAX_WORKFLOW_BYTES // 2**20} MiB")
        data = json.loads(raw.decode("utf-8-sig"))
    except json.JSONDecodeError as exc:
        return [
            Problem(
                str(target),
                exc.lineno,
                exc.colno,
                "",
                f"not valid JSON: {exc.msg} (the workflow named by {doc.file})",
            )
        ]
    except (ValueError, OSError) as exc:  # UnicodeDecodeError is a ValueError
        return [doc.problem(("workflow",), f"cannot read {order.workflow!r}: {exc}")]
    return _check_graph(data, target, doc)


def _check_graph(data: object, target: Path, doc: YamlDocument) -> list[Problem]:
    from comfyline.workflows.graph import parse_graph

    try:
        parse_graph(data, str(target))
    except WorkflowError as exc:
        return [doc.problem(("workflow",), str(exc))]
    return []


# -- the prompts CSV --------------------------------------------------------------------------


def read_prompts_csv(path: Path) -> tuple[list[PromptEntry], list[Problem]]:
    """Read a list order's CSV: a header row with a ``prompt`` column and optionally
    ``negative``, ``seed``, ``title``, ``keywords`` (separated by ``,`` or ``;`` inside the
    cell). The delimiter may be ``,``, ``;`` (spreadsheets in many locales) or a tab.
    Returns the rows and every problem, located by line and column name."""
    name = str(path)
    try:
        raw = path.read_bytes()[: MAX_CSV_BYTES + 1]
    except OSError as exc:
        return [], [Problem(name, None, None, "", f"cannot read the file: {exc.strerror}")]
    if len(raw) > MAX_CSV_BYTES:
        return [], [
            Problem(
                name,
                None,
                None,
                "",
                f"larger than {MAX_CSV_BYTES // 2**20} MiB: split it into several orders",
            )
        ]
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        return [], [
            Problem(
                name,
                line,
                None,
                "",
                f"byte 0x{raw[exc.start]:02x} is not UTF-8: "
                "save the CSV as UTF-8 ('CSV UTF-8' in spreadsheet programs)",
            )
        ]
    return _parse_csv(text, name)


def _parse_csv(text: str, name: str) -> tuple[list[PromptEntry], list[Problem]]:
    first = text.lstrip("\r\n").split("\n", 1)[0]
    if not first.strip():
        return [], [
            Problem(
                name,
                1,
                None,
                "",
                "the CSV is empty: it needs a header row with a "
                "'prompt' column, then one prompt per row",
            )
        ]
    delimiter = _delimiter(first)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = [cell.strip().lower() for cell in next(reader)]
    except csv.Error as exc:
        return [], [Problem(name, 1, None, "", f"not valid CSV: {exc}")]
    problems = _header_problems(header, name, reader.line_num)
    if problems:
        return [], problems
    return _csv_rows(reader, header, name)


def _delimiter(header: str) -> str:
    for candidate in (",", ";", "\t"):
        if "prompt" in (c.strip().strip('"').lower() for c in header.split(candidate)):
            return candidate
    return ","


def _header_problems(header: list[str], name: str, line: int) -> list[Problem]:
    problems = []
    allowed = ", ".join(CSV_COLUMNS)
    if "prompt" not in header:
        problems.append(
            Problem(
                name,
                line,
                1,
                "",
                f"no 'prompt' column in the header row "
                f"(columns: {', '.join(header)}; allowed: {allowed})",
            )
        )
    for position, column in enumerate(header):
        if column not in CSV_COLUMNS:
            problems.append(
                Problem(
                    name,
                    line,
                    None,
                    column,
                    f"unknown column {column!r}"
                    f"{suggest(column, list(CSV_COLUMNS))} (allowed: {allowed})",
                )
            )
        elif column in header[:position]:
            problems.append(Problem(name, line, None, column, f"column {column!r} appears twice"))
    return problems


def _csv_rows(reader: Any, header: list[str], name: str) -> tuple[list[PromptEntry], list[Problem]]:
    rows: list[PromptEntry] = []
    problems: list[Problem] = []
    start = reader.line_num + 1
    try:
        for cells in reader:
            line, start = start, reader.line_num + 1
            if not any(cell.strip() for cell in cells):
                continue
            if len(rows) >= MAX_IMAGES:
                problems.append(Problem(name, line, None, "", f"more than {MAX_IMAGES:,} rows"))
                break
            entry, found = _csv_entry(cells, header, name, line)
            problems += found
            if entry is not None:
                rows.append(entry)
    except csv.Error as exc:
        problems.append(Problem(name, reader.line_num, None, "", f"not valid CSV: {exc}"))
    if not rows and not problems:
        problems.append(
            Problem(name, None, None, "", "no prompts: add one row per prompt below the header")
        )
    return rows, problems


def _csv_entry(
    cells: list[str], header: list[str], name: str, line: int
) -> tuple[PromptEntry | None, list[Problem]]:
    if len(cells) > len(header):
        return None, [
            Problem(
                name,
                line,
                None,
                "",
                f"{len(cells)} cells but {len(header)} "
                "columns: quote cells that contain the delimiter",
            )
        ]
    values = dict(zip(header, cells, strict=False))
    data: dict[str, Any] = {"prompt": values.get("prompt", "")}
    for column in ("negative", "title"):
        if values.get(column, "").strip():
            data[column] = values[column]
    if values.get("keywords", "").strip():
        data["keywords"] = [k.strip() for k in re.split(r"[;,]", values["keywords"]) if k.strip()]
    seed = values.get("seed", "").strip()
    if seed:
        if not re.fullmatch(r"\d+", seed):
            return None, [
                Problem(
                    name,
                    line,
                    None,
                    "seed",
                    f"must be a whole number from 0 to {COMFY_SEED_MAX}, got {seed!r}",
                )
            ]
        data["seed"] = int(seed)
    try:
        return PromptEntry.model_validate(data), []
    except ValidationError as exc:
        return None, [
            Problem(name, line, None, dotted(tuple(e["loc"])), _reword(e)) for e in exc.errors()
        ]


# ---------------------------------------------------------------------------------------------
# planning


@dataclass(frozen=True, slots=True)
class Slot:
    """One prompt to send, making ``images`` images (the batch size; usually 1).

    ``index`` is 0-based and dense over the order; ``prompt`` and ``negative`` have the order's
    profiles applied; ``stem`` is the file name (without ``.png``) from ``output.naming``; with a
    batch, the adapter names the files ``{stem}_1.png`` ... ``key`` is a stable identity of the
    slot's content: the ledger compares it to find an order file that changed under a run.
    """

    index: int
    prompt_index: int
    repeat: int
    prompt: str
    negative: str
    seed: int
    params: GenerationParams
    stem: str
    key: str
    images: int = 1
    title: str | None = None
    keywords: tuple[str, ...] = ()
    variables: Mapping[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data (for the ledger and the report)."""
        return {
            "index": self.index,
            "prompt_index": self.prompt_index,
            "repeat": self.repeat,
            "prompt": self.prompt,
            "negative": self.negative,
            "seed": self.seed,
            "params": self.params.model_dump(mode="json"),
            "stem": self.stem,
            "key": self.key,
            "images": self.images,
            "title": self.title,
            "keywords": list(self.keywords),
            "variables": dict(self.variables),
        }


@dataclass(frozen=True)
class Plan:
    """What an order makes: its slots, and the seed base they were derived from.

    For ``seed: {mode: random}`` the caller records ``seed_base`` (the ledger does) and passes
    it back as ``plan(..., random_base=...)`` on a resume, so the seeds are the same.
    """

    order_id: str
    seed_base: int
    output_folder: str
    slots: tuple[Slot, ...]

    @property
    def images(self) -> int:
        """How many images the order makes (slots × batch size)."""
        return sum(slot.images for slot in self.slots)

    def __len__(self) -> int:
        return len(self.slots)

    def __iter__(self) -> Iterator[Slot]:
        return iter(self.slots)


def derive_seed(base: int, index: int, salt: int = 0) -> int:
    """The seed of slot ``index`` under ``base``: a hash, so that neighbouring bases or indexes
    give unrelated seeds, in ``0..SEED_MAX``."""
    digest = hashlib.sha256(f"comfyline/seed/{base}/{index}/{salt}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & SEED_MAX


def plan(
    order: Order | LoadedOrder, order_dir: Path | str = "", *, random_base: int | None = None
) -> Plan:
    """The slots of ``order`` (whose file is in ``order_dir``), one per prompt sent.

    Deterministic: the same order, files and base give the same slots. With
    ``seed: {mode: random}`` the base is ``random_base`` when given (a recorded one, on a
    resume) and drawn now otherwise; ``Plan.seed_base`` says which. Raises :class:`OrderError`
    if a file the order names (CSV, profiles, workflow) is missing or invalid.
    """
    if isinstance(order, LoadedOrder):
        order_dir = order.folder
        order = order.order
    resolved, problems = _resolve(order, Path(order_dir), None)
    if problems:
        raise OrderError(_sorted(problems))
    base = _seed_base(order, random_base)
    params = order.params
    prompts = list(_base_prompts(order, resolved, base))
    per_prompt = order.count // params.batch_size
    slots: list[Slot] = []
    used: set[int] = {entry.seed for _, entry in prompts if entry.seed is not None}
    for prompt_index, (entry_vars, entry) in enumerate(prompts):
        for repeat in range(per_prompt):
            index = len(slots)
            seed = _slot_seed(base, index, repeat, entry, used)
            slots.append(
                _slot(order, resolved, params, index, prompt_index, repeat, seed, entry, entry_vars)
            )
    return Plan(order.id, base, order.output_folder, tuple(slots))


def _seed_base(order: Order, random_base: int | None) -> int:
    if order.seed.mode == "fixed":
        assert order.seed.base is not None
        return order.seed.base
    if random_base is None:
        return secrets.randbelow(SEED_MAX + 1)
    if not 0 <= random_base <= SEED_MAX:
        raise ValueError(f"random_base must be in 0..{SEED_MAX}, got {random_base}")
    return random_base


def _slot_seed(base: int, index: int, repeat: int, entry: PromptEntry, used: set[int]) -> int:
    if entry.seed is not None:
        return (entry.seed + repeat) % (COMFY_SEED_MAX + 1)
    salt = 0
    seed = derive_seed(base, index)
    while seed in used:  # never two slots with one seed (a duplicate image for one prompt)
        salt += 1
        seed = derive_seed(base, index, salt)
    used.add(seed)
    return seed


def _base_prompts(
    order: Order, resolved: _Resolved, base: int
) -> Iterator[tuple[dict[str, str], PromptEntry]]:
    if isinstance(order, SingleOrder):
        yield {}, PromptEntry(prompt=order.prompt)
    elif isinstance(order, ListOrder):
        for entry in resolved.prompts:
            yield {}, entry
    else:
        for values in _combinations(order, base):
            yield values, PromptEntry(prompt=order.template.format(**values))


def _combinations(order: VariationsOrder, base: int) -> Iterator[dict[str, str]]:
    total = order.combinations
    if order.mode == "sample":
        assert order.sample is not None
        # random.Random seeded with a str is stable across runs and platforms.
        chosen: Sequence[int] = sorted(
            random.Random(f"comfyline/sample/{base}").sample(range(total), order.sample)
        )
    else:
        chosen = range(total)
    names = list(order.variables)
    for number in chosen:
        values: dict[str, str] = {}
        for name in reversed(names):  # the last variable changes fastest, like itertools.product
            options = order.variables[name]
            number, pick = divmod(number, len(options))
            values[name] = options[pick]
        yield {name: values[name] for name in names}


def _slot(
    order: Order,
    resolved: _Resolved,
    params: GenerationParams,
    index: int,
    prompt_index: int,
    repeat: int,
    seed: int,
    entry: PromptEntry,
    variables: dict[str, str],
) -> Slot:
    prompt = _join([entry.prompt, *(p.prompt for p in resolved.profiles)])
    negative = _join([order.negative, entry.negative, *(p.negative for p in resolved.profiles)])
    stem = order.output.naming.format(
        index=index, number=index + 1, seed=seed, id=order.id, level=order.quality
    )
    sale = order.sale
    title = entry.title or (sale.title if sale else None)
    keywords = tuple(dict.fromkeys([*entry.keywords, *(sale.keywords if sale else ())]))
    identity = {
        "prompt": prompt,
        "negative": negative,
        "seed": seed,
        "stem": stem,
        "params": params.model_dump(mode="json"),
        "checkpoint": order.checkpoint,
        "workflow": order.workflow,
        "inputs": order.inputs,
        "nodes": order.nodes.model_dump(exclude_none=True),
    }
    key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:32]
    return Slot(
        index=index,
        prompt_index=prompt_index,
        repeat=repeat,
        prompt=prompt,
        negative=negative,
        seed=seed,
        params=params,
        stem=stem,
        key=key,
        images=params.batch_size,
        title=title,
        keywords=keywords,
        variables=variables,
    )


def _join(parts: Iterable[str]) -> str:
    return ", ".join(part.strip().rstrip(",").strip() for part in parts if part.strip())


# ---------------------------------------------------------------------------------------------
# finding and checking many orders (comfyline validate)


def find_orders(paths: Iterable[Path | str]) -> tuple[list[Path], list[Problem]]:
    """The order files named by ``paths``: a file is itself; a folder gives its own
    ``project.yaml`` and every ``project.yaml`` below it (hidden folders skipped). A path that
    does not exist, or a folder without orders, is a problem."""
    found: list[Path] = []
    problems: list[Problem] = []
    for raw in paths:
        path = Path(raw)
        if path.is_file():
            found.append(path)
        elif path.is_dir():
            below = sorted(_walk_orders(path))
            if not below:
                problems.append(
                    Problem(
                        str(path), None, None, "", f"no {ORDER_FILE} in this folder or below it"
                    )
                )
            found += below
        else:
            problems.append(Problem(str(path), None, None, "", "no such file or folder"))
    return list(dict.fromkeys(found)), problems


def _walk_orders(root: Path) -> Iterator[Path]:
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d not in _SKIP_DIRS]
        if ORDER_FILE in files:
            yield Path(folder) / ORDER_FILE


@dataclass(frozen=True)
class OrderCheck:
    """The outcome of checking one order file: the order and its plan, or its problems."""

    path: Path
    order: Order | None = None
    plan: Plan | None = None
    problems: tuple[Problem, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.problems


def check_order(path: Path) -> OrderCheck:
    """Load and plan one order file without generating or writing anything."""
    try:
        order = load_order(path)
        # The count does not depend on the base: plan with 0 rather than drawing one.
        planned = plan(order, path.parent, random_base=0)
    except OrderError as exc:
        return OrderCheck(path=path, problems=exc.problems)
    return OrderCheck(path=path, order=order, plan=planned)


def check_orders(paths: Iterable[Path | str]) -> tuple[list[OrderCheck], list[Problem]]:
    """:func:`check_order` for every order :func:`find_orders` finds in ``paths``; the second
    value holds the problems of the paths themselves (missing, no orders found)."""
    files, problems = find_orders(paths)
    return [check_order(path) for path in files], problems


__all__ = [
    "CSV_COLUMNS",
    "ORDER_FILE",
    "OrderCheck",
    "Plan",
    "Slot",
    "check_order",
    "check_orders",
    "derive_seed",
    "find_orders",
    "load_order",
    "parse_profiles",
    "plan",
    "project_root",
    "read_profiles",
    "read_prompts_csv",
    "shared_profiles_path",
]


# ---------------------------------------------------------------------------------------------
# loaded once (interim: the orders package replaces this section)


@dataclass(frozen=True)
class LoadedOrder:
    """An order read once: the model, its file's bytes and hash, and its resolved workflow."""

    order: Order
    file: Path
    folder: Path
    raw: bytes
    sha256: str
    workflow: Workflow | None
    sources_sha256: str = ""


def load(path: Path | str) -> LoadedOrder:
    """Read and check the order at ``path`` (its project.yaml or its folder), once."""
    path = Path(path)
    file = path / ORDER_FILE if path.is_dir() else path
    order = load_order(file)
    raw = file.read_bytes()
    workflow = None
    if order.workflow is not None:
        if order.workflow.startswith(BUILTIN_PREFIX):
            workflow = Workflow.builtin(order.workflow.removeprefix(BUILTIN_PREFIX))
        else:
            workflow = Workflow.load(file.parent / order.workflow)
    return LoadedOrder(order, file, file.parent, raw, hashlib.sha256(raw).hexdigest(), workflow)
