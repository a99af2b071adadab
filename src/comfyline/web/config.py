"""What one dashboard serves: the orders folder, the settings, and who may come in."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from comfyline.settings import Settings


@dataclass(frozen=True)
class WebConfig:
    """The dashboard's configuration, made once by ``comfyline serve`` (or a test).

    ``token`` None: no token is asked for (loopback only); ``sim``: orders started from the
    page run on the built-in simulator.
    """

    orders_dir: Path
    settings: Settings
    sim: bool = False
    token: str | None = None
