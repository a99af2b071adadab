"""The ComfyUI servers a run talks to: each one's adapter, temperature sensor and guard.

A run has one backend or several (``--comfyui`` repeated, ``COMFYUI_URLS``, or a
``backends.yaml``: :mod:`comfyline.backends_config`). With one, the simulator stands in only when
the user did not name a server (no ``--comfyui``, no ``$COMFYUI_URL``) and nothing answers at the
default URL, or when ``--sim`` asks for it; the run then says so plainly, since its images are
synthetic. A server the user named that does not answer is an error, never a silent switch to
something else. With several, those that answer are used and the others are asked again while
the run goes on (:class:`comfyline.pool.BackendPool`); none answering is an error.

Everything a backend opens (the adapter's connections, the sensor's HTTP client, NVML, the
simulator) is closed by the ``AsyncExitStack`` it was opened on.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from comfyline.backends_config import BackendSpec, backend_specs
from comfyline.comfy import ComfyUIAdapter, Endpoint
from comfyline.errors import ComfyError, ComfyUnavailable
from comfyline.guard import Guard, GuardEvent, Limits, NoSensor, SensorChoice, choose_sensor
from comfyline.guard.remote import RemoteSensor
from comfyline.guard.sensors import Sensor
from comfyline.presets import get_level
from comfyline.settings import Settings

SIM_NOTICE = (
    "No ComfyUI answered at {url}; running on the built-in simulator (images are synthetic)."
)
SIM_FORCED = "Running on the built-in simulator (--sim; images are synthetic)."

SIMULATOR = "simulator"
"""The name of a backend that is the built-in simulator this process started."""
SIM_DEVICE = "Simulated GPU (comfyline)"
"""How the simulator names its device in /system_stats."""

Notify = Callable[[str], None]


@dataclass
class Backend:
    """One server of a run: where it is, what speaks to it, and what watches its card."""

    name: str
    url: str
    simulated: bool
    adapter: ComfyUIAdapter
    sensor: Sensor
    has_temperature: bool
    sensor_notice: str | None = None
    stats: dict[str, Any] = field(default_factory=dict)
    guard: Guard | None = None
    max_in_flight: int = 2
    """Prompts on it at once (1 or 2)."""
    tags: tuple[str, ...] = ()
    spec: BackendSpec | None = None
    """How it was configured (None: the built-in simulator)."""
    http: httpx.AsyncClient | None = None
    """The client its sensor reads with (kept to choose a sensor when it first answers)."""

    def describe(self) -> dict[str, Any]:
        """What the run records about it (``run.start``): name, URL, versions, device, tags."""
        return {
            "name": self.name,
            "url": self.url,
            "simulated": self.simulated,
            "comfyui_version": self.comfyui_version,
            "device": self.device,
            "tags": list(self.tags),
        }

    @property
    def comfyui_version(self) -> str | None:
        version = (self.stats.get("system") or {}).get("comfyui_version")
        return version if isinstance(version, str) else None

    @property
    def device(self) -> str | None:
        devices = self.stats.get("devices")
        first = devices[0] if isinstance(devices, list) and devices else None
        name = first.get("name") if isinstance(first, dict) else None
        return name if isinstance(name, str) else None

    def start_guard(
        self,
        settings: Settings,
        level_name: str,
        *,
        on_event: Callable[[GuardEvent], None],
        clock: Callable[[], float],
        sleep: Callable[[float], Awaitable[None]],
    ) -> Guard:
        """The guard that paces this backend's prompts for a run at ``level_name``."""
        level = get_level(level_name)
        pause_s = level.pause_s if settings.pause_s is None else settings.pause_s
        self.guard = Guard(
            self.sensor,
            Limits.from_settings(settings),
            pause_s,
            level.max_batch,
            clock=clock,
            sleep=sleep,
            free_memory=self.free_memory,
            on_event=on_event,
            series_pause_s=settings.series_pause_s,
        )
        return self.guard

    async def free_memory(self) -> None:
        """Ask the server to free its GPU memory (our own process holds none of it)."""
        await self.adapter.free_memory(unload_models=True)


