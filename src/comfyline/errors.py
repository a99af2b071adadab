"""The one exception hierarchy of comfyline.

Every error we raise on purpose derives from :class:`ComfylineError`; the CLI catches that base
class alone, prints ``ErrorType: message`` and exits non-zero. Anything else is a bug and shows
a traceback. Foreign errors (httpx, websockets, sqlite3, yaml, pydantic) are translated where
they enter, with ``raise ... from exc``.

    ComfylineError
    ├── ConfigError              a setting or command-line value is unusable
    ├── OrderError               an order file is invalid (carries every problem found)
    ├── WorkflowError            a graph cannot be filled: a role is missing or ambiguous
    │   └── WorkflowCheckFailed  the filled graph does not fit the server's /object_info
    ├── ComfyError               talking to a ComfyUI server went wrong
    │   ├── ComfyUnavailable     nothing answers at the URL, or it went away and did not return
    │   ├── ComfyProtocolError   the server answered something we cannot read
    │   ├── ComfyTimeout         a call or a prompt ran past its deadline (a stuck prompt)
    │   ├── ModelNotFound        the checkpoint is not on the server
    │   ├── NoFittingBackend     no server of the run has what the order needs (one reason each)
    │   ├── PromptRejected       POST /prompt refused the graph (400, or 200 with node_errors)
    │   ├── ExecutionFailed      the server ran the prompt and it failed (execution_error)
    │   │   └── OutOfMemory      ... because the GPU (or CPU) ran out of memory
    │   ├── ExecutionInterrupted the prompt was interrupted (by us or by someone else)
    │   │   └── PromptDeleted    ... removed from the queue before it ran ("Clear queue")
    │   └── ImageInvalid         an image came back that does not decode or has the wrong size
    │       └── DownloadCutShort ... because its download ended early (fetched again)
    ├── GuardTripped             the GPU did not cool down in time; the order stopped cleanly
    ├── LedgerError              the order's SQLite ledger is unusable
    │   └── OrderLocked          another runner is working on the same order
    ├── OutputError              a result file (report, contact sheet, chart) cannot be written
    ├── DiskFull                 a file cannot be written: no space, a quota or a file size limit
    └── ExportError              an upload package for a marketplace cannot be made
        ├── MarketRefused        the marketplace does not accept AI-generated images
        └── PackageInvalid       files or rows break a marketplace's rules (carries every problem)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


class ComfylineError(Exception):
    """Base class of every error comfyline raises on purpose."""


class ConfigError(ComfylineError):
    """A setting or a command-line value cannot be used."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an input file, located as precisely as we can.

    ``str(problem)`` gives the editor-friendly ``file:line:column: field.path: message`` form.
    """

    file: str
    line: int | None
    column: int | None
    field: str
    message: str

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        field = f"{self.field}: " if self.field else ""
        return f"{where}: {field}{self.message}"


class OrderError(ComfylineError):
    """An order file is invalid. ``problems`` holds every problem found, not just the first."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class WorkflowError(ComfylineError):
    """A workflow graph cannot be filled with an order's values (a role missing or ambiguous)."""


