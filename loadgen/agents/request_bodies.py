"""How an agent's history goes on the wire: each API's request body for a step or a summary.

The agent decides what to send (which history, how long a reply, whether tools are
offered); these functions only lay it out in the shape of chat, responses or completions.
"""

from __future__ import annotations

from collections.abc import Sequence

from loadgen.agents.conversation import Conversation
from loadgen.agents.reasoning import ReasoningFields
from loadgen.protocol import (
    Api,
    chat_body,
    completions_body,
    encode_input_message,
    encode_message,
    responses_body,
)

__all__ = ["compaction_body", "step_body"]


def step_body(
    api: Api,
    model: str,
    conversation: Conversation,
    prompt_parts: Sequence[str],
    *,
    max_tokens: int,
    forced: int | None,
    tools: bytes | None,
    tool_choice: str | None,
    reasoning: ReasoningFields,
    server_held: bool,
    last_response_id: str | None,
    pending: Sequence[bytes],
) -> list[bytes]:
    """A model step's body: the whole history, or, continuing a server-held chain from
    `last_response_id`, only the `pending` items added since. `prompt_parts` is the plain-text
    history the completions API sends; `forced` forces the reply's length."""
    if api == "chat":
        return chat_body(
            model,
            conversation.messages,
            max_tokens=max_tokens,
            min_tokens=forced,
            ignore_eos=True if forced else None,
            tools=tools,
            tool_choice=tool_choice,
            **reasoning,
        )
    if api == "responses":
        items = pending if server_held and last_response_id else conversation.messages
        return responses_body(
            model,
            items,
            previous_response_id=last_response_id if server_held else None,
            store=server_held,
            max_output_tokens=max_tokens,
            tools=tools,
            tool_choice=tool_choice,
            min_tokens=forced,
            ignore_eos=True if forced else None,
            **reasoning,
        )
    return completions_body(
        model,
        "\n".join(prompt_parts),
        max_tokens=max_tokens,
        min_tokens=forced,
        ignore_eos=True if forced else None,
    )


def compaction_body(
    api: Api,
    model: str,
    history: Sequence[bytes],
    prompt_parts: Sequence[str],
    ask: str,
    *,
    max_tokens: int,
    forced: int | None,
    store: bool,
) -> list[bytes]:
    """A summary request's body: `history` (or, for completions, `prompt_parts`), then `ask`.

    It offers no tools and carries no reasoning fields. `store` keeps the summary on the
    server, for a server-held chain to restart from.
    """
    ignore_eos = True if forced else None
    if api == "chat":
        messages = [*history, encode_message("user", ask)]
        return chat_body(
            model, messages, max_tokens=max_tokens, min_tokens=forced, ignore_eos=ignore_eos
        )
    if api == "responses":
        messages = [*history, encode_input_message("user", ask)]
        return responses_body(
            model,
            messages,
            store=store,
            max_output_tokens=max_tokens,
            min_tokens=forced,
            ignore_eos=ignore_eos,
        )
    prompt = "\n".join([*prompt_parts, ask])
    return completions_body(
        model, prompt, max_tokens=max_tokens, min_tokens=forced, ignore_eos=ignore_eos
    )
