"""``PromptBook``: the prompts one adapter has on the server, and the WebSocket that follows them.

One listener task reads the socket and files every message under its prompt_id; a second
task watches the queue for a waiting prompt that was deleted. When the socket drops, the
listener reconnects and reconciles every prompt in flight (see :mod:`comfyline.comfy.adapter`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import websockets

from comfyline.comfy.backoff import retry_unavailable
from comfyline.comfy.client import ComfyClient, WsConnection
from comfyline.comfy.endpoint import Endpoint
from comfyline.comfy.protocol import (
    HistoryEntry,
    ImageRef,
    MessageType,
    WsMessage,
    execution_error,
    execution_interrupted,
    parse_images,
    parse_ws_message,
)
from comfyline.errors import (
    ComfyError,
    ComfyProtocolError,
    ComfyUnavailable,
    PromptDeleted,
    PromptRejected,
)
from comfyline.workflows import Graph

__all__ = ["Prompt", "PromptBook"]

T = TypeVar("T")

_PROGRESS = frozenset(
    {MessageType.EXECUTING, MessageType.PROGRESS, MessageType.PROGRESS_STATE, MessageType.EXECUTED}
)
"""Messages that show a running prompt of ours moving: each restarts its deadline."""


@dataclass(eq=False)
class Prompt:
    """A prompt we posted and wait for; filled in by the listener from WS messages."""

    prompt_id: str
    graph: Graph
    future: asyncio.Future[None]
    posted: bool = False
    started: bool = False
    images: list[ImageRef] = field(default_factory=list)
    error: ComfyError | None = None
    cached_nodes: frozenset[str] = frozenset()
    server_ms: dict[str, float] = field(default_factory=dict)
    deadline: asyncio.Timeout | None = None

    @property
    def seconds(self) -> float:
        """Server time from execution_start to execution_success (0 when not known)."""
        if "start" in self.server_ms and "end" in self.server_ms:
            return max(0.0, (self.server_ms["end"] - self.server_ms["start"]) / 1000)
        return 0.0

    @property
    def cached(self) -> bool:
        """Every node came from the server's cache: no new image was made."""
        return bool(self.cached_nodes) and set(self.graph) <= self.cached_nodes


