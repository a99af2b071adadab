"""Titles, descriptions and keywords fitted to one marketplace, and the forbidden-words check.

Fitting is what each marketplace's rules ask and nothing more: keywords deduplicated
(case-insensitively, the first spelling kept, most important first) and capped; a title
trimmed at a word boundary to the limit (Adobe's also without commas); Dreamstime's
description given its required "AI-generated" statement. Each change is reported in the
result's ``notes``, so nothing is changed silently.

The forbidden-words list (artist names, real people, characters, trademarks, camera specs,
"AI" words, content-type words) is data: ``forbidden_words.txt`` beside this module plus the
seller's own file in the same format. Which categories apply to which field of which market is
in :mod:`comfyline.exports.markets`.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from comfyline.errors import ConfigError
from comfyline.exports.markets import Market

__all__ = [
    "CATEGORIES",
    "FittedKeywords",
    "FittedText",
    "ForbiddenTerm",
    "ForbiddenWords",
    "TextFlag",
    "check_forbidden",
    "clean_keywords",
    "fit_title",
    "market_description",
    "market_keywords",
    "market_title",
]

CATEGORIES = frozenset(
    {"artist", "person", "character", "trademark", "camera", "ai_term", "content_type"}
)
"""The categories a forbidden-words file may use."""

_SPACES = re.compile(r"\s+")
# Left over at the end of a trimmed title: separators and little words that would dangle.
_DANGLING = " ,;:-–—/&+("
_DANGLING_WORDS = frozenset(
    "a an and at by for from in into of on or over the to under with without".split()
)


@dataclass(frozen=True)
class FittedText:
    """A text (or keyword list) as written for one market, and what was changed to get it."""

    value: str
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class FittedKeywords:
    """Keywords as written for one market, and what was changed to get them."""

    keywords: tuple[str, ...]
    notes: tuple[str, ...] = ()


def _squash(text: str) -> str:
    return _SPACES.sub(" ", text).strip()


def clean_keywords(keywords: Iterable[str]) -> list[str]:
    """Keywords with spaces squashed, empty ones dropped, and duplicates removed
    case-insensitively (the first spelling and position win, so the order of importance
    stays)."""
    seen: set[str] = set()
    out = []
    for keyword in keywords:
        word = _squash(keyword)
        if word and word.casefold() not in seen:
            seen.add(word.casefold())
            out.append(word)
    return out


def market_keywords(market: Market, keywords: Sequence[str]) -> FittedKeywords:
    """The keywords for ``market``: cleaned, the market's AI keyword last (Freepik's
    ``_ai_generated``, counted in the cap), capped at the market's maximum."""
    words = clean_keywords(keywords)
    notes = []
    if len(words) < len([k for k in keywords if k.strip()]):
        notes.append("duplicate keywords removed")
    ai = market.ai_keyword
    if ai is not None:
        words = [w for w in words if w.casefold() != ai.casefold()]
    room = market.max_keywords
    if room is not None and ai is not None:
        room -= 1
    if room is not None and len(words) > room:
        notes.append(f"kept the first {room} of {len(words)} keywords (the limit)")
        words = words[:room]
    if ai is not None:
        words.append(ai)
    return FittedKeywords(tuple(words), tuple(notes))


def fit_title(title: str, max_chars: int | None, *, commas: bool = True) -> str:
    """``title`` with spaces squashed, commas removed when ``commas`` is False, and trimmed to
    ``max_chars`` at a word boundary (a single longer word is cut)."""
    text = _squash(title if commas else title.replace(",", " "))
    if max_chars is None or len(text) <= max_chars:
        return text
    cut = text[: max_chars + 1]
    space = cut.rfind(" ")
    if space <= 0:
        return text[:max_chars]
    words = cut[:space].rstrip(_DANGLING).split(" ")
    while len(words) > 1 and words[-1].casefold() in _DANGLING_WORDS:
        words.pop()
    return " ".join(words).rstrip(_DANGLING)


def market_title(market: Market, title: str) -> FittedText:
    """The title for ``market`` (its length limit, Adobe without commas)."""
    fitted = fit_title(title, market.title_max_chars, commas=market.title_commas)
    untrimmed = fit_title(title, None, commas=market.title_commas)
    notes = []
    if not market.title_commas and "," in title:
        notes.append("commas removed from the title")
    if len(fitted) < len(untrimmed):
        notes.append(f"title trimmed to {market.title_max_chars} characters")
    return FittedText(fitted, tuple(notes))


