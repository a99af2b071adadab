"""ComfyUI's wire protocol as typed data: WebSocket message names, and the parsing of the bodies
of ``POST /prompt``, ``/history``, ``/queue`` and ``/object_info``.

Everything here is pure (no I/O) and follows what a real server (v0.3.64) sent, as recorded in
``shared/comfyui-protocol/``. Newer servers add message types and keys: unknown ones are kept as
they are and ignored by the callers, never rejected.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

from comfyline.errors import (
    ComfyProtocolError,
    ExecutionFailed,
    ExecutionInterrupted,
    NodeError,
    OutOfMemory,
    PromptRejected,
)

PromptState = Literal["pending", "running", "done", "failed", "unknown"]
"""Where a prompt stands on the server, as :meth:`ComfyUIAdapter.prompt_state` reports it."""


class MessageType(StrEnum):
    """The WebSocket message types comfyline reads (``{"type": ..., "data": {...}}``)."""

    STATUS = "status"
    EXECUTION_START = "execution_start"
    EXECUTION_CACHED = "execution_cached"
    EXECUTING = "executing"
    PROGRESS = "progress"
    PROGRESS_STATE = "progress_state"
    EXECUTED = "executed"
    EXECUTION_SUCCESS = "execution_success"
    EXECUTION_ERROR = "execution_error"
    EXECUTION_INTERRUPTED = "execution_interrupted"


@dataclass(frozen=True)
class WsMessage:
    """One text frame from ``/ws``. ``type`` stays a plain string: unknown types are legal."""

    type: str
    data: Mapping[str, Any]

    @property
    def prompt_id(self) -> str | None:
        """The prompt the message is about; None for broadcasts such as ``status``."""
        value = self.data.get("prompt_id")
        return value if isinstance(value, str) else None

    @property
    def is_prompt_end(self) -> bool:
        """``executing`` with ``node: null``: the server's last word on a prompt (sent after its
        history entry is written, on success and on failure alike)."""
        return (
            self.type == MessageType.EXECUTING
            and "node" in self.data
            and self.data["node"] is None
            and self.prompt_id is not None
        )


MAX_JSON_DEPTH = 64
"""The deepest nesting of arrays and objects a server answer may have. ComfyUI's deepest
(a ``/history`` entry holding a graph) is under 10 levels; deeper ones are hostile or broken, and
Python's parser and ``repr`` would die of ``RecursionError`` on them."""


def check_json_depth(body: Any, what: str) -> Any:
    """``body`` itself, or :class:`ComfyProtocolError` naming ``what`` when it nests deeper than
    :data:`MAX_JSON_DEPTH` levels."""
    if _depth_exceeds(body, MAX_JSON_DEPTH):
        raise json_too_deep(what)
    return body


def json_too_deep(what: str) -> ComfyProtocolError:
    """The error for an answer nested too deep (also for the parser's own ``RecursionError``)."""
    return ComfyProtocolError(
        f"{what} nests arrays or objects deeper than {MAX_JSON_DEPTH} levels; no ComfyUI answer "
        "does that - is this a ComfyUI server, or is something between us changing its answers?"
    )


def _depth_exceeds(body: Any, limit: int) -> bool:
    # Iterative on purpose: a recursive walk would hit the recursion limit it guards against.
    stack: list[tuple[Any, int]] = [(body, 1)]
    while stack:
        value, depth = stack.pop()
        if not isinstance(value, dict | list):
            continue
        if depth > limit:
            return True
        stack.extend(
            (child, depth + 1) for child in (value.values() if isinstance(value, dict) else value)
        )
    return False


def _shallow(text: str | bytes) -> bool:
    """Whether ``text`` has too few brackets to nest deeper than :data:`MAX_JSON_DEPTH` (the
    walk of :func:`check_json_depth`, for the ~30 small messages of every prompt, is skipped)."""
    if isinstance(text, bytes):
        return text.count(b"{") + text.count(b"[") <= MAX_JSON_DEPTH
    return text.count("{") + text.count("[") <= MAX_JSON_DEPTH


def parse_ws_message(text: str | bytes) -> WsMessage | None:
    """Parse one text frame; None for frames that are not ``{"type": str, "data": {...}}``
    (junk, and JSON nested too deep to be a message, are skipped like unknown types)."""
    try:
        body = json.loads(text)
        if not _shallow(text):
            body = check_json_depth(body, "a WebSocket message")
    except (ValueError, UnicodeDecodeError, RecursionError, ComfyProtocolError):
        return None
    if not isinstance(body, dict) or not isinstance(body.get("type"), str):
        return None
    data = body.get("data")
    return WsMessage(type=body["type"], data=data if isinstance(data, dict) else {})


