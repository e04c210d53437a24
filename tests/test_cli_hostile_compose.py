"""docker-compose.yml publishes its ports on this machine only, unless told otherwise, and
Prometheus's lifecycle API (POST /-/quit, /-/reload) stays off.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = shutil.which("docker-compose")

needs_compose = pytest.mark.skipif(
    COMPOSE is None, reason="docker-compose is not installed (apt-get install docker-compose)"
)


def compose_config(**env: str) -> dict[str, Any]:
    assert COMPOSE is not None
    clean = {k: v for k, v in os.environ.items() if not k.startswith("AGENTLOAD_")}
    result = subprocess.run(
        [COMPOSE, "-f", str(ROOT / "docker-compose.yml"), "config"],
        capture_output=True, text=True, timeout=60, cwd=ROOT, env={**clean, **env},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    config: dict[str, Any] = yaml.safe_load(result.stdout)
    return config


def published(port: Any) -> tuple[str, int, int]:
    """(host address, published, target) of a port as `docker-compose config` prints it.

    docker-compose 1.x prints a port with a host address in the short form
    ("127.0.0.1:8089:8089/tcp"), Compose v2 in the long one (host_ip, published, target);
    a port without an address ("8089:8089", all interfaces) gets host address "".
    """
    if isinstance(port, dict):
        return str(port.get("host_ip", "")), int(port["published"]), int(port["target"])
    parts = str(port).split("/")[0].split(":")
    host = ":".join(parts[:-2]) if len(parts) > 2 else ""
    return host, int(parts[-2]), int(parts[-1])


@needs_compose
def test_every_published_port_is_bound_to_127_0_0_1_by_default() -> None:
    services = compose_config()["services"]
    ports = {
        name: [published(p) for p in service.get("ports", [])] for name, service in services.items()
    }
    assert {port for name in ports for _, port, _ in ports[name]} == {8000, 8089, 9090, 3000}
    for name, bound in ports.items():
        for host, port, _ in bound:
            assert host == "127.0.0.1", f"{name} publishes {port} on {host or 'every interface'}"
    assert (("127.0.0.1", 8089, 8089)) in ports["master"]


@needs_compose
def test_agentload_publish_ip_opens_the_ports_on_purpose() -> None:
    services = compose_config(AGENTLOAD_PUBLISH_IP="0.0.0.0")["services"]
    hosts = {published(p)[0] for s in services.values() for p in s.get("ports", [])}
    assert hosts == {"0.0.0.0"}


def test_prometheus_runs_without_its_lifecycle_api() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    command = compose["services"]["prometheus"]["command"]
    assert not any("enable-lifecycle" in arg for arg in command), command


def test_deployment_doc_says_how_to_open_the_ports() -> None:
    doc = (ROOT / "docs" / "deployment.md").read_text()
    assert "AGENTLOAD_PUBLISH_IP=0.0.0.0 docker-compose up" in doc
