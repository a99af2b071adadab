"""``ComfyClient``: the low-level async client of one ComfyUI server, HTTP and WebSocket.

One method per route comfyline uses, each returning parsed protocol data (``protocol.py``) and
translating every foreign error (httpx, websockets, OSError) into our hierarchy at this boundary.
The network objects are injected (``http``, ``ws_connect``), like ``httpx.Client(transport=...)``:
tests pass ``httpx.AsyncClient(transport=httpx.MockTransport(handler))``. No business logic here:
no retries, no waiting, no files.
"""

from __future__ import annotations

import asyncio
import json
import mimetypes
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx
import websockets
from websockets.asyncio.client import connect as _ws_connect

from comfyline.comfy.protocol import (
    HistoryEntry,
    ImageRef,
    PromptAccepted,
    QueueState,
    check_json_depth,
    json_too_deep,
    parse_history,
    parse_prompt_response,
    parse_queue,
)
from comfyline.errors import (
    ComfyError,
    ComfyProtocolError,
    ComfyTimeout,
    ComfyUnavailable,
    ConfigError,
    DownloadCutShort,
    ImageInvalid,
)

MAX_IMAGE_BYTES = 256 * 1024 * 1024
"""Largest image ``/view`` may send (an 8192x8192 RGBA PNG stays well under)."""
MAX_WS_MESSAGE_BYTES = 64 * 1024 * 1024
"""Largest WebSocket frame accepted (preview frames are ~100 KB; history-sized errors ~1 MB)."""


class WsConnection(Protocol):
    """What we use of a WebSocket connection (``websockets.asyncio.client.ClientConnection``)."""

    async def recv(self) -> str | bytes: ...

    async def close(self) -> None: ...


WsConnect = Callable[[str], Awaitable[WsConnection]]
"""Opens a WebSocket to a URL; raises ``OSError``/``websockets`` errors/``TimeoutError``."""


def default_ws_connect(*, open_timeout_s: float, max_size: int = MAX_WS_MESSAGE_BYTES) -> WsConnect:
    """A :data:`WsConnect` on the ``websockets`` library with an open timeout and a size limit."""

    async def connect(url: str) -> WsConnection:
        # No permessage-deflate: ComfyUI's messages are a few hundred bytes of JSON, some thirty
        # of them per image; inflating each cost both ends more CPU than it saved on the wire.
        return await _ws_connect(
            url, open_timeout=open_timeout_s, max_size=max_size, compression=None
        )

    return connect


