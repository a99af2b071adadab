"""Which ComfyUI server a run talks to: the configured one, or the built-in simulator.

The simulator stands in only when the user did not name a server (no ``--comfyui``, no
``$COMFYUI_URL``) and nothing answers at the default URL, or when ``--sim`` asks for it; the
run then says so plainly, since its images are synthetic. A server the user named that does not
answer is an error, never a silent switch to something else.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from comfyline.adapters.comfyui import ComfyUIAdapter
from comfyline.errors import ComfyUnavailable
from comfyline.settings import Settings

SIM_NOTICE = (
    "No ComfyUI answered at {url}; running on the built-in simulator (images are synthetic)."
)
SIM_FORCED = "Running on the built-in simulator (--sim; images are synthetic)."


@dataclass(frozen=True)
class Backend:
    """The server chosen for a run."""

    url: str
    simulated: bool


async def choose_backend(
    settings: Settings,
    stack: contextlib.ExitStack,
    *,
    force_sim: bool = False,
    sim_if_unreachable: bool | None = None,
    notify: Callable[[str], None] = lambda line: None,
) -> Backend:
    """The server to use; a simulator started here (and stopped by ``stack``) when needed.

    ``sim_if_unreachable`` None: fall back only when the URL is the default one.
    """
    if force_sim:
        notify(SIM_FORCED)
        return Backend(await start_simulator(stack), True)
    try:
        async with ComfyUIAdapter(settings) as probe:
            await probe.check_ready()
        return Backend(probe.url, False)
    except ComfyUnavailable:
        fallback = sim_if_unreachable
        if fallback is None:
            fallback = "comfyui_url" not in settings.model_fields_set
        if not fallback:
            raise  # the user named this server: do not quietly run on something else
    notify(SIM_NOTICE.format(url=settings.comfyui_url))
    return Backend(await start_simulator(stack), True)


async def start_simulator(stack: contextlib.ExitStack) -> str:
    """Start the demo simulator (realistic but fast timing, a warming card); its URL."""
    from comfyline.sim import SimConfig, running_simulator
    from comfyline.sim.config import ThermalConfig

    server_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="comfyline-sim-")))
    config = SimConfig(
        # ~0.15 s per standard image and a short model load: a demo that shows progress
        # without making anyone wait; the thermal model gives the guard a card to watch.
        step_s=0.05,
        model_load_s=0.3,
        output_dir=server_dir / "output",
        thermal=ThermalConfig(),
    )
    sim = await asyncio.to_thread(stack.enter_context, running_simulator(config))
    return str(sim.url)
