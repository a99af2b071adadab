"""The smoke test under the user's name: ``python scripts/smoke_test.py [options]``.

The same as ``comfyline smoke-test [options]`` (see ``--help``).
"""

from __future__ import annotations

import sys

from comfyline.cli import main

if __name__ == "__main__":
    sys.argv[1:1] = ["smoke-test"]
    main()
