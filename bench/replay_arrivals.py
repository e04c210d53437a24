"""How closely `agentload replay` keeps a trace's timestamps: one process and 2 workers.

A Mooncake-like trace of ROWS one-request sessions at RATE requests/s (small prompts, so the
simulator is never the bottleneck) is replayed against the built-in simulator; each
request's send time (steps.jsonl started_unix) is set against its scaled timestamp. The
lateness of the earliest request is taken as 0 (the clocks' common offset); the figures are
the others' lateness, p50 / p99 / max, in ms.

    python bench/replay_arrivals.py [--rows 2000] [--rate 200] [--processes 1,2]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from loadgen.traces import Trace, TraceRequest, TraceSession
from loadgen.traces.formats.agentload import write_agentload


def trace(rows: int, rate: float) -> Trace:
    sessions = [
        TraceSession(f"r{i}", [TraceRequest(i / rate, 200, 4, hash_ids=(i % 7, 1000 + i))])
        for i in range(rows)
    ]
    return Trace(sessions, block_size=128)


def lateness_ms(out: Path, at: dict[str, float]) -> list[float]:
    files = [out / "steps.jsonl", *out.glob("worker-*/steps.jsonl")]
    steps = [json.loads(x) for f in files if f.exists() for x in f.read_text().splitlines()]
    offsets = sorted(s["started_unix"] - at[s["session_id"]] for s in steps)
    return [(o - offsets[0]) * 1000 for o in offsets]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--processes", default="1,2")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "trace.jsonl"
        t = trace(args.rows, args.rate)
        with path.open("w") as f:
            write_agentload(t, f)
        at = {s.id: s.requests[0].at_s for s in t.sessions}
        print(f"{args.rows} requests at {args.rate:g}/s; lateness against the trace, ms")
        for processes in (int(p) for p in args.processes.split(",")):
            out = Path(tmp) / f"out-{processes}"
            cmd = [sys.executable, "-m", "loadgen", "replay", str(path), "--quiet",
                   "--out", str(out), "--processes", str(processes),
                   "--duration", f"{args.rows / args.rate + 15:.0f}s"]  # fmt: skip
            subprocess.run(cmd, check=True, capture_output=True)
            late = lateness_ms(out, at)
            n = len(late)
            print(f"  {processes} process{'es' if processes > 1 else ''}: {n} sent, "
                  f"p50 {late[n // 2]:.2f}  p99 {late[int(0.99 * n)]:.2f}  "
                  f"max {late[-1]:.2f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
