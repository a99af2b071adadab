"""Mapping an order's values onto any API-format graph, by the role each node plays.

Roles, and how each is found when the order's ``nodes`` does not name it (by title or id):

- ``sampler``: the one KSampler, KSamplerAdvanced, SamplerCustom or SamplerCustomAdvanced. Seed,
  steps, CFG, sampler, scheduler and denoise go to it, or, for the custom samplers, to the nodes
  wired to its ``noise`` (RandomNoise), ``guider`` (CFGGuider...), ``sampler`` (KSamplerSelect) and
  ``sigmas`` (BasicScheduler...) inputs. In a graph with several samplers (a hires fix), only the
  named one gets these values; the others keep the graph's.
- ``positive`` / ``negative``: the text-encode node wired to the sampler's (or its guider's)
  positive / negative input, followed through conditioning nodes in between (ConditioningCombine,
  ControlNetApply...).
- ``latent``: the one empty-latent node (EmptyLatentImage, EmptySD3LatentImage...): width, height,
  batch size.
- ``checkpoint``: the one node with a ``ckpt_name`` input (CheckpointLoaderSimple and others).
- ``save``: the one SaveImage (or any node with ``images`` and ``filename_prefix`` inputs).

A graph without a latent node (img2img) or a checkpoint loader keeps its own size or models; a
sampler without a CFG, sampler or scheduler input (BasicGuider...) keeps its own. A value with
nowhere to go that the order asked for on purpose (a negative prompt, denoise below 1) is an error.
Inputs wired from other nodes are set where their value lives (see :func:`value_home`). Explicit
``inputs`` overrides (``{"Face Detailer.denoise": 0.4}``) are applied last and reach any input.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from comfyline.errors import WorkflowError
from comfyline.presets import GenerationParams
from comfyline.workflows.graph import Graph, describe, find_node, is_link, node_ids, value_home

ROLES = ("sampler", "positive", "negative", "latent", "checkpoint", "save")
SAMPLER_TYPES = ("KSampler", "KSamplerAdvanced", "SamplerCustom", "SamplerCustomAdvanced")
TEXT_INPUTS = ("text", "text_g", "text_l", "clip_l", "clip_g", "t5xxl")
# The inputs of a custom sampler that lead to the nodes holding its parameters.
_COMPONENTS = ("noise", "guider", "sampler", "sigmas")


class GraphValues(Protocol):
    """The values that fill a graph (a ``GenerationRequest`` is one): defined here, so that
    the graph code depends on nobody's request type."""

    @property
    def prompt(self) -> str: ...
    @property
    def negative(self) -> str: ...
    @property
    def seed(self) -> int: ...
    @property
    def params(self) -> GenerationParams: ...
    @property
    def filename_prefix(self) -> str: ...
    @property
    def inputs(self) -> Mapping[str, Any]: ...


@dataclass(frozen=True)
class RoleMap:
    """The node id playing each role in one graph (None: the graph has no such node)."""

    sampler: str
    positive: str
    negative: str | None
    latent: str | None
    checkpoint: str | None
    save: str


@dataclass(frozen=True)
class Assignment:
    """One value put into the graph: which order field, and the node and input it went to."""

    field: str
    node_id: str
    input: str


def map_roles(graph: Graph, nodes: Mapping[str, str] | None = None) -> RoleMap:
    """Find the node playing each role; ``nodes`` names some of them by title or id.

    Raises :class:`WorkflowError` for an unknown role name, a name that matches no node, a role
    that several nodes could play and ``nodes`` does not settle, or a missing required role.
    """
    named = _named(graph, nodes or {})
    sampler = named.get("sampler") or _one(graph, "sampler", _samplers(graph), required=True)
    assert sampler is not None
    positive = named.get("positive") or _encoder(graph, sampler, "positive", required=True)
    assert positive is not None
    return RoleMap(
        sampler=sampler,
        positive=positive,
        negative=named.get("negative") or _encoder(graph, sampler, "negative", required=False),
        latent=named.get("latent") or _one(graph, "latent", _latents(graph), required=False),
        checkpoint=named.get("checkpoint")
        or _one(graph, "checkpoint", _with_input(graph, "ckpt_name"), required=False),
        save=named.get("save") or _one(graph, "save", _savers(graph), required=True) or "",
    )


