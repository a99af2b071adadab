"""File and folder names that work on Windows, macOS and Linux alike.

comfyline writes every image and folder an order names, so a name that one of the three
systems refuses, changes or folds into another must be refused before any image is made:

- reserved device names on Windows (``CON``, ``PRN``, ``AUX``, ``NUL``, ``COM0``-``COM9``,
  ``LPT0``-``LPT9`` and their superscript forms), in any letter case and with any extension
  (``nul.txt`` and ``Con.tar.gz`` are the device too);
- the characters ``< > : " / \\ | ? *`` and control characters;
- a trailing dot or space (Windows drops them silently, so ``a.`` would become ``a``);
- names over :data:`MAX_NAME_BYTES` bytes in UTF-8 (ext4's limit, the strictest of the three;
  Windows and macOS count UTF-16 units, never more than the UTF-8 bytes);
- two names that differ only in letter case or Unicode normalisation (:func:`clash_key`):
  ``Apple.png`` and ``apple.png`` are one file on the default Windows and macOS file systems.
"""

from __future__ import annotations

import re
import unicodedata

MAX_NAME_BYTES = 255
"""Longest file or folder name, in UTF-8 bytes."""
TEMP_NAME_EXTRA_BYTES = 18
"""What ``images.write_atomic`` adds to a name for its temp file: ``.{name}.{12 hex}.tmp``."""

FORBIDDEN_CHARACTERS = '<>:"/\\|?*'
# Control characters are Unicode's category Cc: U+0000-U+001F and U+007F-U+009F.
_REFUSED = re.compile("[" + re.escape(FORBIDDEN_CHARACTERS) + "\x00-\x1f\x7f-\x9f]")
_RESERVED = re.compile(r"(CON|PRN|AUX|NUL|(COM|LPT)[0-9¹²³])", re.IGNORECASE)


def name_problem(name: str, *, reserve: int = 0) -> str | None:
    """Why ``name`` cannot be a file or folder name on every system, or None.

    ``reserve``: bytes the name must leave free below :data:`MAX_NAME_BYTES` (a file written
    through a temp name reserves :data:`TEMP_NAME_EXTRA_BYTES`).
    """
    if name in {"", ".", ".."}:
        return f"{name!r} is not a name"
    refused = _REFUSED.search(name)
    if refused:
        return (
            f"{_shorten(name)} contains {refused.group()!r}, which Windows does not allow in "
            f"names (not allowed: {' '.join(FORBIDDEN_CHARACTERS)} and control characters)"
        )
    if name[-1] in ". ":
        end = "a dot" if name[-1] == "." else "a space"
        return (
            f"{_shorten(name)} ends with {end}, which Windows drops silently: "
            "end it with another character"
        )
    if _RESERVED.fullmatch(name.split(".", 1)[0].rstrip(" ")):
        return (
            f"{_shorten(name)} is a reserved device name on Windows (CON, PRN, AUX, NUL, "
            "COM0-COM9, LPT0-LPT9, in any case and with any extension): choose another name"
        )
    size, limit = len(name.encode("utf-8")), MAX_NAME_BYTES - reserve
    if size > limit:
        why = f" ({reserve} more are for the temporary file written first)" if reserve else ""
        return (
            f"{_shorten(name)} is {size} bytes long in UTF-8; names may have at most "
            f"{limit}{why}: shorten it"
        )
    return None


def clash_key(name: str) -> str:
    """What two names must differ in to be two files everywhere: equal keys are one file on
    Windows or macOS (letter case, Unicode normalisation)."""
    return unicodedata.normalize("NFC", name).lower()


def _shorten(name: str) -> str:
    return repr(name) if len(name) <= 60 else repr(name[:40] + "..." + name[-12:])


__all__ = [
    "FORBIDDEN_CHARACTERS",
    "MAX_NAME_BYTES",
    "TEMP_NAME_EXTRA_BYTES",
    "clash_key",
    "name_problem",
]
