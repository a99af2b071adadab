"""The order contract: what ``automation/orders/<id>/project.yaml`` may hold (the user's
``core/schemas/order.py``).

Every model is strict (``extra="forbid"``: a misspelled key is an error, not a silent default;
``strict=True``: ``steps: "20"`` is an error, not a guess) and frozen. An order is one of three
types, told apart by ``type``: :class:`SingleOrder`, :class:`VariationsOrder` and
:class:`ListOrder`; :data:`Order` is their union. Rules that span several fields are checked by
model validators and reported with the path of the field to fix (a ``comfyline_rules`` error
whose ``ctx["problems"]`` holds ``(path, message)`` pairs).
Checks that need the file system (the CSV beside the order, profile files, the workflow file)
live in :mod:`comfyline.orders`; the rules for portable file and folder names in
:mod:`comfyline.names`. The user-facing description is ``docs/ORDER_CONTRACT.md``;
a test keeps the two in step.
"""

from __future__ import annotations

import math
import re
import string
from collections.abc import Mapping, Sequence
from typing import Annotated, Literal, TypeAlias

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    Strict,
    TypeAdapter,
    model_validator,
)
from pydantic_core import PydanticCustomError

from comfyline.errors import ConfigError
from comfyline.names import TEMP_NAME_EXTRA_BYTES, name_problem
from comfyline.presets import LEVEL_ORDER, GenerationParams, LevelName, Size, params_for
from comfyline.quality import QcSettings

MAX_IMAGES = 100_000
"""Most images one order may ask for. More is a typo (``count: 1000000``), not a plan."""
MAX_VALUES_PER_VARIABLE = 10_000
MAX_PROMPT_CHARS = 10_000
SEED_MAX = 2**53 - 1
"""Largest seed comfyline derives or accepts as a base: the largest integer every JSON reader
(JavaScript included) keeps exactly, so reports and PNG metadata never round a seed."""
COMFY_SEED_MAX = 2**64 - 1
"""Largest seed ComfyUI accepts (explicit per-prompt seeds may go up to it)."""

DEFAULT_NAMING = "{index:04d}_{seed}"
NAMING_FIELDS: Mapping[str, object] = {
    "index": 12,
    "number": 13,
    "seed": 123456789,
    "id": "order-id",
    "level": "standard",
}
"""The fields a naming template may use, with sample values to test a template against."""

_ID_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_PROFILE_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
_VARIABLE_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
# A folder or file name part: letters (any script), digits, space, dot, dash, underscore; no
# leading dot or space and no trailing dot or space (Windows drops them silently).
_NAME_PART_RE = re.compile(r"[\w-](?:[\w .()+-]{0,98}[\w)-])?")


PathKey = tuple[str | int, ...]


class _Violations:
    """Rules broken in one model, each with the path (inside the model) of the field to fix.

    :meth:`check` raises them together as one ``comfyline_rules`` error whose
    ``ctx["problems"]`` holds the ``(path, message)`` pairs; :mod:`comfyline.orders` turns them
    into located problems, and ``str()`` of the error reads well on its own.
    """

    def __init__(self) -> None:
        self.found: list[tuple[PathKey, str]] = []

    def add(self, path: PathKey | str, message: str) -> None:
        self.found.append(((path,) if isinstance(path, str) else path, message))

    def check(self) -> None:
        if self.found:
            summary = "; ".join(
                f"{'.'.join(map(str, path)) or 'order'}: {message}" for path, message in self.found
            )
            context = {"summary": summary, "problems": list(self.found)}
            raise PydanticCustomError("comfyline_rules", "{summary}", context)


# -- constrained scalar types ------------------------------------------------------------------


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


def _check_id(value: str) -> str:
    if not _ID_RE.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a valid order id: use 1 to 64 lower-case letters, digits, '.', '_' "
            "or '-', starting with a letter or digit (it is also the order's folder name)"
        )
    # The id names the order's folder (and its output folder by default): it must be a name
    # every system accepts.
    problem = name_problem(value)
    if problem:
        raise ValueError(f"{problem} (the id is also the order's folder name)")
    return value


def _check_profile_name(value: str) -> str:
    if not _PROFILE_RE.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a valid profile name: use lower-case letters, digits, '_' or '-'"
        )
    return value


