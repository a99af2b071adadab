"""The command line: thin commands over the library. The only place that turns errors into exit
codes, and the only ``asyncio.run`` call site."""

from __future__ import annotations

import sys

import typer
from rich.console import Console

from comfyline.errors import ComfylineError, OrderError

app = typer.Typer(
    name="comfyline",
    help="Unattended image series on ComfyUI.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)
stderr = Console(stderr=True)


def main() -> None:
    """Entry point of the ``comfyline`` command."""
    try:
        app(standalone_mode=False)
    except ComfylineError as exc:
        stderr.print(f"[bold red]{type(exc).__name__}[/]: {exc}", highlight=False, markup=True)
        sys.exit(2 if isinstance(exc, OrderError) else 1)
    except KeyboardInterrupt:
        stderr.print("interrupted")
        sys.exit(130)
