"""Downloads from ``/view`` are bounded: a server that trickles bytes is cut off by a total
deadline (the HTTP timeout is per read), and an image over the size cap is refused, announced
or not. A transport-level fake server (``httpx.MockTransport``) sends the hostile answers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from comfyline.comfy.client import ComfyClient
from comfyline.comfy.protocol import ImageRef
from comfyline.errors import ComfyTimeout, ImageInvalid

REF = ImageRef("ComfyUI_00001_.png")


def _client(stream: AsyncIterator[bytes], **headers: str) -> ComfyClient:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/view"
        return httpx.Response(200, content=stream, headers=headers)

    http = httpx.AsyncClient(transport=httpx.MockTransport(handler), timeout=5.0)
    return ComfyClient("http://comfy.test", http, client_id="downloads")


async def _trickle() -> AsyncIterator[bytes]:
    yield b"\x89"
    await asyncio.Event().wait()  # the next byte never comes


async def test_a_download_that_trickles_is_cut_off_at_its_total_deadline() -> None:
    client = _client(_trickle())
    async with asyncio.timeout(10):  # the test's own bound: without the deadline it hangs
        with pytest.raises(ComfyTimeout, match=r"ComfyUI_00001_\.png .* longer than 0\.2 s"):
            await client.view(REF, timeout_s=0.2)


async def _many(chunks: int) -> AsyncIterator[bytes]:
    for _ in range(chunks):
        yield b"x" * 1024


async def test_an_image_over_the_cap_is_refused_while_it_streams() -> None:
    client = _client(_many(64))
    with pytest.raises(ImageInvalid, match="over 10000 bytes"):
        await client.view(REF, max_bytes=10_000)


async def test_an_image_announced_over_the_cap_is_refused_before_it_streams() -> None:
    client = _client(_many(1), **{"content-length": "99999999"})
    with pytest.raises(ImageInvalid, match="99999999 bytes, over 10000"):
        await client.view(REF, max_bytes=10_000)