async def open_backend(
    settings: Settings,
    stack: contextlib.AsyncExitStack,
    *,
    force_sim: bool = False,
    sim_if_unreachable: bool | None = None,
    notify: Notify = lambda line: None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> Backend:
    """The run's server, checked to answer as ComfyUI, with its sensor; a simulator started
    here when needed (see the module docs). ``sim_if_unreachable`` None: fall back only when
    the URL is the default one."""
    url, started = await _choose_url(settings, stack, force_sim, sim_if_unreachable, notify)
    adapter = await stack.enter_async_context(
        ComfyUIAdapter(Endpoint.from_settings(settings, url), clock=clock, sleep=sleep)
    )
    stats = await adapter.check_ready()
    http = await stack.enter_async_context(httpx.AsyncClient(timeout=settings.http_timeout_s))
    choice = await choose_sensor(settings, adapter.url, http)
    stack.push_async_callback(_close_sensor, choice.sensor)
    # One we started lives only as long as the run: it is named for what it is. A server that
    # is our simulator says so in /system_stats, also when the user started it (``comfyline
    # sim``) at a URL they can name again: its images are synthetic wherever it runs.
    name = SIMULATOR if started else adapter.url
    simulated = started or SIM_DEVICE in str((stats.get("devices") or [{}])[0].get("name"))
    return Backend(
        name=name,
        url=adapter.url,
        simulated=simulated,
        adapter=adapter,
        sensor=choice.sensor,
        has_temperature=choice.has_temperature,
        sensor_notice=choice.notice,
        stats=stats,
    )


async def open_backends(
    settings: Settings,
    stack: contextlib.AsyncExitStack,
    *,
    urls: tuple[str, ...] = (),
    force_sim: bool = False,
    sim_if_unreachable: bool | None = None,
    notify: Notify = lambda line: None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> list[Backend]:
    """Every configured server (:func:`comfyline.backends_config.backend_specs`), each with
    its adapter and sensor.

    Without ``urls``, a backends file or ``COMFYUI_URLS`` this is :func:`open_backend` (one
    server, the simulator standing in as it says). Otherwise those that do not answer now come
    back with empty ``stats`` (the pool asks them again later); :class:`ComfyUnavailable` when
    none answers."""
    named = bool(urls) or settings.backends_file is not None or bool(settings.comfyui_urls)
    if force_sim or not named:
        backend = await open_backend(
            settings,
            stack,
            force_sim=force_sim,
            sim_if_unreachable=sim_if_unreachable,
            notify=notify,
            clock=clock,
            sleep=sleep,
        )
        return [backend]
    backends = [
        await _open_one(settings, stack, spec, clock, sleep)
        for spec in backend_specs(settings, urls)
    ]
    if not any(b.stats for b in backends):
        if len(backends) == 1:
            await connect(backends[0], settings)  # its own error, naming its URL
        raise ComfyUnavailable(
            "none of the configured ComfyUI servers answers ("
            + ", ".join(b.url for b in backends)
            + "); start them, or check the URLs (--comfyui, COMFYUI_URLS, the backends file)"
        )
    for backend in backends:
        if not backend.stats:
            notify(f"server {backend.name} does not answer now; it is asked again during the run")
    return backends


async def _open_one(
    settings: Settings,
    stack: contextlib.AsyncExitStack,
    spec: BackendSpec,
    clock: Callable[[], float],
    sleep: Callable[[float], Awaitable[None]],
) -> Backend:
    adapter = await stack.enter_async_context(
        ComfyUIAdapter(Endpoint.from_settings(settings, spec.url), clock=clock, sleep=sleep)
    )
    http = await stack.enter_async_context(httpx.AsyncClient(timeout=settings.http_timeout_s))
    backend = Backend(
        name=spec.name,
        url=adapter.url,
        simulated=False,
        adapter=adapter,
        sensor=NoSensor(f"the server {spec.name} has not answered yet"),
        has_temperature=False,
        max_in_flight=spec.max_in_flight,
        tags=spec.tags,
        spec=spec,
        http=http,
    )
    stack.push_async_callback(lambda: _close_sensor(backend.sensor))
    with contextlib.suppress(ComfyUnavailable):
        await connect(backend, settings)
    return backend


async def connect(backend: Backend, settings: Settings) -> None:
    """Ask ``backend`` for its ``/system_stats`` (:class:`ComfyUnavailable` when it does not
    answer) and, the first time it answers, choose its sensor."""
    stats = await backend.adapter.check_ready()
    first = not backend.stats
    backend.stats = stats
    backend.simulated = SIM_DEVICE in str(backend.device)
    if first and backend.http is not None:
        choice = await _sensor_for(backend, settings, backend.http)
        backend.sensor = choice.sensor
        backend.has_temperature = choice.has_temperature
        backend.sensor_notice = choice.notice


async def _sensor_for(
    backend: Backend, settings: Settings, http: httpx.AsyncClient
) -> SensorChoice:
    spec = backend.spec
    if spec is None:
        return await choose_sensor(settings, backend.url, http)
    if spec.remote_sensor:
        shared = settings.sensor_token
        token = spec.sensor_token or (shared.get_secret_value() if shared else None)
        remote = RemoteSensor(spec.sensor, http, token=token)
        reading = await remote.read()
        if reading is not None and reading.temperature_c is not None:
            return SensorChoice(remote, True)
        why = remote.last_error if reading is None else "it reports no temperature"
        notice = (
            f"server {backend.name}: the sensor agent at {spec.sensor} gives no temperature "
            f"({why}); the quality level's fixed pause applies until it does"
        )
        return SensorChoice(remote, False, notice=notice)
    try:
        return await choose_sensor(spec.sensor_setting(settings), backend.url, http)
    except ComfyError as exc:  # pragma: no cover - choose_sensor raises ConfigError only
        return SensorChoice(NoSensor(str(exc)), False, notice=str(exc))


async def _choose_url(
    settings: Settings,
    stack: contextlib.AsyncExitStack,
    force_sim: bool,
    sim_if_unreachable: bool | None,
    notify: Notify,
) -> tuple[str, bool]:
    if force_sim:
        notify(SIM_FORCED)
        return await start_simulator(stack), True
    try:
        async with ComfyUIAdapter(Endpoint.from_settings(settings)) as probe:
            await probe.check_ready()
        return probe.url, False
    except ComfyUnavailable:
        fallback = sim_if_unreachable
        if fallback is None:
            fallback = "comfyui_url" not in settings.model_fields_set
        if not fallback:
            raise  # the user named this server: do not quietly run on something else
    notify(SIM_NOTICE.format(url=settings.comfyui_url))
    return await start_simulator(stack), True


async def start_simulator(stack: contextlib.AsyncExitStack) -> str:
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


async def _close_sensor(sensor: Sensor) -> None:
    """Close a sensor that holds something open (NVML)."""
    aclose = getattr(sensor, "aclose", None)
    if aclose is not None:
        await aclose()
