"""Upload packages end to end: real PNGs in, folders, JPEGs and CSVs out, read back with
independent readers (csv, Pillow's XMP and IPTC readers)."""

from __future__ import annotations

import csv
import io
import json
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image, IptcImagePlugin

from comfyline.errors import ConfigError, MarketRefused, PackageInvalid
from comfyline.exports import (
    ExportItem,
    ExportOptions,
    PackageResult,
    apply_motif_cap,
    build_package,
    check_package,
    get_market,
    zip_package,
)
from comfyline.exports.package import MANIFEST_NAME
from sale_images import save, scene, solid

ALL = "adobe,freepik,dreamstime,123rf"
KEYWORDS = ["fox", "snow", "winter", "forest", "wildlife", "animal", "Fox"]
OPTIONS = ExportOptions(creator="Jane Doe", copyright="© 2026 Jane Doe")


def _item(folder: Path, index: int, **changes: object) -> ExportItem:
    source = folder / "src" / f"img_{index:04}.png"
    if not source.exists():
        save(scene((512, 768), seed=index), source)
    item = ExportItem(
        source=source,
        stem=f"img_{index:04}",
        title=f"Red fox number {index}, sitting in fresh snow at dawn in a quiet winter forest",
        description=f"A red fox (number {index}) sits in the fresh snow of a quiet forest.",
        keywords=[*KEYWORDS, f"fox {index}"],
        parameters={"prompt": "a red fox in fresh snow", "seed": 1000 + index, "steps": 20},
    )
    return replace(item, **changes)  # type: ignore[arg-type]


def _rows(path: Path, delimiter: str) -> list[list[str]]:
    text = path.read_bytes().decode("utf-8")
    return list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter))


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {name: (folder / name).read_bytes() for name in _files(folder)}


def test_package_for_four_markets_meets_every_rule(tmp_path: Path) -> None:
    items = [_item(tmp_path, i) for i in range(8)]
    chosen = [it for it in items if it.stem != "img_0003"]  # rejected in review
    out = tmp_path / "export"
    result = build_package(chosen, ALL, out, OPTIONS)

    stems = [it.stem for it in chosen]
    assert _files(out) == sorted(
        [MANIFEST_NAME]
        + [f"{m}/{m}.csv" for m in ALL.split(",")]
        + [f"{m}/{s}.jpg" for m in ALL.split(",") for s in stems]
    )
    assert set(result.upscaled) == set(stems)
    assert all(size == (2000, 3000) for size in result.sizes.values())  # 123RF's 6 MP
    for key, package in result.packages.items():
        market = get_market(key)
        assert package.files == tuple(f"{s}.jpg" for s in stems)
        assert (package.written, package.reused) == (7, 0)
        for name in package.files:
            _check_jpeg(package.folder / name, market.min_megapixels or 0.0)
    _check_adobe(out / "adobe" / "adobe.csv", stems)
    _check_freepik(out / "freepik" / "freepik.csv", stems)
    _check_dreamstime(out / "dreamstime" / "dreamstime.csv", stems)
    _check_123rf(out / "123rf" / "123rf.csv", stems)
    assert "img_0000 [adobe] commas removed from the title" in result.notes


def _check_jpeg(path: Path, min_megapixels: float) -> None:
    with Image.open(path) as image:
        assert image.format == "JPEG" and image.mode == "RGB"
        assert image.width * image.height >= min_megapixels * 1e6
        xmp = image.getxmp()["xmpmeta"]["RDF"]["Description"]
        iptc = IptcImagePlugin.getiptcinfo(image)
    assert iptc is not None
    assert xmp["DigitalSourceType"].endswith("/trainedAlgorithmicMedia")
    assert xmp["title"]["Alt"]["li"]["text"] == iptc[(2, 5)].decode()
    assert xmp["subject"]["Bag"]["li"] == [k.decode() for k in iptc[(2, 25)]]
    assert xmp["creator"]["Seq"]["li"] == "Jane Doe"
    assert json.loads(xmp["parameters"])["prompt"] == "a red fox in fresh snow"


def _embedded(path: Path) -> tuple[str, list[str]]:
    with Image.open(path) as image:
        xmp = image.getxmp()["xmpmeta"]["RDF"]["Description"]
    return xmp["title"]["Alt"]["li"]["text"], xmp["subject"]["Bag"]["li"]


