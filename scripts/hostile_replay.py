"""Replay issue #18's hostile-input list against the CLI and print what each did.

For each case: the exit code, how long until the first line of output (a silent wait over
5 s is a defect, and so is a case that prints nothing at all), and whether a traceback
appeared. Interrupted runs must not exit 0.

    python scripts/hostile_replay.py
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

AGENTLOAD = [sys.executable, "-m", "loadgen"]
SILENT_WAIT_S = 5.0  # a case that says nothing for longer than this looks hung


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def silent_target() -> str:
    """Lists a model, never answers a completion."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    held = []

    def serve() -> None:
        while True:
            conn, _ = listener.accept()
            held.append(conn)
            if b"/models" in conn.recv(65536).split(b"\r\n", 1)[0]:
                body = b'{"object":"list","data":[{"id":"m","object":"model"}]}'
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))

    threading.Thread(target=serve, daemon=True).start()
    return f"http://127.0.0.1:{listener.getsockname()[1]}/v1"


def run(argv: list[str], *, interrupt_after: float | None = None, stop_after: float = 90,
        env: dict[str, str] | None = None) -> tuple[int, float | None, bool, str]:  # fmt: skip
    t0 = time.monotonic()
    # stdout and stderr together: a line on either is something said.
    proc = subprocess.Popen([*AGENTLOAD, *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)  # fmt: skip
    first: list[float] = []
    lines: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if not first:
                first.append(time.monotonic() - t0)
            lines.append(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    if interrupt_after is not None:
        time.sleep(interrupt_after)
        proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=stop_after)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    reader.join(timeout=5)
    text = "".join(lines)
    return proc.returncode, (first[0] if first else None), "Traceback" in text, text


def main() -> int:
    tmp = Path(tempfile.mkdtemp())
    bad_profile = tmp / "latin1.yaml"
    bad_profile.write_bytes("name: caf\xe9\n".encode("latin-1"))
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    busy_port = busy.getsockname()[1]
    cases: list[tuple[str, Callable[[], tuple[int, float | None, bool, str]], str]] = [
        (
            "target never answers the first request",
            lambda: run(
                [
                    "run",
                    "ci-smoke",
                    "--target",
                    silent_target(),
                    "--quiet",
                    "--out",
                    str(tmp / "a"),
                ],
                stop_after=45,
            ),
            "exit 3 within 30 s, said at 2 s",
        ),
        (
            "worker pointed at a missing master",
            lambda: run(
                [
                    "run",
                    "ci-smoke",
                    "--worker",
                    "--master-port",
                    str(free_port()),
                    "--target",
                    "http://127.0.0.1:9/v1",
                    "--out",
                    str(tmp / "b"),
                ],
                interrupt_after=8,
            ),
            "says it waits; Ctrl-C exits non-zero",
        ),
        (
            "master waiting for workers",
            lambda: run(
                [
                    "run",
                    "ci-smoke",
                    "--master",
                    "--expect-workers",
                    "2",
                    "--expect-workers-max-wait",
                    "6s",
                    "--master-bind-port",
                    str(free_port()),
                    "--quiet",
                    "--out",
                    str(tmp / "c"),
                ]
            ),
            "says it waits; exit 3",
        ),
        (
            "ceiling's first line",
            lambda: run(
                [
                    "ceiling",
                    "ci-smoke",
                    "--warmup",
                    "3s",
                    "--window",
                    "6s",
                    "--max-duration",
                    "60s",
                    "--out",
                    str(tmp / "d"),
                ],
                interrupt_after=12,
            ),
            "first line at once; Ctrl-C exit 130, levels kept",
        ),
        (
            "run interrupted (SIGINT)",
            lambda: run(
                ["run", "ci-smoke", "--duration", "60s", "--out", str(tmp / "e")],
                interrupt_after=10,
            ),
            "exit 130, summary says interrupted",
        ),
        (
            "--web on a busy port",
            lambda: run(
                ["run", "ci-smoke", "--web", "--web-port", str(busy_port), "--out", str(tmp / "f")]
            ),
            "exit 2, one line",
        ),
        (
            "--header with CR/LF",
            lambda: run(
                ["run", "ci-smoke", "--header", "X-A: b\r\nX-Evil: 1", "--out", str(tmp / "g")]
            ),
            "exit 2, one line",
        ),
        ("profile not UTF-8", lambda: run(["run", str(bad_profile)]), "exit 2, one line"),
        ("sim --port 99999", lambda: run(["sim", "--port", "99999"]), "exit 2, one line"),
        ("run --rate inf", lambda: run(["run", "ci-smoke", "--rate", "inf"]), "exit 2, one line"),
        (
            "replay a missing trace",
            lambda: run(["replay", str(tmp / "none.jsonl")]),
            "exit 2, one line",
        ),
    ]
    print(f"{'case':42} {'rc':>4} {'first line':>11} {'traceback':>9}  expected")
    worst = 0
    for name, case, expected in cases:
        rc, first, traceback, text = case()
        said = "-" if first is None else f"{first:.1f}s"
        print(f"{name:42} {rc:>4} {said:>11} {'YES' if traceback else 'no':>9}  {expected}")
        # Silence is a silent wait however long the case took: nothing said is nothing said.
        silent = first is None or first > SILENT_WAIT_S
        if traceback or silent or ("interrupt" in name and rc == 0):
            worst = 1
            print("    " + text.strip().splitlines()[-1] if text.strip() else "    (no output)")
            if silent:
                what = "nothing printed" if first is None else f"first line at {said}"
                print(f"    silent wait: {what}")
    busy.close()
    return worst


if __name__ == "__main__":
    sys.exit(main())
