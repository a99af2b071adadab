"""Workflow graphs (ComfyUI API format) and the filling of a request's values into them.

comfyline ships two graphs, ``txt2img`` (ComfyUI's default graph) and ``hires_fix`` (txt2img,
then the latent scaled by 1.5 and a second KSampler at denoise 0.5). A user's own graph is any
API-format export (ComfyUI: Workflow > Export (API)). :func:`build_graph` is the one entry point
the adapter uses; :func:`check_graph` / :func:`ensure_graph_fits` check a filled graph against a
server's ``/object_info`` before any image is made.

In ``hires_fix`` the order's width and height are the FIRST pass's size; the saved images are 1.5
times larger (:func:`output_size` tells the final size). The order's seed, steps, CFG, sampler,
scheduler and denoise go to the first pass; the hires pass keeps its own (8 steps, denoise 0.5),
which an order changes with ``inputs: {"Hires pass.steps": 12}``.

An order's ``loras`` and ``vae`` grow the graph (built-in or the user's) with LoraLoader and
VAELoader nodes when it is loaded (:func:`add_models`); without them the graph is unchanged.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

from comfyline.errors import WorkflowError
from comfyline.workflows.check import ObjectInfo, check_graph, ensure_graph_fits
from comfyline.workflows.graph import Graph, parse_graph
from comfyline.workflows.models import LoraValues, add_models
from comfyline.workflows.roles import (
    ROLES,
    Assignment,
    GraphValues,
    RoleMap,
    fill_graph,
    map_roles,
)
from comfyline.workflows.size import output_size

__all__ = [
    "BUILTIN",
    "ROLES",
    "Assignment",
    "Graph",
    "GraphValues",
    "LoraValues",
    "Request",
    "ObjectInfo",
    "RoleMap",
    "Workflow",
    "add_models",
    "build_graph",
    "check_graph",
    "ensure_graph_fits",
    "fill_graph",
    "map_roles",
    "output_size",
    "parse_graph",
]

BUILTIN = ("txt2img", "hires_fix")
# Roles a shipped graph settles itself, so that an order need not name them.
_BUILTIN_ROLES: dict[str, dict[str, str]] = {"hires_fix": {"sampler": "3"}}


@dataclass(frozen=True)
class Workflow:
    """An API-format graph, where it came from, and the roles it names for itself.

    ``roles`` (role -> node title or id) settles ambiguous roles by default; an order's ``nodes``
    take precedence over it.
    """

    name: str
    graph: Graph
    source: str
    roles: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def builtin(cls, name: str) -> Workflow:
        """One of the graphs shipped with comfyline (see ``BUILTIN``)."""
        if name not in BUILTIN:
            raise WorkflowError(
                f"there is no built-in workflow {name!r} (built-in: {', '.join(BUILTIN)}); "
                "to use your own graph, give the path of its API-format JSON file"
            )
        text = resources.files(__package__).joinpath(f"{name}.json").read_text("utf-8")
        graph = parse_graph(json.loads(text), f"builtin:{name}")
        return cls(name, graph, f"builtin:{name}", _BUILTIN_ROLES.get(name, {}))

    @classmethod
    def load(cls, path: Path) -> Workflow:
        """Read an API-format workflow file (ComfyUI's "Export (API)").

        Raises :class:`WorkflowError` when the file cannot be read, is not JSON, or is not an
        API-format graph (a UI-format file gets a message saying how to export the right one).
        """
        try:
            text = path.read_text("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise WorkflowError(f"cannot read the workflow file {path}: {exc}") from exc
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise WorkflowError(
                f"{path}:{exc.lineno}:{exc.colno}: the workflow file is not valid JSON: {exc.msg}"
            ) from exc
        return cls(name=path.stem, graph=parse_graph(data, str(path)), source=str(path))


class Request(GraphValues, Protocol):
    """What :func:`build_graph` fills a graph from: the values, the workflow (None: the
    built-in ``txt2img``) and the order's names for ambiguous roles."""

    @property
    def workflow(self) -> Workflow | None: ...
    @property
    def nodes(self) -> dict[str, str]: ...
    @property
    def inputs(self) -> dict[str, Any]: ...


def build_graph(request: Request, checkpoint: str | None) -> Graph:
    """A copy of the request's workflow (default: ``txt2img``) filled with its values.

    ``checkpoint`` goes to the checkpoint loader (None: keep the graph's). The order's ``nodes``
    name ambiguous roles (over the workflow's own ``roles``); its ``inputs`` are applied last.
    Raises :class:`WorkflowError` when a role is missing or ambiguous, or a name is unknown.
    """
    workflow = request.workflow or _txt2img()
    graph = copy.deepcopy(workflow.graph)
    fill_graph(graph, request, checkpoint, {**workflow.roles, **request.nodes})
    return graph


@cache
def _txt2img() -> Workflow:
    # Read and parsed once, not for every prompt: build_graph fills a copy, never this graph.
    return Workflow.builtin("txt2img")
