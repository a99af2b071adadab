"""Portable names: every rule that keeps a file or folder name valid on Windows, macOS and Linux."""

from __future__ import annotations

import unicodedata

import pytest

from comfyline.names import (
    FORBIDDEN_CHARACTERS,
    MAX_NAME_BYTES,
    TEMP_NAME_EXTRA_BYTES,
    clash_key,
    name_problem,
)

RESERVED = ["CON", "PRN", "AUX", "NUL"] + [
    f"{d}{n}" for d in ("COM", "LPT") for n in "0123456789¹²³"
]
RESERVED_MESSAGE = (
    "is a reserved device name on Windows (CON, PRN, AUX, NUL, COM0-COM9, LPT0-LPT9, in any "
    "case and with any extension): choose another name"
)


@pytest.mark.parametrize(
    "name", ["0001_123.png", "Apple pie (2).png", "画.png", "a.b.c", "x" * MAX_NAME_BYTES, "-_-"]
)
def test_ordinary_names_pass(name: str) -> None:
    assert name_problem(name) is None


@pytest.mark.parametrize("device", RESERVED)
def test_reserved_device_names_are_refused_in_any_case_and_with_any_extension(device: str) -> None:
    for name in (device, device.lower(), device.title(), f"{device}.png", f"{device}.tar.gz"):
        assert name_problem(name) == f"{name!r} {RESERVED_MESSAGE}"
    # Windows ignores spaces before the extension too: "nul .png" is NUL.
    assert name_problem(f"{device.lower()} .png") == f"'{device.lower()} .png' {RESERVED_MESSAGE}"


@pytest.mark.parametrize("name", ["COM10", "LPT", "console.png", "xcon.png", "con_1.png", "nuls"])
def test_names_that_only_look_like_devices_pass(name: str) -> None:
    assert name_problem(name) is None


@pytest.mark.parametrize("char", list(FORBIDDEN_CHARACTERS) + ["\x00", "\x1f", "\x7f", "\x85"])
def test_characters_windows_refuses_are_refused(char: str) -> None:
    name = f"a{char}b.png"
    assert name_problem(name) == (
        f"{name!r} contains {char!r}, which Windows does not allow in names "
        '(not allowed: < > : " / \\ | ? * and control characters)'
    )


def test_a_trailing_dot_or_space_is_refused() -> None:
    assert name_problem("run.") == (
        "'run.' ends with a dot, which Windows drops silently: end it with another character"
    )
    assert name_problem("run ") == (
        "'run ' ends with a space, which Windows drops silently: end it with another character"
    )


@pytest.mark.parametrize("name", ["", ".", ".."])
def test_empty_and_dot_names_are_refused(name: str) -> None:
    assert name_problem(name) == f"{name!r} is not a name"


def test_length_counts_utf8_bytes_not_characters() -> None:
    assert name_problem("a" * MAX_NAME_BYTES) is None
    assert name_problem("画" * 85) is None  # 255 bytes
    name = "画" * 86  # 86 characters, 258 bytes
    assert name_problem(name) == (
        f"{name[:40] + '...' + name[-12:]!r} is 258 bytes long in UTF-8; names may have at "
        "most 255: shorten it"
    )


def test_reserve_leaves_room_for_the_temp_file_name() -> None:
    fits = "a" * (MAX_NAME_BYTES - TEMP_NAME_EXTRA_BYTES)
    assert name_problem(fits, reserve=TEMP_NAME_EXTRA_BYTES) is None
    assert name_problem(fits + "b", reserve=TEMP_NAME_EXTRA_BYTES) == (
        f"{'a' * 40 + '...' + 'a' * 11 + 'b'!r} is 238 bytes long in UTF-8; names may have at "
        "most 237 (18 more are for the temporary file written first): shorten it"
    )


def test_the_temp_decoration_is_what_write_atomic_adds() -> None:
    # images.write_atomic writes `.{name}.{12 hex}.tmp` first: 18 bytes more than the name.
    from comfyline.images import TEMP_SUFFIX

    assert len(f"..{'0' * 12}{TEMP_SUFFIX}") == TEMP_NAME_EXTRA_BYTES


def test_names_differing_only_in_case_or_normalisation_clash() -> None:
    assert clash_key("Apple.png") == clash_key("apple.png") == clash_key("APPLE.PNG")
    composed, decomposed = "café.png", unicodedata.normalize("NFD", "café.png")
    assert composed != decomposed
    assert clash_key(composed) == clash_key(decomposed)
    # Windows compares upper-cased names char by char: 'ß' and 'ss' are two files there.
    assert clash_key("straße.png") != clash_key("strasse.png")
    assert clash_key("a1.png") != clash_key("a2.png")
