"""The Responses API's streaming events: each output item opened, its deltas, and closed."""

from __future__ import annotations

from typing import Any

from loadgen.sim.reply import CONTENT, REASONING
from loadgen.sim.response_output import ResponseBuilder
from loadgen.sim.streaming import sse_event

__all__ = ["ResponseEvents"]


class ResponseEvents:
    """Numbers the events of one streamed response and renders token batches as events."""

    def __init__(self, builder: ResponseBuilder) -> None:
        self.builder = builder
        self.seq_no = 0
        self.current: int | None = None  # the delta target whose item is open

    def event(self, event_type: str, /, **fields: Any) -> bytes:
        """One named event, with the next sequence number."""
        self.seq_no += 1
        payload = {"type": event_type, "sequence_number": self.seq_no - 1, **fields}
        return sse_event(event_type, payload)

    def render(self, batch: list[tuple[int, str]]) -> bytes:
        """The events for a batch of new tokens: an item opens when its first token comes,
        and the item before it closes."""
        out = []
        for target, piece in batch:
            if self.current != target:
                out.append(self.close_last())
                self.current = target
                out.append(self.opened(target))
            if piece:
                out.append(self.delta(target, piece))
        return b"".join(out)

    def close_last(self) -> bytes:
        """The events closing the open item, if any."""
        return b"" if self.current is None else self.closed(self.current)

    def opened(self, target: int) -> bytes:
        b = self.builder
        at = b.index(target)
        if target == REASONING:
            return self.event(
                "response.output_item.added", output_index=at, item=b.reasoning_item(None)
            ) + self.event(
                "response.content_part.added", item_id=b.reasoning_id, output_index=at,
                content_index=0, part=b.reasoning_part(""),
            )  # fmt: skip
        if target == CONTENT:
            return self.event(
                "response.output_item.added", output_index=at, item=b.message("in_progress", None)
            ) + self.event(
                "response.content_part.added", item_id=b.message_id, output_index=at,
                content_index=0, part=b.text_part(""),
            )  # fmt: skip
        item = b.call_item(target, "in_progress", "")
        return self.event("response.output_item.added", output_index=at, item=item)

    def delta(self, target: int, piece: str) -> bytes:
        b = self.builder
        at = b.index(target)
        if target == REASONING:
            return self.event(
                "response.reasoning_text.delta", item_id=b.reasoning_id, output_index=at,
                content_index=0, delta=piece,
            )  # fmt: skip
        if target == CONTENT:
            return self.event(
                "response.output_text.delta", item_id=b.message_id, output_index=at,
                content_index=0, delta=piece, logprobs=[],
            )  # fmt: skip
        return self.event(
            "response.function_call_arguments.delta", item_id=b.call_item_ids[target],
            output_index=at, delta=piece,
        )  # fmt: skip

    def closed(self, target: int) -> bytes:
        b = self.builder
        plan = b.gen.plan
        at = b.index(target)
        if target == REASONING:
            # The thinking as generated: all of it, or what the max tokens limit left.
            text = plan.reasoning
            return (
                self.event("response.reasoning_text.done", item_id=b.reasoning_id,
                           output_index=at, content_index=0, text=text)
                + self.event("response.content_part.done", item_id=b.reasoning_id,
                             output_index=at, content_index=0, part=b.reasoning_part(text))
                + self.event("response.output_item.done", output_index=at,
                             item=b.reasoning_item(text))
            )  # fmt: skip
        if target == CONTENT:
            text = plan.content
            return (
                self.event("response.output_text.done", item_id=b.message_id, output_index=at,
                           content_index=0, text=text, logprobs=[])
                + self.event("response.content_part.done", item_id=b.message_id,
                             output_index=at, content_index=0, part=b.text_part(text))
                + self.event("response.output_item.done", output_index=at,
                             item=b.message("completed", text))
            )  # fmt: skip
        call = plan.tool_calls[target]
        return self.event(
            "response.function_call_arguments.done", item_id=b.call_item_ids[target],
            output_index=at, name=call.name, arguments=call.arguments,
        ) + self.event(
            "response.output_item.done", output_index=at,
            item=b.call_item(target, "completed", call.arguments),
        )  # fmt: skip
