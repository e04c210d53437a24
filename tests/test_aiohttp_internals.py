"""The parts of aiohttp below its documented API that transport/aiohttp_pool.py relies on.

pyproject.toml bounds aiohttp below its next major version; within it, a release that
changes one of these fails here, by name, rather than as connection errors in a run.
"""

from __future__ import annotations

import inspect

import aiohttp
from aiohttp.client_proto import ResponseHandler
from aiohttp.connector import Connection


def test_the_connector_hook_is_connect_req_traces_timeout() -> None:
    params = list(inspect.signature(aiohttp.TCPConnector.connect).parameters)
    assert params == ["self", "req", "traces", "timeout"]


def test_a_connection_exposes_its_protocol_and_release_callbacks() -> None:
    assert isinstance(inspect.getattr_static(Connection, "protocol"), property)
    assert callable(Connection.add_callback)


def test_a_protocol_exposes_its_transport() -> None:
    assert "transport" in dir(ResponseHandler)
