"""The built-in OpenAI-compatible simulator of a GPU serving engine (`agentload sim`)."""

from loadgen.sim.config import PRESETS, AnalyticalModel, FaultRates, SimConfig, preset_config
from loadgen.sim.server import SimServer, build_app, sim_server

__all__ = [
    "PRESETS",
    "AnalyticalModel",
    "FaultRates",
    "SimConfig",
    "SimServer",
    "build_app",
    "preset_config",
    "sim_server",
]
