"""The built-in upscale graph, ``builtin:upscale``: an uploaded image through an upscale model,
then scaled to the exact target.

LoadImage (the image uploaded with ``POST /upload/image``) -> UpscaleModelLoader ->
ImageUpscaleWithModel (the model's own factor, 4x for 4x-UltraSharp) -> ImageScale (Lanczos, to
the exact width and height) -> SaveImage. The target comes from
:func:`comfyline.exports.upscale.target_for_markets`, the same function as the CPU path, so a
model upscale and a Lanczos upscale give files of the same size. Check the filled graph with
:func:`comfyline.workflows.ensure_graph_fits` before posting it: that says when the model is not
in the server's ``upscale_models`` folder, or the image was not uploaded.

>>> graph = upscale_graph("img_0001.png", "4x-UltraSharp.pth", (2000, 3000))
>>> graph["4"]["inputs"]["width"], graph["4"]["inputs"]["height"]
(2000, 3000)
"""

from __future__ import annotations

import copy
import json
from functools import cache
from importlib import resources

from comfyline.comfy.protocol import ImageRef
from comfyline.errors import WorkflowError
from comfyline.workflows.graph import Graph, parse_graph

__all__ = ["SOURCE", "UPSCALE_METHODS", "load_image_name", "upscale_graph"]

SOURCE = "builtin:upscale"
UPSCALE_METHODS = ("nearest-exact", "bilinear", "area", "bicubic", "lanczos")
"""What ComfyUI's ImageScale offers for ``upscale_method``."""
_MAX_SIDE = 16384  # ImageScale's limit per side

# Node ids in upscale.json.
_LOAD, _MODEL, _SCALE, _SAVE = "1", "2", "4", "5"


@cache
def _template() -> Graph:
    text = resources.files(__package__).joinpath("upscale.json").read_text("utf-8")
    return parse_graph(json.loads(text), SOURCE)


def upscale_graph(
    image: str,
    model: str,
    size: tuple[int, int],
    *,
    prefix: str = "comfyline/upscaled",
    method: str = "lanczos",
) -> Graph:
    """A copy of ``builtin:upscale`` filled in.

    ``image`` is the LoadImage name of the uploaded file (``subfolder/name`` when it was
    uploaded into a subfolder: see ``ComfyClient.upload_image``), ``model`` a file in the
    server's ``upscale_models``, ``size`` the exact (width, height) of the saved image, and
    ``prefix`` SaveImage's ``filename_prefix``.
    """
    width, height = size
    if not (1 <= width <= _MAX_SIDE and 1 <= height <= _MAX_SIDE):
        raise WorkflowError(
            f"the upscale target {width}x{height} is outside ComfyUI's ImageScale range "
            f"(1-{_MAX_SIDE} per side)"
        )
    if method not in UPSCALE_METHODS:
        raise WorkflowError(
            f"upscale method {method!r} is not one of ImageScale's: {', '.join(UPSCALE_METHODS)}"
        )
    graph = copy.deepcopy(_template())
    graph[_LOAD]["inputs"]["image"] = image
    graph[_MODEL]["inputs"]["model_name"] = model
    graph[_SCALE]["inputs"].update(width=width, height=height, upscale_method=method)
    graph[_SAVE]["inputs"]["filename_prefix"] = prefix
    return graph


def load_image_name(ref: ImageRef) -> str:
    """How LoadImage names an uploaded image: ``subfolder/name``, or ``name`` at the top."""
    return f"{ref.subfolder}/{ref.filename}" if ref.subfolder else ref.filename