def _check_adobe(path: Path, stems: list[str]) -> None:
    assert path.read_bytes().startswith(b"Filename,Title,Keywords,Category,Releases\r\n")
    header, *rows = _rows(path, ",")
    assert [r[0] for r in rows] == [f"{s}.jpg" for s in stems]
    for filename, title, keywords, category, releases in rows:
        assert len(filename) <= 30 and len(title) <= 70 and "," not in title
        assert keywords.split(",")[:2] == ["fox", "snow"] and keywords.count("fox,") == 1
        assert (category, releases) == ("", "")
        assert _embedded(path.parent / filename) == (title, keywords.split(","))


def _check_freepik(path: Path, stems: list[str]) -> None:
    assert path.read_bytes().startswith(b"File name;Title;Keywords;Prompt;Model\r\n")
    header, *rows = _rows(path, ";")
    for filename, title, keywords, prompt, model in rows:
        assert keywords.split(",")[-1] == "_ai_generated" and len(title) <= 100
        assert (prompt, model) == ("a red fox in fresh snow", "Stable Diffusion")
        assert _embedded(path.parent / filename) == (title, keywords.split(","))
    assert [r[0] for r in rows] == [f"{s}.jpg" for s in stems]


def _check_dreamstime(path: Path, stems: list[str]) -> None:
    assert path.read_bytes().startswith(
        b"Filename,Image Name,Description,Category 1,Category 2,Category 3,keywords,Free,"
        b"W-EL,P-EL,SR-EL,SR-Price,Editorial,MR doc Ids,Pr Docs\r\n"
    )
    header, *rows = _rows(path, ",")
    for row in rows:
        assert row[3:6] == ["212", "", ""]  # Category 1: AI generated
        assert row[2].endswith("AI-generated image.") and 50 <= len(row[2]) <= 1000
        assert 5 <= len(row[6].split(",")) <= 50
    assert [r[0] for r in rows] == [f"{s}.jpg" for s in stems]


def _check_123rf(path: Path, stems: list[str]) -> None:
    text = path.read_bytes().decode("utf-8")
    assert text.startswith('"oldfilename","123rf_filename","description","keywords","country"\r\n')
    assert all(line.startswith('"') and line.endswith('"') for line in text.splitlines())
    header, *rows = _rows(path, ",")
    assert [r[0] for r in rows] == [f"{s}.jpg" for s in stems]
    assert all(len(r[2]) <= 180 and r[1] == "" for r in rows)


def test_problems_are_all_listed_and_nothing_is_written(tmp_path: Path) -> None:
    items = [
        _item(tmp_path, 0, stem="a_very_long_file_name_for_adobe_0"),
        _item(tmp_path, 1, keywords=["fox", "snow"]),
        _item(tmp_path, 2, title="Fox in the style of Greg Rutkowski"),
        _item(tmp_path, 3, keywords=["fox", "snow, ice", "a", "b", "c"]),
        _item(tmp_path, 4, categories={"adobe": [22]}),
        _item(tmp_path, 5, source=tmp_path / "absent.png"),
        _item(tmp_path, 6, parameters={"seed": 1, "weights": {0.5, 1.0}}),
    ]
    out = tmp_path / "export"
    with pytest.raises(PackageInvalid) as caught:
        build_package(items, "adobe,dreamstime", out)
    found = {(p.image, p.market, p.field) for p in caught.value.problems}
    assert found == {
        ("a_very_long_file_name_for_adobe_0", "adobe", "file name"),
        ("img_0001", "dreamstime", "keywords"),
        ("img_0002", "adobe", "title"),
        ("img_0002", "dreamstime", "title"),
        ("img_0003", "adobe", "keywords"),
        ("img_0003", "dreamstime", "keywords"),
        ("img_0004", "adobe", "category"),
        ("img_0005", "adobe", "file"),
        ("img_0005", "dreamstime", "file"),
        ("img_0006", "adobe", "parameters"),
        ("img_0006", "dreamstime", "parameters"),
    }
    message = str(caught.value)
    assert "'a_very_long_file_name_for_adobe_0.jpg' is 37 characters; the limit is 30" in message
    assert "img_0001 [dreamstime] keywords: 2 given; at least 5 needed" in message
    assert "'Greg Rutkowski' is on the forbidden list as artist" in message
    assert not out.exists()
    assert check_package(items, "adobe,dreamstime") == list(caught.value.problems)


