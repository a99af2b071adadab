"""Contract: the simulator answers as the recorded real ComfyUI v0.3.64 does.

Every recording in ``tests/data/comfyui-protocol`` (copied from ``shared/comfyui-protocol``) is
replayed, in order, against ONE simulator on a real socket, as the recorder drove one real
server: the HTTP requests are sent (prompt ids and file names from earlier answers mapped to
the simulator's), sockets are opened, fed and closed when the recording did, and each recorded
WebSocket frame is a synchronisation point: the replay waits (with a deadline) until the
simulator has sent a frame of that type. Then:

* every HTTP answer has the recorded status, and its JSON the recorded keys and value types,
  recursively, and null exactly where the recording has null (the simulator's own values
  allowed otherwise; dicts keyed by node or prompt ids compared entry by entry); 500 text and
  empty bodies exactly; the 400 bodies of ``03`` exactly;
* every WebSocket frame the replay waited for has the recorded keys, value types and nulls
  (``executing{node: null}`` is the end of a prompt, ``executing{node: "9"}`` is not);
* for the scenarios with a deterministic order, each socket's whole list of message types is
  the recorded one, no frame missing or extra (runs of progress/progress_state and repeated
  types collapsed), and the prompts start in the recorded order.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image
from websockets.asyncio.client import ClientConnection, connect

from comfyline.sim import SimConfig, SimulatorHandle, running_simulator

DATA = Path(__file__).parent / "data" / "comfyui-protocol"
SCENARIOS = sorted(p.name for p in DATA.glob("[0-9][0-9]_*.json"))
ORDERED = {"01", "04", "05", "07", "10", "12", "13", "17"}
WAIT_S = 10.0
_IDLE_QUEUE = {"queue_running": [], "queue_pending": []}
_ID_KEYED = re.compile(r"^\d+$")


@pytest.fixture(scope="module")
def recorded_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimulatorHandle]:
    root = tmp_path_factory.mktemp("contract")
    config = SimConfig(
        # The recorded server's checkpoints, so graphs and error texts need no translation.
        checkpoints=("tiny-sd15-klvae.safetensors", "tiny-sd15.safetensors"),
        # Slow enough that an interrupt or a late join lands mid-prompt, as recorded.
        step_s=0.06,
        output_dir=root / "output",
    )
    with running_simulator(config) as handle:
        yield handle


@pytest.fixture(scope="module")
def replay_state() -> dict[str, Any]:
    """Prompt ids seen so far, across scenarios (later ones refer to earlier prompts)."""
    return {"ids": {}}


def test_recordings_are_present() -> None:
    assert len(SCENARIOS) >= 15, f"recordings missing from {DATA}"


@pytest.mark.parametrize("scenario", SCENARIOS)
async def test_scenario_matches_recording(
    scenario: str, recorded_server: SimulatorHandle, replay_state: dict[str, Any]
) -> None:
    recording = json.loads((DATA / scenario).read_text())
    async with _Replay(recorded_server, replay_state["ids"]) as replay:
        for index, event in enumerate(recording["events"]):
            await replay.event(scenario[:2], index, event)
        sequences = await replay.finish()
    if scenario[:2] in ORDERED:
        for tag, (recorded, ours) in sequences.items():
            if recorded != ours:
                replay.problems.append(f"ws {tag}: order {ours}\n   recorded {recorded}")
    assert not replay.problems, f"{scenario}:\n" + "\n".join(replay.problems)


class _Socket:
    def __init__(self, conn: ClientConnection) -> None:
        self.conn = conn
        self.frames: list[dict[str, Any]] = []
        self.consumed: set[int] = set()
        self.recorded: list[dict[str, Any]] = []
        self.changed = asyncio.Condition()
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for message in self.conn:
                frame = json.loads(message) if isinstance(message, str) else {"type": "<binary>"}
                async with self.changed:
                    self.frames.append(frame)
                    self.changed.notify_all()
        except Exception:  # noqa: BLE001 - the replay notices missing frames itself
            pass

    async def take(self, kind: str) -> dict[str, Any] | None:
        """The first frame of this type not yet matched, waiting for it if need be."""

        def find() -> int | None:
            for i, frame in enumerate(self.frames):
                if i not in self.consumed and frame.get("type") == kind:
                    return i
            return None

        async with self.changed:
            try:
                async with asyncio.timeout(WAIT_S):
                    await self.changed.wait_for(lambda: find() is not None)
            except TimeoutError:
                return None
            index = find()
            assert index is not None
            self.consumed.add(index)
            return self.frames[index]

    async def close(self) -> None:
        await self.conn.close()
        await self.reader


class _Replay:
    def __init__(self, server: SimulatorHandle, ids: dict[str, str]) -> None:
        self.server = server
        self.ids = ids
        self.sockets: dict[str, _Socket] = {}
        self.closed: dict[str, _Socket] = {}
        self.problems: list[str] = []
        self.scenario = ""
        self.http = httpx.AsyncClient(base_url=server.url, timeout=WAIT_S)

    async def __aenter__(self) -> _Replay:
        return self

    async def __aexit__(self, *exc: object) -> None:
        for sock in list(self.sockets.values()):
            await sock.close()
        await self.http.aclose()

    async def event(self, scenario: str, index: int, event: dict[str, Any]) -> None:
        self.scenario = scenario
        where = f"event {index}"
        if "ws_open" in event:
            await self._open(scenario, event["ws_open"])
        elif "ws_sent" in event:
            sent = event["ws_sent"]
            await self.sockets[sent["tag"]].conn.send(json.dumps(sent["frame"]))
        elif "ws_closed" in event:
            sock = self.sockets.pop(event["ws_closed"])
            await sock.close()
            self.closed[event["ws_closed"]] = sock
        elif "ws" in event:
            await self._frame(where, event["ws"], event["frame"])
        elif "mark" in event:
            self._mark(event["mark"])
        elif "http" in event:
            await self._http(where, event)

    async def _open(self, scenario: str, spec: dict[str, Any]) -> None:
        if scenario == "17":  # "socket connected 2.5 s later": once the prompt runs
            await self._until_running()
        url = self.server.url.replace("http://", "ws://") + spec["url_path"]
        conn = await connect(url, open_timeout=WAIT_S, max_size=2**24)
        self.sockets[spec["tag"]] = _Socket(conn)

    async def _until_running(self) -> None:
        async with asyncio.timeout(WAIT_S):
            while not (await self.http.get("/queue")).json()["queue_running"]:
                await asyncio.sleep(0.005)

    async def _frame(self, where: str, tag: str, recorded: dict[str, Any]) -> None:
        sock = self.sockets.get(tag)
        if sock is None:
            return
        sock.recorded.append(recorded)
        ours = await sock.take(recorded["type"])
        if ours is None:
            self.problems.append(f"{where}: ws {tag}: no {recorded['type']!r} frame came")
            return
        self._compare(f"{where} ws {tag} {recorded['type']}", recorded, ours)

    def _mark(self, text: str) -> None:
        match = re.match(r"deleted .*/input/(.+)$", text)
        if match:
            self.server.call(lambda sim: (sim.config.resolved_input_dir / match[1]).unlink())

    async def _http(self, where: str, event: dict[str, Any]) -> None:
        request, recorded = event["http"], event["response"]
        method, path = request["method"], self._map(request["path"])
        label = event.get("label") or ""
        where = f"{where} {method} {request['path']} ({label})"
        response = await self._send(method, path, request)
        if _is_history_get(method, path) and recorded.get("json") and "immediately" not in label:
            response = await self._until_history(path, response)
        if path.endswith("/queue") and method == "GET" and recorded["json"] == _IDLE_QUEUE:
            response = await self._until_idle(path, response)
        if response.status_code != recorded["status"]:
            self.problems.append(f"{where}: status {response.status_code} != {recorded['status']}")
            return
        self._compare_body(where, path, recorded, response, label)
        if method == "POST" and path.endswith("/prompt") and response.status_code == 200:
            self.ids[recorded["json"]["prompt_id"]] = response.json()["prompt_id"]

    async def _send(self, method: str, path: str, request: dict[str, Any]) -> httpx.Response:
        if "multipart" in request:
            png = io.BytesIO()
            Image.new("RGB", (64, 64), (200, 30, 30)).save(png, format="PNG")
            name = request["multipart"]["image"].split(" ")[0]
            files = {"image": (name, png.getvalue(), "image/png")}
            return await self.http.post(path, files=files, data={"overwrite": "true"})
        if "json" in request:
            return await self.http.request(method, path, json=self._map_json(request["json"]))
        if "raw_body" in request:
            return await self.http.request(method, path, content=request["raw_body"].encode())
        return await self.http.request(method, path)

    async def _until_history(self, path: str, response: httpx.Response) -> httpx.Response:
        async with asyncio.timeout(WAIT_S):
            while response.status_code == 200 and not response.json():
                await asyncio.sleep(0.005)
                response = await self.http.get(path)
        return response

    async def _until_idle(self, path: str, response: httpx.Response) -> httpx.Response:
        async with asyncio.timeout(WAIT_S):
            while response.json() != _IDLE_QUEUE:
                await asyncio.sleep(0.005)
                response = await self.http.get(path)
        return response

    def _compare_body(
        self, where: str, path: str, recorded: dict[str, Any], ours: httpx.Response, label: str
    ) -> None:
        if "json" in recorded:
            body = recorded["json"]
            if body == "<omitted>":
                return
            if _is_history_get("GET", path) and "immediately" in label and body == {}:
                return  # the recorded race: the entry may or may not exist yet
            if self.scenario == "03" and recorded["status"] == 400:
                self._exact(where, body, ours.json())
            self._compare(where, body, ours.json())
        elif "text" in recorded:
            if ours.text != recorded["text"]:
                self.problems.append(f"{where}: text {ours.text!r} != {recorded['text']!r}")
        elif recorded.get("body_len") == 0:
            if ours.content:
                self.problems.append(f"{where}: body {ours.content[:40]!r} should be empty")
        elif "body_head_hex" in recorded:
            head = bytes.fromhex(recorded["body_head_hex"])[:4]
            if not ours.content.startswith(head):
                self.problems.append(f"{where}: body starts {ours.content[:8]!r}, not {head!r}")

    def _exact(self, where: str, recorded: Any, ours: Any) -> None:
        """Validation errors must match to the letter (tracebacks aside)."""
        if _without_tracebacks(recorded) != _without_tracebacks(ours):
            self.problems.append(f"{where}: body\n   {ours}\n   recorded {recorded}")

    def _compare(self, where: str, recorded: Any, ours: Any) -> None:
        for problem in _shape_diff(recorded, ours, self.ids, "$"):
            self.problems.append(f"{where}: {problem}")

    def _map(self, text: str) -> str:
        for theirs, mine in self.ids.items():
            text = text.replace(theirs, mine)
        return text

    def _map_json(self, value: Any) -> Any:
        return json.loads(self._map(json.dumps(value))) if self.ids else value

    async def finish(self) -> dict[str, tuple[list[str], list[str]]]:
        """Each socket's recorded and actual (collapsed) type sequence."""
        for tag in list(self.sockets):
            sock = self.sockets.pop(tag)
            await sock.close()
            self.closed[tag] = sock
        result = {}
        for tag, sock in self.closed.items():
            recorded = _collapse(sock.recorded, self.ids)
            ours = _collapse(sock.frames, {})
            result[tag] = (recorded, ours)
        return result


