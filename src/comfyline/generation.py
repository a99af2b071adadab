"""What one generation is asked to make, and what it made.

A :class:`GenerationRequest` is everything needed to fill a workflow graph; a
:class:`GenerationResult` is what came back: the images' bytes, checked (they decode, have the
size the graph makes, and are as many as the batch), not yet written anywhere. Both are plain
frozen data: the adapter turns requests into results, the pipeline turns orders into requests
and results into files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from comfyline.errors import ComfyError
from comfyline.presets import GenerationParams
from comfyline.workflows import Graph, Workflow, build_graph

if TYPE_CHECKING:
    from PIL import Image


@dataclass(frozen=True)
class GenerationRequest:
    """One prompt to send: text, seed, parameters, and the graph they fill.

    ``prompt_id`` is the stable identity sent with the prompt (None: a fresh UUID).
    ``workflow`` is None for the built-in text-to-image graph. ``checkpoint`` None keeps the
    graph's own (the pipeline's pre-flight resolves it once). ``inputs`` are explicit overrides
    ``{"<node title or id>.<input>": value}`` applied after the role mapping; ``nodes`` names
    ambiguous roles, e.g. ``{"sampler": "Hires pass"}`` (title or id).
    """

    prompt: str
    seed: int
    params: GenerationParams
    negative: str = ""
    checkpoint: str | None = None
    filename_prefix: str = "comfyline/img"
    prompt_id: str | None = None
    workflow: Workflow | None = None
    inputs: dict[str, Any] = field(default_factory=dict)
    nodes: dict[str, str] = field(default_factory=dict)
    prebuilt: Graph | None = None
    """A graph already filled (the upscale stage's): posted as it is, nothing mapped."""

    def graph(self) -> Graph:
        """The API-format graph this request posts."""
        if self.prebuilt is not None:
            return self.prebuilt
        return build_graph(self, self.checkpoint)


@dataclass(frozen=True)
class GeneratedImage:
    """One image as the server made it: its bytes, checked, and where the server keeps it."""

    data: bytes
    width: int
    height: int
    server_filename: str
    server_subfolder: str = ""
    picture: Image.Image | None = field(default=None, repr=False, compare=False)
    """The pixels the check decoded, when asked for (``keep_pictures``): the quality checks
    look at them instead of decoding the bytes a second time."""


@dataclass(frozen=True)
class GenerationResult:
    """The outcome of one request. ``error`` is set (and ``images`` empty) when it failed.

    ``prompt_id`` is the id the server knows the prompt by: the request's, unless the server
    assigned its own. ``seconds`` is the server's time on it (execution_start to
    execution_success); ``wall_seconds`` our own clock from the POST to the result.
    """

    request: GenerationRequest
    prompt_id: str
    images: tuple[GeneratedImage, ...] = ()
    seconds: float = 0.0
    wall_seconds: float = 0.0
    error: ComfyError | None = None
    cached: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None
