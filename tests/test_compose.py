"""docker-compose.yml and the Dockerfile: validated without a Docker engine.

`docker-compose config` resolves and validates the file (variables, depends_on conditions,
ports); the master's and workers' commands are then parsed by agentload's own argument
parser, and the Dockerfile's build context is built into a wheel as `pip install .` in the
image would.
"""

from __future__ import annotations

import email.parser
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from loadgen.cli.main import build_parser

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = shutil.which("docker-compose")

needs_compose = pytest.mark.skipif(
    COMPOSE is None, reason="docker-compose is not installed (apt-get install docker-compose)"
)


def compose_config(**env: str) -> dict[str, Any]:
    """The file as `docker-compose config` resolves it, with `env` set."""
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


def flag(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


@needs_compose
def test_compose_file_validates_with_sim_master_workers_prometheus_and_grafana() -> None:
    services = compose_config()["services"]
    assert {"sim", "master", "worker", "prometheus", "grafana"} <= set(services)
    master, worker = services["master"]["command"], services["worker"]["command"]
    assert master[:2] == ["run", "quickstart"]
    assert {"--master", "--web"} <= set(master)
    assert flag(master, "--web-host") == "0.0.0.0"
    assert ("127.0.0.1", 8089, 8089) in {published(p) for p in services["master"]["ports"]}
    assert flag(master, "--target") == flag(worker, "--target") == "http://sim:8000/v1"
    assert services["master"]["depends_on"]["sim"]["condition"] == "service_healthy"


@needs_compose
def test_compose_workers_scale_and_find_the_master_by_service_name() -> None:
    services = compose_config()["services"]
    worker = services["worker"]
    assert "container_name" not in worker  # --scale worker=N needs N distinct names
    assert "ports" not in worker  # nor may N workers publish one host port
    assert "--worker" in worker["command"]
    assert flag(worker["command"], "--master-host") == "master"
    master = services["master"]["command"]
    assert flag(worker["command"], "--master-port") == flag(master, "--master-bind-port")


@needs_compose
def test_compose_target_profile_and_worker_count_come_from_the_environment() -> None:
    services = compose_config(
        AGENTLOAD_TARGET="http://gpu-box:8000/v1",
        AGENTLOAD_PROFILE="coding-agent",
        AGENTLOAD_WORKERS="4",
    )["services"]
    master, worker = services["master"]["command"], services["worker"]["command"]
    assert flag(master, "--target") == flag(worker, "--target") == "http://gpu-box:8000/v1"
    assert master[1] == worker[1] == "coding-agent"
    assert flag(master, "--expect-workers") == "4"


@needs_compose
@pytest.mark.parametrize("workers", [None, "4"], ids=["default", "AGENTLOAD_WORKERS=4"])
def test_compose_starts_as_many_workers_as_the_master_waits_for(workers: str | None) -> None:
    # One setting for both: with one worker replica, a master waiting for two exits 3.
    services = compose_config(**({} if workers is None else {"AGENTLOAD_WORKERS": workers}))[
        "services"
    ]
    expected = int(flag(services["master"]["command"], "--expect-workers"))
    assert expected == int(workers or 2)
    assert services["worker"]["scale"] == expected


@needs_compose
def test_compose_master_and_worker_commands_are_valid_agentload_arguments() -> None:
    services = compose_config()["services"]
    parser = build_parser()
    master = parser.parse_args(services["master"]["command"])
    assert (master.master, master.web, master.expect_workers) == (True, True, 2)
    # Bounded on purpose (Locust's default waits forever): a quickstart whose workers failed
    # ends with the reason.
    assert master.expect_workers_max_wait == 120.0
    assert master.master_bind_host == "0.0.0.0"
    worker = parser.parse_args(services["worker"]["command"])
    assert (worker.worker, worker.master_host, worker.master_port) == (True, "master", 5557)
    # The master is the swarm's one metrics endpoint, on agentload's conventional port,
    # and the Prometheus of the compose file scrapes it there.
    assert master.prometheus_port == 9646
    assert worker.prometheus_port is None
    scrape = yaml.safe_load((ROOT / "dashboards/prometheus/prometheus.yml").read_text())
    targets = [t for job in scrape["scrape_configs"] if job["job_name"] == "agentload"
               for group in job["static_configs"] for t in group["targets"]]  # fmt: skip
    assert f"master:{master.prometheus_port}" in targets
    assert master.out == worker.out  # workers write worker-<index>/ under the master's folder


@needs_compose
def test_docker_image_exposes_every_port_the_compose_services_listen_on() -> None:
    services = compose_config()["services"]
    master = services["master"]["command"]
    listening = {
        int(flag(services["sim"]["command"], "--port")),
        int(flag(master, "--web-port")),
        int(flag(master, "--master-bind-port")),
        int(flag(master, "--prometheus-port")),
    }
    exposed = {
        int(port)
        for line in (ROOT / "Dockerfile").read_text().splitlines()
        if line.startswith("EXPOSE ")
        for port in line.split()[1:]
    }
    assert listening <= exposed


def copied_sources(dockerfile: Path) -> list[str]:
    """The sources of every COPY in the Dockerfile (relative to the build context)."""
    sources = []
    for line in dockerfile.read_text().splitlines():
        parts = line.split()
        if parts and parts[0] == "COPY":
            sources += [p for p in parts[1:-1] if not p.startswith("--")]
    return sources


@pytest.fixture(scope="module")
def image_wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    """What `pip install .` builds from only the files the Dockerfile copies."""
    context = tmp_path_factory.mktemp("context")
    for source in copied_sources(ROOT / "Dockerfile"):
        src = ROOT / source
        if src.is_dir():
            ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
            shutil.copytree(src, context / source, ignore=ignore)
        else:
            shutil.copy(src, context / source)
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(out), str(context)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    (path,) = out.glob("agentload-*.whl")
    return zipfile.ZipFile(path)


def test_docker_image_copies_the_profiles_and_example_agents() -> None:
    sources = {s.rstrip("/") for s in copied_sources(ROOT / "Dockerfile")}
    assert {"pyproject.toml", "loadgen", "profiles", "agents"} <= sources


def test_docker_build_context_installs_the_builtin_profiles(image_wheel: zipfile.ZipFile) -> None:
    names = set(image_wheel.namelist())
    for profile in (ROOT / "profiles").glob("*.yaml"):
        assert f"loadgen/builtin_profiles/{profile.name}" in names


def test_docker_image_installs_locust_which_agentload_run_needs(
    image_wheel: zipfile.ZipFile,
) -> None:
    (meta,) = [n for n in image_wheel.namelist() if n.endswith(".dist-info/METADATA")]
    message = email.parser.Parser().parsestr(image_wheel.read(meta).decode())
    required = {
        re.match(r"[A-Za-z0-9._-]+", r)[0].lower()  # type: ignore[index]
        for r in message.get_all("Requires-Dist") or []
        if "extra ==" not in r
    }
    assert "locust" in required, "pyproject.toml [project] dependencies must list locust"