def fill_graph(
    graph: Graph,
    request: GraphValues,
    checkpoint: str | None,
    nodes: Mapping[str, str] | None = None,
) -> list[Assignment]:
    """Put ``request``'s values (and ``checkpoint``, unless None) into ``graph``, in place.

    ``nodes`` names roles (the workflow's defaults merged with the order's). Returns where each
    value went. The request's ``inputs`` overrides are applied last.
    """
    roles = map_roles(graph, nodes)
    p = request.params
    done = _fill_sampler(graph, roles.sampler, request)
    done += _set_text(graph, roles.positive, "prompt", request.prompt)
    if roles.negative is not None:
        done += _set_text(graph, roles.negative, "negative", request.negative)
    elif request.negative:
        raise WorkflowError(
            f"the order has a negative prompt, but the workflow's sampler "
            f"{describe(graph, roles.sampler)} takes none (e.g. BasicGuider); remove 'negative' "
            "from the order, or name the node in the order's nodes: {negative: ...}"
        )
    if roles.latent is not None:
        size = {"width": p.width, "height": p.height, "batch_size": p.batch_size}
        done += [
            _set(graph, roles.latent, k, v, k)
            for k, v in size.items()
            if k in graph[roles.latent]["inputs"]
        ]
    if roles.checkpoint is not None and checkpoint is not None:
        done.append(_set(graph, roles.checkpoint, "ckpt_name", checkpoint, "checkpoint"))
    if "filename_prefix" in graph[roles.save]["inputs"]:
        done.append(
            _set(graph, roles.save, "filename_prefix", request.filename_prefix, "filename_prefix")
        )
    done += apply_overrides(graph, request.inputs)
    return done


def apply_overrides(graph: Graph, inputs: Mapping[str, Any]) -> list[Assignment]:
    """Set ``{"<node title or id>.<input>": value}`` in ``graph``, in place.

    The node part is everything before the LAST dot, so titles may contain dots.
    """
    done = []
    for key, value in inputs.items():
        ref, dot, name = key.rpartition(".")
        if not dot or not ref or not name:
            raise WorkflowError(
                f"inputs: {key!r} does not name an input; write '<node title or id>.<input name>', "
                "e.g. 'KSampler.denoise' or '3.denoise'"
            )
        node_id = find_node(graph, ref, what=f"inputs[{key!r}]")
        existing = graph[node_id]["inputs"]
        if name not in existing:
            listed = ", ".join(repr(n) for n in existing) or "none"
            raise WorkflowError(
                f"inputs[{key!r}]: node {describe(graph, node_id)} has no input {name!r}; "
                f"its inputs are {listed}"
            )
        done.append(_set(graph, node_id, name, value, f"inputs[{key!r}]"))
    return done


def _fill_sampler(graph: Graph, sampler: str, request: GraphValues) -> list[Assignment]:
    p = request.params
    wanted: list[tuple[str, tuple[str, ...], Any, bool]] = [
        ("seed", ("seed", "noise_seed"), request.seed, True),
        ("steps", ("steps",), p.steps, True),
        ("cfg", ("cfg",), p.cfg, False),
        ("sampler", ("sampler_name",), p.sampler, False),
        ("scheduler", ("scheduler",), p.scheduler, False),
        ("denoise", ("denoise",), p.denoise, p.denoise != 1.0),
    ]
    holders = [sampler, *_components(graph, sampler)]
    done = []
    for field, names, value, required in wanted:
        target = next(((n, i) for n in holders for i in names if i in graph[n]["inputs"]), None)
        if target is not None:
            done.append(_set(graph, target[0], target[1], value, field, aliases=names))
        elif required:
            raise WorkflowError(
                f"the workflow's sampler {describe(graph, sampler)} has no {field} input "
                f"(looked for {', '.join(names)} on it and on the nodes wired to its "
                f"{', '.join(_COMPONENTS)} inputs); set it with the order's inputs, "
                "or name another sampler in the order's nodes: {sampler: ...}"
            )
    return done


def _components(graph: Graph, sampler: str) -> list[str]:
    inputs = graph[sampler]["inputs"]
    return [inputs[c][0] for c in _COMPONENTS if is_link(inputs.get(c)) and inputs[c][0] in graph]


def _set_text(graph: Graph, node_id: str, field: str, text: str) -> list[Assignment]:
    names = [n for n in TEXT_INPUTS if n in graph[node_id]["inputs"]]
    if not names:
        raise WorkflowError(
            f"the {field} goes to node {describe(graph, node_id)}, which has no text input "
            f"({', '.join(TEXT_INPUTS)}); name the text-encode node in the order's nodes"
        )
    return [_set(graph, node_id, n, text, field) for n in names]


