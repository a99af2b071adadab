"""What an order reads besides its own file: the prompts CSV, profile files, the workflow.

Every file is read once, through :func:`read_bounded` (its size checked before a byte is
read, so a 3 GB file costs nothing), and hashed: :class:`SourceFile` lists each with the sha256
of the bytes read, so that a resume can tell a file edited between runs.
:func:`resolve` reads all of them for one order and returns what they hold, with every problem
found, located in the file at fault (``prompts.csv:3: seed: ...``) or at the order key that
names it (``project.yaml:5:11: workflow: ...``).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import stat
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from comfyline import profiles as builtin_profiles
from comfyline.errors import Problem, WorkflowError
from comfyline.orders.problems import reword, translate
from comfyline.orders.yaml_source import (
    MAX_YAML_BYTES,
    YamlDocument,
    dotted,
    parse_yaml,
    parse_yaml_bytes,
)
from comfyline.schemas.order import (
    COMFY_SEED_MAX,
    MAX_IMAGES,
    ListOrder,
    Order,
    Profile,
    PromptEntry,
    suggest,
)
from comfyline.workflows import BUILTIN, Workflow, parse_graph
from comfyline.workflows.models import add_models

SHARED_PROFILES_FILE = "profiles.yaml"
CSV_COLUMNS = ("prompt", "negative", "seed", "title", "keywords")
MAX_CSV_BYTES = 16 * 1024 * 1024
MAX_WORKFLOW_BYTES = 16 * 1024 * 1024
BUILTIN_PREFIX = "builtin:"
"""``workflow: builtin:hires_fix`` names a graph shipped with comfyline instead of a file."""
_SEED_DIGITS = len(str(COMFY_SEED_MAX))


@dataclass(frozen=True)
class SourceFile:
    """A file an order uses besides its own, and the sha256 of the bytes that were read."""

    path: Path
    sha256: str


@dataclass(frozen=True)
class Resolved:
    """What an order's other files hold: a list order's prompts (inline or CSV rows), the
    profiles it names (in its order), its workflow graph (None: the default txt2img), and
    the files read."""

    entries: tuple[PromptEntry, ...] = ()
    profiles: tuple[Profile, ...] = ()
    workflow: Workflow | None = None
    files: tuple[SourceFile, ...] = ()


# -- reading a file within a size limit ---------------------------------------------------------


def read_bounded(path: Path, limit: int, too_large: str) -> tuple[bytes, str | None]:
    """The bytes of ``path``, or why they cannot be had: ``(b"", reason)``.

    The size is checked with ``stat`` before anything is read (``too_large`` is the reason
    then), and at most ``limit + 1`` bytes are ever read, so a file that grows meanwhile, or
    a huge one, costs no memory. Folders and special files (a FIFO, a device) are refused.
    """
    try:
        info = path.stat()
        if stat.S_ISDIR(info.st_mode):
            return b"", "is a folder, not a file"
        if not stat.S_ISREG(info.st_mode):
            return b"", "is not a regular file"
        if info.st_size > limit:
            return b"", too_large
        with path.open("rb") as stream:
            raw = stream.read(limit + 1)
    except FileNotFoundError:
        return b"", "no such file"
    except OSError as exc:
        return b"", f"cannot read the file: {exc.strerror or exc}"
    return (b"", too_large) if len(raw) > limit else (raw, None)


@dataclass
class _Reader:
    """One order's reading of its other files: what was read (hashed) and what went wrong."""

    order: Order
    folder: Path
    doc: YamlDocument
    files: list[SourceFile] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    def read(self, path: Path, limit: int, too_large: str) -> tuple[bytes | None, str | None]:
        raw, reason = read_bounded(path, limit, too_large)
        if reason is not None:
            return None, reason
        self.files.append(SourceFile(path, hashlib.sha256(raw).hexdigest()))
        return raw, None

    def refuse(self, key: str, message: str) -> None:
        self.problems.append(self.doc.problem((key,), message))


