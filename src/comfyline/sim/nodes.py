"""What the simulated nodes do: just enough to know each image's size, seed and prompt.

No diffusion happens. Values flowing through the graph are :class:`Value` records: a latent or
an image (size, batch, seed, prompt text) or a conditioning (its text). Known nodes change them
(EmptyLatentImage makes a latent, the samplers stamp seed and text, the upscalers resize, VAE
decode turns a latent into an image); any other node passes the first input of each of its
output types through, so custom nodes (a face detailer: IMAGE in, IMAGE out) keep the size.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

#: Node classes whose execution is the sampler loop (progress per step, heat, interrupt).
SAMPLERS = frozenset({"KSampler", "KSamplerAdvanced", "SamplerCustom", "SamplerCustomAdvanced"})


class NodeFailure(Exception):
    """A simulated node raised; becomes an ``execution_error``."""

    def __init__(self, exception_type: str, message: str) -> None:
        self.exception_type = exception_type
        super().__init__(message)


@dataclass(frozen=True)
class Value:
    """What flows along one link: a latent, an image, a conditioning or a model-ish thing."""

    kind: str
    width: int = 512
    height: int = 512
    batch: int = 1
    seed: int | None = None
    text: str = ""
    steps: int | None = None


@dataclass(frozen=True)
class SamplerWork:
    """The sampler loop a node runs: how many steps over how many pixels."""

    steps: int
    pixels: int
    seed: int | None


Inputs = dict[str, Any]  # input name -> constant or resolved Value (or None)


def sampler_work(class_type: str, inputs: Inputs) -> SamplerWork | None:
    """The sampler loop of a node, or None when the node is not a sampler."""
    if class_type not in SAMPLERS:
        return None
    latent = _first(inputs, "LATENT")
    pixels = latent.width * latent.height * latent.batch if latent else 512 * 512
    steps = inputs.get("steps")
    if not isinstance(steps, int):
        sigmas = inputs.get("sigmas")
        steps = sigmas.steps if isinstance(sigmas, Value) and sigmas.steps else 20
    return SamplerWork(steps=max(1, steps), pixels=pixels, seed=_seed(inputs))


def evaluate(
    class_type: str, inputs: Inputs, output_types: list[str], upscale_factor: int
) -> list[Value | None]:
    """The outputs of one node (one per output slot)."""
    special = _special(class_type, inputs, upscale_factor)
    if special is not None:
        return special
    outs: list[Value | None] = []
    for kind in output_types:
        found = _first(inputs, kind)
        outs.append(found if found is not None else Value(kind=kind))
    return outs


def _special(class_type: str, inputs: Inputs, factor: int) -> list[Value | None] | None:
    if class_type == "EmptyLatentImage":
        size = (int(inputs["width"]), int(inputs["height"]), int(inputs["batch_size"]))
        return [Value("LATENT", *size)]
    if class_type in ("CLIPTextEncode", "CLIPTextEncodeSDXL"):
        return [Value("CONDITIONING", text=str(inputs.get("text", inputs.get("text_g", ""))))]
    if class_type in SAMPLERS:
        return [_sample(inputs)] * (2 if class_type.startswith("SamplerCustom") else 1)
    if class_type in ("LatentUpscale", "ImageScale"):
        return [_resize_to(inputs, "LATENT" if class_type == "LatentUpscale" else "IMAGE")]
    if class_type in ("LatentUpscaleBy", "ImageScaleBy"):
        kind = "LATENT" if class_type == "LatentUpscaleBy" else "IMAGE"
        return [_scale_by(_first(inputs, kind) or Value(kind), float(inputs["scale_by"]))]
    if class_type == "ImageUpscaleWithModel":
        image = _first(inputs, "IMAGE") or Value("IMAGE")
        return [replace(image, width=image.width * factor, height=image.height * factor)]
    if class_type in ("VAEDecode", "VAEDecodeTiled"):
        return [replace(_first(inputs, "LATENT") or Value("LATENT"), kind="IMAGE")]
    if class_type in ("VAEEncode", "VAEEncodeTiled"):
        return [replace(_first(inputs, "IMAGE") or Value("IMAGE"), kind="LATENT")]
    if class_type in ("CFGGuider", "BasicGuider", "DualCFGGuider"):
        cond = next((inputs[n] for n in ("positive", "conditioning", "cond1") if n in inputs), None)
        return [Value("GUIDER", text=cond.text if isinstance(cond, Value) else "")]
    if class_type in ("RandomNoise",):
        return [Value("NOISE", seed=int(inputs.get("noise_seed", 0)))]
    if class_type in ("BasicScheduler", "KarrasScheduler", "SDTurboScheduler"):
        return [Value("SIGMAS", steps=int(inputs.get("steps", 1)))]
    return None


def _sample(inputs: Inputs) -> Value:
    latent = _first(inputs, "LATENT") or Value("LATENT")
    positive = inputs.get("positive")
    if positive is None and isinstance(inputs.get("guider"), Value):
        positive = inputs["guider"]
    text = positive.text if isinstance(positive, Value) else latent.text
    return replace(latent, kind="LATENT", seed=_seed(inputs), text=text)


def _seed(inputs: Inputs) -> int | None:
    for name in ("seed", "noise_seed"):
        if isinstance(inputs.get(name), int):
            return int(inputs[name])
    noise = inputs.get("noise")
    return noise.seed if isinstance(noise, Value) else None


def _resize_to(inputs: Inputs, kind: str) -> Value:
    source = _first(inputs, kind) or Value(kind)
    width, height = int(inputs.get("width", 0)), int(inputs.get("height", 0))
    if width == 0 and height == 0:
        return source
    if width == 0:
        width = max(1, round(source.width * height / source.height))
    if height == 0:
        height = max(1, round(source.height * width / source.width))
    return replace(source, width=width, height=height)


def _scale_by(source: Value, scale: float) -> Value:
    # Latents are 1/8 of the image size; a latent that rounds to 0 makes torch raise, exactly
    # what recording 07 shows.
    unit = 8 if source.kind == "LATENT" else 1
    in_w, in_h = source.width // unit, source.height // unit
    out_w, out_h = round(in_w * scale), round(in_h * scale)
    if out_w <= 0 or out_h <= 0:
        raise NodeFailure(
            "RuntimeError",
            "Input and output sizes should be greater than 0, but got input "
            f"(H: {in_h}, W: {in_w}) output (H: {out_h}, W: {out_w})\n",
        )
    return replace(source, width=out_w * unit, height=out_h * unit)


def _first(inputs: Inputs, kind: str) -> Value | None:
    for value in inputs.values():
        if isinstance(value, Value) and value.kind == kind:
            return value
    return None