def test_skip_invalid_leaves_out_only_the_bad_rows(tmp_path: Path) -> None:
    items = [_item(tmp_path, 0), _item(tmp_path, 1, keywords=["fox", "snow"])]
    result = build_package(
        items, "adobe,dreamstime", tmp_path / "export", replace(OPTIONS, skip_invalid=True)
    )
    assert result.packages["adobe"].files == ("img_0000.jpg", "img_0001.jpg")
    assert result.packages["dreamstime"].files == ("img_0000.jpg",)
    assert [(p.image, p.market) for p in result.skipped] == [("img_0001", "dreamstime")]
    header, *rows = _rows(tmp_path / "export" / "dreamstime" / "dreamstime.csv", ",")
    assert [r[0] for r in rows] == ["img_0000.jpg"]


def test_file_size_problems_stop_before_the_package_changes(tmp_path: Path) -> None:
    flat = save(solid((90, 120, 200), (512, 768)), tmp_path / "flat.png")
    items = [_item(tmp_path, 0), _item(tmp_path, 1, source=flat)]
    with pytest.raises(PackageInvalid, match=r"img_0001 \[freepik\] file size: 0\.\d\d MB; at"):
        build_package(items, "adobe,freepik", tmp_path / "export", OPTIONS)
    assert _files(tmp_path / "export") == []  # not even the good image's files
    result = build_package(
        items, "adobe,freepik", tmp_path / "export", replace(OPTIONS, skip_invalid=True)
    )
    assert result.packages["freepik"].files == ("img_0000.jpg",)
    assert result.packages["adobe"].files == ("img_0000.jpg", "img_0001.jpg")


def test_without_upscaling_small_images_are_problems(tmp_path: Path) -> None:
    problems = check_package([_item(tmp_path, 0)], "adobe", replace(OPTIONS, upscale=False))
    assert [str(p) for p in problems] == [
        "img_0000 [adobe] size: 512x768 is 0.39 MP; at least 4 MP needed (upscaling is off)"
    ]


def test_motif_cap_keeps_the_best_scored_of_each_motif(tmp_path: Path) -> None:
    scores = [0.5, 0.9, 0.1, 0.9, 0.7]
    items = [_item(tmp_path, i, motif="fox", score=s) for i, s in enumerate(scores)]
    items.append(_item(tmp_path, 9, motif=None))
    kept, dropped = apply_motif_cap(items, 2)
    assert [it.stem for it in kept] == ["img_0001", "img_0003", "img_0009"]
    assert [it.stem for it in dropped] == ["img_0000", "img_0002", "img_0004"]
    result = build_package(
        items, "dreamstime", tmp_path / "export", replace(OPTIONS, max_per_motif=2)
    )
    assert result.dropped_by_motif == ("img_0000", "img_0002", "img_0004")
    assert result.packages["dreamstime"].files == ("img_0001.jpg", "img_0003.jpg", "img_0009.jpg")


def test_rerun_is_identical_and_changes_touch_only_what_changed(tmp_path: Path) -> None:
    out = tmp_path / "export"
    items = [_item(tmp_path, i) for i in range(3)]
    build_package(items, "adobe,dreamstime", out, OPTIONS)
    first = _snapshot(out)
    (out / "adobe" / "notes.txt").write_text("mine", encoding="utf-8")  # the seller's own file

    again = build_package(items, "adobe,dreamstime", out, OPTIONS)
    assert [(p.written, p.reused) for p in again.packages.values()] == [(0, 3), (0, 3)]
    assert _snapshot(out) == {**first, "adobe/notes.txt": b"mine"}

    retitled = [items[0], replace(items[1], title="A fox in deep snow"), *items[2:]]
    changed = build_package(retitled, "adobe,dreamstime", out, OPTIONS)
    assert [(p.written, p.reused) for p in changed.packages.values()] == [(1, 2), (1, 2)]
    assert _embedded(out / "adobe" / "img_0001.jpg")[0] == "A fox in deep snow"

    smaller = build_package(retitled[:2], "adobe,dreamstime", out, OPTIONS)
    assert smaller.packages["adobe"].files == ("img_0000.jpg", "img_0001.jpg")
    assert not (out / "adobe" / "img_0002.jpg").exists()
    assert (out / "adobe" / "notes.txt").exists()
    assert len(_rows(out / "adobe" / "adobe.csv", ",")) == 3

    (out / "dreamstime" / "img_0000.jpg").write_bytes(b"edited by hand")
    repaired = build_package(retitled[:2], "adobe,dreamstime", out, OPTIONS)
    assert repaired.packages["dreamstime"].written == 1
    assert (out / "dreamstime" / "img_0000.jpg").read_bytes() == first["dreamstime/img_0000.jpg"]


