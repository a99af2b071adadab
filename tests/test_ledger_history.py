"""The ledger's history of an edited order, on a real SQLite file: an order that starts over
(nothing of it was sent) and one that starts a new revision (its prompt ids its own).

Written for survivors of a mutation run over ``ledger.py`` (docs/TESTING.md): no test reached
``Ledger.restart``, and a new revision that kept the old prompt-id nonce passed every test.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from comfyline.errors import LedgerError
from comfyline.ledger import Ledger, OrderState, ledger_path, read_identity, slot_prompt_id
from test_ledger_states import plan


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return ledger_path(tmp_path / "out")


def test_an_order_never_sent_starts_over_with_its_new_content(db: Path) -> None:
    with Ledger.open(db, "cats", "fp-1") as led:
        led.ensure_slots(plan(2))
        led.ensure_seed_base(5)
    # The runner settles the edit itself (fingerprint None): nothing was sent, so it restarts.
    with Ledger.open(db, "cats", None) as led:
        led.restart("fp-2", {"prompt": "h2", "count": "h3"})
        assert led.order().fingerprint == "fp-2"
        assert led.counts().total == 0 and led.order().seed_base is None
        assert led.identity() == {"prompt": "h2", "count": "h3"}
        (edited,) = led.events("order.edited")
        assert edited.detail == {"to": "fp-2"}
        assert led.ensure_slots(plan(3)) == 3
    assert read_identity(db) == {"prompt": "h2", "count": "h3"}


def test_an_order_with_a_prompt_sent_does_not_start_over(db: Path) -> None:
    with Ledger.open(db, "cats", "fp-1") as led:
        led.ensure_slots(plan(2))
        led.mark_submitted(1, "p-1", 1)
    with Ledger.open(db, "cats", None) as led:
        with pytest.raises(LedgerError, match="'cats' has sent prompts: it cannot restart"):
            led.restart("fp-2", {"prompt": "h2"})
        assert led.order().fingerprint == "fp-1" and led.counts().total == 2


def test_a_new_revision_has_prompt_ids_of_its_own(db: Path) -> None:
    with Ledger.open(db, "cats", "fp-1", clock=lambda: 100.0) as led:
        led.ensure_slots(plan(2))
        led.mark_submitted(0, slot_prompt_id("cats", 0, 1, led.nonce), 1)
        led.mark_done(0, ["img-0000.png"], ["00" * 32], 1.0)
        old_nonce = led.nonce
    with Ledger.open(db, "cats", None, clock=lambda: 200.0) as led:
        number = led.start_revision(
            "fp-2", {"prompt": "h2"}, reason="prompt", folder="r1", archive="r1/ledger"
        )
        new_nonce = led.nonce
        assert number == 2 == led.revision()
        assert led.counts().total == 0 and led.order().state is OrderState.NEW
        (started,) = led.events("order.revision")  # the new revision's log starts with it
        assert started.detail == {"revision": 2, "reason": "prompt"}
        (old,) = led.revisions()
        assert (old.number, old.reason, old.folder, old.images, old.archive) == (
            1,
            "prompt",
            "r1",
            1,
            "r1/ledger",
        )
    # A resume of the new revision finds the same nonce; no prompt id of the old one is reused.
    with Ledger.open(db, "cats", "fp-2") as led:
        assert led.nonce == new_nonce != old_nonce
    assert slot_prompt_id("cats", 0, 1, new_nonce) != slot_prompt_id("cats", 0, 1, old_nonce)


def test_a_reroll_records_what_it_set_aside_before_anything_moves(db: Path) -> None:
    with Ledger.open(db, "cats", "fp-1", clock=lambda: 300.0) as led:
        led.ensure_slots(plan(2))
        led.mark_submitted(0, "p-0", 1, "http://a:8188")
        led.mark_done(0, ["img-0000.png"], ["ab" * 32], 1.0, simulated=False)
        led.mark_submitted(1, "p-1", 1, "http://a:8188")
        led.mark_failed(1, RuntimeError("boom"))
        done = led.reopen(
            0, reason="reroll", moved_to=["rerolled/img-0000.png"], seed=77, stem="img-0000-b"
        )
        failed = led.reopen(1, reason="reroll", moved_to=["rerolled/img-0001.png"], seed=78)
        logged = [(e.index, e.attempt, e.prompt_id, e.detail) for e in led.events("slot.reroll")]
    assert done.history == (
        {
            "reason": "reroll",
            "files": ["img-0000.png"],
            "sha256s": ["ab" * 32],
            "moved_to": ["rerolled/img-0000.png"],
            "seed": 1000,
            "new_seed": 77,
            "generation": 1,
            "backend": "http://a:8188",
            "simulated": False,
            "at": 300.0,
        },
    )
    assert (done.seed, done.stem, done.files) == (77, "img-0000-b", ())
    assert logged == [(0, 1, "p-0", done.history[0]), (1, 1, "p-1", failed.history[0])]
    # A failed slot had no image: nothing of it moves.
    assert failed.history[0]["files"] == [] and failed.history[0]["moved_to"] == []


def test_an_image_not_made_cannot_be_made_again(db: Path) -> None:
    with Ledger.open(db, "cats", "fp-1") as led:
        led.ensure_slots(plan(1))
        with pytest.raises(LedgerError, match="only a made \\(or failed\\) image can be made"):
            led.reopen(0, reason="reroll", moved_to=[])


def test_a_ledger_from_before_the_nonce_keeps_its_prompt_ids() -> None:
    # The ids an older ledger sent its prompts under: a resume must find them on the server.
    assert slot_prompt_id("cats", 0, 1) == "8359af26-a6cc-5a0e-9504-b11e93932fd6"
    assert slot_prompt_id("cats", 0, 1, "") == "8359af26-a6cc-5a0e-9504-b11e93932fd6"
    assert slot_prompt_id("cats", 0, 1, "n0") == "21c22a06-f78e-5b8e-85b1-1017c1392914"


def test_a_shrunk_order_drops_every_slot_not_made_past_a_made_one(db: Path) -> None:
    with Ledger.open(db, "cats", "fp-1") as led:
        led.ensure_slots(plan(4))
        led.mark_submitted(2, "p-2", 1)
        led.mark_done(2, ["img-0002.png"], ["00" * 32], 1.0)
        led.mark_submitted(3, "p-3", 1)
        assert led.drop_slots([1, 2, 3], "count went down") == [1, 3]
        assert [s.index for s in led.slots()] == [0, 2]
        dropped = [(e.index, e.attempt, e.prompt_id, e.detail) for e in led.events("slot.dropped")]
    assert dropped == [
        (1, 0, None, {"reason": "count went down", "state": "planned"}),
        (3, 1, "p-3", {"reason": "count went down", "state": "submitted"}),
    ]
