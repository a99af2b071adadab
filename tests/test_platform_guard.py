"""Nothing POSIX-only in comfyline outside a platform branch, checked two ways.

- At run time: the platform guard (``tests/platform_guard/sitecustomize.py``) makes ``fcntl``,
  ``resource``, ``pwd``, ``grp`` and ``termios`` unimportable for comfyline's modules, as on
  Windows. ``scripts/test.sh`` runs a named subset of the suite under it; here every comfyline
  module is imported under it, and the guard itself is checked.
- In the source: every import of a POSIX-only (or Windows-only) module, and every use of a
  POSIX-only ``os`` or ``signal`` name, sits in a function after a test of ``sys.platform`` or
  ``os.name``. This also sees code that no test runs, and calls the guard cannot see.
"""

from __future__ import annotations

import ast
import builtins
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "comfyline"
GUARD = ROOT / "tests" / "platform_guard"

PLATFORM_MODULES = frozenset(
    {"fcntl", "resource", "pwd", "grp", "termios", "tty", "pty", "posix", "syslog"}
    | {"msvcrt", "winreg", "winsound", "_winapi", "_overlapped"}
)
"""Modules that exist on one platform only."""

POSIX_ONLY_NAMES = {
    "os": frozenset(
        "pread pwrite preadv pwritev fchmod fchown lchown chown getuid geteuid getgid getegid "
        "getpgid getpgrp killpg setsid setpgrp fork forkpty sync getloadavg mkfifo mknod lockf "
        "nice uname wait3 wait4 WNOHANG statvfs fstatvfs sched_getaffinity posix_fadvise "
        "posix_fallocate openpty ttyname O_DIRECTORY O_NOFOLLOW O_CLOEXEC".split()
    ),
    "signal": frozenset(
        "SIGKILL SIGHUP SIGQUIT SIGUSR1 SIGUSR2 SIGALRM SIGCHLD SIGPIPE SIGCONT SIGSTOP SIGTSTP "
        "alarm setitimer getitimer pause pthread_kill pthread_sigmask sigwait siginterrupt".split()
    ),
}
"""Names of ``os`` and ``signal`` that Windows lacks (``getattr(signal, name, None)`` is fine)."""


def platform_problems(source: str, filename: str) -> list[str]:
    """Every platform-only import or name in ``source`` that is not in a function after a test
    of ``sys.platform`` or ``os.name``, as ``file:line: what``."""
    tree = ast.parse(source, filename)
    problems = []
    for node, what in sorted(_platform_uses(tree), key=lambda use: use[0].lineno):
        if not _guarded(tree, node):
            problems.append(
                f"{filename}:{node.lineno}: {what} outside a function's `sys.platform` branch"
            )
    return problems


def _platform_uses(tree: ast.AST) -> list[tuple[ast.AST, str]]:
    uses: list[tuple[ast.AST, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            names = []
        uses += [(node, f"import {n}") for n in names if n.partition(".")[0] in PLATFORM_MODULES]
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            if node.attr in POSIX_ONLY_NAMES.get(node.value.id, ()):
                uses.append((node, f"{node.value.id}.{node.attr}"))
        if isinstance(node, ast.Attribute) and node.attr == "add_signal_handler":
            uses.append((node, "add_signal_handler (not on Windows' event loop)"))
    return uses


def _guarded(tree: ast.AST, target: ast.AST) -> bool:
    """Whether ``target`` is in a function whose code tests the platform before it."""
    for function in ast.walk(tree):
        if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        inside = any(node is target for node in ast.walk(function))
        if inside and any(
            _is_platform_test(node) and node.lineno <= target.lineno for node in ast.walk(function)
        ):
            return True
    return False


def _is_platform_test(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and (node.value.id, node.attr) in {("sys", "platform"), ("os", "name")}
    )


def test_the_source_check_finds_what_it_looks_for() -> None:
    bad = (
        "import fcntl\n"
        "import os, signal\n"
        "def f(fd):\n"
        "    import msvcrt\n"
        "    os.pread(fd, 1, 0)\n"
        "    return signal.SIGKILL\n"
    )
    assert [p.split(": ", 1)[1] for p in platform_problems(bad, "bad.py")] == [
        "import fcntl outside a function's `sys.platform` branch",
        "import msvcrt outside a function's `sys.platform` branch",
        "os.pread outside a function's `sys.platform` branch",
        "signal.SIGKILL outside a function's `sys.platform` branch",
    ]
    good = (
        "import os, signal, sys\n"
        "def f(fd):\n"
        "    if sys.platform == 'win32':\n"
        "        import msvcrt\n"
        "        return msvcrt.locking(fd, 1, 1)\n"
        "    import fcntl\n"
        "    os.pread(fd, 1, 0)\n"
        "    return getattr(signal, 'SIGHUP', None)\n"
    )
    assert platform_problems(good, "good.py") == []


def test_no_platform_only_code_outside_a_platform_branch_in_the_source() -> None:
    problems = []
    for path in sorted(SRC.rglob("*.py")):
        problems += platform_problems(path.read_text("utf-8"), str(path.relative_to(ROOT)))
    assert problems == []


def guarded_python(code: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a Python with the platform guard armed (as scripts/test.sh does)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(GUARD), env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )


def test_every_comfyline_module_imports_under_the_guard() -> None:
    done = guarded_python(
        "import builtins, importlib, pkgutil, comfyline\n"
        "assert builtins.__import__.platform_guard\n"
        "names = [m.name for m in pkgutil.walk_packages(comfyline.__path__, 'comfyline.')]\n"
        "for name in names:\n"
        "    if not name.endswith('__main__'):\n"
        "        importlib.import_module(name)\n"
        "print(len(names), 'modules')\n"
    )
    assert done.returncode == 0, done.stderr
    assert int(done.stdout.split()[0]) > 40


def test_the_guard_refuses_comfyline_a_posix_only_module_and_lets_libraries_have_it() -> None:
    done = guarded_python(
        "try:\n"
        "    exec('import termios', {'__name__': 'comfyline.example'})\n"
        "except ModuleNotFoundError as exc:\n"
        "    print(exc)\n"
        "exec('import termios', {'__name__': 'some_library'})\n"
        "import subprocess, sys  # the standard library imports fcntl for itself\n"
        "print(subprocess.run([sys.executable, '-c', 'pass']).returncode == 0)\n"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "comfyline.example imports termios, which Windows does not have: comfyline would not "
        "run there (platform guard, tests/platform_guard/sitecustomize.py). Import it inside "
        "the function that needs it, under `if sys.platform != 'win32':`",
        "True",
    ]


@pytest.mark.skipif(
    os.environ.get("PLATFORM_GUARD") != "1", reason="only in scripts/test.sh's guarded pass"
)
def test_the_guarded_pass_runs_with_the_guard_armed() -> None:
    assert getattr(builtins.__import__, "platform_guard", False)