class WorkflowCheckFailed(WorkflowError):
    """A filled graph does not fit what the server has installed. ``problems``: every one."""

    def __init__(self, server: str, problems: Sequence[str]) -> None:
        self.server = server
        self.problems = tuple(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(
            f"the workflow does not fit the ComfyUI server at {server} "
            f"({len(self.problems)} problem(s)):\n{lines}"
        )


class ComfyError(ComfylineError):
    """Talking to a ComfyUI server went wrong."""


class ComfyUnavailable(ComfyError):
    """Nothing answers at the server's URL, or the server went away and did not come back."""


class ComfyProtocolError(ComfyError):
    """The server answered something we cannot read (wrong URL, not ComfyUI, a new format)."""


class ComfyTimeout(ComfyError):
    """A call or a prompt ran past its deadline."""

    def __init__(self, message: str, *, prompt_id: str | None = None) -> None:
        self.prompt_id = prompt_id
        super().__init__(message)


class ModelNotFound(ComfyError):
    """The checkpoint asked for is not on the server. ``available`` lists those that are."""

    def __init__(
        self, name: str, available: Sequence[str], server: str, *, kind: str = "checkpoint"
    ) -> None:
        self.name = name
        self.available = tuple(available)
        listed = ", ".join(self.available) if self.available else "none"
        folder = {"checkpoint": "checkpoints", "upscale model": "upscale_models"}.get(kind, kind)
        super().__init__(
            f"{kind} {name!r} is not on the ComfyUI server at {server} "
            f"(available: {listed}); put it in ComfyUI's models/{folder} folder "
            "or name one of those"
        )


class NoFittingBackend(ComfyError):
    """No server of the run fits the order. ``reasons``: (server, why) for each one."""

    def __init__(self, reasons: Sequence[tuple[str, str]]) -> None:
        self.reasons = tuple(reasons)
        lines = "\n".join(f"  - {name}: {why}" for name, why in self.reasons)
        super().__init__(
            f"none of the {len(self.reasons)} ComfyUI servers can make this order:\n{lines}"
        )


@dataclass(frozen=True)
class NodeError:
    """One per-input error from ComfyUI's ``node_errors`` (or an execution error's node)."""

    node_id: str
    class_type: str
    type: str
    message: str
    details: str = ""
    input_name: str | None = None

    def __str__(self) -> str:
        where = f"node {self.node_id} ({self.class_type})"
        if self.input_name:
            where += f" input {self.input_name!r}"
        details = f": {self.details}" if self.details else ""
        return f"{where}: {self.type}: {self.message}{details}"


class PromptRejected(ComfyError):
    """POST /prompt refused the graph: a 400, or a 200 whose ``node_errors`` is not empty."""

    def __init__(
        self,
        message: str,
        *,
        error_type: str,
        node_errors: Sequence[NodeError] = (),
        status_code: int,
        raw: Mapping[str, Any] | None = None,
    ) -> None:
        self.error_type = error_type
        self.node_errors = tuple(node_errors)
        self.status_code = status_code
        self.raw = raw or {}
        detail = "; ".join(str(e) for e in self.node_errors)
        super().__init__(f"{message}{': ' + detail if detail else ''}")


class ExecutionFailed(ComfyError):
    """The server ran the prompt and a node raised (WS ``execution_error``)."""

    def __init__(
        self,
        *,
        prompt_id: str,
        node_id: str | None,
        node_type: str | None,
        exception_type: str,
        exception_message: str,
    ) -> None:
        self.prompt_id = prompt_id
        self.node_id = node_id
        self.node_type = node_type
        self.exception_type = exception_type
        self.exception_message = exception_message
        super().__init__(
            f"prompt {prompt_id} failed in node {node_id} ({node_type}): "
            f"{exception_type}: {exception_message.strip()}"
        )


class OutOfMemory(ExecutionFailed):
    """The prompt failed because the device ran out of memory."""


class ExecutionInterrupted(ComfyError):
    """The prompt was interrupted before it finished (``execution_interrupted``)."""

    def __init__(self, prompt_id: str, node_id: str | None = None) -> None:
        self.prompt_id = prompt_id
        self.node_id = node_id
        super().__init__(f"prompt {prompt_id} was interrupted at node {node_id}")


class PromptDeleted(ExecutionInterrupted):
    """Our prompt vanished from the server's queue before it ran: someone deleted it (the
    "Clear queue" button) or the server dropped it. Nothing was made; it can be sent again."""

    def __init__(self, prompt_id: str, server: str) -> None:
        self.prompt_id = prompt_id
        self.node_id = None
        ComfyError.__init__(
            self,
            f"prompt {prompt_id} was removed from the queue of {server} before it ran "
            "(someone cleared the queue or deleted it)",
        )


class ImageInvalid(ComfyError):
    """An image from /view does not decode, or is not the size that was asked for."""


class DownloadCutShort(ImageInvalid):
    """An image download ended before the server's Content-Length: fetched again, a few times."""


class GuardTripped(ComfylineError):
    """The hardware guard stopped the run: the card stayed too hot for too long."""


class LedgerError(ComfylineError):
    """The order's ledger (SQLite) cannot be opened or written."""


class LedgerGone(LedgerError):
    """The order's ledger was deleted or moved while a run wrote to it (its folder removed)."""


class OrderLocked(LedgerError):
    """Another runner holds the order's ledger."""


class OutputError(ComfylineError):
    """A result file (report, contact sheet, chart, image metadata) cannot be read or written."""


class DiskFull(ComfylineError):
    """A file (an image, the ledger, the report) cannot be written: the disk is full, a quota
    is used up, or a file size limit is reached. The run stops as interrupted; once there is
    space, the same command resumes it."""

    def __init__(self, message: str, *, path: str, free_bytes: int | None) -> None:
        super().__init__(message)
        self.path = path
        self.free_bytes = free_bytes


class ExportError(ComfylineError):
    """An upload package for a marketplace cannot be made."""


class MarketRefused(ExportError):
    """The marketplace does not accept AI-generated images; ``reason`` says where it says so."""

    def __init__(self, market: str, reason: str) -> None:
        self.market = market
        self.reason = reason
        super().__init__(f"{market} does not accept AI-generated images: {reason}")


@dataclass(frozen=True)
class ExportProblem:
    """One image (or row) that breaks one rule of one marketplace.

    ``str(problem)`` reads ``img_0003.png [adobe] title: 74 characters; the limit is 70``.
    """

    image: str
    market: str
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.image} [{self.market}] {self.field}: {self.message}"


class PackageInvalid(ExportError):
    """Files or rows break marketplaces' rules; nothing was written. ``problems``: every one."""

    def __init__(self, problems: Sequence[ExportProblem]) -> None:
        self.problems = tuple(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(
            f"{len(self.problems)} problem(s) with the upload package, nothing was written "
            f"(fix them, or skip the bad images):\n{lines}"
        )
