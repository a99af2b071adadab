"""The size of the images a graph saves, told from the graph alone.

The path from each save node back to its empty latent is followed through the nodes whose effect
on the size is known: samplers (same size), VAE decode (latent x 8), latent upscales (by a factor or
to a size) and image scales. Anything else on the way (an upscale model, whose factor only its file
knows; a custom node) makes the size unknown, and the caller then skips the size check.
"""

from __future__ import annotations

from comfyline.errors import WorkflowError
from comfyline.workflows.graph import Graph, is_link, value_home
from comfyline.workflows.roles import SAMPLER_TYPES

Size = tuple[int, int]
_SAVERS = ("SaveImage",)
_MAX_DEPTH = 100  # a longer chain is a loop


def output_size(graph: Graph) -> Size | None:
    """The (width, height) of the graph's saved images, or None when it cannot be told.

    With several save nodes, their sizes must agree (else None).
    """
    savers = [n for n in graph.values() if n["class_type"] in _SAVERS]
    sizes = {_image_size(graph, n["inputs"].get("images"), 0) for n in savers}
    return sizes.pop() if len(sizes) == 1 else None


def _image_size(graph: Graph, link: object, depth: int) -> Size | None:
    node_id = _source(graph, link, depth)
    if node_id is None:
        return None
    kind, inputs = graph[node_id]["class_type"], graph[node_id]["inputs"]
    if kind in ("VAEDecode", "VAEDecodeTiled"):
        latent = _latent_size(graph, inputs.get("samples"), depth + 1)
        return None if latent is None else (latent[0] * 8, latent[1] * 8)
    if kind == "ImageScaleBy":
        image = _image_size(graph, inputs.get("image"), depth + 1)
        return _scaled(image, _number(graph, node_id, "scale_by"))
    if kind == "ImageScale":
        w, h = _number(graph, node_id, "width"), _number(graph, node_id, "height")
        return (int(w), int(h)) if w and h else None
    return None


def _latent_size(graph: Graph, link: object, depth: int) -> Size | None:
    """A latent's size in latent pixels (image pixels / 8)."""
    node_id = _source(graph, link, depth)
    if node_id is None:
        return None
    kind, inputs = graph[node_id]["class_type"], graph[node_id]["inputs"]
    if kind.startswith("Empty") and "Latent" in kind:
        w, h = _number(graph, node_id, "width"), _number(graph, node_id, "height")
        return None if w is None or h is None else (int(w) // 8, int(h) // 8)
    if kind in SAMPLER_TYPES:
        return _latent_size(graph, inputs.get("latent_image"), depth + 1)
    if kind == "LatentUpscaleBy":
        latent = _latent_size(graph, inputs.get("samples"), depth + 1)
        return _scaled(latent, _number(graph, node_id, "scale_by"))
    if kind == "LatentUpscale":
        w, h = _number(graph, node_id, "width"), _number(graph, node_id, "height")
        # 0 means "keep the aspect ratio", which needs the input's size: not followed here.
        return (max(64, int(w)) // 8, max(64, int(h)) // 8) if w and h else None
    return None


def _scaled(size: Size | None, factor: float | None) -> Size | None:
    if size is None or factor is None:
        return None
    return round(size[0] * factor), round(size[1] * factor)


def _source(graph: Graph, link: object, depth: int) -> str | None:
    if depth > _MAX_DEPTH or not is_link(link):
        return None
    assert isinstance(link, list)
    return link[0] if link[0] in graph else None


def _number(graph: Graph, node_id: str, name: str) -> float | None:
    if name not in graph[node_id]["inputs"]:
        return None
    try:
        home, input_name = value_home(graph, node_id, name)
    except WorkflowError:
        return None
    value = graph[home]["inputs"][input_name]
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)
