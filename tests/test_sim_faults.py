"""Each fault the simulator can inject, and the restart, seen from a client over real sockets."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from comfyline.sim import Faults, SimulatorHandle
from sim_graphs import txt2img

WAIT_S = 10.0


class Client:
    """One WebSocket + HTTP client, as an adapter would hold."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.client_id = f"t-{uuid.uuid4().hex[:8]}"

    async def __aenter__(self) -> Client:
        ws_url = self.url.replace("http://", "ws://") + f"/ws?clientId={self.client_id}"
        self.ws = await connect(ws_url, open_timeout=WAIT_S)
        self.http = httpx.AsyncClient(base_url=self.url, timeout=WAIT_S)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.ws.close()
        await self.http.aclose()

    async def post(self, graph: dict[str, Any]) -> str:
        answer = await self.http.post(
            "/prompt", json={"prompt": graph, "client_id": self.client_id}
        )
        assert answer.status_code == 200, answer.text
        return str(answer.json()["prompt_id"])

    async def until(self, kind: str, **match: Any) -> dict[str, Any]:
        """The data of the next message of this type whose data has these values."""
        async with asyncio.timeout(WAIT_S):
            while True:
                message = json.loads(await self.ws.recv())
                data = message["data"]
                if message["type"] == kind and all(data.get(k) == v for k, v in match.items()):
                    return dict(data)

    async def run(self, graph: dict[str, Any]) -> tuple[str, list[str]]:
        prompt_id = await self.post(graph)
        kinds = []
        async with asyncio.timeout(WAIT_S):
            while True:
                message = json.loads(await self.ws.recv())
                if message["data"].get("prompt_id") == prompt_id:
                    kinds.append(message["type"])
                if message["type"] == "executing" and message["data"] == {
                    "node": None,
                    "prompt_id": prompt_id,
                }:
                    return prompt_id, kinds


async def _error_of(url: str, graph: dict[str, Any]) -> dict[str, Any]:
    async with Client(url) as client:
        prompt_id = await client.post(graph)
        error = await client.until("execution_error", prompt_id=prompt_id)
        await client.until("executing", node=None, prompt_id=prompt_id)
        history = (await client.http.get(f"/history/{prompt_id}")).json()[prompt_id]
    assert history["status"]["status_str"] == "error"
    assert history["outputs"] == {}
    return error


def test_error_on_chosen_prompt_counts_executions(make_sim: Any) -> None:
    with make_sim(faults=Faults(error_on_prompts=(2,))) as sim:

        async def scenario() -> list[list[str]]:
            async with Client(sim.url) as client:
                return [(await client.run(txt2img(seed=s)))[1] for s in (1, 2, 3)]

        first, second, third = asyncio.run(scenario())
        stats = sim.stats()
    assert "execution_success" in first and "execution_success" in third
    assert "execution_error" in second and "execution_success" not in second
    assert (stats["started"], stats["executed"], stats["failed"]) == (3, 2, 1)
    assert (stats["interrupted"], stats["lost"]) == (0, 0)


def test_error_on_seed_has_the_real_message_shape(make_sim: Any) -> None:
    with make_sim(faults=Faults(error_on_seeds=(13,))) as sim:
        error = asyncio.run(_error_of(sim.url, txt2img(seed=13)))
    assert set(error) == {
        "prompt_id",
        "node_id",
        "node_type",
        "executed",
        "exception_message",
        "exception_type",
        "traceback",
        "current_inputs",
        "current_outputs",
        "timestamp",
    }
    assert (error["node_id"], error["node_type"]) == ("3", "KSampler")
    assert error["executed"] == ["4", "5", "7", "6"]


def test_out_of_memory_above_the_pixel_budget(make_sim: Any) -> None:
    with make_sim(faults=Faults(oom_above_pixels=64 * 64)) as sim:

        async def small() -> list[str]:
            async with Client(sim.url) as client:
                return (await client.run(txt2img(width=64, height=64)))[1]

        assert "execution_success" in asyncio.run(small())
        error = asyncio.run(_error_of(sim.url, txt2img(width=64, height=64, batch=2)))
    assert error["exception_type"] == "torch.OutOfMemoryError"
    assert error["exception_message"].startswith("Allocation on device")


