"""The one typed settings object, built once in the CLI and passed down.

Precedence, highest first:
1. command-line options (the CLI passes them as keyword arguments);
2. environment variables ``COMFYLINE_<FIELD>`` (and ``COMFYUI_URL`` for the server's URL,
   ``COMFYUI_URLS`` for several, comma-separated);
3. the defaults below.
No other module reads the environment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

SensorName = Literal["auto", "nvml", "nvidia-smi", "comfyui", "sim", "none"]


class Settings(BaseSettings):
    """Every tunable of comfyline, with its unit in its name."""

    model_config = SettingsConfigDict(env_prefix="COMFYLINE_", extra="forbid", frozen=True)

    comfyui_url: str = Field(
        default="http://127.0.0.1:8188",
        validation_alias=AliasChoices("COMFYLINE_COMFYUI_URL", "COMFYUI_URL", "comfyui_url"),
        description="Base URL of the ComfyUI server.",
    )
    comfyui_urls: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        validation_alias=AliasChoices("COMFYLINE_COMFYUI_URLS", "COMFYUI_URLS", "comfyui_urls"),
        description="Several ComfyUI servers, comma-separated; used instead of comfyui_url.",
    )
    backends_file: Path | None = Field(
        default=None,
        description="A backends.yaml naming the servers (name, url, sensor, max_in_flight, tags).",
    )
    probe_interval_s: float = Field(
        default=5.0, gt=0, description="How often a lost server is asked whether it is back."
    )
    sensor_token: SecretStr | None = Field(
        default=None,
        description="Token of `comfyline sensor-agent`: required by it when it listens beyond "
        "this machine, sent to it by backends whose sensor is an agent's URL.",
    )
    notify_urls: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        repr=False,  # Apprise URLs carry bot tokens and passwords
        description="Apprise URLs (comma- or space-separated) told when an order completes, "
        "fails, stops on heat, or a server is lost; none by default.",
    )
    line_poll_s: float = Field(
        default=5.0, gt=0, description="How often `comfyline line --watch` looks for new orders."
    )
    line_max_orders: int = Field(
        default=2, ge=1, le=64, description="Orders the line runs at once (they share servers)."
    )
    checkpoint: str | None = Field(
        default=None, description="Checkpoint file name; None: the only one on the server."
    )
    connect_timeout_s: float = Field(default=5.0, gt=0, description="TCP connect timeout.")
    http_timeout_s: float = Field(default=30.0, gt=0, description="Timeout of one HTTP call.")
    first_prompt_timeout_s: float = Field(
        default=120.0, gt=0, description="Deadline of the first prompt (model loading)."
    )
    prompt_timeout_factor: float = Field(
        default=10.0, gt=1, description="Later prompts: this many times the slowest seen so far."
    )
    min_prompt_timeout_s: float = Field(
        default=30.0, gt=0, description="Later prompts never get less than this."
    )
    download_timeout_s: float = Field(
        default=120.0, gt=0, description="Total time one image download may take."
    )
    reconnect_timeout_s: float = Field(
        default=120.0, ge=0, description="How long to wait for a server that went away."
    )
    flap_reconnects: int = Field(
        default=5,
        ge=1,
        description="Stop when a server went away this many times within flap_window_s "
        "without finishing a prompt (a flapping server); its prompts are re-sent until then.",
    )
    flap_window_s: float = Field(
        default=600.0, gt=0, description="The window of flap_reconnects, in seconds."
    )
    output_root: Path = Field(
        default=Path("sd/outputs"), description="Folder under which every order writes."
    )
    pause_s: float | None = Field(
        default=None,
        ge=0,
        description="Pause between images when no temperature sensor is available; "
        "None: the quality level's.",
    )
    series_pause_s: float = Field(
        default=30.0,
        ge=0,
        description="Cool-down after a level's 'max batch' images in a row, when no temperature "
        "sensor is available (with one, the card cools to the resume temperature instead).",
    )
    sensor: SensorName = Field(default="auto", description="Temperature/VRAM sensor to use.")
    gpu_index: int = Field(default=0, ge=0, description="Which local GPU NVML/nvidia-smi read.")
    sensor_interval_s: float = Field(
        default=1.0, gt=0, description="How often the guard reads the sensor while holding."
    )
    target_temp_c: float = Field(default=78.0, description="Hold new prompts at or above this.")
    resume_temp_c: float = Field(default=72.0, description="Release held prompts at or below.")
    critical_temp_c: float = Field(default=83.0, description="Free memory and wait at this.")
    creator: str | None = Field(
        default=None, description="Creator written into exported JPEGs (IPTC By-line, dc:creator)."
    )
    copyright: str | None = Field(
        default=None, description="Copyright notice written into exported JPEGs."
    )
    cool_timeout_s: float = Field(
        default=600.0, gt=0, description="Give up (stop cleanly) if not cooled by then."
    )
    token: SecretStr | None = Field(
        default=None,
        description="The web dashboard's access token when it listens beyond loopback; "
        "None: `comfyline serve` makes one at start and prints it.",
    )

    @field_validator("comfyui_urls", "notify_urls", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        # From the environment: "http://a:8188,http://b:8188" (commas or spaces).
        if isinstance(value, str):
            return tuple(part for part in value.replace(",", " ").split() if part)
        return value
