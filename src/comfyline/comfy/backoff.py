"""The one retry loop: back off while a server is unreachable (a restart), up to a deadline.

Time comes from the caller's ``clock`` and ``sleep``, so tests and the simulator's fast time
drive it like everything else.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from comfyline.errors import ComfyUnavailable

T = TypeVar("T")

FIRST_DELAY_S = 0.05
MAX_DELAY_S = 2.0


async def retry_unavailable(
    call: Callable[[], Awaitable[T]],
    *,
    timeout_s: float,
    clock: Callable[[], float],
    sleep: Callable[[float], Awaitable[None]],
    retry_on: tuple[type[Exception], ...] = (ComfyUnavailable,),
) -> T:
    """``await call()``; on one of ``retry_on``, again after 0.05, 0.1, ... 2 s, until
    ``timeout_s`` has passed, then the last error is raised."""
    deadline = clock() + timeout_s
    delay = FIRST_DELAY_S
    while True:
        try:
            return await call()
        except retry_on:
            if clock() + delay > deadline:
                raise
        await sleep(delay)
        delay = min(delay * 2, MAX_DELAY_S)
