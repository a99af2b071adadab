"""Run an order under the user's name: ``python scripts/run_order.py automation/orders/<id>``.

The same as ``comfyline run-order PATH [options]`` (see ``--help``).
"""

from __future__ import annotations

import sys

from comfyline.cli import main

if __name__ == "__main__":
    sys.argv[1:1] = ["run-order"]
    main()
