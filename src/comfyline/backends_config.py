"""Which ComfyUI servers a run uses: ``--comfyui URL`` (repeatable), ``COMFYUI_URLS`` or a
``backends.yaml``.

Precedence, highest first:

1. URLs on the command line (``--comfyui`` given once or more);
2. ``settings.backends_file`` (``COMFYLINE_BACKENDS_FILE`` or ``--backends FILE``);
3. ``settings.comfyui_urls`` (``COMFYUI_URLS``, comma-separated);
4. ``settings.comfyui_url`` (``COMFYUI_URL``, one server; the default).

A ``backends.yaml`` names each server and how to watch its card::

    backends:
      - name: big              # how runs, status and reports call it (no spaces)
        url: http://10.0.0.5:8188
        sensor: http://10.0.0.5:9108   # a `comfyline sensor-agent` beside that ComfyUI,
        sensor_token: s3cret           # or auto | nvml | nvidia-smi | comfyui | sim | none
        max_in_flight: 2       # prompts on it at once: 1 or 2
        tags: [night, 4090]    # labels shown in status and the report
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    ValidationError,
    field_validator,
)

from comfyline.comfy.client import check_url
from comfyline.errors import ConfigError, Problem
from comfyline.settings import SensorName, Settings

MAX_BACKENDS = 256
"""More servers than one coordinator is measured to drive (docs/SCALING.md) is a typo."""
_SENSORS = ("auto", "nvml", "nvidia-smi", "comfyui", "sim", "none")
_NAME = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[^\s]+$")]
_TAG = Annotated[
    str,
    # A tag may be written as a number (`tags: [4090]`): it is a label either way.
    BeforeValidator(
        lambda v: str(v) if isinstance(v, int | float) and not isinstance(v, bool) else v
    ),
    Field(min_length=1, max_length=64),
]


class BackendSpec(BaseModel):
    """One server as configured: where it is and how to watch its card."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    name: _NAME = Field(description="Its name in runs, status and reports (no spaces).")
    url: str = Field(description="The ComfyUI base URL, e.g. http://10.0.0.5:8188.")
    sensor: str = Field(
        default="auto",
        description="auto, nvml, nvidia-smi, comfyui, sim, none, or the http(s) URL of a "
        "`comfyline sensor-agent` beside that server.",
    )
    sensor_token: str | None = Field(
        default=None, repr=False, description="The sensor agent's token (default: settings')."
    )
    max_in_flight: int = Field(default=2, ge=1, le=2, description="Prompts on it at once.")
    tags: Annotated[tuple[_TAG, ...], Strict(False)] = Field(
        default=(), description="Labels shown in status and the report."
    )

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _checked_url(value)

    @field_validator("sensor")
    @classmethod
    def _sensor(cls, value: str) -> str:
        if value in _SENSORS:
            return value
        if value.startswith(("http://", "https://")):
            return _checked_url(value)
        raise ValueError(
            f"sensor {value!r} is neither one of {', '.join(_SENSORS)} nor the http(s) URL of "
            "a `comfyline sensor-agent`"
        )

    @property
    def remote_sensor(self) -> bool:
        """Whether the card is read from a sensor agent (``sensor`` is a URL)."""
        return self.sensor.startswith(("http://", "https://"))

    def sensor_setting(self, settings: Settings) -> Settings:
        """``settings`` with this backend's sensor choice (a named one; see guard.sensors)."""
        if self.remote_sensor or self.sensor == settings.sensor:
            return settings
        name: SensorName = self.sensor  # type: ignore[assignment]  # checked by _sensor
        return settings.model_copy(update={"sensor": name})


class BackendsFile(BaseModel):
    """The whole ``backends.yaml``."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    # Strict(False): YAML gives lists; they are kept as tuples (frozen).
    backends: Annotated[tuple[BackendSpec, ...], Strict(False)] = Field(
        min_length=1, max_length=MAX_BACKENDS
    )


def backend_specs(settings: Settings, urls: Sequence[str] = ()) -> list[BackendSpec]:
    """The servers to use, by the precedence in the module docs. Names are unique."""
    if urls:
        specs = [_from_url(url) for url in urls]
    elif settings.backends_file is not None:
        specs = load_backends_file(settings.backends_file)
    elif settings.comfyui_urls:
        specs = [_from_url(url) for url in settings.comfyui_urls]
    else:
        specs = [_from_url(settings.comfyui_url)]
    _check_unique(specs, settings.backends_file if not urls else None)
    return specs


def load_backends_file(path: Path) -> list[BackendSpec]:
    """Read and check a ``backends.yaml``; :class:`ConfigError` listing every problem, each
    with its line."""
    from comfyline.orders.problems import translate
    from comfyline.orders.yaml_source import parse_yaml_bytes

    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the backends file {path}: {exc}") from exc
    doc, problems = parse_yaml_bytes(raw, str(path))
    if doc is not None and not problems:
        try:
            return list(BackendsFile.model_validate(doc.data).backends)
        except ValidationError as exc:
            problems = translate(exc, doc, BackendsFile)
    raise ConfigError(_problems_text(path, problems))


def _checked_url(url: str) -> str:
    try:
        return check_url(url)
    except ConfigError as exc:  # pydantic reports ValueErrors, with the line of the value
        raise ValueError(str(exc)) from None


def _from_url(url: str) -> BackendSpec:
    # A server given by its URL is named by it: ledgers, status and resume hints show it.
    url = check_url(url.strip())
    return BackendSpec(name=url, url=url)


def _check_unique(specs: list[BackendSpec], file: Path | None) -> None:
    for what, keys in (("name", [s.name for s in specs]), ("URL", [s.url for s in specs])):
        twice = sorted({key for key in keys if keys.count(key) > 1})
        if twice:
            where = f" in {file}" if file else ""
            raise ConfigError(
                f"the server {what} {twice[0]!r} is given twice{where}; give each server once "
                "(two entries for one server would double its prompts in flight)"
            )


def _problems_text(path: Path, problems: list[Problem]) -> str:
    lines = "\n".join(f"  {p}" for p in problems) or "  it holds no `backends:` list"
    return f"the backends file {path} is not usable:\n{lines}"