def _check_relative_file(value: str) -> str:
    if "\\" in value:
        raise ValueError(f"{value!r}: write paths with '/', not '\\'")
    if value.startswith("/") or re.match(r"[A-Za-z]:", value) or value.startswith("~"):
        raise ValueError(f"{value!r} is absolute: give a path relative to the order file")
    if not value.strip() or value.endswith("/"):
        raise ValueError(f"{value!r} does not name a file")
    return value


def _input_value(value: object) -> str | int | float | bool:
    if isinstance(value, str | int | float | bool):
        return value
    raise ValueError(f"must be text, a number or true/false, got {type(value).__name__} {value!r}")


def _scalar_text(value: object) -> object:
    # Variable values may be written as numbers (sizes, years); they are text in the prompt.
    # Booleans are refused: `yes` would become "True", which no one means.
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return value


Text = Annotated[str, Field(max_length=MAX_PROMPT_CHARS)]
NonBlank = Annotated[str, Field(max_length=MAX_PROMPT_CHARS), AfterValidator(_not_blank)]
ShortText = Annotated[str, Field(max_length=200), AfterValidator(_not_blank)]
OrderId = Annotated[str, AfterValidator(_check_id)]
ProfileName = Annotated[str, AfterValidator(_check_profile_name)]
RelativeFile = Annotated[str, Field(max_length=500), AfterValidator(_check_relative_file)]
Keyword = Annotated[str, Field(max_length=100), AfterValidator(_not_blank)]
Keywords = Annotated[tuple[Keyword, ...], Strict(False), Field(max_length=200)]
InputValue = Annotated[str | int | float | bool, PlainValidator(_input_value)]


def _variable_value(value: object) -> str:
    value = _scalar_text(value)
    if not isinstance(value, str):
        raise ValueError(f"must be text or a number, got {type(value).__name__} {value!r}")
    if len(value) > 1000:
        raise ValueError(f"is {len(value)} characters long; at most 1000")
    return _no_lora_tag(_not_blank(value))


VariableValue = Annotated[str, PlainValidator(_variable_value)]

# A1111's prompt syntax for a LoRA; ComfyUI passes it to the text encoder as plain words.
_LORA_TAG_RE = re.compile(r"<lora:([^:>]*)(?::([^:>]*))?(?::[^>]*)?>", re.IGNORECASE)


def _no_lora_tag(value: str) -> str:
    found = _LORA_TAG_RE.search(value)
    if found:
        name = found.group(1).strip() or "NAME"
        strength = found.group(2).strip() if found.group(2) else "1.0"
        raise ValueError(
            f"{found.group(0)!r} is A1111 syntax: ComfyUI reads it as plain text and applies no "
            f"LoRA; remove it from the text and add to the order: "
            f"loras: [{{name: {name}.safetensors, strength: {strength}}}]"
        )
    return value


PromptText = Annotated[Text, AfterValidator(_no_lora_tag)]
NonBlankPrompt = Annotated[NonBlank, AfterValidator(_no_lora_tag)]

ASPECTS: Mapping[str, tuple[int, int]] = {
    "1:1": (1, 1),
    "3:2": (3, 2),
    "2:3": (2, 3),
    "16:9": (16, 9),
    "9:16": (9, 16),
}
"""The ``aspect`` values an order may give, as (width, height) ratios."""


def aspect_size(side: int, aspect: str) -> tuple[int, int]:
    """(width, height) of ``aspect`` holding about the pixels of a ``side`` x ``side`` square,
    each rounded to the nearest multiple of 8 (ComfyUI's latents are 1/8 of the image).

    >>> aspect_size(320, "3:2")
    (392, 264)
    """
    across, down = ASPECTS[aspect]
    ratio = math.sqrt(across / down)
    return _round8(side * ratio), _round8(side / ratio)


def _aspect_value(value: object) -> object:
    # YAML 1.1 reads an unquoted 3:2 as the base-60 number 182 (3*60+2): take it back to the
    # text that was written. No one writes `aspect: 182`; any other number is refused as such.
    if isinstance(value, int) and not isinstance(value, bool):
        for name, (across, down) in ASPECTS.items():
            if value == across * 60 + down:
                return name
    return value


