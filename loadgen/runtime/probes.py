"""Start-up probes: tiny requests that learn what the target can do before a run measures it.

The model it serves, whether output lengths can be forced, what its chat template adds,
whether it keeps Responses state, and whether it takes the reasoning fields the agents send.
A target that cannot serve the run is a TargetUnreachableError (exit 3) in its own words.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Sequence

import orjson

from loadgen.agents import AgentParams
from loadgen.background import cancel_and_wait
from loadgen.errors import TargetUnreachableError
from loadgen.protocol import (
    Api,
    Reply,
    chat_body,
    count_tokens,
    encode_message,
    responses_body,
    send,
)
from loadgen.runtime.capabilities import TargetCapabilities
from loadgen.traces.prompt import TextScale, block_tokens, prompt_text
from loadgen.transport import Transport, TransportError

logger = logging.getLogger(__name__)

__all__ = [
    "check_reasoning_fields",
    "detect_server_state",
    "discover_model",
    "first_request",
    "force_length_works",
    "replay_text_scale",
    "template_tokens",
]
# Start-up probes are tiny requests: a target that cannot answer one in this long is not
# ready to be measured, and the user should hear so at once, not after the request timeout.
_PROBE_TIMEOUT_S = 30.0
_PROBE_QUIET_S = 2.0  # said after this long without an answer: with start-up, under 5 s
# A refusal of the model itself (wrong name, no access): the run could measure nothing.
_MODEL_REFUSED = re.compile(
    r"model.*(?:not exist|not found|does not|unknown|invalid|no access|not available)|"
    r"(?:invalid|unknown) model",
    re.IGNORECASE,
)


def _where(transport: Transport, replica: int) -> str:
    """The target (or the replica of a fleet) as error messages name it."""
    url = transport.replicas[replica].base_url
    name = transport.replica_name(replica)
    return url if name is None else f"target {name} ({url})"


async def discover_model(transport: Transport) -> str:
    """The first model the target serves; TargetUnreachableError when it cannot say."""
    url = _where(transport, 0)
    try:
        status, body = await transport.get("models", timeout_s=30)
    except TransportError as exc:
        raise TargetUnreachableError(f"cannot reach {url}: {exc}; check --target") from exc
    if status in (401, 403):
        raise TargetUnreachableError(f"{url} refused the API key (HTTP {status}); check --api-key")
    try:
        return str(orjson.loads(body)["data"][0]["id"])
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError) as exc:
        raise TargetUnreachableError(
            f"{url}/models answered HTTP {status} without a model list; pass --model"
        ) from exc


async def _probe(
    transport: Transport,
    api: Api,
    body: list[bytes],
    what: str,
    *,
    refusals: bool = True,
    replica: int = 0,
) -> Reply:
    """Send one start-up probe to `replica`; TargetUnreachableError when it cannot serve the run.

    `refusals`: a 404 or a refused model is fatal too (not for a chained request, whose 404
    is about the response it names, not the model).
    """
    url = _where(transport, replica)
    sending = asyncio.ensure_future(send(transport, api, body, replica=replica))
    try:
        done, _ = await asyncio.wait({sending}, timeout=_PROBE_QUIET_S)
        if not done:  # a loading model, a busy server or an endless stream: say so
            logger.warning(
                "agentload: %s has not answered %s in %.0fs; waiting up to %.0fs",
                url, what, _PROBE_QUIET_S, _PROBE_TIMEOUT_S,
            )  # fmt: skip
        async with asyncio.timeout(_PROBE_TIMEOUT_S - _PROBE_QUIET_S):
            reply = await sending
    except TimeoutError as exc:
        raise TargetUnreachableError(
            f"{url} did not answer {what} within {_PROBE_TIMEOUT_S:.0f}s; is the server up "
            "and the model loaded?"
        ) from exc
    finally:
        await cancel_and_wait(sending)
    if not reply.ok and reply.status is None:
        raise TargetUnreachableError(f"cannot reach {url}: {reply.error}")
    status = reply.status or 0
    if status in (401, 403):
        raise TargetUnreachableError(
            f"{url} refused the API key (HTTP {status}): {reply.error}; check --api-key"
        )
    refused = status == 404 or (status in (400, 422) and _MODEL_REFUSED.search(reply.error or ""))
    if refusals and refused:
        raise TargetUnreachableError(
            f"{url} refused {what} (HTTP {status}): {reply.error}; check --model and --target"
        )
    return reply


_PING = "ping"  # one token under the stand-in tokenizer


async def first_request(transport: Transport, model: str, replica: int = 0) -> Reply:
    """The start-up request: a tiny chat with its output length forced to 3 tokens.

    It is the check that the model answers at all (TargetUnreachableError, exit 3, with the
    server's words when not), and tells whether min_tokens + ignore_eos work.
    """
    body = chat_body(
        model, [encode_message("user", _PING)], max_tokens=3, min_tokens=3, ignore_eos=True
    )
    return await _probe(transport, "chat", body, "a first request", replica=replica)


def force_length_works(reply: Reply, setting: str) -> bool:
    """Whether to force output lengths: as `setting` says, or (auto) as the probe showed."""
    if setting != "auto":
        return setting == "always"
    return reply.ok and reply.usage is not None and reply.usage.completion_tokens == 3


def template_tokens(reply: Reply) -> int:
    """Prompt tokens the server adds around a message's text (its chat template), as the
    first request's usage shows; 0 when it reports none."""
    if reply.usage is None:
        return 0
    return max(0, reply.usage.prompt_tokens - count_tokens(_PING))


# Stand-in tokens of the replay-length probe: long enough that a token or two of marker or
# template miscounted moves the ratio by well under 1%, short enough for any real window.
_RATIO_PROBE_TOKENS = 1024


async def replay_text_scale(
    transport: Transport, model: str, block_size: int, template: int
) -> TextScale:
    """The target's tokens per stand-in token of replay's prompt text (loadgen.traces.prompt),
    so that a replayed prompt is the trace's length in the target's own tokens, and the
    stand-in length of a block of `block_size` of them; 1 (said) when it reports no usage.

    A prompt of known stand-in length made of replay's blocks goes out with max_tokens 1;
    its prompt tokens, less the `template` the first request learned, over that length is
    the ratio. How a block tokenizes depends on its length (its marker's share, the words
    its filler ends on), so where the ratio changes the block's length the probe is sent
    again with blocks of that length, and that measure is the one kept.
    """
    block = block_size
    for _attempt in range(2):
        text = prompt_text(
            tuple(range(1, _RATIO_PROBE_TOKENS // block + 2)), _RATIO_PROBE_TOKENS, block,
            "\x1eagentload-probe", "",
        )  # fmt: skip
        body = chat_body(model, [encode_message("user", text)], max_tokens=1)
        reply = await _probe(transport, "chat", body, "a prompt-length probe")
        if not reply.ok or reply.usage is None:
            why = (
                "reports no usage" if reply.ok else f"refused a prompt-length probe ({reply.error})"
            )
            logger.warning(
                "agentload: %s %s; replayed prompts are sized in agentload's own tokens, "
                "which the target may count differently", _where(transport, 0), why,
            )  # fmt: skip
            return TextScale()
        scale = TextScale(max(reply.usage.prompt_tokens - template, 1) / count_tokens(text), block)
        if block_tokens(block_size, scale.ratio) == block:
            break
        block = block_tokens(block_size, scale.ratio)
    logger.info("agentload: the target counts %.3f tokens per replayed token", scale.ratio)
    return scale


async def detect_server_state(
    transport: Transport, model: str, capabilities: TargetCapabilities, replica: int = 0
) -> None:
    """Whether the target (its `replica`) chains Responses on previous_response_id (a stored
    response, then a follow-up on it); the answer goes into `capabilities`."""
    first = await _probe(
        transport,
        "responses",
        responses_body(model, [encode_message("user", "ping")], store=True, max_output_tokens=3),
        "a Responses request",
        replica=replica,
    )
    if not first.ok:
        return  # a transient failure says nothing about the store: the sessions will see
    if not first.response_id:
        capabilities.refuse_server_state("a stored response came back without an id to chain on")
        return
    follow = await _probe(
        transport,
        "responses",
        responses_body(
            model,
            [encode_message("user", "pong")],
            previous_response_id=first.response_id,
            store=True,
            max_output_tokens=3,
        ),
        "a chained Responses request",
        refusals=False,
        replica=replica,
    )
    first_usage, follow_usage = first.usage, follow.usage
    if (
        follow.ok
        and first_usage is not None
        and follow_usage is not None
        and follow_usage.prompt_tokens < first_usage.prompt_tokens + first_usage.completion_tokens
    ):
        # Accepted, but the chained prompt does not hold the response it chains on: the
        # server ignores previous_response_id (transformers serve does), and every session
        # would lose its history silently.
        capabilities.refuse_server_state(
            f"previous_response_id accepted but ignored: a chained prompt of "
            f"{follow_usage.prompt_tokens} tokens after a response of "
            f"{first_usage.prompt_tokens} + {first_usage.completion_tokens}"
        )
    elif follow.ok:
        capabilities.server_state = True
    elif follow.unsupported is not None:
        capabilities.refuse_server_state(follow.error or "previous_response_id refused")
    # Anything else (a 404 for the id just issued, a 5xx) is left to the sessions: it may be
    # the very state loss the run is there to count.


_EFFORT_ORDER = ("none", "minimal", "low", "medium", "high")


async def check_reasoning_fields(
    transport: Transport, model: str, params: Sequence[AgentParams], replica: int = 0
) -> None:
    """Refuse to start (exit 3, the target's words) when the target refuses the reasoning
    fields the agents send: every one of their requests would fail the same way."""
    asked = [p for p in params if p.reasoning_effort]
    if not asked:
        return
    efforts = {level for p in asked for level in (p.reasoning_effort or {})}
    effort = max(efforts, key=_EFFORT_ORDER.index)
    budget = 8 if any(p.thinking_budget for p in asked) and effort != "none" else None
    sent = "reasoning_effort" + (" and thinking_token_budget" if budget else "")
    for api in sorted({p.api for p in asked} & {"chat", "responses"}):
        message = [encode_message("user", _PING)]
        body = (
            chat_body(model, message, max_tokens=16, reasoning_effort=effort,
                      thinking_token_budget=budget)
            if api == "chat"
            else responses_body(model, message, max_output_tokens=16, reasoning_effort=effort,
                                thinking_token_budget=budget)
        )  # fmt: skip
        reply = await _probe(transport, api, body, f"a {api} request with {sent}", replica=replica)
        if reply.status in (400, 422):
            raise TargetUnreachableError(
                f"{_where(transport, replica)} refused the {sent} the profile's agents send "
                f"(HTTP {reply.status}): {reply.error}; remove reasoning_effort/thinking_budget "
                "from the profile's agents, or let the server take them (a LiteLLM proxy: "
                "allowed_openai_params or drop_params)"
            )