def _is_history_get(method: str, path: str) -> bool:
    return method == "GET" and bool(re.match(r"^(/api)?/history/", path))


def _collapse(frames: list[dict[str, Any]], ids: dict[str, str]) -> list[str]:
    kinds: list[str] = []
    for frame in frames:
        kind = frame.get("type", "?")
        if kind in ("progress", "progress_state"):
            kind = "progress*"
        if kind == "execution_start":
            prompt_id = frame["data"]["prompt_id"]
            kind = f"execution_start({ids.get(prompt_id, prompt_id)[:8]})"
        if not kinds or kinds[-1] != kind:
            kinds.append(kind)
    return kinds


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    return type(value).__name__


_NULL_DIFFERS = {
    # The recorded server ran with --cpu (device index null); the simulator is a CUDA card.
    "$.devices[0].index",
}
"""Paths where the recording holds null and the simulator, by design, a value."""


def _shape_diff(recorded: Any, ours: Any, ids: dict[str, str], path: str) -> Iterator[str]:
    """Differences in keys and value types (values themselves may differ), and in nulls: where
    the recording holds null, ours must be null too (``executing{node: null}`` ends a prompt),
    and the other way round."""
    if recorded is None or ours is None:
        if (recorded is None) != (ours is None) and path not in _NULL_DIFFERS:
            yield f"{path}: {str(ours)[:60]} instead of {str(recorded)[:60]}"
        return
    if _kind(recorded) != _kind(ours):
        yield f"{path}: {_kind(ours)} ({str(ours)[:60]}) instead of {_kind(recorded)}"
        return
    if isinstance(recorded, list):
        if path.endswith(("images", "messages", "queue_running", "errors")) and len(
            recorded
        ) != len(ours):
            yield f"{path}: {len(ours)} items instead of {len(recorded)}"
        for i, (r, o) in enumerate(zip(recorded, ours, strict=False)):
            yield from _shape_diff(r, o, ids, f"{path}[{i}]")
    elif isinstance(recorded, dict):
        yield from _dict_diff(recorded, ours, ids, path)


