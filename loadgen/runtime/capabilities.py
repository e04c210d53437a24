"""What the target turned out to support: learned once per process, shared by every session."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from loadgen.protocol import Reply

__all__ = ["TargetCapabilities"]


@dataclass(slots=True)
class TargetCapabilities:
    """Facts about the target that decide how agents talk to it, not failures of a request.

    A server without a response store refuses `previous_response_id` on every request; one
    that never reports a cached token cannot show a cache miss. Counting either as a failure
    per step would bury the one thing worth saying, once.
    """

    # Responses-API chains on previous_response_id: None until a chain was tried.
    server_state: bool | None = None
    server_state_note: str = ""  # the server's words when it refused
    caching_seen: bool = False  # some reply reported cached prompt tokens > 0
    window_tokens: int | None = None  # the context window the server stated when refusing

    def observe(self, reply: Reply) -> None:
        """Learn from one reply (cheap: called for every reply)."""
        usage = reply.usage
        if not self.caching_seen and usage is not None and usage.cached_tokens:
            self.caching_seen = True
        if reply.window_tokens is not None:
            self.window_tokens = reply.window_tokens
        if reply.unsupported == "previous_response_id":
            self.refuse_server_state(reply.error or "previous_response_id refused")

    def refuse_server_state(self, note: str) -> None:
        """The target keeps no server-side conversation state: sessions resend their history."""
        if self.server_state is not False:
            self.server_state = False
            self.server_state_note = note

    def label(self) -> dict[str, Any]:
        """What summary.json's target section says about these capabilities."""
        state = {None: "untested", True: "supported", False: "unsupported"}[self.server_state]
        out: dict[str, Any] = {"server_state": state}
        if self.server_state_note:
            out["server_state_note"] = self.server_state_note
        if self.window_tokens is not None:
            out["context_window_tokens"] = self.window_tokens
        return out
