"""A swarm that waits says what it waits for: silence looks like a hang."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_a_master_waiting_for_its_workers_says_so_at_once(tmp_path: Path) -> None:
    port = _free_port()
    t0 = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "loadgen", "run", "ci-smoke", "--master", "--expect-workers", "2",
         "--expect-workers-max-wait", "4s", "--master-bind-host", "127.0.0.1",
         "--master-bind-port", str(port), "--quiet", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 3, result.stderr
    assert f"master waiting for workers: 0 of 2 connected (port {port})" in result.stderr
    assert time.monotonic() - t0 < 60


def test_a_worker_pointed_at_a_missing_master_says_what_it_waits_for(tmp_path: Path) -> None:
    port = _free_port()
    log = tmp_path / "worker.err"
    with log.open("w") as stderr_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "loadgen", "run", "ci-smoke", "--worker", "--master-host",
             "127.0.0.1", "--master-port", str(port), "--target", "http://127.0.0.1:9/v1",
             "--out", str(tmp_path)],
            stdout=subprocess.DEVNULL, stderr=stderr_file, text=True,
        )  # fmt: skip
    try:
        # Said at once (1-4 s here, importing Locust); a busy machine may take longer.
        deadline = time.monotonic() + 30
        while "worker waiting" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1)  # and it goes on waiting: nothing says it connected
    finally:
        proc.kill()
        proc.wait(timeout=30)
    stderr = log.read_text()
    assert f"worker waiting for its master at 127.0.0.1:{port}" in stderr
    assert "worker connected" not in stderr


def test_a_target_that_does_not_answer_the_first_request_is_said_within_seconds(
    tmp_path: Path,
) -> None:
    # Lists its model, then never answers a completion (a loading model, an endless stream).
    import threading

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    held: list[socket.socket] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            held.append(conn)
            request = conn.recv(65536)
            if b"/models" in request.split(b"\r\n", 1)[0]:
                body = b'{"object":"list","data":[{"id":"m","object":"model"}]}'
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\n\r\n%s" % (len(body), body))  # fmt: skip

    threading.Thread(target=serve, daemon=True).start()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/v1"
    proc = subprocess.Popen(
        [sys.executable, "-m", "loadgen", "run", "ci-smoke", "--target", url, "--quiet",
         "--out", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        time.sleep(12)  # said after 2 s (4 s with start-up); 3x slack for a busy machine
    finally:
        proc.kill()
        _out, stderr = proc.communicate(timeout=30)
        listener.close()
        for conn in held:
            conn.close()
    assert f"{url} has not answered a first request in 2s; waiting up to 30s" in stderr