def _dict_diff(recorded: dict[str, Any], ours: dict[str, Any], ids: dict[str, str], path: str):  # type: ignore[no-untyped-def]
    keys = list(recorded)
    id_keyed = keys and all(_ID_KEYED.match(k) or k in ids or k in ids.values() for k in keys)
    if not id_keyed:
        if set(recorded) != set(ours):
            missing, extra = set(recorded) - set(ours), set(ours) - set(recorded)
            yield f"{path}: keys missing {sorted(missing)}, unexpected {sorted(extra)}"
        for key in recorded.keys() & ours.keys():
            yield from _shape_diff(recorded[key], ours[key], ids, f"{path}.{key}")
        return
    if bool(recorded) != bool(ours):
        yield f"{path}: {len(ours)} entries instead of {len(recorded)}"
        return
    pairs = [(k, ids.get(k, k)) for k in keys if ids.get(k, k) in ours]
    if not pairs:  # entries about prompts we never saw: compare in order
        pairs = list(zip(keys, list(ours), strict=False))
    for theirs, mine in pairs:
        yield from _shape_diff(recorded[theirs], ours[mine], ids, f"{path}[{theirs}]")


def _without_tracebacks(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_tracebacks(v) for k, v in value.items() if k != "traceback"}
    if isinstance(value, list):
        return [_without_tracebacks(v) for v in value]
    return value
