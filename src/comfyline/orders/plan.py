"""Planning: a loaded order turned into its slots, one per prompt sent. Pure: no file is read.

:func:`plan` is deterministic: the same :class:`~comfyline.orders.LoadedOrder` and seed base
give the same slots, seeds, file names and keys. It also refuses file names that cannot all be
written on every system: two slots with one name (or names that differ only in letter case),
a name some system refuses, or one of the files comfyline writes itself.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import secrets
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from comfyline.errors import OrderError, Problem
from comfyline.names import TEMP_NAME_EXTRA_BYTES, clash_key, name_problem
from comfyline.presets import GenerationParams
from comfyline.schemas.order import (
    COMFY_SEED_MAX,
    SEED_MAX,
    ListOrder,
    Order,
    PromptEntry,
    SingleOrder,
    VariationsOrder,
)

if TYPE_CHECKING:
    from comfyline.orders.load import LoadedOrder

OWN_FILES = re.compile(r"(run_chart|contact_sheet(_\d{3,})?)\.png", re.IGNORECASE)
"""Images comfyline writes into an order's folder itself (``reports.charts.CHART_FILE`` and
the contact sheets): no slot may take their names."""
_NAMING = ("output", "naming")
_LISTED_CLASHES = 3
_LISTED_SLOTS = 5


@dataclass(frozen=True, slots=True)
class Slot:
    """One prompt to send, making ``images`` images (the batch size; usually 1).

    ``index`` is 0-based and dense over the order; ``prompt`` and ``negative`` have the order's
    profiles applied; ``stem`` is the file name (without ``.png``) from ``output.naming``; with a
    batch, the adapter names the files ``{stem}_1.png`` ... ``key`` is a stable identity of the
    slot's content: the ledger compares it to find an order file that changed under a run.
    ``title`` and ``keywords`` are the image's sale data (see docs/ORDER_CONTRACT.md);
    ``variables`` the combination of a variations order.
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

    @property
    def file_names(self) -> tuple[str, ...]:
        """The names of the slot's image files: ``{stem}.png``, or ``{stem}_1.png`` ... for a
        batch."""
        if self.images == 1:
            return (f"{self.stem}.png",)
        return tuple(f"{self.stem}_{n}.png" for n in range(1, self.images + 1))

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

    def slot(self, index: int) -> Slot:
        """The slot whose index is ``index`` (indexes may have gaps once an order shrank)."""
        if index < len(self.slots) and self.slots[index].index == index:
            return self.slots[index]
        for slot in self.slots:
            if slot.index == index:
                return slot
        raise KeyError(index)

    def __iter__(self) -> Iterator[Slot]:
        return iter(self.slots)


def derive_seed(base: int, index: int, salt: int = 0) -> int:
    """The seed of slot ``index`` under ``base``: a hash, so that neighbouring bases or indexes
    give unrelated seeds, in ``0..SEED_MAX``."""
    digest = hashlib.sha256(f"comfyline/seed/{base}/{index}/{salt}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & SEED_MAX


@dataclass(frozen=True, slots=True)
class Placed:
    """A slot an earlier run recorded: its index, seed and file stem stay as they were."""

    index: int
    seed: int
    stem: str


def plan(
    loaded: LoadedOrder,
    *,
    random_base: int | None = None,
    placed: Mapping[tuple[int, int], Placed] | None = None,
    taken: Collection[int] = (),
) -> Plan:
    """The slots of the loaded order, one per prompt sent.

    Deterministic: the same order, files and base give the same slots. With
    ``seed: {mode: random}`` the base is ``random_base`` when given (a recorded one, on a
    resume) and drawn now otherwise; ``Plan.seed_base`` says which. Raises
    :class:`OrderError` (located at ``output.naming``) when the slots' file names clash or
    some system refuses one.

    ``placed``: the slots a ledger recorded, by (prompt index, repeat); they keep their index,
    seed and file name, and the slots not placed (the order grew) take the next indexes after
    ``taken`` (every index recorded), their seeds from the seed policy. ``Plan.slots`` is then
    ordered by index, which may have gaps (:meth:`Plan.slot` finds one).
    """
    order = loaded.order
    base = _seed_base(order, random_base)
    params = order.params
    prompts = list(_base_prompts(order, loaded.entries, base))
    per_prompt = order.count // params.batch_size
    # What every slot's key holds besides its own prompt, seed and name: computed once.
    shared = _shared_identity(order, params)
    slots: list[Slot] = []
    used: set[int] = {entry.seed for _, entry in prompts if entry.seed is not None}
    placed = placed or {}
    used |= {p.seed for p in placed.values()}
    next_index = max([*taken, *(p.index for p in placed.values())], default=-1) + 1
    for prompt_index, (values, entry) in enumerate(prompts):
        prompt = _join([entry.prompt, *(p.prompt for p in loaded.profiles)])
        negative = _join([order.negative, entry.negative, *(p.negative for p in loaded.profiles)])
        title, keywords = _title(order, entry, values), _keywords(order, entry, values)
        for repeat in range(per_prompt):
            spot = placed.get((prompt_index, repeat))
            if spot is not None:
                index, seed, stem = spot.index, spot.seed, spot.stem
            else:
                index, next_index = next_index, next_index + 1
                seed = _slot_seed(base, index, repeat, entry, used)
                stem = order.output.naming.format(
                    index=index, number=index + 1, seed=seed, id=order.id, level=order.quality
                )
            slots.append(
                Slot(
                    index=index,
                    prompt_index=prompt_index,
                    repeat=repeat,
                    prompt=prompt,
                    negative=negative,
                    seed=seed,
                    params=params,
                    stem=stem,
                    key=_key(shared, prompt, negative, seed, stem),
                    images=params.batch_size,
                    title=title,
                    keywords=keywords,
                    variables=values,
                )
            )
    slots.sort(key=lambda slot: slot.index)
    problems = _name_problems(loaded, slots)
    if problems:
        raise OrderError(problems)
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
    order: Order, entries: Sequence[PromptEntry], base: int
) -> Iterator[tuple[dict[str, str], PromptEntry]]:
    if isinstance(order, SingleOrder):
        yield {}, PromptEntry(prompt=order.prompt)
    elif isinstance(order, ListOrder):
        for entry in entries:
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


