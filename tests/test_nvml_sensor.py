"""The NVML sensor, read through a stand-in for the ``pynvml`` module, so that its parsing and
its error paths run on every machine (NVML itself is there only beside an NVIDIA driver).

The stand-in has NVML's functions and takes its constants, ``NVMLError`` (with its per-code
subclasses and messages, e.g. ``NVMLError_GpuIsLost``) and result structs from the real
``pynvml``: only the card is made up.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pynvml
import pytest

from comfyline.errors import ConfigError
from comfyline.guard import NvidiaSmiSensor, NvmlSensor, choose_sensor
from comfyline.settings import Settings

GIB = 2**30
LOCAL = "http://127.0.0.1:8188"


class StandInNvml:
    """A card as NVML reports it. ``failing`` maps a function name to the NVML error code it
    raises; ``lost`` makes every call raise "GPU is lost", as after the card fell off the bus.
    ``old_driver`` drops the calls drivers before 535 lack."""

    NVMLError = pynvml.NVMLError
    NVML_TEMPERATURE_GPU = pynvml.NVML_TEMPERATURE_GPU
    NVML_TEMPERATURE_THRESHOLD_SLOWDOWN = pynvml.NVML_TEMPERATURE_THRESHOLD_SLOWDOWN

    def __init__(self, *, devices: int = 1, old_driver: bool = False) -> None:
        self.devices = devices
        self.temperature_c = 71
        self.power_mw = 182_540
        self.memory = (12 * GIB, 7 * GIB)  # total, free
        self.utilization = 97
        self.clock_mask = 0x1 | 0x40  # idle bit (stale) and hw thermal slowdown
        self.slowdown_c = 87
        self.failing: dict[str, int] = {}
        self.lost = False
        self.calls: list[str] = []
        if not old_driver:
            self.nvmlDeviceGetTemperatureV = self._call(
                "nvmlDeviceGetTemperatureV", lambda h, sensor: self._temperature(sensor)
            )
            self.nvmlDeviceGetCurrentClocksEventReasons = self._call(
                "nvmlDeviceGetCurrentClocksEventReasons", lambda h: self.clock_mask
            )
        self.nvmlInit = self._call("nvmlInit", lambda: None)
        self.nvmlShutdown = self._call("nvmlShutdown", lambda: None)
        self.nvmlDeviceGetHandleByIndex = self._call("nvmlDeviceGetHandleByIndex", self._handle)
        self.nvmlDeviceGetTemperature = self._call(
            "nvmlDeviceGetTemperature", lambda h, sensor: self._temperature(sensor)
        )
        self.nvmlDeviceGetPowerUsage = self._call(
            "nvmlDeviceGetPowerUsage", lambda h: self.power_mw
        )
        self.nvmlDeviceGetMemoryInfo = self._call("nvmlDeviceGetMemoryInfo", self._memory_info)
        self.nvmlDeviceGetUtilizationRates = self._call(
            "nvmlDeviceGetUtilizationRates",
            lambda h: pynvml.c_nvmlUtilization_t(gpu=self.utilization, memory=40),
        )
        self.nvmlDeviceGetCurrentClocksThrottleReasons = self._call(
            "nvmlDeviceGetCurrentClocksThrottleReasons", lambda h: self.clock_mask
        )
        self.nvmlDeviceGetTemperatureThreshold = self._call(
            "nvmlDeviceGetTemperatureThreshold", self._threshold
        )

    def _call(self, name: str, body: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any) -> Any:
            self.calls.append(name)
            if self.lost:
                raise pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)
            if name in self.failing:
                raise pynvml.NVMLError(self.failing[name])
            return body(*args)

        return call

    def _handle(self, index: int) -> str:
        if not 0 <= index < self.devices:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return f"handle-{index}"

    def _temperature(self, sensor: int) -> int:
        assert sensor == pynvml.NVML_TEMPERATURE_GPU
        return self.temperature_c

    def _memory_info(self, handle: str) -> Any:
        total, free = self.memory
        return pynvml.c_nvmlMemory_t(total=total, free=free, used=total - free)

    def _threshold(self, handle: str, kind: int) -> int:
        assert kind == pynvml.NVML_TEMPERATURE_THRESHOLD_SLOWDOWN
        return self.slowdown_c


async def test_a_reading_of_a_busy_card() -> None:
    nvml = StandInNvml()
    sensor = await NvmlSensor.open(0, nvml=nvml)
    reading = await sensor.read()
    assert reading is not None
    assert reading.temperature_c == 71.0
    assert reading.slowdown_c == 87.0
    assert reading.power_w == 182.54  # NVML reports milliwatts
    assert (reading.vram_total_bytes, reading.vram_used_bytes) == (12 * GIB, 5 * GIB)
    assert reading.vram_free_bytes == 7 * GIB
    assert reading.utilization == 0.97  # NVML reports percent
    assert reading.thermal_throttling is True
    assert reading.clock_event_reasons == ("gpu_idle", "hw_thermal_slowdown")
    assert sensor.last_error is None
    assert nvml.calls[:2] == ["nvmlInit", "nvmlDeviceGetHandleByIndex"]


async def test_no_thermal_reason_is_no_throttling() -> None:
    nvml = StandInNvml()
    nvml.clock_mask = 0x4  # power cap only
    reading = await (await NvmlSensor.open(0, nvml=nvml)).read()
    assert reading is not None
    assert (reading.thermal_throttling, reading.clock_event_reasons) == (False, ("sw_power_cap",))


async def test_an_old_driver_is_read_with_the_older_calls() -> None:
    nvml = StandInNvml(old_driver=True)
    reading = await (await NvmlSensor.open(0, nvml=nvml)).read()
    assert reading is not None and reading.temperature_c == 71.0
    assert reading.thermal_throttling is True
    assert "nvmlDeviceGetTemperature" in nvml.calls
    assert "nvmlDeviceGetCurrentClocksThrottleReasons" in nvml.calls


async def test_values_a_card_does_not_report_are_none() -> None:
    nvml = StandInNvml()
    nvml.failing = {
        "nvmlDeviceGetPowerUsage": pynvml.NVML_ERROR_NOT_SUPPORTED,
        "nvmlDeviceGetTemperatureThreshold": pynvml.NVML_ERROR_NOT_SUPPORTED,
        "nvmlDeviceGetUtilizationRates": pynvml.NVML_ERROR_NOT_SUPPORTED,
        "nvmlDeviceGetCurrentClocksEventReasons": pynvml.NVML_ERROR_NOT_SUPPORTED,
        "nvmlDeviceGetCurrentClocksThrottleReasons": pynvml.NVML_ERROR_NOT_SUPPORTED,
    }
    reading = await (await NvmlSensor.open(0, nvml=nvml)).read()
    assert reading is not None
    assert reading.temperature_c == 71.0 and reading.vram_total_bytes == 12 * GIB
    assert (reading.power_w, reading.slowdown_c, reading.utilization) == (None, None, None)
    assert (reading.thermal_throttling, reading.clock_event_reasons) == (None, ())


async def test_newer_temperature_call_failing_falls_back_to_the_older_one() -> None:
    nvml = StandInNvml()
    nvml.failing = {"nvmlDeviceGetTemperatureV": pynvml.NVML_ERROR_FUNCTION_NOT_FOUND}
    reading = await (await NvmlSensor.open(0, nvml=nvml)).read()
    assert reading is not None and reading.temperature_c == 71.0


async def test_a_lost_gpu_is_no_reading_with_the_reason() -> None:
    nvml = StandInNvml()
    sensor = await NvmlSensor.open(0, nvml=nvml)
    assert await sensor.read() is not None
    nvml.lost = True  # fell off the bus mid-run
    assert await sensor.read() is None
    assert sensor.last_error == "NVMLError: GPU is lost"
    nvml.lost = False  # a later reading works again, the error is kept until then
    assert await sensor.read() is not None


async def test_no_temperature_is_no_reading() -> None:
    nvml = StandInNvml()
    nvml.failing = {
        "nvmlDeviceGetTemperatureV": pynvml.NVML_ERROR_UNKNOWN,
        "nvmlDeviceGetTemperature": pynvml.NVML_ERROR_UNKNOWN,
    }
    sensor = await NvmlSensor.open(0, nvml=nvml)
    assert await sensor.read() is None
    assert sensor.last_error == "NVMLError: Unknown Error"


@pytest.mark.parametrize(
    ("failing", "index", "reason"),
    [
        ({"nvmlInit": pynvml.NVML_ERROR_LIBRARY_NOT_FOUND}, 0, "NVML Shared Library Not Found"),
        ({"nvmlInit": pynvml.NVML_ERROR_DRIVER_NOT_LOADED}, 0, "Driver Not Loaded"),
        ({}, 3, "Invalid Argument"),
        ({"nvmlDeviceGetHandleByIndex": pynvml.NVML_ERROR_GPU_IS_LOST}, 0, "GPU is lost"),
    ],
)
async def test_opening_fails_with_a_clear_config_error(
    failing: dict[str, int], index: int, reason: str
) -> None:
    nvml = StandInNvml()
    nvml.failing = failing
    with pytest.raises(ConfigError) as info:
        await NvmlSensor.open(index, nvml=nvml)
    message = str(info.value)
    assert f"NVML cannot read GPU {index} on this machine ({reason})" in message
    assert "gpu_index" in message and "COMFYLINE_SENSOR" in message


async def test_closing_shuts_nvml_down() -> None:
    nvml = StandInNvml()
    sensor = await NvmlSensor.open(0, nvml=nvml)
    await sensor.aclose()
    assert nvml.calls[-1] == "nvmlShutdown"


def _server() -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.MockTransport(lambda r: httpx.Response(404)))


async def test_auto_on_a_local_server_picks_nvml_first_after_the_simulator() -> None:
    async with _server() as http:
        choice = await choose_sensor(
            Settings(gpu_index=1), LOCAL, http, nvml=StandInNvml(devices=2)
        )
    assert isinstance(choice.sensor, NvmlSensor) and choice.sensor.index == 1
    assert choice.has_temperature and choice.notice is None


async def test_auto_passes_over_a_lost_gpu_to_nvidia_smi() -> None:
    nvml = StandInNvml()
    nvml.lost = True

    async def smi(argv: Any, timeout_s: float) -> tuple[int, str]:
        return 0, "67, 182.54, 5123, 12288, 97, Not Active, Not Active\n"

    async with _server() as http:
        choice = await choose_sensor(Settings(), LOCAL, http, nvml=nvml, smi_runner=smi)
    assert isinstance(choice.sensor, NvidiaSmiSensor)
    assert any("GPU is lost" in reason for reason in choice.tried)


async def test_nvml_asked_for_by_name_but_lost_says_why() -> None:
    nvml = StandInNvml()
    async with _server() as http:
        choice = await choose_sensor(Settings(sensor="nvml"), LOCAL, http, nvml=nvml)
        assert isinstance(choice.sensor, NvmlSensor)
        nvml.lost = True
        with pytest.raises(ConfigError, match="GPU is lost"):
            await choose_sensor(Settings(sensor="nvml"), LOCAL, http, nvml=nvml)
