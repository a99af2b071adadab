"""The size an image must be upscaled to for a set of marketplaces, and the CPU upscale.

:func:`target_size` is the one place the target is computed: the CPU path here (Pillow's
Lanczos) and the ComfyUI upscale graph's ImageScale node (``workflows/upscale.py``) both use
it, so both make the same size. The aspect ratio is kept (to within rounding, under one pixel),
and sizes round UP, so the result never falls below a minimum. An image already big enough is
left as it is: upscaling never shrinks.

Lanczos adds no detail: a 4x model on ComfyUI (``builtin:upscale``) gives better results, and
Adobe reviewers inspect at 100 %.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from PIL import Image

from comfyline.errors import ExportError
from comfyline.exports.markets import Market

__all__ = ["market_minimum", "target_for_markets", "target_size", "upscale_lanczos"]

# ComfyUI's ImageScale takes at most 16384 per side.
MAX_SIDE_PX = 16384


def target_size(
    width: int, height: int, *, min_megapixels: float | None = None, min_side: int | None = None
) -> tuple[int, int]:
    """The smallest (width, height) with the aspect ratio of ``width`` x ``height`` that has at
    least ``min_megapixels`` (1 MP = 1,000,000 px) and a shorter side of at least ``min_side``.

    >>> target_size(512, 768, min_megapixels=6.0)
    (2000, 3000)
    """
    if width <= 0 or height <= 0:
        raise ExportError(f"cannot upscale an image of {width}x{height} pixels")
    scale = 1.0
    if min_megapixels is not None:
        scale = max(scale, math.sqrt(min_megapixels * 1e6 / (width * height)))
    if min_side is not None:
        scale = max(scale, min_side / min(width, height))
    if scale == 1.0:
        return width, height
    # Round up, then step up while float error leaves us a pixel short of a minimum.
    w, h = math.ceil(width * scale - 1e-9), math.ceil(height * scale - 1e-9)
    while not _meets(w, h, min_megapixels, min_side):
        w, h = (w + 1, h) if w / width <= h / height else (w, h + 1)
    if max(w, h) > MAX_SIDE_PX:
        raise ExportError(
            f"upscaling {width}x{height} to {w}x{h} passes {MAX_SIDE_PX} px on a side; "
            "the aspect ratio is too extreme for the marketplace's minimum"
        )
    return w, h


def _meets(w: int, h: int, min_megapixels: float | None, min_side: int | None) -> bool:
    if min_megapixels is not None and w * h < min_megapixels * 1e6:
        return False
    return min_side is None or min(w, h) >= min_side


def market_minimum(markets: Sequence[Market]) -> tuple[float | None, int | None]:
    """The strictest minimum of ``markets``: (megapixels, shorter side in px), None if none."""
    megapixels = [m.min_megapixels for m in markets if m.min_megapixels is not None]
    sides = [m.min_side_px for m in markets if m.min_side_px is not None]
    return (max(megapixels) if megapixels else None, max(sides) if sides else None)


def target_for_markets(
    width: int, height: int, markets: Sequence[Market], *, min_megapixels: float | None = None
) -> tuple[int, int]:
    """The target that meets every market's minimum and ``min_megapixels`` (an order's
    ``sale.min_megapixels``) at once, for an image of ``width`` x ``height``."""
    megapixels, side = market_minimum(markets)
    if min_megapixels is not None:
        megapixels = max(megapixels or 0.0, min_megapixels)
    return target_size(width, height, min_megapixels=megapixels, min_side=side)


def upscale_lanczos(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """``image`` resized to ``size`` with Lanczos (the image itself when already that size)."""
    if image.size == tuple(size):
        return image
    if size[0] < image.width or size[1] < image.height:
        raise ExportError(
            f"upscale_lanczos enlarges only; asked to go from {image.width}x{image.height} "
            f"to {size[0]}x{size[1]}"
        )
    return image.resize(size, Image.Resampling.LANCZOS)
