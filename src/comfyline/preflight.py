"""Everything that can be checked against a server before the first image, all at once.

The checkpoint is resolved once here (the order's, the setting's, or the server's only one),
and the filled graph of the first slot is checked against the server's ``/object_info``:
missing node classes, models, out-of-range values, unknown samplers and schedulers. Nothing is
sent to the GPU when it fails.

:func:`preflight` (a run) raises the first kind of failure; :func:`order_problems`
(``comfyline validate --comfyui``) lists every problem of an order in one pass, each located at
the order field that set the value, with the closest name the server has. On a resume,
:func:`ensure_same_checkpoint` refuses to finish a series with another checkpoint than the one
that made its first images.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from comfyline.backends import SIMULATOR
from comfyline.comfy import ComfyUIAdapter
from comfyline.comfy.protocol import combo_options
from comfyline.errors import ConfigError, ModelNotFound, Problem, WorkflowError
from comfyline.generation import GenerationRequest
from comfyline.ledger import Ledger, SlotState
from comfyline.orders import LoadedOrder
from comfyline.orders.problems import sort_problems
from comfyline.workflows import check_graph, ensure_graph_fits

_CHECKPOINT_REMEDY = (
    "set the order's 'checkpoint:' key (or COMFYLINE_CHECKPOINT for every order) to one of them"
)


@dataclass(frozen=True)
class Preflight:
    """What the checks settled: the checkpoint every prompt of the run uses."""

    checkpoint: str


async def preflight(
    adapter: ComfyUIAdapter, request: GenerationRequest, checkpoint: str | None
) -> Preflight:
    """Check ``request`` (a slot's, with ``checkpoint`` unresolved) against the server.

    Raises :class:`ModelNotFound`, :class:`ConfigError` or :class:`WorkflowCheckFailed`.
    """
    info = await adapter.object_info()
    resolved = resolve_checkpoint(info, checkpoint, adapter.url)
    filled = replace(request, checkpoint=resolved)
    ensure_graph_fits(filled.graph(), info, server=adapter.url)
    check_sampler(info, filled, adapter.url)
    return Preflight(resolved)


def resolve_checkpoint(info: Mapping[str, Any], name: str | None, server: str) -> str:
    """The checkpoint to use: ``name`` if the server has it (else :class:`ModelNotFound`
    listing those it has); with ``name`` None, the server's only one."""
    available = combo_options(info, "CheckpointLoaderSimple", "ckpt_name")
    if name is not None:
        if name not in available:
            raise ModelNotFound(name, available, server)
        return name
    if len(available) == 1:
        return available[0]
    if not available:
        raise ModelNotFound("(any)", available, server)
    raise ConfigError(
        f"no checkpoint is configured and the ComfyUI server at {server} has "
        f"{len(available)}: {', '.join(available)}; {_CHECKPOINT_REMEDY} "
        "(smoke-test takes --checkpoint NAME)"
    )


def check_sampler(info: Mapping[str, Any], request: GenerationRequest, server: str) -> None:
    """:class:`ConfigError` when the request's sampler or scheduler is not on the server."""
    for input_name, value in (
        ("sampler_name", request.params.sampler),
        ("scheduler", request.params.scheduler),
    ):
        allowed = combo_options(info, "KSampler", input_name)
        if allowed and value not in allowed:
            raise ConfigError(
                f"{input_name} {value!r} is not known to the ComfyUI server at {server} "
                f"(allowed: {', '.join(allowed)}){_did_you_mean(value, allowed)}"
            )


def order_problems(
    info: Mapping[str, Any],
    loaded: LoadedOrder,
    request: GenerationRequest,
    checkpoint: str | None,
    server: str,
) -> tuple[str | None, list[Problem]]:
    """Every way the order ``loaded`` (``request``: its first slot's) does not fit the server
    described by ``info``; ``checkpoint`` is the one the order or the settings name (None:
    the server's only one). Returns the resolved checkpoint (None when it cannot be) and the
    problems, each at the order field that set the value where the order set it."""
    found = _Found(loaded, server)
    resolved = found.checkpoint(info, checkpoint)
    order = loaded.order
    for position, lora in enumerate(order.loras):
        found.name(info, ("LoraLoader", "lora_name"), lora.name, ("loras", position, "name"))
    if order.vae is not None:
        found.name(info, ("VAELoader", "vae_name"), order.vae, ("vae",))
    for key, input_name in (("sampler", "sampler_name"), ("scheduler", "scheduler")):
        value = getattr(request.params, key)
        at = ("overrides", key) if getattr(order.overrides, key) is not None else None
        found.name(info, ("KSampler", input_name), value, at, what=key)
    try:
        graph = replace(request, checkpoint=resolved or checkpoint).graph()
    except WorkflowError as exc:
        found.add(("workflow",) if order.workflow else None, str(exc))
        return resolved, sort_problems(found.problems)
    if resolved is None and checkpoint is None:
        found.skipped.add("ckpt_name")  # no checkpoint to fill in: already said why
    for problem in check_graph(graph, info, server=server, skip=found.skipped):
        found.add(("workflow",) if order.workflow else None, problem)
    return resolved, sort_problems(found.problems)


class _Found:
    """The problems of one order, and which values were reported (not again by the graph)."""

    def __init__(self, loaded: LoadedOrder, server: str) -> None:
        self.loaded = loaded
        self.server = server
        self.problems: list[Problem] = []
        self.skipped: set[str | tuple[str, object]] = set()

    def add(self, at: tuple[str | int, ...] | None, message: str) -> None:
        if at is not None and _present(self.loaded.document.data, at):
            self.problems.append(self.loaded.problem(at, message))
        else:
            self.problems.append(Problem(str(self.loaded.file), None, None, "", message))

    def checkpoint(self, info: Mapping[str, Any], name: str | None) -> str | None:
        at = ("checkpoint",) if self.loaded.order.checkpoint is not None else None
        available = combo_options(info, "CheckpointLoaderSimple", "ckpt_name")
        if name is not None:
            unset = " (the checkpoint setting, COMFYLINE_CHECKPOINT)"
            if self.name(info, ("CheckpointLoaderSimple", "ckpt_name"), name, at, unset=unset):
                return name
            return None
        if len(available) == 1:
            return available[0]
        if not available:
            self.add(
                None,
                f"the ComfyUI server at {self.server} has no checkpoint: put one in "
                "ComfyUI's models/checkpoints folder",
            )
        else:
            self.add(
                None,
                f"no checkpoint is named and the ComfyUI server at {self.server} has "
                f"{len(available)}: {', '.join(available)}; {_CHECKPOINT_REMEDY}",
            )
        return None

    def name(
        self,
        info: Mapping[str, Any],
        where: tuple[str, str],
        value: str,
        at: tuple[str | int, ...] | None,
        what: str = "",
        unset: str = " (the quality level's)",
    ) -> bool:
        """Whether ``value`` is one of the server's choices for ``where`` (class, input); if
        not, a problem at ``at`` with the closest choice (``at`` None: the order did not set
        the value; ``unset`` says where it came from)."""
        allowed = combo_options(info, *where)
        if where[0] not in info or value in allowed:
            return True  # a missing node class is the graph check's to report
        self.skipped.add((where[1], value))
        kind, folder = _KINDS.get(where[1], (what, ""))
        source = "" if at is not None else unset
        listed = ", ".join(allowed[:12]) + (
            f" and {len(allowed) - 12} more" if len(allowed) > 12 else ""
        )
        fix = f"; put it in ComfyUI's models/{folder} folder or name one of those" if folder else ""
        self.add(
            at,
            f"{value!r}{source} is not a {kind} on {self.server}"
            f"{_did_you_mean(value, allowed)} (it has: {listed or 'none'}){fix}",
        )
        return False


_KINDS = {
    "ckpt_name": ("checkpoint", "checkpoints"),
    "lora_name": ("LoRA", "loras"),
    "vae_name": ("VAE", "vae"),
    "sampler_name": ("sampler", ""),
    "scheduler": ("scheduler", ""),
}


def _did_you_mean(value: str, allowed: Sequence[str]) -> str:
    close = difflib.get_close_matches(value, list(allowed), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _present(data: object, path: tuple[str | int, ...]) -> bool:
    """Whether the order file itself holds ``path`` (not a default)."""
    for part in path:
        if isinstance(data, dict) and part in data:
            data = data[part]
        elif isinstance(data, list) and isinstance(part, int) and 0 <= part < len(data):
            data = data[part]
        else:
            return False
    return True


async def check_orders_on_server(
    adapter: ComfyUIAdapter,
    orders: Sequence[tuple[LoadedOrder, GenerationRequest]],
    checkpoint: str | None,
) -> list[tuple[str | None, list[Problem]]]:
    """:func:`order_problems` of each order (with its first slot's request) on one server,
    whose ``/object_info`` is read once."""
    info = await adapter.object_info()
    return [
        order_problems(info, loaded, request, loaded.order.checkpoint or checkpoint, adapter.url)
        for loaded, request in orders
    ]


def ensure_same_checkpoint(
    ledger: Ledger, checkpoint: str, server: str, *, simulated: bool = False
) -> None:
    """Refuse (:class:`ConfigError`) to go on with ``checkpoint`` on ``server`` when the order's
    done images were made with another one: the server changed, not the order (e.g. it now
    has another checkpoint, or several, and the order names none). On a real server
    (``simulated`` False) the built-in simulator's images are not compared: their checkpoint
    is a made-up name, and they are not the real series."""
    made: dict[str, int] = {}
    for slot in ledger.slots(SlotState.DONE):
        by_sim = slot.simulated if slot.simulated is not None else slot.backend == SIMULATOR
        if by_sim and not simulated:
            continue
        if slot.checkpoint is not None and slot.checkpoint != checkpoint:
            made[slot.checkpoint] = made.get(slot.checkpoint, 0) + 1
    if not made:
        return
    old, count = max(made.items(), key=lambda item: item[1])
    raise ConfigError(
        f"{count} image(s) of this order were made with checkpoint {old!r}, but it would go on "
        f"with {checkpoint!r} (resolved on the ComfyUI server at {server}); a series is made "
        f"with one checkpoint: set checkpoint: {old} in the order (and make sure the server "
        "has it), or start a new order for the other checkpoint"
    )
