"""Shared fixtures. The environment is cleaned for every test so that no developer setting
(COMFYUI_URL, COMFYLINE_*) leaks into a test."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def clean_environ() -> Iterator[None]:
    saved = dict(os.environ)
    for key in list(os.environ):
        if key.startswith("COMFYLINE_") or key == "COMFYUI_URL":
            del os.environ[key]
    yield
    os.environ.clear()
    os.environ.update(saved)


# --- the ComfyUI simulator (comfyline.sim) --------------------------------------------------

from collections.abc import Callable  # noqa: E402
from contextlib import AbstractContextManager  # noqa: E402
from typing import Any  # noqa: E402

from comfyline.sim import SimConfig, SimulatorHandle, running_simulator  # noqa: E402


@pytest.fixture
def make_sim(tmp_path: Any) -> Callable[..., AbstractContextManager[SimulatorHandle]]:
    """A factory: ``with make_sim(step_s=0.01) as sim: ...`` serves a simulator with zero
    latency (unless overridden) whose images go under ``tmp_path/"comfy-out"``."""

    def factory(**overrides: Any) -> AbstractContextManager[SimulatorHandle]:
        overrides.setdefault("output_dir", tmp_path / "comfy-out")
        return running_simulator(SimConfig(**overrides))

    return factory


@pytest.fixture
def sim(
    make_sim: Callable[..., AbstractContextManager[SimulatorHandle]],
) -> Iterator[SimulatorHandle]:
    """A running simulator: zero latency, no faults, output under ``tmp_path/"comfy-out"``."""
    with make_sim() as handle:
        yield handle
