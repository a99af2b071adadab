"""The hardware guard: keeps the GPU under its temperature limit and inside its memory.

- :mod:`~comfyline.guard.sensors`: where readings come from, and :func:`choose_sensor`;
- :mod:`~comfyline.guard.policy`: :class:`Guard`, the gate before each prompt;
- :mod:`~comfyline.guard.memory`: what to do on an out-of-memory error.
"""

from comfyline.guard.memory import (
    OomDecision,
    OomRecovery,
    describe,
    next_step_down,
    wait_for_memory_freed,
)
from comfyline.guard.policy import (
    EventKind,
    Guard,
    GuardEvent,
    GuardStats,
    Limits,
    Sample,
)
from comfyline.guard.sensors import (
    ComfyStatsSensor,
    NoSensor,
    NvidiaSmiSensor,
    NvmlSensor,
    Reading,
    Sensor,
    SensorChoice,
    SimSensor,
    choose_sensor,
    parse_smi_line,
    parse_system_stats,
    read_all,
)

__all__ = [
    "ComfyStatsSensor",
    "EventKind",
    "Guard",
    "GuardEvent",
    "GuardStats",
    "Limits",
    "NoSensor",
    "NvidiaSmiSensor",
    "NvmlSensor",
    "OomDecision",
    "OomRecovery",
    "Reading",
    "Sample",
    "Sensor",
    "SensorChoice",
    "SimSensor",
    "choose_sensor",
    "describe",
    "next_step_down",
    "parse_smi_line",
    "parse_system_stats",
    "read_all",
    "wait_for_memory_freed",
]
