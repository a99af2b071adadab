"""``ComfyUIAdapter``: requests in, checked image files out, on one ComfyUI server.

How a prompt travels:

1. our WebSocket (``/ws?clientId=<ours>``) is open before anything is posted;
2. the prompt is registered, then posted with our client_id and its prompt_id;
3. one listener task reads the socket and files every message under its prompt_id (progress is
   broadcast to every socket, so anything not ours is dropped); ``executing`` with ``node: null``
   settles the prompt: failed if ``execution_error``/``execution_interrupted`` came before it;
4. the images named in ``executed`` (``/history`` as fallback) are fetched through ``/view``,
   checked and written atomically under the request's own file names.

When the socket drops, the listener reconnects (backoff bounded by ``reconnect_timeout_s``) and
reconciles every prompt in flight from ``/queue`` and ``/history`` - the only time history is
read: still queued -> keep waiting; in history -> settled from there; in neither (the server
restarted and lost it) -> posted again under the same prompt_id. A prompt that runs past its
deadline is interrupted on the server and fails with :class:`ComfyTimeout`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
)
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import httpx
import websockets

from comfyline.comfy.client import ComfyClient, WsConnect, WsConnection, check_url
from comfyline.comfy.protocol import (
    ImageRef,
    MessageType,
    PromptState,
    WsMessage,
    combo_options,
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
    ConfigError,
    ExecutionFailed,
    ExecutionInterrupted,
    ImageInvalid,
    ModelNotFound,
    OutOfMemory,
    PromptRejected,
)
from comfyline.generation import GeneratedImage, GenerationRequest, GenerationResult
from comfyline.images import check_image, sha256_hex, write_atomic
from comfyline.settings import Settings
from comfyline.workflows import Graph, build_graph, output_size

__all__ = ["MAX_IN_FLIGHT", "ComfyUIAdapter", "PromptState"]

MAX_IN_FLIGHT = 2
"""Prompts on the server at once per adapter: one running, one waiting behind it."""
_PER_REQUEST_ERRORS = (
    PromptRejected,
    ExecutionFailed,
    ExecutionInterrupted,
    ImageInvalid,
    ComfyTimeout,
)
"""Failures of one request; anything else (the server gone, not ComfyUI) ends a batch."""
_BACKOFF_FIRST_S = 0.05
_BACKOFF_MAX_S = 2.0

T = TypeVar("T")
Gate = Callable[[], Awaitable[None]]
_Requests = Iterable[GenerationRequest] | AsyncIterable[GenerationRequest]


@dataclass(eq=False)
class _Prompt:
    """A prompt we posted and wait for; filled in by the listener from WS messages."""

    prompt_id: str
    graph: Graph
    future: asyncio.Future[None]
    posted: bool = False
    images: list[ImageRef] = field(default_factory=list)
    error: ComfyError | None = None
    cached_nodes: frozenset[str] = frozenset()
    started_at: float | None = None
    ended_at: float | None = None
    server_ms: dict[str, float] = field(default_factory=dict)
    deadline: asyncio.Timeout | None = None

    @property
    def seconds(self) -> float:
        """Server time from execution_start to execution_success (local clock as fallback)."""
        if "start" in self.server_ms and "end" in self.server_ms:
            return max(0.0, (self.server_ms["end"] - self.server_ms["start"]) / 1000)
        if self.started_at is not None and self.ended_at is not None:
            return self.ended_at - self.started_at
        return 0.0

    @property
    def cached(self) -> bool:
        """Every node came from the server's cache: no new image was made."""
        return bool(self.cached_nodes) and set(self.graph) <= self.cached_nodes


class _End:
    """Marks the end of a batch's result stream."""


