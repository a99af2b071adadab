"""A simulated ComfyUI server that speaks the real protocol, for tests, demos and benchmarks.

>>> from comfyline.sim import SimConfig, running_simulator
>>> with running_simulator(SimConfig(output_dir=tmp_path)) as sim:  # doctest: +SKIP
...     sim.url
'http://127.0.0.1:41873'
"""

from comfyline.sim.app import create_app
from comfyline.sim.config import Faults, SimConfig, ThermalConfig
from comfyline.sim.runner import SimServer, SimulatorHandle, running_simulator, serve_forever
from comfyline.sim.simulator import Simulator
from comfyline.sim.thermal import ThermalModel

__all__ = [
    "Faults",
    "SimConfig",
    "SimServer",
    "Simulator",
    "SimulatorHandle",
    "ThermalConfig",
    "ThermalModel",
    "create_app",
    "running_simulator",
    "serve_forever",
]
