"""Where the guard's measurements come from: NVML, ``nvidia-smi``, ComfyUI or the simulator.

Every sensor answers :meth:`Sensor.read` with a :class:`Reading` (each field optional: a source
reports what it can) or ``None`` when it could not be read this time; a sensor never raises during
a run, it keeps the reason in ``last_error`` instead. :func:`choose_sensor` picks one by
``Settings.sensor``:

``auto``
    1. the simulator's ``/sim/sensor``, when the server is our simulator with its thermal model on
       (a local GPU's temperature would say nothing about a simulated card);
    2. NVML (``nvidia-ml-py``), then 3. ``nvidia-smi``, both only when the server runs on this
       machine: a local card says nothing about a remote server's;
    4. ComfyUI's ``/system_stats``: VRAM of any server, local or remote, but no temperature;
    5. nothing.
``nvml`` / ``nvidia-smi`` / ``comfyui`` / ``sim``
    that one, or a :class:`~comfyline.errors.ConfigError` saying why it cannot be read.
``none``
    no sensor: the quality level's fixed pause paces the run.

``python -m comfyline.guard [URL]`` prints one reading of every sensor that answers.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx

from comfyline.errors import ConfigError
from comfyline.settings import Settings

_MIB = 1024 * 1024
_LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "0.0.0.0", "[::1]"})


@dataclass(frozen=True)
class Reading:
    """One measurement of a card. ``None``: the source does not report that value.

    ``thermal_throttling`` is True when the card reports that it slows its clocks for heat
    (NVML / nvidia-smi clock-event reasons); ``slowdown_c`` is the card's own slowdown threshold.
    """

    temperature_c: float | None = None
    slowdown_c: float | None = None
    power_w: float | None = None
    vram_used_bytes: int | None = None
    vram_total_bytes: int | None = None
    utilization: float | None = None
    thermal_throttling: bool | None = None
    clock_event_reasons: tuple[str, ...] = ()

    @property
    def vram_free_bytes(self) -> int | None:
        """Free VRAM, when both used and total are known."""
        if self.vram_used_bytes is None or self.vram_total_bytes is None:
            return None
        return self.vram_total_bytes - self.vram_used_bytes


class Sensor(Protocol):
    """A source of :class:`Reading` s. ``read`` returns None (never raises) when it fails."""

    name: str
    last_error: str | None

    async def read(self) -> Reading | None:
        """One fresh reading, or None when the source did not answer this time."""
        ...


class NoSensor:
    """No measurement at all: ``read`` is always None. The guard then uses fixed pauses."""

    name = "none"

    def __init__(self, reason: str = "no sensor was chosen") -> None:
        self.last_error: str | None = reason

    async def read(self) -> Reading | None:
        """Always None."""
        return None


# --- NVML ------------------------------------------------------------------------------------

# Clock-event reason bits (nvml.h) that mean "slowed down for heat".
_THERMAL_REASONS = {
    0x20: "sw_thermal_slowdown",
    0x40: "hw_thermal_slowdown",
}
_OTHER_REASONS = {
    0x1: "gpu_idle",
    0x4: "sw_power_cap",
    0x8: "hw_slowdown",
    0x80: "hw_power_brake_slowdown",
}


def decode_clock_event_reasons(mask: int) -> tuple[tuple[str, ...], bool]:
    """The names of the set clock-event reason bits we know, and whether any is thermal.

    >>> decode_clock_event_reasons(0x40 | 0x1)
    (('gpu_idle', 'hw_thermal_slowdown'), True)
    """
    known = {**_OTHER_REASONS, **_THERMAL_REASONS}
    names = tuple(name for bit, name in sorted(known.items()) if mask & bit)
    return names, any(mask & bit for bit in _THERMAL_REASONS)


class NvmlSensor:
    """The GPU at ``index`` on this machine, read through NVML (``nvidia-ml-py``).

    NVML calls block, so every read runs in a worker thread. Build it with :meth:`open`.
    """

    name = "nvml"

    def __init__(self, nvml: Any, handle: Any, index: int) -> None:
        self._nvml = nvml
        self._handle = handle
        self.index = index
        self.last_error: str | None = None

    @classmethod
    async def open(cls, index: int = 0, *, nvml: Any = None) -> NvmlSensor:
        """Load NVML and find the card; a :class:`ConfigError` saying why when it cannot.

        ``nvml`` is the NVML binding to use (default: ``pynvml`` from ``nvidia-ml-py``); tests
        pass a stand-in with the same functions, constants and ``NVMLError``."""
        return await asyncio.to_thread(cls._open_blocking, index, nvml)

    @classmethod
    def _open_blocking(cls, index: int, nvml: Any) -> NvmlSensor:
        if nvml is None:
            try:
                import pynvml
            except ImportError as exc:  # pragma: no cover - it is a declared dependency
                raise ConfigError("NVML sensor: pip install nvidia-ml-py") from exc
            nvml = pynvml
        try:
            nvml.nvmlInit()
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
        except nvml.NVMLError as exc:
            raise ConfigError(
                f"NVML cannot read GPU {index} on this machine ({exc}); install the NVIDIA "
                "driver, pick another gpu_index, or set COMFYLINE_SENSOR to another sensor"
            ) from exc
        return cls(nvml, handle, index)

    async def read(self) -> Reading | None:
        """One reading of temperature, power, memory, utilisation and clock-event reasons."""
        try:
            return await asyncio.to_thread(self._read_blocking)
        except self._nvml.NVMLError as exc:
            self.last_error = f"NVMLError: {exc}"
            return None

    async def aclose(self) -> None:
        """Release NVML."""
        await asyncio.to_thread(self._nvml.nvmlShutdown)

    def _read_blocking(self) -> Reading:
        nv, h = self._nvml, self._handle
        temperature = self._temperature()
        memory = self._optional(nv.nvmlDeviceGetMemoryInfo, h)
        power_mw = self._optional(nv.nvmlDeviceGetPowerUsage, h)
        util = self._optional(nv.nvmlDeviceGetUtilizationRates, h)
        mask = self._clock_event_mask()
        reasons, thermal = decode_clock_event_reasons(mask) if mask is not None else ((), None)
        slowdown = self._optional(
            nv.nvmlDeviceGetTemperatureThreshold, h, nv.NVML_TEMPERATURE_THRESHOLD_SLOWDOWN
        )
        return Reading(
            temperature_c=float(temperature),
            slowdown_c=float(slowdown) if slowdown is not None else None,
            power_w=power_mw / 1000.0 if power_mw is not None else None,
            vram_used_bytes=int(memory.used) if memory is not None else None,
            vram_total_bytes=int(memory.total) if memory is not None else None,
            utilization=float(util.gpu) / 100.0 if util is not None else None,
            thermal_throttling=thermal,
            clock_event_reasons=reasons,
        )

    def _temperature(self) -> float:
        nv, h = self._nvml, self._handle
        try:
            return float(nv.nvmlDeviceGetTemperatureV(h, nv.NVML_TEMPERATURE_GPU))
        except (nv.NVMLError, AttributeError):
            # Drivers before 535 lack nvmlDeviceGetTemperatureV; the older call still works.
            return float(nv.nvmlDeviceGetTemperature(h, nv.NVML_TEMPERATURE_GPU))

    def _clock_event_mask(self) -> int | None:
        nv = self._nvml
        getter = getattr(nv, "nvmlDeviceGetCurrentClocksEventReasons", None)
        mask = self._optional(getter, self._handle) if getter is not None else None
        if mask is None:  # older drivers and bindings call them "throttle reasons"
            mask = self._optional(nv.nvmlDeviceGetCurrentClocksThrottleReasons, self._handle)
        return int(mask) if mask is not None else None

    def _optional(self, call: Callable[..., Any], *args: Any) -> Any:
        """A value some cards do not report (power on laptops, thresholds on old boards)."""
        try:
            return call(*args)
        except self._nvml.NVMLError:
            return None


# --- nvidia-smi ------------------------------------------------------------------------------

CommandRunner = Callable[[Sequence[str], float], Awaitable[tuple[int, str]]]
"""Runs a command with a timeout in seconds; returns (exit status, stdout). Raises OSError when
the program is missing and TimeoutError when it runs past the timeout."""


async def run_command(argv: Sequence[str], timeout_s: float) -> tuple[int, str]:
    """Run ``argv`` (no shell), wait at most ``timeout_s``; (exit status, stdout + stderr)."""
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        async with asyncio.timeout(timeout_s):
            out, _ = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    return proc.returncode or 0, out.decode(errors="replace")


SMI_FIELDS = (
    "temperature.gpu",
    "power.draw",
    "memory.used",
    "memory.total",
    "utilization.gpu",
)
# Drivers since 535 name them clocks_event_reasons; older ones clocks_throttle_reasons. An unknown
# field fails the whole query, so each spelling is tried, and finally none.
SMI_REASON_VARIANTS: tuple[tuple[str, ...], ...] = (
    ("clocks_event_reasons.hw_thermal_slowdown", "clocks_event_reasons.sw_thermal_slowdown"),
    ("clocks_throttle_reasons.hw_thermal_slowdown", "clocks_throttle_reasons.sw_thermal_slowdown"),
    (),
)


def smi_command(index: int, reason_fields: Sequence[str]) -> list[str]:
    """The ``nvidia-smi`` query for GPU ``index`` with the given clock-reason fields."""
    fields = ",".join((*SMI_FIELDS, *reason_fields))
    return ["nvidia-smi", f"--id={index}", f"--query-gpu={fields}", "--format=csv,noheader,nounits"]


def _smi_value(text: str) -> float | None:
    text = text.strip()
    if not text or text.startswith("[") or text.upper() in {"N/A", "NOT SUPPORTED"}:
        return None  # "[N/A]", "[Not Supported]", "[Unknown Error]"
    return float(text)


def parse_smi_line(line: str) -> Reading:
    """A :class:`Reading` from one line of :func:`smi_command`'s output.

    >>> parse_smi_line("67, 182.54, 5123, 12288, 97, Not Active, Active").thermal_throttling
    True

    Raises ValueError when the line is not what the query asks for.
    """
    cells = [cell.strip() for cell in line.split(",")]
    if len(cells) < len(SMI_FIELDS):
        raise ValueError(f"expected {len(SMI_FIELDS)}+ comma-separated values, got {line!r}")
    temp, power, used, total, util = (_smi_value(c) for c in cells[: len(SMI_FIELDS)])
    flags = [c for c in cells[len(SMI_FIELDS) :] if not c.startswith("[")]
    names = ("hw_thermal_slowdown", "sw_thermal_slowdown")
    active = tuple(n for n, c in zip(names, flags, strict=False) if c.lower() == "active")
    return Reading(
        temperature_c=temp,
        power_w=power,
        vram_used_bytes=int(used * _MIB) if used is not None else None,
        vram_total_bytes=int(total * _MIB) if total is not None else None,
        utilization=util / 100.0 if util is not None else None,
        thermal_throttling=bool(active) if flags else None,
        clock_event_reasons=active,
    )


class NvidiaSmiSensor:
    """The GPU at ``index`` on this machine, read by running ``nvidia-smi`` (when NVML cannot
    load in this process). ``runner`` is the seam tests use to play back recorded output."""

    name = "nvidia-smi"

    def __init__(
        self, index: int = 0, *, runner: CommandRunner = run_command, timeout_s: float = 5.0
    ) -> None:
        self.index = index
        self._runner = runner
        self._timeout_s = timeout_s
        self._variants = list(SMI_REASON_VARIANTS)
        self.last_error: str | None = None

    async def read(self) -> Reading | None:
        """Run the query (trying older field names if the driver rejects the newer ones)."""
        while self._variants:
            argv = smi_command(self.index, self._variants[0])
            try:
                status, out = await self._runner(argv, self._timeout_s)
            except (OSError, TimeoutError) as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                return None
            if status == 0:
                return self._parse(out)
            if "not a valid field" not in out.lower() or len(self._variants) == 1:
                self.last_error = f"exited with {status}: {out.strip()[:200]}"
                return None
            self._variants.pop(0)  # this driver does not know these fields: never ask again
        return None  # pragma: no cover - the last variant has no optional fields

    def _parse(self, out: str) -> Reading | None:
        lines = [line for line in out.splitlines() if line.strip()]
        try:
            return parse_smi_line(lines[0])
        except (IndexError, ValueError) as exc:
            self.last_error = f"unreadable output {out.strip()[:200]!r} ({exc})"
            return None


# --- ComfyUI /system_stats and the simulator's /sim/sensor ------------------------------------


def parse_system_stats(body: Mapping[str, Any], device_index: int = 0) -> Reading:
    """VRAM (and, from our simulator with its thermal model on, temperature) of one device in a
    ``/system_stats`` body. Raises ValueError when there is no such device.

    Real ComfyUI reports no temperature; ``vram_free`` counts what PyTorch has cached as used.
    """
    devices = body.get("devices")
    if not isinstance(devices, list) or not devices:
        raise ValueError(f"/system_stats lists no devices: {json.dumps(body)[:200]}")
    device = devices[device_index] if device_index < len(devices) else devices[0]
    total, free = device.get("vram_total"), device.get("vram_free")
    temperature = device.get("temperature_c", device.get("temperature"))
    power = device.get("power_w")
    return Reading(
        temperature_c=float(temperature) if isinstance(temperature, int | float) else None,
        power_w=float(power) if isinstance(power, int | float) else None,
        vram_total_bytes=int(total) if isinstance(total, int) else None,
        vram_used_bytes=int(total - free)
        if isinstance(total, int) and isinstance(free, int)
        else None,
    )


def parse_sim_sensor(body: Mapping[str, Any]) -> Reading:
    """A :class:`Reading` from the simulator's ``GET /sim/sensor`` body."""

    def number(key: str) -> float | None:
        value = body.get(key)
        return float(value) if isinstance(value, int | float) else None

    used, total = number("vram_used_bytes"), number("vram_total_bytes")
    return Reading(
        temperature_c=number("temperature_c"),
        power_w=number("power_w"),
        vram_used_bytes=int(used) if used is not None else None,
        vram_total_bytes=int(total) if total is not None else None,
        utilization=number("utilization"),
    )


