"""Validation of ``POST /prompt`` graphs, answering as ComfyUI v0.3.64 does.

Behaviour reproduced from the recordings (``03_prompt_errors.json``), not from ComfyUI's code:

* an unknown or missing ``class_type`` anywhere (even on an unconnected node) is an
  ``invalid_prompt`` with empty ``node_errors`` and ``"Node ID '#N'"`` in ``details``;
* no output node: ``prompt_no_outputs``;
* every output is validated depth-first through its links; each failing node gets
  ``{"errors": [...], "dependent_outputs": [...], "class_type": ...}``;
* a link to a missing node or an out-of-range output index is reported on the *linked* node as
  ``exception_during_inner_validation`` with the downstream input's name (ComfyUI's quirk);
* constants are coerced leniently (``"8"`` and ``8.7`` pass as INT 8) and written back into the
  graph; the ``step`` of an INT is not enforced.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from comfyline.sim.nodeinfo import NodeDefs, combo_options

Graph = dict[str, Any]
ErrorBody = dict[str, Any]

_INNER_TRACEBACK = [
    '  File "/opt/ComfyUI/execution.py", line 808, in validate_inputs\n'
    "    r = await validate_inputs(prompt_id, prompt, o_id, validated)\n"
]


class _InnerError(Exception):
    """A lookup failed while following a link (ComfyUI raises KeyError/IndexError there)."""

    def __init__(self, exception_type: str, message: str) -> None:
        self.exception_type = exception_type
        super().__init__(message)


@dataclass
class ValidationResult:
    """The outcome of validating one graph.

    ``error`` is set when the whole prompt is refused (400). Otherwise ``outputs`` lists the
    output nodes to execute and ``node_errors`` the outputs dropped (a 200 that still lists
    errors).
    """

    error: ErrorBody | None = None
    outputs: list[str] = field(default_factory=list)
    node_errors: dict[str, Any] = field(default_factory=dict)

    def error_body(self) -> dict[str, Any]:
        """The JSON body of a 400 answer."""
        return {"error": self.error, "node_errors": self.node_errors}


def _error(kind: str, message: str, details: str = "") -> ErrorBody:
    return {"type": kind, "message": message, "details": details, "extra_info": {}}


def validate_prompt(prompt: Graph, defs: NodeDefs) -> ValidationResult:
    """Validate an API-format graph against the node definitions (mutates coerced values)."""
    if not isinstance(prompt, dict):
        raise TypeError(f"prompt must be an object, not {type(prompt).__name__}")
    outputs: list[str] = []
    for node_id, node in prompt.items():
        if "class_type" not in node:
            return ValidationResult(
                error=_error(
                    "invalid_prompt",
                    "Cannot execute because a node is missing the class_type property.",
                    f"Node ID '#{node_id}'",
                )
            )
        class_type = node["class_type"]
        if class_type not in defs:
            return ValidationResult(
                error=_error(
                    "invalid_prompt",
                    f"Cannot execute because node {class_type} does not exist.",
                    f"Node ID '#{node_id}'",
                )
            )
        if defs[class_type].get("output_node"):
            outputs.append(node_id)
    if not outputs:
        return ValidationResult(error=_error("prompt_no_outputs", "Prompt has no outputs"))
    return _Validator(prompt, defs).run(outputs)


class _Validator:
    def __init__(self, prompt: Graph, defs: NodeDefs) -> None:
        self.prompt = prompt
        self.defs = defs
        self.validated: dict[str, tuple[bool, list[dict[str, Any]]]] = {}

    def run(self, outputs: list[str]) -> ValidationResult:
        good: list[str] = []
        direct_errors: list[str] = []
        for out in outputs:
            try:
                ok, reasons = self.node(out)
            except _InnerError as exc:
                ok, reasons = False, [_outer_exception(exc)]
                self.validated[out] = (ok, reasons)
            if ok:
                good.append(out)
            else:
                direct_errors += [f"{r['message']}: {r['details']}" for r in reasons]
        node_errors = self._node_errors(outputs)
        if not good:
            error = _error(
                "prompt_outputs_failed_validation",
                "Prompt outputs failed validation",
                "\n".join(direct_errors),
            )
            return ValidationResult(error=error, node_errors=node_errors)
        return ValidationResult(outputs=good, node_errors=node_errors)

    def _node_errors(self, outputs: list[str]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for node_id, (ok, reasons) in self.validated.items():
            if ok or not reasons:
                continue
            result[node_id] = {
                "errors": reasons,
                "dependent_outputs": [o for o in outputs if self._depends(o, node_id)],
                "class_type": self.prompt[node_id]["class_type"],
            }
        return result

    def _depends(self, output: str, node_id: str) -> bool:
        seen: set[str] = set()
        stack = [output]
        while stack:
            current = stack.pop()
            if current == node_id:
                return True
            if current in seen or current not in self.prompt:
                continue
            seen.add(current)
            for value in self.prompt[current].get("inputs", {}).values():
                if isinstance(value, list) and value:
                    stack.append(str(value[0]))
        return False

    def node(self, node_id: str) -> tuple[bool, list[dict[str, Any]]]:
        if node_id in self.validated:
            return self.validated[node_id]
        node = self.prompt[node_id]
        inputs = node.setdefault("inputs", {})
        definition = self.defs[node["class_type"]]
        errors: list[dict[str, Any]] = []
        valid = True
        for section in ("required", "optional"):
            for name, spec in definition.get("input", {}).get(section, {}).items():
                spec = list(spec) if isinstance(spec, list | tuple) else [spec]
                if name not in inputs:
                    if section == "required":
                        errors.append(_missing(name))
                    continue
                if isinstance(inputs[name], list):
                    valid = self._link(name, spec, inputs[name], errors) and valid
                else:
                    errors += _constant(name, spec, inputs)
        result = (valid and not errors, errors)
        self.validated[node_id] = result
        return result

    def _link(self, name: str, spec: list[Any], link: list[Any], errors: list[Any]) -> bool:
        if len(link) != 2:
            errors.append(_bad_link(name, spec, link))
            return False
        source_id = str(link[0])
        source = self.prompt.get(source_id)
        if source is None:
            raise _InnerError("KeyError", f"'{source_id}'")
        returns = self.defs[source["class_type"]].get("output", [])
        if not isinstance(link[1], int) or not 0 <= link[1] < len(returns):
            raise _InnerError("IndexError", "tuple index out of range")
        received = returns[link[1]]
        if not _types_match(received, spec[0]):
            errors.append(_mismatch(name, spec, received, link))
            return False
        try:
            ok, _ = self.node(source_id)
        except _InnerError as exc:
            self.validated[source_id] = (False, [_inner_exception(name, spec, exc, link)])
            return False
        return ok


def _types_match(received: Any, wanted: Any) -> bool:
    if not isinstance(wanted, str) or not isinstance(received, str):
        return True  # a combo fed by a link: ComfyUI checks these loosely
    if "*" in (received, wanted) or received == wanted:
        return True
    return bool(set(received.split(",")) & set(wanted.split(",")))


def _missing(name: str) -> dict[str, Any]:
    return {
        "type": "required_input_missing",
        "message": "Required input is missing",
        "details": f"{name}",
        "extra_info": {"input_name": name},
    }


def _bad_link(name: str, spec: list[Any], link: list[Any]) -> dict[str, Any]:
    return {
        "type": "bad_linked_input",
        "message": "Bad linked input, must be a length-2 list of [node_id, slot_index]",
        "details": f"{name}",
        "extra_info": {"input_name": name, "input_config": spec, "received_value": link},
    }


def _mismatch(name: str, spec: list[Any], received: str, link: list[Any]) -> dict[str, Any]:
    return {
        "type": "return_type_mismatch",
        "message": "Return type mismatch between linked nodes",
        "details": f"{name}, received_type({received}) mismatch input_type({spec[0]})",
        "extra_info": {
            "input_name": name,
            "input_config": spec,
            "received_type": received,
            "linked_node": link,
        },
    }


def _inner_exception(
    name: str, spec: list[Any], exc: _InnerError, link: list[Any]
) -> dict[str, Any]:
    return {
        "type": "exception_during_inner_validation",
        "message": "Exception when validating inner node",
        "details": str(exc),
        "extra_info": {
            "input_name": name,
            "input_config": spec,
            "exception_message": str(exc),
            "exception_type": exc.exception_type,
            "traceback": list(_INNER_TRACEBACK),
            "linked_node": link,
        },
    }


def _outer_exception(exc: _InnerError) -> dict[str, Any]:
    return {
        "type": "exception_during_validation",
        "message": "Exception when validating node",
        "details": str(exc),
        "extra_info": {"exception_type": exc.exception_type, "traceback": []},
    }


_CONVERTERS: dict[str, Any] = {"INT": int, "FLOAT": float, "STRING": str, "BOOLEAN": bool}


def _constant(name: str, spec: list[Any], inputs: dict[str, Any]) -> list[dict[str, Any]]:
    kind = spec[0]
    value = inputs[name]
    extra = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    base = {"input_name": name, "input_config": spec, "received_value": value}
    if isinstance(kind, str) and kind in _CONVERTERS:
        try:
            value = _CONVERTERS[kind](value)
        except (TypeError, ValueError) as exc:
            return [
                {
                    "type": "invalid_input_type",
                    "message": f"Failed to convert an input value to a {kind} value",
                    "details": f"{name}, {inputs[name]}, {exc}",
                    "extra_info": {**base, "exception_message": str(exc)},
                }
            ]
        inputs[name] = value
    if kind in ("INT", "FLOAT"):
        if "min" in extra and value < extra["min"]:
            return [
                _range(
                    "value_smaller_than_min", f"{value} smaller than min of {extra['min']}", base
                )
            ]
        if "max" in extra and value > extra["max"]:
            return [
                _range("value_bigger_than_max", f"{value} bigger than max of {extra['max']}", base)
            ]
    options = combo_options(spec)
    if options is not None and value not in options:
        listed = f"(list of length {len(options)})" if len(options) > 20 else str(options)
        config = None if len(options) > 20 else spec
        return [
            {
                "type": "value_not_in_list",
                "message": "Value not in list",
                "details": f"{name}: '{value}' not in {listed}",
                "extra_info": {**base, "input_config": config},
            }
        ]
    return []


def _range(kind: str, text: str, base: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": kind,
        "message": f"Value {text}",
        "details": base["input_name"],
        "extra_info": base,
    }
