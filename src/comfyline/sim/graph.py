"""Graph mechanics of the simulated executor: cache signatures and execution order.

Observed behaviour reproduced (recordings 01, 06, 13):

* a node is cached when a node with the same class, the same constant inputs and the same
  upstream (recursively) ran in the previous prompt(s) and its result is still in the cache;
  cached nodes are neither run nor traversed;
* the order of execution is ComfyUI's "UX friendly" topological order: nodes are collected
  depth-first from each output (a stack, inputs in order), then among the nodes whose inputs are
  ready an output node goes first, then a node that feeds an output, then one two steps from an
  output, else the first collected. The default txt2img graph runs 4, 5, 7, 6, 3, 8, 9.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from comfyline.sim.nodeinfo import NodeDefs

Graph = dict[str, Any]


def links(node: dict[str, Any]) -> list[tuple[str, str, int]]:
    """The linked inputs of a node as ``(input_name, source_id, output_index)``."""
    found = []
    for name, value in node.get("inputs", {}).items():
        if isinstance(value, list) and len(value) == 2:
            found.append((name, str(value[0]), int(value[1])))
    return found


def signatures(prompt: Graph) -> dict[str, str]:
    """A cache key per node: its class, constant inputs and the keys of its upstream."""
    memo: dict[str, str] = {}

    def sig(node_id: str, visiting: frozenset[str]) -> str:
        if node_id in memo:
            return memo[node_id]
        if node_id not in prompt or node_id in visiting:
            return f"<missing or cyclic {node_id}>"
        node = prompt[node_id]
        parts: list[Any] = [node.get("class_type")]
        for name, value in sorted(node.get("inputs", {}).items()):
            if isinstance(value, list) and len(value) == 2:
                parts.append([name, sig(str(value[0]), visiting | {node_id}), value[1]])
            else:
                parts.append([name, value])
        blob = json.dumps(parts, sort_keys=True, default=str).encode()
        memo[node_id] = hashlib.sha1(blob).hexdigest()
        return memo[node_id]

    return {node_id: sig(node_id, frozenset()) for node_id in prompt}


def execution_order(
    prompt: Graph, outputs: list[str], cached: set[str], defs: NodeDefs
) -> list[str]:
    """The nodes to run, in the order ComfyUI runs them (cached nodes left out)."""
    pending = _collect(prompt, outputs, cached)
    deps = {n: {src for _, src, _ in links(prompt[n]) if src in pending} for n in pending}
    blocking: dict[str, set[str]] = {n: set() for n in pending}
    for node_id, sources in deps.items():
        for src in sources:
            blocking[src].add(node_id)
    order: list[str] = []
    done: set[str] = set()
    while len(order) < len(pending):
        ready = [n for n in pending if n not in done and deps[n] <= done]
        if not ready:  # a cycle: run the rest in collected order, as far as it goes
            ready = [n for n in pending if n not in done]
        chosen = _pick(ready, blocking, prompt, defs)
        order.append(chosen)
        done.add(chosen)
    return order


def _collect(prompt: Graph, outputs: list[str], cached: set[str]) -> list[str]:
    pending: dict[str, None] = {}
    for output in outputs:
        stack = [output]
        while stack:
            node_id = stack.pop()
            if node_id in pending or node_id in cached or node_id not in prompt:
                continue
            pending[node_id] = None
            for _, src, _ in links(prompt[node_id]):
                if src not in pending and src not in cached:
                    stack.append(src)
    return list(pending)


def _pick(ready: list[str], blocking: dict[str, set[str]], prompt: Graph, defs: NodeDefs) -> str:
    def is_output(node_id: str) -> bool:
        return bool(defs.get(prompt[node_id]["class_type"], {}).get("output_node"))

    for node_id in ready:
        if is_output(node_id):
            return node_id
    for node_id in ready:
        if any(is_output(b) for b in blocking[node_id]):
            return node_id
    for node_id in ready:
        if any(is_output(b2) for b in blocking[node_id] for b2 in blocking[b]):
            return node_id
    return ready[0]
