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
While it waits, the queue is looked at after ``status`` messages (at most once every
``queue_look_gap_s``) and every ``queue_check_s``: a prompt of ours that left the queue without
running was deleted (:class:`PromptDeleted`).
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
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Mapping
from types import TracebackType
from typing import Any, Self

import httpx

from comfyline.comfy.batch import (
    CANCEL_TIMEOUT_S,
    MAX_IN_FLIGHT,
    BatchRunner,
    Gate,
    OnPosted,
    OnSettled,
    Requests,
    unique,
)
from comfyline.comfy.client import ComfyClient, WsConnect
from comfyline.comfy.endpoint import Endpoint
from comfyline.comfy.fetch import fetch_images
from comfyline.comfy.prompts import PromptBook
from comfyline.comfy.protocol import PromptState
from comfyline.comfy.transport import AiohttpTransport
from comfyline.errors import ComfyError, ComfyUnavailable, ExecutionInterrupted, ImageInvalid
from comfyline.generation import GenerationRequest, GenerationResult
from comfyline.settings import Settings

__all__ = ["MAX_IN_FLIGHT", "ComfyUIAdapter", "Endpoint", "PromptState"]


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
        self._client: ComfyClient | None = None
        self._object_info: dict[str, Any] | None = None
        self._book = PromptBook(endpoint, lambda: self.client, clock=clock, sleep=sleep)
        self._runner = BatchRunner(self._book, self.cancel, clock)

    # --- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        e = self.endpoint
        if self._http is None:
            self._http = httpx.AsyncClient(
                transport=AiohttpTransport(),
                timeout=httpx.Timeout(e.http_timeout_s, connect=e.connect_timeout_s),
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
        await self._book.close()
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
        async with contextlib.aclosing(self._runner.run([request], None, None)) as results:
            async for result in results:
                if result.error is not None:
                    raise result.error
                return result
        raise AssertionError("generate_batch ended without a result")  # pragma: no cover

    def generate_batch(
        self,
        requests: Requests,
        *,
        gate: Gate | None = None,
        on_posted: OnPosted | None = None,
        on_settled: OnSettled | None = None,
        keep_pictures: bool = False,
    ) -> AsyncGenerator[GenerationResult]:
        """Run ``requests``, yielding each result as it finishes.

        At most :data:`MAX_IN_FLIGHT` prompts are on the server (one running, one waiting), so
        it never idles between images. ``gate`` is awaited before each prompt is posted (the
        place for pacing and pausing); if it raises, what is in flight still finishes and is
        yielded, then the error is raised. ``on_posted(request, prompt_id)`` is called once the
        server accepted a prompt, with the id the server knows it by. Per-request failures come
        back as results with ``error`` set; a server that is gone (past
        ``reconnect_timeout_s``) raises. ``on_settled()`` is awaited the moment the server has
        finished a prompt (or failed it), before its images are downloaded: where the guard
        reads the card's temperature at the prompt's peak. ``keep_pictures``: each image keeps
        the picture its check decoded (``GeneratedImage.picture``), for a caller that looks at
        the pixels (the quality checks) and would otherwise decode it again.
        """
        return self._runner.run(requests, gate, on_posted, on_settled, keep_pictures)

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
        if (prompt := self._book.inflight.get(prompt_id)) is not None:
            # A deleted prompt vanishes without a WS event: settle it ourselves.
            self._book.settle(prompt, ExecutionInterrupted(prompt_id))

    async def cancel_all(self) -> list[str]:
        """Take every prompt of ours off the server; the ids it cancelled.

        POSTs still on the wire are waited for first (a stop must not leave behind a prompt the
        server accepts a moment later), then each unsettled prompt is deleted and interrupted.
        Bounded by :data:`CANCEL_TIMEOUT_S` per step.
        """
        await self._posts_landed()
        ids = [p.prompt_id for p in self._book.inflight.values() if p.posted]
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
        if self._runner.posting:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(CANCEL_TIMEOUT_S, self.endpoint.http_timeout_s)):
                    await asyncio.gather(*list(self._runner.posting), return_exceptions=True)

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
            fetched = await fetch_images(self._book, request, unique(list(entry.images)), graph)
        except ImageInvalid as exc:
            return GenerationResult(request=request, prompt_id=prompt_id, error=exc)
        return GenerationResult(
            request=request, prompt_id=prompt_id, images=tuple(fetched), seconds=entry.seconds
        )


def _canonical(graph: Mapping[str, Any]) -> str:
    return json.dumps(graph, sort_keys=True, default=str)
