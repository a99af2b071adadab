"""The protocol parsers, on bodies a real ComfyUI (v0.3.64) sent (shared/comfyui-protocol/)."""

from __future__ import annotations

import json

import pytest

from comfyline.comfy.protocol import (
    ImageRef,
    MessageType,
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

MISSING_INPUT_400 = {
    "error": {
        "type": "prompt_outputs_failed_validation",
        "message": "Prompt outputs failed validation",
        "details": "",
        "extra_info": {},
    },
    "node_errors": {
        "3": {
            "errors": [
                {
                    "type": "required_input_missing",
                    "message": "Required input is missing",
                    "details": "steps",
                    "extra_info": {"input_name": "steps"},
                }
            ],
            "dependent_outputs": ["9"],
            "class_type": "KSampler",
        }
    },
}
INVALID_PROMPT_400 = {
    "error": {
        "type": "invalid_prompt",
        "message": "Cannot execute because node NoSuchSampler does not exist.",
        "details": "Node ID '#3'",
        "extra_info": {},
    },
    "node_errors": {},
}


def test_executing_null_ends_a_prompt_and_a_node_does_not() -> None:
    end = parse_ws_message('{"type": "executing", "data": {"node": null, "prompt_id": "p1"}}')
    node = parse_ws_message(
        '{"type": "executing", "data": {"node": "3", "display_node": "3", "prompt_id": "p1"}}'
    )
    late_join = parse_ws_message('{"type": "executing", "data": {"node": "3"}}')
    assert end is not None and end.is_prompt_end and end.prompt_id == "p1"
    assert node is not None and not node.is_prompt_end
    assert late_join is not None and late_join.prompt_id is None and not late_join.is_prompt_end


def test_unknown_types_parse_and_junk_is_skipped() -> None:
    message = parse_ws_message('{"type": "feature_flags", "data": {"x": 1}}')
    assert message is not None and message.type == "feature_flags"
    assert message.type not in set(MessageType)
    assert parse_ws_message("not json") is None
    assert parse_ws_message("[1, 2]") is None
    assert parse_ws_message(b"\x00\x00\x00\x01\x00\x00\x00\x02\x89PNG") is None


def test_accepted_prompt() -> None:
    body = {"prompt_id": "my-own-id-52ad93", "number": 22, "node_errors": {}}
    accepted = parse_prompt_response(200, body, server="http://s")
    assert accepted.prompt_id == "my-own-id-52ad93" and accepted.number == 22


def test_400_node_errors_become_node_error_list() -> None:
    with pytest.raises(PromptRejected) as info:
        parse_prompt_response(400, MISSING_INPUT_400, server="http://s")
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


def test_invalid_prompt_takes_the_node_id_from_the_text() -> None:
    with pytest.raises(PromptRejected) as info:
        parse_prompt_response(400, INVALID_PROMPT_400, server="http://s")
    (node_error,) = info.value.node_errors
    assert node_error.node_id == "3" and info.value.error_type == "invalid_prompt"
    assert "NoSuchSampler" in str(info.value)


def test_200_that_lists_node_errors_is_a_rejection() -> None:
    body = {"prompt_id": "p", "number": 3, "node_errors": MISSING_INPUT_400["node_errors"]}
    with pytest.raises(PromptRejected) as info:
        parse_prompt_response(200, body, server="http://s")
    assert info.value.status_code == 200 and info.value.node_errors[0].node_id == "3"


def test_500_text_is_a_protocol_error() -> None:
    with pytest.raises(ComfyProtocolError):
        parse_prompt_response(500, "500 Internal Server Error", server="http://s")


def test_execution_error_and_out_of_memory() -> None:
    data = {
        "prompt_id": "e9",
        "node_id": "10",
        "node_type": "LatentUpscaleBy",
        "exception_message": "Input and output sizes should be greater than 0\n",
        "exception_type": "RuntimeError",
    }
    error = execution_error(data)
    assert type(error) is ExecutionFailed
    assert (error.node_id, error.node_type, error.exception_type) == (
        "10",
        "LatentUpscaleBy",
        "RuntimeError",
    )
    assert "node 10 (LatentUpscaleBy): RuntimeError" in str(error)
    oom = execution_error({**data, "exception_type": "torch.OutOfMemoryError"})
    assert isinstance(oom, OutOfMemory)


def _history(
    status_str: str, messages: list[object], outputs: dict[str, object]
) -> dict[str, object]:
    return {
        "p1": {
            "prompt": [0, "p1", {}, {"client_id": "c"}, ["9"]],
            "outputs": outputs,
            "status": {
                "status_str": status_str,
                "completed": status_str == "success",
                "messages": messages,
            },
            "meta": {},
        }
    }


def test_history_success_lists_output_images_only() -> None:
    outputs = {
        "9": {
            "images": [
                {"filename": "a_00001_.png", "subfolder": "orders/o", "type": "output"},
                {"filename": "preview.png", "subfolder": "", "type": "temp"},
            ]
        }
    }
    entry = parse_history(_history("success", [], outputs), "p1")
    assert entry is not None and entry.error() is None
    assert entry.images == (ImageRef("a_00001_.png", "orders/o", "output"),)


def test_history_of_failed_and_interrupted_prompts() -> None:
    failed = _history(
        "error",
        [
            [
                "execution_error",
                {
                    "node_id": "10",
                    "node_type": "X",
                    "exception_type": "E",
                    "exception_message": "boom",
                },
            ]
        ],
        {},
    )
    entry = parse_history(failed, "p1")
    assert entry is not None and isinstance(entry.error(), ExecutionFailed)
    interrupted = _history("error", [["execution_interrupted", {"node_id": "3"}]], {})
    entry = parse_history(interrupted, "p1")
    assert entry is not None and isinstance(entry.error(), ExecutionInterrupted)


def test_history_empty_means_not_there() -> None:
    assert parse_history({}, "p1") is None


def test_queue_ids() -> None:
    body = {
        "queue_running": [[24, "a", {}, {"client_id": "c"}, ["9"]]],
        "queue_pending": [[-27, "d", {}, {}, ["9"]], [25, "b", {}, {}, ["9"]]],
    }
    state = parse_queue(body)
    assert state.running == ("a",) and set(state.pending) == {"b", "d"}
    with pytest.raises(ComfyProtocolError):
        parse_queue({"nope": 1})


def test_combo_options_in_both_spellings() -> None:
    info = json.loads(
        """{"CheckpointLoaderSimple": {"input": {"required": {"ckpt_name":
              [["a.safetensors", "b.safetensors"], {"tooltip": "x"}]}}},
            "UpscaleModelLoader": {"input": {"required": {"model_name":
              ["COMBO", {"options": ["4x.pth"], "multiselect": false}]}}}}"""
    )
    assert combo_options(info, "CheckpointLoaderSimple", "ckpt_name") == [
        "a.safetensors",
        "b.safetensors",
    ]
    assert combo_options(info, "UpscaleModelLoader", "model_name") == ["4x.pth"]
    assert combo_options(info, "Nope", "x") == []
