"""The protocol parsers, on what a real ComfyUI (v0.3.64) sent: every body and frame is read
from the recordings in ``tests/data/comfyui-protocol/`` (see its README), not copied by hand.
Where a case was never recorded (an out-of-memory error, a temp image in a history entry), a
recorded body is changed in one named place and the test says so."""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from comfyline.comfy.protocol import (
    ImageRef,
    combo_options,
    execution_error,
    parse_history,
    parse_prompt_response,
    parse_queue,
    parse_ws_message,
)
from comfyline.errors import (
    ComfyProtocolError,
    ExecutionFailed,
    ExecutionInterrupted,
    OutOfMemory,
    PromptRejected,
)

DATA = Path(__file__).parent / "data" / "comfyui-protocol"
SERVER = "http://127.0.0.1:8188"


@cache
def _events(scenario: str) -> tuple[dict[str, Any], ...]:
    (path,) = DATA.glob(f"{scenario}_*.json")
    return tuple(json.loads(path.read_text(encoding="utf-8"))["events"])


def answer(scenario: str, *, label: str | None = None, path: str | None = None) -> Any:
    """The recorded response (status, JSON or text) of the first request with this label (or
    whose path starts with ``path``)."""
    for event in _events(scenario):
        if "http" not in event:
            continue
        if (label is not None and event.get("label") == label) or (
            path is not None and event["http"]["path"].startswith(path)
        ):
            response = event["response"]
            return response["status"], response.get("json", response.get("text"))
    raise LookupError(f"no request {label or path!r} in recording {scenario}")


def frames(scenario: str, kind: str) -> list[dict[str, Any]]:
    """Every recorded WebSocket frame of this type, in order."""
    return [
        event["frame"]
        for event in _events(scenario)
        if "ws" in event and event["frame"].get("type") == kind
    ]


def test_executing_null_ends_a_prompt_and_a_node_does_not() -> None:
    executing = frames("01", "executing")
    *nodes, end = [parse_ws_message(json.dumps(frame)) for frame in executing]
    assert end is not None and end.is_prompt_end
    assert end.prompt_id == executing[-1]["data"]["prompt_id"]
    assert nodes and all(m is not None and not m.is_prompt_end for m in nodes)
    # A late join is told the running node without a prompt id (17): not an end.
    late_join = parse_ws_message(json.dumps(frames("17", "executing")[0]))
    assert late_join is not None and late_join.prompt_id is None and not late_join.is_prompt_end


def test_unknown_types_parse_and_junk_is_skipped() -> None:
    (flags,) = frames("15", "feature_flags")
    message = parse_ws_message(json.dumps(flags))
    assert message is not None and message.type == "feature_flags"
    assert parse_ws_message("not json") is None
    assert parse_ws_message("[1, 2]") is None
    assert parse_ws_message(b"\x00\x00\x00\x01\x00\x00\x00\x02\x89PNG") is None  # a preview


def test_accepted_prompt_keeps_our_prompt_id() -> None:
    status, body = answer("04", label="client-supplied prompt_id")
    accepted = parse_prompt_response(status, body, server=SERVER)
    assert accepted.prompt_id == body["prompt_id"] == "my-own-id-52ad93"
    assert accepted.number == body["number"]


def test_400_node_errors_become_a_node_error_list() -> None:
    status, body = answer("03", label="missing required input (KSampler.steps)")
    with pytest.raises(PromptRejected) as info:
        parse_prompt_response(status, body, server=SERVER)
    error = info.value
    assert error.status_code == 400 and error.error_type == "prompt_outputs_failed_validation"
    (node_error,) = error.node_errors
    assert (node_error.node_id, node_error.class_type, node_error.type) == (
        "3",
        "KSampler",
        "required_input_missing",
    )
    assert node_error.input_name == "steps" and node_error.details == "steps"
    assert "node 3 (KSampler) input 'steps'" in str(error)


@pytest.mark.parametrize(
    ("label", "input_name", "kind"),
    [
        ("ckpt_name not in list", "ckpt_name", "value_not_in_list"),
        ("steps below min (0)", "steps", "value_smaller_than_min"),
        ("steps above max (100000)", "steps", "value_bigger_than_max"),
        ("link type mismatch (CLIP into MODEL)", "model", "return_type_mismatch"),
    ],
)
def test_each_recorded_validation_error_names_its_input(
    label: str, input_name: str, kind: str
) -> None:
    status, body = answer("03", label=label)
    with pytest.raises(PromptRejected) as info:
        parse_prompt_response(status, body, server=SERVER)
    assert [(e.input_name, e.type) for e in info.value.node_errors] == [(input_name, kind)]


def test_invalid_prompt_takes_the_node_id_from_the_text() -> None:
    status, body = answer("03", label="unknown class_type")
    with pytest.raises(PromptRejected) as info:
        parse_prompt_response(status, body, server=SERVER)
    (node_error,) = info.value.node_errors
    assert node_error.node_id == "3" and info.value.error_type == "invalid_prompt"
    assert "NoSuchSampler" in str(info.value)


