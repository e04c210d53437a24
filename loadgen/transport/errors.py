"""The one error the transport raises: a library failure mapped onto a canonical failure kind."""

from __future__ import annotations

from typing import Literal

from loadgen.errors import AgentloadError

__all__ = ["TransportError", "TransportFailure"]

# The FailureKind values (loadgen.protocol.failures) that the transport itself can detect;
# spelled as strings because the transport sits below the protocol layer.
TransportFailure = Literal["timeout", "connection_error", "stream_truncated"]


class TransportError(AgentloadError):
    """A request failed on the wire; `kind` says how, as a FailureKind value."""

    def __init__(self, kind: TransportFailure, message: str) -> None:
        super().__init__(message)
        self.kind: TransportFailure = kind
