"""The calibration's requests: prompts no cache has seen, sent one chat request at a time."""

from __future__ import annotations

import itertools
import os

from loadgen.errors import AgentloadError
from loadgen.protocol import Reply, chat_body, encode_message, send, words_for_tokens
from loadgen.transport import Transport

__all__ = ["CalibrationRefused", "ProbeBody", "fresh_prompt", "probe_body", "send_probe"]

ProbeBody = list[bytes]

# Each calibration run opens its prompts with its own random tag and a counter, so no prompt
# of this run, or of another, shares a first block with any other: every prefill is fresh.
_RUN_TAG = os.urandom(6).hex()
_COUNTER = itertools.count()


class CalibrationRefused(AgentloadError):
    """The calibration would not fit from what it measured (a failed probe, a saturated
    generator, a noisy target, a budget spent); the message says why."""

    exit_code = 1


def fresh_prompt(tokens: int) -> str:
    """About `tokens` tokens of text that starts unlike any prompt sent before."""
    serial = next(_COUNTER)
    head = f"probe {_RUN_TAG} {serial:06d}"
    return f"{head} {words_for_tokens(max(1, tokens - 6), offset=serial)}"


def probe_body(model: str, text: str, output_tokens: int, *, force: bool) -> ProbeBody:
    """A streamed chat request of `text`; `force`: exactly `output_tokens` tokens come back
    (min_tokens and ignore_eos, as vLLM and SGLang take them)."""
    return chat_body(
        model,
        [encode_message("user", text)],
        max_tokens=output_tokens,
        min_tokens=output_tokens if force else None,
        ignore_eos=True if force else None,
    )


async def send_probe(transport: Transport, body: ProbeBody, what: str) -> Reply:
    """Send one probe; CalibrationRefused when it fails (every probe must be answered)."""
    reply = await send(transport, "chat", body)
    if not reply.ok:
        raise CalibrationRefused(
            f"the target failed a {what} ({reply.error}); every probe must be answered"
        )
    if reply.ttft_s is None:
        raise CalibrationRefused(
            f"a {what} came back without a streamed token: TTFT cannot be timed"
        )
    return reply