Aspect = Annotated[Literal["1:1", "3:2", "2:3", "16:9", "9:16"], BeforeValidator(_aspect_value)]


def _round8(value: float) -> int:
    return max(8, int(math.floor(value / 8 + 0.5)) * 8)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


# -- parts of an order ------------------------------------------------------------------------


class Overrides(_Model):
    """Changes to the quality level's parameters; each key optional. Checked like
    :class:`comfyline.presets.GenerationParams` (sizes 64..8192 and multiples of 8...)."""

    width: Size | None = Field(default=None, description="Image width in pixels.")
    height: Size | None = Field(default=None, description="Image height in pixels.")
    steps: int | None = Field(default=None, ge=1, le=1000, description="Sampling steps.")
    cfg: float | None = Field(default=None, gt=0, le=100, description="Classifier-free guidance.")
    sampler: str | None = Field(default=None, min_length=1, description="ComfyUI sampler name.")
    scheduler: str | None = Field(default=None, min_length=1, description="ComfyUI scheduler.")
    batch_size: int | None = Field(
        default=None, ge=1, le=64, description="Images per prompt sent (one slot)."
    )
    denoise: float | None = Field(default=None, gt=0, le=1, description="Denoising strength.")


def _lora_entry(value: object) -> object:
    return {"name": value} if isinstance(value, str) else value


class LoraSpec(_Model):
    """One LoRA applied to the checkpoint (a LoraLoader node in the graph)."""

    name: ShortText = Field(description="LoRA file name on the server (models/loras).")
    strength: float = Field(
        default=1.0, ge=-100, le=100, description="Strength on the model (strength_model)."
    )
    clip_strength: float | None = Field(
        default=None,
        ge=-100,
        le=100,
        description="Strength on the text encoder (strength_clip); default: strength.",
    )

    @property
    def strengths(self) -> tuple[float, float]:
        """(model, clip) strengths as the LoraLoader node takes them."""
        clip = self.strength if self.clip_strength is None else self.clip_strength
        return self.strength, clip


LoraEntry = Annotated[LoraSpec, BeforeValidator(_lora_entry)]


class SeedPolicy(_Model):
    """Where seeds come from. Each slot's seed is derived from ``base`` and the slot's index;
    with ``mode: random`` the base is drawn once when the order is first planned and recorded."""

    mode: Literal["fixed", "random"] = Field(
        default="random", description="fixed: use `base`; random: draw a base once, record it."
    )
    base: int | None = Field(
        default=None, ge=0, le=SEED_MAX, description="The base seed (mode fixed only)."
    )

    @model_validator(mode="after")
    def _base_fits_mode(self) -> SeedPolicy:
        rules = _Violations()
        if self.mode == "fixed" and self.base is None:
            rules.add("base", "mode 'fixed' needs a base seed, e.g. base: 1234")
        if self.mode == "random" and self.base is not None:
            rules.add(
                "base",
                "a base seed is only used with mode: fixed (add mode: fixed, or "
                "remove base to have one drawn and recorded)",
            )
        rules.check()
        return self


class OutputSpec(_Model):
    """Where the images go and what their files are called."""

    folder: str | None = Field(
        default=None,
        max_length=500,
        description="Folder below the output root (default: the order id); no '..', not absolute.",
    )
    naming: str = Field(
        default=DEFAULT_NAMING,
        max_length=200,
        description="File name template (without .png); fields: " + ", ".join(NAMING_FIELDS),
    )

    @model_validator(mode="after")
    def _safe(self) -> OutputSpec:
        rules = _Violations()
        if self.folder is not None and (problem := folder_problem(self.folder)):
            rules.add("folder", problem)
        if problem := naming_problem(self.naming):
            rules.add("naming", problem)
        rules.check()
        return self


class UpscaleSpec(_Model):
    """How images are brought to a marketplace's size before export."""

    model: ShortText | None = Field(
        default=None,
        description="An upscale model on the ComfyUI server (e.g. 4x-UltraSharp.pth): the "
        "images go through builtin:upscale there. None: Lanczos on the CPU (Pillow).",
    )


