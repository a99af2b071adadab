"""Telling the user when something happens on the line: through Apprise, which speaks Telegram,
Discord, e-mail, ntfy, desktop notifications and many more (https://github.com/caronc/apprise).

The URLs come from ``settings.notify_urls`` (``COMFYLINE_NOTIFY_URLS``); there are none by
default. The line says when an order completes, fails (or ends partial), stops on heat, and
when a server is lost or comes back. A notifier that fails is logged on the console and
forgotten: it never stops the line. Deliveries are not kept anywhere: a message that could not
be sent is not sent again later.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Literal

from comfyline.errors import ConfigError

if TYPE_CHECKING:
    from apprise import Apprise

Kind = Literal["completed", "failed", "heat", "lost", "back"]
"""What happened: an order completed, failed (or ended partial), stopped on heat; a server
was lost, or came back."""

SEND_TIMEOUT_S = 30.0
"""How long one notification may take, all URLs together (Apprise has its own timeouts too)."""

_TYPES = {"completed": "success", "failed": "failure", "heat": "warning", "lost": "warning"}


class Notifier:
    """Sends each event to every configured URL. ``say`` gets a line when sending fails.

    >>> notifier = Notifier(["ntfy://my-topic"])  # doctest: +SKIP
    >>> await notifier.send("completed", "order lighthouse completed", "24/24 images")
    """

    def __init__(self, urls: Sequence[str], *, say: Callable[[str], None] = lambda line: None):
        self.urls = tuple(urls)
        self._say = say
        self._apprise = _apprise(self.urls) if self.urls else None
        self._tasks: set[asyncio.Task[bool]] = set()

    @property
    def enabled(self) -> bool:
        """Whether any URL is configured."""
        return self._apprise is not None

    async def send(self, kind: Kind, title: str, body: str) -> bool:
        """Send one event; True when every URL took it. Never raises (a failing notifier is
        said on the console and otherwise ignored)."""
        if self._apprise is None:
            return True
        try:
            async with asyncio.timeout(SEND_TIMEOUT_S):
                ok = await asyncio.to_thread(
                    self._apprise.notify,
                    body=body,
                    title=f"comfyline: {title}",
                    notify_type=_TYPES.get(kind, "info"),
                )
        except Exception as exc:  # noqa: BLE001 - a notifier never stops the line
            self._say(f"notification {title!r} not sent: {type(exc).__name__}: {exc}")
            return False
        if not ok:
            self._say(f"notification {title!r} was not accepted by every notifier URL")
        return bool(ok)

    def post(self, kind: Kind, title: str, body: str) -> None:
        """:meth:`send` without waiting (from code that cannot await); see :meth:`drain`."""
        if self._apprise is None:
            return
        task = asyncio.ensure_future(self.send(kind, title, body))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        """Wait for the notifications :meth:`post` started."""
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*list(self._tasks), return_exceptions=True)


def _apprise(urls: Sequence[str]) -> Apprise:
    import apprise

    # Apprise logs every failed delivery as an error of its own; we say it once, ourselves.
    logging.getLogger("apprise").setLevel(logging.CRITICAL)
    bundle = apprise.Apprise()
    for position, url in enumerate(urls, 1):
        if not bundle.add(url):
            scheme = url.split("://", 1)[0] if "://" in url else url[:10]
            raise ConfigError(
                f"notify_urls entry {position} ({scheme}://...) is not a URL Apprise knows; "
                "see https://github.com/caronc/apprise/wiki for the forms (the rest of the URL "
                "is not shown: it may hold a token)"
            )
    return bundle