@dataclass(frozen=True)
class ImageRef:
    """An image the server saved, as ``executed`` and ``/history`` name it (``/view`` params)."""

    filename: str
    subfolder: str = ""
    type: str = "output"


def parse_images(output: Mapping[str, Any]) -> list[ImageRef]:
    """The saved images of one node's output (``{"images": [{filename, subfolder, type}]}``).
    Previews (``type`` temp) are left out: they are not results."""
    refs = []
    for item in output.get("images") or ():
        if not isinstance(item, dict) or not isinstance(item.get("filename"), str):
            raise ComfyProtocolError(f"unreadable image entry in a node output: {item!r}")
        ref = ImageRef(item["filename"], str(item.get("subfolder") or ""), str(item.get("type")))
        if ref.type == "output":
            refs.append(ref)
    return refs


def parse_node_errors(node_errors: Mapping[str, Any]) -> list[NodeError]:
    """Flatten ``node_errors`` (``{id: {"errors": [...], "class_type": ...}}``) into one
    :class:`NodeError` per listed error."""
    found = []
    for node_id, entry in node_errors.items():
        entry = entry if isinstance(entry, dict) else {}
        class_type = str(entry.get("class_type", "?"))
        for err in entry.get("errors") or [{}]:
            extra = err.get("extra_info") or {}
            found.append(
                NodeError(
                    node_id=str(node_id),
                    class_type=class_type,
                    type=str(err.get("type", "unknown")),
                    message=str(err.get("message", "")),
                    details=str(err.get("details", "")),
                    input_name=extra.get("input_name") if isinstance(extra, dict) else None,
                )
            )
    return found


_NODE_ID_IN_TEXT = re.compile(r"Node ID '#([^']+)'")


@dataclass(frozen=True)
class PromptAccepted:
    """The body of a successful ``POST /prompt``."""

    prompt_id: str
    number: float


def parse_prompt_response(status_code: int, body: Any, *, server: str) -> PromptAccepted:
    """Read the answer to ``POST /prompt``: the accepted prompt, or :class:`PromptRejected`
    (a 400, and a 200 that still lists ``node_errors``, i.e. outputs the server dropped)."""
    if not isinstance(body, dict):
        raise ComfyProtocolError(
            f"POST /prompt at {server} answered {status_code} with a body that is not a JSON "
            f"object: {str(body)[:200]!r}"
        )
    node_errors = body.get("node_errors") or {}
    if status_code == 200 and not node_errors and isinstance(body.get("prompt_id"), str):
        return PromptAccepted(prompt_id=body["prompt_id"], number=float(body.get("number", 0)))
    if status_code not in (200, 400):
        raise ComfyProtocolError(f"POST /prompt at {server} answered {status_code}: {body!r:.300}")
    raise _rejection(status_code, body, node_errors)


def _rejection(status_code: int, body: Mapping[str, Any], node_errors: Any) -> PromptRejected:
    error = body.get("error") if isinstance(body.get("error"), dict) else {}
    assert isinstance(error, dict)
    errors = parse_node_errors(node_errors) if isinstance(node_errors, dict) else []
    error_type = str(error.get("type") or "prompt_outputs_failed_validation")
    message = str(error.get("message") or "the server dropped outputs that failed validation")
    details = str(error.get("details") or "")
    match = _NODE_ID_IN_TEXT.search(details)
    if not errors and match:
        # invalid_prompt names its node only in the text ("Node ID '#3'").
        errors = [NodeError(match.group(1), "?", error_type, message, details)]
    elif not errors and details:
        message = f"{message} ({details})"
    return PromptRejected(
        f"the server rejected the prompt ({error_type}): {message}",
        error_type=error_type,
        node_errors=errors,
        status_code=status_code,
        raw=body,
    )


def _is_out_of_memory(exception_type: str, message: str) -> bool:
    return "OutOfMemory" in exception_type or "out of memory" in message.lower()


def execution_error(data: Mapping[str, Any]) -> ExecutionFailed:
    """The exception for an ``execution_error`` message (or history message) of a prompt."""
    exception_type = str(data.get("exception_type", "unknown"))
    message = str(data.get("exception_message", ""))
    cls = OutOfMemory if _is_out_of_memory(exception_type, message) else ExecutionFailed
    node_id = data.get("node_id")
    node_type = data.get("node_type")
    return cls(
        prompt_id=str(data.get("prompt_id", "?")),
        node_id=None if node_id is None else str(node_id),
        node_type=None if node_type is None else str(node_type),
        exception_type=exception_type,
        exception_message=message,
    )