class SaleInfo(_Model):
    """Sale metadata carried into the report, each image, and the marketplace exports."""

    title: ShortText | None = Field(default=None, description="Title for the whole series.")
    keywords: Keywords = Field(default=(), description="Keywords for every image.")
    category: ShortText | None = Field(default=None, description="Marketplace category.")
    description: Text | None = Field(default=None, description="Longer description.")
    review: Literal["auto", "required"] = Field(
        default="auto",
        description="auto: every image that passes the quality checks is sold; required: "
        "only the images approved with 'comfyline review --approve'.",
    )
    markets: Annotated[tuple[ShortText, ...], Strict(False)] = Field(
        default=(), description="Marketplaces 'comfyline export' packages for by default."
    )
    upscale: UpscaleSpec = Field(
        default_factory=UpscaleSpec, description="How images reach the market's size."
    )
    min_megapixels: float | None = Field(
        default=None, gt=0, le=400, description="Upscale to at least this (over the markets')."
    )
    max_per_motif: int | None = Field(
        default=None, ge=1, le=100, description="Near-duplicates kept per motif in a package."
    )


_CLOCK_RE = re.compile(r"([01][0-9]|2[0-3]):[0-5][0-9]")


def _clock_time(value: object) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        # YAML 1.1 reads an unquoted 22:00 as a base-60 number (1320): say what to write.
        hours, minutes = divmod(value, 60)
        raise ValueError(
            f'write the time in quotes, e.g. "{hours:02d}:{minutes:02d}" (YAML reads an '
            f"unquoted time as the number {value})"
        )
    if not isinstance(value, str) or not _CLOCK_RE.fullmatch(value):
        raise ValueError(f'must be a time of day "HH:MM" (00:00 to 23:59), got {value!r}')
    return value


ClockTime = Annotated[str, PlainValidator(_clock_time)]


class Schedule(_Model):
    """When ``comfyline line`` may send the order's prompts, in local time of day: from
    ``after`` to ``before``; a window may span midnight (``after: "22:00"``,
    ``before: "07:00"``)."""

    after: ClockTime | None = Field(default=None, description="Not before this time (HH:MM).")
    before: ClockTime | None = Field(default=None, description="Not from this time on (HH:MM).")

    @model_validator(mode="after")
    def _window(self) -> Schedule:
        if self.after is None and self.before is None:
            raise ValueError('give after, before or both, e.g. {after: "22:00", before: "07:00"}')
        if self.after is not None and self.after == self.before:
            raise ValueError(f"after and before are both {self.after!r}: the window is empty")
        return self

    def allows(self, hour: int, minute: int) -> bool:
        """Whether the time of day ``hour:minute`` is inside the window."""
        now = f"{hour:02d}:{minute:02d}"
        after, before = self.after or "00:00", self.before or "24:00"
        if after < before:
            return after <= now < before
        return now >= after or now < before  # it spans midnight


class NodeNames(_Model):
    """Which node plays a role, by title or id, where a custom workflow is ambiguous."""

    sampler: ShortText | None = Field(default=None, description="The sampler node to fill.")
    positive: ShortText | None = Field(default=None, description="The prompt text node.")
    negative: ShortText | None = Field(default=None, description="The negative text node.")
    latent: ShortText | None = Field(default=None, description="The empty-latent (size) node.")
    checkpoint: ShortText | None = Field(default=None, description="The checkpoint loader.")
    save: ShortText | None = Field(default=None, description="The save node to collect.")


class Profile(_Model):
    """A named, reusable addition to prompts: text appended to the prompt and to the negative."""

    prompt: PromptText = Field(default="", description="Appended to the prompt.")
    negative: PromptText = Field(default="", description="Appended to the negative prompt.")
    description: Text = Field(default="", description="What the profile is for.")

    @model_validator(mode="after")
    def _adds_something(self) -> Profile:
        if not self.prompt.strip() and not self.negative.strip():
            rules = _Violations()
            rules.add((), "a profile must add a prompt, a negative, or both")
            rules.check()
        return self


class PromptEntry(_Model):
    """One prompt of a list order: inline (a string or a mapping) or a CSV row."""

    prompt: NonBlankPrompt = Field(description="The prompt text.")
    negative: PromptText = Field(default="", description="Added to the order's negative.")
    seed: int | None = Field(
        default=None,
        ge=0,
        le=COMFY_SEED_MAX,
        description="Exact seed of its first image.",
    )
    title: ShortText | None = Field(default=None, description="Sale title for this prompt.")
    keywords: Keywords = Field(default=(), description="Sale keywords added for this prompt.")


