"""HTTP transport: POSTs stamped with kernel receive times (http://) or via aiohttp."""

from loadgen.transport.client import PostExchange, SocketFactory, Transport
from loadgen.transport.config import BALANCES, TargetConfig
from loadgen.transport.errors import TransportError, TransportFailure
from loadgen.transport.exchange import AiohttpExchange, HttpExchange
from loadgen.transport.kernel_clock import kernel_timestamps_available
from loadgen.transport.kernel_stream import KernelExchange
from loadgen.transport.payload import SegmentsPayload
from loadgen.transport.sse import SSEEvent, SSEParser

__all__ = [
    "BALANCES",
    "AiohttpExchange",
    "HttpExchange",
    "KernelExchange",
    "PostExchange",
    "SSEEvent",
    "SSEParser",
    "SegmentsPayload",
    "SocketFactory",
    "TargetConfig",
    "Transport",
    "TransportError",
    "TransportFailure",
    "kernel_timestamps_available",
]
