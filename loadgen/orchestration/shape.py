"""Profile stages as a Locust LoadTestShape (agents in closed loop; workers in open loop)."""

from __future__ import annotations

from collections.abc import Callable

from locust import LoadTestShape

from loadgen.profile.schema import Profile
from loadgen.runtime.load import level_at, staged

__all__ = ["ProfileShape"]

_TICK_S = 1.0  # how often Locust asks a shape for its numbers


class ProfileShape(LoadTestShape):
    """Follows the profile's stages: ramp, hold, spike and soak, then stops the run."""

    def __init__(self, profile: Profile, processes: int = 1) -> None:
        super().__init__()
        self.profile = profile
        self.processes = processes
        # Agents start over a ramp even where the profile has no stages (or --duration
        # replaced them): see runtime.load.staged.
        self.stages = staged(profile.arrival, profile.stages, profile.total_duration)
        # A replayed trace that ended before its duration ends the run (set where this
        # process runs the whole trace; a master cannot tell when its workers' shares end).
        self.finished: Callable[[], bool] = lambda: False

    def tick(self) -> tuple[int, float] | None:
        """(users, spawn rate) now, or None when the run is over."""
        elapsed = self.get_run_time()
        profile = self.profile
        if elapsed >= profile.total_duration or self.finished():
            return None
        if profile.arrival.mode != "closed":
            # One arrival user per worker process; each runs its share of the session rate
            # (or of a trace's sessions).
            return self.processes, float(self.processes)
        # The start ramp is read a tick ahead: its first second starts agents (a ramp under a
        # second starts them all at once, as a run without it did), not an empty pool.
        ahead = 0.0 if self.stages is profile.stages else _TICK_S
        users = round(level_at(elapsed + ahead, profile.arrival, self.stages))
        # Locust ticks once a second; spawning the whole difference within that second keeps
        # the user count on the staged curve (a ramp is already spread over its ticks).
        return users, float(max(users, 1))