def _entry(value: object) -> object:
    return {"prompt": value} if isinstance(value, str) else value


Entry = Annotated[PromptEntry, BeforeValidator(_entry)]


# -- the order --------------------------------------------------------------------------------


class OrderBase(_Model):
    """The fields every order type has."""

    id: OrderId = Field(description="Equals the order's folder name; safe characters only.")
    title: Text = Field(default="", description="A human title for the series.")
    description: Text = Field(default="", description="Free notes about the order.")
    quality: LevelName = Field(
        default="standard", description="Quality level: " + ", ".join(LEVEL_ORDER)
    )
    overrides: Overrides = Field(default_factory=Overrides, description="Changes to the level.")
    count: int = Field(default=1, ge=1, le=MAX_IMAGES, description="Images per prompt.")
    negative: PromptText = Field(default="", description="Negative prompt for every image.")
    profiles: Annotated[tuple[ProfileName, ...], Strict(False)] = Field(
        default=(), description="Prompt profiles applied to every prompt, in order."
    )
    profiles_file: RelativeFile | None = Field(
        default=None, description="Extra profiles file, relative to the order file."
    )
    checkpoint: ShortText | None = Field(
        default=None, description="Checkpoint file name on the server (default: settings)."
    )
    loras: Annotated[tuple[LoraEntry, ...], Strict(False), Field(max_length=20)] = Field(
        default=(), description="LoRAs applied in this order: [{name, strength}]."
    )
    vae: ShortText | None = Field(
        default=None, description="VAE file name on the server (default: the checkpoint's)."
    )
    aspect: Aspect | None = Field(
        default=None, description="Image shape at the level's pixel count (see the table)."
    )
    seed: SeedPolicy = Field(default_factory=SeedPolicy, description="The seed policy.")
    output: OutputSpec = Field(default_factory=OutputSpec, description="Output folder, naming.")
    sale: SaleInfo | None = Field(default=None, description="Sale metadata for the report.")
    qc: QcSettings = Field(
        default_factory=QcSettings, description="Thresholds of the quality checks."
    )
    workflow: RelativeFile | None = Field(
        default=None,
        description="API-format ComfyUI graph, relative to the order file, or builtin:NAME.",
    )
    nodes: NodeNames = Field(default_factory=NodeNames, description="Nodes named per role.")
    inputs: dict[Annotated[str, Field(max_length=300)], InputValue] = Field(
        default_factory=dict, description='Explicit graph inputs: {"Node title.input": value}.'
    )
    priority: int = Field(
        default=0,
        ge=-1000,
        le=1000,
        description="comfyline line: higher runs first; equal priorities share the servers.",
    )
    schedule: Schedule | None = Field(
        default=None, description="comfyline line: the time of day its prompts may be sent."
    )

    @property
    def params(self) -> GenerationParams:
        """The effective generation parameters: the level's, with ``overrides`` applied."""
        changes = self.overrides.model_dump(exclude_none=True)
        if self.aspect is not None:
            side = params_for(self.quality).width  # the levels are square
            changes["width"], changes["height"] = aspect_size(side, self.aspect)
        return params_for(self.quality, **changes)

    @property
    def models_used(self) -> dict[str, object]:
        """The order's ``loras`` and ``vae`` as the report and each PNG record them (only
        those it sets): ``{"loras": [{"name", "strength", "clip_strength"}], "vae": NAME}``."""
        used: dict[str, object] = {}
        if self.loras:
            used["loras"] = [
                {
                    "name": lora.name,
                    "strength": lora.strengths[0],
                    "clip_strength": lora.strengths[1],
                }
                for lora in self.loras
            ]
        if self.vae is not None:
            used["vae"] = self.vae
        return used

    @property
    def batch_size(self) -> int:
        """Images made by one slot (one prompt sent)."""
        return self.params.batch_size

    @property
    def output_folder(self) -> str:
        """The output folder below the output root: ``output.folder``, or the order id."""
        return self.output.folder or self.id

    def _common_rules(self, rules: _Violations, variables: Sequence[str] = ()) -> None:
        self._sale_rules(rules, variables)
        try:
            batch = self.params.batch_size
        except ConfigError as exc:
            rules.add("overrides", str(exc))
            return
        if self.count % batch:
            low, high = self.count // batch * batch, -(-self.count // batch) * batch
            hint = f"use count {high}" if low == 0 else f"use count {low} or {high}"
            rules.add(
                "count",
                f"count ({self.count}) must be a multiple of "
                f"overrides.batch_size ({batch}): {hint}",
            )
        self._model_rules(rules)
        for position, name in enumerate(self.profiles):
            if name in self.profiles[:position]:
                rules.add(("profiles", position), f"profile {name!r} is listed twice")
        for key in self.inputs:
            node, _, name = key.rpartition(".")
            if not node.strip() or not name.strip():
                rules.add(
                    ("inputs", key),
                    f"{key!r} must be '<node title or id>.<input name>', "
                    "e.g. 'KSampler.denoise' or '3.steps'",
                )

    def _model_rules(self, rules: _Violations) -> None:
        if self.aspect is not None:
            for key in ("width", "height"):
                if getattr(self.overrides, key) is not None:
                    rules.add(
                        ("overrides", key),
                        f"aspect {self.aspect!r} sets the width and height: remove "
                        f"overrides.{key}, or remove aspect and give both sizes",
                    )
        names = [lora.name for lora in self.loras]
        for position, name in enumerate(names):
            if name in names[:position]:
                rules.add(("loras", position), f"LoRA {name!r} is listed twice")

    def _sale_rules(self, rules: _Violations, variables: Sequence[str]) -> None:
        # sale.title is a template over the variation values: `{fruit} on a {surface}`.
        if self.sale is None or self.sale.title is None:
            return
        names, problem = template_fields(self.sale.title)
        if problem:
            rules.add(("sale", "title"), problem)
            return
        for name in names:
            if not variables:
                rules.add(
                    ("sale", "title"),
                    f"placeholder {{{name}}}: only a variations order fills a title from its "
                    "variables; write {{ and }} for literal braces",
                )
            elif name not in variables:
                rules.add(
                    ("sale", "title"),
                    f"placeholder {{{name}}} is not a variable of this order"
                    f"{suggest(name, variables)} (variables: {', '.join(variables)})",
                )

    def _total_rule(self, rules: _Violations, prompts: int, what: str) -> None:
        total = prompts * self.count
        if total > MAX_IMAGES:
            rules.add(
                "count",
                f"{what} × count {self.count} = {total:,} images, more than the "
                f"{MAX_IMAGES:,} one order may make: split it into several orders",
            )


