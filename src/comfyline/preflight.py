"""Everything that can be checked against a server before the first image, all at once.

The checkpoint is resolved once here (the order's, the setting's, or the server's only one),
and the filled graph of the first slot is checked against the server's ``/object_info``:
missing node classes, models, out-of-range values, unknown samplers and schedulers. Nothing is
sent to the GPU when it fails.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from comfyline.comfy import ComfyUIAdapter
from comfyline.comfy.protocol import combo_options
from comfyline.errors import ConfigError, ModelNotFound
from comfyline.generation import GenerationRequest
from comfyline.workflows import ensure_graph_fits


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
        f"{len(available)}: {', '.join(available)}; choose one with the order's "
        "'checkpoint:' key, smoke-test's --checkpoint NAME, or COMFYLINE_CHECKPOINT"
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
                f"(allowed: {', '.join(allowed)})"
            )
