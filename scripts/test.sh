#!/usr/bin/env bash
# The whole check: install with the dev extras, then ruff, mypy --strict and the test suite.
EXTRAS=dev source "$(dirname "$0")/venv.sh"
ruff check src tests benchmarks scripts
ruff format --check src tests benchmarks scripts
mypy
exec python -m pytest "$@"
