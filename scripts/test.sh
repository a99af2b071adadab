#!/usr/bin/env bash
# The whole check: install with the dev extras, then ruff, mypy --strict and the test suite.
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
exec python -m pytest "$@"
