"""What goes into an upload package: the images (:class:`ExportItem`), how the package is made
(:class:`ExportOptions`), and the similar-motif cap."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from comfyline.errors import ExportError

__all__ = ["ExportItem", "ExportOptions", "apply_motif_cap"]


@dataclass(frozen=True)
class ExportItem:
    """One image to sell. ``stem`` names its files (``<stem>.jpg``); ``motif`` groups
    near-duplicates for the motif cap (None: a motif of its own); ``score`` ranks them (higher
    is better, e.g. :attr:`comfyline.quality.QcResult.score`). ``parameters`` are the
    generation parameters, embedded as XMP; a ``"prompt"`` string in them also fills the
    prompt fields (XMP AI prompt, Freepik's Prompt column). ``categories`` maps a market key
    to its category ids (Adobe: one of 1-21; Dreamstime: up to two besides "AI generated").
    """

    source: Path
    stem: str
    title: str
    description: str = ""
    keywords: Sequence[str] = ()
    parameters: Mapping[str, Any] = field(default_factory=dict)
    motif: str | None = None
    score: float = 0.0
    categories: Mapping[str, Sequence[int]] = field(default_factory=dict)

    @property
    def prompt(self) -> str:
        """The generation prompt (``parameters["prompt"]``), or ``""``."""
        value = self.parameters.get("prompt")
        return value if isinstance(value, str) else ""


@dataclass(frozen=True)
class ExportOptions:
    """How a package is made (an order's ``sale:`` settings map onto these)."""

    #: Into dc:creator / IPTC By-line, and dc:rights / IPTC Copyright Notice.
    creator: str | None = None
    copyright: str | None = None
    #: JPEG quality (1-100; 123RF wants at least 80).
    quality: int = 95
    #: Upscale to at least this many megapixels (besides every market's minimum).
    min_megapixels: float | None = None
    #: Upscale smaller images with Lanczos on the CPU (False: a too-small image is a problem).
    upscale: bool = True
    #: Keep at most this many images of one motif (the best-scored); None: no cap.
    max_per_motif: int | None = None
    #: Leave out images with problems (reported in the result) instead of writing nothing.
    skip_invalid: bool = False
    #: Embed the generation parameters (XMP) in the JPEGs.
    embed_parameters: bool = True
    #: Freepik's "Model" column (the AI model the image was made with).
    ai_model: str = "Stable Diffusion"
    #: The seller's own forbidden-words file, added to the shipped list.
    forbidden_words_file: Path | None = None


def apply_motif_cap(
    items: Sequence[ExportItem], max_per_motif: int | None
) -> tuple[list[ExportItem], list[ExportItem]]:
    """``(kept, dropped)``: of each motif, the ``max_per_motif`` best-scored items are kept (on
    equal scores, the earlier); items without a motif are always kept. Order is preserved.

    Adobe treats more than about three versions of one motif as spam.
    """
    if max_per_motif is None:
        return list(items), []
    if max_per_motif < 1:
        raise ExportError(f"max_per_motif must be at least 1 but is {max_per_motif}")
    by_motif: dict[str, list[int]] = {}
    for index, item in enumerate(items):
        if item.motif is not None:
            by_motif.setdefault(item.motif, []).append(index)
    dropped: set[int] = set()
    for members in by_motif.values():
        ranked = sorted(members, key=lambda i: (-items[i].score, i))
        dropped.update(ranked[max_per_motif:])
    kept = [it for i, it in enumerate(items) if i not in dropped]
    return kept, [it for i, it in enumerate(items) if i in dropped]
