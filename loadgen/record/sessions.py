"""Which session a recorded call belongs to, and its think/tool gap.

In order of trust:

1. an affinity key: one of the session headers (x-session-id, session_id, x-session-token by
   default, or those given with --session-header), else the body's `user` field. Calls with
   the same key are one session. Keys are never written: sessions are named s1, s2, ... in
   order of first appearance.
2. previous_response_id: a Responses call continuing a response the recorder saw belongs to
   that response's session.
3. a prefix chain: a call whose prompt extends the whole prompt of a session's latest call
   (every full block equal, then the same tokens up to that prompt's end) continues that
   session; of several, the one it extends furthest. A call with a key the recorder has not
   seen yet may continue a chain that has no key (a token the server hands out after the
   first call, echoed from the second on), and the chain then takes the key.
4. otherwise a new session.

A prompt shorter than one block has no blocks to chain by, so without a key each such call
is a session of its own. A compacted conversation (its history rewritten) starts a new
chain, so without a key it becomes a new session too.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

__all__ = ["Placement", "SessionTracker"]

_RESPONSES_KEPT = 100_000  # response id -> session, for previous_response_id


@dataclass(slots=True)
class _Session:
    id: str
    key: str | None
    requests: int = 0
    last_end_ns: int | None = None
    # Where the latest call's prompt ends: its last full block's id, and the tokens after it.
    last_block: int | None = None
    tail: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Placement:
    """Where a call went: its session's name and its gap (None for a session's first call)."""

    session_id: str
    gap_s: float | None
    how: str  # key, response, chain or new


class SessionTracker:
    """Places each finished call into a session; calls are placed in the order they ended."""

    def __init__(self, block_size: int) -> None:
        self.block_size = block_size
        self._sessions: list[_Session] = []
        self._by_key: dict[str, _Session] = {}
        # Sessions by the last full block of their latest prompt: several when their prompts
        # share every full block and differ in the tokens after (a shared system prompt).
        self._by_last_block: dict[int, list[_Session]] = {}
        self._by_response: OrderedDict[str, _Session] = OrderedDict()

    def __len__(self) -> int:
        return len(self._sessions)

    def place(
        self,
        *,
        key: str | None,
        previous_response_id: str | None,
        hash_ids: tuple[int, ...],
        pieces: list[str],
        arrival_ns: int,
        end_ns: int,
        response_id: str | None = None,
    ) -> Placement:
        """Find (or open) the call's session, then make the call its latest."""
        session, how = self._find(key, previous_response_id, hash_ids, pieces)
        if session is None:
            session = _Session(f"s{len(self._sessions) + 1}", key)
            self._sessions.append(session)
            how = "new"
        if key is not None and session.key is None:
            session.key = key
        if session.key is not None:
            self._by_key.setdefault(session.key, session)
        gap = None
        if session.last_end_ns is not None:
            # A call sent while another of its session was still running has no pause.
            gap = max(0, arrival_ns - session.last_end_ns) / 1e9
        session.last_end_ns = max(end_ns, session.last_end_ns or 0)
        session.requests += 1
        self._remember_prompt(session, hash_ids, pieces)
        if response_id is not None:
            self._by_response[response_id] = session
            if len(self._by_response) > _RESPONSES_KEPT:
                self._by_response.popitem(last=False)
        return Placement(session.id, gap, how)

    def _find(
        self,
        key: str | None,
        previous_response_id: str | None,
        hash_ids: tuple[int, ...],
        pieces: list[str],
    ) -> tuple[_Session | None, str]:
        if key is not None and key in self._by_key:
            return self._by_key[key], "key"
        if previous_response_id is not None and previous_response_id in self._by_response:
            found = self._by_response[previous_response_id]
            if key is None or found.key is None:
                return found, "response"
        chained = self._chain(key, hash_ids, pieces)
        return chained, "chain"

    def _chain(
        self, key: str | None, hash_ids: tuple[int, ...], pieces: list[str]
    ) -> _Session | None:
        """The session whose latest prompt this one extends furthest (None: no such session)."""
        size = self.block_size
        for position in range(len(hash_ids) - 1, -1, -1):
            start = (position + 1) * size
            for session in reversed(self._by_last_block.get(hash_ids[position], ())):
                if key is not None and session.key is not None:
                    continue
                if tuple(pieces[start : start + len(session.tail)]) == session.tail:
                    return session
        return None

    def _remember_prompt(
        self, session: _Session, hash_ids: tuple[int, ...], pieces: list[str]
    ) -> None:
        if session.last_block is not None:
            sharing = self._by_last_block[session.last_block]
            sharing.remove(session)
            if not sharing:
                del self._by_last_block[session.last_block]
        session.last_block = hash_ids[-1] if hash_ids else None
        session.tail = tuple(pieces[len(hash_ids) * self.block_size :])
        if session.last_block is not None:
            self._by_last_block.setdefault(session.last_block, []).append(session)
