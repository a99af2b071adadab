#!/usr/bin/env bash
# The whole check: install with the dev extras, then ruff, mypy --strict and the test suite,
# then the platform pass (below). Arguments go to both pytest runs.
EXTRAS=dev source "$(dirname "$0")/venv.sh"
# The dashboard's browser tests drive Debian's Chromium (browser downloads are not reachable);
# installed when missing, where we are root with apt-get; elsewhere those tests are skipped.
if ! command -v chromium >/dev/null && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } >/dev/null 2>&1 \
    || echo "could not install chromium: the browser tests will be skipped" >&2
fi
ruff check src tests benchmarks scripts
ruff format --check src tests benchmarks scripts
mypy
python -m pytest "$@"

# The platform pass: the ledger, the lock, image writes, order and file names, and the CLI, again,
# with POSIX-only modules (fcntl, resource, pwd, grp, termios) unimportable for comfyline, as on
# Windows (tests/platform_guard/sitecustomize.py; child processes inherit it). Skipped when the
# first run was given test files or node ids: that run was a focused one.
for arg in "$@"; do
  case $arg in
    tests/* | *.py | *::*) echo "platform pass skipped: test files were named"; exit 0 ;;
  esac
done
# (Not the orders' model, server-check and kill tests: graphs, HTTP and POSIX signals, nothing
# a platform changes; they run in the first pass.)
PLATFORM_SUBSET=(
  tests/test_platform_*.py
  tests/test_ledger_*.py
  tests/test_orders_bad.py
  tests/test_orders_cli.py
  tests/test_orders_docs.py
  tests/test_orders_evolve.py
  tests/test_orders_load.py
  tests/test_orders_plan.py
  tests/test_pipeline_cli.py
)
echo "platform pass: ${PLATFORM_SUBSET[*]}"
status=0
PLATFORM_GUARD=1 PYTHONPATH="tests/platform_guard${PYTHONPATH:+:$PYTHONPATH}" \
  python -m pytest "$@" "${PLATFORM_SUBSET[@]}" || status=$?
# 5: no test selected (e.g. `-m real`: the subset has none); the first run counted those.
if [ "$status" -ne 0 ] && [ "$status" -ne 5 ]; then
  exit "$status"
fi
