"""The dashboard over real sockets, without a browser: who may come in (token beyond loopback,
loopback Host only, no cross-site POST), images by ledger index only, the event stream, cancel
as Ctrl-C, and problems shown as words, never as a traceback."""

from __future__ import annotations

import json
import os
import re
import selectors
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from comfyline.errors import LedgerError
from comfyline.ledger import SlotState, ledger_path, read_slots, read_status
from comfyline.sim import Faults, ThermalConfig, running_simulator
from comfyline.web import WebConfig
from sim_graphs import txt2img
from test_pipeline_support import (
    ROOT,
    check_finished,
    child_env,
    output_folder,
    run_in_process,
    server_queue,
    settings_for,
    sim_config,
    single_order,
    wait_for,
)
from web_support import serving

LINK = re.compile(r"dashboard on (http://\S+)")


@contextmanager
def serve_process(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> Iterator[str]:
    """``comfyline serve ARGS`` as a child; yields the link it prints."""
    orders = tmp_path / "orders"
    orders.mkdir(exist_ok=True)
    command = [sys.executable, "-m", "comfyline", "serve", "--port", "0", "--line", str(orders)]
    with subprocess.Popen(
        [*command, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**child_env(), **(env or {})},
        cwd=ROOT,
    ) as proc:
        try:
            yield _printed_link(proc)
        finally:
            proc.send_signal(signal.SIGINT)
            proc.communicate(timeout=30)


def _printed_link(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if selector.select(timeout=deadline - time.monotonic()):
                line = proc.stdout.readline()
                assert line, "comfyline serve ended before printing its link"
                if found := LINK.search(line):
                    return found.group(1)
    raise AssertionError("comfyline serve printed no link within 60 s")


def test_beyond_loopback_every_request_needs_the_token(tmp_path: Path) -> None:
    with serve_process(tmp_path, "--host", "127.0.0.2") as link:
        base, _, token = link.partition("/?token=")
        assert base.startswith("http://127.0.0.2:") and len(token) >= 30
        with httpx.Client(base_url=base, timeout=30) as client:
            for path in ("/", "/events", "/new", "/static/app.css", "/o/x/thumb/0/0"):
                assert client.get(path).status_code == 401, path
            assert client.post("/new").status_code == 401
            assert client.get("/", params={"token": "wrong"}).status_code == 401
            assert client.get("/", headers={"Authorization": "Bearer wrong"}).status_code == 401
            entry = client.get("/", params={"token": token})
            assert entry.status_code == 303 and entry.headers["location"] == "/"
            assert "HttpOnly" in entry.headers["set-cookie"]
            assert client.get("/").status_code == 200  # the cookie it set
        bearer = {"Authorization": f"Bearer {token}"}
        assert httpx.get(f"{base}/", headers=bearer, timeout=30).status_code == 200
    # A token from the environment, on all addresses (reached here by loopback only).
    env = {"COMFYLINE_TOKEN": "a-token-from-the-environment-0123"}
    with serve_process(tmp_path, "--host", "0.0.0.0", env=env) as link:
        assert link.endswith("?token=a-token-from-the-environment-0123")
        local = "http://127.0.0.1:" + link.split(":")[2].split("/")[0]
        assert httpx.get(f"{local}/", timeout=30).status_code == 401
        headers = {"Authorization": "Bearer a-token-from-the-environment-0123"}
        assert httpx.get(f"{local}/", headers=headers, timeout=30).status_code == 200


def test_on_loopback_foreign_hosts_and_cross_site_posts_are_refused(tmp_path: Path) -> None:
    orders = tmp_path / "orders"
    order_file = single_order(orders, "harbour", 2)
    settings = settings_for("http://127.0.0.1:9", tmp_path / "out")
    with serving(WebConfig(orders, settings)) as base:
        with httpx.Client(base_url=base, timeout=30) as client:
            assert client.get("/").status_code == 200
            # DNS rebinding: a page of another site that points its name at 127.0.0.1.
            assert client.get("/", headers={"Host": "evil.example:80"}).status_code == 403
            for headers in (
                {"Origin": "http://evil.example"},
                {"Origin": "null"},
                {"Sec-Fetch-Site": "cross-site"},
            ):
                refused = client.post("/o/harbour/start", headers=headers)
                assert refused.status_code == 403, headers
                reroll = client.post("/o/harbour/review/reroll", json={"image": 0}, headers=headers)
                assert reroll.status_code == 403, headers
            assert client.post("/new", headers={"Sec-Fetch-Site": "same-site"}).status_code == 403
    assert not ledger_path(output_folder(order_file, tmp_path / "out")).exists()  # not started


def test_images_are_served_by_ledger_index_and_never_outside(tmp_path: Path) -> None:
    orders = tmp_path / "orders"
    order_file = single_order(orders, "harbour", 3)
    with running_simulator(sim_config(tmp_path)) as sim:
        settings = settings_for(sim.url, tmp_path / "out")
        run_in_process(order_file, settings)
    folder = output_folder(order_file, tmp_path / "out")
    (tmp_path / "out" / "secret.png").write_bytes(b"not for the browser")
    with serving(WebConfig(orders, settings)) as base, httpx.Client(base_url=base) as client:
        first = sorted(folder.glob("0000_*.png"))[0]
        assert client.get("/o/harbour/image/0/0").content == first.read_bytes()
        thumb = client.get("/o/harbour/thumb/0/0")
        assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/webp"
        cached = list((folder / ".comfyline" / "thumbs").glob("*.webp"))
        assert len(cached) == 1
        made_at = cached[0].stat().st_mtime_ns
        assert client.get("/o/harbour/thumb/0/0").content == thumb.content
        assert cached[0].stat().st_mtime_ns == made_at  # made once
        for path in (
            "/o/harbour/image/0/1",
            "/o/harbour/image/99/0",
            "/o/harbour/image/-1/0",
            "/o/..%2F..%2Fout/image/0/0",
            "/o/harbour/image/0/0/../../../../secret.png",
            "/static/..%2Fpages.py",
            "/static/../pages.py",
        ):
            answer = client.get(path)
            assert answer.status_code == 404, path
            assert b"Traceback" not in answer.content
        # A ledger that names a file outside the output folder does not lead there.
        with sqlite3.connect(ledger_path(folder)) as db:
            db.execute("""UPDATE slot SET files = '["../secret.png"]' WHERE idx = 1""")
        db.close()
        assert client.get("/o/harbour/image/1/0").status_code == 404
        assert client.get("/o/harbour/thumb/1/0").status_code == 404


def test_a_reroll_sets_the_image_aside_and_the_run_makes_it_with_another_seed(
    tmp_path: Path,
) -> None:
    orders = tmp_path / "orders"
    order_file = single_order(orders, "harbour", 3)
    single_order(orders, "fresh", 2)  # never run
    with running_simulator(sim_config(tmp_path)) as sim:
        settings = settings_for(sim.url, tmp_path / "out")
        run_in_process(order_file, settings)
        folder = output_folder(order_file, tmp_path / "out")
        db = ledger_path(folder)
        old = read_slots(db)[1]
        old_bytes = (folder / old.files[0]).read_bytes()
        with serving(WebConfig(orders, settings)) as base, httpx.Client(base_url=base) as client:
            old_thumb = client.get(f"/o/harbour/thumb/1/0?v={old.sha256s[0][:16]}")
            assert "immutable" in old_thumb.headers["cache-control"]  # named by its version
            # Problems come back as words in JSON, never a traceback; nothing is re-rolled.
            for name, body, words in (
                ("harbour", {"image": 99}, "no made image is called '99'"),
                ("harbour", {"image": "1"}, 'send JSON {"image": INDEX}'),
                ("fresh", {"image": 0}, "has made no images yet"),
                ("nope", {"image": 0}, "no order"),
            ):
                answer = client.post(f"/o/{name}/review/reroll", json=body)
                assert answer.status_code in (400, 404), (name, answer.text)
                assert "Traceback" not in answer.text
                if answer.status_code == 400:
                    assert words in answer.json()["error"], answer.text
            assert read_slots(db)[1].generation == 0

            reply = client.post("/o/harbour/review/reroll", json={"image": 1}, timeout=30)
            assert reply.status_code == 200, reply.text
            done = reply.json()
            assert done["image"] == 1 and done["generation"] == 1 and done["run"] == "runs here"
            assert done["old_seed"] == old.seed != done["new_seed"]
            assert (folder / done["moved_to"][0]).read_bytes() == old_bytes  # set aside
            assert done["moved_to"][0].startswith("rerolled/")
            # The order's event stream, from the re-roll on, says when the new image is made.
            with client.stream(
                "GET", f"/o/harbour/events?after={done['after']}", timeout=60
            ) as stream:
                made = next(
                    data
                    for _, event, data in _sse(stream.iter_lines())
                    if event == "images" and any(i == 1 for i, _, _ in data)
                )
            until(
                lambda: order_state(order_file, tmp_path / "out") == ("completed", False), "the run"
            )
            new = read_slots(db)[1]
            assert new.state is SlotState.DONE and new.generation == 1
            assert new.seed == done["new_seed"] and new.sha256s[0] != old.sha256s[0]
            assert (folder / new.files[0]).is_file()
            version = new.sha256s[0][:16]
            assert [1, 1, [version]] in made
            # The page's new URL shows the new image; the old URL is checked again each time.
            fresh = client.get(f"/o/harbour/thumb/1/0?v={version}")
            assert fresh.content != old_thumb.content
            stale = client.get(f"/o/harbour/thumb/1/0?v={old.sha256s[0][:16]}")
            assert stale.headers["cache-control"] == "private, no-cache"
            etag = {"If-None-Match": fresh.headers["etag"]}
            assert client.get("/o/harbour/thumb/1/0", headers=etag).status_code == 304


def _sse(lines: Iterator[str]) -> Iterator[tuple[str, str, Any]]:
    """(id, event, data) of each message of an event stream."""
    fields: dict[str, str] = {}
    for line in lines:
        if line == "":
            if "event" in fields:
                yield fields.get("id", ""), fields["event"], json.loads(fields["data"])
            fields = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(": ")
            fields[name] = value


def test_the_event_stream_sends_each_image_once_and_resumes(tmp_path: Path) -> None:
    orders = tmp_path / "orders"
    order_file = single_order(orders, "harbour", 5)
    with running_simulator(sim_config(tmp_path)) as sim:
        settings = settings_for(sim.url, tmp_path / "out")
        run_in_process(order_file, settings)
    with serving(WebConfig(orders, settings)) as base, httpx.Client(timeout=30) as client:
        images: list[int] = []
        log: list[str] = []
        last_id = ""
        with client.stream("GET", f"{base}/o/harbour/events?after=0") as stream:
            for message_id, event, data in _sse(stream.iter_lines()):
                last_id = message_id
                images += [index for index, _, _ in data] if event == "images" else []
                log += [line["text"] for line in data] if event == "log" else []
                if event == "status":
                    assert "completed" in data["html"]
                    break
        assert sorted(images) == [0, 1, 2, 3, 4]
        assert "order completed" in log
        # A reconnecting browser sends the last id it saw: nothing comes twice.
        headers = {"Last-Event-ID": last_id}
        with client.stream("GET", f"{base}/o/harbour/events", headers=headers) as stream:
            first = next(_sse(stream.iter_lines()))
        assert first[1] == "status"


def test_cancel_on_the_page_stops_the_order_as_ctrl_c_does(tmp_path: Path) -> None:
    orders = tmp_path / "orders"
    order_file = single_order(orders, "harbour", 4)
    with running_simulator(sim_config(tmp_path, faults=Faults(stuck_on_prompts=(1,)))) as sim:
        other = httpx.post(f"{sim.url}/prompt", json={"prompt": txt2img(), "client_id": "x"})
        other_id = other.json()["prompt_id"]
        settings = settings_for(sim.url, tmp_path / "out")
        with serving(WebConfig(orders, settings)) as base, httpx.Client(base_url=base) as client:
            assert client.post("/o/harbour/start").status_code == 303
            # Ours wait behind the other client's prompt, which never ends by itself.
            wait_for(lambda: len(server_queue(sim.url)) >= 2, what="our prompts on the server")
            # A re-roll waits for the run to stop: the run holds the order's ledger.
            refused = client.post("/o/harbour/review/reroll", json={"image": 0})
            assert refused.status_code == 400
            assert "order harbour is running here" in refused.json()["error"]
            assert client.post("/o/harbour/cancel").status_code == 303
            assert server_queue(sim.url) == [other_id]  # ours taken off, the other left alone
            status = read_status(ledger_path(output_folder(order_file, tmp_path / "out")))
            assert status.order.state.value == "cancelled" and not status.running
            page = client.get("/o/harbour").text
            assert 'data-action="resume"' in page and "cancelled" in page
        httpx.post(f"{sim.url}/interrupt")


def test_problems_are_shown_in_words_never_as_a_traceback(tmp_path: Path) -> None:
    orders = tmp_path / "orders"
    single_order(orders, "harbour", 2)
    (orders / "broken").mkdir()
    (orders / "broken" / "project.yaml").write_text("id: broken\ntype: single\ncount: 0\n")
    settings = settings_for("http://127.0.0.1:9", tmp_path / "out")
    with serving(WebConfig(orders, settings)) as base, httpx.Client(base_url=base) as client:
        expected = {
            "/o/nope": (404, "No such order"),
            "/o/broken": (200, "does not load"),
            "/o/harbour/review": (200, "has made no images yet"),
            "/o/harbour/export?market=adobe": (200, "has made no images yet"),
            "/o/harbour/export/adobe.zip": (404, "no adobe package yet"),
            "/o/harbour/export/../../x.zip": (404, ""),
        }
        for path, (status, words) in expected.items():
            answer = client.get(path)
            assert answer.status_code == status, (path, answer.text[:500])
            assert words in answer.text and "Traceback" not in answer.text, path
        bad = client.post("/new", data={"id": "harbour", "type": "single", "count": "abc"})
        assert bad.status_code == 422 and "Traceback" not in bad.text
        assert 'data-field="count"' in bad.text and 'data-field="prompt"' in bad.text
        exists = client.post("/new", data={"id": "harbour", "type": "single", "prompt": "x"})
        assert "already exists" in exists.text
        assert not [p for p in os.listdir(orders) if p.startswith(".new-")]  # scratch removed


# -- the line, run by the server -----------------------------------------------------------

ROW = re.compile(r'<tr data-order="([^"]+)" data-line-state="([^"]*)"')


def until(condition: Any, what: str, timeout_s: float = 60.0) -> Any:
    """``wait_for`` at a pace that leaves the busy server time to work."""
    return wait_for(condition, what, timeout_s=timeout_s, interval_s=0.05)


def _page_with(client: httpx.Client, wanted: str) -> str:
    """The line page when it holds ``wanted``, else ""."""
    text = client.get("/").text
    return text if wanted in text else ""


def line_rows(client: httpx.Client) -> list[tuple[str, str]]:
    """The line page's orders, in the order shown, each with its state on the line."""
    return ROW.findall(client.get("/").text)


def order_state(order_file: Path, out: Path) -> tuple[str, bool]:
    db = ledger_path(output_folder(order_file, out))
    try:
        status = read_status(db)
    except LedgerError:  # not there yet, or being made
        return "new", False
    return status.order.state.value, status.running


def test_the_line_runs_by_priority_pauses_resumes_and_cancels_as_ctrl_c(tmp_path: Path) -> None:
    orders, out = tmp_path / "orders", tmp_path / "out"
    low = single_order(orders, "low", 2)
    high = single_order(orders, "high", 2, priority=9)
    mid = single_order(orders, "mid", 2, priority=5)
    # Another client's prompt holds the server until /interrupt: what the line does meanwhile
    # is certain, whatever the machine's speed.
    with running_simulator(sim_config(tmp_path, faults=Faults(stuck_on_prompts=(1,)))) as sim:
        other = httpx.post(f"{sim.url}/prompt", json={"prompt": txt2img(), "client_id": "x"})
        other_id = other.json()["prompt_id"]
        settings = settings_for(sim.url, out, line_max_orders=1, line_poll_s=0.1)
        with serving(WebConfig(orders, settings)) as base, httpx.Client(base_url=base) as client:
            page = client.get("/").text
            assert 'id="line-state">not started' in page and 'data-line="start"' in page
            assert client.post("/line/start").status_code == 303
            until(
                lambda: (
                    line_rows(client) == [("high", "running"), ("mid", "next"), ("low", "next")]
                ),
                "the queue by priority, the highest running",
            )
            assert 'data-line="pause"' in client.get("/").text
            until(lambda: len(server_queue(sim.url)) >= 2, "high's prompts on the server")

            # Pause: the running order stops as when its window closes (state saved).
            assert client.post("/line/pause").status_code == 303
            until(lambda: order_state(high, out) == ("cancelled", False), "high stopped")
            until(lambda: ("high", "paused") in line_rows(client), "high waiting again")
            assert server_queue(sim.url) == [other_id]
            assert 'id="line-state">paused' in client.get("/").text
            assert client.post("/line/resume").status_code == 303
            until(lambda: ("high", "running") in line_rows(client), "high running again")
            until(lambda: len(server_queue(sim.url)) >= 2, "high's prompts back")

            # Cancel on the order: Ctrl-C for it; the line goes on with the next one.
            assert client.post("/o/high/cancel").status_code == 303
            assert order_state(high, out) == ("cancelled", False)
            until(lambda: ("mid", "running") in line_rows(client), "mid started")
            assert ("high", "cancelled") in line_rows(client)
            assert 'data-action="again"' in client.get("/o/high").text

            httpx.post(f"{sim.url}/interrupt", json={"prompt_id": other_id})
            until(lambda: order_state(low, out)[0] == "completed", "low made", timeout_s=120)
            assert order_state(mid, out)[0] == "completed"
            assert client.post("/o/high/start").status_code == 303  # "Run again"
            until(lambda: order_state(high, out)[0] == "completed", "high made", timeout_s=120)
            until(
                lambda: [state for _, state in line_rows(client)] == ["completed"] * 3,
                "every order completed on the line page",
            )
            page = client.get("/").text
            assert 'id="line-state">running' in page and f'data-server="{sim.url}"' in page
    for order_file in (low, mid, high):
        check_finished(order_file, out)
    starts = {f.parent.name: _first_start(f, out) for f in (low, mid, high)}
    assert starts["high"] < starts["mid"] < starts["low"]


def _first_start(order_file: Path, out: Path) -> float:
    db = ledger_path(output_folder(order_file, out))
    with sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True) as conn:
        return float(conn.execute("SELECT min(at) FROM event").fetchone()[0])


def test_serve_start_runs_the_line_on_several_servers(tmp_path: Path) -> None:
    orders, out = tmp_path / "orders", tmp_path / "out"
    order_file = single_order(orders, "harbour", 6)
    with (
        running_simulator(sim_config(tmp_path / "a", fixed_prompt_s=0.02)) as a,
        running_simulator(sim_config(tmp_path / "b", fixed_prompt_s=0.02)) as b,
    ):
        args = ("--start", "--comfyui", a.url, "--comfyui", b.url, "--output-root", str(out))
        with serve_process(tmp_path, *args) as link, httpx.Client(base_url=link) as client:
            until(lambda: order_state(order_file, out)[0] == "completed", "the order made")
            page = client.get("/").text
            assert f'data-server="{a.url}" data-state="up"' in page
            assert f'data-server="{b.url}" data-state="up"' in page
        made = a.stats()["executed"], b.stats()["executed"]
    check_finished(order_file, out)
    assert sum(made) == 6 and min(made) > 0


HOT_ROOM = ThermalConfig(room_c=70.0, idle_rise_c=10.0, blackout_c=200.0)
"""An idle card at 80 °C, over the guard's target (78 °C): it never cools enough to go on."""


@pytest.mark.parametrize(
    ("cool_timeout_s", "shown"),
    [(600.0, "cooling"), (0.5, "held by the guard")],
)
def test_a_hot_server_is_shown_cooling_then_held_by_its_guard(
    tmp_path: Path, cool_timeout_s: float, shown: str
) -> None:
    orders, out = tmp_path / "orders", tmp_path / "out"
    single_order(orders, "warm", 3)
    # B hangs on our first prompt: the order keeps running while A's guard decides.
    b_config = sim_config(tmp_path / "b", faults=Faults(stuck_on_prompts=(1,)))
    with (
        running_simulator(sim_config(tmp_path / "a", thermal=HOT_ROOM)) as a,
        running_simulator(b_config) as b,
    ):
        settings = settings_for(
            a.url,
            out,
            cool_timeout_s=cool_timeout_s,
            first_prompt_timeout_s=120.0,
            min_prompt_timeout_s=120.0,
        )
        config = WebConfig(orders, settings, urls=(a.url, b.url), start_line=True)
        with serving(config) as base, httpx.Client(base_url=base) as client:
            wanted = f'data-server="{a.url}" data-state="{shown}"'
            page = until(lambda: _page_with(client, wanted), shown)
            server = page[page.index(wanted) :].split("</li>")[0]
            assert "80 °C" in server
            if shown == "cooling":
                assert "at or over the target 78" in server
            else:
                assert "its guard stopped it" in server
            assert f'data-server="{b.url}" data-state="up"' in page
            assert ROW.findall(page) == [("warm", "running")]


def test_on_the_line_a_reroll_of_a_completed_order_is_left_to_the_line(tmp_path: Path) -> None:
    orders, out = tmp_path / "orders", tmp_path / "out"
    order_file = single_order(orders, "harbour", 2)
    with running_simulator(sim_config(tmp_path)) as sim:
        settings = settings_for(sim.url, out, line_poll_s=0.1)
        run_in_process(order_file, settings)
        db = ledger_path(output_folder(order_file, out))
        old_seed = read_slots(db)[0].seed
        with serving(WebConfig(orders, settings)) as base, httpx.Client(base_url=base) as client:
            assert client.post("/line/start").status_code == 303
            until(lambda: line_rows(client) == [("harbour", "completed")], "found completed")
            reply = client.post("/o/harbour/review/reroll", json={"image": 0}, timeout=30)
            assert reply.status_code == 200, reply.text
            assert reply.json()["run"] == "is queued on the line"
            until(
                lambda: read_slots(db)[0].state is SlotState.DONE,
                "the line to make the re-rolled image",
            )
            until(lambda: order_state(order_file, out) == ("completed", False), "the run's end")
            slot = read_slots(db)[0]
            assert slot.generation == 1 and slot.seed == reply.json()["new_seed"] != old_seed
