"""The five quality levels, as data, in one place, and the validated generation parameters.

The table is the user's own (stage 1 report). ``pause`` and ``max_batch`` are pacing values: the
pause applies between images only when no temperature sensor is available (see the guard), and
``max_batch`` is the number of images in a row after which the server's memory is freed and the
card cools to its resume temperature.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from comfyline.errors import ConfigError

LevelName = Literal["preview", "standard", "high", "max", "experimental"]


def _multiple_of_8(value: int) -> int:
    if value % 8:
        raise ValueError(f"must be a multiple of 8, got {value} (try {value // 8 * 8 or 8})")
    return value


Size = Annotated[int, Field(ge=64, le=8192), AfterValidator(_multiple_of_8)]


class GenerationParams(BaseModel):
    """The sampling parameters of one request. Sampler and scheduler names are checked
    against the server's own lists by the adapter, since they differ between versions."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    width: Size
    height: Size
    steps: int = Field(ge=1, le=1000)
    cfg: float = Field(gt=0, le=100)
    sampler: str = Field(default="euler", min_length=1)
    scheduler: str = Field(default="normal", min_length=1)
    batch_size: int = Field(default=1, ge=1, le=64)
    denoise: float = Field(default=1.0, gt=0, le=1)


class QualityLevel(BaseModel):
    """One row of the table: default parameters plus the pacing values."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: LevelName
    params: GenerationParams
    pause_s: float = Field(ge=0)
    max_batch: int = Field(ge=1)


def _level(
    name: LevelName, size: int, steps: int, cfg: float, pause: float, batch: int
) -> QualityLevel:
    params = GenerationParams(width=size, height=size, steps=steps, cfg=cfg)
    return QualityLevel(name=name, params=params, pause_s=pause, max_batch=batch)


LEVELS: dict[str, QualityLevel] = {
    level.name: level
    for level in (
        _level("preview", 256, 6, 4.0, 1.5, 100),
        _level("standard", 320, 8, 5.0, 2.0, 50),
        _level("high", 384, 10, 6.0, 2.5, 20),
        _level("max", 448, 12, 6.5, 3.0, 10),
        _level("experimental", 512, 15, 7.0, 4.0, 5),
    )
}
LEVEL_ORDER: tuple[str, ...] = tuple(LEVELS)


def get_level(name: str) -> QualityLevel:
    """The level called ``name``; a :class:`ConfigError` naming the allowed ones otherwise."""
    try:
        return LEVELS[name]
    except KeyError:
        raise ConfigError(
            f"unknown quality level {name!r} (allowed: {', '.join(LEVEL_ORDER)})"
        ) from None


def lower_level(name: str) -> str | None:
    """The next lower level, or None below ``preview``."""
    index = LEVEL_ORDER.index(name)
    return LEVEL_ORDER[index - 1] if index > 0 else None


def params_for(level: str, **overrides: Any) -> GenerationParams:
    """The level's parameters with ``overrides`` applied and validated.

    >>> params_for("standard", steps=12).steps
    12
    """
    base = get_level(level).params
    try:
        return GenerationParams.model_validate({**base.model_dump(), **overrides})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"invalid overrides for level {level!r}: {problems}") from exc
