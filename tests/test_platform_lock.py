"""The runner lock on every platform (comfyline.lock): one holder at a time, refused at once,
released by the operating system when the holder is killed, and the holder's note readable
while it holds the lock. Holders are real child processes; the parent waits on the lines they
print, never on a clock."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from comfyline import lock
from comfyline.errors import OrderLocked
from comfyline.ledger import Ledger, ledger_path, read_status

# Takes the lock on argv[1], writes argv[2] as its note (unless empty), says so, and holds the
# lock until stdin closes or it is killed.
HOLDER = r"""
import sys
from pathlib import Path
from comfyline import lock
fd = lock.try_lock(Path(sys.argv[1]))
assert fd is not None, "the lock was not free"
if sys.argv[2]:
    lock.write_note(fd, sys.argv[2].encode())
print("locked", flush=True)
sys.stdin.readline()
"""


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[tuple[Path, subprocess.Popen[str]]]:
    """A child process holding the lock on ``tmp_path/"x.lock"`` with note ``pid 42``."""
    path = tmp_path / "x.lock"
    with start_holder(path, "pid 42") as child:
        yield path, child


def start_holder(path: Path, note: str) -> subprocess.Popen[str]:
    child = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path), note],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    line = child.stdout.readline()
    if line != "locked\n":
        child.kill()
        raise AssertionError(f"the holder did not take the lock: {line!r}")
    return child


def kill(child: subprocess.Popen[str]) -> None:
    """Kill without a chance to clean up: SIGKILL on POSIX, TerminateProcess on Windows."""
    child.kill()
    child.wait(timeout=30)


def take_after_death(path: Path) -> int | None:
    """The lock, taken right after its holder died. POSIX frees a dead process's flock when it
    is reaped; Windows frees it "in its own time", so there the lock is retried for 10 s."""
    if sys.platform != "win32":
        return lock.try_lock(path)
    import time

    deadline = time.monotonic() + 10
    while (fd := lock.try_lock(path)) is None and time.monotonic() < deadline:
        time.sleep(0.05)
    return fd


def test_a_held_lock_is_refused_at_once_and_freed_when_the_holder_is_killed(
    holder: tuple[Path, subprocess.Popen[str]],
) -> None:
    path, child = holder
    assert lock.try_lock(path) is None
    assert lock.holder_note(path) == b"pid 42"  # readable while held, on Windows too
    kill(child)
    fd = take_after_death(path)
    assert fd is not None, "the OS did not release the lock of a killed holder"
    try:
        assert lock.read_note(fd) == b"pid 42"  # the dead holder's note is still there ...
        lock.write_note(fd, b"pid 7")  # ... until the new holder replaces it
        assert lock.read_note(fd) == b"pid 7"
    finally:
        lock.release(fd)


def test_the_lock_is_exclusive_within_one_process_too(tmp_path: Path) -> None:
    path = tmp_path / "x.lock"
    fd = lock.try_lock(path)
    assert fd is not None
    try:
        assert lock.try_lock(path) is None  # a second open of the file does not share it
        assert lock.holder_note(path) == b""  # held, nothing written yet
    finally:
        lock.release(fd)
    again = lock.try_lock(path)
    assert again is not None, "release did not free the lock"
    lock.release(again)


def test_nobody_holds_a_missing_or_released_lock(tmp_path: Path) -> None:
    path = tmp_path / "x.lock"
    assert lock.holder_note(path) is None
    fd = lock.try_lock(path)
    assert fd is not None
    lock.write_note(fd, b"x" * 10)
    lock.write_note(fd, b"short")  # a shorter note replaces the longer one whole
    assert lock.read_note(fd) == b"short"
    lock.release(fd)
    assert lock.holder_note(path) is None


def test_second_runner_is_refused_with_who_holds_the_order(tmp_path: Path) -> None:
    db = ledger_path(tmp_path)
    db.parent.mkdir(parents=True)
    lock_file = db.with_name(db.name + ".lock")
    note = json.dumps({"pid": 4242, "started": "2025-01-01T10:00:00+00:00"})
    with start_holder(lock_file, note) as child:
        try:
            with pytest.raises(OrderLocked) as info:
                Ledger.open(db, "locked-order", "fp")
            assert str(info.value) == (
                "order locked-order is already being run by process 4242 (started "
                "2025-01-01T10:00:00+00:00); wait for it or stop it"
            )
        finally:
            kill(child)
    freed = take_after_death(lock_file)
    assert freed is not None
    lock.release(freed)
    with Ledger.open(db, "locked-order", "fp"):
        assert read_status(db).runner_pid == os.getpid()
    assert not read_status(db).running


def test_a_holder_that_has_not_said_who_it_is_yet(tmp_path: Path) -> None:
    db = ledger_path(tmp_path)
    with Ledger.open(db, "o", "fp"):
        pass  # a ledger to read
    lock_file = db.with_name(db.name + ".lock")
    lock_file.unlink()  # with the last runner's note: a new holder is a new file
    with start_holder(lock_file, "") as child:
        try:
            with pytest.raises(OrderLocked, match="already being run by another process;"):
                Ledger.open(db, "o", "fp")
            status = read_status(db)
            assert status.running and status.runner_pid == -1
        finally:
            kill(child)
