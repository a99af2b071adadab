"""PNG to a marketplace JPEG: sRGB, no alpha, quality 95, with IPTC and XMP metadata.

Pixels: an embedded ICC profile is honoured (converted to sRGB with LittleCMS through
``PIL.ImageCms``); without one the pixels are taken as sRGB, which is what ComfyUI writes.
Transparency is flattened on white. The JPEG carries an sRGB ICC profile, 4:4:4 chroma.

Metadata is written by Exiv2 (``pyexiv2``, which bundles its own libexiv2), in both the IPTC IIM
block and the XMP packet, as marketplaces read either:

==============  ===================================  ================================
field           XMP                                  IPTC IIM
==============  ===================================  ================================
title           dc:title (x-default)                 2:05 Object Name
description     dc:description (x-default)           2:120 Caption-Abstract
keywords        dc:subject (bag, in order)           2:25 Keywords (one per keyword)
creator         dc:creator                           2:80 By-line
copyright       dc:rights (x-default)                2:116 Copyright Notice
AI source       Iptc4xmpExt:DigitalSourceType        -
prompt          Iptc4xmpExt:AIPromptInformation      -
AI system       Iptc4xmpExt:AISystemUsed             -
parameters      comfyline:parameters (JSON)          -
==============  ===================================  ================================

DigitalSourceType is ``trainedAlgorithmicMedia`` (IPTC's term for a fully AI-generated image);
the AI prompt and system properties are IPTC Photo Metadata 2025.1's. The full generation
parameters go to ``comfyline:parameters`` in the namespace :data:`COMFYLINE_XMP_NS` as sorted
JSON: ExifTool shows it as ``XMP-comfyline:Parameters``. IPTC IIM text is UTF-8 (declared in
1:90). IIM's length limits (64 bytes for a title or keyword) are not enforced: readers take
longer values, and the XMP holds the same text.
"""

from __future__ import annotations

import io
import json
import re
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import pyexiv2
from PIL import Image, ImageCms

from comfyline.errors import OutputError
from comfyline.images import sha256_hex, write_atomic

__all__ = [
    "COMFYLINE_XMP_NS",
    "TRAINED_ALGORITHMIC_MEDIA",
    "ImageMetadata",
    "JpegFile",
    "embed_metadata",
    "encode_jpeg",
    "export_jpeg",
    "open_as_srgb",
    "to_srgb",
]

TRAINED_ALGORITHMIC_MEDIA = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
"""IPTC digital source type of an image created by a trained model from a prompt."""

COMFYLINE_XMP_NS = "http://ns.comfyline.dev/xmp/1.0/"
"""XMP namespace of ``comfyline:parameters`` (a name, not a page that must exist)."""

_NAMESPACES = {
    "dc": "http://purl.org/dc/elements/1.1/",
    "Iptc4xmpExt": "http://iptc.org/std/Iptc4xmpExt/2008-02-29/",
    "comfyline": COMFYLINE_XMP_NS,
}
# XML 1.0 cannot hold these characters at all; they never belong in a title anyway.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
_IPTC_UTF8 = "\x1b%G"


@dataclass(frozen=True)
class ImageMetadata:
    """What goes into a JPEG's IPTC and XMP (see the module's table)."""

    title: str
    description: str = ""
    keywords: Sequence[str] = ()
    creator: str | None = None
    copyright: str | None = None
    prompt: str | None = None
    ai_system: str | None = "ComfyUI"
    parameters: Mapping[str, Any] = field(default_factory=dict)
    digital_source_type: str = TRAINED_ALGORITHMIC_MEDIA


@dataclass(frozen=True)
class JpegFile:
    """A JPEG as written: where, its size in pixels and bytes, and its SHA-256."""

    path: Path
    width: int
    height: int
    bytes: int
    sha256: str


@cache
def _srgb_profile() -> ImageCms.ImageCmsProfile:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


@cache
def _srgb_icc() -> bytes:
    # LittleCMS stamps the profile's creation time into its header (bytes 24-35): a fixed
    # date keeps the JPEG of the same pixels byte-identical across runs.
    raw = bytearray(_srgb_profile().tobytes())
    raw[24:36] = struct.pack(">6H", 2000, 1, 1, 0, 0, 0)
    return bytes(raw)


def to_srgb(image: Image.Image) -> Image.Image:
    """An 8-bit RGB copy of ``image`` in sRGB: transparency flattened on white, an embedded
    ICC profile converted, 16-bit and float modes scaled down."""
    icc = image.info.get("icc_profile")
    image = _eight_bit(_flatten(image))
    if icc:
        try:
            source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            converted = ImageCms.profileToProfile(image, source, _srgb_profile(), outputMode="RGB")
        except (ImageCms.PyCMSError, OSError, ValueError) as exc:
            raise OutputError(f"the image's embedded ICC profile cannot be used: {exc}") from exc
        assert converted is not None
        image = converted
    return image if image.mode == "RGB" else image.convert("RGB")


def _flatten(image: Image.Image) -> Image.Image:
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode not in ("RGBA", "LA", "PA", "La", "RGBa") and "transparency" not in image.info:
        return image
    rgba = image.convert("RGBA")
    flat = Image.new("RGB", rgba.size, (255, 255, 255))
    flat.paste(rgba, mask=rgba.getchannel("A"))
    return flat