def _set(
    graph: Graph, node_id: str, name: str, value: Any, field: str, aliases: tuple[str, ...] = ()
) -> Assignment:
    home, input_name = value_home(graph, node_id, name, aliases=aliases)
    graph[home]["inputs"][input_name] = value
    return Assignment(field=field, node_id=home, input=input_name)


def _named(graph: Graph, nodes: Mapping[str, str]) -> dict[str, str]:
    unknown = sorted(set(nodes) - set(ROLES))
    if unknown:
        raise WorkflowError(
            f"nodes: unknown role(s) {', '.join(map(repr, unknown))}; the roles are "
            f"{', '.join(ROLES)} (to set any other input, use the order's inputs)"
        )
    return {role: find_node(graph, ref, what=f"nodes.{role}") for role, ref in nodes.items()}


def _one(graph: Graph, role: str, candidates: list[str], *, required: bool) -> str | None:
    if len(candidates) == 1:
        return candidates[0]
    if len(candidates) > 1:
        listed = ", ".join(describe(graph, i) for i in candidates)
        raise WorkflowError(
            f"the workflow has {len(candidates)} {role} nodes: {listed}; "
            f"name one in the order's nodes: {{{role}: <title or id>}}"
        )
    if required:
        raise WorkflowError(
            f"the workflow has no {role} node ({_ROLE_HINTS[role]}); "
            f"name the node in the order's nodes: {{{role}: <title or id>}}"
        )
    return None


_ROLE_HINTS = {
    "sampler": ", ".join(SAMPLER_TYPES),
    "positive": "a CLIPTextEncode wired to the sampler's positive input",
    "save": "SaveImage, or a node with 'images' and 'filename_prefix' inputs",
}


def _samplers(graph: Graph) -> list[str]:
    return [i for i in node_ids(graph) if graph[i]["class_type"] in SAMPLER_TYPES]


def _latents(graph: Graph) -> list[str]:
    return [
        i
        for i in node_ids(graph)
        if graph[i]["class_type"].startswith("Empty")
        and "Latent" in graph[i]["class_type"]
        and {"width", "height"} <= set(graph[i]["inputs"])
    ]


def _with_input(graph: Graph, name: str) -> list[str]:
    return [i for i in node_ids(graph) if name in graph[i]["inputs"]]


def _savers(graph: Graph) -> list[str]:
    return [
        i
        for i in node_ids(graph)
        if graph[i]["class_type"] == "SaveImage"
        or {"images", "filename_prefix"} <= set(graph[i]["inputs"])
    ]


def _encoder(graph: Graph, sampler: str, role: str, *, required: bool) -> str | None:
    starts = _conditioning_links(graph, sampler, role)
    found: list[str] = []
    queue = [link[0] for link in starts]
    seen: set[str] = set()
    while queue:
        node_id = queue.pop(0)
        if node_id in seen or node_id not in graph:
            continue
        seen.add(node_id)
        inputs = graph[node_id]["inputs"]
        if any(n in inputs for n in TEXT_INPUTS):
            found.append(node_id)
            continue
        both = "positive" in inputs and "negative" in inputs
        queue += [
            v[0]
            for n, v in inputs.items()
            if is_link(v) and (n == role if both else "cond" in n or n == role)
        ]
    if not starts and not required:
        return None
    return _one_encoder(graph, role, sampler, found, required=required)


def _one_encoder(
    graph: Graph, role: str, sampler: str, found: list[str], *, required: bool
) -> str | None:
    if len(found) == 1:
        return found[0]
    if not found and not required:
        return None
    listed = ", ".join(describe(graph, i) for i in found) or "none"
    raise WorkflowError(
        f"cannot tell which text-encode node holds the {role} prompt of sampler "
        f"{describe(graph, sampler)} (found: {listed}); name it in the order's nodes: "
        f"{{{role}: <title or id>}}"
    )


def _conditioning_links(graph: Graph, sampler: str, role: str) -> list[list[Any]]:
    """The links into the sampler (or its guider) that carry ``role``'s conditioning."""
    inputs = graph[sampler]["inputs"]
    if is_link(inputs.get(role)):
        return [inputs[role]]
    guider = inputs.get("guider")
    if is_link(guider) and guider[0] in graph:
        g_inputs = graph[guider[0]]["inputs"]
        names = (role, "conditioning") if role == "positive" else (role,)
        return [g_inputs[n] for n in names if is_link(g_inputs.get(n))][:1]
    return []
