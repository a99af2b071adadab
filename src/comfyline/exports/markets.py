"""What each stock marketplace requires of an AI-generated image, as data.

One :class:`Market` per marketplace, each with the pages its rules come from and the date the
notes were taken (``RULES_CHECKED``). Rules change: update the values here, and the date, when
a marketplace changes them; docs/SELLING.md shows the same table. Where two sources disagree the
stricter value is used and the comment says so. Marketplaces that refuse AI-generated images
are listed too, so that asking for them gets a clear refusal instead of "unknown market".

Sizes: 1 MP is 1,000,000 pixels. "min side" is the SHORTER side.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from comfyline.errors import ConfigError, MarketRefused

__all__ = [
    "MARKETS",
    "RULES_CHECKED",
    "AiLabel",
    "CsvLayout",
    "Market",
    "get_market",
    "resolve_markets",
]

RULES_CHECKED = "2026-11-30"
"""When the rules below were taken from the research notes (shared/marketplaces.md), whose
sources are the marketplaces' help pages and public tools named in each ``sources``."""

# Categories of the forbidden-words list (see texts.py and forbidden_words.txt).
_NAMES = frozenset({"artist", "person", "character", "trademark"})
_ADOBE_TITLE = _NAMES | {"camera", "ai_term", "content_type"}
_ADOBE_KEYWORDS = _NAMES | {"camera", "content_type"}
# The prompt is embedded in every JPEG (XMP), and Adobe forbids names in prompts too.


class AiLabel(StrEnum):
    """How a marketplace wants an AI-generated image labelled."""

    PORTAL_CHECKBOX = "portal_checkbox"  # ticked by hand on the marketplace's site; no CSV column
    KEYWORD = "keyword"  # a keyword in the CSV (Freepik: ``_ai_generated``)
    CATEGORY_AND_DESCRIPTION = "category_and_description"  # Dreamstime
    RULES_ONLY = "rules_only"  # no label field known; the content rules apply (123RF)


@dataclass(frozen=True)
class CsvLayout:
    """The bulk-upload CSV of a marketplace, exactly as its importer expects it."""

    header: tuple[str, ...]
    delimiter: str = ","
    #: Quote every field (123RF's template quotes even the header) instead of only when needed.
    quote_all: bool = False
    #: Write a UTF-8 byte order mark. None of ours does: every importer takes plain UTF-8, and a
    #: BOM glued to the first header name breaks an importer that compares the header exactly.
    bom: bool = False
    #: Between keywords inside the keyword cell.
    keyword_separator: str = ","
    #: A longer package is split into ``<market>.csv``, ``<market>-2.csv``, ...
    max_rows: int | None = None
    max_bytes: int | None = None


@dataclass(frozen=True)
class Market:
    """One marketplace's rules for an AI-generated raster image (JPEG)."""

    key: str
    name: str
    accepts_ai: bool
    sources: tuple[str, ...]
    checked: str = RULES_CHECKED
    #: Why AI images are refused (markets that refuse them).
    refusal: str = ""
    csv: CsvLayout | None = None
    min_megapixels: float | None = None
    min_side_px: int | None = None
    max_megapixels: float | None = None
    max_side_px: int | None = None
    max_file_mb: float | None = None
    min_file_mb: float | None = None
    min_jpeg_quality: int | None = None
    srgb_required: bool = False
    filename_max_chars: int | None = None
    title_max_chars: int | None = None
    title_commas: bool = True
    description_min_chars: int | None = None
    description_max_chars: int | None = None
    min_keywords: int = 1
    max_keywords: int | None = None
    ai_label: AiLabel = AiLabel.RULES_ONLY
    #: Added to the keywords (it counts towards ``max_keywords``).
    ai_keyword: str | None = None
    #: Category id written first (Dreamstime's "AI generated").
    ai_category: int | None = None
    #: Phrases of which the description must contain one; the first is appended otherwise.
    ai_description_phrases: tuple[str, ...] = ()
    #: How many category ids a row may have (0: the CSV has no category column), and their
    #: allowed range (inclusive) when known.
    max_categories: int = 0
    category_range: tuple[int, int] | None = None
    #: Field -> forbidden-word categories checked in it.
    forbidden: Mapping[str, frozenset[str]] = field(default_factory=dict)
    #: What the seller still does by hand.
    manual_steps: tuple[str, ...] = ()


