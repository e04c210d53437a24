"""Running `agentload run` as users do (a child process), from async tests whose simulators
serve on the test's own event loop: the loop keeps serving while the run goes on."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class CliRun:
    """What one `agentload run` left behind."""

    returncode: int
    stdout: str
    stderr: str
    summary: dict[str, Any]


def write_profile(path: Path, spec: Mapping[str, Any]) -> Path:
    """`spec` as a profile YAML file at `path`."""
    path.write_text(yaml.safe_dump(dict(spec)))
    return path


async def agentload_run(
    profile: str | Path,
    out: Path,
    *flags: str,
    target: str | None = None,
    codes: tuple[int, ...] = (0,),
    timeout_s: float = 180.0,
) -> CliRun:
    """`agentload run PROFILE --out OUT --quiet [--target TARGET] FLAGS...` in a child process;
    fails unless it exits with one of `codes` and wrote summary.json."""
    where = () if target is None else ("--target", target)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "loadgen", "run", str(profile), "--out", str(out), "--quiet",
        *where, *flags,
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        async with asyncio.timeout(timeout_s):
            stdout, stderr = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    code, out_text, err_text = proc.returncode, stdout.decode(), stderr.decode()
    assert code in codes, f"exit {code}\n{out_text}\n{err_text}"
    summary = json.loads((out / "summary.json").read_text())
    return CliRun(code, out_text, err_text, summary)
