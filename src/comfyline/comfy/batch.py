"""``BatchRunner``: what ``generate_batch`` does with each request - gate, post, wait, download
(:mod:`comfyline.comfy.fetch`).

At most :data:`MAX_IN_FLIGHT` prompts are on the server at once; a finisher task per prompt
waits for it, downloads and checks its images, and puts the result on the batch's queue, so
results come back in the order they finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
)
from typing import Any

from comfyline.comfy.client import ComfyClient
from comfyline.comfy.fetch import fetch_images
from comfyline.comfy.prompts import Prompt, PromptBook
from comfyline.comfy.protocol import ImageRef
from comfyline.errors import (
    ComfyError,
    ComfyTimeout,
    ExecutionFailed,
    ExecutionInterrupted,
    ImageInvalid,
    PromptRejected,
)
from comfyline.generation import GenerationRequest, GenerationResult

__all__ = [
    "CANCEL_TIMEOUT_S",
    "MAX_IN_FLIGHT",
    "BatchRunner",
    "Gate",
    "OnPosted",
    "OnSettled",
    "Requests",
]

MAX_IN_FLIGHT = 2
"""Prompts on the server at once per adapter: one running, one waiting behind it."""
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

Gate = Callable[[], Awaitable[None]]
OnPosted = Callable[[GenerationRequest, str], None]
OnSettled = Callable[[], Awaitable[None]]
Requests = Iterable[GenerationRequest] | AsyncIterable[GenerationRequest]


class _End:
    """Marks the end of a batch's result stream."""


