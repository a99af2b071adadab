"""Workflow graphs (ComfyUI API format) and the filling of a request's values into them.

``build_graph(request)`` is the one entry point the adapter uses. This first version knows the
built-in text-to-image graph by its node ids; the role mapping for any graph replaces it.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from comfyline.generation import GenerationRequest

Graph = dict[str, dict[str, Any]]


@dataclass(frozen=True)
class Workflow:
    """An API-format graph and where it came from."""

    name: str
    graph: Graph
    source: str

    @classmethod
    def builtin(cls, name: str) -> Workflow:
        text = resources.files(__package__).joinpath(f"{name}.json").read_text("utf-8")
        return cls(name=name, graph=json.loads(text), source=f"builtin:{name}")

    @classmethod
    def load(cls, path: Path) -> Workflow:
        return cls(name=path.stem, graph=json.loads(path.read_text("utf-8")), source=str(path))


def build_graph(request: GenerationRequest, checkpoint: str) -> Graph:
    """The built-in text-to-image graph filled with ``request``'s values and ``checkpoint``."""
    workflow = request.workflow or Workflow.builtin("txt2img")
    graph = copy.deepcopy(workflow.graph)
    p = request.params
    graph["3"]["inputs"].update(
        seed=request.seed, steps=p.steps, cfg=p.cfg, sampler_name=p.sampler,
        scheduler=p.scheduler, denoise=p.denoise,
    )
    graph["4"]["inputs"]["ckpt_name"] = checkpoint
    graph["5"]["inputs"].update(width=p.width, height=p.height, batch_size=p.batch_size)
    graph["6"]["inputs"]["text"] = request.prompt
    graph["7"]["inputs"]["text"] = request.negative
    graph["9"]["inputs"]["filename_prefix"] = request.filename_prefix
    return graph


def output_size(graph: Graph) -> tuple[int, int] | None:
    """The (width, height) the graph's saved images should have, or None when it cannot be told
    from the graph alone (e.g. an upscale model whose factor only the model file knows)."""
    for node in graph.values():
        if node.get("class_type") == "EmptyLatentImage":
            return int(node["inputs"]["width"]), int(node["inputs"]["height"])
    return None