def resolve(order: Order, folder: Path, doc: YamlDocument) -> tuple[Resolved, list[Problem]]:
    """Read everything ``order`` (whose file is ``doc``, in ``folder``) names outside its own
    file; what they hold, and every problem found."""
    reader = _Reader(order, folder, doc)
    entries = _list_entries(reader)
    profiles = _order_profiles(reader)
    workflow = _with_models(reader, _workflow(reader))
    if isinstance(order, ListOrder) and order.prompts_file and entries:
        total = len(entries) * order.count
        if total > MAX_IMAGES:
            reader.refuse(
                "count",
                f"{len(entries):,} prompts × count {order.count} = {total:,} images, more than "
                f"the {MAX_IMAGES:,} one order may make: split the CSV",
            )
    files = tuple(reader.files)
    return Resolved(tuple(entries), tuple(profiles), workflow, files), reader.problems


# -- where files may be -------------------------------------------------------------------------


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


# -- the prompts of a list order -----------------------------------------------------------------


def _list_entries(reader: _Reader) -> list[PromptEntry]:
    order = reader.order
    if not isinstance(order, ListOrder):
        return []
    if order.prompts is not None:
        return list(order.prompts)
    assert order.prompts_file is not None
    target = reader.folder / order.prompts_file
    if not _inside(target, reader.folder):
        reader.refuse(
            "prompts_file",
            f"{order.prompts_file!r} is outside the order's folder: put the CSV beside "
            "project.yaml",
        )
        return []
    if not target.exists():
        reader.refuse(
            "prompts_file", f"{order.prompts_file!r} does not exist (looked for {target})"
        )
        return []
    too_large = f"larger than {MAX_CSV_BYTES // 2**20} MiB: split it into several orders"
    raw, reason = reader.read(target, MAX_CSV_BYTES, too_large)
    if raw is None:
        reader.problems.append(Problem(str(target), None, None, "", reason or ""))
        return []
    entries, problems = parse_prompts_csv(raw, str(target))
    reader.problems.extend(problems)
    return entries


def parse_prompts_csv(raw: bytes, name: str) -> tuple[list[PromptEntry], list[Problem]]:
    """A list order's CSV (the bytes of the file called ``name``): a header row with a
    ``prompt`` column and optionally ``negative``, ``seed``, ``title``, ``keywords``
    (separated by ``,`` or ``;`` inside the cell). The delimiter may be ``,``, ``;``
    (spreadsheets in many locales) or a tab. Returns the rows and every problem, located by
    line and column name."""
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
        if not re.fullmatch(r"\d+", seed) or len(seed.lstrip("0")) > _SEED_DIGITS:
            # A 5,000-digit seed is refused before int() would choke on it.
            shown = f"a number with {len(seed):,} digits" if seed.isdigit() else repr(seed[:60])
            return None, [
                Problem(
                    name,
                    line,
                    None,
                    "seed",
                    f"must be a whole number from 0 to {COMFY_SEED_MAX}, got {shown}",
                )
            ]
        data["seed"] = int(seed)
    try:
        return PromptEntry.model_validate(data), []
    except ValidationError as exc:
        return None, [
            Problem(name, line, None, dotted(tuple(e["loc"])), reword(e)) for e in exc.errors()
        ]


# -- profiles -----------------------------------------------------------------------------------


def _order_profiles(reader: _Reader) -> list[Profile]:
    order = reader.order
    if not order.profiles and order.profiles_file is None:
        return []
    available = _available_profiles(reader)
    chosen: list[Profile] = []
    for position, name in enumerate(order.profiles):
        if name in available:
            chosen.append(available[name])
        else:
            names = sorted(available)
            reader.problems.append(
                reader.doc.problem(
                    ("profiles", position),
                    f"unknown profile {name!r}{suggest(name, names)} (allowed: {', '.join(names)})",
                )
            )
    return chosen


def _available_profiles(reader: _Reader) -> dict[str, Profile]:
    available, problems = parse_profiles(builtin_profiles.builtin_text(), "comfyline:profiles")
    reader.problems.extend(problems)
    shared = shared_profiles_path(reader.folder)
    if shared is not None and shared.exists():
        available.update(_read_profiles(reader, shared))
    profiles_file = reader.order.profiles_file
    if profiles_file is not None:
        target = reader.folder / profiles_file
        if not _inside(target, project_root(reader.folder)):
            reader.refuse(
                "profiles_file",
                f"{profiles_file!r} is outside the project: keep profile files in it",
            )
        elif not target.exists():
            reader.refuse(
                "profiles_file", f"{profiles_file!r} does not exist (looked for {target})"
            )
        else:
            available.update(_read_profiles(reader, target))
    return available


