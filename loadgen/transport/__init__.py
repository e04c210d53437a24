"""HTTP transport: one aiohttp session per process, streamed reads, perf_counter_ns stamps."""

from loadgen.transport.client import PostExchange, SocketFactory, Transport
from loadgen.transport.config import TargetConfig
from loadgen.transport.errors import TransportError, TransportFailure
from loadgen.transport.exchange import HttpExchange
from loadgen.transport.payload import SegmentsPayload
from loadgen.transport.sse import SSEEvent, SSEParser

__all__ = [
    "HttpExchange",
    "PostExchange",
    "SSEEvent",
    "SSEParser",
    "SegmentsPayload",
    "SocketFactory",
    "TargetConfig",
    "Transport",
    "TransportError",
    "TransportFailure",
]
