"""PNG -> JPEG: sRGB, no alpha, metadata read back by readers that are not Exiv2 (Pillow's XMP
and IPTC readers; ExifTool where it is installed)."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageCms, IptcImagePlugin

from comfyline.errors import OutputError
from comfyline.exports.jpeg import (
    TRAINED_ALGORITHMIC_MEDIA,
    ImageMetadata,
    embed_metadata,
    encode_jpeg,
    export_jpeg,
    to_srgb,
)
from sale_images import save, scene

META = ImageMetadata(
    title="Red fox on fresh snow, dawn — Füchsin",
    description='A red fox sits in fresh snow; "quiet" <forest> & light.',
    keywords=["fox", "snow", "Winter Forest", "Füchsin"],
    creator="Jane Doe",
    copyright="© 2026 Jane Doe",
    prompt="a red fox in snow, soft light",
    parameters={"seed": 42, "steps": 20, "checkpoint": "sd15.safetensors", "prompt": "a fox"},
)


def _xmp(image: Image.Image) -> dict[str, Any]:
    description = image.getxmp()["xmpmeta"]["RDF"]["Description"]
    assert isinstance(description, dict)
    return description


def _iptc(image: Image.Image) -> dict[tuple[int, int], Any]:
    info = IptcImagePlugin.getiptcinfo(image)
    assert info is not None
    return dict(info)


@pytest.fixture
def fox_jpeg(tmp_path: Path) -> Path:
    source = save(scene((320, 480), seed=5), tmp_path / "fox.png")
    dest = tmp_path / "out" / "fox.jpg"
    written = export_jpeg(source, dest, META, size=(640, 960))
    assert written.path == dest and (written.width, written.height) == (640, 960)
    assert written.bytes == dest.stat().st_size
    return dest


def test_pillow_reads_every_xmp_field(fox_jpeg: Path) -> None:
    with Image.open(fox_jpeg) as image:
        assert image.format == "JPEG" and image.mode == "RGB" and image.size == (640, 960)
        xmp = _xmp(image)
    assert xmp["title"]["Alt"]["li"] == {"lang": "x-default", "text": META.title}
    assert xmp["description"]["Alt"]["li"]["text"] == META.description
    assert xmp["subject"]["Bag"]["li"] == list(META.keywords)
    assert xmp["creator"]["Seq"]["li"] == "Jane Doe"
    assert xmp["rights"]["Alt"]["li"]["text"] == "© 2026 Jane Doe"
    assert xmp["DigitalSourceType"] == TRAINED_ALGORITHMIC_MEDIA
    assert xmp["AIPromptInformation"] == META.prompt
    assert xmp["AISystemUsed"] == "ComfyUI"
    assert json.loads(xmp["parameters"]) == META.parameters


def test_pillow_reads_every_iptc_field_as_utf8(fox_jpeg: Path) -> None:
    with Image.open(fox_jpeg) as image:
        iptc = _iptc(image)
    assert iptc[(1, 90)] == b"\x1b%G"  # UTF-8 declared
    assert iptc[(2, 5)].decode() == META.title
    assert iptc[(2, 120)].decode() == META.description
    assert [k.decode() for k in iptc[(2, 25)]] == list(META.keywords)
    assert iptc[(2, 80)].decode() == "Jane Doe"
    assert iptc[(2, 116)].decode() == "© 2026 Jane Doe"


@pytest.mark.skipif(shutil.which("exiftool") is None, reason="exiftool is not installed")
def test_exiftool_reads_the_same(fox_jpeg: Path) -> None:
    out = subprocess.run(
        ["exiftool", "-j", "-G1", "-charset", "iptc=UTF8", str(fox_jpeg)],
        capture_output=True,
        check=True,
        text=True,
        timeout=60,
    )
    tags = json.loads(out.stdout)[0]
    assert tags["XMP-dc:Title"] == META.title
    assert tags["XMP-dc:Subject"] == list(META.keywords)
    assert tags["XMP-iptcExt:DigitalSourceType"] == TRAINED_ALGORITHMIC_MEDIA
    assert tags["IPTC:ObjectName"] == META.title
    assert tags["IPTC:Keywords"] == list(META.keywords)
    assert tags["IPTC:Caption-Abstract"] == META.description
    assert tags["IPTC:CopyrightNotice"] == "© 2026 Jane Doe"
    assert json.loads(tags["XMP-comfyline:Parameters"]) == META.parameters
    assert tags["ICC_Profile:ProfileDescription"] == "sRGB built-in"
    assert "Warning" not in tags


def test_alpha_is_flattened_on_white() -> None:
    image = Image.new("RGBA", (8, 8), (255, 0, 0, 0))
    image.putpixel((0, 0), (0, 0, 255, 255))
    flat = to_srgb(image)
    assert flat.mode == "RGB"
    assert flat.getpixel((1, 1)) == (255, 255, 255) and flat.getpixel((0, 0)) == (0, 0, 255)
    palette = Image.new("P", (4, 4), 0)
    palette.info["transparency"] = 0
    assert to_srgb(palette).getpixel((0, 0)) == (255, 255, 255)


def test_sixteen_bit_grey_is_scaled_not_clipped() -> None:
    grey = Image.new("I;16", (4, 4), 32768)
    assert to_srgb(grey).getpixel((0, 0)) == (127, 127, 127)


def test_an_embedded_profile_is_converted_to_srgb_and_srgb_embedded() -> None:
    lab_red = Image.new("RGB", (4, 4), (200, 40, 40))
    wide = ImageCms.ImageCmsProfile(ImageCms.createProfile("LAB"))  # any non-sRGB profile
    buffer = io.BytesIO()
    lab = ImageCms.profileToProfile(lab_red, ImageCms.createProfile("sRGB"), wide, outputMode="LAB")
    assert lab is not None
    lab.save(buffer, "TIFF", icc_profile=wide.tobytes())
    with Image.open(io.BytesIO(buffer.getvalue())) as tagged:
        tagged.load()
        back = to_srgb(tagged)
    assert all(abs(a - b) <= 3 for a, b in zip(back.getpixel((0, 0)), (200, 40, 40), strict=True))
    with Image.open(io.BytesIO(encode_jpeg(back))) as jpeg:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(jpeg.info["icc_profile"]))
        assert "sRGB" in ImageCms.getProfileDescription(profile)


def test_same_pixels_and_metadata_give_the_same_bytes() -> None:
    image = to_srgb(scene((64, 64)))
    first = embed_metadata(encode_jpeg(image), META)
    assert embed_metadata(encode_jpeg(image), META) == first
    again = embed_metadata(first, ImageMetadata(title="Another"))
    with Image.open(io.BytesIO(again)) as reread:
        xmp, iptc = _xmp(reread), _iptc(reread)
    assert "subject" not in xmp and (2, 25) not in iptc  # replaced, not merged
    assert iptc[(2, 5)] == b"Another"


def test_bad_inputs_raise_output_error(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match="quality must be 1-100"):
        encode_jpeg(Image.new("RGB", (4, 4)), quality=0)
    with pytest.raises(OutputError, match="takes an RGB image"):
        encode_jpeg(Image.new("L", (4, 4)))
    with pytest.raises(OutputError, match="cannot read the image"):
        export_jpeg(tmp_path / "absent.png", tmp_path / "x.jpg", META)
    with pytest.raises(OutputError, match="not JSON-able"):
        embed_metadata(
            encode_jpeg(Image.new("RGB", (4, 4))), ImageMetadata("t", parameters={"x": {1, 2}})
        )
    assert not (tmp_path / "x.jpg").exists()