def _read_profiles(reader: _Reader, path: Path) -> dict[str, Profile]:
    too_large = (
        f"the file is larger than {MAX_YAML_BYTES // 1024} KiB; a profiles file holds a few "
        "short profiles"
    )
    raw, reason = reader.read(path, MAX_YAML_BYTES, too_large)
    if raw is None:
        reader.problems.append(Problem(str(path), None, None, "", reason or ""))
        return {}
    doc, problems = parse_yaml_bytes(raw, str(path))
    found, problems = _profiles_from(doc, problems) if doc is not None else ({}, problems)
    reader.problems.extend(problems)
    return found


def parse_profiles(text: str, name: str) -> tuple[dict[str, Profile], list[Problem]]:
    """A profiles file's text (``name: {prompt, negative, description}``; ``name`` is the
    file's, used in problems): the profiles by name, and every problem."""
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
            problems += translate(exc, doc, Profile, prefix=(name,))
    return result, problems


# -- the workflow ---------------------------------------------------------------------------------


def _workflow(reader: _Reader) -> Workflow | None:
    named = reader.order.workflow
    if named is None:
        return None
    if named.startswith(BUILTIN_PREFIX):
        name = named.removeprefix(BUILTIN_PREFIX)
        if name in BUILTIN:
            return Workflow.builtin(name)
        allowed = ", ".join(BUILTIN_PREFIX + b for b in BUILTIN)
        reader.refuse("workflow", f"no built-in workflow {name!r} (allowed: {allowed})")
        return None
    target = reader.folder / named
    if not _inside(target, project_root(reader.folder)):
        reader.refuse(
            "workflow",
            f"{named!r} is outside the order's project: copy the workflow beside project.yaml",
        )
        return None
    if not target.exists():
        reader.refuse("workflow", f"{named!r} does not exist (looked for {target})")
        return None
    too_large = f"larger than {MAX_WORKFLOW_BYTES // 2**20} MiB"
    raw, reason = reader.read(target, MAX_WORKFLOW_BYTES, too_large)
    if raw is None:
        reader.refuse("workflow", f"cannot read {named!r}: {reason}")
        return None
    return _graph(reader, target, raw)


def _with_models(reader: _Reader, workflow: Workflow | None) -> Workflow | None:
    """The order's graph grown with its ``loras`` and ``vae`` (see
    :mod:`comfyline.workflows.models`); the default txt2img is used when none is named."""
    order = reader.order
    if not order.loras and order.vae is None:
        return workflow
    if workflow is None:
        if order.workflow is not None:
            return None  # the workflow itself was refused; that is reported already
        workflow = Workflow.builtin("txt2img")
    loras = [(lora.name, *lora.strengths) for lora in order.loras]
    named = order.nodes.checkpoint or workflow.roles.get("checkpoint")
    try:
        graph = add_models(workflow.graph, loras, order.vae, named)
    except WorkflowError as exc:
        reader.refuse("loras" if order.loras else "vae", str(exc))
        return None
    return replace(workflow, graph=graph)


def _graph(reader: _Reader, target: Path, raw: bytes) -> Workflow | None:
    """The workflow in ``raw`` (the bytes of ``target``): what ``Workflow.load`` makes of the
    file, from the bytes already read within the size limit."""
    named = reader.order.workflow
    try:
        data = json.loads(raw.decode("utf-8-sig"))
        graph = parse_graph(data, str(target))
    except json.JSONDecodeError as exc:
        reader.problems.append(
            Problem(
                str(target),
                exc.lineno,
                exc.colno,
                "",
                f"not valid JSON: {exc.msg} (the workflow named by {reader.doc.file})",
            )
        )
        return None
    except RecursionError:
        reader.refuse("workflow", f"cannot read {named!r}: the JSON is nested too deeply")
        return None
    except WorkflowError as exc:
        reader.refuse("workflow", str(exc))
        return None
    except UnicodeDecodeError as exc:
        reader.refuse("workflow", f"cannot read {named!r}: {exc}: save it as UTF-8")
        return None
    except ValueError:  # Python's limit on converting a number of over 4,300 digits
        reader.refuse("workflow", f"cannot read {named!r}: it holds a number of absurd length")
        return None
    return Workflow(name=target.stem, graph=graph, source=str(target))
