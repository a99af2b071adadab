"""comfyline: unattended image series on ComfyUI."""

from importlib.metadata import version as _version

__version__ = _version("comfyline")
__all__ = ["__version__"]