class _HttpSensor:
    """A sensor read with one GET on a ComfyUI server."""

    name = "http"
    path = "/"

    def __init__(self, base_url: str, http: httpx.AsyncClient, *, timeout_s: float = 5.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = http
        self._timeout_s = timeout_s
        self.last_error: str | None = None

    async def read(self) -> Reading | None:
        """GET the endpoint and parse it; None (with ``last_error``) when that fails."""
        url = self.base_url + self.path
        try:
            response = await self._http.get(url, timeout=self._timeout_s)
            response.raise_for_status()
            return self._parse(response.json())
        except (httpx.HTTPError, ValueError, TypeError, AttributeError, RecursionError) as exc:
            self.last_error = f"GET {url}: {type(exc).__name__}: {exc}"
            return None

    def _parse(self, body: Any) -> Reading:
        raise NotImplementedError


class ComfyStatsSensor(_HttpSensor):
    """VRAM from any ComfyUI server's ``/system_stats`` (temperature only from our simulator)."""

    name = "comfyui"
    path = "/system_stats"

    def _parse(self, body: Any) -> Reading:
        return parse_system_stats(body)


class SimSensor(_HttpSensor):
    """The simulator's thermal model, through ``GET /sim/sensor``."""

    name = "sim"
    path = "/sim/sensor"

    def _parse(self, body: Any) -> Reading:
        return parse_sim_sensor(body)


# --- choosing ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SensorChoice:
    """The chosen sensor, whether it measures temperature, and a line for the run's log.

    ``notice`` is set when the run has no temperature sensor: the pipeline logs it once.
    ``tried`` lists what auto-detection tried and why each was passed over.
    """

    sensor: Sensor
    has_temperature: bool
    notice: str | None = None
    tried: tuple[str, ...] = ()


def is_local_url(url: str) -> bool:
    """Whether the server at ``url`` runs on this machine (so a local GPU is its GPU)."""
    return (urlsplit(url).hostname or "") in _LOCAL_HOSTS


async def choose_sensor(
    settings: Settings,
    comfyui_url: str,
    http: httpx.AsyncClient,
    *,
    smi_runner: CommandRunner = run_command,
    nvml: Any = None,
) -> SensorChoice:
    """The sensor ``settings.sensor`` asks for (see the module docs for what ``auto`` tries),
    on the local GPU ``settings.gpu_index``. ``smi_runner`` runs ``nvidia-smi`` and ``nvml`` is
    the NVML binding (default ``pynvml``): test seams.

    A sensor named explicitly that cannot be read is a :class:`ConfigError`; ``auto`` passes it
    over and records why in ``tried``.
    """
    name, gpu_index = settings.sensor, settings.gpu_index
    if name == "none":
        return _no_temperature(NoSensor("sensor is set to 'none'"), ())
    if name == "auto":
        return await _auto(comfyui_url, http, gpu_index, smi_runner, nvml)
    sensor = await _open_named(name, comfyui_url, http, gpu_index, smi_runner, nvml)
    reading = await sensor.read()
    if reading is None:
        raise ConfigError(
            f"sensor {name!r} gives no reading ({sensor.last_error}); fix it or set "
            "COMFYLINE_SENSOR=auto"
        )
    if reading.temperature_c is None:
        return _no_temperature(sensor, ())
    return SensorChoice(sensor, True)


async def _open_named(
    name: str, url: str, http: httpx.AsyncClient, index: int, runner: CommandRunner, nvml: Any
) -> Sensor:
    if name == "nvml":
        return await NvmlSensor.open(index, nvml=nvml)
    if name == "nvidia-smi":
        return NvidiaSmiSensor(index, runner=runner)
    if name == "sim":
        return SimSensor(url, http)
    if name == "comfyui":
        return ComfyStatsSensor(url, http)
    raise ConfigError(
        f"unknown sensor {name!r} (allowed: auto, nvml, nvidia-smi, comfyui, sim, none)"
    )


async def _auto(
    url: str, http: httpx.AsyncClient, index: int, runner: CommandRunner, nvml: Any
) -> SensorChoice:
    tried: list[str] = []
    candidates: list[Callable[[], Awaitable[Sensor]]] = [lambda: _async(SimSensor(url, http))]
    if is_local_url(url):
        candidates += [
            lambda: NvmlSensor.open(index, nvml=nvml),
            lambda: _async(NvidiaSmiSensor(index, runner=runner)),
        ]
    else:
        tried.append(f"nvml, nvidia-smi: skipped, the server {url} is not on this machine")
    for make in candidates:
        found, reason = await _probe(make)
        if found is not None:
            return SensorChoice(found, True, tried=tuple(tried))
        tried.append(reason)
    stats = ComfyStatsSensor(url, http)
    reading = await stats.read()
    if reading is not None and reading.temperature_c is not None:
        return SensorChoice(stats, True, tried=tuple(tried))
    tried.append(f"comfyui: {'VRAM only' if reading else stats.last_error}")
    fallback: Sensor = stats if reading is not None else NoSensor(stats.last_error or "")
    return _no_temperature(fallback, tuple(tried))


async def _async(sensor: Sensor) -> Sensor:
    return sensor


async def _probe(make: Callable[[], Awaitable[Sensor]]) -> tuple[Sensor | None, str]:
    """The sensor if it opens and reads a temperature; otherwise why not."""
    try:
        sensor = await make()
    except ConfigError as exc:
        return None, str(exc)
    reading = await sensor.read()
    if reading is not None and reading.temperature_c is not None:
        return sensor, ""
    why = sensor.last_error if reading is None else "no temperature in its reading"
    return None, f"{sensor.name}: {why}"


def _no_temperature(sensor: Sensor, tried: tuple[str, ...]) -> SensorChoice:
    notice = (
        f"no temperature sensor (using {sensor.name!r}); the quality level's fixed pause "
        "between images applies instead of pacing by temperature"
    )
    return SensorChoice(sensor, False, notice=notice, tried=tried)


# --- one reading of everything, for a look at a new machine ------------------------------------


async def read_all(comfyui_url: str | None = None) -> dict[str, Reading | str]:
    """One reading (or why there is none) of every sensor: NVML, nvidia-smi and, given a URL,
    the server's /sim/sensor and /system_stats."""
    results: dict[str, Reading | str] = {}
    try:
        nvml = await NvmlSensor.open(0)
    except ConfigError as exc:
        results["nvml"] = str(exc)
    else:
        results["nvml"] = await nvml.read() or str(nvml.last_error)
        await nvml.aclose()
    smi = NvidiaSmiSensor(0)
    results["nvidia-smi"] = await smi.read() or str(smi.last_error)
    if comfyui_url:
        async with httpx.AsyncClient(timeout=httpx.Timeout(5.0)) as http:
            for sensor in (SimSensor(comfyui_url, http), ComfyStatsSensor(comfyui_url, http)):
                results[sensor.name] = await sensor.read() or str(sensor.last_error)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m comfyline.guard [COMFYUI_URL]``: print one reading of each sensor."""
    args = list(sys.argv[1:] if argv is None else argv)
    results = asyncio.run(read_all(args[0] if args else None))
    for name, result in results.items():
        print(f"{name}: {result}")
    return 0
