# The whole check on Windows (or with PowerShell anywhere), as test.sh: install with the dev
# extras, then ruff, mypy --strict and the test suite. Arguments go to pytest, e.g.
#   powershell -ExecutionPolicy Bypass -File scripts\test.ps1 -q
# (test.sh's second, "platform" pass fakes Windows' missing modules on Linux; here they are
# really missing, so the one pass is that check.)
$PytestArgs = $args
$Extras = "dev"
. (Join-Path $PSScriptRoot "venv.ps1")
Invoke-Native ruff check src tests benchmarks scripts
Invoke-Native ruff format --check src tests benchmarks scripts
Invoke-Native mypy
& python -m pytest @PytestArgs
exit $LASTEXITCODE
