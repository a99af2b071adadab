"""Market rules as data, titles and keywords per market, forbidden words, upscale targets."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from comfyline.errors import ConfigError, ExportError, MarketRefused
from comfyline.exports.markets import MARKETS, get_market, resolve_markets
from comfyline.exports.texts import (
    ForbiddenWords,
    check_forbidden,
    clean_keywords,
    fit_title,
    market_description,
    market_keywords,
    market_title,
)
from comfyline.exports.upscale import (
    market_minimum,
    target_for_markets,
    target_size,
    upscale_lanczos,
)

SELLING = (Path(__file__).parent.parent / "docs" / "SELLING.md").read_text(encoding="utf-8")


# --- markets --------------------------------------------------------------------------------


def test_the_four_accepting_markets_have_the_issue_table_values() -> None:
    adobe, freepik, dreamstime, rf = resolve_markets("adobe, Freepik,dreamstime,123rf")
    assert adobe.csv and adobe.csv.header == (
        "Filename",
        "Title",
        "Keywords",
        "Category",
        "Releases",
    )
    assert (adobe.min_megapixels, adobe.max_megapixels, adobe.max_file_mb) == (4.0, 100.0, 45.0)
    assert (adobe.filename_max_chars, adobe.title_max_chars, adobe.max_keywords) == (30, 70, 49)
    assert adobe.title_commas is False and adobe.category_range == (1, 21)
    assert freepik.csv and freepik.csv.delimiter == ";" and not freepik.csv.bom
    assert freepik.csv.header == ("File name", "Title", "Keywords", "Prompt", "Model")
    assert freepik.ai_keyword == "_ai_generated" and freepik.min_side_px == 2000
    assert dreamstime.csv and dreamstime.csv.header[:3] == ("Filename", "Image Name", "Description")
    assert len(dreamstime.csv.header) == 15 and dreamstime.ai_category == 212
    assert (dreamstime.min_keywords, dreamstime.max_keywords) == (5, 50)
    assert rf.csv and rf.csv.quote_all and rf.min_megapixels == 6.0 and rf.min_jpeg_quality == 80


def test_every_market_names_its_sources_and_date() -> None:
    for market in MARKETS.values():
        assert market.sources and all(s.startswith("http") for s in market.sources)
        assert market.checked == "2026-11-30"
        assert market.accepts_ai or market.refusal


@pytest.mark.parametrize("key", ["shutterstock", "getty", "istock", "alamy"])
def test_markets_refusing_ai_images_are_refused_with_the_reason(key: str) -> None:
    with pytest.raises(MarketRefused, match="does not accept AI-generated images") as caught:
        resolve_markets(["adobe", key])
    assert "http" in str(caught.value)


def test_unknown_or_empty_market_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="unknown marketplace 'pixabay'.*adobe, freepik"):
        get_market("pixabay")
    with pytest.raises(ConfigError, match="no marketplace given"):
        resolve_markets(" , ")


def test_a_market_named_twice_is_used_once() -> None:
    assert [m.key for m in resolve_markets("123rf,adobe,123rf")] == ["123rf", "adobe"]


def test_selling_doc_shows_the_rules_date_and_every_market() -> None:
    assert "2026-11-30" in SELLING
    for market in MARKETS.values():
        assert market.name in SELLING, f"docs/SELLING.md does not mention {market.name}"


# --- texts ----------------------------------------------------------------------------------


def test_keywords_deduplicated_case_insensitively_in_order() -> None:
    assert clean_keywords([" Fox", "snow", "fox ", "", "red  fox", "SNOW", "Red Fox"]) == [
        "Fox",
        "snow",
        "red fox",
    ]


def test_keywords_capped_per_market_with_the_ai_keyword_last() -> None:
    words = [f"k{i}" for i in range(60)]
    adobe = market_keywords(get_market("adobe"), words)
    assert adobe.keywords == tuple(words[:49])
    assert "kept the first 49 of 60 keywords" in adobe.notes[0]
    freepik = market_keywords(get_market("freepik"), ["_AI_generated", *words])
    assert len(freepik.keywords) == 50 and freepik.keywords[-1] == "_ai_generated"
    assert freepik.keywords[:49] == tuple(words[:49])


def test_titles_trimmed_at_a_word_boundary_without_dangling_words() -> None:
    title = "Red fox, sitting on fresh snow in a quiet winter forest at dawn with soft light"
    assert fit_title(title, 70, commas=False) == (
        "Red fox sitting on fresh snow in a quiet winter forest at dawn"
    )
    assert fit_title(title, None) == title
    assert fit_title("Supercalifragilistic", 5) == "Super"
    assert fit_title("A   cat and a dog", 9) == "A cat"


def test_adobe_title_loses_its_commas_and_says_so() -> None:
    fitted = market_title(get_market("adobe"), "Fox, snow, forest")
    assert fitted.value == "Fox snow forest"
    assert fitted.notes == ("commas removed from the title",)
    assert market_title(get_market("freepik"), "Fox, snow").value == "Fox, snow"


def test_dreamstime_description_gets_its_ai_statement_once() -> None:
    dreamstime = get_market("dreamstime")
    added = market_description(dreamstime, "A red fox in the snow.", "Fox")
    assert added.value == "A red fox in the snow. AI-generated image."
    kept = market_description(dreamstime, "A fox, generated with AI, in snow", "Fox")
    assert kept.value == "A fox, generated with AI, in snow" and not kept.notes
    assert market_description(get_market("123rf"), "", "Fox title").value == "Fox title"
    long = market_description(dreamstime, "A fox. " + "word " * 300, "Fox")
    assert len(long.value) <= 1000 and long.value.endswith("word. AI-generated image.")


def test_123rf_description_trimmed_to_its_limit() -> None:
    long = " ".join(["word"] * 100)
    fitted = market_description(get_market("123rf"), long, "t")
    assert len(fitted.value) <= 180 and fitted.notes == ("description trimmed to 180 characters",)


def test_forbidden_words_found_per_market_and_field() -> None:
    words = ForbiddenWords.load()
    adobe, freepik = get_market("adobe"), get_market("freepik")
    fields = {
        "title": "AI portrait in the style of Greg Rutkowski, shot on Canon EOS at 85mm",
        "keywords": ["portrait", "Disney", "generative"],
        "prompt": "trending on artstation",
    }
    found = {(f.field, f.category, f.found) for f in check_forbidden("img1", adobe, fields, words)}
    assert found == {
        ("title", "ai_term", "AI"),
        ("title", "artist", "Greg Rutkowski"),
        ("title", "camera", "shot on"),
        ("title", "camera", "Canon EOS"),
        ("title", "camera", "85mm"),
        ("keywords", "trademark", "Disney"),
    }  # "generative" is only an Adobe *title* problem
    on_freepik = {f.category for f in check_forbidden("img1", freepik, fields, words)}
    assert on_freepik == {"artist", "trademark"}
    flag = check_forbidden("img1", adobe, {"keywords": ["Disney"]}, words)[0]
    assert str(flag).startswith("img1 [adobe] keywords: 'Disney' is on the forbidden list")


def test_forbidden_words_match_whole_words_only() -> None:
    words = ForbiddenWords.load()
    text = "Thai temple with said fairy and a legoland-free nikonian view"
    assert check_forbidden("x", get_market("adobe"), {"title": text}, words) == []


def test_the_sellers_own_list_is_added(tmp_path: Path) -> None:
    own = tmp_path / "mine.txt"
    own.write_text("[trademark]\nacme  # my client's rival\nre:foo\\d+bar\n", encoding="utf-8")
    words = ForbiddenWords.load(own)
    flags = check_forbidden("x", get_market("123rf"), {"keywords": ["ACME", "foo12bar"]}, words)
    assert [(f.found, f.term) for f in flags] == [("ACME", "acme"), ("foo12bar", "re:foo\\d+bar")]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[brands]\nacme\n", r"mine.txt:1: unknown category \[brands\]"),
        ("acme\n", r"mine.txt:1: 'acme' comes before any \[category\] line"),
        ("[artist]\nre:(unclosed\n", r"mine.txt:2: the expression '\(unclosed' is not valid"),
    ],
)
def test_bad_forbidden_words_file_names_file_and_line(
    tmp_path: Path, text: str, message: str
) -> None:
    own = tmp_path / "mine.txt"
    own.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=message):
        ForbiddenWords.load(own)
    with pytest.raises(ConfigError, match="cannot read the forbidden-words file"):
        ForbiddenWords.load(tmp_path / "absent.txt")


# --- upscale targets ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "megapixels", "side", "expected"),
    [
        ((512, 768), 6.0, None, (2000, 3000)),
        ((512, 512), 4.0, None, (2000, 2000)),
        ((512, 512), 6.0, None, (2450, 2450)),
        ((320, 384), 3.0, None, (1582, 1898)),
        ((512, 768), 4.0, 2000, (2000, 3000)),
        ((3000, 3000), 4.0, 2000, (3000, 3000)),  # already big enough: unchanged
        ((1000, 10), None, 2000, (200000, 2000)),
    ],
)
def test_target_size_keeps_aspect_and_never_falls_short(
    size: tuple[int, int], megapixels: float | None, side: int | None, expected: tuple[int, int]
) -> None:
    if max(expected) > 16384:
        with pytest.raises(ExportError, match="passes 16384 px"):
            target_size(*size, min_megapixels=megapixels, min_side=side)
        return
    w, h = target_size(*size, min_megapixels=megapixels, min_side=side)
    assert (w, h) == expected
    assert megapixels is None or w * h >= megapixels * 1e6
    assert side is None or min(w, h) >= side
    assert abs(w / h - size[0] / size[1]) < 1 / min(w, h)


def test_target_for_markets_takes_the_strictest() -> None:
    markets = resolve_markets("adobe,freepik,dreamstime")
    assert market_minimum(markets) == (4.0, 2000)
    assert target_for_markets(512, 768, markets) == (2000, 3000)
    assert target_for_markets(512, 768, resolve_markets("dreamstime")) == (1415, 2122)
    assert target_for_markets(512, 768, markets, min_megapixels=8.0) == (2310, 3465)


def test_every_target_of_many_sizes_meets_the_minimum() -> None:
    for w in range(64, 1100, 37):
        for h in range(64, 1100, 53):
            tw, th = target_size(w, h, min_megapixels=6.0)
            assert tw * th >= 6_000_000 and (tw - 1) * (th - 1) < 6_000_000


def test_lanczos_upscale_enlarges_only() -> None:
    image = Image.new("RGB", (10, 20), (1, 2, 3))
    assert upscale_lanczos(image, (40, 80)).size == (40, 80)
    assert upscale_lanczos(image, (10, 20)) is image
    with pytest.raises(ExportError, match="enlarges only"):
        upscale_lanczos(image, (5, 10))