class ComfyUIAdapter:
    """The one way comfyline talks to a ComfyUI server. Use it as an async context manager.

    >>> async with ComfyUIAdapter(Settings()) as comfy:  # doctest: +SKIP
    ...     await comfy.check_ready()
    ...     result = await comfy.generate(request)

    ``http`` and ``ws_connect`` replace the network objects (tests); ``clock`` measures durations.
    The WebSocket is opened on the first prompt and closed on exit.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        http: httpx.AsyncClient | None = None,
        ws_connect: WsConnect | None = None,
        client_id: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.url: str = check_url(settings.comfyui_url)
        self.client_id = client_id or f"comfyline-{uuid.uuid4().hex}"
        self._http = http
        self._own_http = http is None
        self._ws_connect = ws_connect
        self._clock = clock
        self._client: ComfyClient | None = None
        self._object_info: dict[str, Any] | None = None
        self._ws: WsConnection | None = None
        self._listener: asyncio.Task[None] | None = None
        self._listener_lock = asyncio.Lock()
        self._inflight: dict[str, _Prompt] = {}
        self._slowest_s: float | None = None

    # --- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        s = self.settings
        if self._http is None:
            timeout = httpx.Timeout(s.http_timeout_s, connect=s.connect_timeout_s)
            self._http = httpx.AsyncClient(timeout=timeout)
        self._client = ComfyClient(
            self.url,
            self._http,
            client_id=self.client_id,
            ws_connect=self._ws_connect,
            ws_open_timeout_s=s.connect_timeout_s,
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._listener is not None:
            self._listener.cancel()
            await asyncio.gather(self._listener, return_exceptions=True)
            self._listener = None
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

    async def resolve_checkpoint(self, name: str | None) -> str:
        """The checkpoint to use: ``name`` if the server has it (else :class:`ModelNotFound`
        listing those it has); with ``name`` None, the server's only one."""
        available = combo_options(await self.object_info(), "CheckpointLoaderSimple", "ckpt_name")
        if name is not None:
            if name not in available:
                raise ModelNotFound(name, available, self.url)
            return name
        if len(available) == 1:
            return available[0]
        if not available:
            raise ModelNotFound("(any)", available, self.url)
        raise ConfigError(
            f"no checkpoint is configured and the ComfyUI server at {self.url} has "
            f"{len(available)}: {', '.join(available)}; choose one with --checkpoint NAME "
            "or COMFYLINE_CHECKPOINT"
        )

    async def check_request(self, request: GenerationRequest) -> None:
        """:class:`ConfigError` when the request's sampler or scheduler is not on the server."""
        info = await self.object_info()
        for input_name, value in (
            ("sampler_name", request.params.sampler),
            ("scheduler", request.params.scheduler),
        ):
            allowed = combo_options(info, "KSampler", input_name)
            if allowed and value not in allowed:
                raise ConfigError(
                    f"{input_name} {value!r} is not known to the ComfyUI server at {self.url} "
                    f"(allowed: {', '.join(allowed)})"
                )

    # --- generation --------------------------------------------------------------------------

    async def generate(self, request: GenerationRequest) -> GenerationResult:
        """Make one request's images; raises the typed error when it fails."""
        async with contextlib.aclosing(self._batch([request], None)) as results:
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
    ) -> AsyncIterator[GenerationResult]:
        """Run ``requests``, yielding each result as it finishes.

        At most :data:`MAX_IN_FLIGHT` prompts are on the server (one running, one waiting), so
        it never idles between images. ``gate`` is awaited before each prompt is posted (the
        place for pacing and pausing); if it raises, what is in flight still finishes and is
        yielded, then the error is raised. Per-request failures come back as results with
        ``error`` set; a server that is gone (past ``reconnect_timeout_s``) raises.
        """
        return self._batch(requests, gate)

    async def _batch(
        self, requests: _Requests, gate: Gate | None
    ) -> AsyncGenerator[GenerationResult]:
        out: asyncio.Queue[GenerationResult | BaseException | _End] = asyncio.Queue()
        feeder = asyncio.create_task(self._feed(requests, gate, out))
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
                    if prompt is not None:
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
        try:
            try:
                await self._wait(prompt)
            finally:
                slots.release()  # the server is done with it: let the next one in at once
            result = await self._outcome(request, prompt)
        except _PER_REQUEST_ERRORS as exc:
            if isinstance(exc, OutOfMemory):
                with contextlib.suppress(ComfyError):
                    await self.client.free(unload_models=True)
            result = GenerationResult(
                request=request, prompt_id=prompt.prompt_id, seconds=prompt.seconds, error=exc
            )
        except Exception as exc:
            stop.set()
            out.put_nowait(exc)
            return
        out.put_nowait(result)

    async def _submit(self, request: GenerationRequest, prompt_id: str) -> _Prompt:
        checkpoint = await self.resolve_checkpoint(request.checkpoint or self.settings.checkpoint)
        await self.check_request(request)
        graph = build_graph(request, checkpoint)
        await self._ensure_listener()
        prompt = _Prompt(prompt_id, graph, asyncio.get_running_loop().create_future())
        # Registered before the POST: with a fast server, messages can beat the POST's answer.
        self._inflight[prompt_id] = prompt
        try:
            await self._retrying(lambda: self.client.post_prompt(graph, prompt_id=prompt_id))
        except PromptRejected as exc:
            self._forget(prompt)
            if exc.status_code == 200:
                # The server queued the outputs that passed; we do not want half a prompt.
                with contextlib.suppress(ComfyError):
                    await self.cancel(prompt_id)
            raise
        except BaseException:
            self._forget(prompt)
            raise
        prompt.posted = True
        return prompt

    async def _wait(self, prompt: _Prompt) -> None:
        """Until the server settles ``prompt``; interrupts and raises ComfyTimeout past its
        deadline (counted from when it is first in line, restarted at execution_start)."""
        budget = self._budget()
        try:
            async with asyncio.timeout(None) as deadline:
                prompt.deadline = deadline
                if self._head() is prompt:
                    self._arm(prompt)
                await prompt.future
        except TimeoutError:
            if prompt.future.done() and not prompt.future.cancelled():
                return prompt.future.result()
            self._forget(prompt)
            with contextlib.suppress(ComfyError):
                await self.cancel(prompt.prompt_id)
            raise ComfyTimeout(
                f"prompt {prompt.prompt_id} did not finish within {budget:.1f} s on {self.url} "
                "(stuck?); it was interrupted on the server",
                prompt_id=prompt.prompt_id,
            ) from None
        finally:
            prompt.deadline = None

    async def _outcome(self, request: GenerationRequest, prompt: _Prompt) -> GenerationResult:
        images = _unique(prompt.images)
        if not images:
            entry = await self._retrying(lambda: self.client.history(prompt.prompt_id))
            if entry is not None:
                if (error := entry.error()) is not None:
                    raise error
                images = _unique(list(entry.images))
        if not images:
            raise ImageInvalid(
                f"prompt {prompt.prompt_id} finished but the server saved no image "
                "(does the workflow end in a SaveImage node?)"
            )
        written = await self._save(request, images, output_size(prompt.graph))
        if not prompt.cached:
            self._slowest_s = max(self._slowest_s or 0.0, prompt.seconds)
        return GenerationResult(
            request=request,
            prompt_id=prompt.prompt_id,
            images=tuple(written),
            seconds=prompt.seconds,
            cached=prompt.cached,
        )

    async def _save(
        self, request: GenerationRequest, refs: list[ImageRef], expected: tuple[int, int] | None
    ) -> list[GeneratedImage]:
        """Fetch and check every image first, then write them all (or none)."""
        blobs = [await self._retrying(partial(self.client.view, ref)) for ref in refs]
        paths = _local_paths(request, len(refs))
        return await asyncio.to_thread(_check_and_write, blobs, refs, paths, expected)

    # --- the listener ------------------------------------------------------------------------

    async def _ensure_listener(self) -> None:
        async with self._listener_lock:
            if self._listener is not None and not self._listener.done():
                return
            self._ws = await self.client.connect_ws()
            self._listener = asyncio.create_task(self._listen(), name="comfyline-ws-listener")

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
        prompt = self._inflight.get(message.prompt_id or "")
        if prompt is None or prompt.future.done():
            return  # someone else's prompt, or a broadcast
        data, kind = message.data, message.type
        if kind == MessageType.EXECUTION_START:
            prompt.started_at = self._clock()
            _stamp(prompt, "start", data)
            self._arm(prompt)
        elif kind == MessageType.EXECUTION_CACHED:
            prompt.cached_nodes = frozenset(str(n) for n in data.get("nodes") or ())
        elif kind == MessageType.EXECUTED:
            try:
                prompt.images.extend(parse_images(data.get("output") or {}))
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
        prompt.ended_at = self._clock()
        self._forget(prompt)
        if not prompt.future.done():
            if error is None:
                prompt.future.set_result(None)
            else:
                prompt.future.set_exception(error)

    def _forget(self, prompt: _Prompt) -> None:
        if self._inflight.get(prompt.prompt_id) is prompt:
            del self._inflight[prompt.prompt_id]
        if (head := self._head()) is not None:
            self._arm(head)

    def _head(self) -> _Prompt | None:
        return next(iter(self._inflight.values()), None)

    def _arm(self, prompt: _Prompt) -> None:
        if prompt.deadline is not None:
            prompt.deadline.reschedule(asyncio.get_running_loop().time() + self._budget())

    def _budget(self) -> float:
        s = self.settings
        if self._slowest_s is None:
            return s.first_prompt_timeout_s  # the first prompt may load the model
        return max(s.min_prompt_timeout_s, s.prompt_timeout_factor * self._slowest_s)

    def _fail_all(self, error: BaseException) -> None:
        for prompt in list(self._inflight.values()):
            self._settle(prompt, error)

    async def _reconnect(self) -> WsConnection:
        deadline = self._clock() + self.settings.reconnect_timeout_s
        delay = _BACKOFF_FIRST_S
        while True:
            try:
                return await self.client.connect_ws()
            except (ComfyUnavailable, ComfyProtocolError) as exc:
                if self._clock() + delay > deadline:
                    raise ComfyUnavailable(
                        f"the ComfyUI server at {self.url} went away and did not come back "
                        f"within {self.settings.reconnect_timeout_s:g} s ({exc}); restart it, "
                        "then run again (finished images are kept)"
                    ) from exc
            await asyncio.sleep(delay)
            delay = min(delay * 2, _BACKOFF_MAX_S)

    async def _reconcile(self) -> None:
        """After a reconnect: settle, keep, or resend each prompt in flight (see module doc)."""
        try:
            queue = await self._retrying(self.client.queue)
            queued = set(queue.running) | set(queue.pending)
            for prompt in list(self._inflight.values()):
                if not prompt.posted or prompt.prompt_id in queued or prompt.future.done():
                    continue
                entry = await self._retrying(partial(self.client.history, prompt.prompt_id))
                if entry is not None:
                    prompt.images = list(entry.images)
                    self._settle(prompt, entry.error())
                else:
                    await self._resend(prompt)
        except ComfyError:
            return  # the server went away again: the next reconnect reconciles anew

    async def _resend(self, prompt: _Prompt) -> None:
        prompt.images, prompt.error, prompt.cached_nodes = [], None, frozenset()
        prompt.started_at, prompt.server_ms = None, {}
        try:
            await self.client.post_prompt(prompt.graph, prompt_id=prompt.prompt_id)
        except PromptRejected as exc:
            self._settle(prompt, exc)

    async def _retrying(self, call: Callable[[], Awaitable[T]]) -> T:
        """``call()``, again with backoff while the server is unreachable (a restart), for up
        to ``reconnect_timeout_s``."""
        deadline = self._clock() + self.settings.reconnect_timeout_s
        delay = _BACKOFF_FIRST_S
        while True:
            try:
                return await call()
            except ComfyUnavailable:
                if self._clock() + delay > deadline:
                    raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, _BACKOFF_MAX_S)

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
        written as :meth:`generate` would - to resume after our own process died."""
        entry = await self.client.history(prompt_id)
        if entry is None:
            raise ComfyError(
                f"prompt {prompt_id} has no history on {self.url}: it is pending, running or "
                "unknown there (see prompt_state)"
            )
        if (error := entry.error()) is not None:
            return GenerationResult(request=request, prompt_id=prompt_id, error=error)
        graph = build_graph(request, request.checkpoint or self.settings.checkpoint or "")
        try:
            written = await self._save(request, _unique(list(entry.images)), output_size(graph))
        except ImageInvalid as exc:
            return GenerationResult(request=request, prompt_id=prompt_id, error=exc)
        return GenerationResult(request=request, prompt_id=prompt_id, images=tuple(written))


def _stamp(prompt: _Prompt, key: str, data: Any) -> None:
    if isinstance(data.get("timestamp"), int | float):
        prompt.server_ms[key] = float(data["timestamp"])


def _unique(refs: list[ImageRef]) -> list[ImageRef]:
    return list(dict.fromkeys(refs))


def _local_paths(request: GenerationRequest, count: int) -> list[Path]:
    """Our own names: ``{stem}.png`` alone, ``{stem}_{i}.png`` (i from 1) for several."""
    if count == 1:
        return [request.output_dir / f"{request.output_stem}.png"]
    return [request.output_dir / f"{request.output_stem}_{i}.png" for i in range(1, count + 1)]


def _check_and_write(
    blobs: list[bytes], refs: list[ImageRef], paths: list[Path], expected: tuple[int, int] | None
) -> list[GeneratedImage]:
    sizes = [
        check_image(
            blob, expected_size=expected, source=f"{ref.subfolder}/{ref.filename}".lstrip("/")
        )
        for blob, ref in zip(blobs, refs, strict=True)
    ]
    written: list[Path] = []
    try:
        for blob, path in zip(blobs, paths, strict=True):
            write_atomic(path, blob)
            written.append(path)
    except BaseException:
        for path in written:  # all of the request's images, or none
            path.unlink(missing_ok=True)
        raise
    return [
        GeneratedImage(
            path=path,
            width=w,
            height=h,
            sha256=sha256_hex(blob),
            server_filename=ref.filename,
            server_subfolder=ref.subfolder,
        )
        for path, (w, h), blob, ref in zip(paths, sizes, blobs, refs, strict=True)
    ]


async def _aiter(
    items: _Requests,
) -> AsyncIterator[GenerationRequest]:
    if isinstance(items, AsyncIterable):
        async for item in items:
            yield item
    else:
        for item in items:
            yield item