class SingleOrder(OrderBase):
    """One prompt, ``count`` images."""

    type: Literal["single"] = Field(description="single | variations | list")
    prompt: NonBlankPrompt = Field(description="The prompt (single orders).")

    @model_validator(mode="after")
    def _rules(self) -> SingleOrder:
        rules = _Violations()
        self._common_rules(rules)
        rules.check()
        return self


class VariationsOrder(OrderBase):
    """A template with ``{variable}`` placeholders: every combination of the variables' values,
    or a seeded sample of ``sample`` combinations; ``count`` images of each."""

    type: Literal["variations"] = Field(description="single | variations | list")
    template: NonBlankPrompt = Field(description="Prompt with {variable} placeholders.")
    variables: dict[
        Annotated[str, Field(max_length=64)],
        Annotated[tuple[VariableValue, ...], Strict(False)],
    ] = Field(description="Each placeholder's values: {name: [value, ...]}.")
    mode: Literal["all", "sample"] = Field(
        default="all", description="all: every combination; sample: `sample` of them."
    )
    sample: int | None = Field(
        default=None, ge=1, le=MAX_IMAGES, description="Combinations to draw (mode sample)."
    )

    @property
    def combinations(self) -> int:
        """How many combinations the variables make (all of them, before sampling)."""
        return math.prod(len(values) for values in self.variables.values())

    @property
    def prompt_count(self) -> int:
        """How many distinct prompts the order makes (combinations, or the sample)."""
        return self.sample if self.mode == "sample" and self.sample else self.combinations

    @model_validator(mode="after")
    def _rules(self) -> VariationsOrder:
        rules = _Violations()
        self._common_rules(rules, list(self.variables))
        self._variable_rules(rules)
        self._template_rules(rules)
        if not rules.found:  # the counts below mean little while the variables are wrong
            self._mode_rules(rules)
        rules.check()
        return self

    def _variable_rules(self, rules: _Violations) -> None:
        if not self.variables:
            rules.add(
                "variables", "define at least one variable, e.g. variables: {colour: [red, blue]}"
            )
        for name, values in self.variables.items():
            if not _VARIABLE_RE.fullmatch(name):
                rules.add(
                    ("variables", name),
                    f"{name!r} is not a valid variable name: use "
                    "letters, digits and '_', starting with a letter",
                )
            if not values:
                rules.add(
                    ("variables", name),
                    f"variable {name!r} has no values: list at least one, e.g. [red, blue]",
                )
            if len(values) > MAX_VALUES_PER_VARIABLE:
                rules.add(
                    ("variables", name),
                    f"{len(values):,} values; at most {MAX_VALUES_PER_VARIABLE:,} per variable",
                )
            for position, value in enumerate(values):
                if value in values[:position]:
                    rules.add(("variables", name, position), f"value {value!r} is listed twice")

    def _template_rules(self, rules: _Violations) -> None:
        names, problem = template_fields(self.template)
        if problem:
            rules.add("template", problem)
            return
        defined = list(self.variables)
        for name in names:
            if name not in self.variables:
                rules.add(
                    "template",
                    f"placeholder {{{name}}} is not defined in variables"
                    f"{suggest(name, defined)} (defined: {', '.join(defined) or 'none'})",
                )
        for name in defined:
            if name not in names:
                rules.add(
                    ("variables", name),
                    f"variable {name!r} is not used in the template: "
                    f"use it as {{{name}}} or remove it",
                )

    def _mode_rules(self, rules: _Violations) -> None:
        combinations = self.combinations
        if self.mode == "all":
            if self.sample is not None:
                rules.add("sample", "sample is only used with mode: sample")
            elif combinations > MAX_IMAGES:
                rules.add(
                    "variables",
                    f"the variables make {combinations:,} combinations, more "
                    f"than {MAX_IMAGES:,}: use mode: sample with sample: N",
                )
            else:
                self._total_rule(rules, combinations, f"{combinations:,} combinations")
        elif self.sample is None:
            rules.add("mode", "mode 'sample' needs sample: N (how many combinations)")
        elif self.sample > combinations:
            rules.add(
                "sample",
                f"sample ({self.sample:,}) is more than the {combinations:,} "
                "combinations there are: lower it or use mode: all",
            )
        else:
            self._total_rule(rules, self.sample, f"sample {self.sample:,}")


