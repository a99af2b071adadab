"""Finding and checking many orders at once (``comfyline validate``)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from comfyline.errors import OrderError, Problem
from comfyline.orders.graphs import graph_problems
from comfyline.orders.load import ORDER_FILE, LoadedOrder, load
from comfyline.orders.plan import Plan, plan
from comfyline.schemas.order import Order

_SKIP_DIRS = {"node_modules", "__pycache__", "site-packages"}


def find_orders(paths: Iterable[Path | str]) -> tuple[list[Path], list[Problem]]:
    """The order files named by ``paths``: a file is itself; a folder gives its own
    ``project.yaml`` and every ``project.yaml`` below it (hidden folders skipped). A path that
    does not exist, or a folder without orders, is a problem."""
    found: list[Path] = []
    problems: list[Problem] = []
    for raw in paths:
        path = Path(raw)
        if path.is_file():
            found.append(path)
        elif path.is_dir():
            below = sorted(_walk_orders(path))
            if not below:
                problems.append(
                    Problem(
                        str(path), None, None, "", f"no {ORDER_FILE} in this folder or below it"
                    )
                )
            found += below
        else:
            problems.append(Problem(str(path), None, None, "", "no such file or folder"))
    return list(dict.fromkeys(found)), problems


def _walk_orders(root: Path) -> Iterator[Path]:
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d not in _SKIP_DIRS]
        if ORDER_FILE in files:
            yield Path(folder) / ORDER_FILE


@dataclass(frozen=True)
class OrderCheck:
    """The outcome of checking one order file: the order and its plan, or its problems."""

    path: Path
    loaded: LoadedOrder | None = None
    plan: Plan | None = None
    problems: tuple[Problem, ...] = ()

    @property
    def order(self) -> Order | None:
        """The order, when it loaded."""
        return self.loaded.order if self.loaded is not None else None

    @property
    def ok(self) -> bool:
        return not self.problems


def check_order(path: Path) -> OrderCheck:
    """Load and plan one order file and fill its first slot into its graph, without
    generating or writing anything."""
    try:
        loaded = load(path)
        # The count does not depend on the base: plan with 0 rather than drawing one.
        planned = plan(loaded, random_base=0)
    except OrderError as exc:
        return OrderCheck(path=path, problems=exc.problems)
    problems = graph_problems(loaded, planned.slots[0])
    return OrderCheck(path=path, loaded=loaded, plan=planned, problems=tuple(problems))


def check_orders(paths: Iterable[Path | str]) -> tuple[list[OrderCheck], list[Problem]]:
    """:func:`check_order` for every order :func:`find_orders` finds in ``paths``; the second
    value holds the problems of the paths themselves (missing, no orders found)."""
    files, problems = find_orders(paths)
    return [check_order(path) for path in files], problems
