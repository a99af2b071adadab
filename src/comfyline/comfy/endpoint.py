"""Where a ComfyUI server is and how long to wait for it: all the adapter needs to know.

The adapter takes an :class:`Endpoint`, not the whole :class:`~comfyline.settings.Settings`:
it is transport and protocol, and has no business with output folders or temperatures.
"""

from __future__ import annotations

from dataclasses import dataclass

from comfyline.comfy.client import check_url
from comfyline.settings import Settings


@dataclass(frozen=True)
class Endpoint:
    """One server's URL and every deadline of talking to it, in seconds."""

    url: str
    connect_timeout_s: float = 5.0
    http_timeout_s: float = 30.0
    download_timeout_s: float = 120.0
    """Total time one image download may take (a server that trickles bytes is cut off)."""
    first_prompt_timeout_s: float = 120.0
    prompt_timeout_factor: float = 10.0
    min_prompt_timeout_s: float = 30.0
    reconnect_timeout_s: float = 120.0
    flap_reconnects: int = 5
    """Give up at this many lost connections within ``flap_window_s`` with no prompt finished."""
    flap_window_s: float = 600.0
    queue_check_s: float = 10.0
    """How often a prompt that waits in the queue is looked for there (someone may delete it)."""
    queue_look_gap_s: float = 1.0
    """The least time between two such looks prompted by ``status`` messages. The server sends
    one whenever any prompt comes or goes - two for each image - and a look at every one cost
    the runner as much as downloading the image; a deleted prompt is noticed within this."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "url", check_url(self.url))

    @classmethod
    def from_settings(cls, settings: Settings, url: str | None = None) -> Endpoint:
        """The endpoint at ``url`` (default: ``settings.comfyui_url``) with the settings'
        timeouts."""
        return cls(
            url=url or settings.comfyui_url,
            connect_timeout_s=settings.connect_timeout_s,
            http_timeout_s=settings.http_timeout_s,
            download_timeout_s=settings.download_timeout_s,
            first_prompt_timeout_s=settings.first_prompt_timeout_s,
            prompt_timeout_factor=settings.prompt_timeout_factor,
            min_prompt_timeout_s=settings.min_prompt_timeout_s,
            reconnect_timeout_s=settings.reconnect_timeout_s,
            flap_reconnects=settings.flap_reconnects,
            flap_window_s=settings.flap_window_s,
        )
