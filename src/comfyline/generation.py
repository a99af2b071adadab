"""What one generation is asked to make, and what it made.

A :class:`GenerationRequest` is everything needed to fill a workflow graph and to name the files it
produces; a :class:`GenerationResult` is what came back. Both are plain frozen data: the adapter
turns requests into results, the pipeline turns orders into requests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from comfyline.presets import GenerationParams

if TYPE_CHECKING:
    from comfyline.errors import ComfyError
    from comfyline.workflows import Workflow


@dataclass(frozen=True)
class GenerationRequest:
    """One prompt to send: text, seed, parameters, and where its images go.

    ``output_dir`` / ``output_stem`` name our own files: ``{output_stem}.png`` for one image,
    ``{output_stem}_{i}.png`` (i from 1) for a batch. The server's file names are never used as
    local paths. ``prompt_id`` is the stable identity sent with the prompt (None: a fresh UUID).
    ``workflow`` is None for the built-in text-to-image graph. ``inputs`` are explicit overrides
    ``{"<node title or id>.<input>": value}`` applied after the role mapping.
    """

    prompt: str
    seed: int
    params: GenerationParams
    output_dir: Path
    output_stem: str
    negative: str = ""
    checkpoint: str | None = None
    filename_prefix: str = "comfyline/img"
    prompt_id: str | None = None
    workflow: Workflow | None = None
    inputs: dict[str, Any] = field(default_factory=dict)
    nodes: dict[str, str] = field(default_factory=dict)
    """Names chosen for ambiguous roles, e.g. ``{"sampler": "Hires pass"}`` (title or id)."""


@dataclass(frozen=True)
class GeneratedImage:
    """One image written to disk, already checked (it decodes and has the expected size)."""

    path: Path
    width: int
    height: int
    sha256: str
    server_filename: str
    server_subfolder: str = ""


@dataclass(frozen=True)
class GenerationResult:
    """The outcome of one request. ``error`` is set (and ``images`` empty) when it failed."""

    request: GenerationRequest
    prompt_id: str
    images: tuple[GeneratedImage, ...] = ()
    seconds: float = 0.0
    """Time the server spent on the prompt (execution_start to execution_success)."""
    error: ComfyError | None = None
    cached: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None