def test_a_long_package_is_split_into_several_csv_files(tmp_path: Path) -> None:
    adobe = get_market("adobe")
    assert adobe.csv is not None
    small_csv = replace(adobe, csv=replace(adobe.csv, max_rows=2))
    items = [_item(tmp_path, i) for i in range(5)]
    result = build_package(items, [small_csv], tmp_path / "export", OPTIONS)
    names = [p.name for p in result.packages["adobe"].csv_files]
    assert names == ["adobe.csv", "adobe-2.csv", "adobe-3.csv"]
    rows = [_rows(p, ",") for p in result.packages["adobe"].csv_files]
    assert [len(r) for r in rows] == [3, 3, 2] and all(r[0][0] == "Filename" for r in rows)
    merged = build_package(items, "adobe", tmp_path / "export", OPTIONS)
    assert [p.name for p in merged.packages["adobe"].csv_files] == ["adobe.csv"]
    assert not (tmp_path / "export" / "adobe" / "adobe-2.csv").exists()


def test_refused_and_unknown_markets_write_nothing(tmp_path: Path) -> None:
    with pytest.raises(MarketRefused, match="Shutterstock does not accept AI-generated"):
        build_package([_item(tmp_path, 0)], "adobe,shutterstock", tmp_path / "export")
    with pytest.raises(ConfigError, match="unknown marketplace 'etsy'"):
        build_package([_item(tmp_path, 0)], "etsy", tmp_path / "export")
    assert not (tmp_path / "export").exists()


def test_zip_of_a_market_folder_is_deterministic(tmp_path: Path) -> None:
    result: PackageResult = build_package([_item(tmp_path, 0)], "dreamstime", tmp_path / "e")
    folder = result.packages["dreamstime"].folder
    first = zip_package(folder).read_bytes()
    assert zip_package(folder, tmp_path / "again.zip").read_bytes() == first
    with zipfile.ZipFile(tmp_path / "again.zip") as archive:
        assert archive.namelist() == ["dreamstime/dreamstime.csv", "dreamstime/img_0000.jpg"]
        assert archive.testzip() is None


def test_unsafe_and_shared_stems_are_problems(tmp_path: Path) -> None:
    items = [
        _item(tmp_path, 0, stem="fox 1"),
        _item(tmp_path, 1),
        _item(tmp_path, 2, stem="img_0001"),
    ]
    problems = [str(p) for p in check_package(items, "dreamstime")]
    assert problems == [
        "fox 1 [dreamstime] file name: 'fox 1' is not a safe file name; use letters, digits, "
        "'.', '_', '-'",
        "img_0001 [dreamstime] file name: 2 images share the stem 'img_0001'",
        "img_0001 [dreamstime] file name: 2 images share the stem 'img_0001'",
    ]


def test_public_surface_is_pinned() -> None:
    import comfyline.exports as exports
    import comfyline.quality as quality

    assert sorted(exports.__all__) == sorted(
        [
            "MARKETS", "RULES_CHECKED", "TRAINED_ALGORITHMIC_MEDIA", "AiLabel", "ExportItem",
            "ExportOptions", "ForbiddenWords", "ImageMetadata", "JpegFile", "Market",
            "MarketPackage", "PackageResult", "apply_motif_cap", "build_package",
            "check_package", "clean_keywords", "embed_metadata", "encode_jpeg", "export_jpeg",
            "fit_title", "get_market", "market_keywords", "market_minimum", "resolve_markets",
            "target_for_markets", "target_size", "to_srgb", "upscale_lanczos", "zip_package",
        ]
    )  # fmt: skip
    assert all(hasattr(exports, name) for name in exports.__all__)
    assert sorted(quality.__all__) == [
        "QcFlag", "QcResult", "QcSettings", "check_image_bytes", "check_image_file",
        "check_series", "first_near_duplicate", "group_near_duplicates", "hash_distance",
    ]  # fmt: skip