class ListOrder(OrderBase):
    """Explicit prompts, inline (``prompts``) or from a CSV file beside the order
    (``prompts_file``); ``count`` images of each."""

    type: Literal["list"] = Field(description="single | variations | list")
    prompts: Annotated[tuple[Entry, ...], Strict(False)] | None = Field(
        default=None, description="The prompts: text, or {prompt, negative, seed, title, keywords}."
    )
    prompts_file: RelativeFile | None = Field(
        default=None, description="CSV beside the order with a `prompt` column."
    )

    @model_validator(mode="after")
    def _rules(self) -> ListOrder:
        rules = _Violations()
        self._common_rules(rules)
        if self.prompts is None and self.prompts_file is None:
            rules.add((), "a list order needs prompts: [...] or prompts_file: prompts.csv")
        elif self.prompts is not None and self.prompts_file is not None:
            rules.add("prompts_file", "give prompts or prompts_file, not both")
        elif self.prompts is not None:
            if not self.prompts:
                rules.add("prompts", "the list is empty: add at least one prompt")
            self._total_rule(rules, len(self.prompts), f"{len(self.prompts):,} prompts")
        rules.check()
        return self


Order: TypeAlias = Annotated[SingleOrder | VariationsOrder | ListOrder, Field(discriminator="type")]
"""An order of any type; tell them apart with ``order.type`` or ``isinstance``."""

