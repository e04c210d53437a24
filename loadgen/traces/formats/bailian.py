"""Alibaba Bailian (Qwen) usage traces: alibaba-edu/qwen-bailian-usagetraces-anon.

JSON Lines, one request per row:

    {"chat_id": 159, "parent_chat_id": -1, "timestamp": 61.114, "input_length": 521,
     "output_length": 132, "type": "text", "turn": 1, "hash_ids": [1089, 1090, 1091]}

`timestamp` is the arrival in seconds; `parent_chat_id` is the chat this one follows (-1: none),
so a chain of chats is one session, its turns in order of time (then `turn`). A row's length
and hash ids cover its whole prompt, history included. Hash ids are salted SipHashes of
16-token blocks, equal across the whole file (global scope). `type` (text, search, image,
file) is not replayed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loadgen.traces.formats._common import (
    Notes,
    fail,
    finish,
    hash_id_list,
    json_records,
    need,
    need_object,
    number,
    token_count,
)
from loadgen.traces.model import Trace, TraceRequest, TraceSession

__all__ = ["BLOCK_SIZE", "read_bailian"]

# AIPerf's Bailian loader documents the release's hash ids as 16-token SipHash blocks.
BLOCK_SIZE = 16
FIELDS = (
    "a bailian row has chat_id, parent_chat_id (-1: none), timestamp (s), input_length, "
    "output_length, type, turn and hash_ids"
)
ROOT = -1


@dataclass(slots=True)
class _Chat:
    where: str
    chat_id: str
    parent: str | None
    turn: float
    request: TraceRequest


def read_bailian(path: Path, *, block_size: int = BLOCK_SIZE) -> Trace:
    """Read a Bailian trace; ConfigError naming file:line and field on bad input."""
    chats: list[_Chat] = []
    notes = Notes()
    for where, value in json_records(path, "bailian"):
        chat = _chat(where, need_object(value, where, "a bailian row"), notes)
        if chat is not None:
            chats.append(chat)
    by_id: dict[str, _Chat] = {}
    for chat in chats:
        by_id.setdefault(chat.chat_id, chat)
    sessions: dict[str, TraceSession] = {}
    roots: dict[str, str] = {}
    for chat in sorted(chats, key=lambda c: (c.request.at_s, c.turn)):
        root = _root(chat, by_id, roots)
        session = sessions.setdefault(root, TraceSession(root, hash_namespace=root))
        session.requests.append(chat.request)
    source = f"{path} (bailian{notes.suffix()})"
    return finish(list(sessions.values()), block_size, "global", source)


def _chat(where: str, row: Mapping[str, Any], notes: Notes) -> _Chat | None:
    chat_id = need(row, "chat_id", where, FIELDS)
    parent = row.get("parent_chat_id", ROOT)
    input_tokens = token_count(need(row, "input_length", where, FIELDS), where, "input_length")
    output = token_count(need(row, "output_length", where, FIELDS), where, "output_length")
    if input_tokens == 0:
        notes.add("rows with input_length 0 skipped")
        return None
    if output == 0:
        notes.add("rows with output_length 0 asked for 1 token")
    turn = row.get("turn")
    return _Chat(
        where=where,
        chat_id=str(chat_id),
        parent=None if parent is None or str(parent) == str(ROOT) else str(parent),
        turn=1.0 if turn is None else number(turn, where, "turn"),
        request=TraceRequest(
            at_s=number(need(row, "timestamp", where, FIELDS), where, "timestamp"),
            input_tokens=input_tokens,
            output_tokens=max(output, 1),
            hash_ids=hash_id_list(row.get("hash_ids"), where),
        ),
    )


def _root(chat: _Chat, by_id: dict[str, _Chat], roots: dict[str, str]) -> str:
    """The first chat of `chat`'s chain: follow parents until one is -1 or not in the file
    (the trace was cut from a longer one, so the chain starts there). `roots` remembers."""
    path = [chat.chat_id]
    current = chat
    while current.chat_id not in roots and current.parent is not None and current.parent in by_id:
        current = by_id[current.parent]
        if current.chat_id in path:
            fail(chat.where, f"parent_chat_id links chat {chat.chat_id} into a loop; fix the row")
        path.append(current.chat_id)
    root = roots.get(current.chat_id, current.chat_id)
    for chat_id in path:
        roots[chat_id] = root
    return root
