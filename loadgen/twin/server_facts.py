"""What the server says about itself: its window, its metric names, its KV cache, whether it
caches prefixes and in blocks of how many tokens."""

from __future__ import annotations

import math
from dataclasses import dataclass

import orjson
from prometheus_client.parser import text_string_to_metric_families

from loadgen.protocol import send
from loadgen.sim.config import MetricsDialect
from loadgen.transport import Transport, TransportError
from loadgen.twin.fit import fit_line
from loadgen.twin.probe_requests import fresh_prompt, probe_body, send_probe

__all__ = [
    "CacheFacts",
    "MetricsFacts",
    "PrefixFacts",
    "context_limit",
    "metrics_facts",
    "parse_cache_config",
    "prefix_facts",
    "read_dialect",
    "slot_contexts",
    "tokens_per_word",
]

# A prompt this long is past any window a server offers today: its refusal states the window.
_OVERLONG_TOKENS = 2_200_000
# Prompt lengths for the prefix-cache probe: spread so that no block size above the true one
# divides every cached count (cached counts are whole blocks).
_PREFIX_LENGTHS = (203, 331, 457, 589, 701, 823)


@dataclass(frozen=True, slots=True)
class CacheFacts:
    """KV capacity as the server's metrics state it."""

    num_blocks: int
    block_size: int
    source: str


@dataclass(frozen=True, slots=True)
class MetricsFacts:
    """What /metrics showed: whose names it uses, and the KV cache where it says."""

    dialect: MetricsDialect | None
    cache: CacheFacts | None
    url: str
    error: str | None = None


@dataclass(frozen=True, slots=True)
class PrefixFacts:
    """The same prompt sent twice: cached tokens reported on the second (None: not reported)."""

    caching: bool | None
    block_size: int | None
    pairs: list[tuple[int, int | None]]  # (prompt tokens, cached tokens of the repeat)
    method: str
    # The server's prompt tokens per one-token word agentload sent (1 on vLLM's and the
    # simulator's tokenizers, about 2 on a small vocabulary): the prefill probe sizes its
    # prompts in the server's tokens by it. 1.0 when usage reports no prompt tokens.
    tokens_per_word: float = 1.0


async def context_limit(transport: Transport, model: str) -> tuple[int | None, str]:
    """The window: /v1/models max_model_len, llama.cpp's /props n_ctx, or an over-long prompt's
    refusal; (None, why) when nothing says it."""
    try:
        status, body = await transport.get("models", timeout_s=30)
        if status == 200:
            for entry in orjson.loads(body).get("data", []):
                window = entry.get("max_model_len")
                if entry.get("id") == model and isinstance(window, int) and window > 0:
                    return window, "/v1/models max_model_len"
        status, body = await transport.get(f"{transport.target.root_url}/props", timeout_s=30)
        if status == 200:
            window = orjson.loads(body).get("default_generation_settings", {}).get("n_ctx")
            if isinstance(window, int) and window > 0:
                return window, "/props default_generation_settings.n_ctx (llama.cpp)"
    except (TransportError, orjson.JSONDecodeError, AttributeError, TypeError):
        pass
    overlong = probe_body(model, fresh_prompt(_OVERLONG_TOKENS), 1, force=False)
    reply = await send(transport, "chat", overlong)
    if reply.window_tokens:
        return reply.window_tokens, f"refusal of a {_OVERLONG_TOKENS}-token prompt"
    said = "accepted" if reply.ok else f"refused without a window ({reply.error})"
    return None, f"not measured: /v1/models has no max_model_len; an over-long prompt was {said}"


async def slot_contexts(transport: Transport) -> list[int] | None:
    """Each slot's n_ctx from llama.cpp's GET /slots; None where the server has no such list.

    llama.cpp keeps a KV cache per slot (its --ctx-size split over --parallel), not one paged
    cache shared by every sequence: the eviction probe cannot size it, the slots say it."""
    try:
        status, body = await transport.get(f"{transport.target.root_url}/slots", timeout_s=30)
        if status != 200:
            return None
        slots = orjson.loads(body)
    except (TransportError, orjson.JSONDecodeError):
        return None
    if not isinstance(slots, list):
        return None
    sizes = [s.get("n_ctx") for s in slots if isinstance(s, dict)]
    counted = [n for n in sizes if isinstance(n, int) and n > 0]
    return counted if counted and len(counted) == len(slots) else None


