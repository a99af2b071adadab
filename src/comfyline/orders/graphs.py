"""Whether an order's values fit its graph, checked without a server (``comfyline validate``).

The first slot's values are filled into the order's graph exactly as a run would fill them:
a graph whose roles are ambiguous (two samplers, no node named), a ``nodes`` or ``inputs``
entry naming no node, or a negative prompt with nowhere to go is found before any run.
"""

from __future__ import annotations

from comfyline.errors import Problem, WorkflowError
from comfyline.generation import GenerationRequest
from comfyline.orders.load import LoadedOrder
from comfyline.orders.plan import Slot
from comfyline.orders.yaml_source import PathKey


def slot_graph_request(loaded: LoadedOrder, slot: Slot) -> GenerationRequest:
    """The request that fills ``slot``'s values into the order's graph (checkpoint unset)."""
    order = loaded.order
    return GenerationRequest(
        prompt=slot.prompt,
        negative=slot.negative,
        seed=slot.seed,
        params=slot.params,
        workflow=loaded.workflow,
        inputs=dict(order.inputs),
        nodes={k: v for k, v in order.nodes.model_dump().items() if v is not None},
    )


def graph_problems(loaded: LoadedOrder, slot: Slot) -> list[Problem]:
    """Why ``slot``'s values cannot be filled into the order's graph; empty when they can."""
    try:
        slot_graph_request(loaded, slot).graph()
    except WorkflowError as exc:
        return [loaded.problem(_field_of(loaded, str(exc)), str(exc))]
    return []


def _field_of(loaded: LoadedOrder, message: str) -> PathKey:
    """The order key a graph error is about: the one its message names, else the workflow."""
    for key in ("inputs", "nodes"):
        if message.startswith(key) and key in loaded.document.data:
            return (key,)
    return ("workflow",) if loaded.order.workflow is not None else ()
