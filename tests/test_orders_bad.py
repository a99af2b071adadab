"""Malformed orders: ``comfyline validate`` gives exactly the expected problems, exit 2, no
traceback, and writes nothing.

Each folder in tests/data/bad_orders/ holds a ``project.yaml`` (and any file it names) and an
``expected.txt``: the problem lines ``validate`` must print, with paths relative to the folder.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from comfyline.cli import app

BAD_ORDERS = Path(__file__).parent / "data" / "bad_orders"
CASES = sorted(p.name for p in BAD_ORDERS.iterdir() if (p / "expected.txt").is_file())


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")
    }


def _validate(args: list[str]) -> tuple[int, list[str], str]:
    result = CliRunner().invoke(app, ["validate", *args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if "problem(s) in" not in line]
    return result.exit_code, lines, result.stdout


def test_there_are_at_least_30_bad_orders() -> None:
    assert len(CASES) >= 30


@pytest.mark.parametrize("case", CASES)
def test_bad_order_is_refused_with_its_message(
    case: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(BAD_ORDERS)
    folder = BAD_ORDERS / case
    expected = (folder / "expected.txt").read_text("utf-8").splitlines()
    before = _snapshot(folder)

    code, lines, stdout = _validate([f"{case}/project.yaml"])

    assert code == 2
    assert stdout == ""
    assert [line.replace(f"{case}/", "") for line in lines] == expected
    assert _snapshot(folder) == before


def test_bad_order_folder_is_refused_and_the_good_ones_reported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The whole folder at once: every order is checked, each problem printed once.
    monkeypatch.chdir(BAD_ORDERS)
    expected = sum(len((BAD_ORDERS / c / "expected.txt").read_text().splitlines()) for c in CASES)

    code, lines, stdout = _validate(["."])

    assert code == 2
    assert stdout == ""
    assert len(lines) == expected


def _write_order(tmp_path: Path, name: str, text: bytes) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    path = folder / "project.yaml"
    path.write_bytes(text)
    return path


def test_an_oversized_file_is_refused_before_parsing(tmp_path: Path) -> None:
    body = b"id: big\ntype: single\nprompt: a cat\n" + b"# padding\n" * 120_000
    path = _write_order(tmp_path, "big", body)

    code, lines, _ = _validate([str(path)])

    assert code == 2
    assert lines == [
        f"{path}: the file is larger than 1024 KiB; an order is a short file: move long prompt "
        "lists to a CSV file (prompts_file)"
    ]


def test_deep_nesting_is_refused_without_a_traceback(tmp_path: Path) -> None:
    path = _write_order(tmp_path, "deep", b"id: deep\ntype: single\nprompt: " + b"[" * 50_000)

    code, lines, _ = _validate([str(path)])

    assert code == 2
    assert len(lines) == 1
    assert lines[0].startswith(f"{path}")


def test_a_csv_with_semicolons_and_a_bom_is_read(tmp_path: Path) -> None:
    # Spreadsheets in many locales save ';'-separated CSV with a byte-order mark.
    path = _write_order(tmp_path, "semi", b"id: semi\ntype: list\nprompts_file: p.csv\n")
    (path.parent / "p.csv").write_bytes("\ufeffprompt;seed\na cat;1\na dog;x\n".encode())

    code, lines, _ = _validate([str(path)])

    assert code == 2
    assert lines == [
        f"{path.parent / 'p.csv'}:3: seed: must be a whole number from 0 to "
        "18446744073709551615, got 'x'"
    ]


def test_a_csv_that_is_not_utf8_is_located(tmp_path: Path) -> None:
    path = _write_order(tmp_path, "latin", b"id: latin\ntype: list\nprompts_file: p.csv\n")
    (path.parent / "p.csv").write_bytes(b"prompt\na cat\na caf\xe9\n")

    code, lines, _ = _validate([str(path)])

    assert code == 2
    assert lines == [
        f"{path.parent / 'p.csv'}:3: byte 0xe9 is not UTF-8: save the CSV as UTF-8 "
        "('CSV UTF-8' in spreadsheet programs)"
    ]


def test_a_missing_path_and_an_empty_folder_are_problems(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()

    code, lines, _ = _validate([str(tmp_path / "nope.yaml"), str(tmp_path / "empty")])

    assert code == 2
    assert lines == [
        f"{tmp_path / 'nope.yaml'}: no such file or folder",
        f"{tmp_path / 'empty'}: no project.yaml in this folder or below it",
    ]