def _eight_bit(image: Image.Image) -> Image.Image:
    # Pillow's plain convert() clips 16-bit values at 255 (a white image): scale them instead.
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        image = image.convert("I")
    if image.mode == "I":
        return image.point(lambda v: v * (1 / 257)).convert("L")
    if image.mode == "F":
        return image.point(lambda v: v * 255).convert("L")
    return image


def open_as_srgb(path: Path) -> Image.Image:
    """Read an image file and return it as :func:`to_srgb` does; :class:`OutputError` if it
    cannot be read."""
    try:
        with Image.open(path) as image:
            image.load()
            return to_srgb(image)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise OutputError(f"cannot read the image {path}: {type(exc).__name__}: {exc}") from exc


def encode_jpeg(image: Image.Image, *, quality: int = 95) -> bytes:
    """``image`` (RGB, sRGB: see :func:`to_srgb`) as baseline JPEG bytes with an sRGB ICC
    profile, no EXIF. Deterministic: the same pixels give the same bytes."""
    if image.mode != "RGB":
        raise OutputError(f"encode_jpeg takes an RGB image, not mode {image.mode!r}")
    if not 1 <= quality <= 100:
        raise OutputError(f"JPEG quality must be 1-100 but is {quality}")
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality, subsampling=0, icc_profile=_srgb_icc())
    return buffer.getvalue()


def embed_metadata(jpeg: bytes, meta: ImageMetadata) -> bytes:
    """``jpeg`` with ``meta`` written into its XMP packet and IPTC block (both replaced)."""
    iptc: dict[str, Any] = {
        "Iptc.Envelope.CharacterSet": _IPTC_UTF8,
        "Iptc.Application2.ObjectName": _clean(meta.title),
        "Iptc.Application2.Caption": _clean(meta.description) or None,
        "Iptc.Application2.Keywords": [_clean(k) for k in meta.keywords] or None,
        "Iptc.Application2.Byline": [_clean(meta.creator)] if meta.creator else None,
        "Iptc.Application2.Copyright": _clean(meta.copyright or "") or None,
    }
    try:
        with pyexiv2.ImageData(jpeg) as image:
            image.clear_iptc()
            image.modify_raw_xmp(_xmp_packet(meta))
            image.modify_iptc({k: v for k, v in iptc.items() if v is not None})
            return bytes(image.get_bytes())
    except (RuntimeError, ValueError) as exc:
        raise OutputError(f"Exiv2 cannot write the metadata: {exc}") from exc


def export_jpeg(
    source: Path | Image.Image,
    dest: Path,
    meta: ImageMetadata,
    *,
    quality: int = 95,
    size: tuple[int, int] | None = None,
) -> JpegFile:
    """Read ``source`` (a file or an image), convert to sRGB, resize to ``size`` with Lanczos
    when given, encode, embed ``meta`` and write ``dest`` atomically."""
    image = open_as_srgb(source) if isinstance(source, Path) else to_srgb(source)
    if size is not None and image.size != tuple(size):
        image = image.resize(size, Image.Resampling.LANCZOS)
    data = embed_metadata(encode_jpeg(image, quality=quality), meta)
    write_atomic(dest, data)
    return JpegFile(dest, image.width, image.height, len(data), sha256_hex(data))


def _clean(text: str) -> str:
    return _NOT_XML.sub("", text)


def _text(value: str) -> str:
    return escape(_clean(value))


def _alt(name: str, value: str) -> str:
    item = f'<rdf:li xml:lang="x-default">{_text(value)}</rdf:li>'
    return f"<{name}><rdf:Alt>{item}</rdf:Alt></{name}>"


def _array(name: str, kind: str, values: Sequence[str]) -> str:
    items = "".join(f"<rdf:li>{_text(v)}</rdf:li>" for v in values)
    return f"<{name}><rdf:{kind}>{items}</rdf:{kind}></{name}>"


def _xmp_packet(meta: ImageMetadata) -> str:
    props = [_alt("dc:title", meta.title)]
    if meta.description:
        props.append(_alt("dc:description", meta.description))
    if meta.keywords:
        props.append(_array("dc:subject", "Bag", meta.keywords))
    if meta.creator:
        props.append(_array("dc:creator", "Seq", [meta.creator]))
    if meta.copyright:
        props.append(_alt("dc:rights", meta.copyright))
    simple = {
        "Iptc4xmpExt:DigitalSourceType": meta.digital_source_type,
        "Iptc4xmpExt:AIPromptInformation": meta.prompt,
        "Iptc4xmpExt:AISystemUsed": meta.ai_system,
        "comfyline:parameters": _json(meta.parameters) if meta.parameters else None,
    }
    props += [f"<{k}>{_text(v)}</{k}>" for k, v in simple.items() if v]
    xmlns = " ".join(f'xmlns:{p}="{uri}"' for p, uri in _NAMESPACES.items())
    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/">'
        '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        f'<rdf:Description rdf:about="" {xmlns}>{"".join(props)}</rdf:Description>'
        '</rdf:RDF></x:xmpmeta><?xpacket end="w"?>'
    )


def _json(value: Mapping[str, Any]) -> str:
    try:
        return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise OutputError(f"the generation parameters are not JSON-able: {exc}") from exc