def _shared_identity(order: Order, params: GenerationParams) -> dict[str, Any]:
    shared: dict[str, Any] = {
        "params": params.model_dump(mode="json"),
        "checkpoint": order.checkpoint,
        "workflow": order.workflow,
        "inputs": order.inputs,
        "nodes": order.nodes.model_dump(exclude_none=True),
    }
    # Only when set, so that the keys of orders without them stay as they were.
    if order.loras:
        shared["loras"] = [lora.model_dump(mode="json") for lora in order.loras]
    if order.vae is not None:
        shared["vae"] = order.vae
    return shared


def _key(shared: dict[str, Any], prompt: str, negative: str, seed: int, stem: str) -> str:
    # The key's fields and their JSON are pinned: changing them changes every recorded
    # order's keys (and a resume would see every slot as changed).
    identity = {**shared, "prompt": prompt, "negative": negative, "seed": seed, "stem": stem}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:32]


def _join(parts: Iterable[str]) -> str:
    return ", ".join(part.strip().rstrip(",").strip() for part in parts if part.strip())


# -- sale data ---------------------------------------------------------------------------------


def _title(order: Order, entry: PromptEntry, variables: Mapping[str, str]) -> str | None:
    """The entry's own title, else ``sale.title`` filled with the variation values (checked
    at load to use only the order's variables), else the order's title; None when none is set."""
    if entry.title:
        return entry.title
    if order.sale is not None and order.sale.title:
        return order.sale.title.format(**variables)
    return order.title or None


def _keywords(order: Order, entry: PromptEntry, variables: Mapping[str, str]) -> tuple[str, ...]:
    """Most important first: the entry's own, the variation values, the order's; each once,
    whatever its letter case (the first spelling wins)."""
    sale = order.sale.keywords if order.sale is not None else ()
    chosen: dict[str, str] = {}
    for word in (*entry.keywords, *variables.values(), *sale):
        chosen.setdefault(word.strip().casefold(), word.strip())
    return tuple(chosen.values())


# -- file names ----------------------------------------------------------------------------------


def _name_problems(loaded: LoadedOrder, slots: Sequence[Slot]) -> list[Problem]:
    """What keeps the slots' files from being written, each on its own, on every system."""
    problems: list[Problem] = []
    users: dict[str, list[tuple[int, str]]] = {}  # clash key -> (slot index, file name)
    for slot in slots:
        for name in slot.file_names:
            if not problems and (reason := _file_name_problem(name)):
                problems.append(loaded.problem(_NAMING, f"slot {slot.index}: {reason}"))
            users.setdefault(clash_key(name), []).append((slot.index, name))
    if not problems and slots and loaded.order.seed.mode == "random":
        problems += _widest_seed_problems(loaded, slots[-1])
    clashes = [found for found in users.values() if len({index for index, _ in found}) > 1]
    if clashes:
        problems.append(loaded.problem(_NAMING, _clash_message(clashes)))
    return problems


def _widest_seed_problems(loaded: LoadedOrder, last: Slot) -> list[Problem]:
    # Another random base gives other seeds, up to SEED_MAX: the names must fit with any.
    order = loaded.order
    stem = order.output.naming.format(
        index=last.index, number=last.index + 1, seed=SEED_MAX, id=order.id, level=order.quality
    )
    widest = replace(last, stem=stem).file_names[-1]
    reason = _file_name_problem(widest)
    if reason is None:
        return []
    message = f"slot {last.index}, with the longest seed a random base can give: {reason}"
    return [loaded.problem(_NAMING, message)]


def _file_name_problem(name: str) -> str | None:
    reason = name_problem(name, reserve=TEMP_NAME_EXTRA_BYTES)
    if reason is None and OWN_FILES.fullmatch(name):
        reason = f"{name!r} is the name of a file comfyline writes itself: choose another name"
    return reason


def _clash_message(clashes: Sequence[list[tuple[int, str]]]) -> str:
    shown = [_clash(found) for found in clashes[:_LISTED_CLASHES]]
    more = len(clashes) - len(shown)
    listed = "; ".join(shown) + (f"; and {more:,} more names like these" if more else "")
    return (
        f"{listed}: every image needs a file name of its own; use {{index}} or {{number}} as "
        "a plain number, e.g. {index:04d}"
    )


def _clash(found: list[tuple[int, str]]) -> str:
    indexes = [str(index) for index in dict.fromkeys(index for index, _ in found)]
    if len(indexes) > _LISTED_SLOTS:
        slots = f"{', '.join(indexes[:_LISTED_SLOTS])} and {len(indexes) - _LISTED_SLOTS:,} more"
    else:
        slots = f"{', '.join(indexes[:-1])} and {indexes[-1]}"
    names = list(dict.fromkeys(name for _, name in found))
    if len(names) == 1:
        every = "both" if len(indexes) == 2 else "all"
        return f"slots {slots} would {every} be written to {names[0]!r}"
    shown = " and ".join(map(repr, names[:2]))
    return (
        f"slots {slots} would be written to {shown}, which differ only in letter case "
        "(one file on Windows and macOS)"
    )