ORDER_TYPES: Mapping[str, type[OrderBase]] = {
    "single": SingleOrder,
    "variations": VariationsOrder,
    "list": ListOrder,
}
order_adapter: TypeAdapter[SingleOrder | VariationsOrder | ListOrder] = TypeAdapter(Order)
"""Validates plain data into an :data:`Order` (``order_adapter.validate_python(data)``)."""


# -- checks shared with the loader ------------------------------------------------------------


def suggest(word: str, choices: Sequence[str]) -> str:
    """`` (did you mean 'count'?)`` when ``word`` is close to one of ``choices``, else ``""``."""
    import difflib

    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def template_fields(template: str) -> tuple[list[str], str | None]:
    """The placeholder names in a prompt template, or a message saying why it is malformed."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        return [], f"{exc}: write {{{{ and }}}} for literal braces"
    names: list[str] = []
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if not _VARIABLE_RE.fullmatch(name) or spec or conversion:
            shown = (
                "{"
                + name
                + (f"!{conversion}" if conversion else "")
                + (f":{spec}" if spec else "")
                + "}"
            )
            return [], f"placeholder {shown} must be a plain variable name like {{colour}}"
        if name not in names:
            names.append(name)
    return names, None


def naming_problem(template: str) -> str | None:
    """Why a file naming template is unusable, or None. See :data:`NAMING_FIELDS`."""
    allowed = ", ".join(NAMING_FIELDS)
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        return f"{exc}: write {{{{ and }}}} for literal braces (fields: {allowed})"
    used = set()
    for _, name, _, conversion in parsed:
        if name is None:
            continue
        if name not in NAMING_FIELDS:
            return (
                f"unknown field {{{name}}}{suggest(name, list(NAMING_FIELDS))} (allowed: {allowed})"
            )
        if conversion:
            return f"{{{name}!{conversion}}}: conversions are not allowed (allowed: {allowed})"
        used.add(name)
    try:
        sample = template.format(**NAMING_FIELDS)
    except (ValueError, TypeError) as exc:
        return f"cannot format {template!r}: {exc} (e.g. {{index:04d}}, {{seed}})"
    if not used & {"index", "number"}:
        return "must contain {index} or {number}, so that every image gets its own file"
    if not _NAME_PART_RE.fullmatch(sample):
        return (
            f"gives file names like {sample!r}: use letters, digits, '_', '-', '.' and "
            "spaces only, no '/' (the folder is output.folder)"
        )
    if sample.lower().endswith(".png"):
        return "leave out the extension: comfyline adds .png"
    return name_problem(f"{sample}.png", reserve=TEMP_NAME_EXTRA_BYTES)


def folder_problem(folder: str) -> str | None:
    """Why an output folder is unusable (absolute, escaping the output root...), or None."""
    if "\\" in folder:
        return f"{folder!r}: write folders with '/', not '\\'"
    if folder.startswith(("/", "~")) or re.match(r"[A-Za-z]:", folder):
        return f"{folder!r} is absolute: give a folder relative to the output root"
    parts = folder.split("/")
    if any(part in {"..", "."} for part in parts):
        return f"{folder!r} leaves the output root ('..' or '.'): give a folder below it"
    for part in parts:
        # The portable-name rules first: their reason is more precise than "not allowed".
        problem = name_problem(part) if part else None
        if problem:
            return f"{folder!r}: {problem}"
        if not _NAME_PART_RE.fullmatch(part):
            return (
                f"{folder!r}: folder name {part!r} is not allowed; use letters, digits, "
                "'_', '-', '.' and spaces, and no empty parts ('a//b')"
            )
    return None


__all__ = [
    "ASPECTS",
    "COMFY_SEED_MAX",
    "DEFAULT_NAMING",
    "MAX_IMAGES",
    "NAMING_FIELDS",
    "ORDER_TYPES",
    "SEED_MAX",
    "ListOrder",
    "LoraSpec",
    "NodeNames",
    "Order",
    "OrderBase",
    "OutputSpec",
    "Overrides",
    "Profile",
    "PromptEntry",
    "SaleInfo",
    "Schedule",
    "SeedPolicy",
    "SingleOrder",
    "VariationsOrder",
    "aspect_size",
    "folder_problem",
    "naming_problem",
    "order_adapter",
    "suggest",
    "template_fields",
]
