"""The ledger across processes: the runner lock, SIGKILL at random moments, and read_status
while a runner holds the order. Children are real Python processes; the parent waits on the
lines they print (after each commit), never on a clock."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from comfyline.errors import LedgerError, OrderLocked
from comfyline.ledger import Ledger, SlotState, ledger_path, read_status, slot_prompt_id

ORDER = "crash-order"

# A tiny runner: plans N slots, reconciles what was in flight, then submits and completes the rest,
# printing one line after each commit. With "hold" it only takes the lock and waits for stdin.
CHILD = r"""
import sys
from dataclasses import dataclass, field
from pathlib import Path
from comfyline.ledger import Ledger, SlotState, slot_prompt_id

@dataclass(frozen=True)
class P:
    index: int
    key: str
    prompt: str
    seed: int
    negative: str = ""
    params: dict = field(default_factory=lambda: {"steps": 8})

db, n, mode = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
with Ledger.open(db, "crash-order", "fp") as led:
    led.ensure_slots(P(i, f"k{i}", f"prompt {i}", 7000 + i) for i in range(n))
    if mode == "hold":
        print("locked", flush=True)
        sys.stdin.readline()
        sys.exit(0)
    for slot in led.submitted():  # in flight when the last runner died: "found in history"
        led.mark_done(slot.index, [f"img{slot.index}.png"], [f"{slot.index:064x}"], 1.0)
        print("D", slot.index, flush=True)
    for slot in led.pending():
        attempt = slot.attempt + 1
        led.mark_submitted(slot.index, slot_prompt_id("crash-order", slot.index, attempt), attempt)
        print("S", slot.index, flush=True)
        led.record_reading(temperature_c=70.0 + slot.index % 5)
        led.mark_done(slot.index, [f"img{slot.index}.png"], [f"{slot.index:064x}"], 1.0)
        print("D", slot.index, flush=True)
print("finished", flush=True)
"""


def start_child(db: Path, n: int, mode: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, str(db), str(n), mode],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


@pytest.fixture
def held(tmp_path: Path) -> Iterator[tuple[Path, subprocess.Popen[str]]]:
    """A child process holding the order's lock, killed at the end whatever happens."""
    db = ledger_path(tmp_path)
    with start_child(db, 4, "hold") as child:
        try:
            assert child.stdout is not None
            assert child.stdout.readline() == "locked\n"
            yield db, child
        finally:
            child.kill()
            child.wait(timeout=30)


def test_second_runner_is_refused_until_the_first_is_killed(
    held: tuple[Path, subprocess.Popen[str]],
) -> None:
    db, child = held
    with pytest.raises(OrderLocked, match=rf"order {ORDER} is already being run by process "):
        Ledger.open(db, ORDER, "fp")
    with pytest.raises(OrderLocked) as info:
        Ledger.open(db, ORDER, "fp")
    assert f"process {child.pid} (started " in str(info.value)
    assert "wait for it or stop it" in str(info.value)
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=30)
    with Ledger.open(db, ORDER, "fp") as led:  # the OS released the dead runner's lock
        assert led.counts().planned == 4


def test_read_status_while_a_runner_holds_the_lock(
    held: tuple[Path, subprocess.Popen[str]],
) -> None:
    db, child = held
    status = read_status(db)
    assert status.running and status.runner_pid == child.pid
    assert status.order.order_id == ORDER
    assert (status.counts.planned, status.counts.total) == (4, 4)
    assert child.stdin is not None
    child.stdin.write("\n")
    child.stdin.flush()
    assert child.wait(timeout=30) == 0
    after = read_status(db)
    assert not after.running and after.runner_pid is None


def test_read_status_without_a_ledger(tmp_path: Path) -> None:
    with pytest.raises(LedgerError, match="has not been run yet"):
        read_status(ledger_path(tmp_path))


def _read_lines(child: subprocess.Popen[str], k: int) -> list[str]:
    assert child.stdout is not None
    lines = []
    for _ in range(k):
        line = child.stdout.readline()
        if not line:
            break
        lines.append(line.strip())
    return lines


def _check_consistent(db: Path, n: int, printed: list[str]) -> None:
    if db.exists():  # killed before it even created the file: nothing to check
        conn = sqlite3.connect(db)
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        conn.close()
    with Ledger.open(db, ORDER, "fp") as led:  # opens: the dead child's lock is gone
        slots = {s.index: s for s in led.slots()}
        assert sorted(slots) in ([], list(range(n)))  # the plan is inserted whole or not at all
        for line in printed:  # what a child printed was committed before it printed it
            kind, _, index = line.partition(" ")
            if kind == "D":
                assert slots[int(index)].state is SlotState.DONE
            elif kind == "S":
                assert slots[int(index)].state in (SlotState.SUBMITTED, SlotState.DONE)
        for slot in slots.values():
            if slot.state is SlotState.PLANNED:
                assert (slot.attempt, slot.files) == (0, ())
            else:
                assert slot.attempt == 1
                assert slot.prompt_id == slot_prompt_id(ORDER, slot.index, 1)
            if slot.state is SlotState.DONE:
                assert slot.files == (f"img{slot.index}.png",)
                assert slot.sha256s == (f"{slot.index:064x}",)


@pytest.mark.slow
def test_sigkill_at_random_moments_leaves_a_consistent_ledger(tmp_path: Path) -> None:
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    db, n, printed = ledger_path(tmp_path), 100, []
    for _ in range(12):  # at most 12 * 12 lines of the 200 a whole run prints: never finishes
        with start_child(db, n, "run") as child:
            lines = _read_lines(child, rng.randint(0, 12))
            os.kill(child.pid, signal.SIGKILL)  # lands anywhere: the child kept writing
            child.wait(timeout=30)
        printed += lines
        assert "finished" not in lines, f"seed {seed}: the order finished before the last kill"
        _check_consistent(db, n, printed)
    with start_child(db, n, "run") as child:
        stdout, _ = child.communicate(timeout=60)
    assert stdout.splitlines()[-1] == "finished", f"seed {seed}"
    _check_consistent(db, n, printed)
    with Ledger.open(db, ORDER, "fp") as led:
        assert led.counts().done == n
        done_events = [e.index for e in led.events() if e.kind == "done"]
        assert sorted(done_events) == list(range(n))  # each slot completed exactly once