class PromptBook:
    """Our prompts in flight on one server, kept up to date from its WebSocket.

    ``client`` returns the adapter's client (it exists only inside ``async with``). The
    listener starts with the first prompt (:meth:`ensure_listener`); :meth:`close` ends it.
    """

    def __init__(
        self,
        endpoint: Endpoint,
        client: Callable[[], ComfyClient],
        *,
        clock: Callable[[], float],
        sleep: Callable[[float], Awaitable[None]],
    ) -> None:
        self.endpoint = endpoint
        self.url = endpoint.url
        self._client = client
        self._clock = clock
        self._sleep = sleep
        self._ws: WsConnection | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._listener_lock = asyncio.Lock()
        self.inflight: dict[str, Prompt] = {}
        self._queue_changed = asyncio.Event()
        self._ws_up = False
        """The socket is open and what was in flight when it last dropped is reconciled."""
        self._drops: deque[float] = deque()
        """When the socket dropped since the last finished prompt (see _check_flapping)."""
        self.slowest_s: float | None = None
        """Server seconds of the slowest prompt that was not cached: sets the deadlines."""

    @property
    def client(self) -> ComfyClient:
        return self._client()

    async def close(self) -> None:
        """Stop the listener and close the socket."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await self._ws.close()
            self._ws = None

    def posted(self, prompt: Prompt, server_id: str) -> None:
        prompt.posted = True
        if server_id and server_id != prompt.prompt_id:
            # A server that ignores our prompt_id: follow the one it gave.
            self.inflight.pop(prompt.prompt_id, None)
            prompt.prompt_id = server_id
            self.inflight[server_id] = prompt

    def posted_late(self, prompt: Prompt, post: asyncio.Future[Any]) -> None:
        """A POST that finished after its caller was cancelled: keep the prompt known, so
        that the adapter's ``cancel_all`` takes it off the server."""
        if post.cancelled() or post.exception() is not None:
            self.forget(prompt)
        else:
            self.posted(prompt, post.result().prompt_id)

    async def ensure_listener(self) -> None:
        async with self._listener_lock:
            if self._tasks and not self._tasks[0].done():
                return
            for task in self._tasks:  # a listener that gave up: its queue watcher goes too
                task.cancel()
            self._ws = await self.client.connect_ws()
            self._tasks = [
                asyncio.create_task(self._listen(), name="comfyline-ws-listener"),
                asyncio.create_task(self._watch_queue(), name="comfyline-queue-watch"),
            ]

    async def _listen(self) -> None:
        try:
            while True:
                self._ws_up = True
                await self._read(self._ws)
                self._ws_up = False
                try:
                    self._drops.append(self._clock())
                    _check_flapping(self._drops, self.endpoint)
                    self._ws = await self._reconnect()
                except ComfyError as exc:
                    self._fail_all(exc)
                    return
                await self._reconcile()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug: let every waiter see it rather than hang
            self._fail_all(exc)
            raise

    async def _read(self, ws: WsConnection | None) -> None:
        """Dispatch messages until the socket closes."""
        assert ws is not None
        try:
            while True:
                raw = await ws.recv()
                if isinstance(raw, str) and (message := parse_ws_message(raw)) is not None:
                    self._on_message(message)
        except (websockets.ConnectionClosed, OSError):
            return

    def _on_message(self, message: WsMessage) -> None:
        if message.type == MessageType.STATUS:
            self._queue_changed.set()  # someone's prompt came or went: look at ours
            return
        prompt = self.inflight.get(message.prompt_id or "")
        if prompt is None or prompt.future.done():
            return  # someone else's prompt, or a broadcast
        data, kind = message.data, message.type
        if kind in _PROGRESS and prompt.started and not message.is_prompt_end:
            self.arm(prompt)  # the watchdog: stuck means no progress, not merely slow
        if kind == MessageType.EXECUTION_START:
            prompt.started = True
            _stamp(prompt, "start", data)
            self.arm(prompt)
        elif kind == MessageType.EXECUTION_CACHED:
            prompt.cached_nodes = frozenset(str(n) for n in data.get("nodes") or ())
        elif kind == MessageType.EXECUTED:
            try:
                prompt.images.extend(parse_images(_mapping(data.get("output"))))
            except ComfyProtocolError as exc:
                prompt.error = exc
        elif kind == MessageType.EXECUTION_SUCCESS:
            _stamp(prompt, "end", data)
        elif kind == MessageType.EXECUTION_ERROR:
            prompt.error = execution_error(data)
        elif kind == MessageType.EXECUTION_INTERRUPTED:
            prompt.error = execution_interrupted(data)
        elif message.is_prompt_end:
            self.settle(prompt, prompt.error)

    def settle(self, prompt: Prompt, error: BaseException | None) -> None:
        self.forget(prompt)
        if not prompt.future.done():
            if error is None:
                self._drops.clear()  # progress: a server that went away came back to work
                prompt.future.set_result(None)
            else:
                prompt.future.set_exception(error)

    def forget(self, prompt: Prompt) -> None:
        if self.inflight.get(prompt.prompt_id) is prompt:
            del self.inflight[prompt.prompt_id]

    def arm(self, prompt: Prompt) -> None:
        if prompt.deadline is not None:
            prompt.deadline.reschedule(asyncio.get_running_loop().time() + self.budget())

    def budget(self) -> float:
        e = self.endpoint
        if self.slowest_s is None:
            return e.first_prompt_timeout_s  # the first prompt may load the model
        return max(e.min_prompt_timeout_s, e.prompt_timeout_factor * self.slowest_s)

    def _fail_all(self, error: BaseException) -> None:
        for prompt in list(self.inflight.values()):
            self.settle(prompt, error)

    async def _reconnect(self) -> WsConnection:
        try:  # (a server coming up may answer the socket with an error page for a while)
            retry_on = (ComfyUnavailable, ComfyProtocolError)
            return await self.retrying(self.client.connect_ws, retry_on=retry_on)
        except ComfyProtocolError as exc:
            raise _gone(self.endpoint, exc) from exc

    async def _reconcile(self) -> None:
        """After a reconnect: settle, keep, or resend each prompt in flight (see module doc)."""
        posted = [p for p in self.inflight.values() if p.posted]  # later ones are not in `queue`
        try:
            queue = await self.retrying(self.client.queue)
            for prompt in posted:
                if prompt.future.done():
                    continue
                if prompt.prompt_id in queue.running:
                    prompt.started = True
                    self.arm(prompt)
                    continue
                if prompt.prompt_id in queue.pending:
                    continue
                entry = await self.retrying(lambda p=prompt: self.client.history(p.prompt_id))  # type: ignore[misc]
                if entry is not None:
                    self._settle_from(prompt, entry)
                else:
                    await self._resend(prompt)
        except ComfyProtocolError as exc:
            self._fail_all(exc)  # an answer we cannot read will not read better next time
        except ComfyError:
            return  # the server went away again: the next reconnect reconciles anew

    async def _watch_queue(self) -> None:
        """Notice a waiting prompt of ours that left the queue without running (deleted)."""
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.endpoint.queue_check_s):
                    await self._queue_changed.wait()
            self._queue_changed.clear()
            waiting = [p for p in self.inflight.values() if p.posted and not p.started]
            if waiting and self._ws_up:  # else the reconnect settles them (a restart is no delete)
                try:
                    await self._check_waiting(waiting)
                except ComfyProtocolError as exc:
                    for prompt in waiting:  # unreadable answers: not worth asking again
                        self.settle(prompt, exc)
                except ComfyError:
                    pass  # gone for now: the next look (or the reconnect) settles them
                await self._sleep(self.endpoint.queue_look_gap_s)

    async def _check_waiting(self, waiting: list[Prompt]) -> None:
        queue = await self.client.queue()
        for prompt in waiting:
            if prompt.future.done() or prompt.started:
                continue
            if prompt.prompt_id in queue.running:
                prompt.started = True  # its execution_start went by unseen: its clock runs now
                self.arm(prompt)
            elif prompt.prompt_id not in queue.pending:
                entry = await self.client.history(prompt.prompt_id)
                if entry is not None:
                    self._settle_from(prompt, entry)
                elif not prompt.future.done() and not prompt.started and self._ws_up:
                    self.settle(prompt, PromptDeleted(prompt.prompt_id, self.url))

    def _settle_from(self, prompt: Prompt, entry: HistoryEntry) -> None:
        prompt.images = list(entry.images)
        if not prompt.seconds and entry.seconds:  # its messages went by while we were away
            prompt.server_ms = {"start": 0.0, "end": entry.seconds * 1000}
        self.settle(prompt, entry.error())

    async def _resend(self, prompt: Prompt) -> None:
        prompt.images, prompt.error, prompt.cached_nodes = [], None, frozenset()
        prompt.started, prompt.server_ms = False, {}
        try:
            await self.client.post_prompt(prompt.graph, prompt_id=prompt.prompt_id)
        except PromptRejected as exc:
            self.settle(prompt, exc)

    async def retrying(
        self,
        call: Callable[[], Awaitable[T]],
        *,
        retry_on: tuple[type[Exception], ...] = (ComfyUnavailable,),
    ) -> T:
        """``call()``, again with backoff while the server is unreachable (a restart). Past
        the reconnect timeout every call says the same: the server went away (whichever of the
        socket, a POST or a download gives up first)."""
        try:
            return await retry_unavailable(
                call,
                timeout_s=self.endpoint.reconnect_timeout_s,
                clock=self._clock,
                sleep=self._sleep,
                retry_on=retry_on,
            )
        except ComfyUnavailable as exc:
            raise _gone(self.endpoint, exc) from exc


