"""Sensors: nvidia-smi output, /system_stats and /sim/sensor bodies, and the automatic choice."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import httpx
import pytest

from comfyline.errors import ConfigError
from comfyline.guard import (
    ComfyStatsSensor,
    NoSensor,
    NvidiaSmiSensor,
    NvmlSensor,
    SimSensor,
    choose_sensor,
    parse_smi_line,
    parse_system_stats,
)
from comfyline.guard.sensors import decode_clock_event_reasons, main, run_command
from comfyline.settings import Settings

# Output of `nvidia-smi --id=0 --query-gpu=temperature.gpu,power.draw,memory.used,memory.total,
# utilization.gpu,clocks_event_reasons.hw_thermal_slowdown,clocks_event_reasons.sw_thermal_slowdown
# --format=csv,noheader,nounits` in the shapes drivers print: a busy desktop card, a card that does
# not report its power, and one slowing down for heat.
SMI_BUSY = "67, 182.54, 5123, 12288, 97, Not Active, Not Active\n"
SMI_NO_POWER = "45, [N/A], 301, 12288, 0, Not Active, Not Active\n"
SMI_THROTTLING = "86, 201.10, 11876, 12288, 100, Active, Not Active\n"
SMI_OLD_DRIVER = (
    'Field "clocks_event_reasons.hw_thermal_slowdown" is not a valid field to query.\n\n'
    "See 'nvidia-smi --help-query-gpu' for details.\n"
)
SMI_NO_DRIVER = (
    "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. Make sure "
    "that the latest NVIDIA driver is installed and running.\n"
)

# The device entry of GET /system_stats from 02_basic_gets.json (ComfyUI 0.3.64, --cpu).
SYSTEM_STATS = {
    "system": {"os": "posix", "comfyui_version": "0.3.64", "pytorch_version": "2.14.1+cu130"},
    "devices": [
        {
            "name": "cpu",
            "type": "cpu",
            "index": None,
            "vram_total": 25276502016,
            "vram_free": 23406211072,
            "torch_vram_total": 25276502016,
            "torch_vram_free": 23406211072,
        }
    ],
}
SIM_SENSOR = {
    "temperature_c": 71.5,
    "power_w": 170.0,
    "vram_used_bytes": 4 * 2**30,
    "vram_total_bytes": 12 * 2**30,
    "utilization": 1.0,
    "blackouts": 0,
}


class RecordedSmi:
    """Plays back nvidia-smi: ``answers`` maps a marker in the command line to (status, out)."""

    def __init__(self, *answers: tuple[int, str] | Exception) -> None:
        self.answers = list(answers)
        self.calls: list[list[str]] = []

    async def __call__(self, argv: Sequence[str], timeout_s: float) -> tuple[int, str]:
        self.calls.append(list(argv))
        answer = self.answers[min(len(self.calls), len(self.answers)) - 1]
        if isinstance(answer, Exception):
            raise answer
        return answer


def server(routes: dict[str, Any]) -> httpx.AsyncClient:
    """An httpx client whose transport answers ``routes`` (path -> JSON body) and 404 otherwise."""

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path in routes:
            return httpx.Response(200, json=routes[request.url.path])
        return httpx.Response(404, text="404: Not Found")

    return httpx.AsyncClient(transport=httpx.MockTransport(handle))


def nvml_works() -> bool:
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:
        return False
    pynvml.nvmlShutdown()
    return True


REMOTE = "http://gpu-box.example:8188"
LOCAL = "http://127.0.0.1:8188"


# --- nvidia-smi ------------------------------------------------------------------------------


def test_smi_line_busy_card() -> None:
    reading = parse_smi_line(SMI_BUSY)
    assert reading.temperature_c == 67.0
    assert reading.power_w == 182.54
    assert reading.vram_used_bytes == 5123 * 2**20
    assert reading.vram_total_bytes == 12288 * 2**20
    assert reading.utilization == 0.97
    assert reading.thermal_throttling is False
    assert reading.clock_event_reasons == ()


def test_smi_line_not_available_values_are_none() -> None:
    reading = parse_smi_line(SMI_NO_POWER)
    assert reading.power_w is None
    assert reading.temperature_c == 45.0


def test_smi_line_thermal_slowdown() -> None:
    reading = parse_smi_line(SMI_THROTTLING)
    assert reading.thermal_throttling is True
    assert reading.clock_event_reasons == ("hw_thermal_slowdown",)


def test_smi_line_without_reason_fields() -> None:
    assert parse_smi_line("50, 90.0, 100, 8192, 10").thermal_throttling is None


def test_smi_line_that_is_not_ours() -> None:
    with pytest.raises(ValueError, match="comma-separated"):
        parse_smi_line("No devices were found")


async def test_smi_sensor_reads_the_card_by_index() -> None:
    runner = RecordedSmi((0, SMI_BUSY))
    sensor = NvidiaSmiSensor(1, runner=runner)
    reading = await sensor.read()
    assert reading is not None and reading.temperature_c == 67.0
    argv = runner.calls[0]
    assert argv[:2] == ["nvidia-smi", "--id=1"]
    assert "--format=csv,noheader,nounits" in argv


async def test_smi_sensor_falls_back_to_older_field_names_and_remembers() -> None:
    runner = RecordedSmi((2, SMI_OLD_DRIVER), (0, SMI_THROTTLING))
    sensor = NvidiaSmiSensor(0, runner=runner)
    first = await sensor.read()
    assert first is not None and first.thermal_throttling is True
    assert "clocks_throttle_reasons.hw_thermal_slowdown" in runner.calls[1][2]
    await sensor.read()
    assert len(runner.calls) == 3
    assert "clocks_throttle_reasons" in runner.calls[2][2]  # not the rejected names again


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (FileNotFoundError(2, "No such file or directory", "nvidia-smi"), "FileNotFoundError"),
        (TimeoutError(), "TimeoutError"),
        ((9, SMI_NO_DRIVER), "exited with 9: NVIDIA-SMI has failed"),
        ((0, "garbage\n"), "unreadable output 'garbage'"),
        ((0, ""), "unreadable output"),
    ],
)
async def test_smi_sensor_failures_are_no_reading(
    answer: tuple[int, str] | Exception, expected: str
) -> None:
    sensor = NvidiaSmiSensor(0, runner=RecordedSmi(answer))
    assert await sensor.read() is None
    assert sensor.last_error is not None and expected in sensor.last_error


async def test_run_command_runs_a_real_program() -> None:
    status, out = await run_command([sys.executable, "-c", "print('42, 1')"], 30.0)
    assert (status, out.strip()) == (0, "42, 1")


async def test_run_command_times_out() -> None:
    with pytest.raises(TimeoutError):
        await run_command([sys.executable, "-c", "import time; time.sleep(30)"], 0.2)


async def test_run_command_missing_program() -> None:
    with pytest.raises(OSError):
        await run_command(["comfyline-no-such-program"], 5.0)


def test_clock_event_reasons_decoding() -> None:
    assert decode_clock_event_reasons(0) == ((), False)
    assert decode_clock_event_reasons(0x20) == (("sw_thermal_slowdown",), True)
    assert decode_clock_event_reasons(0x4 | 0x1) == (("gpu_idle", "sw_power_cap"), False)


# --- NVML --------------------------------------------------------------------------------------


async def test_nvml_unavailable_is_a_clear_config_error() -> None:
    if nvml_works():
        pytest.skip("NVML works on this machine")
    with pytest.raises(ConfigError, match="NVML cannot read GPU 0 on this machine"):
        await NvmlSensor.open(0)


async def test_nvml_explicitly_asked_for_but_unavailable() -> None:
    if nvml_works():
        pytest.skip("NVML works on this machine")
    async with server({}) as http:
        with pytest.raises(ConfigError, match="COMFYLINE_SENSOR"):
            await choose_sensor(Settings(sensor="nvml"), LOCAL, http)


# --- ComfyUI and the simulator ------------------------------------------------------------------


def test_system_stats_of_real_comfyui_has_vram_and_no_temperature() -> None:
    reading = parse_system_stats(SYSTEM_STATS)
    assert reading.temperature_c is None
    assert reading.vram_total_bytes == 25276502016
    assert reading.vram_free_bytes == 23406211072
    assert reading.vram_used_bytes == 25276502016 - 23406211072


def test_system_stats_from_the_simulator_with_temperature() -> None:
    body = {"devices": [{**SYSTEM_STATS["devices"][0], "temperature_c": 74.0}]}  # type: ignore[index]
    assert parse_system_stats(body).temperature_c == 74.0


def test_system_stats_without_devices() -> None:
    with pytest.raises(ValueError, match="no devices"):
        parse_system_stats({"system": {}})


async def test_comfyui_sensor_over_http() -> None:
    async with server({"/system_stats": SYSTEM_STATS}) as http:
        reading = await ComfyStatsSensor(LOCAL + "/", http).read()
    assert reading is not None and reading.vram_total_bytes == 25276502016


async def test_sim_sensor_over_http() -> None:
    async with server({"/sim/sensor": SIM_SENSOR}) as http:
        reading = await SimSensor(LOCAL, http).read()
    assert reading is not None
    assert (reading.temperature_c, reading.power_w) == (71.5, 170.0)
    assert reading.vram_free_bytes == 8 * 2**30


async def test_http_sensor_failure_is_no_reading() -> None:
    async with server({}) as http:
        sensor = SimSensor(LOCAL, http)
        assert await sensor.read() is None
    assert sensor.last_error is not None and "404" in sensor.last_error


async def test_http_sensor_unreadable_body_is_no_reading() -> None:
    async with server({"/system_stats": {"devices": []}}) as http:
        sensor = ComfyStatsSensor(LOCAL, http)
        assert await sensor.read() is None
    assert "no devices" in (sensor.last_error or "")


# --- choosing ----------------------------------------------------------------------------------


async def test_auto_picks_the_simulator_when_it_answers() -> None:
    async with server({"/sim/sensor": SIM_SENSOR, "/system_stats": SYSTEM_STATS}) as http:
        choice = await choose_sensor(Settings(), REMOTE, http)
    assert isinstance(choice.sensor, SimSensor)
    assert choice.has_temperature and choice.notice is None


async def test_auto_on_a_remote_real_comfyui_is_vram_only_and_says_so() -> None:
    async with server({"/system_stats": SYSTEM_STATS}) as http:
        choice = await choose_sensor(Settings(), REMOTE, http)
    assert isinstance(choice.sensor, ComfyStatsSensor)
    assert not choice.has_temperature
    assert choice.notice is not None and "fixed pause" in choice.notice
    assert any("not on this machine" in t for t in choice.tried)


async def test_auto_with_nothing_answering_has_no_sensor() -> None:
    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    async with httpx.AsyncClient(transport=httpx.MockTransport(down)) as http:
        choice = await choose_sensor(Settings(), REMOTE, http)
    assert isinstance(choice.sensor, NoSensor)
    assert choice.notice is not None and not choice.has_temperature


async def test_auto_local_without_nvml_uses_nvidia_smi() -> None:
    if nvml_works():
        pytest.skip("NVML works on this machine and would be chosen first")
    async with server({"/system_stats": SYSTEM_STATS}) as http:
        runner = RecordedSmi((0, SMI_BUSY))
        choice = await choose_sensor(Settings(), LOCAL, http, smi_runner=runner)
    assert isinstance(choice.sensor, NvidiaSmiSensor)
    assert any("NVML" in t for t in choice.tried)


async def test_auto_local_without_nvml_or_nvidia_smi_falls_through_to_comfyui() -> None:
    if nvml_works():
        pytest.skip("NVML works on this machine and would be chosen first")
    async with server({"/system_stats": SYSTEM_STATS}) as http:
        runner = RecordedSmi(FileNotFoundError(2, "No such file or directory", "nvidia-smi"))
        choice = await choose_sensor(Settings(), LOCAL, http, smi_runner=runner)
    assert isinstance(choice.sensor, ComfyStatsSensor)
    sim, nvml, smi, comfyui = choice.tried
    assert sim.startswith("sim: GET http://127.0.0.1:8188/sim/sensor")
    assert nvml.startswith("NVML cannot read GPU 0 on this machine")
    assert smi.startswith("nvidia-smi: FileNotFoundError")
    assert comfyui == "comfyui: VRAM only"


async def test_named_sensor_that_does_not_answer_is_a_config_error() -> None:
    async with server({"/system_stats": SYSTEM_STATS}) as http:
        with pytest.raises(ConfigError, match="sensor 'sim' gives no reading.*404"):
            await choose_sensor(Settings(sensor="sim"), LOCAL, http)


async def test_named_comfyui_sensor_has_no_temperature() -> None:
    async with server({"/system_stats": SYSTEM_STATS}) as http:
        choice = await choose_sensor(Settings(sensor="comfyui"), LOCAL, http)
    assert isinstance(choice.sensor, ComfyStatsSensor) and not choice.has_temperature


async def test_named_nvidia_smi_sensor() -> None:
    async with server({}) as http:
        runner = RecordedSmi((0, SMI_BUSY))
        choice = await choose_sensor(Settings(sensor="nvidia-smi"), LOCAL, http, smi_runner=runner)
    assert isinstance(choice.sensor, NvidiaSmiSensor) and choice.has_temperature


async def test_sensor_none() -> None:
    async with server({}) as http:
        choice = await choose_sensor(Settings(sensor="none"), LOCAL, http)
    assert isinstance(choice.sensor, NoSensor)
    assert choice.notice is not None


def test_module_prints_one_reading_of_each_sensor(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 0
    out = capsys.readouterr().out
    assert out.startswith("nvml: ")
    assert "\nnvidia-smi: " in out