def test_stuck_prompt_waits_for_an_interrupt(make_sim: Any) -> None:
    with make_sim(faults=Faults(stuck_on_prompts=(1,))) as sim:

        async def scenario() -> dict[str, Any]:
            async with Client(sim.url) as client:
                prompt_id = await client.post(txt2img())
                await client.until("executing", node="3", prompt_id=prompt_id)
                queue = (await client.http.get("/queue")).json()
                assert [item[1] for item in queue["queue_running"]] == [prompt_id]
                await client.http.post("/interrupt", json={"prompt_id": prompt_id})
                interrupted = await client.until("execution_interrupted", prompt_id=prompt_id)
                await client.until("executing", node=None, prompt_id=prompt_id)
                after = await client.run(txt2img(seed=2))
                assert "execution_success" in after[1]
                return interrupted

        interrupted = asyncio.run(scenario())
        stats = sim.stats()
    assert interrupted["node_type"] == "KSampler"
    # The stuck prompt stopped by the interrupt, the next one made: nothing else ran.
    assert (stats["started"], stats["interrupted"], stats["executed"]) == (2, 1, 1)


def test_dropped_websocket_leaves_the_server_up(make_sim: Any) -> None:
    with make_sim(faults=Faults(drop_ws_after_prompts=1)) as sim:

        async def scenario() -> None:
            async with Client(sim.url) as client:
                prompt_id, _ = await client.run(txt2img())
                with pytest.raises(ConnectionClosed):
                    async with asyncio.timeout(WAIT_S):
                        while True:
                            await client.ws.recv()
                assert prompt_id in (await client.http.get(f"/history/{prompt_id}")).json()
            async with Client(sim.url) as again:  # the fault fires once
                assert "execution_success" in (await again.run(txt2img(seed=2)))[1]

        asyncio.run(scenario())
        stats = sim.stats()
    assert stats["ws_drops"] == 1
    # The drop cost the server nothing: two prompts posted, two made.
    assert (stats["started"], stats["executed"], stats["interrupted"]) == (2, 2, 0)


def test_restart_refuses_connections_then_comes_back_empty(sim: SimulatorHandle) -> None:
    async def before() -> str:
        async with Client(sim.url) as client:
            return (await client.run(txt2img()))[0]

    prompt_id = asyncio.run(before())
    sim.restart(away_s=0.5)
    with pytest.raises(httpx.ConnectError):
        httpx.get(sim.url + "/queue")
    sim.wait_up()
    assert httpx.get(sim.url + f"/history/{prompt_id}").json() == {}
    assert httpx.get(sim.url + "/queue").json() == {"queue_running": [], "queue_pending": []}
    assert sim.stats()["restarts"] == 1

    async def after() -> list[str]:
        async with Client(sim.url) as client:
            return (await client.run(txt2img()))[1]

    kinds = asyncio.run(after())
    assert "executed" in kinds  # the cache was lost too: the same graph runs again
    stats = sim.stats()
    # The restart came between prompts: nothing was cut off (lost), both ran in full.
    assert (stats["started"], stats["executed"], stats["lost"]) == (2, 2, 0)


def test_restart_fault_drops_the_socket_and_loses_the_queue(make_sim: Any) -> None:
    with make_sim(faults=Faults(restart_after_prompts=1), fixed_prompt_s=0.05) as sim:

        async def scenario() -> str:
            async with Client(sim.url) as client:
                first = await client.post(txt2img(seed=1))
                lost = await client.post(txt2img(seed=2))
                await client.until("executing", node=None, prompt_id=first)
                with pytest.raises(ConnectionClosed):
                    async with asyncio.timeout(WAIT_S):
                        while True:
                            await client.ws.recv()
                return lost

        lost = asyncio.run(scenario())
        sim.wait_up()
        assert httpx.get(sim.url + f"/history/{lost}").json() == {}
        assert httpx.get(sim.url + "/queue").json()["queue_pending"] == []
        stats = sim.stats()
    # The restart follows the first prompt's end: the second one, still waiting, vanished
    # without ever starting (not "lost": that is a prompt cut off while running).
    assert (stats["started"], stats["executed"], stats["lost"]) == (1, 1, 0)


def test_faults_change_at_run_time_over_http(sim: SimulatorHandle) -> None:
    answer = httpx.post(sim.url + "/sim/faults", json={"error_on_seeds": [99]})
    assert answer.status_code == 200 and answer.json()["error_on_seeds"] == [99]
    assert httpx.get(sim.url + "/sim/faults").json()["error_on_seeds"] == [99]
    error = asyncio.run(_error_of(sim.url, txt2img(seed=99)))
    assert error["exception_type"] == "RuntimeError"
    bad = httpx.post(sim.url + "/sim/faults", json={"no_such_fault": 1})
    assert bad.status_code == 400 and "no_such_fault" in bad.json()["error"]
    sim.set_faults(Faults())
    assert httpx.get(sim.url + "/sim/faults").json()["error_on_seeds"] == []