def _gone(endpoint: Endpoint, exc: ComfyError) -> ComfyUnavailable:
    return ComfyUnavailable(
        f"the ComfyUI server at {endpoint.url} went away and did not come back within "
        f"{endpoint.reconnect_timeout_s:g} s ({exc}); restart it, then run again "
        "(finished images are kept)"
    )


def _check_flapping(drops: deque[float], endpoint: Endpoint) -> None:
    """:class:`ComfyUnavailable` at the ``flap_reconnects``-th lost connection (``drops``, the
    last one now) within ``flap_window_s`` with no prompt finished in between: a server that
    keeps going away (an overheating card, a crash loop) would take the same prompts forever."""
    while drops[0] < drops[-1] - endpoint.flap_window_s:
        drops.popleft()
    if len(drops) >= endpoint.flap_reconnects:
        raise ComfyUnavailable(
            f"the ComfyUI server at {endpoint.url} went away {len(drops)} times within "
            f"{endpoint.flap_window_s:g} s without finishing a prompt (an overheating card? "
            "a crash? see its log); giving up instead of sending the same prompts again"
        )


def _stamp(prompt: Prompt, key: str, data: Any) -> None:
    if isinstance(data.get("timestamp"), int | float):
        prompt.server_ms[key] = float(data["timestamp"])


def _mapping(value: object) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ComfyProtocolError(f"an 'executed' message's output is not an object: {value!r:.80}")
    return value
