"""The ledger's slot state machine, order row, plan checks and log, on a real SQLite file."""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from comfyline.errors import ExecutionFailed, LedgerError
from comfyline.ledger import (
    Ledger,
    OrderState,
    SlotError,
    SlotState,
    ledger_path,
    slot_prompt_id,
)


@dataclass(frozen=True)
class Planned:
    index: int
    key: str
    prompt: str
    seed: int
    negative: str = "blurry"
    params: dict[str, Any] = field(default_factory=lambda: {"steps": 8, "cfg": 5.0})


def plan(n: int, seed0: int = 1000) -> list[Planned]:
    return [Planned(i, f"img-{i:04d}", f"a cat, take {i}", seed0 + i) for i in range(n)]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return ledger_path(tmp_path / "out")


@pytest.fixture
def ledger(db: Path) -> Any:
    with Ledger.open(db, "cats", "fp-1") as led:
        led.ensure_slots(plan(3))
        yield led


def test_prompt_ids_are_deterministic_and_distinct() -> None:
    a = slot_prompt_id("cats", 0, 1)
    assert a == slot_prompt_id("cats", 0, 1)
    others = {
        slot_prompt_id("cats", 0, 2),
        slot_prompt_id("cats", 1, 1),
        slot_prompt_id("dogs", 0, 1),
    }
    assert a not in others and len(others) == 3


def test_new_ledger_is_wal_with_planned_slots(ledger: Ledger, db: Path) -> None:
    assert db.is_file()
    mode = sqlite3.connect(db).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"
    assert ledger.order().state is OrderState.NEW
    assert [s.index for s in ledger.pending()] == [0, 1, 2]
    first = ledger.slot(0)
    assert (first.state, first.attempt, first.prompt_id) == (SlotState.PLANNED, 0, None)
    assert first.params == {"cfg": 5.0, "steps": 8}
    assert ledger.counts().planned == 3 and ledger.counts().total == 3


def test_full_life_of_a_slot(ledger: Ledger) -> None:
    pid = slot_prompt_id("cats", 0, 1)
    ledger.mark_submitted(0, pid, 1)
    assert [s.index for s in ledger.submitted()] == [0]
    ledger.mark_done(0, ["img-0000.png"], ["ab" * 32], 3.5)
    slot = ledger.slot(0)
    assert slot.state is SlotState.DONE
    assert (slot.files, slot.sha256s, slot.seconds, slot.prompt_id) == (
        ("img-0000.png",),
        ("ab" * 32,),
        3.5,
        pid,
    )
    assert ledger.counts() == type(ledger.counts())(planned=2, done=1)
    kinds = [(e.kind, e.index, e.attempt) for e in ledger.events()]
    assert kinds == [("submitted", 0, 1), ("done", 0, 1)]


def test_failure_retry_and_requeue_count_attempts(ledger: Ledger) -> None:
    ledger.mark_submitted(1, slot_prompt_id("cats", 1, 1), 1)
    error = ExecutionFailed(
        prompt_id="p",
        node_id="3",
        node_type="KSampler",
        exception_type="RuntimeError",
        exception_message="boom",
    )
    ledger.mark_failed(1, error)
    failed = ledger.slot(1)
    assert failed.state is SlotState.FAILED
    assert failed.error == SlotError("ExecutionFailed", str(error), "3")
    ledger.mark_submitted(1, slot_prompt_id("cats", 1, 2), 2)  # retried at once
    assert ledger.slot(1).error is None
    ledger.requeue(1, "server restarted")  # ... and lost by the server
    assert (ledger.slot(1).state, ledger.slot(1).attempt) == (SlotState.PLANNED, 2)
    ledger.mark_submitted(1, slot_prompt_id("cats", 1, 3), 3)
    assert ledger.slot(1).attempt == 3