def test_200_that_lists_node_errors_is_a_rejection() -> None:
    # Never recorded as such: the recorded accepted body with the recorded node_errors of 03
    # in it (what ComfyUI answers when some outputs pass validation and some do not).
    _, accepted = answer("04", label="client-supplied prompt_id")
    _, refused = answer("03", label="missing required input (KSampler.steps)")
    body = {**accepted, "node_errors": refused["node_errors"]}
    with pytest.raises(PromptRejected) as info:
        parse_prompt_response(200, body, server=SERVER)
    assert info.value.status_code == 200 and info.value.node_errors[0].node_id == "3"


@pytest.mark.parametrize("label", ["invalid JSON body", "empty body", "prompt is a list"])
def test_500_text_is_a_protocol_error(label: str) -> None:
    status, text = answer("03", label=label)
    assert (status, text) == (500, "500 Internal Server Error\n\nServer got itself in trouble")
    with pytest.raises(ComfyProtocolError):
        parse_prompt_response(status, text, server=SERVER)


def test_execution_error_and_out_of_memory() -> None:
    (frame,) = frames("07", "execution_error")
    error = execution_error(frame["data"])
    assert type(error) is ExecutionFailed
    assert (error.node_id, error.node_type, error.exception_type) == (
        "10",
        "LatentUpscaleBy",
        "RuntimeError",
    )
    assert error.prompt_id == frame["data"]["prompt_id"]
    assert "node 10 (LatentUpscaleBy): RuntimeError" in str(error)
    # Never recorded (a CPU server does not run out of GPU memory): the type is the one
    # ComfyUI names for torch's OOM, in the recorded message.
    oom = execution_error({**frame["data"], "exception_type": "torch.OutOfMemoryError"})
    assert isinstance(oom, OutOfMemory)


def test_history_success_lists_its_output_images() -> None:
    prompt_id = "a58dfb6e-b8d5-4ee9-aaed-c510d54a2f2e"
    _, body = answer("12", path=f"/history/{prompt_id}")
    entry = parse_history(body, prompt_id)
    assert entry is not None and entry.error() is None
    assert entry.images == tuple(
        ImageRef(f"img_{n:05}_.png", "orders/order-42", "output") for n in range(1, 5)
    )


def test_history_leaves_out_temp_images() -> None:
    # Changed: the recorded success entry (09) with a PreviewImage output added.
    _, body = answer("09", label="success entry")
    body = copy.deepcopy(body)
    (prompt_id,) = body
    temp = {"filename": "ComfyUI_temp_x_00001_.png", "subfolder": "", "type": "temp"}
    body[prompt_id]["outputs"]["99"] = {"images": [temp]}
    entry = parse_history(body, prompt_id)
    assert entry is not None
    assert entry.images == (ImageRef("rec_warm_00001_.png", "", "output"),)


def test_history_of_a_failed_prompt() -> None:
    _, body = answer("09", label="error entry")
    (prompt_id,) = body
    entry = parse_history(body, prompt_id)
    assert entry is not None and entry.images == ()
    error = entry.error()
    assert isinstance(error, ExecutionFailed) and error.node_type == "LatentUpscaleBy"


def test_history_of_an_interrupted_prompt() -> None:
    _, body = answer("10", label="after executing(node=null)")
    (prompt_id,) = body
    entry = parse_history(body, prompt_id)
    assert entry is not None and isinstance(entry.error(), ExecutionInterrupted)


def test_history_empty_means_not_there() -> None:
    status, body = answer("09", label="unknown id")
    assert (status, body) == (200, {})
    assert parse_history(body, "no-such-id") is None


def test_queue_ids_while_busy() -> None:
    _, body = answer("06", label="busy: 1 running + 8 pending")
    state = parse_queue(body)
    assert state.running == ("b60f46d8-e6cb-4b53-ad27-3e21361d1caa",)
    assert len(state.pending) == 8  # in heap order, the duplicated prompt id twice
    assert state.pending.count("dup-6f915d") == 2
    assert set(state.pending) == {item[1] for item in body["queue_pending"]}
    with pytest.raises(ComfyProtocolError):
        parse_queue({"nope": 1})


def test_combo_options_in_both_spellings() -> None:
    _, checkpoint = answer("02", path="/object_info/CheckpointLoaderSimple")
    _, upscaler = answer("02", path="/object_info/UpscaleModelLoader")
    info = {**checkpoint, **upscaler}
    assert combo_options(info, "CheckpointLoaderSimple", "ckpt_name") == [
        "tiny-sd15-klvae.safetensors",
        "tiny-sd15.safetensors",
    ]
    # The V3 spelling ["COMBO", {"options": [...]}]; recorded with no upscale model installed.
    assert combo_options(info, "UpscaleModelLoader", "model_name") == []
    filled = copy.deepcopy(info)  # changed: one model installed
    filled["UpscaleModelLoader"]["input"]["required"]["model_name"][1]["options"] = ["4x.pth"]
    assert combo_options(filled, "UpscaleModelLoader", "model_name") == ["4x.pth"]
    assert combo_options(info, "NoSuchNodeClass", "x") == []
