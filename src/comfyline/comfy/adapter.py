"""``ComfyUIAdapter``: requests in, checked image bytes out, on one ComfyUI server.

Transport and protocol only: the adapter posts graphs, follows them on the WebSocket, and
downloads and checks what they made. Choosing checkpoints, writing files, retrying and deciding
what an out-of-memory error means belong to the pipeline and its scheduler.

How a prompt travels:

1. our WebSocket (``/ws?clientId=<ours>``) is open before anything is posted;
2. the prompt is registered, then posted with our client_id and its prompt_id (a server that
   assigns its own id is followed: the prompt is re-filed under it and ``on_posted`` says so);
3. one listener task reads the socket and files every message under its prompt_id (progress is
   broadcast to every socket, so anything not ours is dropped); ``executing`` with ``node: null``
   settles the prompt: failed if ``execution_error``/``execution_interrupted`` came before it;
4. the images named in ``executed`` (``/history`` as fallback) are fetched through ``/view``
   (each with a total deadline and a size cap) and checked: they decode, have the size the graph
   makes, and are exactly as many as the batch.

A prompt's deadline (the watchdog) starts when it starts executing (``execution_start``), never
while it waits behind someone else's work, and starts again with every sign of progress
(``executing``, ``progress``, ``progress_state``, ``executed``): a prompt of ours that shows none
for the budget (``first_prompt_timeout_s``, later ``prompt_timeout_factor`` times the slowest
prompt so far, at least ``min_prompt_timeout_s``) is interrupted - ``/interrupt`` names its
prompt_id, so another client's prompt is never touched - and fails with :class:`ComfyTimeout`.
While it waits, the queue is looked at on every ``status`` message and every ``queue_check_s``:
a prompt of ours that left the queue without running was deleted (:class:`PromptDeleted`).
When the socket drops, the listener reconnects (backoff bounded by ``reconnect_timeout_s``)
and reconciles every prompt in flight from ``/queue`` and ``/history``: still queued -> keep
waiting; in history -> settled from there; in neither (the server restarted and lost it) ->
posted again under the same prompt_id.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Mapping,
)
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self, TypeVar

import httpx
import websockets

from comfyline.comfy.backoff import retry_unavailable
from comfyline.comfy.client import ComfyClient, WsConnect, WsConnection
from comfyline.comfy.endpoint import Endpoint
from comfyline.comfy.protocol import (
    HistoryEntry,
    ImageRef,
    MessageType,
    PromptState,
    WsMessage,
    execution_error,
    execution_interrupted,
    parse_images,
    parse_ws_message,
)
from comfyline.errors import (
    ComfyError,
    ComfyProtocolError,
    ComfyTimeout,
    ComfyUnavailable,
    DownloadCutShort,
    ExecutionFailed,
    ExecutionInterrupted,
    ImageInvalid,
    PromptDeleted,
    PromptRejected,
)
from comfyline.generation import GeneratedImage, GenerationRequest, GenerationResult
from comfyline.images import check_image
from comfyline.settings import Settings
from comfyline.workflows import Graph, output_size

__all__ = ["MAX_IN_FLIGHT", "ComfyUIAdapter", "Endpoint", "PromptState"]

MAX_IN_FLIGHT = 2
"""Prompts on the server at once per adapter: one running, one waiting behind it."""
DOWNLOAD_TRIES = 3
"""How often an image download cut short is tried in all before the image counts as bad."""
CANCEL_TIMEOUT_S = 5.0
"""How long cancelling our prompts waits for the server before giving up on it."""
_PER_REQUEST_ERRORS = (
    PromptRejected,
    ExecutionFailed,
    ExecutionInterrupted,
    ImageInvalid,
    ComfyTimeout,
)
"""Failures of one request; anything else (the server gone, not ComfyUI) ends a batch."""

_PROGRESS = frozenset(
    {MessageType.EXECUTING, MessageType.PROGRESS, MessageType.PROGRESS_STATE, MessageType.EXECUTED}
)
"""Messages that show a running prompt of ours moving: each restarts its deadline."""

T = TypeVar("T")
Gate = Callable[[], Awaitable[None]]
OnPosted = Callable[[GenerationRequest, str], None]
_Requests = Iterable[GenerationRequest] | AsyncIterable[GenerationRequest]


@dataclass(eq=False)
class _Prompt:
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


class _End:
    """Marks the end of a batch's result stream."""


