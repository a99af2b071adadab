"""Which of a run's servers can make an order: the pre-flight (:mod:`comfyline.preflight`) on
each one, against its own ``/object_info``.

A server that lacks the checkpoint, a LoRA, a node class or a sampler the order needs is left
out of that order (the run says which and why); the others make it. A series is made with one
checkpoint: when the order names none, the first server that fits settles it ("its only one"),
and every other server must have that same file to take part.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from comfyline.backends import Backend
from comfyline.errors import ComfyError, ConfigError, NoFittingBackend, WorkflowError
from comfyline.generation import GenerationRequest
from comfyline.ledger import Ledger
from comfyline.preflight import ensure_same_checkpoint, preflight

__all__ = ["Admission", "Fit", "fit_backends", "fits"]

_UNFIT = (ComfyError, ConfigError, WorkflowError)
"""What a pre-flight raises when a server cannot make the order."""


@dataclass(frozen=True)
class Fit:
    """The servers that fit (in their order), those left out and why, and the checkpoint."""

    backends: tuple[Backend, ...]
    left_out: tuple[tuple[Backend, Exception], ...]
    checkpoint: str


async def fit_backends(
    backends: list[Backend], request: GenerationRequest, checkpoint: str | None
) -> Fit:
    """Pre-flight ``request`` (the order's first slot, its checkpoint unresolved) on each of
    ``backends``; ``checkpoint`` is the one the order or the settings name, None for the
    server's only one. Raises the single server's own error when there is one, else
    :class:`NoFittingBackend` naming each server's reason."""
    fit: list[Backend] = []
    left_out: list[tuple[Backend, Exception]] = []
    for backend in backends:
        try:
            checked = await preflight(backend.adapter, request, checkpoint)
        except _UNFIT as exc:
            left_out.append((backend, exc))
            continue
        checkpoint = checked.checkpoint  # the first one's: the rest must have the same
        fit.append(backend)
    if not fit:
        if len(left_out) == 1:
            raise left_out[0][1]
        raise NoFittingBackend([(b.name, str(exc)) for b, exc in left_out])
    assert checkpoint is not None
    return Fit(tuple(fit), tuple(left_out), checkpoint)


async def fits(backend: Backend, request: GenerationRequest, checkpoint: str) -> Exception | None:
    """Why ``backend`` cannot make ``request`` with ``checkpoint``; None when it can."""
    try:
        await preflight(backend.adapter, replace(request, checkpoint=None), checkpoint)
    except _UNFIT as exc:
        return exc
    return None


class Admission:
    """The servers of one order's run: those left out recorded in its ledger and said, and
    those that answer only later checked (:meth:`admit`) before they take part."""

    def __init__(
        self, ledger: Ledger, notify: Callable[[str], None], request: GenerationRequest, fit: Fit
    ) -> None:
        self.ledger = ledger
        self.notify = notify
        self.request = request
        self.checkpoint = fit.checkpoint
        first = fit.backends[0]  # a resume on a server that now resolves another checkpoint
        ensure_same_checkpoint(ledger, fit.checkpoint, first.url, simulated=first.simulated)
        for backend, why in fit.left_out:
            self.left_out(backend, why)

    def left_out(self, backend: Backend, why: Exception) -> None:
        """Record and say that ``backend`` does not make this order, and why."""
        self.ledger.record_event(
            "backend.left_out", detail={"backend": backend.name, "reason": str(why)}
        )
        self.notify(f"server {backend.name} is left out of this order: {why}")

    async def admit(self, backend: Backend) -> bool:
        """Whether ``backend``, which answered only after the run began, fits the order."""
        why = await fits(backend, self.request, self.checkpoint)
        if why is not None:
            self.left_out(backend, why)
        return why is None
