"""The node definitions the simulated server "has installed".

The base is the ``/object_info`` body recorded from a real ComfyUI v0.3.64 (477 node classes,
shipped gzipped beside this module: data, not ComfyUI code). The model lists in it are replaced
by the simulator's configured checkpoints, LoRAs, VAEs and upscale models, and extra object_info
files add node classes (custom nodes) or replace recorded ones.
"""

from __future__ import annotations

import copy
import gzip
import json
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from comfyline.errors import ConfigError

NodeDefs = dict[str, dict[str, Any]]

# The checkpoint list of the server the recording came from; every combo equal to it is a
# checkpoint combo.
_RECORDED_CHECKPOINTS = ["tiny-sd15-klvae.safetensors", "tiny-sd15.safetensors"]


@cache
def _recorded() -> NodeDefs:
    blob = resources.files("comfyline.sim").joinpath("object_info.json.gz").read_bytes()
    data: NodeDefs = json.loads(gzip.decompress(blob))
    return data


def load_node_defs(
    checkpoints: tuple[str, ...],
    loras: tuple[str, ...] = (),
    upscale_models: tuple[str, ...] = (),
    extra_files: tuple[Path, ...] = (),
    *,
    vaes: tuple[str, ...] = (),
) -> NodeDefs:
    """Node definitions with the given model lists and the extra files merged in."""
    defs = copy.deepcopy(_recorded())
    for name, node in defs.items():
        _set_model_lists(name, node, list(checkpoints), list(loras), list(upscale_models))
    # ComfyUI lists the files of models/vae, then "pixel_space" (recorded: no files, just it).
    defs["VAELoader"]["input"]["required"]["vae_name"][0] = [*vaes, "pixel_space"]
    for path in extra_files:
        defs.update(_read_extra(path))
    return defs


def _read_extra(path: Path) -> NodeDefs:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"cannot read the object_info file {path}: {exc}; give a JSON file shaped like "
            "ComfyUI's GET /object_info body"
        ) from exc
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise ConfigError(
            f"the object_info file {path} must hold an object of node classes "
            '({"ClassName": {"input": {...}, "output": [...], ...}}), not '
            f"{type(data).__name__}"
        )
    return data


def _set_model_lists(
    name: str, node: dict[str, Any], ckpts: list[str], loras: list[str], upscalers: list[str]
) -> None:
    for section in ("required", "optional"):
        inputs = node.get("input", {}).get(section, {})
        for input_name, spec in inputs.items():
            if not isinstance(spec, list) or not spec:
                continue
            if spec[0] == _RECORDED_CHECKPOINTS:
                spec[0] = list(ckpts)
            elif input_name == "lora_name" and isinstance(spec[0], list):
                spec[0] = list(loras)
            elif name == "UpscaleModelLoader" and input_name == "model_name":
                spec[1]["options"] = list(upscalers)


def combo_options(spec: list[Any]) -> list[Any] | None:
    """The allowed values of a combo input spec (both the old and the V3 form), else None."""
    if isinstance(spec[0], list):
        return spec[0]
    if spec[0] == "COMBO" and len(spec) > 1 and isinstance(spec[1], dict):
        options = spec[1].get("options", [])
        return options if isinstance(options, list) else []
    return None


def input_spec(node: dict[str, Any], input_name: str) -> list[Any] | None:
    """The spec of one input of a node definition (required, optional or hidden)."""
    for section in ("required", "optional"):
        spec = node.get("input", {}).get(section, {}).get(input_name)
        if spec is not None:
            return list(spec) if isinstance(spec, list | tuple) else [spec]
    return None
