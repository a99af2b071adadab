"""Who may use the dashboard: loopback by default, a token everywhere else, no cross-site POST.

- On ``127.0.0.1``, ``localhost`` or ``::1`` no token is needed, but the ``Host`` header must
  name the loopback address too: a web page elsewhere cannot reach the dashboard by pointing
  its own domain name at 127.0.0.1 (DNS rebinding).
- On any other address every request, the event streams and the images included, needs the
  token: ``?token=…`` once (it sets a cookie and redirects to the same page without it), the
  cookie, or ``Authorization: Bearer …``.
- A request that changes something (any method but GET and HEAD) is refused when the browser
  says it comes from another site (``Sec-Fetch-Site``) or its ``Origin`` is not this server.
"""

from __future__ import annotations

import hmac
import secrets
from http.cookies import CookieError, SimpleCookie
from urllib.parse import parse_qsl, urlencode, urlsplit

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
"""The addresses on which the dashboard needs no token. Any other, 127.0.0.2 or 0.0.0.0
included, needs one: only these three are surely reachable from this machine alone."""
COOKIE = "comfyline_token"
_SAFE_METHODS = frozenset({"GET", "HEAD"})
_SAME_SITE = frozenset({"same-origin", "none"})


def needs_token(host: str) -> bool:
    """Whether a dashboard listening on ``host`` must ask for a token."""
    return host.strip("[]") not in LOOPBACK_HOSTS


def new_token() -> str:
    """A fresh random token (32 URL-safe characters)."""
    return secrets.token_urlsafe(24)


class AccessGuard:
    """ASGI middleware applying the rules above. ``token`` None: loopback mode."""

    def __init__(self, app: ASGIApp, *, token: str | None) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        refusal = self._refusal(scope, headers)
        if refusal is not None:
            await _plain(send, *refusal)
            return
        if self.token is not None and _query_token(scope) is not None:
            await self._set_cookie_and_redirect(scope, send)
            return
        await self.app(scope, receive, send)

    def _refusal(self, scope: Scope, headers: Headers) -> tuple[int, str] | None:
        if self.token is None and not _loopback_host_header(headers.get("host", "")):
            return 403, "This dashboard answers on its loopback address only."
        if self.token is not None and not self._has_token(scope, headers):
            return 401, (
                "This dashboard needs its token: open the link `comfyline serve` printed "
                "(it ends in ?token=...), or send Authorization: Bearer <token>."
            )
        if scope["method"] not in _SAFE_METHODS and _cross_site(headers):
            return 403, "Refused: the request came from another site."
        return None

    def _has_token(self, scope: Scope, headers: Headers) -> bool:
        assert self.token is not None
        offered = [_query_token(scope), _bearer(headers), _cookie(headers)]
        return any(o is not None and hmac.compare_digest(o, self.token) for o in offered)

    async def _set_cookie_and_redirect(self, scope: Scope, send: Send) -> None:
        # The token leaves the address bar (and the browser's history) at once.
        query = [(k, v) for k, v in parse_qsl(_query_string(scope)) if k != "token"]
        location = scope["path"] + (f"?{urlencode(query)}" if query else "")
        cookie = f"{COOKIE}={self.token}; Path=/; HttpOnly; SameSite=Strict"
        await send(
            {
                "type": "http.response.start",
                "status": 303,
                "headers": [
                    (b"location", location.encode()),
                    (b"set-cookie", cookie.encode()),
                    (b"content-length", b"0"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": b""})


def _query_string(scope: Scope) -> str:
    raw: bytes = scope.get("query_string", b"")
    return raw.decode("latin-1")


def _query_token(scope: Scope) -> str | None:
    for key, value in parse_qsl(_query_string(scope)):
        if key == "token":
            return value
    return None


def _bearer(headers: Headers) -> str | None:
    scheme, _, value = headers.get("authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def _cookie(headers: Headers) -> str | None:
    jar = SimpleCookie()
    try:
        jar.load(headers.get("cookie", ""))
    except CookieError:  # a malformed cookie header holds no token
        return None
    morsel = jar.get(COOKIE)
    return str(morsel.value) if morsel is not None else None


def _loopback_host_header(host: str) -> bool:
    name = urlsplit(f"//{host}").hostname or ""
    return name in LOOPBACK_HOSTS


def _cross_site(headers: Headers) -> bool:
    site = headers.get("sec-fetch-site")
    if site is not None:
        return site not in _SAME_SITE
    origin = headers.get("origin")
    if origin is None:
        return False  # not a browser (curl, a script): the token or loopback rule applies
    return urlsplit(origin).netloc != headers.get("host", "")


async def _plain(send: Send, status: int, text: str) -> None:
    body = text.encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
