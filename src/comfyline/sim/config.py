"""The simulator's settings: timing, installed models, faults and the thermal model.

Every duration is in *model* seconds. The simulator sleeps ``duration * time_scale`` real seconds
for it, and the thermal model advances by the model seconds, so ``time_scale=0.01`` runs a
300-image thermal benchmark 100x faster than real time with the same temperatures.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from comfyline.errors import ConfigError

DEEP_JSON_LEVELS = 100_000
"""How deep the ``deep_json_*`` faults nest their arrays."""


def deep_json() -> str:
    """:data:`DEEP_JSON_LEVELS` nested empty arrays (``[[[...]]]``), written without recursion."""
    return "[" * DEEP_JSON_LEVELS + "]" * DEEP_JSON_LEVELS


@dataclass(frozen=True)
class Faults:
    """Faults to inject. All off by default; settable at run time through ``POST /sim/faults``.

    Prompt counts are 1-based and count every prompt the worker *starts* since the simulator
    started (restarts do not reset them).
    """

    #: Fail these prompts (by execution count) with an ``execution_error`` in the sampler.
    error_on_prompts: tuple[int, ...] = ()
    #: Fail every prompt whose sampler seed is in this list.
    error_on_seeds: tuple[int, ...] = ()
    #: Out-of-memory when width * height * batch of a sampler's latent exceeds this many pixels.
    oom_above_pixels: int | None = None
    #: Restart the server (connections dropped, queue/history/cache lost) after this many
    #: executed prompts (counted since the last restart).
    restart_after_prompts: int | None = None
    #: These prompts (by execution count) black the server out as they start, as an
    #: overheating card does: the prompt is lost, and the server is away ``blackout_away_s``
    #: real seconds with its queue, history and connections gone.
    blackout_on_prompts: tuple[int, ...] = ()
    blackout_away_s: float = 0.5
    #: Close every WebSocket (the server stays up) after this many executed prompts.
    drop_ws_after_prompts: int | None = None
    #: These prompts (by execution count) never finish until /interrupt or shutdown (they hang
    #: in their sampler, or in their upscale node when they have no sampler).
    stuck_on_prompts: tuple[int, ...] = ()
    #: Every prompt whose sampler seed is in this list hangs the same way (each time it runs).
    stuck_on_seeds: tuple[int, ...] = ()
    #: These prompts' SaveImage writes bytes that do not decode (a PNG signature, then junk),
    #: as a failing disk or a broken custom node would.
    corrupt_image_on_prompts: tuple[int, ...] = ()
    #: These prompts' images are cut to half their bytes: the PNG header (and so the size it
    #: states) is whole, the pixel data is not; only decoding the whole image notices.
    truncated_image_on_prompts: tuple[int, ...] = ()
    #: These prompts' images are all black (a NaN in the VAE does that): whole, valid PNGs
    #: that only a quality check catches.
    black_image_on_prompts: tuple[int, ...] = ()
    #: Every prompt whose positive text contains this makes black images, each time it runs.
    black_image_on_text: str | None = None
    #: These prompts' images are seeded noise: incompressible, so each PNG is as large as its
    #: pixels (a 256x256 image about 197 KB), for tests that need one big file.
    noise_images_on_prompts: tuple[int, ...] = ()
    #: These prompts' images are saved at half the width and height the graph asks for.
    wrong_size_on_prompts: tuple[int, ...] = ()
    #: The first ``/view`` of each image of these prompts states the file's full Content-Length,
    #: sends half of it and closes the connection (a download cut off); later ones are whole.
    short_view_on_prompts: tuple[int, ...] = ()
    #: These prompts' SaveImage saves and lists ``extra_images`` images more than its batch
    #: (as a broken custom node could); in the ``executed`` message and ``/history`` alike.
    extra_images_on_prompts: tuple[int, ...] = ()
    extra_images: int = 39
    #: These prompts' ``executed`` WebSocket messages carry their ``output`` as a list of the
    #: object ComfyUI sends (``/history`` stays as ComfyUI writes it).
    list_output_on_prompts: tuple[int, ...] = ()
    #: Close every WebSocket (the server stays up) when these prompts (by execution count)
    #: start: they run while their client cannot hear them.
    drop_ws_on_prompts: tuple[int, ...] = ()
    #: With ``drop_ws_after_prompts``/``drop_ws_on_prompts``: after the drop, refuse new
    #: WebSockets (HTTP keeps answering) until the queue is empty, so that the prompts in flight
    #: finish while their client cannot hear them and it has to settle them from ``/history``.
    ws_down_until_idle: bool = False
    #: Ignore the ``prompt_id`` a client sends with ``POST /prompt`` and assign one of its own
    #: (as servers before ``prompt_id`` was accepted, or patched ones, do).
    own_prompt_ids: bool = False
    #: Answer ``/history`` and ``/history/{id}`` with :data:`DEEP_JSON_LEVELS` nested arrays
    #: (valid JSON that a recursive parser cannot read), as a hostile or broken server would.
    deep_json_history: bool = False
    #: Send each WebSocket message after a frame of :data:`DEEP_JSON_LEVELS` nested arrays.
    deep_json_ws: bool = False
    #: What ``/system_stats`` gives as ``system.comfyui_version`` (any JSON value; ComfyUI
    #: gives a version string).
    comfyui_version: Any = "0.3.64"

    def to_json(self) -> dict[str, Any]:
        """The faults as a JSON-able dict (the body of ``GET /sim/faults``)."""
        return {f.name: _jsonable(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_json(cls, data: dict[str, Any], base: Faults | None = None) -> Faults:
        """Faults from a (partial) JSON object; keys not given keep ``base``'s values."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown fault setting(s) {unknown}; known ones are {sorted(known)}")
        counts = {f.name for f in fields(cls) if isinstance(f.default, tuple)}
        changes: dict[str, Any] = {}
        for key, value in data.items():
            listed = isinstance(value, list) and key in counts
            changes[key] = tuple(int(v) for v in value) if listed else value
        return replace(base or cls(), **changes)


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


