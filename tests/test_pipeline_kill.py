"""THE KILL TEST: ``kill -9`` the runner at random moments, again and again, during one order.

The order is run as a child process against a simulator in another process; after each kill it
is simply run again, as a user would. At the end the series must be exactly the one an
uninterrupted run makes: the planned files, each once in the report, the same seeds and pixels,
no temp file left, and no slot's image written into our folder twice.

The kill moments are random; the seed is printed, and ``KILL_TEST_SEED=N`` replays a
failure.
"""

from __future__ import annotations

import os
import random
import time
from collections import Counter
from pathlib import Path

import pytest

from comfyline.ledger import Ledger, ledger_path, slot_prompt_id
from comfyline.orders import load
from comfyline.pipeline import fingerprint
from test_pipeline_support import (
    check_finished,
    done_count,
    finish,
    output_folder,
    pixels,
    run_in_process,
    settings_for,
    sim_process,
    sim_stats,
    single_order,
    start_runner,
    status_of,
    the_plan,
    wait_for,
)

KILLS = 12
IMAGES = 100
PROMPT_MS = 20  # per prompt on the simulator: there is always something in flight to cut off


def kill_seed() -> int:
    # Not COMFYLINE_*: the autouse fixture removes those before the test runs.
    raw = os.environ.get("KILL_TEST_SEED")
    return int(raw) if raw else random.randrange(2**32)


@pytest.mark.slow
def test_sigkill_at_random_moments_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    seed = kill_seed()
    print(f"kill test seed: {seed} (replay with KILL_TEST_SEED={seed})")
    rng = random.Random(seed)
    order_file = single_order(tmp_path / "orders", "kill-test", IMAGES)
    out_root = tmp_path / "out"
    folder = output_folder(order_file, out_root)
    planned = the_plan(order_file)
    kills = 0
    runs = 0
    outputs: list[str] = []
    with sim_process(tmp_path, "--fixed-ms", str(PROMPT_MS)) as url:
        while kills < KILLS:
            before = done_count(order_file, out_root)
            proc = start_runner(order_file, url, out_root)
            runs += 1
            if rng.random() < 0.25:
                # Anywhere from the start: while it loads, locks, checks or reconciles.
                time.sleep(rng.uniform(0.2, 1.4))
            else:
                # After it made (or collected) 1 to 4 images, anywhere in the next prompt.
                target = before + rng.randint(1, 4)
                wait_for(
                    lambda target=target, proc=proc: (
                        done_count(order_file, out_root) >= target or proc.poll() is not None
                    ),
                    f"the runner to reach {target} images",
                )
                time.sleep(rng.uniform(0.0, 0.04))
            if proc.poll() is not None:
                code, text = finish(proc)
                pytest.fail(f"the order ended before {KILLS} kills (code {code}):\n{text}")
            proc.kill()
            kills += 1
            outputs.append(finish(proc)[1])
        print(f"{kills} kills in {runs} runs, {done_count(order_file, out_root)} done")
        proc = start_runner(order_file, url, out_root)
        code, text = finish(proc)
        assert code == 0, text
        stats = sim_stats(url)

    finished = check_finished(order_file, out_root)
    status = status_of(order_file, out_root)
    assert status is not None and status.order.state.value == "completed"
    assert not status.running

    # No slot was written into our folder twice: one "done" per slot in the ledger's log.
    with Ledger.open(ledger_path(folder), "kill-test", fingerprint(load(order_file))) as ledger:
        done_events = Counter(e.index for e in ledger.events("done"))
        records = ledger.slots()
        nonce = ledger.nonce
        requeued = {e.prompt_id for e in ledger.events("requeued")}
    assert done_events == Counter(range(IMAGES))

    # The server: each slot's image came from one of its prompts that succeeded there.
    succeeded = {
        p["prompt_id"] for p in stats["prompts"] if p["status"] == "success" and not p["cached"]
    }
    for record in records:
        assert record.prompt_id == slot_prompt_id("kill-test", record.index, record.attempt, nonce)
        assert record.prompt_id in succeeded
    # Each kill leaves at most the two prompts in flight (MAX_IN_FLIGHT) on the server. The
    # next run collects those the server finished meanwhile (with 20 ms prompts, nearly all);
    # one it still finds running or waiting it takes off the server (interrupted, or deleted
    # unstarted) and makes again. Only a prompt that finished in the moment between that look
    # and the cancel is an image made and not kept. So: no prompt made twice, every unkept one
    # a prompt the resume put back, and at most two such per kill.
    unkept = succeeded - {record.prompt_id for record in records}
    assert stats["executed"] == IMAGES + len(unkept), stats
    assert unkept <= requeued
    assert stats["interrupted"] + len(unkept) <= 2 * kills
    assert (stats["failed"], stats["lost"]) == (0, 0)

    # The same series as an uninterrupted run: seeds, prompts and pixels.
    with sim_process(tmp_path / "reference") as url:
        reference_root = tmp_path / "reference-out"
        reference, _ = run_in_process(order_file, settings_for(url, reference_root))
    ref_images = {i.file: i for i in reference.images}
    for entry in finished.report.images:
        assert entry.seed == planned.slots[entry.index].seed == ref_images[entry.file].seed
        assert entry.prompt == ref_images[entry.file].prompt
        assert pixels(folder / entry.file) == pixels(
            output_folder(order_file, reference_root) / entry.file
        )
