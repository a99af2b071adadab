"""The dashboard in a real browser (Chromium, driven by Playwright): an order started from the
page completes with live updates and thumbnails; the keyboard review saves decisions that the
export honours; the package is downloaded and its CSV read. Every page is photographed, on a
phone and on a wide screen, under test-artifacts/web/."""

from __future__ import annotations

import csv
import io
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from comfyline.ledger import ledger_path, read_slots, read_status
from comfyline.orders import load
from comfyline.pipeline import output_dir
from comfyline.review import list_review
from comfyline.sim import Faults, running_simulator
from comfyline.web import WebConfig
from line_support import running_execution
from sim_graphs import txt2img
from test_pipeline_support import (
    check_finished,
    run_in_process,
    settings_for,
    sim_config,
    single_order,
    wait_for,
    write_order,
)
from web_support import PHONE, WIDE, chromium_path, in_thread, screenshot, serving

WAIT_MS = 60_000
"""Deadline of each wait in the page: generous, a busy 2-core machine runs these."""

SINGLE = """type: single
title: Lighthouse at dusk
quality: preview
count: 6
prompt: a red lighthouse on a rocky coast at dusk
seed: {mode: fixed, base: 1234}
"""

FRUIT = """type: variations
title: Fresh fruit
quality: preview
count: 1
template: "a {fruit} on a {surface}, studio photo"
variables:
  fruit: [red apple, ripe pear]
  surface: [oak table, slate board]
seed: {mode: fixed, base: 42}
qc: {duplicate_distance: null}
sale:
  title: "{fruit} on a {surface}"
  keywords: [fruit, food, fresh]
  review: required
  markets: [adobe]
"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    executable = chromium_path()
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=executable)
        yield chromium
        chromium.close()


def no_traceback(page: Page) -> None:
    text = page.content()
    assert "Traceback" not in text and "Internal Server Error" not in text, text[:2000]


def both_widths(page: Page, name: str) -> None:
    """Photograph the page wide, then on a phone, and check it shows no traceback."""
    no_traceback(page)
    page.set_viewport_size(WIDE)
    screenshot(page, f"{name}-wide")
    page.set_viewport_size(PHONE)
    screenshot(page, f"{name}-phone")
    page.set_viewport_size(WIDE)


def test_an_order_started_from_the_page_completes_live(tmp_path: Path, browser: Browser) -> None:
    orders = tmp_path / "automation" / "orders"
    write_order(orders, "lighthouse", SINGLE)
    write_order(orders, "broken", "type: single\ncount: 0\n")
    # Another client's prompt holds the server (it never ends until /interrupt): the test lets
    # it go once the page shows the order running, so the page must follow it live.
    with running_simulator(sim_config(tmp_path, faults=Faults(stuck_on_prompts=(1,)))) as sim:
        httpx.post(f"{sim.url}/prompt", json={"prompt": txt2img(), "client_id": "someone"})
        config = WebConfig(orders, settings_for(sim.url, tmp_path / "out"))
        with serving(config) as base:
            page = browser.new_page(viewport=WIDE)
            page.goto(f"{base}/")
            expect(page.locator("tr[data-order=broken] .state")).to_have_text("invalid")
            both_widths(page, "line")
            page.click("a[href='/o/lighthouse']")
            page.click("button[data-action=start]")
            page.wait_for_url(f"{base}/o/lighthouse")
            expect(page.locator("#order-state")).to_have_text("running", timeout=WAIT_MS)
            expect(page.locator("#order-counts")).to_have_text("0/6 images")
            page.evaluate("window.sameDocument = true")  # a reload would lose it

            httpx.post(f"{sim.url}/interrupt")
            expect(page.locator("#order-state")).to_have_text("completed", timeout=WAIT_MS)
            expect(page.locator("#thumbs img")).to_have_count(6, timeout=WAIT_MS)
            assert page.evaluate("window.sameDocument") is True
            page.wait_for_function(
                "[...document.querySelectorAll('#thumbs img')]"
                ".every(i => i.complete && i.naturalWidth > 0)",
                timeout=WAIT_MS,
            )
            expect(page.locator("#log")).to_contain_text("order completed")
            expect(page.locator("#chart-caption")).to_contain_text("readings")
            both_widths(page, "order")

            page.goto(f"{base}/new")
            page.fill("#f-id", "Bad Id")
            page.select_option("#f-quality", "max")
            page.fill("#f-count", "0")
            page.fill("#f-prompt", "a quiet harbour")
            page.click("button[type=submit]")
            expect(page.locator(".field-problem[data-field=id]")).to_contain_text("not a valid")
            expect(page.locator(".field-problem[data-field=count]")).to_be_visible()
            both_widths(page, "new-order-problems")
            page.fill("#f-id", "harbour")
            page.fill("#f-count", "2")
            page.click("button[type=submit]")
            page.wait_for_url(f"{base}/o/harbour")
            expect(page.locator("#order-state")).to_have_text("new")
            assert (orders / "harbour" / "project.yaml").is_file()
            page.close()


def _keys(page: Page, *keys: str) -> None:
    for key in keys:
        page.keyboard.press(key)


def _saved(page: Page, text: str) -> None:
    expect(page.locator("#review-msg")).to_have_text(text, timeout=WAIT_MS)


def test_keyboard_review_then_export_honours_it(tmp_path: Path, browser: Browser) -> None:
    orders = tmp_path / "automation" / "orders"
    order_file = write_order(orders, "fruit", FRUIT)
    with running_simulator(sim_config(tmp_path)) as sim:
        settings = settings_for(sim.url, tmp_path / "out")
        in_thread(run_in_process, order_file, settings)
    with serving(WebConfig(orders, settings)) as base:
        page = browser.new_page(viewport=WIDE)
        page.goto(f"{base}/o/fruit/review")
        expect(page.locator(".tile")).to_have_count(4)
        _keys(page, "p")
        _saved(page, "image 0: approved (saved)")
        _keys(page, "ArrowRight", "x")
        _saved(page, "image 1: rejected (saved)")
        _keys(page, "ArrowRight", "p")
        _saved(page, "image 2: approved (saved)")
        _keys(page, "ArrowRight", "p")
        _saved(page, "image 3: approved (saved)")
        _keys(page, "u")  # undo the last decision: image 3 is not reviewed again
        _saved(page, "image 3: decision undone (saved)")
        decisions = {item.index: item.decision for item in list_review(order_file, settings)}
        assert decisions == {0: "approved", 1: "rejected", 2: "approved", 3: None}
        _keys(page, "ArrowLeft", "ArrowLeft")
        loupe = page.locator("#loupe-img")
        version = read_slots(ledger_path(output_dir(load(order_file).order, settings)))[1]
        expect(loupe).to_have_attribute("src", f"/o/fruit/image/1/0?v={version.sha256s[0][:16]}")
        page.wait_for_function("document.getElementById('loupe-img').naturalWidth > 0")
        shown = page.evaluate(
            "(() => { const i = document.getElementById('loupe-img');"
            " return [i.naturalWidth, i.getBoundingClientRect().width]; })()"
        )
        assert shown[0] == shown[1], f"the loupe is not at 100 %: {shown}"
        both_widths(page, "review")

        # Dreamstime wants a description this order lacks: every problem is shown, by image.
        page.goto(f"{base}/o/fruit/export?market=adobe&market=dreamstime")
        problems = page.locator("#problems li")
        expect(problems).to_have_count(2)  # the two approved images only
        expect(problems.first).to_contain_text("description")
        both_widths(page, "export-problems")
        page.uncheck("input[value=dreamstime]")
        page.click("#markets button[type=submit]")
        expect(page.locator("#no-problems")).to_be_visible()
        page.click("#run-export button[type=submit]")
        expect(page.locator("#job-state")).to_have_text("finished", timeout=WAIT_MS)
        with page.expect_download(timeout=WAIT_MS) as download:
            page.click("a.download[data-market=adobe]")
        rows = _csv_rows(Path(download.value.path()), "adobe/adobe.csv")
        both_widths(page, "export-done")
        page.close()
    names = sorted(row["Filename"] for row in rows)
    assert [name[:4] for name in names] == ["0000", "0002"], names  # approved only
    assert all(row["Title"] for row in rows)


def test_r_re_rolls_the_selected_image_after_a_confirm(tmp_path: Path, browser: Browser) -> None:
    orders = tmp_path / "orders"
    order_file = write_order(orders, "lighthouse", SINGLE)
    with running_simulator(sim_config(tmp_path)) as sim:
        settings = settings_for(sim.url, tmp_path / "out")
        in_thread(run_in_process, order_file, settings)
        db = ledger_path(output_dir(load(order_file).order, settings))
        old = read_slots(db)[2]
        with serving(WebConfig(orders, settings)) as base:
            page = browser.new_page(viewport=WIDE)
            page.goto(f"{base}/o/lighthouse/review")
            expect(page.locator(".tile")).to_have_count(6)
            expect(page.locator(".keys")).to_contain_text("R re-roll (asks first")
            tile_img = page.locator("#i2 img")
            expect(tile_img).to_have_attribute(
                "src", f"/o/lighthouse/thumb/2/0?v={old.sha256s[0][:16]}"
            )
            confirm = page.locator("#reroll-confirm")
            # Esc cancels; the button asks too, and its Cancel closes the question.
            _keys(page, "ArrowRight", "ArrowRight", "r")
            expect(confirm).to_be_visible()
            expect(confirm).to_contain_text("Re-roll image 2?")
            _keys(page, "Escape")
            expect(confirm).to_be_hidden()
            expect(page.locator("#review-msg")).to_have_text("re-roll cancelled")
            page.click("#reroll")
            expect(confirm).to_be_visible()
            page.click("#reroll-no")
            expect(confirm).to_be_hidden()
            assert read_slots(db)[2].generation == 0  # nothing re-rolled
            # R, then Enter: the old file is set aside and the order runs; the tile shows the
            # new image when it is made (the order's event stream says so).
            _keys(page, "r")
            expect(confirm).to_be_visible()
            both_widths(page, "review-reroll-confirm")
            with page.expect_response(f"{base}/o/lighthouse/review/reroll") as answer:
                _keys(page, "Enter")
            expect(confirm).to_be_hidden()
            reply = answer.value.json()
            assert reply["image"] == 2 and reply["generation"] == 1, reply
            assert reply["moved_to"][0].startswith("rerolled/") and reply["run"] == "runs here"
            expect(page.locator("#review-msg")).to_contain_text(
                "re-rolled, new seed", timeout=WAIT_MS
            )
            new = read_slots(db)[2]
            assert new.generation == 1 and new.seed != old.seed
            expect(tile_img).to_have_attribute(
                "src", f"/o/lighthouse/thumb/2/0?v={new.sha256s[0][:16]}"
            )
            page.wait_for_function(
                "(() => { const i = document.querySelector('#i2 img');"
                " return i.complete && i.naturalWidth > 0; })()",
                timeout=WAIT_MS,
            )
            expect(page.locator("#i2")).not_to_have_class(re.compile(r"\brerolling\b"))
            expect(page.locator("#loupe-info")).to_contain_text(f"seed {new.seed}")
            both_widths(page, "review-rerolled")
            wait_for(
                lambda: (
                    read_status(db).order.state.value == "completed" and not read_status(db).running
                ),
                what="the re-roll's run to finish",
                timeout_s=WAIT_MS / 1000,
            )
            # A reload shows the new image too.
            page.reload()
            expect(tile_img).to_have_attribute(
                "src", f"/o/lighthouse/thumb/2/0?v={new.sha256s[0][:16]}"
            )
            page.close()


def _csv_rows(archive: Path, member: str) -> list[dict[str, Any]]:
    with zipfile.ZipFile(archive) as package:
        text = package.read(member).decode("utf-8")
        assert sum(1 for n in package.namelist() if n.endswith(".jpg")) == 2
    return list(csv.DictReader(io.StringIO(text)))


# -- the line, run by the server -----------------------------------------------------------


def _row(page: Page, order: str) -> Any:
    return page.locator(f"tr[data-order={order}]")


def _server(page: Page, url: str) -> Any:
    return page.locator(f"li[data-server='{url}']")


def _blocked_simulator(tmp_path: Path) -> Any:
    """A simulator whose first prompt (another client's, sent here) runs until /interrupt."""
    return running_simulator(sim_config(tmp_path, faults=Faults(stuck_on_prompts=(1,))))


def test_a_line_started_from_the_page_runs_on_two_servers_live(
    tmp_path: Path, browser: Browser
) -> None:
    orders, out = tmp_path / "orders", tmp_path / "out"
    files = [
        single_order(orders, "low", 3),
        single_order(orders, "high", 3, priority=9),
        single_order(orders, "mid", 3, priority=5),
    ]
    # Each server is held by another client's prompt until the test lets it go: the queue
    # stands still while the page is read, whatever the machine's speed.
    with _blocked_simulator(tmp_path / "a") as a, _blocked_simulator(tmp_path / "b") as b:
        for sim in (a, b):
            httpx.post(f"{sim.url}/prompt", json={"prompt": txt2img(), "client_id": "someone"})
        settings = settings_for(a.url, out, line_poll_s=0.2)
        config = WebConfig(orders, settings, urls=(a.url, b.url))
        with serving(config) as base:
            page = browser.new_page(viewport=WIDE)
            page.goto(f"{base}/")
            expect(page.locator("#line-state")).to_have_text("not started")
            page.click("button[data-line=start]")
            expect(page.locator("#line-state")).to_have_text("running", timeout=WAIT_MS)
            page.evaluate("window.sameDocument = true")  # a reload would lose it
            # Two orders at once (line_max_orders): the two highest run, the third is next.
            rows = page.locator("tr[data-order]")
            expect(rows).to_have_count(3)
            for n, (order, state) in enumerate([("high", "running"), ("mid", "running")]):
                expect(rows.nth(n)).to_have_attribute("data-order", order, timeout=WAIT_MS)
                expect(rows.nth(n)).to_have_attribute("data-line-state", state)
            expect(_row(page, "low")).to_have_attribute("data-line-state", "next")
            expect(_row(page, "low").locator(".queue-cell")).to_have_text("1. next")
            for sim in (a, b):
                expect(_server(page, sim.url)).to_have_attribute("data-state", "up")
                expect(_server(page, sim.url)).to_contain_text("working on")

            # An order dropped into the folder is queued, live, after those of higher priority.
            files.append(single_order(orders, "late", 2))
            expect(_row(page, "late")).to_have_attribute("data-line-state", "next", timeout=WAIT_MS)
            expect(page.locator("tr[data-order]").nth(3)).to_have_attribute("data-order", "late")
            expect(_row(page, "late").locator(".queue-cell")).to_have_text("2. next")
            both_widths(page, "line-running")

            for sim in (a, b):
                httpx.post(f"{sim.url}/interrupt")
            for order in ("high", "mid", "low", "late"):
                expect(_row(page, order).locator("td .s-completed")).to_have_text(
                    "completed", timeout=WAIT_MS
                )
                expect(_row(page, order)).to_have_attribute("data-line-state", "completed")
            for sim in (a, b):
                expect(_server(page, sim.url)).to_contain_text("images/min", timeout=WAIT_MS)
                expect(_server(page, sim.url)).to_contain_text("idle", timeout=WAIT_MS)
            assert page.evaluate("window.sameDocument") is True
            both_widths(page, "line-done")
            page.close()
        made = a.stats()["executed"], b.stats()["executed"]
    for file in files:
        check_finished(file, out)
    assert min(made) > 0 and sum(made) == 3 + 3 + 3 + 2  # both servers worked, nothing twice


def test_a_server_killed_mid_line_shows_down_and_its_work_moves(
    tmp_path: Path, browser: Browser
) -> None:
    orders, out = tmp_path / "orders", tmp_path / "out"
    order_file = single_order(orders, "killed", 16)
    # B's fourth prompt hangs, so the order cannot end before B is killed.
    b_config = sim_config(tmp_path / "b", fixed_prompt_s=0.05, faults=Faults(stuck_on_prompts=(4,)))
    with (
        running_simulator(sim_config(tmp_path / "a", fixed_prompt_s=0.05)) as a,
        running_simulator(b_config) as b,
    ):
        settings = settings_for(a.url, out, reconnect_timeout_s=0.3, probe_interval_s=0.1)
        config = WebConfig(orders, settings, urls=(a.url, b.url), start_line=True)
        with serving(config) as base:
            page = browser.new_page(viewport=WIDE)
            page.goto(f"{base}/")
            expect(_server(page, b.url)).to_have_attribute("data-state", "up", timeout=WAIT_MS)
            wait_for(lambda: b.call(running_execution) == 4, "B to hang on its fourth prompt")
            b.restart(away_s=120)  # killed: it stays away past the end of the order
            expect(_server(page, b.url)).to_have_attribute("data-state", "down", timeout=WAIT_MS)
            expect(_row(page, "killed").locator("td .s-completed")).to_have_text(
                "completed", timeout=WAIT_MS
            )
            expect(_server(page, b.url)).to_have_attribute("data-state", "down")
            expect(_server(page, a.url)).to_have_attribute("data-state", "up")
            expect(_server(page, a.url)).to_contain_text("images/min")
            both_widths(page, "line-server-down")
            page.close()
        on_a = a.stats()["executed"]
    check_finished(order_file, out)
    assert on_a >= 16 - 3  # B made at most three before it was killed: A made the rest
