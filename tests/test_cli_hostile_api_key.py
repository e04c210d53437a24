"""The API key never reaches a worker's command line (readable by every user: ps,
/proc/PID/cmdline); `--processes` workers get it through their environment instead.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from loadgen.cli.main import build_parser
from loadgen.cli.run_setup import API_KEY_ENV, worker_argv, worker_env

AGENTLOAD = [sys.executable, "-m", "loadgen"]
SECRET = "sk-hostile-SECRET-4f1c2b"


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["run", "ci-smoke", *argv])


def test_worker_argv_never_holds_the_key_and_worker_env_carries_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    args = parse("--api-key", SECRET, "--processes", "2", "--header", "X-Team: a")
    argv = worker_argv(args, 5557, "http://127.0.0.1:8000/v1", Path("out"))
    assert not any(SECRET in arg for arg in argv), argv
    assert "--api-key" not in argv
    assert argv[argv.index("--header") + 1] == "X-Team: a"  # the rest is still passed on
    env = worker_env(args)
    assert env[API_KEY_ENV] == SECRET
    assert env["PATH"] == os.environ["PATH"]  # this process's environment, plus the key
    # A worker, started with that environment, parses $OPENAI_API_KEY as its --api-key.
    monkeypatch.setenv(API_KEY_ENV, SECRET)
    assert build_parser().parse_args(argv[3:]).api_key == SECRET


def test_worker_env_drops_a_key_this_process_does_not_use(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(API_KEY_ENV, "sk-from-the-environment")
    args = parse("--api-key", "")  # told explicitly: no key
    assert API_KEY_ENV not in worker_env(args)


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def cmdline(pid: int) -> list[str]:
    return (Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")).split("\0")


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads Linux's /proc")
@pytest.mark.parametrize("where", ["flag", "environment"])
def test_processes_workers_command_lines_never_show_the_key(tmp_path: Path, where: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != API_KEY_ENV}
    argv = [*AGENTLOAD, "run", "ci-smoke", "--processes", "2", "--duration", "5s", "--quiet",
            "--out", str(tmp_path / "out")]  # fmt: skip
    if where == "flag":
        argv += ["--api-key", SECRET]
    else:
        env[API_KEY_ENV] = SECRET
    proc = subprocess.Popen(
        argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path
    )
    seen: dict[int, list[str]] = {}  # each worker's command line
    keys: dict[int, bool] = {}  # whether its environment holds the key
    try:
        deadline = time.monotonic() + 90
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                for pid in children(proc.pid):
                    line = cmdline(pid)
                    if "--worker" in line:
                        seen[pid] = line
                        keys[pid] = f"{API_KEY_ENV}={SECRET}".encode() in (
                            Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
                        )
            except (FileNotFoundError, ProcessLookupError):
                pass  # a child that just exited
            time.sleep(0.2)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err.decode()[-3000:]
    assert len(seen) == 2, seen  # both workers were looked at while they ran
    for line in seen.values():
        assert not any(SECRET in arg for arg in line), line
        assert "--api-key" not in line
    assert all(keys.values()), keys  # the key reached them through the environment
