"""Images made for the sale tests: textured scenes, flat colours, gradients, noise.

Made with Pillow from a seed, so every run sees the same pixels. A "scene" is detailed enough
that its JPEG at marketplace size is over Freepik's 0.5 MB minimum.
"""

from __future__ import annotations

import random
from pathlib import Path

from PIL import Image, ImageDraw


def scene(size: tuple[int, int] = (512, 768), seed: int = 0, spots: int = 400) -> Image.Image:
    """Many small coloured ellipses on a coloured ground."""
    rng = random.Random(seed)
    image = Image.new("RGB", size, _colour(rng))
    draw = ImageDraw.Draw(image)
    for _ in range(spots):
        x, y, r = rng.randrange(size[0]), rng.randrange(size[1]), rng.randrange(3, 40)
        draw.ellipse([x, y, x + r, y + r], fill=_colour(rng))
    return image


def noise(size: tuple[int, int] = (256, 256), seed: int = 0) -> Image.Image:
    """Uniform RGB noise."""
    rng = random.Random(seed)
    return Image.frombytes("RGB", size, rng.randbytes(size[0] * size[1] * 3))


def gradient(size: tuple[int, int] = (256, 256)) -> Image.Image:
    """A vertical black-to-white gradient, resized to ``size``."""
    return Image.linear_gradient("L").resize(size).convert("RGB")


def solid(colour: tuple[int, int, int], size: tuple[int, int] = (256, 256)) -> Image.Image:
    """One flat colour."""
    return Image.new("RGB", size, colour)


def save(image: Image.Image, path: Path) -> Path:
    """Save as PNG (or by the suffix) and return the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


def _colour(rng: random.Random) -> tuple[int, int, int]:
    return rng.randrange(256), rng.randrange(256), rng.randrange(256)
