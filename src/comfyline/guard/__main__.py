"""``python -m comfyline.guard [COMFYUI_URL]``: print one reading of every sensor that answers."""

from comfyline.guard.sensors import main

raise SystemExit(main())