def check_url(url: str) -> str:
    """``url`` without its trailing slash; :class:`ConfigError` when it is not http(s)://host."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(
            f"the ComfyUI URL {url!r} is not an http(s) URL; write it like http://127.0.0.1:8188"
        )
    return url.rstrip("/")


class ComfyClient:
    """The routes of one ComfyUI server. ``client_id`` names our WebSocket: the server sends a
    prompt's messages only to the socket whose clientId matches the prompt's ``client_id``.

    >>> async with httpx.AsyncClient() as http:  # doctest: +SKIP
    ...     client = ComfyClient("http://127.0.0.1:8188", http, client_id="me")
    ...     stats = await client.system_stats()
    """

    def __init__(
        self,
        base_url: str,
        http: httpx.AsyncClient,
        *,
        client_id: str,
        ws_connect: WsConnect | None = None,
        ws_open_timeout_s: float = 5.0,
    ) -> None:
        self.base_url = check_url(base_url)
        self.client_id = client_id
        self._http = http
        self._ws_connect = ws_connect or default_ws_connect(open_timeout_s=ws_open_timeout_s)

    # --- WebSocket ---------------------------------------------------------------------------

    @property
    def ws_url(self) -> str:
        """``ws(s)://host/ws?clientId=...`` for this client."""
        scheme = "wss" if self.base_url.startswith("https") else "ws"
        return f"{scheme}{self.base_url[self.base_url.index(':') :]}/ws?clientId={self.client_id}"

    async def connect_ws(self) -> WsConnection:
        """Open our WebSocket. :class:`ComfyUnavailable` when nothing accepts it,
        :class:`ComfyProtocolError` when something answers that does not speak it."""
        try:
            return await self._ws_connect(self.ws_url)
        except websockets.InvalidStatus as exc:
            raise ComfyProtocolError(
                f"{self.ws_url} refused the WebSocket with HTTP {exc.response.status_code}; "
                "is this a ComfyUI server?"
            ) from exc
        except websockets.InvalidHandshake as exc:
            raise ComfyProtocolError(f"{self.ws_url}: WebSocket handshake failed: {exc}") from exc
        except (OSError, TimeoutError) as exc:
            raise ComfyUnavailable(
                f"cannot open the WebSocket {self.ws_url} ({type(exc).__name__}: {exc}); "
                "is ComfyUI running there?"
            ) from exc

    # --- HTTP routes -------------------------------------------------------------------------

    async def system_stats(self) -> dict[str, Any]:
        """``GET /system_stats``: versions, RAM, and per device VRAM."""
        body = await self._get_json("/system_stats")
        if not isinstance(body, dict) or not isinstance(body.get("system"), dict):
            raise ComfyProtocolError(
                f"{self.base_url}/system_stats answered JSON without a 'system' object; "
                "this does not look like ComfyUI - check the URL"
            )
        return body

    async def object_info(self, class_type: str | None = None) -> dict[str, Any]:
        """``GET /object_info[/{class}]``: the node classes the server knows (``{}`` if none)."""
        body = await self._get_json(f"/object_info/{class_type}" if class_type else "/object_info")
        if not isinstance(body, dict):
            raise ComfyProtocolError(f"{self.base_url}/object_info is not a JSON object")
        return body

    async def post_prompt(self, graph: Mapping[str, Any], *, prompt_id: str) -> PromptAccepted:
        """``POST /prompt`` with our client_id and ``prompt_id``; raises PromptRejected."""
        payload = {"prompt": graph, "client_id": self.client_id, "prompt_id": prompt_id}
        response = await self._send("POST", "/prompt", json=payload)
        return parse_prompt_response(
            response.status_code, self._decode(response, "/prompt"), server=self.base_url
        )

    async def history(self, prompt_id: str) -> HistoryEntry | None:
        """``GET /history/{id}``; None while pending or unknown (the server answers ``{}``)."""
        return parse_history(await self._get_json(f"/history/{prompt_id}"), prompt_id)

    async def queue(self) -> QueueState:
        """``GET /queue``: ids running and pending."""
        return parse_queue(await self._get_json("/queue"))

    async def view(
        self, ref: ImageRef, *, timeout_s: float | None = None, max_bytes: int = MAX_IMAGE_BYTES
    ) -> bytes:
        """``GET /view`` of one saved image; :class:`ImageInvalid` if missing, over
        ``max_bytes``, or shorter than the server announced; :class:`ComfyTimeout` when the
        whole download takes longer than ``timeout_s`` (the HTTP timeout is per read, so a
        server trickling one byte at a time would otherwise never end)."""
        params = {"filename": ref.filename, "subfolder": ref.subfolder, "type": ref.type}
        name = f"{ref.subfolder}/{ref.filename}".lstrip("/")
        try:
            async with asyncio.timeout(timeout_s):
                return await self._download(params, name, max_bytes)
        except TimeoutError:
            raise ComfyTimeout(
                f"downloading {name} from {self.base_url} took longer than {timeout_s:g} s"
            ) from None

    async def _download(self, params: dict[str, str], name: str, max_bytes: int) -> bytes:
        async with self._translate("GET", "/view"):
            async with self._http.stream("GET", self._url("/view"), params=params) as response:
                if response.status_code != 200:
                    raise ImageInvalid(
                        f"the server listed {name} but /view answered {response.status_code}"
                    )
                announced = response.headers.get("content-length", "")
                if announced.isdigit() and int(announced) > max_bytes:
                    raise ImageInvalid(f"{name} is {announced} bytes, over {max_bytes}")
                chunks, size = [], 0
                try:
                    async for chunk in response.aiter_bytes():
                        size += len(chunk)
                        if size > max_bytes:
                            raise ImageInvalid(f"{name} is over {max_bytes} bytes")
                        chunks.append(chunk)
                except httpx.RemoteProtocolError as exc:
                    raise DownloadCutShort(
                        f"the download of {name} was cut short after {size} bytes ({exc})"
                    ) from exc
                return b"".join(chunks)

    async def upload_image(
        self, name: str, data: bytes, *, subfolder: str = "", overwrite: bool = True
    ) -> ImageRef:
        """``POST /upload/image``: store an image in the server's input folder (for LoadImage).

        Multipart field ``image`` plus ``type=input``, ``overwrite`` and ``subfolder``. Returns
        where the server stored it: with ``overwrite=False`` a taken name gets renamed
        (``name (1).png``). LoadImage names it ``subfolder/name`` (just ``name`` at the top).
        """
        kind = mimetypes.guess_type(name)[0] or "application/octet-stream"
        form = {"type": "input", "overwrite": str(overwrite).lower(), "subfolder": subfolder}
        response = await self._send(
            "POST", "/upload/image", files={"image": (name, data, kind)}, data=form
        )
        if response.status_code != 200:
            raise ComfyProtocolError(
                f"POST {self._url('/upload/image')} of {name!r} ({len(data)} bytes) answered "
                f"HTTP {response.status_code}: {response.text[:200]!r}"
            )
        body = self._decode(response, "/upload/image")
        if not isinstance(body, dict) or not isinstance(body.get("name"), str):
            raise ComfyProtocolError(
                f"{self._url('/upload/image')} answered {body!r}, not {{name, subfolder, type}}"
            )
        return ImageRef(
            body["name"], str(body.get("subfolder") or ""), str(body.get("type", "input"))
        )

    async def free(self, *, unload_models: bool, free_memory: bool = True) -> None:
        """``POST /free``: drop the server's caches (and models); takes effect between prompts."""
        body = {"unload_models": unload_models, "free_memory": free_memory}
        await self._expect_ok("POST", "/free", json=body)

    async def interrupt(self, prompt_id: str | None = None) -> None:
        """``POST /interrupt``: stop the running prompt (only if it is ``prompt_id`` if given)."""
        await self._expect_ok(
            "POST", "/interrupt", json={"prompt_id": prompt_id} if prompt_id else {}
        )

    async def delete_from_queue(self, prompt_ids: Sequence[str]) -> None:
        """``POST /queue {"delete": [...]}``: drop pending prompts (a running one is unaffected)."""
        await self._expect_ok("POST", "/queue", json={"delete": list(prompt_ids)})

    # --- plumbing ----------------------------------------------------------------------------

    def _url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    async def _get_json(self, path: str) -> Any:
        response = await self._send("GET", path)
        if response.status_code != 200:
            raise ComfyProtocolError(
                f"GET {self._url(path)} answered HTTP {response.status_code}; "
                "is this a ComfyUI server? Check the URL"
            )
        return self._decode(response, path)

    async def _expect_ok(self, method: str, path: str, **kwargs: Any) -> None:
        response = await self._send(method, path, **kwargs)
        if response.status_code != 200:
            raise ComfyProtocolError(
                f"{method} {self._url(path)} answered HTTP {response.status_code}: "
                f"{response.text[:200]!r}"
            )

    def _decode(self, response: httpx.Response, path: str) -> Any:
        try:
            body = response.json()
        except RecursionError as exc:
            raise json_too_deep(self._url(path)) from exc
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            kind = response.headers.get("content-type", "no content type")
            raise ComfyProtocolError(
                f"{self._url(path)} answered HTTP {response.status_code} with {kind}, not JSON "
                f"({response.text[:120]!r}); is this a ComfyUI server?"
            ) from exc
        return check_json_depth(body, self._url(path))

    async def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        async with self._translate(method, path):
            return await self._http.request(method, self._url(path), **kwargs)

    def _translate(self, method: str, path: str) -> _Translate:
        return _Translate(f"{method} {self._url(path)}", self.base_url)


class _Translate:
    """Context manager turning httpx's errors into ours, naming the call."""

    def __init__(self, what: str, base_url: str) -> None:
        self.what = what
        self.base_url = base_url

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: Any, tb: Any) -> None:
        if exc is None or isinstance(exc, ComfyError) or not isinstance(exc, httpx.HTTPError):
            return
        if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
            raise ComfyUnavailable(
                f"nothing answers at {self.base_url} ({self.what}: "
                f"{type(exc).__name__}: {exc or 'no detail'}); start ComfyUI there, "
                "or give the URL it listens on (--comfyui or $COMFYUI_URL)"
            ) from exc
        if isinstance(exc, httpx.TimeoutException):
            raise ComfyTimeout(f"{self.what} timed out ({type(exc).__name__})") from exc
        if isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError | httpx.WriteError):
            raise ComfyUnavailable(
                f"the server went away during {self.what} ({type(exc).__name__}: {exc})"
            ) from exc
        if isinstance(exc, httpx.UnsupportedProtocol | httpx.InvalidURL):
            raise ConfigError(f"cannot use the URL in {self.what}: {exc}") from exc
        raise ComfyProtocolError(f"{self.what} failed: {type(exc).__name__}: {exc}") from exc
