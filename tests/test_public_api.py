"""The public surface: what ``from comfyline import ...`` offers, pinned, and the package's
import graph, kept free of cycles."""

from __future__ import annotations

import ast
from pathlib import Path

import comfyline

SRC = Path(__file__).resolve().parents[1] / "src" / "comfyline"


def test_public_names_are_pinned() -> None:
    assert sorted(comfyline.__all__) == sorted(
        [
            "__version__",
            "generate",
            "ComfyUIAdapter",
            "Endpoint",
            "GenerationRequest",
            "GenerationResult",
            "GeneratedImage",
            "Settings",
            "GenerationReport",
            "ReportImage",
            "ReportTotals",
            "ComfylineError",
            "ConfigError",
            "OrderError",
            "WorkflowError",
            "ComfyError",
            "ComfyUnavailable",
            "ComfyTimeout",
            "ModelNotFound",
            "PromptRejected",
            "ExecutionFailed",
            "OutOfMemory",
            "ImageInvalid",
            "GuardTripped",
            "LedgerError",
            "OrderLocked",
            "OutputError",
        ]
    )
    for name in comfyline.__all__:
        assert getattr(comfyline, name) is not None, name
    from comfyline.pipeline import generate

    assert comfyline.generate is generate


def _module(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    """Module -> the comfyline modules it imports at module level (not inside functions, not
    under TYPE_CHECKING: those cannot make an import cycle at run time)."""
    graph: dict[str, set[str]] = {}
    modules = {_module(p) for p in SRC.rglob("*.py")}
    for path in SRC.rglob("*.py"):
        tree = ast.parse(path.read_text("utf-8"))
        found: set[str] = set()
        for node in tree.body:
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                base = node.module
                if base.startswith("comfyline"):
                    for alias in node.names:
                        sub = f"{base}.{alias.name}"
                        found.add(sub if sub in modules else base)
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name.startswith("comfyline")}
        graph[_module(path)] = {m for m in found if m in modules and m != _module(path)}
    return graph


def test_the_package_has_no_import_cycle() -> None:
    graph = _imports()
    # A package's __init__ re-exporting its own modules is not a cycle of meaning.
    for name, deps in graph.items():
        graph[name] = {d for d in deps if not name.startswith(d + ".")}
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                cycle = path[path.index(dep) :] + [dep]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if dep not in state:
                visit(dep)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_no_class_outside_the_simulator_is_over_260_lines() -> None:
    # Issue #8: a class over ~250 lines holds more than one concern; split it. The simulator
    # (one fake server) is the exception.
    too_big = []
    for path in sorted(SRC.rglob("*.py")):
        if "sim" in path.relative_to(SRC).parts[:1]:
            continue
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if isinstance(node, ast.ClassDef) and node.end_lineno is not None:
                lines = node.end_lineno - node.lineno + 1
                if lines > 260:
                    too_big.append(f"{path.relative_to(SRC)}: {node.name} ({lines} lines)")
    assert not too_big, too_big
