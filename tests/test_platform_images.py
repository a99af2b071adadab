"""Atomic writes (comfyline.images.write_atomic) on every platform: a reader never sees a part of a
file, and a writer killed at any moment leaves the old file or the new one, whole; a write that
fails removes its temp file and leaves the target as it was."""

from __future__ import annotations

import hashlib
import random
import subprocess
import sys
from pathlib import Path

import pytest

from comfyline.images import TEMP_SUFFIX, write_atomic

# Writes ever new 2 MiB payloads over argv[1], printing each payload's number once written.
# A payload is "<n> <sha256 of body>\n" + body, so a reader can tell a whole one from a part.
WRITER = r"""
import hashlib, sys
from pathlib import Path
from comfyline.images import write_atomic
target = Path(sys.argv[1])
n = 0
while True:
    body = bytes([n % 251]) * (2 << 20)
    write_atomic(target, f"{n} {hashlib.sha256(body).hexdigest()}\n".encode() + body)
    print(n, flush=True)
    n += 1
"""


def whole_payload(data: bytes) -> int:
    """The number of a whole payload; fails on a partial or mixed one."""
    head, _, body = data.partition(b"\n")
    number, digest = head.decode().split()
    assert hashlib.sha256(body).hexdigest() == digest, f"payload {number} is not whole"
    return int(number)


def temp_files(folder: Path) -> list[Path]:
    return sorted(folder.glob(f".*{TEMP_SUFFIX}"))


@pytest.mark.skipif(
    sys.platform == "win32",
    reason="Windows refuses to replace a file another process is reading (write_atomic retries "
    "for a moment); this test reads all the time",
)
def test_readers_and_a_writer_killed_at_any_moment_see_only_whole_files(tmp_path: Path) -> None:
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    target = tmp_path / "image.png"
    last_written = -1
    for _ in range(6):
        with subprocess.Popen(
            [sys.executable, "-c", WRITER, str(target)], stdout=subprocess.PIPE, text=True
        ) as child:
            assert child.stdout is not None
            for _ in range(rng.randint(1, 4)):
                last_written = int(child.stdout.readline())
                for _ in range(5):  # read while the child writes the next one: never a part
                    assert whole_payload(target.read_bytes()) >= last_written, f"seed {seed}"
            child.kill()  # lands anywhere: the child kept writing
            child.wait(timeout=30)
        number = whole_payload(target.read_bytes())
        assert number >= last_written, f"seed {seed}: payload {last_written} was lost"
        # A kill between writing and renaming may leave a temp file (the runner removes those
        # at its start); never anything else, and never a part under the final name.
        assert {p.name for p in tmp_path.iterdir()} - {p.name for p in temp_files(tmp_path)} == {
            "image.png"
        }


def test_write_replaces_the_old_file_and_leaves_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "new" / "deeper" / "a.png"  # folders are made
    write_atomic(target, b"first")
    write_atomic(target, b"second")
    assert target.read_bytes() == b"second"
    assert sorted(p.name for p in target.parent.iterdir()) == ["a.png"]


def test_a_failed_rename_removes_the_temp_file_and_keeps_the_target(tmp_path: Path) -> None:
    target = tmp_path / "taken"
    target.mkdir()
    (target / "inside.txt").write_text("keep me")  # a folder with something in it
    with pytest.raises(OSError):
        write_atomic(target, b"data")  # a file cannot replace a folder
    assert (target / "inside.txt").read_text() == "keep me"
    assert temp_files(tmp_path) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]


def test_a_failed_write_removes_the_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "a.png"
    write_atomic(target, b"old")
    with pytest.raises(TypeError):
        write_atomic(target, "not bytes")  # type: ignore[arg-type]  # fails inside the write
    assert target.read_bytes() == b"old"
    assert temp_files(tmp_path) == []