class BatchRunner:
    """Runs batches of requests through one adapter's :class:`PromptBook`.

    ``cancel`` takes a prompt off the server (the adapter's :meth:`cancel`).
    """

    def __init__(
        self,
        book: PromptBook,
        cancel: Callable[[str], Awaitable[None]],
        clock: Callable[[], float],
    ) -> None:
        self._book = book
        self._cancel = cancel
        self.endpoint = book.endpoint
        self.url = book.url
        self._clock = clock
        self.posting: set[asyncio.Task[Any]] = set()
        """POSTs on the wire (a stop waits for their answers)."""

    @property
    def client(self) -> ComfyClient:
        return self._book.client

    async def run(
        self,
        requests: Requests,
        gate: Gate | None,
        on_posted: OnPosted | None,
        on_settled: OnSettled | None = None,
        keep_pictures: bool = False,
    ) -> AsyncGenerator[GenerationResult]:
        out: asyncio.Queue[GenerationResult | BaseException | _End] = asyncio.Queue()
        feeder = asyncio.create_task(
            self._feed(requests, gate, on_posted, on_settled, out, keep_pictures)
        )
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
        requests: Requests,
        gate: Gate | None,
        on_posted: OnPosted | None,
        on_settled: OnSettled | None,
        out: asyncio.Queue[GenerationResult | BaseException | _End],
        keep_pictures: bool,
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
                    task = asyncio.create_task(
                        self._finish(request, prompt, slots, out, stop, on_settled, keep_pictures)
                    )
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
    ) -> Prompt | None:
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
        prompt: Prompt,
        slots: asyncio.Semaphore,
        out: asyncio.Queue[GenerationResult | BaseException | _End],
        stop: asyncio.Event,
        on_settled: OnSettled | None,
        keep_pictures: bool,
    ) -> None:
        posted_at = self._clock()
        try:
            try:
                await self._wait(prompt)
            except _PER_REQUEST_ERRORS:
                await _settled(on_settled)
                raise
            finally:
                slots.release()  # the server is done with it: let the next one in at once
            await _settled(on_settled)  # before the downloads: the moment the server finished
            result = await self._outcome(request, prompt, posted_at, keep_pictures)
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

    async def _submit(self, request: GenerationRequest, prompt_id: str) -> Prompt:
        graph = request.graph()
        await self._book.ensure_listener()
        prompt = Prompt(prompt_id, graph, asyncio.get_running_loop().create_future())
        prompt.future.add_done_callback(_retrieve)
        # Registered before the POST: with a fast server, messages can beat the POST's answer.
        self._book.inflight[prompt_id] = prompt
        # The POST runs as its own task, shielded: a stop (Ctrl-C) that arrives while it is on
        # the wire waits for its answer (see cancel_all) instead of leaving a prompt the server
        # accepts after we stopped looking.
        post = asyncio.ensure_future(
            self._book.retrying(lambda: self.client.post_prompt(graph, prompt_id=prompt_id))
        )
        self.posting.add(post)
        post.add_done_callback(self.posting.discard)
        try:
            accepted = await asyncio.shield(post)
        except PromptRejected as exc:
            self._book.forget(prompt)
            if exc.status_code == 200:
                # The server queued the outputs that passed; we do not want half a prompt.
                with contextlib.suppress(ComfyError):
                    await self._cancel(prompt_id)
            raise
        except asyncio.CancelledError:
            if not post.done():
                post.add_done_callback(lambda task: self._book.posted_late(prompt, task))
            else:
                self._book.posted_late(prompt, post)
            raise
        except BaseException:
            self._book.forget(prompt)
            raise
        self._book.posted(prompt, accepted.prompt_id)
        return prompt

    async def _wait(self, prompt: Prompt) -> None:
        """Until the server settles ``prompt``; interrupts and raises ComfyTimeout when it runs
        past its deadline, which starts when it starts executing."""
        budget = self._book.budget()
        try:
            async with asyncio.timeout(None) as deadline:
                prompt.deadline = deadline
                if prompt.started:
                    self._book.arm(prompt)
                await prompt.future
        except TimeoutError:
            if prompt.future.done() and not prompt.future.cancelled():
                return prompt.future.result()
            self._book.forget(prompt)
            with contextlib.suppress(ComfyError, TimeoutError):
                async with asyncio.timeout(CANCEL_TIMEOUT_S):
                    await self._cancel(prompt.prompt_id)
            raise ComfyTimeout(
                f"prompt {prompt.prompt_id} showed no progress for more than {budget:.1f} s "
                f"while it ran on {self.url} (stuck?); it was interrupted on the server",
                prompt_id=prompt.prompt_id,
            ) from None
        finally:
            prompt.deadline = None

    async def _outcome(
        self, request: GenerationRequest, prompt: Prompt, posted_at: float, keep_pictures: bool
    ) -> GenerationResult:
        images = unique(prompt.images)
        if not images:
            entry = await self._book.retrying(lambda: self.client.history(prompt.prompt_id))
            if entry is not None:
                if (error := entry.error()) is not None:
                    raise error
                images = unique(list(entry.images))
        fetched = await fetch_images(
            self._book, request, images, prompt.graph, keep_pictures=keep_pictures
        )
        if not prompt.cached:
            self._book.slowest_s = max(self._book.slowest_s or 0.0, prompt.seconds)
        return GenerationResult(
            request=request,
            prompt_id=prompt.prompt_id,
            images=tuple(fetched),
            seconds=prompt.seconds,
            wall_seconds=self._clock() - posted_at,
            cached=prompt.cached,
        )


async def _settled(on_settled: OnSettled | None) -> None:
    if on_settled is not None:
        await on_settled()


def _retrieve(future: asyncio.Future[None]) -> None:
    # A waiter that was itself cancelled never reads its prompt's error; read it here, so
    # asyncio does not print "Future exception was never retrieved" after a clean stop.
    if not future.cancelled():
        future.exception()


def unique(refs: list[ImageRef]) -> list[ImageRef]:
    return list(dict.fromkeys(refs))


async def _aiter(items: Requests) -> AsyncIterator[GenerationRequest]:
    if isinstance(items, AsyncIterable):
        async for item in items:
            yield item
    else:
        for item in items:
            yield item
