"""An interrupted ceiling search keeps every level it measured and says it was interrupted."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_ceiling import PROFILE

# The ceiling tests' small support sessions, on an analytical sim with room for many agents.
SIM = {"preset": "fast", "perf": {"kind": "analytical", "decode_step_ms": 10}, "max_num_seqs": 64}


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_an_interrupted_search_writes_the_levels_it_measured(
    tmp_path: Path, sig: signal.Signals
) -> None:
    profile = tmp_path / "p.yaml"
    profile.write_text(PROFILE + f"sim: {json.dumps(SIM)}\n")
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "loadgen", "ceiling", str(profile), "--slo", "ttft_p95 < 10s",
         "--start", "2", "--warmup", "0.5s", "--window", "1.5s", "--max-duration", "300s",
         "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        first = proc.stderr.readline()  # said at once, before any level is measured
        assert first.startswith("agentload ceiling: searching ceiling-test by agents"), first
        deadline = time.monotonic() + 120
        measured = 0
        while measured < 2 and time.monotonic() < deadline:  # two levels: well under way
            if proc.stderr.readline().startswith("level "):
                measured += 1
        proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 128 + sig, stderr
    assert f"interrupted by {sig.name}" in stderr
    assert "Traceback" not in stderr
    doc = json.loads((out / "ceiling.json").read_text())
    assert doc["stopped_by"].startswith("interrupted")
    assert len(doc["levels"]) >= 2
    assert "stopped by: interrupted" in stdout
