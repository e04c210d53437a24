"""The Responses API's stored responses: bounded by count and age, like a real server's memory."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["ResponseStore", "StoredResponse"]


@dataclass(slots=True)
class StoredResponse:
    """A finished response: its JSON body and the transcript a follow-up continues from."""

    body: dict[str, Any]
    transcript: str
    stored_at: float


class ResponseStore:
    """Least-recently-stored entries go first when full; entries older than the TTL are gone."""

    def __init__(
        self, capacity: int, ttl_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.capacity = capacity
        self.ttl_s = ttl_s
        self._clock = clock
        self._entries: OrderedDict[str, StoredResponse] = OrderedDict()
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._entries)

    def put(self, response_id: str, body: dict[str, Any], transcript: str) -> None:
        """Store a response, evicting the oldest entries beyond capacity."""
        if self.capacity == 0:
            return
        self._entries[response_id] = StoredResponse(body, transcript, self._clock())
        self._entries.move_to_end(response_id)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)
            self.evicted += 1

    def get(self, response_id: str) -> StoredResponse | None:
        """The stored response, or None if unknown, evicted or expired."""
        entry = self._entries.get(response_id)
        if entry is None:
            return None
        if self._clock() - entry.stored_at > self.ttl_s:
            del self._entries[response_id]
            self.evicted += 1
            return None
        return entry

    def evict(self, response_id: str) -> None:
        """Drop one entry now (fault injection uses this)."""
        if self._entries.pop(response_id, None) is not None:
            self.evicted += 1
