"""The protocol parsers keep every field a caller reads, and name what they could not read.

Written for the survivors of a mutation run over ``comfy/protocol.py`` (docs/TESTING.md): the
prompt id and node of an interrupt, the completion and graph of a history entry (recovery tells
its own prompts by the graph), the message of each node error, an out-of-memory error told only
in its message. Bodies are the recorded ones (``tests/data/comfyui-protocol/``); where one is
changed, the test says where and why.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from comfyline.comfy.protocol import (
    ImageRef,
    combo_options,
    execution_error,
    parse_history,
    parse_images,
    parse_prompt_response,
    parse_queue,
    parse_ws_message,
)
from comfyline.errors import (
    ComfyProtocolError,
    ExecutionFailed,
    ExecutionInterrupted,
    NodeError,
    OutOfMemory,
    PromptRejected,
)
from test_engine_protocol import SERVER, answer, frames


def _entry(label: str, scenario: str = "09") -> tuple[str, dict[str, Any]]:
    _, body = answer(scenario, label=label)
    (prompt_id,) = body
    return prompt_id, copy.deepcopy(body)


def test_an_interrupted_history_entry_names_its_prompt_and_node() -> None:
    prompt_id, body = _entry("after executing(node=null)", "10")
    entry = parse_history(body, prompt_id)
    assert entry is not None and entry.prompt_id == prompt_id
    assert (entry.status_str, entry.completed) == ("error", False)
    error = entry.error()
    assert type(error) is ExecutionInterrupted
    assert (error.prompt_id, error.node_id) == (prompt_id, "3")
    assert str(error) == f"prompt {prompt_id} was interrupted at node 3"


def test_a_failed_history_entry_keeps_the_exception() -> None:
    prompt_id, body = _entry("error entry")
    entry = parse_history(body, prompt_id)
    assert entry is not None
    error = entry.error()
    assert type(error) is ExecutionFailed
    assert (error.prompt_id, error.node_id, error.exception_type) == (
        prompt_id,
        "10",
        "RuntimeError",
    )
    assert error.exception_message.startswith("Input and output sizes should be greater than 0")


def test_a_history_entry_without_messages_fails_with_its_status() -> None:
    # Changed: the recorded error entry with its messages removed (a server that keeps none).
    prompt_id, body = _entry("error entry")
    del body[prompt_id]["status"]["messages"]
    entry = parse_history(body, prompt_id)
    assert entry is not None
    error = entry.error()
    assert type(error) is ExecutionFailed
    assert (error.prompt_id, error.node_id, error.exception_type) == (prompt_id, None, "error")
    assert error.exception_message == "no detail in the history"


def test_a_success_entry_is_completed_and_keeps_the_graph_it_ran() -> None:
    prompt_id, body = _entry("success entry")
    entry = parse_history(body, prompt_id)
    assert entry is not None and entry.prompt_id == prompt_id
    assert (entry.status_str, entry.completed) == ("success", True)
    assert entry.graph == body[prompt_id]["prompt"][2]
    assert entry.graph is not None and "9" in entry.graph


@pytest.mark.parametrize(
    ("prompt", "graph"),
    [
        (["number", "id"], None),
        (["number", "id", "not a graph"], None),
        (["number", "id", {"9": {}}], {"9": {}}),
    ],
)
def test_the_graph_is_the_third_item_of_the_prompt_when_it_is_an_object(
    prompt: list[Any], graph: dict[str, Any] | None
) -> None:
    prompt_id, body = _entry("success entry")
    body[prompt_id]["prompt"] = prompt
    entry = parse_history(body, prompt_id)
    assert entry is not None and entry.graph == graph


def test_a_history_entry_without_status_is_not_completed() -> None:
    # Changed: a bare entry, as a server mid-write or an older one may give.
    prompt_id, body = _entry("success entry")
    del body[prompt_id]["status"]
    entry = parse_history(body, prompt_id)
    assert entry is not None
    assert (entry.status_str, entry.completed, entry.messages) == ("unknown", False, ())
    error = entry.error()
    assert isinstance(error, ExecutionFailed) and error.exception_type == "unknown"


def test_a_history_message_whose_data_is_not_an_object_reads_as_empty() -> None:
    prompt_id, body = _entry("error entry")
    messages = body[prompt_id]["status"]["messages"]
    body[prompt_id]["status"]["messages"] = [["execution_start", "junk"], *messages[1:]]
    entry = parse_history(body, prompt_id)
    assert entry is not None and entry.messages[0] == ("execution_start", {})


def test_unreadable_history_and_queue_bodies_name_what_was_read() -> None:
    with pytest.raises(ComfyProtocolError, match=r"/history/p-1 is not a JSON object: \[1\]"):
        parse_history([1], "p-1")
    with pytest.raises(ComfyProtocolError, match="unreadable /history entry for p-1"):
        parse_history({"p-1": {"status": {}, "outputs": {"9": 5}}}, "p-1")
    with pytest.raises(ComfyProtocolError, match=r"unreadable /queue body: \"\{'nope': 1\}\""):
        parse_queue({"nope": 1})


def test_an_image_entry_without_a_file_name_is_refused() -> None:
    with pytest.raises(ComfyProtocolError, match="unreadable image entry in a node output: "):
        parse_images({"images": [{"subfolder": "", "type": "output"}]})
    assert parse_images({"images": [{"filename": "a.png"}]}) == []  # no type: not an output
    assert parse_images({"images": [{"filename": "a.png", "type": "output"}]}) == [
        ImageRef("a.png", "", "output")
    ]


def test_an_error_without_fields_still_reads() -> None:
    error = execution_error({})
    assert type(error) is ExecutionFailed
    assert (error.prompt_id, error.node_id, error.node_type) == ("?", None, None)
    assert (error.exception_type, error.exception_message) == ("unknown", "")


def test_the_execution_error_keeps_its_message() -> None:
    (frame,) = frames("07", "execution_error")
    error = execution_error(frame["data"])
    assert error.exception_message == frame["data"]["exception_message"]


def test_out_of_memory_told_only_in_the_message_is_out_of_memory() -> None:
    # Older torch raises a RuntimeError whose text says "CUDA out of memory" (never recorded:
    # the recorded error frame with that message).
    (frame,) = frames("07", "execution_error")
    data = {**frame["data"], "exception_message": "CUDA out of memory. Tried to allocate 2 GiB"}
    assert isinstance(execution_error(data), OutOfMemory)
    assert type(execution_error(frame["data"])) is ExecutionFailed


def _rejected(status: int, body: Any) -> PromptRejected:
    with pytest.raises(PromptRejected) as info:
        parse_prompt_response(status, body, server=SERVER)
    return info.value


def test_a_node_error_keeps_the_servers_message_and_the_whole_body() -> None:
    status, body = answer("03", label="missing required input (KSampler.steps)")
    error = _rejected(status, body)
    assert error.node_errors == (
        NodeError(
            "3", "KSampler", "required_input_missing", "Required input is missing", "steps", "steps"
        ),
    )
    assert error.raw == body


def test_an_invalid_prompt_names_its_node_with_the_servers_words() -> None:
    status, body = answer("03", label="unknown class_type")
    error = _rejected(status, body)
    message = "Cannot execute because node NoSuchSampler does not exist."
    assert error.node_errors == (NodeError("3", "?", "invalid_prompt", message, "Node ID '#3'"),)


@pytest.mark.parametrize(
    ("label", "text"),
    [
        ("graph with no output node", "(prompt_no_outputs): Prompt has no outputs"),
        ("body without 'prompt' key", "(no_prompt): No prompt provided (No prompt provided)"),
    ],
)
def test_a_rejection_without_node_errors_says_the_servers_message(label: str, text: str) -> None:
    status, body = answer("03", label=label)
    error = _rejected(status, body)
    assert str(error) == f"the server rejected the prompt {text}"
    assert error.node_errors == ()


def test_a_rejection_without_an_error_object_has_the_validation_defaults() -> None:
    # Changed: the recorded 400's node errors, the error object left out (a 200 that dropped
    # outputs has none).
    _, body = answer("03", label="missing required input (KSampler.steps)")
    error = _rejected(400, {"node_errors": body["node_errors"]})
    assert error.error_type == "prompt_outputs_failed_validation"
    assert str(error).startswith(
        "the server rejected the prompt (prompt_outputs_failed_validation): the server dropped "
        "outputs that failed validation: node 3 (KSampler)"
    )


def test_node_errors_that_are_not_objects_are_not_read_as_such() -> None:
    error = _rejected(400, {"error": {"type": "x", "message": "m"}, "node_errors": ["3"]})
    assert error.node_errors == ()
    bare = _rejected(400, {"node_errors": {"3": "junk", "4": {"errors": [{"extra_info": 1}]}}})
    assert bare.node_errors == (
        NodeError("3", "?", "unknown", "", "", None),
        NodeError("4", "?", "unknown", "", "", None),
    )


def test_combo_options_read_optional_inputs_and_skip_odd_specs() -> None:
    _, checkpoint = answer("02", path="/object_info/CheckpointLoaderSimple")
    info = copy.deepcopy(checkpoint)
    inputs = info["CheckpointLoaderSimple"]["input"]
    inputs["optional"] = {"ckpt_extra": inputs["required"].pop("ckpt_name")}
    names = ["tiny-sd15-klvae.safetensors", "tiny-sd15.safetensors"]
    assert combo_options(info, "CheckpointLoaderSimple", "ckpt_extra") == names
    assert combo_options(info, "CheckpointLoaderSimple", "ckpt_name") == []
    for spec in ([], ["COMBO"], ["INT", {"options": ["1"]}], ["COMBO", ["1"]], 5):
        inputs["required"]["odd"] = spec
        assert combo_options(info, "CheckpointLoaderSimple", "odd") == [], spec


def test_a_frame_whose_data_is_not_an_object_has_empty_data() -> None:
    message = parse_ws_message('{"type": "status", "data": 5}')
    assert message is not None and (message.type, message.data) == ("status", {})


def test_an_accepted_prompt_without_a_number_is_number_zero() -> None:
    _, body = answer("04", label="client-supplied prompt_id")
    accepted = parse_prompt_response(200, {"prompt_id": body["prompt_id"]}, server=SERVER)
    assert (accepted.prompt_id, accepted.number) == (body["prompt_id"], 0.0)


def test_an_unreadable_answer_to_a_post_names_the_server_status_and_body() -> None:
    status, text = answer("03", label="invalid JSON body")
    with pytest.raises(ComfyProtocolError) as info:
        parse_prompt_response(status, text, server=SERVER)
    assert str(info.value) == (
        f"POST /prompt at {SERVER} answered 500 with a body that is not a JSON object: "
        "'500 Internal Server Error\\n\\nServer got itself in trouble'"
    )
    with pytest.raises(ComfyProtocolError) as info:
        parse_prompt_response(502, "x" * 300, server=SERVER)
    assert str(info.value).endswith(f"not a JSON object: '{'x' * 200}'")
    with pytest.raises(ComfyProtocolError) as info:
        parse_prompt_response(503, {"busy": True}, server=SERVER)
    assert str(info.value) == f"POST /prompt at {SERVER} answered 503: {{'busy': True}}"


def test_an_interrupt_before_any_node_has_no_node() -> None:
    # Changed: the recorded interrupted entry without its node (stopped before a node ran).
    prompt_id, body = _entry("after executing(node=null)", "10")
    del body[prompt_id]["status"]["messages"][-1][1]["node_id"]
    entry = parse_history(body, prompt_id)
    assert entry is not None
    error = entry.error()
    assert isinstance(error, ExecutionInterrupted) and error.node_id is None
