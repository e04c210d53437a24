"""The engine's loop thread in a gevent-patched (Locust) process: the pitfalls it avoids.

Each check runs in a fresh interpreter patched as Locust patches it: importing gevent's side
of loadgen here must not touch pytest's process.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.test_swarm import child_env

# Measures, in a patched process, each thing bridge.py's docstring lists as a pitfall.
PITFALLS = textwrap.dedent(
    """
    from gevent import monkey
    monkey.patch_all()

    import asyncio, gc, json, os, socket
    import gevent
    from pathlib import Path

    def os_threads():
        return len(os.listdir("/proc/self/task"))

    native_id = monkey.get_original("threading", "get_native_id")
    report = {"patched_socket": socket.socket.__module__}
    threads_before = os_threads()
    from loadgen.orchestration import bridge
    report["threads_after_import"] = os_threads() - threads_before
    report["bridge_at_import"] = bridge._BRIDGE is not None
    loop_bridge = bridge.process_bridge()
    report["threads_after_first_use"] = os_threads() - threads_before
    report["socket_after_first_use"] = socket.socket.__module__

    async def on_the_loop():
        sock = bridge.native_socket_factory(
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", 0)))
        sock.close()
        # A real exchange over the loop's own sockets: a stdlib loop here would block on
        # gevent's selector instead.
        async def echo(reader, writer):
            writer.write(await reader.readexactly(4))
            await writer.drain()
            writer.close()
        server = await asyncio.start_server(echo, "127.0.0.1", 0)
        reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname()[:2])
        writer.write(b"ping")
        reply = await reader.readexactly(4)
        writer.close()
        server.close()
        return {
            "loop": type(asyncio.get_running_loop()).__module__,
            "native_thread": native_id(),
            "factory_socket": type(sock).__module__,
            "echo": reply.decode(),
        }

    report.update(loop_bridge.run(on_the_loop(), timeout=30))
    report["hub_thread"] = native_id()

    ticks = []
    def tick():
        while True:
            ticks.append(1)
            gevent.sleep(0.01)
    ticker = gevent.spawn(tick)
    loop_bridge.run(asyncio.sleep(0.5), timeout=30)  # a greenlet waits; the others go on
    ticker.kill()
    report["ticks_while_waiting"] = len(ticks)

    from loadgen.orchestration.environment import swarm_environment
    from loadgen.orchestration.process_engine import SwarmSettings
    from loadgen.profile.loader import load_profile
    from loadgen.transport import TargetConfig

    settings = SwarmSettings(
        load_profile("ci-smoke"), TargetConfig.from_url("http://127.0.0.1:9/v1"), Path("."))
    env = swarm_environment(settings, 1)
    report["frozen_before_spawn"] = gc.get_freeze_count()
    env.events.spawning_complete.fire(user_count=8)
    report["frozen_after_spawn"] = gc.get_freeze_count()
    print(json.dumps(report))
    """
)


@pytest.fixture(scope="module")
def pitfalls() -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", PITFALLS], capture_output=True, text=True, timeout=60,
        env=child_env(),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    assert report["patched_socket"].startswith("gevent")  # the premise: patched as by Locust
    return report


def test_the_bridge_is_made_on_first_use_not_at_import(pitfalls: dict[str, Any]) -> None:
    # At import it would be made before Locust forks, and the child would have no loop thread.
    assert pitfalls["bridge_at_import"] is False
    assert pitfalls["threads_after_import"] == 0
    assert pitfalls["threads_after_first_use"] == 1


def test_the_loop_runs_on_its_own_os_thread_not_in_a_greenlet(pitfalls: dict[str, Any]) -> None:
    assert pitfalls["native_thread"] != pitfalls["hub_thread"]


def test_the_loop_is_uvloop_not_a_stdlib_loop_on_gevents_selector(
    pitfalls: dict[str, Any],
) -> None:
    assert pitfalls["loop"].startswith("uvloop")
    assert pitfalls["echo"] == "ping"


def test_native_socket_factory_makes_stdlib_sockets_while_greenlets_keep_gevents(
    pitfalls: dict[str, Any],
) -> None:
    assert pitfalls["factory_socket"] == "socket"
    assert pitfalls["socket_after_first_use"].startswith("gevent")  # restored after uvloop


def test_a_greenlet_waiting_on_the_loop_does_not_block_the_others(
    pitfalls: dict[str, Any],
) -> None:
    # A ticker every 10 ms for the 0.5 s wait: about 50 ticks; a blocked hub gives 1.
    assert pitfalls["ticks_while_waiting"] >= 10


def test_spawning_complete_freezes_the_long_lived_agents_out_of_the_collector(
    pitfalls: dict[str, Any],
) -> None:
    assert pitfalls["frozen_before_spawn"] == 0
    assert pitfalls["frozen_after_spawn"] > 0


# A fresh interpreter: importing gevent's side of loadgen here must not touch pytest's process.
SCRIPT = textwrap.dedent(
    """
    import asyncio, sys
    from loadgen.orchestration.bridge import process_bridge

    async def forever():
        try:
            await asyncio.sleep(3600)
        finally:
            with open(sys.argv[1], "w") as f:
                f.write("cleaned up")

    bridge = process_bridge()
    bridge.submit(forever())
    bridge.run(asyncio.sleep(0), timeout=10)  # by now `forever` has started
    """
)


def test_at_exit_the_loop_thread_cancels_what_still_runs_and_ends(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    done = subprocess.run(
        [sys.executable, "-X", "faulthandler", "-c", SCRIPT, str(marker)],
        capture_output=True, text=True, timeout=60, env=child_env(),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    # Without the exit hook the thread dies mid-task: no cleanup, and at times a crash.
    assert marker.read_text() == "cleaned up"
    assert done.stderr == ""
