# Dot-sourced by demo.ps1 and test.ps1 (the PowerShell twin of venv.sh): make .venv (once) with a
# Python >= 3.11 of its own and install comfyline into it. $Extras selects optional dependencies
# ("dev" for the tests). The Python is $env:PYTHON if set, else the newest one the `py` launcher
# knows, else `python3` or `python` on PATH; never ComfyUI's embedded Python (python_embeded):
# comfyline runs beside ComfyUI, in an environment of its own, and talks to it over HTTP.
$ErrorActionPreference = "Stop"
Set-Location (Join-Path $PSScriptRoot "..")

function Invoke-Native {
    # Run a program with arguments; end the script with its exit status if it fails
    # (PowerShell itself goes on after a failed program).
    $program = $args[0]
    $rest = @($args | Select-Object -Skip 1)
    & $program @rest
    if ($LASTEXITCODE -ne 0) { exit $LASTEXITCODE }
}

function Get-PythonExe([string] $Program, [string[]] $Rest) {
    # The interpreter's own path if `$Program $Rest` is a Python >= 3.11, else $null.
    $ErrorActionPreference = "Continue"  # Windows PowerShell stops on a program's stderr else
    if (-not (Get-Command $Program -ErrorAction SilentlyContinue)) { return $null }
    $probe = "import sys; print(sys.version_info >= (3, 11)); print(sys.executable)"
    $out = @(& $Program @Rest -c $probe 2>$null)
    if ($LASTEXITCODE -ne 0 -or $out.Count -lt 2 -or $out[0] -ne "True") { return $null }
    if ($out[1] -match "python_embeded") {
        Write-Warning "not using $($out[1]): ComfyUI's embedded Python; comfyline needs its own"
        return $null
    }
    return $out[1]
}

function Find-Python {
    $tries = @()
    if ($env:PYTHON) { $tries += Get-PythonExe $env:PYTHON @() }
    $tries += Get-PythonExe "py" @("-3")
    $tries += Get-PythonExe "python3" @()
    $tries += Get-PythonExe "python" @()
    $found = @($tries | Where-Object { $_ })
    if ($found.Count -eq 0) {
        Write-Error ("No Python >= 3.11 found. Install one from " +
            "https://www.python.org/downloads/ (tick 'Add python.exe to PATH'), or set " +
            "`$env:PYTHON to its python.exe, and run again.")
    }
    return $found[0]
}

$OnWindows = ($PSVersionTable.PSEdition -eq "Desktop") -or $IsWindows
$VenvBin = if ($OnWindows) { Join-Path ".venv" "Scripts" } else { Join-Path ".venv" "bin" }
$VenvPython = Join-Path $VenvBin $(if ($OnWindows) { "python.exe" } else { "python" })
if (-not (Test-Path $VenvPython)) {
    Invoke-Native (Find-Python) -m venv .venv
}
$Stamp = Join-Path ".venv" ".installed-$(if ($Extras) { $Extras } else { 'base' })"
if (-not (Test-Path $Stamp) -or
        (Get-Item pyproject.toml).LastWriteTime -gt (Get-Item $Stamp).LastWriteTime) {
    $Target = if ($Extras) { ".[$Extras]" } else { "." }
    Invoke-Native $VenvPython -m pip install -q --disable-pip-version-check -e $Target
    New-Item -ItemType File -Force $Stamp | Out-Null
}
$env:PATH = (Resolve-Path $VenvBin).Path + [IO.Path]::PathSeparator + $env:PATH