def market_description(market: Market, description: str, title: str) -> FittedText:
    """The description for ``market``: the title when there is none; trimmed to the market's
    limit; Dreamstime's statement that the image is AI-generated appended when missing (room
    is kept for it)."""
    text = _squash(description) or _squash(title)
    phrases = market.ai_description_phrases
    statement = ""
    if phrases and not any(p.casefold() in text.casefold() for p in phrases):
        statement = f"{phrases[0]} image."
    notes = []
    limit = market.description_max_chars
    room = None if limit is None else limit - (len(statement) + 2 if statement else 0)
    if room is not None and len(text) > room:
        text = fit_title(text, room)
        notes.append(f"description trimmed to {limit} characters")
    if statement:
        text = f"{text.rstrip('.')}. {statement}" if text else statement
        notes.append(f"added '{statement}' to the description ({market.name} asks)")
    return FittedText(text, tuple(notes))


# --- forbidden words ------------------------------------------------------------------------


@dataclass(frozen=True)
class ForbiddenTerm:
    """One entry of a forbidden-words list."""

    text: str
    category: str
    pattern: re.Pattern[str]
    source: str


@dataclass(frozen=True)
class TextFlag:
    """A forbidden term found in one field of one image's texts for one market."""

    image: str
    market: str
    field: str
    term: str
    category: str
    found: str

    @property
    def message(self) -> str:
        """What was found, without the image and market."""
        return (
            f"{self.found!r} is on the forbidden list as {self.category.replace('_', ' ')} "
            f"(entry {self.term!r}; reword it, or remove the entry from your own list)"
        )

    def __str__(self) -> str:
        return f"{self.image} [{self.market}] {self.field}: {self.message}"


class ForbiddenWords:
    """A forbidden-words list: the shipped one, plus the seller's own file."""

    def __init__(self, terms: Sequence[ForbiddenTerm]) -> None:
        self.terms = tuple(terms)

    @classmethod
    def load(cls, extra: Path | None = None) -> ForbiddenWords:
        """The shipped list, plus ``extra`` (a file in the same format) when given."""
        shipped = resources.files(__package__).joinpath("forbidden_words.txt")
        terms = list(cls.parse(shipped.read_text("utf-8"), "forbidden_words.txt").terms)
        if extra is not None:
            try:
                text = extra.read_text("utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise ConfigError(f"cannot read the forbidden-words file {extra}: {exc}") from exc
            terms += cls.parse(text, str(extra)).terms
        return cls(terms)

    @classmethod
    def parse(cls, text: str, source: str) -> ForbiddenWords:
        """Read the file format (see ``forbidden_words.txt``); :class:`ConfigError` names the
        line of an unknown category, an entry before any category, or a bad expression."""
        terms, category = [], None
        for number, raw in enumerate(text.splitlines(), start=1):
            line = raw.strip()
            if not line.startswith("re:"):  # an expression may hold a "#"
                line = line.split("#", 1)[0].strip()
            if not line:
                continue
            where = f"{source}:{number}"
            if line.startswith("[") and line.endswith("]"):
                category = line[1:-1].strip()
                if category not in CATEGORIES:
                    raise ConfigError(
                        f"{where}: unknown category [{category}]; use one of "
                        + ", ".join(sorted(CATEGORIES))
                    )
                continue
            if category is None:
                raise ConfigError(f"{where}: {line!r} comes before any [category] line")
            terms.append(ForbiddenTerm(line, category, _compile(line, where), where))
        return cls(terms)

    def find(self, text: str, categories: Collection[str]) -> list[tuple[ForbiddenTerm, str]]:
        """Every term of ``categories`` found in ``text``, with the text it matched."""
        found = []
        for term in self.terms:
            if term.category in categories:
                match = term.pattern.search(text)
                if match:
                    found.append((term, match.group(0)))
        return found


def _compile(line: str, where: str) -> re.Pattern[str]:
    body = line[3:].strip() if line.startswith("re:") else re.escape(line)
    try:
        # Whole words only: "ai" must not match "said" or "Thai".
        return re.compile(rf"(?<!\w)(?:{body})(?!\w)", re.IGNORECASE)
    except re.error as exc:
        raise ConfigError(f"{where}: the expression {line[3:]!r} is not valid: {exc}") from exc


def check_forbidden(
    image: str,
    market: Market,
    fields: Mapping[str, str | Sequence[str]],
    words: ForbiddenWords,
) -> list[TextFlag]:
    """Flags for every forbidden term in the texts of one image as written for ``market``.

    ``fields`` maps a field name (``title``, ``description``, ``keywords``, ``prompt``) to its
    text or list; only the categories ``market.forbidden`` lists for that field are checked.
    """
    flags = []
    for name, value in fields.items():
        categories = market.forbidden.get(name)
        if not categories:
            continue
        texts = [value] if isinstance(value, str) else list(value)
        for text in texts:
            for term, found in words.find(text, categories):
                flags.append(TextFlag(image, market.key, name, term.text, term.category, found))
    return flags
