"""docker-compose.yml publishes its ports on this machine only, unless told otherwise, and
Prometheus's lifecycle API (POST /-/quit, /-/reload) stays off.
"""

from __future__ import annotations

import yaml
from test_compose import ROOT, compose_config, needs_compose, published


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
