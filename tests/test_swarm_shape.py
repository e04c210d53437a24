"""The profile's stages as Locust's load shape: what ProfileShape asks for, second by second.

ProfileShape is a Locust LoadTestShape, and importing Locust patches the importing process,
so one fresh interpreter reads the shapes at chosen instants (by setting the shape's start
time back) and prints them; the tests read that. A worker's open-loop driver (the engine's
OpenLoop, free of Locust) runs here, in this process.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
import types
from typing import Any

import pytest

from loadgen.profile.schema import Profile
from loadgen.runtime.load import OpenLoop
from tests.test_swarm import child_env

# Closed loop: ramp 0 -> 10 agents over 10 s, hold 5 s, spike to 30 for 2 s, soak at 5 for
# 5 s (22 s in all). Open loop: the same stages in sessions/s, over 3 worker processes.
STAGES = [
    {"kind": "ramp", "duration": 10, "target": 10},
    {"kind": "hold", "duration": 5},
    {"kind": "spike", "duration": 2, "target": 30},
    {"kind": "soak", "duration": 5, "target": 5},
]
INSTANTS = [0.2, 2.2, 5.7, 9.6, 12.5, 16.0, 19.5, 21.5, 22.5]

SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    from loadgen.orchestration.shape import ProfileShape
    from loadgen.profile.schema import Profile
    from loadgen.runtime.load import OpenLoop, level_at

    stages, instants = json.loads(sys.argv[1]), json.loads(sys.argv[2])
    agents = [{"kind": "coding"}]
    closed = Profile.model_validate(
        {"agents": agents, "arrival": {"mode": "closed", "agents": 10}, "stages": stages})
    open_ = Profile.model_validate(
        {"agents": agents, "arrival": {"mode": "open", "rate": 10}, "stages": stages})

    def ticks(shape):
        out = []
        for t in instants:
            shape.start_time = time.perf_counter() - t  # as if the run had gone on t seconds
            out.append(shape.tick())
        return out

    worker = OpenLoop(open_.arrival, open_.stages, None, None, 0, share=lambda: 1 / 3)
    print(json.dumps({
        "closed": ticks(ProfileShape(closed)),
        "open": ticks(ProfileShape(open_, processes=3)),
        "total_rate": [level_at(t, open_.arrival, open_.stages) for t in instants],
        "worker_rate": [worker.rate_at(t) for t in instants],
    }))
    """
)


@pytest.fixture(scope="module")
def shapes() -> dict[str, list[Any]]:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, json.dumps(STAGES), json.dumps(INSTANTS)],
        capture_output=True, text=True, timeout=60, env=child_env(),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result: dict[str, list[Any]] = json.loads(done.stdout)
    return result


def at(shapes: dict[str, list[Any]], name: str, t: float) -> Any:
    return shapes[name][INSTANTS.index(t)]


def test_a_ramp_grows_the_users_along_its_line_from_zero(shapes: dict[str, list[Any]]) -> None:
    assert [at(shapes, "closed", t)[0] for t in (0.2, 2.2, 5.7, 9.6)] == [0, 2, 6, 10]


def test_a_hold_keeps_the_level_the_ramp_reached(shapes: dict[str, list[Any]]) -> None:
    assert at(shapes, "closed", 12.5)[0] == 10


def test_a_spike_jumps_to_its_target_and_falls_back_after(shapes: dict[str, list[Any]]) -> None:
    assert at(shapes, "closed", 16.0)[0] == 30
    assert at(shapes, "closed", 19.5)[0] == 5  # then the soak's level, not the spike's


def test_a_soak_holds_its_own_target_until_the_stages_end(shapes: dict[str, list[Any]]) -> None:
    assert at(shapes, "closed", 21.5)[0] == 5
    assert at(shapes, "closed", 22.5) is None  # past the last stage: the run stops


def test_users_spawn_within_the_tick_that_asks_for_them(shapes: dict[str, list[Any]]) -> None:
    # Locust ticks once a second: a spawn rate of at least the user count reaches it in one.
    for users, spawn_rate in filter(None, shapes["closed"]):
        assert spawn_rate >= max(users, 1)


