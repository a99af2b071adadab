"""Growing a graph with the models an order asks for: LoRAs and a separate VAE.

A LoRA is a ``LoraLoader`` node placed between the checkpoint loader and everything that used
the checkpoint's MODEL and CLIP outputs; several LoRAs are chained in the order given. A VAE is
a ``VAELoader`` node whose output replaces the checkpoint's VAE output everywhere. The same is
done to a user's own graph, as long as it has one checkpoint loader (or the order names it in
``nodes: {checkpoint: ...}``): ComfyUI itself would apply them the same way. Without either,
the graph is returned unchanged.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

from comfyline.errors import WorkflowError
from comfyline.workflows.graph import Graph, describe, find_node, is_link, node_ids

LoraValues = tuple[str, float, float]
"""One LoRA: (file name, strength on the model, strength on the text encoder)."""

# The checkpoint loader's outputs: MODEL, CLIP, VAE.
_MODEL, _CLIP, _VAE = 0, 1, 2


def add_models(
    graph: Graph, loras: Sequence[LoraValues], vae: str | None, checkpoint: str | None = None
) -> Graph:
    """A copy of ``graph`` with a LoraLoader per LoRA and a VAELoader for ``vae`` (None: the
    checkpoint's own); ``graph`` itself when neither is asked for.

    ``checkpoint`` names the checkpoint loader (title or id) where the graph has several.
    Raises :class:`WorkflowError` when the graph has no (or no single) checkpoint loader.
    """
    if not loras and vae is None:
        return graph
    grown = copy.deepcopy(graph)
    loader = _checkpoint_loader(grown, checkpoint)
    next_id = _first_free_id(grown)
    model, clip = [loader, _MODEL], [loader, _CLIP]
    for position, (name, strength_model, strength_clip) in enumerate(loras, start=1):
        node_id, next_id = str(next_id), next_id + 1
        grown[node_id] = {
            "class_type": "LoraLoader",
            "inputs": {
                "lora_name": name,
                "strength_model": strength_model,
                "strength_clip": strength_clip,
                "model": model,
                "clip": clip,
            },
            "_meta": {"title": f"LoRA {position}"},
        }
        model, clip = [node_id, _MODEL], [node_id, _CLIP]
    _rewire(grown, loader, {_MODEL: model, _CLIP: clip}, skip=_added(grown, graph))
    if vae is not None:
        node_id = str(next_id)
        grown[node_id] = {
            "class_type": "VAELoader",
            "inputs": {"vae_name": vae},
            "_meta": {"title": "Load VAE"},
        }
        _rewire(grown, loader, {_VAE: [node_id, 0]}, skip=set())
    return grown


def _checkpoint_loader(graph: Graph, named: str | None) -> str:
    if named is not None:
        return find_node(graph, named, what="nodes.checkpoint")
    loaders = [i for i in node_ids(graph) if "ckpt_name" in graph[i]["inputs"]]
    if len(loaders) == 1:
        return loaders[0]
    if not loaders:
        raise WorkflowError(
            "the workflow has no checkpoint loader (a node with a ckpt_name input) to apply "
            "'loras' and 'vae' to: add LoraLoader / VAELoader nodes to the graph itself and "
            "remove those keys from the order"
        )
    listed = ", ".join(describe(graph, i) for i in loaders)
    raise WorkflowError(
        f"the workflow has {len(loaders)} checkpoint loaders ({listed}): name the one the "
        "'loras' and 'vae' apply to in the order's nodes: {checkpoint: <title or id>}"
    )


def _first_free_id(graph: Graph) -> int:
    numbers = [int(i) for i in graph if i.isdigit()]
    return max(numbers, default=0) + 1


def _added(grown: Graph, original: Graph) -> set[str]:
    return set(grown) - set(original)


def _rewire(graph: Graph, loader: str, outputs: Mapping[int, list[Any]], skip: set[str]) -> None:
    """Point every input linked to ``loader``'s output N at ``outputs[N]`` instead (the nodes
    in ``skip``, the new chain itself, keep theirs)."""
    for node_id, node in graph.items():
        if node_id in skip:
            continue
        inputs = node["inputs"]
        for name, value in inputs.items():
            if is_link(value) and value[0] == loader and value[1] in outputs:
                inputs[name] = list(outputs[value[1]])
