"""The ComfyUI client's own HTTP transport (httpx's interface on aiohttp's wire), over real
sockets: a raw TCP server answers each request the way a broken server or network would, and
the adapter's errors say what happened, as they did on httpx's own transport."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest

from comfyline.comfy import ComfyUIAdapter
from comfyline.comfy.protocol import ImageRef
from comfyline.errors import ComfyProtocolError, ComfyTimeout, ComfyUnavailable, DownloadCutShort
from comfyline.settings import Settings

Answer = Callable[[bytes, asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def raw_server(answer: Answer) -> AsyncIterator[str]:
    """A server on a free port that reads each request's head (several on a connection kept
    alive) and lets ``answer`` reply."""
    hold: list[asyncio.StreamWriter] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        hold.append(writer)
        while not writer.is_closing():
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            await answer(head, writer)

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        for writer in hold:
            writer.close()
        server.close()
        await server.wait_closed()


def _response(body: bytes, *, length: int | None = None, kind: str = "application/json") -> bytes:
    size = len(body) if length is None else length
    head = f"HTTP/1.1 200 OK\r\nContent-Type: {kind}\r\nContent-Length: {size}\r\n\r\n"
    return head.encode() + body


STATS = json.dumps({"system": {"comfyui_version": "0.3.64"}, "devices": []}).encode()


async def test_a_whole_answer_is_read_and_the_request_carries_what_httpx_built() -> None:
    heads: list[bytes] = []

    async def answer(head: bytes, writer: asyncio.StreamWriter) -> None:
        heads.append(head)
        writer.write(_response(STATS))
        await writer.drain()

    async with raw_server(answer) as url, ComfyUIAdapter(Settings(comfyui_url=url)) as comfy:
        stats = await comfy.check_ready()
        body = await comfy.client.view(ImageRef("a b&c.png", "sub dir", "output"))
    assert stats["system"]["comfyui_version"] == "0.3.64" and body == STATS
    assert heads[0].startswith(b"GET /system_stats HTTP/1.1\r\n")
    # httpx quoted the query once; the transport sends it as it is, not quoted again.
    assert heads[1].startswith(b"GET /view?filename=a+b%26c.png&subfolder=sub+dir&type=output ")


async def test_an_answer_cut_short_is_the_server_going_away() -> None:
    async def answer(head: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(_response(STATS[:10], length=len(STATS)))
        await writer.drain()
        writer.close()

    async with raw_server(answer) as url, ComfyUIAdapter(Settings(comfyui_url=url)) as comfy:
        with pytest.raises(ComfyUnavailable, match="went away during GET"):
            await comfy.check_ready()


async def test_an_image_download_cut_short_says_so() -> None:
    async def answer(head: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(_response(b"\x89PNG\r\n\x1a\n" + b"x" * 100, length=5000, kind="image/png"))
        await writer.drain()
        writer.close()

    async with raw_server(answer) as url, ComfyUIAdapter(Settings(comfyui_url=url)) as comfy:
        with pytest.raises(DownloadCutShort, match="cut short after 108 bytes"):
            await comfy.client.view(ImageRef("a.png", "", "output"))


async def test_a_server_that_never_answers_times_out() -> None:
    async def answer(head: bytes, writer: asyncio.StreamWriter) -> None:
        await asyncio.Event().wait()  # read the request, say nothing

    async with raw_server(answer) as url:
        async with ComfyUIAdapter(Settings(comfyui_url=url, http_timeout_s=0.2)) as comfy:
            with pytest.raises(ComfyTimeout, match="GET .*/system_stats timed out"):
                await comfy.check_ready()


async def test_an_answer_that_is_not_http_is_the_server_going_away() -> None:
    async def answer(head: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")
        await writer.drain()
        writer.close()

    async with raw_server(answer) as url, ComfyUIAdapter(Settings(comfyui_url=url)) as comfy:
        with pytest.raises(ComfyUnavailable, match="went away during GET"):
            await comfy.check_ready()


async def test_a_json_answer_that_is_not_json_is_a_protocol_error() -> None:
    async def answer(head: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(_response(b"<html>router login</html>", kind="text/html"))
        await writer.drain()

    async with raw_server(answer) as url, ComfyUIAdapter(Settings(comfyui_url=url)) as comfy:
        with pytest.raises(ComfyProtocolError, match="not JSON"):
            await comfy.check_ready()