_ADOBE = Market(
    key="adobe",
    name="Adobe Stock",
    accepts_ai=True,
    sources=(
        "https://helpx.adobe.com/il_en/stock/contributor/help/photography-illustrations.html",
        "https://helpx.adobe.com/stock/contributor/submit-your-content/submit-generative-ai-content/generative-ai-content-guidelines.html",
        "https://helpx.adobe.com/stock/contributor/manage-your-portfolio/csv-requirements-content.html",
        "https://helpx.adobe.com/stock/contributor/manage-your-portfolio/create-csv-file.html",
        "https://helpx.adobe.com/uk/stock/contributor/help/similar-vs-spamming.html",
    ),
    csv=CsvLayout(
        header=("Filename", "Title", "Keywords", "Category", "Releases"),
        # The current page says 5,000 rows, older localized pages 1,000: the stricter is used.
        max_rows=1000,
        max_bytes=1_000_000,
    ),
    # Adobe's own example of "4 MP" is 1,600 x 2,400 (3.84 MP); 4,000,000 is the stricter reading.
    min_megapixels=4.0,
    max_megapixels=100.0,
    max_file_mb=45.0,
    srgb_required=True,
    filename_max_chars=30,
    title_max_chars=70,
    title_commas=False,
    # Adobe takes at most 50; many tools (and the issue) keep 49 to be safe.
    max_keywords=49,
    ai_label=AiLabel.PORTAL_CHECKBOX,
    max_categories=1,
    category_range=(1, 21),
    forbidden={"title": _ADOBE_TITLE, "keywords": _ADOBE_KEYWORDS, "prompt": _NAMES},
    manual_steps=(
        'Tick "Created using generative AI tools" for every file in the Contributor Portal '
        "(there is no CSV column for it).",
        'Tick "People and Property are fictional" when a person or property is shown.',
        'Choose the file type: "Photos" only for images that could have been taken with a '
        'camera, "Illustrations" otherwise.',
        "Upload the JPEGs first, then the CSV (Portal > Upload CSV).",
    ),
)

_FREEPIK = Market(
    key="freepik",
    name="Freepik (Magnific)",
    accepts_ai=True,
    sources=(
        "https://support.freepik.com/hc/en-us/articles/115003799325-Content-Submission-Requirements",
        "https://freepik.coolkeypoint.com/ai/contributors/ai-generated-resources-general-guidelines",
        "https://blog.photokeyworder.ai/2026/06/29/the-complete-magnific-ex-freepik-contributor-guide-requirements-csv-metadata-ai-images-and-best-practices/",
    ),
    csv=CsvLayout(header=("File name", "Title", "Keywords", "Prompt", "Model"), delimiter=";"),
    # Official: 2,000-10,000 px on a side; a 2026 guide says 4 MP. Both are applied.
    min_megapixels=4.0,
    min_side_px=2000,
    max_side_px=10000,
    # Official: "over 0.5 MB"; the 2026 third-party guide: 1.5-250 MB. The official minimum is
    # used here, against the stricter-wins rule: a smooth Lanczos upscale at 6 MP is 0.4-1 MB at
    # quality 95, and nothing on Freepik's own pages asks for 1.5 MB (verify). Max: the guide's.
    min_file_mb=0.5,
    max_file_mb=250.0,
    title_max_chars=100,
    max_keywords=50,
    ai_label=AiLabel.KEYWORD,
    ai_keyword="_ai_generated",
    forbidden={"title": _NAMES, "keywords": _NAMES, "prompt": _NAMES},
    manual_steps=(
        "The first submission is a qualification test (20 files per the older FAQ, 150-200 per "
        "a 2026 guide; verify on the site).",
        "Photos need model/property releases where people or property are shown.",
    ),
)

_DREAMSTIME = Market(
    key="dreamstime",
    name="Dreamstime",
    accepts_ai=True,
    sources=(
        "https://www.stockphotosecrets.com/news/dreamstime-accepts-ai-generated-images.html",
        "http://pt.dreamstime.com/faqs-detail-2",
    ),
    csv=CsvLayout(
        header=(
            "Filename",
            "Image Name",
            "Description",
            "Category 1",
            "Category 2",
            "Category 3",
            "keywords",
            "Free",
            "W-EL",
            "P-EL",
            "SR-EL",
            "SR-Price",
            "Editorial",
            "MR doc Ids",
            "Pr Docs",
        ),
    ),  # fmt: skip
    min_megapixels=3.0,
    max_megapixels=70.0,
    max_file_mb=1024.0,
    title_max_chars=200,
    description_min_chars=50,
    description_max_chars=1000,
    min_keywords=5,
    max_keywords=50,
    ai_label=AiLabel.CATEGORY_AND_DESCRIPTION,
    # "Illustrations & Clipart > AI generated" is id 212 in a third-party tool's table (verify).
    ai_category=212,
    max_categories=3,
    ai_description_phrases=("AI-generated", "AI generated", "generated with AI", "generative AI"),
    forbidden={"title": _NAMES, "description": _NAMES, "keywords": _NAMES, "prompt": _NAMES},
    manual_steps=(
        "No generated faces of people: Dreamstime refuses them (no model release is possible).",
        "Check the category: Category 1 is set to 212 (AI generated); verify the id on the site.",
    ),
)

