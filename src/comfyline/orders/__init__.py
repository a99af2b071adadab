"""Orders: ``project.yaml`` files read once and strictly, then planned into image slots.

- :func:`load` reads an order file (or the folder holding it) and every file it names, and
  returns a :class:`LoadedOrder`, or raises :class:`~comfyline.errors.OrderError` with *every*
  problem found, each located as ``file:line:column: field.path: message``. Nothing is written.
- :func:`plan` turns a loaded order into :class:`Slot` s, one per prompt sent: pure and
  deterministic (given the same order and, for ``seed: {mode: random}``, the same recorded
  ``random_base``).
- :func:`find_orders` and :func:`check_orders` serve ``comfyline validate``.

The models are in :mod:`comfyline.schemas.order`; the contract for users is
``docs/ORDER_CONTRACT.md``. Modules: ``load`` (YAML to a checked order), ``sources`` (the CSV,
profiles and workflow files), ``plan`` (slots), ``discover`` (many orders), ``yaml_source`` and
``yaml_hints`` (YAML with positions and hints), ``problems`` (pydantic errors in words).
"""

from comfyline.orders.discover import OrderCheck, check_order, check_orders, find_orders
from comfyline.orders.load import ORDER_FILE, LoadedOrder, load
from comfyline.orders.plan import Placed, Plan, Slot, derive_seed, plan
from comfyline.orders.sources import (
    BUILTIN_PREFIX,
    CSV_COLUMNS,
    SourceFile,
    parse_profiles,
    parse_prompts_csv,
    project_root,
    shared_profiles_path,
)

__all__ = [
    "BUILTIN_PREFIX",
    "CSV_COLUMNS",
    "ORDER_FILE",
    "LoadedOrder",
    "OrderCheck",
    "Placed",
    "Plan",
    "Slot",
    "SourceFile",
    "check_order",
    "check_orders",
    "derive_seed",
    "find_orders",
    "load",
    "parse_profiles",
    "parse_prompts_csv",
    "plan",
    "project_root",
    "shared_profiles_path",
]
