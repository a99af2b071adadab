"""Cheap deterministic PNGs standing in for generated images, saved the way ComfyUI saves them.

Each image is a colour gradient with a few light and dark shapes, all placed by the seed (and
the batch index), with the seed and the prompt text drawn on it. The shapes give each seed a
layout of its own, as a real model's images have: with the gradient alone every image of a
series looked alike to the near-duplicate check. The API graph goes into the PNG text chunk
``prompt`` and every key of ``extra_pnginfo`` (the UI ``workflow``) into its own chunk, as
ComfyUI's SaveImage does.
File names follow ComfyUI: ``{prefix}_{counter:05}_.png``, a ``/`` in the prefix makes a
subfolder, ``%width%``/``%height%`` are replaced, and the counter continues from the files
already in that folder.
"""

from __future__ import annotations

import json
import os
import random
import re
import textwrap
import threading
from functools import lru_cache
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont
from PIL.PngImagePlugin import PngInfo

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def render(width: int, height: int, seed: int | None, text: str, index: int) -> Image.Image:
    """One image: a seeded 4-corner gradient (resized from 2x2, so cheap), four seeded shapes
    and text on it."""
    rng = random.Random(f"{seed}:{index}:{text}")
    corners = Image.new("RGB", (2, 2))
    corners.putdata([tuple(rng.randrange(40, 216) for _ in range(3)) for _ in range(4)])
    image = corners.resize((max(1, width), max(1, height)), Image.Resampling.BILINEAR)
    draw = ImageDraw.Draw(image)
    for _ in range(4):  # 300 seeds: no two images within 14 bits of perceptual hash (of 64)
        x, y = rng.uniform(-0.2, 1.0) * width, rng.uniform(-0.2, 1.0) * height
        w, h = rng.uniform(0.15, 0.6) * width, rng.uniform(0.15, 0.6) * height
        shade = rng.choice((rng.randrange(0, 60), rng.randrange(190, 256)))
        colour = tuple(min(255, max(0, shade + rng.randrange(-30, 31))) for _ in range(3))
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape((x, y, x + w, y + h), fill=colour)
    font = _font()
    draw.text((6, 6), f"seed {seed}" + (f" #{index + 1}" if index else ""), WHITE, font)
    block = _prompt_block(text, width)
    if block is not None:  # the prompt's lines, one line below the seed's
        top, mask = block
        image.paste(WHITE, (6, 6 + top), mask)
    return image


WHITE = (255, 255, 255)
_LINE_GAP = 4
"""Pixels between lines of text (Pillow's default for multiline text)."""


@lru_cache(maxsize=64)
def _prompt_block(text: str, width: int) -> tuple[int, Image.Image] | None:
    """The prompt's wrapped lines as a mask, and the height of one line of text (where the
    block starts, below the seed's line): made once for a series, not for every image."""
    lines = "\n".join(textwrap.wrap(text, width=max(8, width // 7))[:6])
    if not lines:
        return None
    font = _font()
    measure = ImageDraw.Draw(Image.new("L", (1, 1)))
    line = int(measure.textbbox((0, 0), "A", font)[3]) + _LINE_GAP
    box = measure.multiline_textbbox((0, 0), lines, font, spacing=_LINE_GAP)
    mask = Image.new("L", (int(box[2]) + 1, int(box[3]) + 1))
    ImageDraw.Draw(mask).multiline_text((0, 0), lines, 255, font, spacing=_LINE_GAP)
    return line, mask


_fonts = threading.local()


def _font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    # Pillow loads its default font afresh for every new ImageDraw (a base64 blob through
    # FreeType): once per thread is enough (a FreeType face is not for two threads at once).
    font = getattr(_fonts, "font", None)
    if font is None:
        font = _fonts.font = ImageFont.load_default()
    return font


def draw_and_save(
    kind: str,
    width: int,
    height: int,
    seed: int | None,
    text: str,
    index: int,
    path: Path,
    info: PngInfo,
) -> None:
    """Draw one image - a ``picture`` (:func:`render`), seeded ``noise`` or ``black`` - and
    save it (:func:`save_png`). Safe to call from a worker thread."""
    if kind == "noise":
        picture = noise(width, height, seed, index)
    elif kind == "black":
        picture = Image.new("RGB", (width, height))
    else:
        picture = render(width, height, seed, text, index)
    save_png(picture, path, info)


def noise(width: int, height: int, seed: int | None, index: int) -> Image.Image:
    """Seeded RGB noise: a PNG of it cannot be compressed below its raw pixels."""
    rng = random.Random(f"noise:{seed}:{index}")
    return Image.frombytes("RGB", (width, height), rng.randbytes(width * height * 3))


def png_info(prompt: dict[str, Any] | None, extra_pnginfo: dict[str, Any] | None) -> PngInfo:
    """The PNG text chunks ComfyUI writes: ``prompt`` and each key of ``extra_pnginfo``."""
    info = PngInfo()
    if prompt is not None:
        info.add_text("prompt", json.dumps(prompt))
    for key, value in (extra_pnginfo or {}).items():
        info.add_text(key, json.dumps(value))
    return info


def save_path(output_dir: Path, prefix: str, width: int, height: int) -> tuple[Path, str, str]:
    """``(folder, subfolder, file name stem)`` for a filename prefix, split as ComfyUI does
    (after normalising: ``a/./b`` is ``a/b``). The folder may lie outside ``output_dir``
    (``../x``, ``/tmp/x``): the caller refuses that."""
    prefix = prefix.replace("%width%", str(width)).replace("%height%", str(height))
    normal = os.path.normpath(prefix)
    subfolder, stem = os.path.dirname(normal), os.path.basename(normal)
    folder = output_dir / subfolder if subfolder else output_dir
    return folder, subfolder, stem


def next_counter(folder: Path, stem: str) -> int:
    """The first free counter: one past the highest ``{stem}_NNNNN_`` file in the folder."""
    pattern = re.compile(re.escape(stem) + r"_(\d+)_?\.")
    highest = 0
    if folder.is_dir():
        for entry in folder.iterdir():
            match = pattern.match(entry.name)
            if match:
                highest = max(highest, int(match.group(1)))
    return highest + 1


def save_png(image: Image.Image, path: Path, info: PngInfo) -> None:
    """Write the image; a low compression level keeps thousands of saves cheap."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="PNG", pnginfo=info, compress_level=1)
