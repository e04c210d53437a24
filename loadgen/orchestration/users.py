"""Locust users: each user is one long-lived agent whose sessions run on the engine's loop."""

from __future__ import annotations

import itertools
from typing import Any

import gevent
from locust import User, constant, task

from loadgen.orchestration.process_engine import process_engine
from loadgen.profile.schema import Arrival, Profile, Stage
from loadgen.runtime.load import OpenLoop

__all__ = ["AgentUser", "ArrivalUser", "scaled_arrival", "user_classes_for"]


class AgentUser(User):
    """One long-lived agent: sessions back to back, idle time between them."""

    abstract = True
    wait_time = constant(0)
    mix_index = 0

    def on_start(self) -> None:
        """Create this user's agent on first start (the engine starts with the first user)."""
        self.engine = process_engine(self.environment)
        self.agent, self.label = self.engine.new_agent(self.mix_index)
        self.sessions = itertools.count()
        # Jittered starts keep a whole pool from sending its first requests in lockstep.
        gevent.sleep(_jitter(self.agent.id))

    @task
    def session(self) -> None:
        """Run one session on the loop thread; a stopped user cancels it (counted aborted)."""
        n = next(self.sessions)
        self.engine.bridge.run(
            self.engine.engine.run_session(self.agent, self.label, f"{self.agent.id}-s{n}")
        )
        idle = self.agent.idle_time() * self.engine.settings.loaded.profile.time_scale
        if idle > 0:
            gevent.sleep(idle)


class ArrivalUser(User):
    """Open loop: one per worker process, starting sessions at its share of the rate."""

    abstract = True
    wait_time = constant(0)

    @task
    def arrivals(self) -> None:
        """Run the open-loop arrival process for the whole run, then idle."""
        engine = process_engine(self.environment)
        profile = engine.settings.loaded.profile
        share = 1.0 / max(1, engine.settings.processes)
        arrival, stages = scaled_arrival(profile.arrival, profile.stages, share)
        run_session = engine.engine.run_session
        driver = OpenLoop(arrival, stages, engine.make_agent, run_session, engine.seed)
        engine.bridge.run(driver.run(profile.total_duration))
        gevent.sleep(3600)


def scaled_arrival(
    arrival: Arrival, stages: list[Stage], share: float
) -> tuple[Arrival, list[Stage]]:
    """An open-loop arrival and its stages at `share` of the session rate (one worker's)."""
    rate = (arrival.rate or 0.0) * share
    scaled = [
        s.model_copy(update={"target": None if s.target is None else s.target * share})
        for s in stages
    ]
    return arrival.model_copy(update={"rate": rate}), scaled


def _jitter(agent_id: str) -> float:
    return (sum(map(ord, agent_id)) % 1000) / 1000.0


def user_classes_for(profile: Profile) -> list[type[User]]:
    """One Locust user class per agent-mix entry (weights carried over), or the arrival user."""
    if profile.arrival.mode == "open":
        return [type("Arrivals", (ArrivalUser,), {"abstract": False})]
    classes: list[type[User]] = []
    for i, mix in enumerate(profile.agents):
        weight = max(1, round(mix.weight * 100))  # Locust weights are integers
        attrs: dict[str, Any] = {"abstract": False, "mix_index": i, "weight": weight}
        classes.append(type(f"agent_{mix.label}".replace("-", "_"), (AgentUser,), attrs))
    return classes
