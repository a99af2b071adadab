"""What one dashboard serves: the orders folder, the settings, and who may come in."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from comfyline.settings import Settings


@dataclass(frozen=True)
class WebConfig:
    """The dashboard's configuration, made once by ``comfyline serve`` (or a test).

    ``token`` None: no token is asked for (loopback only); ``sim``: orders run on the
    built-in simulator; ``urls``: the line's servers when there are several (else the settings'
    ``backends_file``, ``comfyui_urls`` or ``comfyui_url``, as for ``comfyline line``);
    ``start_line``: the line starts with the server (else from the line page).
    """

    orders_dir: Path
    settings: Settings
    sim: bool = False
    token: str | None = None
    urls: tuple[str, ...] = ()
    start_line: bool = False
