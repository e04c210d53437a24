"""The Responses API's response object and output items, built as the reply is produced."""

from __future__ import annotations

import time
import uuid
from typing import Any

from loadgen.sim.chat import tool_choice_name
from loadgen.sim.generation import Generation
from loadgen.sim.prompt import render_tool_call
from loadgen.sim.reply import CONTENT, REASONING
from loadgen.sim.requests import ResponsesRequest

__all__ = ["ResponseBuilder"]


class ResponseBuilder:
    """Builds the response object and its output items as the reply is produced."""

    def __init__(self, body: ResponsesRequest, gen: Generation) -> None:
        self.body = body
        self.gen = gen
        self.id = f"resp_{uuid.uuid4().hex}"
        self.message_id = f"msg_{uuid.uuid4().hex}"
        self.call_item_ids = [f"fc_{uuid.uuid4().hex}" for _ in gen.plan.tool_calls]
        self.reasoning_id = f"rs_{uuid.uuid4().hex}"
        # A reasoning item comes first, so the answer's items sit one output_index later.
        self.thinks = bool(gen.plan.reasoning_tokens)
        self.offset = 1 if self.thinks else 0
        self.created_at = time.time()

    def items(self, status: str) -> list[dict[str, Any]]:
        plan = self.gen.plan
        out = [self.reasoning_item(plan.reasoning)] if self.thinks else []
        if self.thinks and not plan.has_answer:
            return out  # the limit was reached while reasoning: no answer at all
        if not plan.tool_calls:
            return [*out, self.message(status, plan.content)]
        calls = [self.call_item(i, status, c.arguments) for i, c in enumerate(plan.tool_calls)]
        return [*out, *calls]

    def index(self, target: int) -> int:
        """The output_index of a delta target's item."""
        if target == REASONING:
            return 0
        return self.offset + (0 if target == CONTENT else target)

    def reasoning_item(self, text: str | None) -> dict[str, Any]:
        content = [] if text is None else [self.reasoning_part(text)]
        return {"id": self.reasoning_id, "type": "reasoning", "summary": [], "content": content}

    @staticmethod
    def reasoning_part(text: str) -> dict[str, Any]:
        return {"type": "reasoning_text", "text": text}

    def message(self, status: str, text: str | None) -> dict[str, Any]:
        content = [] if text is None else [self.text_part(text)]
        return {
            "id": self.message_id, "type": "message", "status": status, "role": "assistant",
            "content": content,
        }  # fmt: skip

    @staticmethod
    def text_part(text: str) -> dict[str, Any]:
        return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}

    def call_item(self, index: int, status: str, arguments: str) -> dict[str, Any]:
        call = self.gen.plan.tool_calls[index]
        return {
            "id": self.call_item_ids[index], "type": "function_call", "status": status,
            "call_id": call.id, "name": call.name, "arguments": arguments,
        }  # fmt: skip

    def response(self, status: str) -> dict[str, Any]:
        gen, body = self.gen, self.body
        finished = status != "in_progress"
        incomplete = finished and gen.plan.finish_reason == "length"
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": "incomplete" if incomplete else status,
            "model": body.model,
            "output": self.items("completed") if finished else [],
            "previous_response_id": body.previous_response_id,
            "instructions": body.instructions,
            "store": body.store,
            "incomplete_details": {"reason": "max_output_tokens"} if incomplete else None,
            "error": None,
            "tools": [t.model_dump(exclude_none=True) for t in body.tools or ()],
            "tool_choice": tool_choice_name(body.tool_choice),
            "parallel_tool_calls": body.parallel_tool_calls,
            "temperature": body.temperature,
            "text": {"format": {"type": "text"}},
            "metadata": {},
            "usage": self.usage() if finished else None,
            **self.reasoning_settings(),
        }

    def reasoning_settings(self) -> dict[str, Any]:
        """The response's `reasoning` object, when the request reasons."""
        plan = self.gen.plan
        if plan.reasoning_effort is None:
            return {}
        return {"reasoning": {"effort": plan.reasoning_effort, "summary": None}}

    def usage(self) -> dict[str, Any]:
        gen = self.gen
        return {
            "input_tokens": gen.prompt_tokens,
            "input_tokens_details": {"cached_tokens": gen.cached_tokens},
            "output_tokens": gen.completion_tokens,
            "output_tokens_details": {"reasoning_tokens": gen.reasoning_tokens},
            "total_tokens": gen.prompt_tokens + gen.completion_tokens,
        }

    def transcript(self) -> str:
        """The conversation a follow-up continues: prompt, then this reply as the model said
        it, reasoning first (the stored reasoning item), so a chained prompt's cache hit
        covers the thinking too."""
        plan = self.gen.plan
        thought = plan.reasoning + "\n" if self.thinks else ""
        said = "".join(render_tool_call(c.name, c.arguments) for c in plan.tool_calls)
        return self.gen.prompt.text + thought + plan.content + said + "\n"
