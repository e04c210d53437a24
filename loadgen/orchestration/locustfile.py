"""A plain `locust -f` entry point for teams that already run Locust.

    AGENTLOAD_PROFILE=coding-agent locust -f "$(python -m loadgen.orchestration.locustfile)" \\
        --host http://localhost:8000/v1 --headless

Each Locust user is one long-lived agent of the profile's mix. The profile (AGENTLOAD_PROFILE:
a built-in name or a YAML path; it must be known when Locust imports this file, since it
decides the user classes and the shape) decides what the agents do, and its stages (ramp,
hold, spike, soak) how many run and for how long: they are this file's LoadTestShape, so
Locust ignores -u, -r and -t (and says so). Locust's own flags decide the distribution
(--master/--worker, --processes). An open-loop profile (`arrival: {mode: open}`) is the
exception: its session rate is not applied here, its agents run closed loop, as many as -u
(a warning says so at start); `agentload run` runs it as written. Results land in
--agentload-out, one folder per process that ran agents: steps.jsonl and sessions.jsonl as
they happen, summary.json whenever a test stops.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

from locust import events
from locust.runners import WorkerRunner

# The module, not the class: Locust instantiates every shape class among this file's globals.
from loadgen.orchestration import shape as _shape
from loadgen.orchestration.process_engine import ProcessEngine, SwarmSettings
from loadgen.orchestration.users import AgentUser
from loadgen.profile.loader import load_profile
from loadgen.transport import TargetConfig

_PROFILE = os.environ.get("AGENTLOAD_PROFILE", "quickstart")
_LOADED = load_profile(_PROFILE)
_log = logging.getLogger(__name__)


def _arguments(parser: Any) -> None:
    parser.add_argument("--agentload-out", default="results/locust", help="results folder")
    parser.add_argument("--agentload-model", default=None, help="model (default: discovered)")


def _init(environment: Any, **_kw: Any) -> None:
    options = environment.parsed_options
    host = environment.host or "http://127.0.0.1:8000/v1"
    out = Path(getattr(options, "agentload_out", "results/locust"))
    environment.agentload = SwarmSettings(
        _LOADED,
        TargetConfig.from_url(host, api_key=os.environ.get("OPENAI_API_KEY")),
        out / f"pid-{os.getpid()}",
        model=getattr(options, "agentload_model", None),
    )
    _ENVIRONMENTS.append(environment)
    profile = _LOADED.profile
    if profile.arrival.mode == "open" and not isinstance(environment.runner, WorkerRunner):
        _log.warning(
            "agentload: profile %s is open loop (%g sessions/s), which plain locust does not "
            "run: its agents run closed loop, as many as -u, for -t, and its stages are not "
            "applied; `agentload run %s` runs it as written",
            profile.name,
            profile.arrival.rate or 0.0,
            _PROFILE,
        )


def _engine(environment: Any) -> ProcessEngine | None:
    engine: ProcessEngine | None = getattr(environment, "agentload_engine", None)
    return engine  # None in a process that ran no agent (a master)


def _write_summary(environment: Any, **_kw: Any) -> None:
    """After each test stop (Locust may start and stop several in one web UI session)."""
    engine = _engine(environment)
    if engine is None:
        return
    engine.bridge.wait_idle(15.0)  # stopped sessions write their records first
    summary = engine.engine.summary(time.perf_counter() - engine.started)
    engine.engine.write_summary(summary)


def _finish(**_kw: Any) -> None:
    # `quit` fires once Locust's runner has quit (it names no environment), so no user is
    # left to need the engine.
    for environment in _ENVIRONMENTS:
        engine = _engine(environment)
        if engine is not None:
            engine.finish()


_ENVIRONMENTS: list[Any] = []
events.init_command_line_parser.add_listener(_arguments)
events.init.add_listener(_init)
events.test_stop.add_listener(_write_summary)
events.quit.add_listener(_finish)


def _user_class(index: int, label: str, weight: float) -> type[AgentUser]:
    name = f"agent_{label}".replace("-", "_")
    attrs = {"abstract": False, "mix_index": index, "weight": max(1, round(weight * 100))}
    return type(name, (AgentUser,), attrs)


# Locust discovers User classes among this module's globals.
for _i, _mix in enumerate(_LOADED.profile.agents):
    globals()[f"agent_{_mix.label}".replace("-", "_")] = _user_class(_i, _mix.label, _mix.weight)


if _LOADED.profile.arrival.mode == "closed":

    class ProfileStages(_shape.ProfileShape):
        """The profile's stages as the run's load shape (Locust finds it among the globals)."""

        def __init__(self) -> None:
            super().__init__(_LOADED.profile)


if __name__ == "__main__":
    # `python -m loadgen.orchestration.locustfile` prints this file's path for `locust -f`.
    print(__file__)