@pytest.mark.parametrize(
    ("setup", "illegal"),
    [
        ([], "done"),
        ([], "failed"),
        ([], "requeue"),
        (["submit"], "submit"),
        (["submit", "done"], "submit"),
        (["submit", "done"], "failed"),
        (["submit", "done"], "requeue"),
        (["submit", "done"], "done"),
        (["submit", "failed"], "done"),
    ],
)
def test_illegal_transitions_raise_and_change_nothing(
    ledger: Ledger, setup: list[str], illegal: str
) -> None:
    def act(step: str) -> None:
        slot = ledger.slot(2)
        if step == "submit":
            ledger.mark_submitted(2, slot_prompt_id("cats", 2, slot.attempt + 1), slot.attempt + 1)
        elif step == "done":
            ledger.mark_done(2, ["x.png"], ["00" * 32], 1.0)
        elif step == "failed":
            ledger.mark_failed(2, SlotError("OutOfMemory", "no VRAM"))
        else:
            ledger.requeue(2)

    for step in setup:
        act(step)
    before = ledger.slot(2)
    with pytest.raises(LedgerError, match="slot 2 of order 'cats' cannot go from"):
        act(illegal)
    assert ledger.slot(2) == before


def test_wrong_attempt_number_is_refused(ledger: Ledger) -> None:
    with pytest.raises(LedgerError, match="attempt 2 submitted, but the next attempt is 1"):
        ledger.mark_submitted(0, "x", 2)
    assert ledger.slot(0).state is SlotState.PLANNED


def test_mark_done_needs_files_with_hashes(ledger: Ledger) -> None:
    ledger.mark_submitted(0, "x", 1)
    with pytest.raises(LedgerError, match="one sha256 per file"):
        ledger.mark_done(0, ["a.png", "b.png"], ["00" * 32], 1.0)
    with pytest.raises(LedgerError, match="at least one file"):
        ledger.mark_done(0, [], [], 1.0)


def test_unknown_slot(ledger: Ledger) -> None:
    with pytest.raises(LedgerError, match="has no slot 7"):
        ledger.mark_submitted(7, "x", 1)


def test_record_prompt_id_only_while_submitted(ledger: Ledger) -> None:
    with pytest.raises(LedgerError, match="is planned, not submitted"):
        ledger.record_prompt_id(0, "server-chosen")
    ledger.mark_submitted(0, "ours", 1)
    ledger.record_prompt_id(0, "server-chosen")
    assert ledger.slot(0).prompt_id == "server-chosen"


def test_resume_keeps_state_and_plan_is_checked(db: Path) -> None:
    with Ledger.open(db, "cats", "fp-1") as led:
        assert led.ensure_slots(plan(3)) == 3
        led.mark_submitted(0, "p0", 1)
        for state in (OrderState.VALIDATED, OrderState.QUEUED, OrderState.RUNNING):
            led.set_order_state(state)
    with Ledger.open(db, "cats", "fp-1") as led:
        assert led.ensure_slots(plan(3)) == 0
        assert led.slot(0).state is SlotState.SUBMITTED
        assert led.order().state is OrderState.RUNNING
        with pytest.raises(LedgerError, match="slot 1 now plans seed 5001 but .* recorded 1001"):
            led.ensure_slots(
                plan(3)[:1] + [Planned(1, "img-0001", "a cat, take 1", 5001)] + plan(3)[2:]
            )
        # A grown order: the recorded slots are checked, the new one appended.
        assert led.ensure_slots(plan(4)) == 1
        assert [s.state for s in led.slots()][3] is SlotState.PLANNED
        assert led.slot(0).state is SlotState.SUBMITTED


def test_a_shrunk_order_drops_only_slots_not_made(db: Path) -> None:
    with Ledger.open(db, "cats", "fp-1") as led:
        led.ensure_slots(plan(4))
        led.mark_submitted(3, "p3", 1)
        led.mark_done(3, ["img-0003.png"], ["00" * 32], 1.0)
        assert led.drop_slots([2, 3], "count went down") == [2]
        assert [s.index for s in led.slots()] == [0, 1, 3]  # the made one is never removed
        assert led.events("slot.dropped")[0].index == 2


def test_edit_before_anything_was_sent_starts_the_order_afresh(db: Path) -> None:
    # A pre-flight failed (a wrong checkpoint), the user fixed the order: nothing was sent,
    # so the edit costs nothing and must not lock the order.
    with Ledger.open(db, "cats", "fp-1") as led:
        led.ensure_slots(plan(2))
        led.ensure_seed_base(5)
    with Ledger.open(db, "cats", "fp-2") as led:
        assert led.order().fingerprint == "fp-2"
        assert led.counts().total == 0 and led.order().seed_base is None
        assert led.ensure_slots(plan(3)) == 3


