"""The order's log, line by line: each move of a slot is written with its slot, attempt, prompt
id and why, on a real SQLite file.

The log is what a resume, the kill tests and the report read to tell which prompt went where
(``requeued`` and ``resent`` prompt ids, the failures and their nodes). Written for the survivors
of a mutation run over ``ledger.py`` (docs/TESTING.md).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from comfyline.errors import ExecutionFailed, LedgerError
from comfyline.ledger import Ledger, SlotError, SlotState, ledger_path, slot_prompt_id
from test_ledger_states import Planned, plan


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    with Ledger.open(ledger_path(tmp_path / "out"), "cats", "fp-1") as led:
        led.ensure_slots(plan(3))
        yield led


def _lines(ledger: Ledger) -> list[tuple[object, ...]]:
    return [
        (e.kind, e.index, e.attempt, e.prompt_id, e.detail)
        for e in ledger.events()
        if not e.kind.startswith("order.")
    ]


def test_each_move_of_a_slot_is_one_line_with_its_attempt_and_prompt(ledger: Ledger) -> None:
    first, second = slot_prompt_id("cats", 1, 1), slot_prompt_id("cats", 1, 2)
    ledger.mark_submitted(1, first, 1, backend="http://127.0.0.1:8188")
    ledger.record_prompt_id(1, "server-chose-this")
    failure = ExecutionFailed(
        prompt_id="server-chose-this",
        node_id="3",
        node_type="KSampler",
        exception_type="RuntimeError",
        exception_message="boom",
    )
    ledger.mark_failed(1, failure)
    ledger.requeue(1, "retry later")
    ledger.mark_submitted(1, second, 2)
    ledger.requeue(1)
    why = {"type": "ExecutionFailed", "message": str(failure), "node": "3"}
    assert _lines(ledger) == [
        ("submitted", 1, 1, first, {"backend": "http://127.0.0.1:8188"}),
        ("prompt_id", 1, 1, "server-chose-this", {}),
        ("failed", 1, 1, "server-chose-this", why),
        ("requeued", 1, 1, "server-chose-this", {"reason": "retry later"}),
        ("submitted", 1, 2, second, {}),
        ("requeued", 1, 2, second, {"reason": ""}),
    ]
    slot = ledger.slot(1)
    assert (slot.state, slot.attempt, slot.prompt_id) == (SlotState.PLANNED, 2, second)


def test_a_failure_given_as_a_slot_error_is_recorded_as_it_is(ledger: Ledger) -> None:
    ledger.mark_submitted(0, slot_prompt_id("cats", 0, 1), 1)
    error = SlotError(type="ImageInvalid", message="img-0000.png does not decode", node="9")
    ledger.mark_failed(0, error)
    assert ledger.slot(0).error == error
    (line,) = ledger.events("failed")
    assert line.detail == {"type": "ImageInvalid", "message": error.message, "node": "9"}


def test_a_plan_whose_indexes_moved_names_the_index(tmp_path: Path) -> None:
    path = ledger_path(tmp_path / "out")
    with Ledger.open(path, "cats", "fp-1") as led:
        led.ensure_slots(plan(2))
    moved = [plan(2)[0], Planned(5, "img-0001", "a cat, take 1", 1001)]
    with Ledger.open(path, "cats", "fp-1") as led, pytest.raises(LedgerError) as info:
        led.ensure_slots(moved)
    assert "new slot 5 plans the key 'img-0001' that slot 1 of its ledger" in str(info.value)


def test_a_done_slot_keeps_everything_it_was_made_with(ledger: Ledger) -> None:
    pid = slot_prompt_id("cats", 2, 1)
    ledger.mark_submitted(2, pid, 1, backend="gpu-a")
    qc = [{"flags": ["dark"], "hash": "f" * 16}, {"flags": [], "hash": "0" * 16}]
    ledger.mark_done(
        2,
        ["img-0002.png", "img-0002_2.png"],
        ["ab" * 32, "cd" * 32],
        3.5,
        {"steps": 6, "cfg": 5.0},
        sizes=[(512, 768), (512, 768)],
        wall_seconds=4.25,
        checkpoint="tiny-sd15.safetensors",
        qc=qc,
    )
    slot = ledger.slot(2)
    assert slot.made_with == {"steps": 6, "cfg": 5.0}
    assert slot.sizes == ((512, 768), (512, 768))
    assert slot.qc == tuple(qc)
    assert (slot.wall_seconds, slot.checkpoint, slot.backend) == (
        4.25,
        "tiny-sd15.safetensors",
        "gpu-a",
    )
    (line,) = ledger.events("done")
    assert (line.index, line.attempt, line.prompt_id) == (2, 1, pid)
    assert line.detail == {"files": ["img-0002.png", "img-0002_2.png"]}


def test_a_done_slot_made_as_planned_has_no_made_with_and_no_qc(ledger: Ledger) -> None:
    ledger.mark_submitted(0, slot_prompt_id("cats", 0, 1), 1)
    ledger.mark_done(0, ["img-0000.png"], ["ab" * 32], 1.0)
    slot = ledger.slot(0)
    assert (slot.made_with, slot.qc, slot.sizes) == (None, (), ())


@pytest.mark.parametrize(
    ("field", "changed"),
    [
        ("prompt", {"prompt": "a dog"}),
        ("negative", {"negative": "sharp"}),
        ("seed", {"seed": 7}),
        ("params", {"params": {"steps": 9, "cfg": 5.0}}),
    ],
)
def test_a_plan_that_changed_names_the_field(
    tmp_path: Path, field: str, changed: dict[str, object]
) -> None:
    path = ledger_path(tmp_path / "out")
    with Ledger.open(path, "cats", "fp-1") as led:
        led.ensure_slots(plan(2))
    moved = [plan(2)[0], replace(plan(2)[1], **changed)]
    with Ledger.open(path, "cats", "fp-1") as led, pytest.raises(LedgerError) as info:
        led.ensure_slots(moved)
    assert f"slot 1 now plans {field} " in str(info.value)
