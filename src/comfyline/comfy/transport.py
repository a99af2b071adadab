"""httpx's interface on aiohttp's wire: the HTTP transport of the ComfyUI client.

httpx's own transport (httpcore over h11, both pure Python) cost about 1 ms of the runner's CPU
per request - with a prompt posted and an image downloaded for every image, more than the
perceptual hash and the ledger together. aiohttp parses HTTP in C at a quarter of that. The
client keeps httpx's API and errors (tests still hand it ``httpx.MockTransport``); this module
turns aiohttp's errors into the httpx ones that ``ComfyClient`` translates, so that translation
stays one table:

=====================================================  ==========================
aiohttp                                                httpx
=====================================================  ==========================
``ConnectionTimeoutError``                             ``ConnectTimeout``
``ClientConnectorError`` (refused, no such host)       ``ConnectError``
``SocketTimeoutError``, ``ServerTimeoutError``         ``ReadTimeout``
``ServerDisconnectedError``, ``ClientPayloadError``,   ``RemoteProtocolError``
``ClientResponseError`` (a malformed answer)
any other ``ClientConnectionError`` (reset, broken     ``ReadError``
pipe, a connection closed under us)
``InvalidURL``, ``NonHttpUrlClientError``              ``InvalidURL``,
                                                       ``UnsupportedProtocol``
=====================================================  ==========================
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator

import aiohttp
import httpx
from yarl import URL

__all__ = ["AiohttpTransport"]

_CHUNK = 64 * 1024


class AiohttpTransport(httpx.AsyncBaseTransport):
    """Sends httpx requests through one ``aiohttp.ClientSession`` (made on first use, inside
    the running event loop; closed with the httpx client). Bodies are passed through
    undecoded: httpx decodes them, as it does on its own transport. Redirects are httpx's."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self._session is None:
            self._session = aiohttp.ClientSession(auto_decompress=False)
        timeouts = request.extensions.get("timeout", {})
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=timeouts.get("connect"), sock_read=timeouts.get("read")
        )
        body = await request.aread()
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers.raw]
        with _as_httpx(request):
            response = await self._session.request(
                request.method,
                URL(str(request.url), encoded=True),  # httpx has quoted it already
                headers=headers,
                data=body or None,
                timeout=timeout,
                allow_redirects=False,
                skip_auto_headers=("Accept-Encoding", "User-Agent", "Content-Type"),
            )
        return httpx.Response(
            status_code=response.status,
            headers=response.raw_headers,
            stream=_Body(response, request),
            request=request,
            extensions={"http_version": b"HTTP/1.1"},
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class _Body(httpx.AsyncByteStream):
    def __init__(self, response: aiohttp.ClientResponse, request: httpx.Request) -> None:
        self._response = response
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _as_httpx(self._request):
            async for chunk in self._response.content.iter_chunked(_CHUNK):
                yield chunk

    async def aclose(self) -> None:
        # Fully read: the connection goes back to the pool; otherwise it is closed.
        self._response.release()


@contextlib.contextmanager
def _as_httpx(request: httpx.Request) -> Iterator[None]:
    try:
        yield
    except aiohttp.ConnectionTimeoutError as exc:
        raise httpx.ConnectTimeout(_text(exc), request=request) from exc
    except aiohttp.ClientConnectorError as exc:
        raise httpx.ConnectError(_text(exc), request=request) from exc
    except (aiohttp.ServerTimeoutError, TimeoutError) as exc:
        raise httpx.ReadTimeout(_text(exc), request=request) from exc
    except (
        aiohttp.ServerDisconnectedError,
        aiohttp.ClientPayloadError,
        aiohttp.ClientResponseError,
    ) as exc:
        raise httpx.RemoteProtocolError(_text(exc), request=request) from exc
    except aiohttp.ClientConnectionError as exc:  # reset, broken pipe, closed under us
        raise httpx.ReadError(_text(exc), request=request) from exc
    except aiohttp.NonHttpUrlClientError as exc:
        raise httpx.UnsupportedProtocol(_text(exc), request=request) from exc
    except aiohttp.InvalidURL as exc:
        raise httpx.InvalidURL(_text(exc)) from exc
    except aiohttp.ClientError as exc:
        raise httpx.TransportError(_text(exc), request=request) from exc


def _text(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
