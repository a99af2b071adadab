"""The API-format graph: its shape, its links, and finding a node by title or id.

An API-format graph (what ComfyUI's "Export (API)" writes and what POST /prompt takes) is a
dict of node id -> ``{"class_type": str, "inputs": {name: value}, "_meta": {"title": str}}``.
An input's value is either a literal or a link ``[source node id, output index]``.
"""

from __future__ import annotations

from typing import Any

from comfyline.errors import WorkflowError

Graph = dict[str, dict[str, Any]]

_EXPORT_HINT = (
    'in ComfyUI use "Export (API)" (newer versions: menu Workflow > Export (API); older ones: '
    'turn on the dev mode options in the settings, then "Save (API Format)")'
)


def is_link(value: object) -> bool:
    """True when an input value is a link ``[node id, output index]`` rather than a literal."""
    return (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], str)
        and isinstance(value[1], int)
        and not isinstance(value[1], bool)
    )


def title(node: dict[str, Any]) -> str:
    """The node's title as the ComfyUI editor shows it (``_meta.title``), or ``""``."""
    meta = node.get("_meta")
    if isinstance(meta, dict) and isinstance(meta.get("title"), str):
        return str(meta["title"])
    return ""


def describe(graph: Graph, node_id: str) -> str:
    """``'3' (KSampler, title 'Base')``: how errors name a node."""
    node = graph[node_id]
    name = title(node)
    extra = f", title {name!r}" if name and name != node["class_type"] else ""
    return f"{node_id!r} ({node['class_type']}{extra})"


def node_ids(graph: Graph) -> list[str]:
    """The graph's node ids in a stable order: numeric ids by number, then the rest."""
    return sorted(graph, key=lambda i: (0, int(i), "") if i.isdigit() else (1, 0, i))


def find_node(graph: Graph, ref: str, *, what: str) -> str:
    """The id of the node that ``ref`` names: a node id, else a unique title.

    ``what`` says where the name came from, for the error (e.g. ``"nodes.sampler"``).
    """
    if ref in graph:
        return ref
    matches = [i for i in node_ids(graph) if title(graph[i]) == ref]
    if len(matches) == 1:
        return matches[0]
    if matches:
        listed = ", ".join(describe(graph, i) for i in matches)
        raise WorkflowError(
            f"{what}: {len(matches)} nodes have the title {ref!r}: {listed}; "
            "name one by its id, or give them different titles in ComfyUI"
        )
    listed = ", ".join(describe(graph, i) for i in node_ids(graph))
    raise WorkflowError(
        f"{what}: the workflow has no node with id or title {ref!r}; it has {listed}"
    )


def value_home(
    graph: Graph, node_id: str, name: str, *, aliases: tuple[str, ...] = ()
) -> tuple[str, str]:
    """Where the value of input ``name`` of ``node_id`` lives: ``(node id, input name)``.

    A literal lives where it is. A linked input (from a primitive, a seed node, any node that
    holds the value in one of its own inputs) is followed upstream: to the source's input of the
    same name (or one of ``aliases``), else its ``value`` input, else its only literal input.
    """
    seen: set[tuple[str, str]] = set()
    while is_link(value := graph[node_id]["inputs"][name]):
        if (node_id, name) in seen:
            raise WorkflowError(
                f"input {name!r} of node {describe(graph, node_id)} is in a link loop"
            )
        seen.add((node_id, name))
        source = value[0]
        if source not in graph:
            raise WorkflowError(
                f"input {name!r} of node {describe(graph, node_id)} is linked to node {source!r}, "
                "which is not in the workflow"
            )
        name = _holder_input(graph, source, (name, *aliases), via=(node_id, name))
        node_id = source
    return node_id, name


def _holder_input(graph: Graph, source: str, names: tuple[str, ...], via: tuple[str, str]) -> str:
    inputs: dict[str, Any] = graph[source]["inputs"]
    for candidate in (*names, "value"):
        if candidate in inputs:
            return candidate
    literals = [n for n, v in inputs.items() if not is_link(v)]
    if len(literals) == 1:
        return literals[0]
    listed = ", ".join(repr(n) for n in inputs) or "none"
    raise WorkflowError(
        f"input {via[1]!r} of node {describe(graph, via[0])} comes from node "
        f"{describe(graph, source)}, and comfyline cannot tell which of its inputs ({listed}) "
        f"holds the value; set it in the order's inputs, e.g. {{'{source}.<input>': ...}}"
    )


def parse_graph(data: object, source: str) -> Graph:
    """Check that ``data`` (parsed JSON) is an API-format graph and return it.

    A UI-format workflow (the editor's "Save", with ``nodes`` and ``links`` lists) is refused with
    a message that says how to export the API format. Every malformed node is reported at once.
    """
    if isinstance(data, dict) and isinstance(data.get("nodes"), list) and "links" in data:
        raise WorkflowError(
            f"{source} is a ComfyUI workflow in the editor (UI) format, with 'nodes' and 'links' "
            f"lists; comfyline needs the API format: {_EXPORT_HINT}"
        )
    if isinstance(data, dict) and set(data) >= {"prompt"} and isinstance(data["prompt"], dict):
        raise WorkflowError(
            f"{source} looks like a POST /prompt request body (it has a 'prompt' key); "
            "save the value of 'prompt' alone as the workflow file"
        )
    if not isinstance(data, dict) or not data:
        raise WorkflowError(
            f"{source} is not an API-format workflow: expected a JSON object of node id -> "
            f"{{class_type, inputs}}, got {_kind(data)}; {_EXPORT_HINT}"
        )
    problems = [p for node_id, node in data.items() for p in _node_problems(node_id, node)]
    if problems:
        raise WorkflowError(
            f"{source} is not an API-format workflow ({_EXPORT_HINT}):\n"
            + "\n".join(f"  - {p}" for p in problems)
        )
    return data


def _node_problems(node_id: str, node: object) -> list[str]:
    if not isinstance(node, dict):
        return [f"node {node_id!r} is {_kind(node)}, not an object with class_type and inputs"]
    problems = []
    if not isinstance(node.get("class_type"), str) or not node.get("class_type"):
        problems.append(f"node {node_id!r} has no class_type (a node type name, e.g. 'KSampler')")
    if not isinstance(node.get("inputs"), dict):
        problems.append(f"node {node_id!r} has no 'inputs' object")
    return problems


def _kind(value: object) -> str:
    if isinstance(value, dict):
        return "an empty object" if not value else "an object"
    return {list: "a list", str: "a string", type(None): "null"}.get(
        type(value), type(value).__name__
    )
