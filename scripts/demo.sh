#!/usr/bin/env bash
# The main job on a fresh machine: install, then the smoke test (10 `standard` images in
# sd/outputs/test/ and a report). Uses the ComfyUI at $COMFYUI_URL (default 127.0.0.1:8188);
# when none answers, the built-in simulator, and says so.
source "$(dirname "$0")/venv.sh"
exec comfyline smoke-test "$@"