@dataclass(frozen=True)
class ThermalConfig:
    """Parameters of the two-time-constant thermal model (see :mod:`comfyline.sim.thermal`)."""

    room_c: float = 25.0
    #: Steady-state rise over room of the idle card (fans and idle power).
    idle_rise_c: float = 18.0
    #: Steady-state rise of the fast (die) part under full load ("heat per busy second" is
    #: die_rise_c / die_tau_s at the start of work).
    die_rise_c: float = 56.0
    #: Time constant of the die part.
    die_tau_s: float = 3.5
    #: Steady-state rise of the slow (heatsink) part under full load.
    sink_rise_c: float = 20.0
    #: Time constant of the heatsink part.
    sink_tau_s: float = 400.0
    #: Past this the simulated card blacks out (the server drops everything and goes away).
    blackout_c: float = 85.0
    #: How long a blackout keeps the server away, in model seconds.
    blackout_s: float = 30.0
    idle_power_w: float = 25.0
    busy_power_w: float = 170.0


@dataclass(frozen=True)
class SimConfig:
    """Everything the simulator can be told. Defaults: as fast as possible, no faults."""

    host: str = "127.0.0.1"
    port: int = 0
    #: Seconds per sampler step at 512x512, batch 1; scaled linearly by pixels.
    step_s: float = 0.0
    #: Fixed seconds per executed (not fully cached) prompt, the simulator's own work (rendering,
    #: saving) counted in; sampler steps (``step_s``) add to it.
    fixed_prompt_s: float = 0.0
    #: Delay of the first prompt after start, a restart or /free with unload_models.
    model_load_s: float = 0.0
    #: Real seconds per model second (0.01 = 100x faster than real time).
    time_scale: float = 1.0
    checkpoints: tuple[str, ...] = ("sim-sd15.safetensors",)
    #: The card's name in /system_stats; comfyline tells its simulator by it. Tests that need
    #: a server comfyline takes for a real ComfyUI give another name.
    device_name: str = "cuda:0 Simulated GPU (comfyline) : cudaMallocAsync"
    loras: tuple[str, ...] = ()
    #: VAE files (models/vae); VAELoader also offers "pixel_space", as ComfyUI does.
    vaes: tuple[str, ...] = ()
    upscale_models: tuple[str, ...] = ()
    #: Scale factor of ImageUpscaleWithModel.
    upscale_model_factor: int = 4
    output_dir: Path = Path("comfy-sim/output")
    temp_dir: Path | None = None
    #: Where /upload/image puts files and LoadImage reads them (default: beside output_dir).
    input_dir: Path | None = None
    #: Extra object_info JSON files: node classes (custom nodes) the server "has installed".
    object_info_files: tuple[Path, ...] = ()
    vram_total_bytes: int = 12 * 1024**3
    #: VRAM taken while a model is loaded.
    model_vram_bytes: int = 4 * 1024**3
    faults: Faults = field(default_factory=Faults)
    #: None: no thermal model (no temperature in /system_stats, /sim/sensor answers 404).
    thermal: ThermalConfig | None = None

    def __post_init__(self) -> None:
        for name in ("step_s", "fixed_prompt_s", "model_load_s"):
            if getattr(self, name) < 0:
                raise ConfigError(f"SimConfig.{name} must be >= 0 but is {getattr(self, name)}")
        if self.time_scale <= 0:
            raise ConfigError(f"SimConfig.time_scale must be > 0 but is {self.time_scale}")
        # Accept lists for convenience; store tuples so the config stays hashable and frozen.
        for name in ("checkpoints", "loras", "vaes", "upscale_models", "object_info_files"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        object.__setattr__(self, "output_dir", Path(self.output_dir))

    @property
    def resolved_temp_dir(self) -> Path:
        """Where PreviewImage writes (``type: temp``)."""
        return self.temp_dir or self.output_dir.parent / (self.output_dir.name + "-temp")

    @property
    def resolved_input_dir(self) -> Path:
        """Where uploads go and LoadImage reads (``type: input``)."""
        return self.input_dir or self.output_dir.parent / (self.output_dir.name + "-input")
