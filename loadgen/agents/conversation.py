"""An agent's message history, kept as already-encoded JSON messages.

Each message is serialized once, when it is appended; a request body is then the list of
those byte strings (sent as segments, never joined in Python), so building a step costs
time proportional to what the step appends, not to the whole context. A coding agent's
100K-token history is about half a megabyte of bytes objects and nothing else.
"""

from __future__ import annotations

from collections.abc import Sequence

import orjson

from loadgen.protocol import ToolCall, count_tokens, encode_input_message, encode_message

__all__ = ["MESSAGE_OVERHEAD_TOKENS", "Conversation", "message_tokens"]

# Chat templates add a few tokens per message (role markers, separators).
MESSAGE_OVERHEAD_TOKENS = 4


def message_tokens(content: str | None, tool_calls: Sequence[ToolCall] | None = None) -> int:
    """The agent's own estimate of one message's tokens, template overhead included."""
    count = MESSAGE_OVERHEAD_TOKENS + (count_tokens(content) if content else 0)
    for call in tool_calls or ():
        count += count_tokens(call.name) + count_tokens(call.arguments)
    return count


class Conversation:
    """Append-only history (until compaction) with the agent's own token estimate.

    An assistant message holds a reply's text and tool calls, never its reasoning: chat
    clients drop the thinking from the history they resend (a Responses chain leaves it to
    the server, which keeps the reasoning item with the response).
    """

    __slots__ = ("_counts", "_items", "_messages", "_roles", "tokens")

    def __init__(self, *, items: bool = False) -> None:
        """`items`: Responses-API input items (`"type": "message"`), not chat messages."""
        # Servers differ on untyped Responses input: OpenAI and vLLM accept a bare
        # {"role", "content"}, llama.cpp refuses an assistant one ("Cannot determine type of
        # 'item'"). Typed items are what every one of them accepts.
        self._items = items
        self._messages: list[bytes] = []
        self._counts: list[int] = []  # estimated tokens of each message
        self._roles: list[str] = []  # each message's role (interned strings: 8 bytes each)
        self.tokens = 0

    def __len__(self) -> int:
        return len(self._messages)

    @property
    def messages(self) -> Sequence[bytes]:
        """The encoded messages, oldest first."""
        return self._messages

    def append(
        self,
        role: str,
        content: str | None,
        *,
        tool_calls: Sequence[ToolCall] | None = None,
        tool_call_id: str | None = None,
    ) -> bytes:
        """Encode and append one message; returns its bytes (server-held mode sends just it)."""
        # orjson's bytes carry up to ~8x their length in spare allocation; a kept message
        # holds it for the session's life, so copy it to its exact size once.
        if self._items and not tool_calls and tool_call_id is None:
            raw = encode_input_message(role, content or "")
        else:
            raw = encode_message(role, content, tool_calls=tool_calls, tool_call_id=tool_call_id)
        encoded = bytes(memoryview(raw))
        count = message_tokens(content, tool_calls)
        self._messages.append(encoded)
        self._counts.append(count)
        self._roles.append(role)
        self.tokens += count
        return encoded

    def newest(self, role: str, budget: int) -> list[tuple[int, int]]:
        """The newest messages of `role` after the first (the system prompt) that fit in
        `budget` tokens together, oldest first, as (index, tokens of it to keep): all of
        each but the oldest, which gets what is left of the budget."""
        kept: list[tuple[int, int]] = []
        for i in range(len(self._messages) - 1, 0, -1):
            if budget <= MESSAGE_OVERHEAD_TOKENS:
                break
            if self._roles[i] != role:
                continue
            take = min(self._counts[i], budget)
            budget -= take
            kept.append((i, take - MESSAGE_OVERHEAD_TOKENS))
        return kept[::-1]

    def count(self, index: int) -> int:
        """The estimated tokens of message `index`."""
        return self._counts[index]

    def text(self, index: int) -> str:
        """The text content of message `index` (decoded: for the rare reader, e.g. compaction)."""
        content = orjson.loads(self._messages[index]).get("content")
        return content if isinstance(content, str) else ""

    def head_and_tail(self, budget: int) -> list[bytes]:
        """The first message (the system prompt) and the newest ones, within `budget` tokens."""
        if not self._messages:
            return []
        used = self._counts[0]
        tail: list[bytes] = []
        for raw, count in zip(
            reversed(self._messages[1:]), reversed(self._counts[1:]), strict=True
        ):
            if used + count > budget:
                break
            used += count
            tail.append(raw)
        return [self._messages[0], *reversed(tail)]

    def replace(self, keep: int, messages: Sequence[tuple[str, str]]) -> None:
        """Compaction: keep the first `keep` messages and put `messages` after them."""
        del self._messages[keep:]
        del self._counts[keep:]
        del self._roles[keep:]
        self.tokens = sum(self._counts)
        for role, content in messages:
            self.append(role, content)
