"""The simulator's behaviour beyond the recordings: images, caching, queue, /free, /sim/stats,
custom nodes, timing. Driven over real sockets (HTTP + WebSocket) like a client would."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image
from websockets.asyncio.client import connect

from comfyline.sim import SimConfig, SimulatorHandle, create_app, running_simulator
from sim_graphs import txt2img

WAIT_S = 10.0


async def run_prompt(url: str, graph: dict[str, Any], **body: Any) -> list[dict[str, Any]]:
    """POST a prompt with a fresh client_id and return every WS message about it, until the
    final ``executing`` with ``node: null``."""
    client_id = f"t-{uuid.uuid4().hex[:8]}"
    ws_url = url.replace("http://", "ws://") + f"/ws?clientId={client_id}"
    async with connect(ws_url, open_timeout=WAIT_S) as ws, httpx.AsyncClient() as http:
        answer = await http.post(
            url + "/prompt", json={"prompt": graph, "client_id": client_id, **body}
        )
        assert answer.status_code == 200, answer.text
        prompt_id = answer.json()["prompt_id"]
        messages = []
        async with asyncio.timeout(WAIT_S):
            while True:
                message = json.loads(await ws.recv())
                messages.append(message)
                data = message["data"]
                if message["type"] == "executing" and data.get("node") is None:
                    if data.get("prompt_id") == prompt_id:
                        return messages


def images_of(messages: list[dict[str, Any]]) -> list[dict[str, str]]:
    return [
        img for m in messages if m["type"] == "executed" for img in m["data"]["output"]["images"]
    ]


def cached_of(messages: list[dict[str, Any]]) -> list[str]:
    return next(m["data"]["nodes"] for m in messages if m["type"] == "execution_cached")


def test_image_has_size_batch_names_and_png_metadata(sim: SimulatorHandle, tmp_path: Path) -> None:
    graph = txt2img(seed=7, width=96, height=64, batch=2, prefix="orders/o-1/img")
    workflow = {"nodes": [], "links": []}
    messages = asyncio.run(
        run_prompt(sim.url, graph, extra_data={"extra_pnginfo": {"workflow": workflow}})
    )
    images = images_of(messages)
    assert [i["filename"] for i in images] == ["img_00001_.png", "img_00002_.png"]
    assert {i["subfolder"] for i in images} == {"orders/o-1"}
    path = tmp_path / "comfy-out" / "orders/o-1/img_00001_.png"
    with Image.open(path) as png:
        assert png.size == (96, 64)
        assert json.loads(png.info["prompt"]) == graph
        assert json.loads(png.info["workflow"]) == workflow
    view = httpx.get(
        sim.url + "/view",
        params={"filename": "img_00002_.png", "subfolder": "orders/o-1", "type": "output"},
    )
    assert view.status_code == 200 and view.headers["content-type"] == "image/png"
    assert view.content == (tmp_path / "comfy-out/orders/o-1/img_00002_.png").read_bytes()


def test_same_seed_same_pixels_other_seed_other_pixels(make_sim: Any, tmp_path: Path) -> None:
    with make_sim() as sim:
        asyncio.run(run_prompt(sim.url, txt2img(seed=1, prefix="a")))
        asyncio.run(run_prompt(sim.url, txt2img(seed=2, prefix="a")))
        asyncio.run(run_prompt(sim.url, txt2img(seed=1, prefix="b")))
    out = tmp_path / "comfy-out"
    a1, a2, b1 = (
        Image.open(out / n).tobytes() for n in ("a_00001_.png", "a_00002_.png", "b_00001_.png")
    )
    assert a1 == b1
    assert a1 != a2


def test_counter_continues_from_files_on_disk_and_size_is_substituted(
    make_sim: Any, tmp_path: Path
) -> None:
    out = tmp_path / "comfy-out"
    out.mkdir()
    Image.new("RGB", (8, 8)).save(out / "flat_64x48_00007_.png")
    with make_sim() as sim:
        messages = asyncio.run(run_prompt(sim.url, txt2img(prefix="flat_%width%x%height%")))
    assert [i["filename"] for i in images_of(messages)] == ["flat_64x48_00008_.png"]


def test_identical_graph_is_cached_and_replays_old_files(
    sim: SimulatorHandle, tmp_path: Path
) -> None:
    first = asyncio.run(run_prompt(sim.url, txt2img(seed=5)))
    again = asyncio.run(run_prompt(sim.url, txt2img(seed=5)))
    new_seed = asyncio.run(run_prompt(sim.url, txt2img(seed=6)))
    prefix_only = asyncio.run(run_prompt(sim.url, txt2img(seed=6, prefix="other")))
    assert cached_of(first) == []
    assert cached_of(again) == ["4", "5", "6", "7", "3", "8", "9"]
    assert images_of(again) == images_of(first)
    assert cached_of(new_seed) == ["4", "5", "6", "7"]
    assert cached_of(prefix_only) == ["4", "5", "6", "7", "3", "8"]
    files = sorted(p.name for p in (tmp_path / "comfy-out").iterdir())
    assert files == ["img_00001_.png", "img_00002_.png", "other_00001_.png"]
    stats = sim.stats()
    assert (stats["executed"], stats["cached"], stats["files_written"]) == (3, 1, 3)


def test_free_empties_the_cache_and_unloads_the_model(make_sim: Any) -> None:
    with make_sim(vram_total_bytes=12 * 2**30, model_vram_bytes=4 * 2**30) as sim:

        def vram_free() -> int:
            return int(httpx.get(sim.url + "/system_stats").json()["devices"][0]["vram_free"])

        assert vram_free() == 12 * 2**30
        asyncio.run(run_prompt(sim.url, txt2img(seed=5)))
        assert vram_free() == 8 * 2**30
        answer = httpx.post(sim.url + "/free", json={"unload_models": True, "free_memory": True})
        assert (answer.status_code, answer.content) == (200, b"")
        assert vram_free() == 12 * 2**30
        again = asyncio.run(run_prompt(sim.url, txt2img(seed=5)))
    assert cached_of(again) == []


def test_custom_node_from_an_extra_object_info_file(make_sim: Any, tmp_path: Path) -> None:
    extra = tmp_path / "custom.json"
    extra.write_text(
        json.dumps(
            {
                "FaceFixer": {
                    "input": {
                        "required": {
                            "image": ["IMAGE"],
                            "strength": ["FLOAT", {"min": 0, "max": 1}],
                        }
                    },
                    "output": ["IMAGE"],
                    "output_is_list": [False],
                    "output_name": ["IMAGE"],
                    "name": "FaceFixer",
                    "display_name": "Face Fixer",
                    "description": "",
                    "python_module": "custom_nodes.fixer",
                    "category": "image",
                    "output_node": False,
                }
            }
        )
    )
    graph = txt2img(width=80, height=56)
    graph["10"] = {"class_type": "FaceFixer", "inputs": {"image": ["8", 0], "strength": 0.5}}
    graph["9"]["inputs"]["images"] = ["10", 0]
    with make_sim() as plain:
        refused = httpx.post(plain.url + "/prompt", json={"prompt": graph})
    assert refused.status_code == 400
    assert (
        refused.json()["error"]["message"]
        == "Cannot execute because node FaceFixer does not exist."
    )
    with make_sim(object_info_files=(extra,)) as sim:
        assert "FaceFixer" in httpx.get(sim.url + "/object_info/FaceFixer").json()
        images = images_of(asyncio.run(run_prompt(sim.url, graph)))
    with Image.open(tmp_path / "comfy-out" / images[0]["filename"]) as png:
        assert png.size == (80, 56)


def test_upscale_nodes_change_the_size(make_sim: Any, tmp_path: Path) -> None:
    graph = txt2img(width=64, height=48)
    graph["10"] = {"class_type": "UpscaleModelLoader", "inputs": {"model_name": "4x.pth"}}
    graph["11"] = {
        "class_type": "ImageUpscaleWithModel",
        "inputs": {"upscale_model": ["10", 0], "image": ["8", 0]},
    }
    graph["12"] = {
        "class_type": "ImageScaleBy",
        "inputs": {"image": ["11", 0], "upscale_method": "area", "scale_by": 0.5},
    }
    graph["9"]["inputs"]["images"] = ["12", 0]
    with make_sim(upscale_models=("4x.pth",)) as sim:
        images = images_of(asyncio.run(run_prompt(sim.url, graph)))
    with Image.open(tmp_path / "comfy-out" / images[0]["filename"]) as png:
        assert png.size == (128, 96)


def test_configured_checkpoints_are_what_the_server_offers(make_sim: Any) -> None:
    with make_sim(checkpoints=("a.safetensors", "b.safetensors")) as sim:
        info = httpx.get(sim.url + "/object_info/CheckpointLoaderSimple").json()
        listed = httpx.get(sim.url + "/api/models/checkpoints").json()
        refused = httpx.post(sim.url + "/prompt", json={"prompt": txt2img()})
    assert info["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0] == [
        "a.safetensors",
        "b.safetensors",
    ]
    assert listed == ["a.safetensors", "b.safetensors"]
    assert refused.status_code == 400
    assert refused.json()["node_errors"]["4"]["errors"][0]["type"] == "value_not_in_list"


def test_prompts_run_in_number_order_and_stats_measure_gaps(make_sim: Any) -> None:
    with make_sim(fixed_prompt_s=0.05) as sim:

        async def scenario() -> list[str]:
            async with httpx.AsyncClient() as http:
                ids = []
                for seed, extra in ((1, {}), (2, {}), (3, {"front": True})):
                    answer = await http.post(
                        sim.url + "/prompt", json={"prompt": txt2img(seed=seed), **extra}
                    )
                    ids.append(answer.json()["prompt_id"])
                return ids

        first, second, front = asyncio.run(scenario())
        asyncio.run(run_prompt(sim.url, txt2img(seed=9)))
        stats = sim.stats()
    order = [p["prompt_id"] for p in stats["prompts"]][:3]
    assert order == [first, front, second]
    assert len(stats["gaps_s"]) == 3 and all(g >= 0 for g in stats["gaps_s"])
    durations = [p["end_s"] - p["start_s"] for p in stats["prompts"]]
    # The fixed time covers the closing messages too, their length learnt from the prompt
    # before: a prompt whose messages went faster than the last one's comes out short by the
    # difference (a few ms on a busy machine), never by more.
    assert all(d >= 0.05 - 0.01 for d in durations), durations


def test_time_scale_shrinks_every_simulated_duration(make_sim: Any) -> None:
    with make_sim(fixed_prompt_s=50.0, time_scale=0.001) as sim:
        asyncio.run(run_prompt(sim.url, txt2img()))
        record = sim.stats()["prompts"][0]
        model_time = sim.call(lambda s: s.model_time())
    assert record["end_s"] - record["start_s"] >= 0.05  # 50 model seconds = 50 ms real
    assert model_time >= 50.0


async def test_in_process_app_answers_without_a_socket(tmp_path: Path) -> None:
    app = create_app(SimConfig(output_dir=tmp_path / "out"))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://sim") as client:
        queue = await client.get("/api/queue")
        assert queue.json() == {"queue_running": [], "queue_pending": []}
        assert (await client.get("/nonexistent")).status_code == 404
        assert (await client.get("/sim/sensor")).status_code == 404  # thermal model off
        refused = await client.post("/prompt", content=b"{not json")
        assert refused.status_code == 500
        assert refused.text == "500 Internal Server Error\n\nServer got itself in trouble"


def test_sim_routes_are_not_under_api(sim: SimulatorHandle) -> None:
    assert httpx.get(sim.url + "/sim/stats").status_code == 200
    assert httpx.get(sim.url + "/api/sim/stats").status_code == 404


def test_running_simulator_starts_and_stops_cleanly(tmp_path: Path) -> None:
    import threading

    before = set(threading.enumerate())
    with running_simulator(SimConfig(output_dir=tmp_path)) as sim:
        assert httpx.get(sim.url + "/system_stats").status_code == 200
    assert set(threading.enumerate()) <= before
    with pytest.raises(httpx.ConnectError):
        httpx.get(sim.url + "/system_stats")


def test_cli_prints_the_url_and_serves(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "comfyline", "sim", "--port", "0", "--output-dir", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line.startswith("ComfyUI simulator listening on http://127.0.0.1:"), line
        url = line.rsplit(" ", 1)[1]
        assert httpx.get(url + "/system_stats", timeout=5).json()["system"]["comfyui_version"]
    finally:
        proc.kill()
        proc.wait(10)
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.close()
        proc.stderr.close()
