# The main job on a fresh Windows machine, as demo.sh: install, then the smoke test (10
# `standard` images in sd\outputs\test\ and a report). Uses the ComfyUI at $env:COMFYUI_URL
# (default 127.0.0.1:8188, where the portable ComfyUI listens); when none answers, the built-in
# simulator, and says so. Arguments go to `comfyline smoke-test`, e.g.
#   powershell -ExecutionPolicy Bypass -File scripts\demo.ps1 --count 3
$DemoArgs = $args
$Extras = ""
. (Join-Path $PSScriptRoot "venv.ps1")
& python -m comfyline smoke-test @DemoArgs
exit $LASTEXITCODE
