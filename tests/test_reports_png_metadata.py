"""Parameters inside the PNG: A1111's infotext and our JSON, ComfyUI's chunks kept."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from comfyline.errors import OutputError
from comfyline.reports.png_metadata import embed_parameters, infotext, read_text_chunks

PARAMS = {
    "prompt": "a red fox in snow",
    "negative": "blurry, lowres",
    "steps": 8,
    "sampler": "euler",
    "scheduler": "normal",
    "cfg": 5.0,
    "seed": 123,
    "width": 320,
    "height": 320,
    "checkpoint": "tiny-sd15.safetensors",
    "denoise": 1.0,
    "batch_size": 1,
}


def comfy_png(path: Path, color: tuple[int, int, int] = (200, 30, 30)) -> Path:
    """A PNG as ComfyUI's SaveImage writes it: RGB pixels plus "prompt" and "workflow" tEXt."""
    info = PngInfo()
    info.add_text("prompt", json.dumps({"3": {"class_type": "KSampler"}}))
    info.add_text("workflow", json.dumps({"nodes": []}))
    Image.new("RGB", (32, 24), color).save(path, pnginfo=info)
    return path


def test_infotext_is_a1111s_format() -> None:
    assert infotext(PARAMS) == (
        "a red fox in snow\n"
        "Negative prompt: blurry, lowres\n"
        "Steps: 8, Sampler: euler, Schedule type: normal, CFG scale: 5.0, Seed: 123, "
        "Size: 320x320, Model: tiny-sd15.safetensors"
    )


def test_infotext_without_negative_quotes_awkward_values() -> None:
    text = infotext({"prompt": "x", "seed": 1, "checkpoint": "my, model", "denoise": 0.5})
    assert text == 'x\nSeed: 1, Model: "my, model", Denoising strength: 0.5'


def test_embed_keeps_comfyui_chunks_and_pixels(tmp_path: Path) -> None:
    png = comfy_png(tmp_path / "img.png")
    with Image.open(png) as before:
        pixels = before.tobytes()
    embed_parameters(png, PARAMS)
    text = read_text_chunks(png)
    assert set(text) == {"prompt", "workflow", "parameters", "comfyline"}
    assert json.loads(text["prompt"]) == {"3": {"class_type": "KSampler"}}
    assert text["parameters"] == infotext(PARAMS)
    assert json.loads(text["comfyline"]) == PARAMS
    with Image.open(png) as after:
        assert after.tobytes() == pixels
    assert sorted(p.name for p in tmp_path.iterdir()) == ["img.png"]  # no temp file left


def test_embedding_again_replaces_and_is_deterministic(tmp_path: Path) -> None:
    a, b = comfy_png(tmp_path / "a.png"), comfy_png(tmp_path / "b.png")
    embed_parameters(a, {**PARAMS, "seed": 1})
    embed_parameters(a, PARAMS)
    embed_parameters(b, PARAMS)
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes().count(b"parameters\0") == 1


def test_non_latin_prompt_goes_into_itxt(tmp_path: Path) -> None:
    png = comfy_png(tmp_path / "img.png")
    embed_parameters(png, {**PARAMS, "prompt": "лиса в снегу, 狐"})
    assert b"iTXt" in png.read_bytes()
    assert read_text_chunks(png)["parameters"].startswith("лиса в снегу, 狐\n")


def test_not_a_png(tmp_path: Path) -> None:
    path = tmp_path / "img.png"
    Image.new("RGB", (8, 8)).save(path, format="JPEG")
    with pytest.raises(OutputError, match="is not a PNG file"):
        embed_parameters(path, PARAMS)


def test_damaged_png_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = comfy_png(tmp_path / "img.png")
    data = bytearray(path.read_bytes())
    data[40] ^= 0xFF  # inside the first chunks: a CRC no longer matches
    path.write_bytes(bytes(data))
    with pytest.raises(OutputError, match="the PNG is damaged"):
        embed_parameters(path, PARAMS)
    assert path.read_bytes() == bytes(data)


def test_truncated_png(tmp_path: Path) -> None:
    path = comfy_png(tmp_path / "img.png")
    path.write_bytes(path.read_bytes()[:60])
    with pytest.raises(OutputError, match="truncated or has no image data"):
        embed_parameters(path, PARAMS)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match="cannot read the image"):
        embed_parameters(tmp_path / "nope.png", PARAMS)
