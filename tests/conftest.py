"""Shared fixtures. The environment is cleaned for every test so that no developer setting
(COMFYUI_URL, COMFYLINE_*) leaks into a test."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def clean_environ() -> Iterator[None]:
    saved = dict(os.environ)
    for key in list(os.environ):
        if key.startswith("COMFYLINE_") or key == "COMFYUI_URL":
            del os.environ[key]
    yield
    os.environ.clear()
    os.environ.update(saved)