def test_an_open_loop_shape_runs_one_arrival_user_per_worker_throughout(
    shapes: dict[str, list[Any]],
) -> None:
    assert shapes["open"][:-1] == [[3, 3.0]] * (len(INSTANTS) - 1)
    assert shapes["open"][-1] is None


def test_an_open_loop_worker_follows_the_rate_stages_at_its_share(
    shapes: dict[str, list[Any]],
) -> None:
    expected = [0.2, 2.2, 5.7, 9.6, 10, 30, 5, 5, 5]
    assert shapes["total_rate"] == pytest.approx(expected, abs=0.01)
    assert shapes["worker_rate"] == pytest.approx([r / 3 for r in shapes["total_rate"]])


def open_loop(rate: float, stages: list[dict[str, Any]]) -> Profile:
    return Profile.model_validate(
        {"agents": [{"kind": "coding"}], "arrival": {"mode": "open", "rate": rate},
         "stages": stages}
    )  # fmt: skip


def agent(slot: int) -> tuple[Any, str]:
    """What a session is started with; these sessions only need its id."""
    return types.SimpleNamespace(id=f"coding-{slot}"), "coding"


def arrivals(driver_for: Any, duration: float, elapsed: float = 0.0) -> tuple[list[float], float]:
    """Run an OpenLoop whose sessions only note when they started: (start times, seconds run)."""
    started: list[float] = []

    async def session(_agent: Any, _label: str, _session_id: str) -> None:
        started.append(asyncio.get_running_loop().time())

    async def main() -> float:
        loop = asyncio.get_running_loop()
        driver: OpenLoop = driver_for(session, loop)
        t0 = loop.time()
        await driver.run(duration, elapsed=elapsed)
        return loop.time() - t0

    took = asyncio.run(main())
    return started, took


def test_an_open_loop_driver_started_late_follows_the_stages_from_the_runs_time() -> None:
    # No arrivals for 30 s, then 40 sessions/s for 1 s. A worker that joins 30.5 s into the
    # run starts sessions at once and stops with the run, half a second later; from its own
    # start it would have waited 30 s.
    profile = open_loop(40, [{"kind": "hold", "duration": 30, "target": 0},
                             {"kind": "hold", "duration": 1, "target": 40}])  # fmt: skip

    def driver(session: Any, _loop: Any) -> OpenLoop:
        return OpenLoop(profile.arrival, profile.stages, agent, session, 7)

    started, took = arrivals(driver, profile.total_duration, elapsed=30.5)
    assert took < 2.0
    assert 5 <= len(started) <= 45  # 20 expected (40/s for 0.5 s); Poisson, seeded


def test_an_open_loop_drivers_share_is_read_at_every_arrival() -> None:
    # 400 sessions/s for 1 s; the share drops from all to a quarter halfway: about
    # 200 + 50 arrivals, where a share read once would give 400 (or 100). Bounds: 5 sigma.
    profile = open_loop(400, [{"kind": "hold", "duration": 1}])
    share = [1.0]

    def driver(session: Any, loop: asyncio.AbstractEventLoop) -> OpenLoop:
        loop.call_later(0.5, share.__setitem__, 0, 0.25)
        return OpenLoop(
            profile.arrival, profile.stages, agent, session, 7,
            share=lambda: share[0],
        )  # fmt: skip

    started, _took = arrivals(driver, profile.total_duration)
    assert 170 <= len(started) <= 330, len(started)


def test_an_open_loop_driver_starts_no_session_while_the_rate_is_zero() -> None:
    profile = open_loop(40, [{"kind": "hold", "duration": 1, "target": 0}])

    def driver(session: Any, _loop: Any) -> OpenLoop:
        return OpenLoop(profile.arrival, profile.stages, agent, session, 7)

    started, _took = arrivals(driver, profile.total_duration)
    assert started == []
