"""The platform guard: POSIX-only modules cannot be imported by comfyline, as on Windows.

Python imports ``sitecustomize`` at start-up from the first folder of ``sys.path`` that has one,
so putting this folder on ``PYTHONPATH`` arms the guard in every Python process of a test run,
the child processes (``python -m comfyline ...``) included. ``scripts/test.sh`` runs a named
subset of the suite this way (the ledger, the lock, image writes, names, the CLI): an import of
``fcntl``, ``resource``, ``pwd``, ``grp`` or ``termios`` by a ``comfyline`` module then fails
there as it would on Windows, with an ``ImportError`` that says so.

Only imports made by comfyline's own modules are refused. The libraries we run on need some of
these modules on POSIX and import them themselves (the standard library's ``subprocess`` imports
``fcntl``; ``getpass`` and ``os.path.expanduser`` import ``pwd``), and on Windows they take their
own Windows paths. So a comfyline call into ``getpass.getuser()`` is not caught here, and neither
is ``importlib.import_module("fcntl")``, which bypasses ``__import__``; ``tests/test_platform_
guard.py`` also checks the source statically for both kinds.

``comfyline.lock`` is the one exception: it imports ``fcntl`` inside its POSIX branch and
``msvcrt`` inside its Windows branch, and without ``fcntl`` here it could not lock on Linux.
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping, Sequence
from typing import Any

POSIX_ONLY = frozenset({"fcntl", "resource", "pwd", "grp", "termios"})
"""Modules that exist on Linux and macOS and not on Windows."""

ALLOWED = {"comfyline.lock": frozenset({"fcntl"})}
"""Importer module -> the POSIX-only modules it may import (in its POSIX branch only)."""

_import = builtins.__import__


def _guarded_import(
    name: str,
    globals: Mapping[str, Any] | None = None,
    locals: Mapping[str, Any] | None = None,
    fromlist: Sequence[str] = (),
    level: int = 0,
) -> Any:
    if level == 0 and name.partition(".")[0] in POSIX_ONLY:
        importer = str((globals or {}).get("__name__", ""))
        if (importer == "comfyline" or importer.startswith("comfyline.")) and name not in (
            ALLOWED.get(importer, frozenset())
        ):
            raise ModuleNotFoundError(
                f"{importer} imports {name}, which Windows does not have: comfyline would not "
                "run there (platform guard, tests/platform_guard/sitecustomize.py). Import it "
                "inside the function that needs it, under `if sys.platform != 'win32':`",
                name=name,
            )
    return _import(name, globals, locals, fromlist, level)


_guarded_import.platform_guard = True  # type: ignore[attr-defined]  # for the tests to see
builtins.__import__ = _guarded_import
