"""comfyline: unattended image series on ComfyUI.

The public surface, pinned by ``tests/test_public_api.py``::

    from comfyline import generate, ComfyUIAdapter, Settings

``generate`` is ``pipeline.generate(order)``: an order in, its :class:`GenerationReport` out.
Names are imported on first use, so ``import comfyline`` stays cheap for the CLI.
"""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import version as _version
from typing import TYPE_CHECKING, Any

__version__ = _version("comfyline")

_EXPORTS = {
    "generate": "comfyline.pipeline",
    "ComfyUIAdapter": "comfyline.comfy",
    "Endpoint": "comfyline.comfy",
    "GenerationRequest": "comfyline.generation",
    "GenerationResult": "comfyline.generation",
    "GeneratedImage": "comfyline.generation",
    "Settings": "comfyline.settings",
    "GenerationReport": "comfyline.reports.report",
    "ReportImage": "comfyline.reports.report",
    "ReportTotals": "comfyline.reports.report",
    "ComfylineError": "comfyline.errors",
    "ConfigError": "comfyline.errors",
    "OrderError": "comfyline.errors",
    "WorkflowError": "comfyline.errors",
    "ComfyError": "comfyline.errors",
    "ComfyUnavailable": "comfyline.errors",
    "ComfyTimeout": "comfyline.errors",
    "ModelNotFound": "comfyline.errors",
    "PromptRejected": "comfyline.errors",
    "ExecutionFailed": "comfyline.errors",
    "OutOfMemory": "comfyline.errors",
    "ImageInvalid": "comfyline.errors",
    "GuardTripped": "comfyline.errors",
    "LedgerError": "comfyline.errors",
    "OrderLocked": "comfyline.errors",
    "OutputError": "comfyline.errors",
}

__all__ = [
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

if TYPE_CHECKING:
    from comfyline.comfy import ComfyUIAdapter, Endpoint
    from comfyline.errors import (
        ComfyError,
        ComfylineError,
        ComfyTimeout,
        ComfyUnavailable,
        ConfigError,
        ExecutionFailed,
        GuardTripped,
        ImageInvalid,
        LedgerError,
        ModelNotFound,
        OrderError,
        OrderLocked,
        OutOfMemory,
        OutputError,
        PromptRejected,
        WorkflowError,
    )
    from comfyline.generation import GeneratedImage, GenerationRequest, GenerationResult
    from comfyline.pipeline import generate
    from comfyline.reports.report import GenerationReport, ReportImage, ReportTotals
    from comfyline.settings import Settings


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'comfyline' has no attribute {name!r}")