def read_dialect(text: str) -> MetricsDialect | None:
    """Whose metric names an exposition uses (as `agentload sim --metrics-dialect` names them)."""
    names = {
        line.split("{", 1)[0].split(" ", 1)[0] for line in text.splitlines() if line[:1] != "#"
    }
    if names & {"vllm:kv_cache_usage_perc", "vllm:inter_token_latency_seconds_count"}:
        return "vllm"
    if any(n.startswith("vllm:") for n in names):
        return "vllm-v0"
    if any(n.startswith("sglang:") for n in names):
        return "sglang"
    if any(n.startswith("llamacpp:") for n in names):
        return "llamacpp"
    return None


def parse_cache_config(text: str) -> CacheFacts | None:
    """num_gpu_blocks and block_size from vLLM's `vllm:cache_config_info` (one engine's)."""
    lines = "\n".join(line for line in text.splitlines() if "cache_config_info" in line)
    for family in text_string_to_metric_families(lines + "\n"):
        for sample in family.samples:
            if sample.name != "vllm:cache_config_info":
                continue
            blocks, size = sample.labels.get("num_gpu_blocks"), sample.labels.get("block_size")
            if blocks and size and blocks.isdigit() and size.isdigit():
                return CacheFacts(int(blocks), int(size), "vllm:cache_config_info num_gpu_blocks")
    return None


async def metrics_facts(transport: Transport) -> MetricsFacts:
    """Scrape the target's /metrics once for its dialect and KV cache."""
    url = f"{transport.target.root_url}/metrics"
    try:
        status, body = await transport.get(url, timeout_s=30)
    except TransportError as exc:
        return MetricsFacts(None, None, url, str(exc))
    if status != 200:
        return MetricsFacts(None, None, url, f"HTTP {status}")
    text = body.decode("utf-8", "replace")
    return MetricsFacts(read_dialect(text), parse_cache_config(text), url)


def _block_size(pairs: list[tuple[int, int]]) -> int | None:
    """The block size cached counts show: it divides every count, and each prompt's uncached
    rest (one token at least is computed) is at most one block."""
    cached = [c for _, c in pairs if c > 0]
    if not cached:
        return None
    common = math.gcd(*cached)
    rest = max(p - c for p, c in pairs if c > 0)
    fits = [d for d in range(1, common + 1) if common % d == 0 and d >= rest]
    return fits[0] if fits else common


def tokens_per_word(sent: list[tuple[int, int]]) -> float:
    """The server's prompt tokens per one-token word sent: the slope of its counts against the
    words (the chat template's own tokens are a constant, left out); 1.0 without two lengths
    or with a count that does not grow."""
    if len({words for words, _ in sent}) < 2:
        return 1.0
    line = fit_line([float(w) for w, _ in sent], [float(t) for _, t in sent])
    return line.slope if line.slope > 0 else 1.0


async def prefix_facts(transport: Transport, model: str) -> PrefixFacts:
    """Send fresh prompts of a few lengths twice each and read cached_tokens on the repeats."""
    pairs: list[tuple[int, int | None]] = []
    sent: list[tuple[int, int]] = []  # (words sent, the server's prompt tokens)
    for tokens in _PREFIX_LENGTHS:
        body = probe_body(model, fresh_prompt(tokens), 1, force=False)
        await send_probe(transport, body, "prefix-cache probe")
        again = await send_probe(transport, body, "prefix-cache probe")
        usage = again.usage
        if usage is not None:
            pairs.append((usage.prompt_tokens, usage.cached_tokens))
            sent.append((tokens, usage.prompt_tokens))
    ratio = tokens_per_word(sent)
    reported = [(p, c) for p, c in pairs if c is not None]
    if not reported:
        method = "not measured: the server reports no cached_tokens in usage"
        return PrefixFacts(None, None, pairs, method, ratio)
    if not any(c for _, c in reported):
        return PrefixFacts(False, None, pairs, "a repeated prompt reported 0 cached tokens", ratio)
    size = _block_size(reported)
    method = (
        f"cached_tokens of {len(reported)} repeated prompts ({_PREFIX_LENGTHS[0]}.."
        f"{_PREFIX_LENGTHS[-1]} tokens): the block size divides every cached count and "
        "covers each uncached rest"
    )
    return PrefixFacts(True, size, pairs, method, ratio)
