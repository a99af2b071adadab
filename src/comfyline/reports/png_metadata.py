"""Parameters carried inside each PNG, in the text chunks ComfyUI and common tools read.

Two chunks are added to every image:

* ``parameters``: the A1111 "infotext" (prompt, ``Negative prompt: ...``, then
  ``Steps: 8, Sampler: euler, CFG scale: 5.0, Seed: 123, Size: 320x320, Model: ...``), which
  A1111, Forge, SD.Next, Civitai and most image viewers show and parse;
* ``comfyline``: every parameter as JSON, for our own tools.

The image is edited at the chunk level: the pixel data (IDAT) and every other chunk, ComfyUI's
``prompt`` and ``workflow`` text chunks included, are copied byte for byte; only earlier
``parameters``/``comfyline`` chunks are replaced. The file is rewritten atomically.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from PIL import Image

from comfyline.errors import OutputError
from comfyline.images import sha256_hex, write_atomic

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PARAMETERS_KEY = "parameters"
COMFYLINE_KEY = "comfyline"
_OURS = {PARAMETERS_KEY.encode(), COMFYLINE_KEY.encode()}
_TEXT_TYPES = {b"tEXt", b"iTXt", b"zTXt"}

# A1111's infotext names for our parameter keys, in A1111's order.
_INFOTEXT_FIELDS = (
    ("steps", "Steps"),
    ("sampler", "Sampler"),
    ("scheduler", "Schedule type"),
    ("cfg", "CFG scale"),
    ("seed", "Seed"),
    ("size", "Size"),
    ("checkpoint", "Model"),
    ("vae", "VAE"),
    ("loras", "LoRAs"),
    ("denoise", "Denoising strength"),
    ("batch_size", "Batch size"),
)


def infotext(params: Mapping[str, Any]) -> str:
    """The A1111 ``parameters`` text of ``params`` (keys: prompt, negative, steps, sampler,
    scheduler, cfg, seed, width, height, checkpoint, vae, loras, denoise, batch_size; all
    optional; ``loras`` a list of ``{name, strength, clip_strength}``).

    >>> infotext({"prompt": "a cat", "steps": 8, "seed": 1, "width": 64, "height": 64})
    'a cat\\nSteps: 8, Seed: 1, Size: 64x64'
    """
    values = dict(params)
    if "width" in values and "height" in values:
        values["size"] = f"{values['width']}x{values['height']}"
    if values.get("denoise") == 1.0:
        values.pop("denoise")  # A1111 writes the strength only for img2img / hires passes
    if values.get("loras"):  # "name:0.6:0.6, other:1.0:1.0" (model and clip strengths)
        values["loras"] = ", ".join(
            f"{lora['name']}:{lora['strength']}:{lora['clip_strength']}" for lora in values["loras"]
        )
    if values.get("batch_size") == 1:
        values.pop("batch_size")
    fields = [
        f"{label}: {_quote(values[key])}"
        for key, label in _INFOTEXT_FIELDS
        if values.get(key) not in (None, "")
    ]
    lines = [str(values.get("prompt", ""))]
    if values.get("negative"):
        lines.append(f"Negative prompt: {values['negative']}")
    lines.append(", ".join(fields))
    return "\n".join(lines)


def with_parameters(data: bytes, params: Mapping[str, Any], source: str = "the image") -> bytes:
    """The PNG ``data`` with its ``parameters`` and ``comfyline`` text chunks added (or
    replaced), everything else kept byte for byte, ComfyUI's ``prompt`` chunk included.

    Raises :class:`OutputError` naming ``source`` when ``data`` is not a whole PNG.
    """
    chunks = [c for c in _chunks(data, source) if not _is_ours(c)]
    new = [
        _text_chunk(PARAMETERS_KEY, infotext(params)),
        _text_chunk(COMFYLINE_KEY, json.dumps(dict(params), sort_keys=True, default=str)),
    ]
    first_idat = next(i for i, (kind, _) in enumerate(chunks) if kind == b"IDAT")
    chunks[first_idat:first_idat] = new  # before the pixels, where Pillow & co. read eagerly
    return PNG_SIGNATURE + b"".join(_encode(kind, body) for kind, body in chunks)


def embed_parameters(png_path: Path, params: Mapping[str, Any]) -> str:
    """Add (or replace) the parameter chunks of the PNG file at ``png_path`` (see
    :func:`with_parameters`), rewriting it atomically; the sha256 of the file as written.

    Raises :class:`OutputError` when the file is not a readable PNG or cannot be rewritten.
    """
    path = Path(png_path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise OutputError(f"cannot read the image {path}: {exc}") from exc
    out = with_parameters(data, params, str(path))
    try:
        write_atomic(path, out)
    except OSError as exc:
        raise OutputError(f"cannot rewrite the image {path}: {exc}") from exc
    return sha256_hex(out)


def read_text_chunks(png_path: Path) -> dict[str, str]:
    """Every text chunk of a PNG (tEXt, zTXt and iTXt), as Pillow reads them."""
    try:
        with Image.open(png_path) as image:
            image.load()
            text: dict[str, str] = dict(getattr(image, "text", {}))
            return text
    except OSError as exc:
        raise OutputError(f"cannot read the image {png_path}: {exc}") from exc


def _quote(value: Any) -> str:
    """A1111's quoting: a value holding a comma, colon or newline is written as a JSON string."""
    text = str(value)
    if any(c in text for c in ",:\n"):
        return json.dumps(text, ensure_ascii=False)
    return text


def _chunks(data: bytes, path: Path | str) -> Iterator[tuple[bytes, bytes]]:
    """The (type, body) of each chunk, CRCs checked, up to and including IEND."""
    if not data.startswith(PNG_SIGNATURE):
        raise OutputError(f"{path} is not a PNG file (it does not start with the PNG signature)")
    pos, seen_idat = len(PNG_SIGNATURE), False
    while pos + 12 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        if pos + 12 + length > len(data):
            break
        body, crc = data[pos + 8 : pos + 8 + length], data[pos + 8 + length : pos + 12 + length]
        if len(crc) != 4 or struct.unpack(">I", crc)[0] != zlib.crc32(kind + body):
            raise OutputError(f"{path}: the PNG is damaged (bad {kind!r} chunk at byte {pos})")
        seen_idat |= kind == b"IDAT"
        yield kind, body
        if kind == b"IEND":
            if not seen_idat:
                break
            return
        pos += 12 + length
    raise OutputError(f"{path}: the PNG is truncated or has no image data")


def _is_ours(chunk: tuple[bytes, bytes]) -> bool:
    kind, body = chunk
    return kind in _TEXT_TYPES and body.split(b"\0", 1)[0] in _OURS


def _text_chunk(key: str, text: str) -> tuple[bytes, bytes]:
    """tEXt when the text is Latin-1 (what PNG's tEXt allows), else uncompressed UTF-8 iTXt."""
    try:
        return b"tEXt", key.encode("latin-1") + b"\0" + text.encode("latin-1")
    except UnicodeEncodeError:
        # keyword, compression flag 0, method 0, empty language tag, empty translated keyword
        return b"iTXt", key.encode("latin-1") + b"\0\0\0\0\0" + text.encode("utf-8")


def _encode(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