def test_edited_order_is_refused_with_advice(db: Path) -> None:
    with Ledger.open(db, "cats", "fp-1") as led:
        led.ensure_slots(plan(2))
        led.mark_submitted(0, "p-0", 1)
    with pytest.raises(LedgerError, match="was edited after it started") as info:
        Ledger.open(db, "cats", "fp-2")
    assert "Undo the edit to resume" in str(info.value)
    with Ledger.open(db, "cats", "fp-1"):  # the refused open released the lock
        pass


def test_ledger_of_another_order_is_refused(db: Path) -> None:
    Ledger.open(db, "cats", "fp").close()
    with pytest.raises(LedgerError, match="belongs to order 'cats', not 'dogs'"):
        Ledger.open(db, "dogs", "fp")


def test_seed_base_is_recorded_once(db: Path) -> None:
    with Ledger.open(db, "cats", "fp") as led:
        assert led.ensure_seed_base(2**64 - 1) == 2**64 - 1
    with Ledger.open(db, "cats", "fp") as led:
        assert led.ensure_seed_base(42) == 2**64 - 1
        assert led.order().seed_base == 2**64 - 1


def test_huge_seeds_round_trip(db: Path) -> None:
    with Ledger.open(db, "cats", "fp") as led:
        led.ensure_slots([Planned(0, "k", "p", 2**64 - 1)])
        assert led.slot(0).seed == 2**64 - 1


def test_events_and_readings_for_the_report(ledger: Ledger) -> None:
    ledger.record_reading(temperature_c=70.5, power_w=180.0, vram_free_mb=3000, vram_total_mb=8192)
    ledger.mark_submitted(0, "p", 1)
    ledger.mark_done(0, ["a.png"], ["00" * 32], 1.0)
    ledger.record_event("guard.step_down", index=0, detail={"from": "high", "to": "standard"})
    ledger.record_reading(note="no sensor")
    readings = ledger.readings()
    assert [(r.temperature_c, r.images_done, r.note) for r in readings] == [
        (70.5, 0, ""),
        (None, 1, "no sensor"),
    ]
    guard = ledger.events("guard.")
    assert [(e.kind, e.detail) for e in guard] == [
        ("guard.step_down", {"from": "high", "to": "standard"})
    ]


def test_closed_ledger_refuses_writes(db: Path) -> None:
    led = Ledger.open(db, "cats", "fp")
    led.close()
    led.close()
    with pytest.raises(LedgerError, match="is closed"):
        led.set_order_state(OrderState.VALIDATED)


def test_order_life_cycle_is_enforced(ledger: Ledger) -> None:
    with pytest.raises(LedgerError, match="cannot go from new to running"):
        ledger.set_order_state(OrderState.RUNNING)
    for state in ("validated", "queued", "running", "running", "partial", "queued", "running"):
        ledger.set_order_state(OrderState(state))
    ledger.set_order_state(OrderState.COMPLETED)
    with pytest.raises(LedgerError, match="cannot go from completed to running"):
        ledger.set_order_state(OrderState.RUNNING)
    assert ledger.order().state is OrderState.COMPLETED
    moves = [e.detail["from"] + ">" + e.kind for e in ledger.events("order.")]
    assert moves[:3] == ["new>order.validated", "validated>order.queued", "queued>order.running"]
    assert len(moves) == 7  # setting the current state again records nothing


def test_unusable_file_is_a_ledger_error(tmp_path: Path) -> None:
    db = tmp_path / "ledger.sqlite3"
    db.write_bytes(b"this is not a database" * 100)
    with pytest.raises(LedgerError, match="ledger"):
        Ledger.open(db, "cats", "fp")
    Path(str(db) + ".lock").unlink()  # the lock was released: the file can go


def test_ledger_of_a_newer_comfyline_is_refused(db: Path) -> None:
    Ledger.open(db, "cats", "fp").close()
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    conn.close()
    with pytest.raises(LedgerError, match="written by a newer comfyline"):
        Ledger.open(db, "cats", "fp")


def test_summary_names_this_runner(ledger: Ledger) -> None:
    summary = ledger.summary()
    assert summary.running and summary.runner_pid == os.getpid()
    assert summary.runner_started is not None and summary.counts.total == 3
