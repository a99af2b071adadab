"""Checking a filled graph against a server's ``/object_info`` before any image is made.

What is checked, every problem collected (not just the first):

- every node's class_type is installed on the server;
- every required input is present;
- every literal value fits: numbers inside the server's min/max, choices (checkpoints, LoRAs,
  samplers, schedulers, upscale models...) in the server's own lists, booleans and strings of
  their type;
- every link points at an existing node, at an output that node has, of a matching type;
- the graph has at least one output node (SaveImage...), or ComfyUI would refuse it.

``object_info`` is the parsed JSON of ``GET /object_info``. Choice inputs come in two shapes:
``[[option, ...], {...}]`` and, for V3 nodes, ``["COMBO", {"options": [...]}]``.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from comfyline.errors import WorkflowCheckFailed
from comfyline.workflows.graph import Graph, describe, is_link, node_ids

ObjectInfo = Mapping[str, Any]

# Where the files behind a choice input live on the server, to say where a missing one goes.
_MODEL_FOLDERS = {
    "ckpt_name": ("checkpoint", "checkpoints"),
    "lora_name": ("LoRA", "loras"),
    "vae_name": ("VAE", "vae"),
    "control_net_name": ("ControlNet model", "controlnet"),
    "unet_name": ("diffusion model", "diffusion_models"),
    "clip_name": ("text encoder", "text_encoders"),
    "clip_name1": ("text encoder", "text_encoders"),
    "clip_name2": ("text encoder", "text_encoders"),
}
_UPSCALE_LOADERS = ("UpscaleModelLoader",)
_MAX_LISTED = 12


def check_graph(
    graph: Graph,
    object_info: ObjectInfo,
    *,
    server: str = "the server",
    skip: Collection[str | tuple[str, object]] = (),
) -> list[str]:
    """Every way ``graph`` does not fit the server described by ``object_info`` (empty: fits).

    ``server`` (the base URL) is used in the messages. ``skip`` holds input names, or
    (input name, value) pairs, whose values are not checked (the caller reported them).
    """
    problems: list[str] = []
    for node_id in node_ids(graph):
        problems += _node_problems(graph, node_id, object_info, server, skip)
    if not any(object_info.get(n["class_type"], {}).get("output_node") for n in graph.values()):
        missing = [n["class_type"] for n in graph.values() if n["class_type"] not in object_info]
        if not missing:  # an uninstalled node may be the output; that is reported already
            problems.append(
                "the workflow has no output node (SaveImage, PreviewImage...), so ComfyUI would "
                "run nothing: add a Save Image node"
            )
    return problems


def ensure_graph_fits(graph: Graph, object_info: ObjectInfo, *, server: str) -> None:
    """Raise :class:`WorkflowCheckFailed` listing every problem :func:`check_graph` finds."""
    problems = check_graph(graph, object_info, server=server)
    if problems:
        raise WorkflowCheckFailed(server, problems)


def _node_problems(
    graph: Graph,
    node_id: str,
    object_info: ObjectInfo,
    server: str,
    skip: Collection[str | tuple[str, object]],
) -> list[str]:
    node = graph[node_id]
    info = object_info.get(node["class_type"])
    if info is None:
        where = f" (node {node_id!r})" if node["class_type"] != node_id else ""
        return [
            f"node type {node['class_type']!r}{where} is not installed on the ComfyUI server at "
            f"{server}: install its custom node pack or change the workflow"
        ]
    specs: dict[str, Any] = {**info["input"].get("optional", {}), **info["input"]["required"]}
    problems = [
        f"node {describe(graph, node_id)}: required input {name!r} is missing"
        for name in info["input"]["required"]
        if name not in node["inputs"]
    ]
    for name, value in node["inputs"].items():
        spec = specs.get(name)
        if spec is None or name in skip or _skipped(name, value, skip):
            continue  # ComfyUI ignores inputs it does not know (hidden ones, old widgets)
        if is_link(value):
            problem = _link_problem(graph, value, _type_of(spec), object_info)
        else:
            problem = _value_problem(node["class_type"], name, value, spec)
        if problem:
            problems.append(f"node {describe(graph, node_id)} input {name!r}: {problem}")
    return problems


def _skipped(name: str, value: Any, skip: Collection[str | tuple[str, object]]) -> bool:
    try:
        return (name, value) in skip
    except TypeError:  # an unhashable value (a link) is never skipped
        return False


def _type_of(spec: list[Any]) -> str | list[str]:
    kind = spec[0]
    return "COMBO" if isinstance(kind, list) else str(kind)


def _options(spec: list[Any]) -> list[Any] | None:
    if isinstance(spec[0], list):
        return list(spec[0])
    config = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    if spec[0] == "COMBO":
        return list(config.get("options", []))
    return None


def _link_problem(
    graph: Graph, link: list[Any], wanted: str | list[str], object_info: ObjectInfo
) -> str | None:
    source, index = link
    if source not in graph:
        return f"linked to node {source!r}, which is not in the workflow"
    info = object_info.get(graph[source]["class_type"])
    if info is None:
        return None  # the missing node type is reported on its own
    outputs = info.get("output", [])
    if not 0 <= index < len(outputs):
        return (
            f"linked to output {index} of node {describe(graph, source)}, which has "
            f"{len(outputs)} output(s)"
        )
    have = outputs[index]
    if not _types_match(have, wanted):
        return (
            f"expects {wanted}, but is linked to output {index} of node "
            f"{describe(graph, source)}, which gives {have}"
        )
    return None


def _types_match(have: Any, wanted: str | list[str]) -> bool:
    have_name = "COMBO" if isinstance(have, list) else str(have)
    wanted_name = "COMBO" if isinstance(wanted, list) else wanted
    if "*" in (have_name, wanted_name) or have_name == wanted_name:
        return True
    return bool(set(have_name.split(",")) & set(wanted_name.split(",")))


def _value_problem(class_type: str, name: str, value: Any, spec: list[Any]) -> str | None:
    options = _options(spec)
    if options is not None:
        return None if value in options else _not_in_list(class_type, name, value, options)
    config = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    kind = spec[0]
    if kind in ("INT", "FLOAT"):
        return _number_problem(value, kind, config)
    if kind == "BOOLEAN" and not isinstance(value, bool):
        return f"expects true or false, got {value!r}"
    if kind == "STRING" and not isinstance(value, str):
        return f"expects a string, got {value!r}"
    return None


def _number_problem(value: Any, kind: str, config: Mapping[str, Any]) -> str | None:
    # ComfyUI itself converts numeric strings and cuts floats for INT inputs; so do we.
    try:
        number = float(value) if not isinstance(value, bool) else None
    except (TypeError, ValueError):
        number = None
    if number is None:
        return f"expects a number ({kind}), got {value!r}"
    if kind == "INT":
        number = float(int(number))
    low, high = config.get("min"), config.get("max")
    if low is not None and number < low:
        return f"{value!r} is below the server's minimum {low}"
    if high is not None and number > high:
        return f"{value!r} is above the server's maximum {high}"
    return None


def _not_in_list(class_type: str, name: str, value: Any, options: list[Any]) -> str:
    kind, folder = _MODEL_FOLDERS.get(name, ("", ""))
    if class_type in _UPSCALE_LOADERS and name == "model_name":
        kind, folder = "upscale model", "upscale_models"
    if kind:
        what = f"{kind} {value!r} is not on the server"
        fix = f"; put it in ComfyUI's models/{folder} folder or name one that is there"
    else:
        what, fix = f"{value!r} is not one of the server's choices", ""
    if not options:
        return f"{what} (the server has none){fix}"
    listed = ", ".join(map(str, options[:_MAX_LISTED]))
    more = f" and {len(options) - _MAX_LISTED} more" if len(options) > _MAX_LISTED else ""
    return f"{what} (it has: {listed}{more}){fix}"
