"""An interrupted ceiling search keeps every level it measured and says it was interrupted."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_ceiling import PROFILE

# The ceiling tests' small support sessions, on an analytical sim with room for many agents.
SIM = {"preset": "fast", "perf": {"kind": "analytical", "decode_step_ms": 10}, "max_num_seqs": 64}


@pytest.mark.parametrize("processes", [1, 2], ids=["one-process", "processes-2"])
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_an_interrupted_search_writes_the_levels_it_measured(
    tmp_path: Path, sig: signal.Signals, processes: int
) -> None:
    profile = tmp_path / "p.yaml"
    profile.write_text(PROFILE + f"sim: {json.dumps(SIM)}\n")
    out = tmp_path / "out"
    swarm = ["--processes", str(processes)] if processes > 1 else []
    started = time.monotonic()
    # A session of its own, as a terminal's job: Ctrl-C goes to the whole group (the local
    # workers too), SIGTERM (kill, docker stop) to the master alone.
    proc = subprocess.Popen(
        [sys.executable, "-m", "loadgen", "ceiling", str(profile), "--slo", "ttft_p95 < 10s",
         "--start", "2", "--warmup", "0.5s", "--window", "1.5s", "--max-duration", "300s",
         "--out", str(out), *swarm],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        first = proc.stderr.readline()  # said at once, before any level is measured
        assert time.monotonic() - started < 5, "no silent wait over 5 s"
        assert first.startswith("agentload ceiling: searching ceiling-test by agents"), first
        deadline = time.monotonic() + 120
        measured = 0
        while measured < 2 and time.monotonic() < deadline:  # two levels: well under way
            if proc.stderr.readline().startswith("level "):
                measured += 1
        assert len(json.loads((out / "ceiling.json").read_text())["levels"]) >= 2
        if sig == signal.SIGINT:
            os.killpg(proc.pid, sig)
        else:
            proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=120)
        # The master reaps its workers before it exits: nothing of the run is left behind.
        with pytest.raises(ProcessLookupError):
            os.killpg(proc.pid, 0)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        if proc.poll() is None:
            proc.communicate()
    assert proc.returncode == 128 + sig, stderr
    assert f"interrupted by {sig.name}" in stderr
    assert "Traceback" not in stderr
    doc = json.loads((out / "ceiling.json").read_text())
    assert doc["stopped_by"].startswith("interrupted")
    assert len(doc["levels"]) >= 2
    assert "stopped by: interrupted" in stdout
    if processes > 1:  # the workers carried the levels, and the master's summary says so
        summary = json.loads((out / "summary.json").read_text())
        assert summary["workers"]["reported"] == ["worker-0", "worker-1"]
