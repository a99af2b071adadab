"""Run mutmut over one module with only the tests that reach it (docs/TESTING.md).

mutmut reads its settings from ``pyproject.toml`` in the folder it runs in and runs the whole
test selection once before the mutants. To keep a run to one module and its tests, this copies
the project to ``.mutation/<name>/`` (ignored by git; the copy and its ``mutants/`` are kept, so a
second run only tests what changed) and writes there a ``[tool.mutmut]`` made from
``[tool.mutmut]`` and ``[tool.comfyline-mutation.<name>]`` of this project.

    python scripts/mutation.py protocol                 # all of that module's mutants
    python scripts/mutation.py ledger 'comfyline.ledger.xǁLedgerǁmark_*'   # some of them
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COPIED = ["src", "tests", "docs", "scripts", "automation", "benchmarks", "README.md"]


def _toml_value(value: object) -> str:
    # JSON strings, lists and numbers are valid TOML for the values used here.
    return json.dumps(value, ensure_ascii=False)


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__)
        return 2
    name, names = argv[0], argv[1:]
    project = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))
    runs = project["tool"]["comfyline-mutation"]
    if name not in runs:
        print(f"no module {name!r} in [tool.comfyline-mutation]; known: {', '.join(runs)}")
        return 2
    base = dict(project["tool"]["mutmut"])
    base.update({k: v for k, v in runs[name].items() if k != "tests"})
    base["pytest_add_cli_args_test_selection"] = runs[name]["tests"]

    work = ROOT / ".mutation" / name
    work.mkdir(parents=True, exist_ok=True)
    for entry in COPIED:
        source, target = ROOT / entry, work / entry
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
        elif source.exists():
            shutil.copy2(source, target)
    kept, skipping = [], False
    for line in (ROOT / "pyproject.toml").read_text("utf-8").splitlines():
        if line.startswith("["):
            skipping = line.strip() == "[tool.mutmut]"
        if not skipping:
            kept.append(line)
    section = "\n".join(f"{key} = {_toml_value(value)}" for key, value in base.items())
    text = "\n".join(kept) + f"\n\n[tool.mutmut]\n{section}\n"
    (work / "pyproject.toml").write_text(text, "utf-8")

    # The folder must exist before Python starts: a PYTHONPATH entry that is missing then is
    # skipped for good, and the first run would test the unmutated code.
    (work / "mutants" / "src").mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    # Tests that run comfyline as a child process must import the mutants too.
    env["PYTHONPATH"] = str(work / "mutants" / "src")
    run = [sys.executable, "-m", "mutmut", "run", "--max-children", "2", *names]
    code = subprocess.call(run, cwd=work, env=env)
    subprocess.call([sys.executable, "-m", "mutmut", "results"], cwd=work, env=env)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
