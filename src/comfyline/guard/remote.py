"""A card on another machine, read from the ``comfyline sensor-agent`` that runs beside it.

The agent (:mod:`comfyline.sensor_agent`) answers ``GET /reading`` with the local NVML or
``nvidia-smi`` reading as JSON; :class:`RemoteSensor` is the guard's side of it. Like every
sensor it never raises during a run: a refused token or an agent that is down gives None and
the reason in ``last_error``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import httpx

from comfyline.guard.sensors import Reading

READING_PATH = "/reading"
TOKEN_HEADER = "authorization"


def reading_to_json(reading: Reading) -> dict[str, Any]:
    """A :class:`Reading` as the agent sends it."""
    data = dataclasses.asdict(reading)
    data["clock_event_reasons"] = list(reading.clock_event_reasons)
    return data


def reading_from_json(data: Mapping[str, Any]) -> Reading:
    """The :class:`Reading` in an agent's answer; ValueError when a value has the wrong type."""

    def number(key: str) -> float | None:
        value = data.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{key} is {value!r}, not a number")
        return float(value)

    def whole(key: str) -> int | None:
        value = number(key)
        return None if value is None else int(value)

    throttling = data.get("thermal_throttling")
    reasons = data.get("clock_event_reasons") or ()
    return Reading(
        temperature_c=number("temperature_c"),
        slowdown_c=number("slowdown_c"),
        power_w=number("power_w"),
        vram_used_bytes=whole("vram_used_bytes"),
        vram_total_bytes=whole("vram_total_bytes"),
        utilization=number("utilization"),
        thermal_throttling=throttling if isinstance(throttling, bool) else None,
        clock_event_reasons=tuple(str(r) for r in reasons),
    )


class RemoteSensor:
    """The card behind a ``comfyline sensor-agent`` at ``base_url``, read over HTTP.

    ``token`` is sent as ``Authorization: Bearer <token>`` (the agent requires one when it
    listens beyond its own machine).
    """

    name = "agent"

    def __init__(
        self,
        base_url: str,
        http: httpx.AsyncClient,
        *,
        token: str | None = None,
        timeout_s: float = 5.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = http
        self._headers = {TOKEN_HEADER: f"Bearer {token}"} if token else {}
        self._timeout_s = timeout_s
        self.last_error: str | None = None

    async def read(self) -> Reading | None:
        """One reading from the agent; None (with ``last_error``) when it gives none."""
        url = self.base_url + READING_PATH
        try:
            response = await self._http.get(url, headers=self._headers, timeout=self._timeout_s)
        except httpx.HTTPError as exc:
            self.last_error = f"GET {url}: {type(exc).__name__}: {exc}"
            return None
        if response.status_code == 401:
            self.last_error = f"the sensor agent at {self.base_url} refused the token"
            return None
        try:
            response.raise_for_status()
            body = response.json()
            if body.get("reading") is None:
                self.last_error = f"the agent has no reading: {body.get('error')}"
                return None
            return reading_from_json(body["reading"])
        except (httpx.HTTPError, ValueError, TypeError, AttributeError, RecursionError) as exc:
            self.last_error = f"GET {url}: {type(exc).__name__}: {exc}"
            return None
