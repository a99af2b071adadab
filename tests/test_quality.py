"""Quality checks on images made here: black, white, flat, blurred, broken, near-duplicate."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image, ImageChops, ImageFilter
from pydantic import ValidationError

from comfyline.quality import (
    QcFlag,
    QcSettings,
    SeriesChecker,
    check_image_bytes,
    check_image_file,
    check_series,
    first_near_duplicate,
    group_near_duplicates,
    hash_distance,
)
from sale_images import gradient, noise, save, scene, solid


@pytest.mark.parametrize(
    ("image", "flags"),
    [
        (solid((0, 0, 0)), (QcFlag.BLACK, QcFlag.UNIFORM)),
        (solid((255, 255, 255)), (QcFlag.WHITE, QcFlag.UNIFORM)),
        (solid((200, 30, 30)), (QcFlag.UNIFORM,)),
        (gradient(), ()),
        (noise(), ()),
        (scene(), ()),
    ],
    ids=["black", "white", "flat-red", "gradient", "noise", "scene"],
)
def test_flags_of_made_images(tmp_path: Path, image: Image.Image, flags: tuple[QcFlag]) -> None:
    result = check_image_file(save(image, tmp_path / "img.png"))
    assert result.flags == flags
    assert result.ok is (flags == ())
    assert (result.width, result.height) == image.size


def test_a_nearly_black_image_with_a_few_bright_pixels_is_black(tmp_path: Path) -> None:
    image = solid((3, 3, 3), (200, 200))
    for x in range(0, 200, 50):  # 16 bright pixels of 40,000: a NaN image's stray values
        for y in range(0, 200, 50):
            image.putpixel((x, y), (250, 250, 250))
    result = check_image_file(save(image, tmp_path / "dark.png"))
    assert QcFlag.BLACK in result.flags


def test_a_dark_but_real_image_is_not_black(tmp_path: Path) -> None:
    dark = Image.eval(scene(), lambda v: v // 4)  # a night scene: dark, yet with content
    assert check_image_file(save(dark, tmp_path / "night.png")).ok


def test_transparent_png_is_judged_as_exported_on_white(tmp_path: Path) -> None:
    clear = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    result = check_image_file(save(clear, tmp_path / "clear.png"))
    assert result.flags == (QcFlag.WHITE, QcFlag.UNIFORM)


def test_undecodable_and_missing_files_are_flagged_not_raised(tmp_path: Path) -> None:
    broken = tmp_path / "broken.png"
    save(scene(), broken)
    broken.write_bytes(broken.read_bytes()[:200])  # a transfer cut short
    for path in (broken, tmp_path / "missing.png"):
        result = check_image_file(path)
        assert result.flags == (QcFlag.UNDECODABLE,)
        assert result.phash is None and result.detail
    assert check_image_bytes(b"not an image").flags == (QcFlag.UNDECODABLE,)


def test_blur_is_measured_and_flagged_only_with_a_threshold(tmp_path: Path) -> None:
    sharp = check_image_file(save(scene(), tmp_path / "sharp.png"))
    blurred_image = scene().filter(ImageFilter.GaussianBlur(4))
    blurred = check_image_file(save(blurred_image, tmp_path / "blurred.png"))
    assert sharp.sharpness is not None and blurred.sharpness is not None
    assert blurred.sharpness < sharp.sharpness / 10
    assert blurred.ok  # no threshold by default
    threshold = QcSettings(min_sharpness=(blurred.sharpness + sharp.sharpness) / 2)
    assert check_image_file(tmp_path / "blurred.png", threshold).flags == (QcFlag.BLURRY,)
    assert check_image_file(tmp_path / "sharp.png", threshold).ok
    assert sharp.score > blurred.score > 0


def test_shifted_copy_is_a_near_duplicate_and_other_scenes_are_not(tmp_path: Path) -> None:
    original = scene(seed=1)
    paths = [
        save(original, tmp_path / "a.png"),
        save(scene(seed=2), tmp_path / "b.png"),
        save(ImageChops.offset(original, 4, 3), tmp_path / "a_shifted.png"),
        save(original.filter(ImageFilter.GaussianBlur(1.5)), tmp_path / "a_soft.png"),
        save(scene(seed=3), tmp_path / "c.png"),
    ]
    results = check_series(paths)
    assert [r.ok for r in results] == [True, True, False, False, True]
    assert results[2].flags == (QcFlag.NEAR_DUPLICATE,)
    assert results[2].duplicate_of == str(paths[0])
    assert results[3].duplicate_of == str(paths[0])
    a, b = results[0].phash, results[1].phash
    assert a is not None and b is not None and hash_distance(a, b) > 16


def test_a_run_checks_each_new_image_against_every_earlier_one() -> None:
    def png(image: Image.Image) -> bytes:
        out = io.BytesIO()
        image.save(out, format="PNG")
        return out.getvalue()

    original = scene(size=(128, 128), seed=1)
    shifted = png(ImageChops.offset(original, 2, 1))
    earlier = check_image_bytes(png(original))
    assert earlier.phash is not None
    # A resume: the series so far comes from the ledger (file name -> hash).
    checker = SeriesChecker(QcSettings(), {"resumed.png": earlier.phash})
    others = [png(scene(size=(128, 128), seed=seed)) for seed in range(2, 80)]
    assert all(checker.check(data, f"{i}.png").ok for i, data in enumerate(others))
    copy = checker.check(shifted, "copy.png")
    assert copy.duplicate_of == "resumed.png"  # the first one made, across a resume
    # A later copy is a duplicate of the earliest, not of the copy before it.
    assert checker.check(shifted, "copy2.png").duplicate_of == "resumed.png"
    # Made again under its own name (a retry), an image is not a duplicate of itself.
    assert checker.check(others[0], "0.png").ok
    # Set aside to be made again: no later image is its duplicate.
    checker.forget(["resumed.png", "copy.png"])
    assert checker.check(shifted, "copy3.png").duplicate_of == "copy2.png"
    checker.forget(["copy2.png", "copy3.png"])
    assert checker.check(shifted, "copy4.png").ok


def test_duplicate_check_can_be_turned_off(tmp_path: Path) -> None:
    path = save(scene(), tmp_path / "a.png")
    results = check_series([path, path], QcSettings(duplicate_distance=None))
    assert all(r.ok for r in results)


def test_grouping_is_transitive_and_keeps_order() -> None:
    hashes = {
        "a": "0000000000000000",
        "b": "000000000000000f",  # 4 bits from a
        "c": "00000000000000ff",  # 4 from b, 8 from a
        "d": "ffffffffffffffff",
        "e": "fffffffffffffff0",
    }
    assert group_near_duplicates(hashes, 4) == [["a", "b", "c"], ["d", "e"]]
    assert group_near_duplicates(hashes, 0) == [["a"], ["b"], ["c"], ["d"], ["e"]]
    assert first_near_duplicate("000000000000001f", hashes, 1) == "b"
    assert first_near_duplicate("0f0f0f0f0f0f0f0f", hashes, 4) is None


def test_hashes_of_different_lengths_are_refused() -> None:
    with pytest.raises(ValueError, match="different lengths"):
        hash_distance("00", "0000")


def test_settings_reject_unknown_keys_and_bad_values() -> None:
    with pytest.raises(ValidationError, match="black_levl"):
        QcSettings.model_validate({"black_levl": 3})
    with pytest.raises(ValidationError, match="duplicate_distance"):
        QcSettings.model_validate({"duplicate_distance": 65})


def test_result_json_has_flags_and_measures(tmp_path: Path) -> None:
    data = check_image_file(save(solid((0, 0, 0)), tmp_path / "b.png")).to_json()
    assert data["flags"] == ["black", "uniform"] and data["ok"] is False
    assert data["mean_luma"] == 0 and data["score"] == 0
