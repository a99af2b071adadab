"""Prompt profiles shipped with comfyline, as data (``builtin.yaml``).

A profile is a named addition to prompts: text appended to the prompt and to the negative prompt
(the seed's fix for faces is the ``portrait`` profile). Orders name profiles in ``profiles:``;
users add their own in ``automation/profiles.yaml`` or a ``profiles_file:`` beside the order,
in the same format. Reading and checking them is :mod:`comfyline.orders`' job.
"""

from __future__ import annotations

from importlib import resources

BUILTIN_FILE = "builtin.yaml"


def builtin_text() -> str:
    """The text of the built-in profiles file."""
    return resources.files(__package__).joinpath(BUILTIN_FILE).read_text("utf-8")