class ComfyUIAdapter:
    """The one way comfyline talks to a ComfyUI server. Use it as an async context manager.

    >>> async with ComfyUIAdapter(Endpoint("http://127.0.0.1:8188")) as comfy:  # doctest: +SKIP
    ...     result = await comfy.generate(request)

    ``endpoint`` is an :class:`Endpoint`, a URL, or :class:`Settings` (its URL and timeouts).
    ``http`` and ``ws_connect`` replace the network objects (tests); ``clock`` and ``sleep``
    drive deadlines and backoff. The WebSocket is opened on the first prompt; leaving the
    ``async with`` block cancels our prompts still on the server and closes it.
    """

    def __init__(
        self,
        endpoint: Endpoint | Settings | str,
        *,
        http: httpx.AsyncClient | None = None,
        ws_connect: WsConnect | None = None,
        client_id: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if isinstance(endpoint, Settings):
            endpoint = Endpoint.from_settings(endpoint)
        elif isinstance(endpoint, str):
            endpoint = Endpoint(endpoint)
        self.endpoint = endpoint
        self.url: str = endpoint.url
        self.client_id = client_id or f"comfyline-{uuid.uuid4().hex}"
        self._http = http
        self._own_http = http is None
        self._ws_connect = ws_connect
        self._clock = clock
        self._sleep = sleep
        self._client: ComfyClient | None = None
        self._object_info: dict[str, Any] | None = None
        self._ws: WsConnection | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._listener_lock = asyncio.Lock()
        self._inflight: dict[str, _Prompt] = {}
        self._posting: set[asyncio.Task[Any]] = set()
        self._queue_changed = asyncio.Event()
        self._slowest_s: float | None = None

    # --- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        e = self.endpoint
        if self._http is None:
            self._http = httpx.AsyncClient(
                timeout=httpx.Timeout(e.http_timeout_s, connect=e.connect_timeout_s)
            )
        self._client = ComfyClient(
            self.url,
            self._http,
            client_id=self.client_id,
            ws_connect=self._ws_connect,
            ws_open_timeout_s=e.connect_timeout_s,
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is not None and not isinstance(exc, ComfyUnavailable):
            with contextlib.suppress(ComfyError, TimeoutError):
                await self.cancel_all()  # nothing of ours keeps the server busy after we left
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await self._ws.close()
            self._ws = None
        if self._own_http and self._http is not None:
            await self._http.aclose()
            self._http = None

    @property
    def client(self) -> ComfyClient:
        """The low-level client (only inside ``async with``)."""
        if self._client is None:
            raise RuntimeError("use ComfyUIAdapter inside 'async with ComfyUIAdapter(...)'")
        return self._client

    # --- server facts ------------------------------------------------------------------------

    async def check_ready(self) -> dict[str, Any]:
        """``GET /system_stats``: :class:`ComfyUnavailable` when nothing answers at the URL,
        :class:`ComfyProtocolError` when what answers is not ComfyUI."""
        return await self.client.system_stats()

    async def system_stats(self) -> dict[str, Any]:
        """The server's ``/system_stats`` (versions, RAM, VRAM per device)."""
        return await self.client.system_stats()

    async def object_info(self) -> dict[str, Any]:
        """Every node class the server knows (``/object_info``), fetched once."""
        if self._object_info is None:
            self._object_info = await self.client.object_info()
        return self._object_info

    # --- generation --------------------------------------------------------------------------

    async def generate(self, request: GenerationRequest) -> GenerationResult:
        """Make one request's images; raises the typed error when it fails."""
        async with contextlib.aclosing(self._batch([request], None, None)) as results:
            async for result in results:
                if result.error is not None:
                    raise result.error
                return result
        raise AssertionError("generate_batch ended without a result")  # pragma: no cover

    def generate_batch(
        self,
        requests: _Requests,
        *,
        gate: Gate | None = None,
        on_posted: OnPosted | None = None,
    ) -> AsyncGenerator[GenerationResult]:
        """Run ``requests``, yielding each result as it finishes.

        At most :data:`MAX_IN_FLIGHT` prompts are on the server (one running, one waiting), so
        it never idles between images. ``gate`` is awaited before each prompt is posted (the
        place for pacing and pausing); if it raises, what is in flight still finishes and is
        yielded, then the error is raised. ``on_posted(request, prompt_id)`` is called once the
        server accepted a prompt, with the id the server knows it by. Per-request failures come
        back as results with ``error`` set; a server that is gone (past
        ``reconnect_timeout_s``) raises.
        """
        return self._batch(requests, gate, on_posted)

    async def _batch(
        self, requests: _Requests, gate: Gate | None, on_posted: OnPosted | None
    ) -> AsyncGenerator[GenerationResult]:
        out: asyncio.Queue[GenerationResult | BaseException | _End] = asyncio.Queue()
        feeder = asyncio.create_task(self._feed(requests, gate, on_posted, out))
        try:
            while True:
                item = await out.get()
                if isinstance(item, _End):
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            feeder.cancel()
            await asyncio.gather(feeder, return_exceptions=True)

    async def _feed(
        self,
        requests: _Requests,
        gate: Gate | None,
        on_posted: OnPosted | None,
        out: asyncio.Queue[GenerationResult | BaseException | _End],
    ) -> None:
        slots = asyncio.Semaphore(MAX_IN_FLIGHT)
        stop = asyncio.Event()
        finishers: set[asyncio.Task[None]] = set()
        failure: BaseException | None = None
        try:
            try:
                async for request in _aiter(requests):
                    await slots.acquire()
                    if stop.is_set():
                        break
                    prompt = await self._release(request, gate, slots, out)
                    if prompt is None:
                        continue
                    if on_posted is not None:
                        on_posted(request, prompt.prompt_id)
                    task = asyncio.create_task(self._finish(request, prompt, slots, out, stop))
                    finishers.add(task)
                    task.add_done_callback(finishers.discard)
            except Exception as exc:
                failure = exc
            await asyncio.gather(*list(finishers))
        except asyncio.CancelledError:
            for task in list(finishers):
                task.cancel()
            await asyncio.gather(*list(finishers), return_exceptions=True)
            raise
        out.put_nowait(failure if failure is not None else _End())

    async def _release(
        self,
        request: GenerationRequest,
        gate: Gate | None,
        slots: asyncio.Semaphore,
        out: asyncio.Queue[GenerationResult | BaseException | _End],
    ) -> _Prompt | None:
        """Pass the gate and post; a rejected prompt becomes a result at once."""
        prompt_id = request.prompt_id or str(uuid.uuid4())
        try:
            if gate is not None:
                await gate()
            return await self._submit(request, prompt_id)
        except PromptRejected as exc:
            slots.release()
            out.put_nowait(GenerationResult(request=request, prompt_id=prompt_id, error=exc))
            return None
        except BaseException:
            slots.release()
            raise

    async def _finish(
        self,
        request: GenerationRequest,
        prompt: _Prompt,
        slots: asyncio.Semaphore,
        out: asyncio.Queue[GenerationResult | BaseException | _End],
        stop: asyncio.Event,
    ) -> None:
        posted_at = self._clock()
        try:
            try:
                await self._wait(prompt)
            finally:
                slots.release()  # the server is done with it: let the next one in at once
            result = await self._outcome(request, prompt, posted_at)
        except _PER_REQUEST_ERRORS as exc:
            result = GenerationResult(
                request=request,
                prompt_id=prompt.prompt_id,
                seconds=prompt.seconds,
                wall_seconds=self._clock() - posted_at,
                error=exc,
            )
        except Exception as exc:
            stop.set()
            out.put_nowait(exc)
            return
        out.put_nowait(result)

    async def _submit(self, request: GenerationRequest, prompt_id: str) -> _Prompt:
        graph = request.graph()
        await self._ensure_listener()
        prompt = _Prompt(prompt_id, graph, asyncio.get_running_loop().create_future())
        prompt.future.add_done_callback(_retrieve)
        # Registered before the POST: with a fast server, messages can beat the POST's answer.
        self._inflight[prompt_id] = prompt
        # The POST runs as its own task, shielded: a stop (Ctrl-C) that arrives while it is on
        # the wire waits for its answer (see cancel_all) instead of leaving a prompt the server
        # accepts after we stopped looking.
        post = asyncio.ensure_future(
            self._retrying(lambda: self.client.post_prompt(graph, prompt_id=prompt_id))
        )
        self._posting.add(post)
        post.add_done_callback(self._posting.discard)
        try:
            accepted = await asyncio.shield(post)
        except PromptRejected as exc:
            self._forget(prompt)
            if exc.status_code == 200:
                # The server queued the outputs that passed; we do not want half a prompt.
                with contextlib.suppress(ComfyError):
                    await self.cancel(prompt_id)
            raise
        except asyncio.CancelledError:
            if not post.done():
                post.add_done_callback(lambda task: self._posted_late(prompt, task))
            else:
                self._posted_late(prompt, post)
            raise
        except BaseException:
            self._forget(prompt)
            raise
        self._posted(prompt, accepted.prompt_id)
        return prompt

    def _posted(self, prompt: _Prompt, server_id: str) -> None:
        prompt.posted = True
        if server_id and server_id != prompt.prompt_id:
            # A server that ignores our prompt_id: follow the one it gave.
            self._inflight.pop(prompt.prompt_id, None)
            prompt.prompt_id = server_id
            self._inflight[server_id] = prompt

    def _posted_late(self, prompt: _Prompt, post: asyncio.Future[Any]) -> None:
        """A POST that finished after its caller was cancelled: keep the prompt known, so
        that :meth:`cancel_all` takes it off the server."""
        if post.cancelled() or post.exception() is not None:
            self._forget(prompt)
        else:
            self._posted(prompt, post.result().prompt_id)

    async def _wait(self, prompt: _Prompt) -> None:
        """Until the server settles ``prompt``; interrupts and raises ComfyTimeout when it runs
        past its deadline, which starts when it starts executing."""
        budget = self._budget()
        try:
            async with asyncio.timeout(None) as deadline:
                prompt.deadline = deadline
                if prompt.started:
                    self._arm(prompt)
                await prompt.future
        except TimeoutError:
            if prompt.future.done() and not prompt.future.cancelled():
                return prompt.future.result()
            self._forget(prompt)
            with contextlib.suppress(ComfyError, TimeoutError):
                async with asyncio.timeout(CANCEL_TIMEOUT_S):
                    await self.cancel(prompt.prompt_id)
            raise ComfyTimeout(
                f"prompt {prompt.prompt_id} showed no progress for more than {budget:.1f} s "
                f"while it ran on {self.url} (stuck?); it was interrupted on the server",
                prompt_id=prompt.prompt_id,
            ) from None
        finally:
            prompt.deadline = None

    async def _outcome(
        self, request: GenerationRequest, prompt: _Prompt, posted_at: float
    ) -> GenerationResult:
        images = _unique(prompt.images)
        if not images:
            entry = await self._retrying(lambda: self.client.history(prompt.prompt_id))
            if entry is not None:
                if (error := entry.error()) is not None:
                    raise error
                images = _unique(list(entry.images))
        fetched = await self._fetch(request, images, prompt.graph)
        if not prompt.cached:
            self._slowest_s = max(self._slowest_s or 0.0, prompt.seconds)
        return GenerationResult(
            request=request,
            prompt_id=prompt.prompt_id,
            images=tuple(fetched),
            seconds=prompt.seconds,
            wall_seconds=self._clock() - posted_at,
            cached=prompt.cached,
        )

    async def _fetch(
        self, request: GenerationRequest, refs: list[ImageRef], graph: Graph
    ) -> list[GeneratedImage]:
        """Download and check every image of a prompt: all good, or :class:`ImageInvalid`."""
        wanted = request.params.batch_size
        if len(refs) != wanted:
            saved = "no image" if not refs else f"{len(refs)} images"
            raise ImageInvalid(
                f"the server saved {saved} for a prompt that makes {wanted} (batch size "
                f"{wanted}); does the workflow end in exactly one SaveImage node?"
            )
        expected = output_size(graph)
        fetched = []
        for ref in refs:
            data = await self._download(ref)
            source = f"{ref.subfolder}/{ref.filename}".lstrip("/")
            width, height = await asyncio.to_thread(
                check_image, data, expected_size=expected, source=source
            )
            fetched.append(GeneratedImage(data, width, height, ref.filename, ref.subfolder))
        return fetched

    async def _download(self, ref: ImageRef) -> bytes:
        """One image's bytes; a download cut short is fetched again (the file is whole on the
        server), :data:`DOWNLOAD_TRIES` times at most."""
        for attempt in range(1, DOWNLOAD_TRIES + 1):
            try:
                return await self._retrying(
                    lambda: self.client.view(ref, timeout_s=self.endpoint.download_timeout_s)
                )
            except DownloadCutShort:
                if attempt == DOWNLOAD_TRIES:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    # --- the listener ------------------------------------------------------------------------

    async def _ensure_listener(self) -> None:
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
                await self._read(self._ws)
                try:
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
        prompt = self._inflight.get(message.prompt_id or "")
        if prompt is None or prompt.future.done():
            return  # someone else's prompt, or a broadcast
        data, kind = message.data, message.type
        if kind in _PROGRESS and prompt.started and not message.is_prompt_end:
            self._arm(prompt)  # the watchdog: stuck means no progress, not merely slow
        if kind == MessageType.EXECUTION_START:
            prompt.started = True
            _stamp(prompt, "start", data)
            self._arm(prompt)
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
            self._settle(prompt, prompt.error)

    def _settle(self, prompt: _Prompt, error: BaseException | None) -> None:
        self._forget(prompt)
        if not prompt.future.done():
            if error is None:
                prompt.future.set_result(None)
            else:
                prompt.future.set_exception(error)

    def _forget(self, prompt: _Prompt) -> None:
        if self._inflight.get(prompt.prompt_id) is prompt:
            del self._inflight[prompt.prompt_id]

    def _arm(self, prompt: _Prompt) -> None:
        if prompt.deadline is not None:
            prompt.deadline.reschedule(asyncio.get_running_loop().time() + self._budget())

    def _budget(self) -> float:
        e = self.endpoint
        if self._slowest_s is None:
            return e.first_prompt_timeout_s  # the first prompt may load the model
        return max(e.min_prompt_timeout_s, e.prompt_timeout_factor * self._slowest_s)

    def _fail_all(self, error: BaseException) -> None:
        for prompt in list(self._inflight.values()):
            self._settle(prompt, error)

    async def _reconnect(self) -> WsConnection:
        try:
            return await self._retrying(
                self.client.connect_ws, retry_on=(ComfyUnavailable, ComfyProtocolError)
            )
        except (ComfyUnavailable, ComfyProtocolError) as exc:
            raise ComfyUnavailable(
                f"the ComfyUI server at {self.url} went away and did not come back within "
                f"{self.endpoint.reconnect_timeout_s:g} s ({exc}); restart it, then run again "
                "(finished images are kept)"
            ) from exc

    async def _reconcile(self) -> None:
        """After a reconnect: settle, keep, or resend each prompt in flight (see module doc)."""
        try:
            queue = await self._retrying(self.client.queue)
            for prompt in list(self._inflight.values()):
                if not prompt.posted or prompt.future.done():
                    continue
                if prompt.prompt_id in queue.running:
                    prompt.started = True
                    self._arm(prompt)
                    continue
                if prompt.prompt_id in queue.pending:
                    continue
                entry = await self._retrying(lambda p=prompt: self.client.history(p.prompt_id))  # type: ignore[misc]
                if entry is not None:
                    self._settle_from(prompt, entry)
                else:
                    await self._resend(prompt)
        except ComfyError:
            return  # the server went away again: the next reconnect reconciles anew

    async def _watch_queue(self) -> None:
        """Notice a waiting prompt of ours that left the queue without running (deleted)."""
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.endpoint.queue_check_s):
                    await self._queue_changed.wait()
            self._queue_changed.clear()
            waiting = [p for p in self._inflight.values() if p.posted and not p.started]
            if waiting:
                with contextlib.suppress(ComfyError):
                    await self._check_waiting(waiting)

    async def _check_waiting(self, waiting: list[_Prompt]) -> None:
        queue = await self.client.queue()
        for prompt in waiting:
            if prompt.future.done() or prompt.started:
                continue
            if prompt.prompt_id in queue.running:
                prompt.started = True  # its execution_start went by unseen: its clock runs now
                self._arm(prompt)
            elif prompt.prompt_id not in queue.pending:
                entry = await self.client.history(prompt.prompt_id)
                if entry is not None:
                    self._settle_from(prompt, entry)
                elif not prompt.future.done() and not prompt.started:
                    self._settle(prompt, PromptDeleted(prompt.prompt_id, self.url))

    def _settle_from(self, prompt: _Prompt, entry: HistoryEntry) -> None:
        prompt.images = list(entry.images)
        self._settle(prompt, entry.error())

    async def _resend(self, prompt: _Prompt) -> None:
        prompt.images, prompt.error, prompt.cached_nodes = [], None, frozenset()
        prompt.started, prompt.server_ms = False, {}
        try:
            await self.client.post_prompt(prompt.graph, prompt_id=prompt.prompt_id)
        except PromptRejected as exc:
            self._settle(prompt, exc)

    async def _retrying(
        self,
        call: Callable[[], Awaitable[T]],
        *,
        retry_on: tuple[type[Exception], ...] = (ComfyUnavailable,),
    ) -> T:
        """``call()``, again with backoff while the server is unreachable (a restart)."""
        return await retry_unavailable(
            call,
            timeout_s=self.endpoint.reconnect_timeout_s,
            clock=self._clock,
            sleep=self._sleep,
            retry_on=retry_on,
        )

    # --- control -----------------------------------------------------------------------------

    async def free_memory(self, *, unload_models: bool = True) -> dict[str, Any]:
        """Ask the server to free its memory (``POST /free``; it acts between prompts), then
        return its ``/system_stats``. Freeing in our own process would free nothing on the GPU."""
        await self.client.free(unload_models=unload_models)
        return await self.client.system_stats()

    async def interrupt(self, prompt_id: str | None = None) -> None:
        """Interrupt the running prompt (only if it is ``prompt_id``, when given)."""
        await self.client.interrupt(prompt_id)

    async def cancel(self, prompt_id: str) -> None:
        """Take ``prompt_id`` off the server, pending or running.

        Delete first, then interrupt: a pending prompt is removed before it can start, and a
        running one ignores the delete and stops at the interrupt - no window between them.
        """
        await self.client.delete_from_queue([prompt_id])
        await self.client.interrupt(prompt_id)
        if (prompt := self._inflight.get(prompt_id)) is not None:
            # A deleted prompt vanishes without a WS event: settle it ourselves.
            self._settle(prompt, ExecutionInterrupted(prompt_id))

    async def cancel_all(self) -> list[str]:
        """Take every prompt of ours off the server; the ids it cancelled.

        POSTs still on the wire are waited for first (a stop must not leave behind a prompt the
        server accepts a moment later), then each unsettled prompt is deleted and interrupted.
        Bounded by :data:`CANCEL_TIMEOUT_S` per step.
        """
        await self._posts_landed()
        ids = [p.prompt_id for p in self._inflight.values() if p.posted]
        for prompt_id in ids:
            async with asyncio.timeout(CANCEL_TIMEOUT_S):
                await self.cancel(prompt_id)
        return ids

    async def cancel_prompts(self, prompt_ids: Iterable[str]) -> None:
        """Take these prompts of ours off the server, as :meth:`cancel_all` does for all (one
        adapter may serve several orders: each stops only its own)."""
        await self._posts_landed()
        for prompt_id in prompt_ids:
            async with asyncio.timeout(CANCEL_TIMEOUT_S):
                await self.cancel(prompt_id)

    async def _posts_landed(self) -> None:
        if self._posting:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(CANCEL_TIMEOUT_S, self.endpoint.http_timeout_s)):
                    await asyncio.gather(*list(self._posting), return_exceptions=True)

    async def prompt_state(self, prompt_id: str) -> PromptState:
        """Where ``prompt_id`` stands on the server (queue first: history answers ``{}`` for
        pending and unknown alike)."""
        queue = await self.client.queue()
        if prompt_id in queue.running:
            return "running"
        if prompt_id in queue.pending:
            return "pending"
        entry = await self.client.history(prompt_id)
        if entry is None:
            return "unknown"
        return "done" if entry.error() is None else "failed"

    async def collect(self, request: GenerationRequest, prompt_id: str) -> GenerationResult:
        """The result of a prompt the server already finished (from ``/history``), its images
        fetched and checked as :meth:`generate` does - to resume after our own process died.

        The history entry must hold the graph ``request`` makes: an entry under the same id
        made from another graph (another run, another project sharing the order id) is
        refused with :class:`ImageInvalid`, never taken for ours.
        """
        entry = await self.client.history(prompt_id)
        if entry is None:
            raise ComfyError(
                f"prompt {prompt_id} has no history on {self.url}: it is pending, running or "
                "unknown there (see prompt_state)"
            )
        if (error := entry.error()) is not None:
            return GenerationResult(request=request, prompt_id=prompt_id, error=error)
        graph = request.graph()
        try:
            if entry.graph is not None and _canonical(entry.graph) != _canonical(graph):
                raise ImageInvalid(
                    f"the history of prompt {prompt_id} on {self.url} holds another graph "
                    "than this slot's (another run or project used the same id); not collected"
                )
            fetched = await self._fetch(request, _unique(list(entry.images)), graph)
        except ImageInvalid as exc:
            return GenerationResult(request=request, prompt_id=prompt_id, error=exc)
        return GenerationResult(request=request, prompt_id=prompt_id, images=tuple(fetched))


def _retrieve(future: asyncio.Future[None]) -> None:
    # A waiter that was itself cancelled never reads its prompt's error; read it here, so
    # asyncio does not print "Future exception was never retrieved" after a clean stop.
    if not future.cancelled():
        future.exception()


def _stamp(prompt: _Prompt, key: str, data: Any) -> None:
    if isinstance(data.get("timestamp"), int | float):
        prompt.server_ms[key] = float(data["timestamp"])


def _mapping(value: object) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ComfyProtocolError(f"an 'executed' message's output is not an object: {value!r:.80}")
    return value


def _canonical(graph: Mapping[str, Any]) -> str:
    return json.dumps(graph, sort_keys=True, default=str)


def _unique(refs: list[ImageRef]) -> list[ImageRef]:
    return list(dict.fromkeys(refs))


async def _aiter(items: _Requests) -> AsyncIterator[GenerationRequest]:
    if isinstance(items, AsyncIterable):
        async for item in items:
            yield item
    else:
        for item in items:
            yield item