def execution_interrupted(data: Mapping[str, Any]) -> ExecutionInterrupted:
    """The exception for an ``execution_interrupted`` message of a prompt."""
    node_id = data.get("node_id")
    return ExecutionInterrupted(
        str(data.get("prompt_id", "?")), None if node_id is None else str(node_id)
    )


@dataclass(frozen=True)
class HistoryEntry:
    """One prompt's ``/history`` entry: how it ended and what it saved."""

    prompt_id: str
    status_str: str
    completed: bool
    images: tuple[ImageRef, ...] = ()
    messages: tuple[tuple[str, Mapping[str, Any]], ...] = field(default=())
    graph: Mapping[str, Any] | None = None
    """The graph the server ran (``prompt[2]`` of the entry), to tell whose prompt it was."""

    @property
    def seconds(self) -> float:
        """Server time from ``execution_start`` to ``execution_success``, by the timestamps
        (ms) of those messages in the entry; 0 when it lacks one."""
        stamps = {name: data.get("timestamp") for name, data in self.messages}
        start = _number(stamps.get(MessageType.EXECUTION_START))
        end = _number(stamps.get(MessageType.EXECUTION_SUCCESS))
        if start is None or end is None:
            return 0.0
        return max(0.0, (end - start) / 1000)

    def error(self) -> ExecutionFailed | ExecutionInterrupted | None:
        """The failure recorded for the prompt, or None when it succeeded."""
        for name, data in self.messages:
            if name == MessageType.EXECUTION_ERROR:
                return execution_error({"prompt_id": self.prompt_id, **data})
            if name == MessageType.EXECUTION_INTERRUPTED:
                return execution_interrupted({"prompt_id": self.prompt_id, **data})
        if self.status_str != "success":
            return ExecutionFailed(
                prompt_id=self.prompt_id,
                node_id=None,
                node_type=None,
                exception_type=self.status_str,
                exception_message="no detail in the history",
            )
        return None


def _number(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def parse_history(body: Any, prompt_id: str) -> HistoryEntry | None:
    """The entry of ``prompt_id`` in a ``/history/{id}`` body; None when the server has none
    (``{}``: the prompt is pending, running, or unknown - ask ``/queue`` which)."""
    if not isinstance(body, dict):
        raise ComfyProtocolError(f"/history/{prompt_id} is not a JSON object: {body!r:.200}")
    entry = body.get(prompt_id)
    if entry is None:
        return None
    try:
        status = entry.get("status") or {}
        images = [ref for out in (entry.get("outputs") or {}).values() for ref in parse_images(out)]
        messages = tuple(
            (str(m[0]), m[1] if isinstance(m[1], dict) else {})
            for m in status.get("messages") or ()
        )
        prompt = entry.get("prompt")
        graph = prompt[2] if isinstance(prompt, list) and len(prompt) > 2 else None
        return HistoryEntry(
            prompt_id=prompt_id,
            status_str=str(status.get("status_str", "unknown")),
            completed=bool(status.get("completed", False)),
            images=tuple(images),
            messages=messages,
            graph=graph if isinstance(graph, dict) else None,
        )
    except (AttributeError, IndexError, TypeError) as exc:
        raise ComfyProtocolError(f"unreadable /history entry for {prompt_id}: {exc}") from exc


@dataclass(frozen=True)
class QueueState:
    """``GET /queue``: the prompt ids running and pending (pending in no particular order)."""

    running: tuple[str, ...]
    pending: tuple[str, ...]


def parse_queue(body: Any) -> QueueState:
    """Read ``{"queue_running": [[number, id, graph, extra, outputs], ...], "queue_pending"}``."""
    try:
        return QueueState(
            running=tuple(str(item[1]) for item in body["queue_running"]),
            pending=tuple(str(item[1]) for item in body["queue_pending"]),
        )
    except (KeyError, IndexError, TypeError) as exc:
        raise ComfyProtocolError(f"unreadable /queue body: {str(body)[:200]!r}") from exc


def combo_options(object_info: Mapping[str, Any], class_type: str, input_name: str) -> list[str]:
    """The allowed values of a combo input, in both of ``/object_info``'s spellings:
    ``[[options...], {...}]`` and V3's ``["COMBO", {"options": [...]}]``. Empty when the
    class or input is not there."""
    node = object_info.get(class_type) or {}
    inputs = node.get("input") or {}
    spec = (inputs.get("required") or {}).get(input_name) or (inputs.get("optional") or {}).get(
        input_name
    )
    if not isinstance(spec, Sequence) or not spec:
        return []
    if isinstance(spec[0], list):
        return [str(v) for v in spec[0]]
    if spec[0] == "COMBO" and len(spec) > 1 and isinstance(spec[1], dict):
        return [str(v) for v in spec[1].get("options") or ()]
    return []
