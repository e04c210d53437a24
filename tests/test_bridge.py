"""The engine's loop thread in a Locust process ends with the process, cleanly."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from tests.test_swarm import child_env

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