_123RF = Market(
    key="123rf",
    name="123RF",
    accepts_ai=True,
    sources=(
        "https://www.blog.123rf.com/123rf-guidelines-for-ai-generated-content",
        "https://blog.123rf.com/how-to-upload-photos-or-illustrations",
        "https://www.123rf.com/submit/photographersfaq.php",
    ),
    csv=CsvLayout(
        header=("oldfilename", "123rf_filename", "description", "keywords", "country"),
        quote_all=True,
    ),
    min_megapixels=6.0,
    max_file_mb=30.0,
    min_jpeg_quality=80,
    # Tools report 180 to 500 characters (verify): the stricter is used.
    description_max_chars=180,
    max_keywords=50,
    ai_label=AiLabel.RULES_ONLY,
    forbidden={"description": _NAMES, "keywords": _NAMES, "prompt": _NAMES},
    manual_steps=(
        "No real people, real places or real brands; no AI artefacts (extra fingers, distorted "
        "objects): 123RF reviews AI images for them.",
    ),
)


def _refused(key: str, name: str, reason: str, *sources: str) -> Market:
    return Market(key=key, name=name, accepts_ai=False, refusal=reason, sources=sources)


MARKETS: Mapping[str, Market] = {
    m.key: m
    for m in (
        _ADOBE,
        _FREEPIK,
        _DREAMSTIME,
        _123RF,
        _refused(
            "shutterstock",
            "Shutterstock",
            '"Shutterstock does not accept AI-generated content from our contributors"; '
            "uploading it risks the account.",
            "https://submit.shutterstock.com/help/en/articles/10594622-content-policy-updates-ai-generated-content",
        ),
        _refused(
            "getty",
            "Getty Images",
            "Getty Images stopped accepting submissions created with generative AI models "
            "(September 2022).",
            "https://photoarchivenews.com/news/getty-images-addresses-ai-generated-content-its-a-no/",
        ),
        _refused(
            "istock",
            "iStock",
            "iStock (Getty) does not accept files created or substantially modified with "
            "generative AI.",
            "https://www.aitrace.org/company/istock/practice/c0106aa1-c97b-40af-8842-c0572ef2879b",
        ),
        _refused(
            "alamy",
            "Alamy",
            '"We don\'t accept images generated by Artificial Intelligent (AI) programs" '
            "(contributor FAQ).",
            "https://ftvine.com/article/leaving-alamy-contributor-faq-alamy/1432",
        ),
    )
}
"""Every marketplace we know, by key (``adobe``, ``freepik``, ``dreamstime``, ``123rf``, and
the refusing ``shutterstock``, ``getty``, ``istock``, ``alamy``)."""


def get_market(key: str) -> Market:
    """The marketplace ``key`` (case-insensitive). :class:`MarketRefused` when it refuses AI
    images, :class:`ConfigError` when it is unknown."""
    market = MARKETS.get(key.strip().lower())
    if market is None:
        accepting = ", ".join(k for k, m in MARKETS.items() if m.accepts_ai)
        raise ConfigError(f"unknown marketplace {key!r}; known ones are {accepting}")
    if not market.accepts_ai:
        raise MarketRefused(market.name, f"{market.refusal} ({market.sources[0]})")
    return market


def resolve_markets(keys: str | Sequence[str | Market]) -> tuple[Market, ...]:
    """The marketplaces named by ``keys`` (a list, or one comma-separated string such as
    ``"adobe,freepik"``), each once, in the order given. A :class:`Market` in the list is taken
    as it is (rules of your own), but refused like the others if it does not accept AI."""
    given = keys.split(",") if isinstance(keys, str) else list(keys)
    found: dict[str, Market] = {}
    for entry in given:
        if isinstance(entry, Market):
            if not entry.accepts_ai:
                raise MarketRefused(entry.name, entry.refusal)
            found.setdefault(entry.key, entry)
        elif entry.strip():
            market = get_market(entry)
            found.setdefault(market.key, market)
    if not found:
        raise ConfigError("no marketplace given; name one or more of " + ", ".join(MARKETS))
    return tuple(found.values())
