"""Configuring the line: which servers (``--comfyui``, ``COMFYUI_URLS``, ``backends.yaml``), an
order's ``priority:`` and ``schedule:``, and the documentation of what they add."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from comfyline.backends_config import backend_specs, load_backends_file
from comfyline.errors import ConfigError, OrderError
from comfyline.orders import load
from comfyline.pipeline import fingerprint
from comfyline.reports.report import ReportBackendUse
from comfyline.schemas.order import Schedule
from comfyline.settings import Settings
from test_pipeline_support import single_order, write_order

ROOT = Path(__file__).resolve().parents[1]


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_a_backends_file_names_each_server(tmp_path: Path) -> None:
    file = write(
        tmp_path / "backends.yaml",
        "backends:\n"
        "  - name: big\n    url: http://10.0.0.5:8188/\n    sensor: http://10.0.0.5:9108\n"
        "    sensor_token: t0k\n    tags: [night, 4090]\n"
        "  - name: small\n    url: http://10.0.0.6:8188\n    max_in_flight: 1\n"
        "    sensor: comfyui\n",
    )
    big, small = backend_specs(Settings(backends_file=file))
    assert (big.name, big.url, big.remote_sensor, big.tags) == (
        "big",
        "http://10.0.0.5:8188",
        True,
        ("night", "4090"),
    )
    assert "t0k" not in repr(big)  # tokens stay out of logs
    assert (small.max_in_flight, small.sensor, small.remote_sensor) == (1, "comfyui", False)
    assert small.sensor_setting(Settings()).sensor == "comfyui"


def test_every_problem_of_a_backends_file_is_said_with_its_line(tmp_path: Path) -> None:
    file = write(
        tmp_path / "backends.yaml",
        "backends:\n"
        "  - name: a\n    url: http://h:1\n    max_in_flight: 3\n"
        "  - name: b\n    url: ftp://h:2\n    sensr: auto\n"
        "  - name: c\n    url: http://h:3\n    sensor: thermometer\n",
    )
    with pytest.raises(ConfigError) as caught:
        load_backends_file(file)
    text = str(caught.value)
    assert f"{file}:4:" in text and "max_in_flight" in text
    assert "sensr" in text and "ftp://h:2" in text
    assert "thermometer" in text and "sensor-agent" in text


def test_a_server_given_twice_is_refused(tmp_path: Path) -> None:
    file = write(
        tmp_path / "b.yaml",
        "backends:\n  - {name: a, url: 'http://h:1'}\n  - {name: b, url: 'http://h:1'}\n",
    )
    with pytest.raises(ConfigError, match="given twice"):
        backend_specs(Settings(backends_file=file))


def test_which_servers_precedence(tmp_path: Path) -> None:
    file = write(tmp_path / "b.yaml", "backends:\n  - {name: f, url: 'http://file:1'}\n")
    os.environ["COMFYUI_URLS"] = "http://env:1, http://env:2"
    from_env = Settings()
    assert [s.url for s in backend_specs(from_env)] == ["http://env:1", "http://env:2"]
    with_file = Settings(backends_file=file)
    assert [s.name for s in backend_specs(with_file)] == ["f"]
    assert [s.url for s in backend_specs(with_file, ["http://cli:1"])] == ["http://cli:1"]
    del os.environ["COMFYUI_URLS"]
    assert [s.url for s in backend_specs(Settings())] == ["http://127.0.0.1:8188"]


def test_priority_and_schedule_are_checked_and_not_what_an_order_makes(tmp_path: Path) -> None:
    plain = load(single_order(tmp_path / "a", "same", 2))
    urgent = load(
        single_order(
            tmp_path / "b", "same", 2, priority=7, schedule={"after": "22:00", "before": "07:00"}
        )
    )
    assert urgent.order.priority == 7 and urgent.order.schedule is not None
    assert fingerprint(plain) == fingerprint(urgent)  # editing them never blocks a resume


def test_an_unquoted_time_says_to_quote_it(tmp_path: Path) -> None:
    body = "type: single\nprompt: p\nschedule:\n  after: 22:00\n  before: '7:00'\npriority: x\n"
    with pytest.raises(OrderError) as caught:
        load(write_order(tmp_path, "t", body))
    text = str(caught.value)
    assert 'write the time in quotes, e.g. "22:00"' in text
    assert "'7:00'" in text and "HH:MM" in text
    assert "priority" in text


def test_schedule_windows() -> None:
    night = Schedule(after="22:00", before="07:00")
    assert night.allows(23, 30) and night.allows(6, 59) and night.allows(22, 0)
    assert not night.allows(7, 0) and not night.allows(12, 0)
    day = Schedule(after="09:00", before="17:00")
    assert day.allows(9, 0) and not day.allows(17, 0) and not day.allows(8, 59)
    assert Schedule(before="06:00").allows(5, 0) and not Schedule(before="06:00").allows(6, 0)
    assert Schedule(after="20:00").allows(23, 59) and not Schedule(after="20:00").allows(1, 0)
    with pytest.raises(ValueError, match="give after, before or both"):
        Schedule()
    with pytest.raises(ValueError, match="window is empty"):
        Schedule(after="10:00", before="10:00")


def test_the_docs_describe_what_the_line_adds() -> None:
    report_doc = (ROOT / "docs" / "REPORT_SCHEMA.md").read_text("utf-8")
    section = report_doc.split("## `backends[]`\n", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `([a-z_]+)` \|", section, re.MULTILINE))
    assert documented == set(ReportBackendUse.model_fields)
    contract = (ROOT / "docs" / "ORDER_CONTRACT.md").read_text("utf-8")
    for key in ("priority", "schedule", "schedule.after", "schedule.before"):
        assert re.search(rf"^\| `{re.escape(key)}` \|", contract, re.MULTILINE), key
    scaling = (ROOT / "docs" / "SCALING.md").read_text("utf-8")
    assert "backends.yaml" in scaling and "sensor-agent" in scaling
