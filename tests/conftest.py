"""Shared fixtures: real simulators on free loopback ports, a real /metrics scrape, and the
transport tests' loopback servers (tests/raw_servers.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
import raw_servers
from prometheus_client.parser import text_string_to_metric_families

from loadgen.sim import PRESETS, SimConfig, SimServer

StartSim = Callable[..., Awaitable[SimServer]]
Scrape = Callable[..., Awaitable[float]]


def sim_config(**overrides: Any) -> SimConfig:
    """The `fast` preset with `overrides` applied and validated (nested dicts allowed)."""
    data = PRESETS["fast"].model_dump()
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict) and key != "perf":
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return SimConfig.model_validate(data)


@pytest_asyncio.fixture
async def start_sim() -> AsyncIterator[StartSim]:
    """Start simulators with config overrides on 127.0.0.1:0; all are stopped afterwards."""
    servers: list[SimServer] = []

    async def start(**overrides: Any) -> SimServer:
        server = SimServer(sim_config(**overrides))
        await server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.stop()


@pytest_asyncio.fixture
async def sim(start_sim: StartSim) -> SimServer:
    """A simulator with the `fast` preset."""
    return await start_sim()


@pytest_asyncio.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A plain aiohttp client session."""
    async with aiohttp.ClientSession() as session:
        yield session


@pytest_asyncio.fixture
async def scrape(http: aiohttp.ClientSession) -> Scrape:
    """Read one sample from a server's /metrics: await scrape(server, name, **labels)."""

    async def read(server: SimServer, name: str, **labels: str) -> float:
        base = server.base_url.removesuffix("/v1")
        async with http.get(f"{base}/metrics") as resp:
            text = await resp.text()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(
                    sample.labels.get(k) == v for k, v in labels.items()
                ):
                    return float(sample.value)
        raise AssertionError(f"metric {name}{labels} not found on /metrics")

    return read


@pytest_asyncio.fixture
async def raw_serve() -> AsyncIterator[raw_servers.RawServe]:
    """Start servers that write exactly the bytes their handler writes; returns the base URL."""
    async with raw_servers.raw_servers() as start:
        yield start


@pytest_asyncio.fixture
async def serve() -> AsyncIterator[raw_servers.Serve]:
    """Start a one-handler aiohttp server on 127.0.0.1:0; returns its base URL."""
    async with raw_servers.aiohttp_servers() as start:
        yield start


@pytest.fixture
def unanswering_address() -> Iterator[tuple[str, int]]:
    """An address whose connects hang: a listener with a full accept queue drops new SYNs."""
    with raw_servers.unanswering_address() as address:
        yield address
