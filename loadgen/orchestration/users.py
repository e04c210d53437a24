"""Locust users: each user is one long-lived agent whose sessions run on the engine's loop."""

from __future__ import annotations

import itertools
from typing import Any

import gevent
from locust import User, constant, task

from loadgen.orchestration.process_engine import process_engine
from loadgen.profile.schema import Profile

__all__ = ["AgentUser", "ArrivalUser", "user_classes_for"]


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
    """Open loop or a trace: one per worker process, holding that process's arrivals (its
    share of the rate or of the trace's sessions)."""

    abstract = True
    wait_time = constant(0)

    @task
    def arrivals(self) -> None:
        """Hold this process's open-loop arrivals for the whole run, then idle."""
        # Waited for, not run: a rebalance that kills this user leaves them going.
        process_engine(self.environment).arrivals().wait()
        gevent.sleep(3600)


def _jitter(agent_id: str) -> float:
    return (sum(map(ord, agent_id)) % 1000) / 1000.0


def user_classes_for(profile: Profile) -> list[type[User]]:
    """One Locust user class per agent-mix entry (weights carried over), or the arrival user."""
    if profile.arrival.mode != "closed":  # open loop, or a trace's replay
        return [type("Arrivals", (ArrivalUser,), {"abstract": False})]
    classes: list[type[User]] = []
    for i, mix in enumerate(profile.agents):
        weight = max(1, round(mix.weight * 100))  # Locust weights are integers
        attrs: dict[str, Any] = {"abstract": False, "mix_index": i, "weight": weight}
        classes.append(type(f"agent_{mix.label}".replace("-", "_"), (AgentUser,), attrs))
    return classes
