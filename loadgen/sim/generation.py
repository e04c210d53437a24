"""One request's trip through the simulator: checks, faults, reply plan, engine, token stream."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from loadgen.sim.api_errors import ApiError
from loadgen.sim.config import AnalyticalModel, SimConfig
from loadgen.sim.engine import Engine, EngineSequence
from loadgen.sim.metrics import SimMetrics
from loadgen.sim.prompt import PromptInfo, analyse_long_prompt
from loadgen.sim.reasoning import reasoning_length
from loadgen.sim.reply import ReplyPlan, ReplyRequest, plan_reply, reply_seed
from loadgen.sim.response_store import ResponseStore

__all__ = ["Generation", "ReplicaLost", "SimContext"]


class ReplicaLost(ApiError):
    """The replica serving a request was removed (or crashed) before the request ended.

    Through a gateway, a request whose reply had not started gets a 503; a stream already
    open is cut (streaming.pump closes the connection), as a crashed engine's streams are.
    """

    def __init__(self, name: str) -> None:
        super().__init__(
            503,
            f"upstream connect error or disconnect/reset before headers: replica {name} "
            "went away (removed or crashed).",
        )


@dataclass(slots=True)
class Generation:
    """A planned reply being produced by the engine, token by token."""

    context: SimContext
    prompt: PromptInfo
    plan: ReplyPlan
    seq: EngineSequence
    created: int  # unix seconds, for the response bodies
    epoch: int  # the engine's crashes when it was queued: a later crash lost it
    cut_after: int | None = None  # stream_cut fault: tokens to send before dropping
    sent: int = 0
    done: bool = False

    @property
    def prompt_tokens(self) -> int:
        """Prompt tokens, as usage reports them."""
        return self.prompt.length

    @property
    def cached_tokens(self) -> int:
        """Prompt tokens served from the prefix cache."""
        return max(0, self.seq.cached_tokens)

    @property
    def completion_tokens(self) -> int:
        """Tokens generated so far (reasoning included)."""
        return self.seq.output_count

    @property
    def reasoning_tokens(self) -> int:
        """Reasoning tokens generated so far."""
        return min(self.seq.output_count, self.plan.reasoning_tokens or 0)

    async def next_deltas(self) -> list[tuple[int, str]] | None:
        """The deltas of tokens produced since the last call; None once the reply is complete."""
        if self.done:
            return None
        seq = self.seq
        await seq.wait(self.sent)
        if seq.aborted and not seq.finished:
            self.done = True
            if self.epoch != self.context.engine.epoch:
                raise self.context.lost()
            raise ApiError(503, "The simulator is shutting down.")
        new = self.plan.deltas[self.sent : seq.output_count]
        self.sent = seq.output_count
        if seq.finished:
            self.done = True
            self.context.record_finish(self)
        return new

    async def run_to_end(self) -> None:
        """Wait for the whole reply (non-streaming requests)."""
        while await self.next_deltas() is not None:
            pass

    def should_cut(self) -> bool:
        """True when the stream_cut fault says to drop the connection now."""
        return self.cut_after is not None and self.sent >= self.cut_after and not self.done

    def abandon(self) -> None:
        """The client left (or a fault cut it off): stop generating and free the KV blocks."""
        if not self.done:
            self.done = True
            self.context.engine.abort(self.seq)
            self.context.metrics.finished("abort")
            self.context.metrics.prompt_tokens.inc(self.prompt.length)
            self.context.metrics.generation_tokens.inc(self.seq.output_count)
            self.context.metrics.reasoning_tokens_aborted.inc(self.reasoning_tokens)


class SimContext:
    """Shared state of one simulator (or of one replica of a fleet): config, engine, metrics,
    response store, fault dice."""

    def __init__(
        self,
        config: SimConfig,
        *,
        name: str = "r0",
        index: int = 0,
        store: ResponseStore | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> None:
        self.config = config
        self.name = name
        self.up = True
        self.engine = Engine(config)
        self.metrics = SimMetrics(config.served_model_name, config.metrics_dialect, labels)
        self.store = store if store is not None else self.new_store()
        self.engine.on_step = self.metrics.on_step
        # Faults get their own dice so that switching one on does not change any reply.
        parts: tuple[object, ...] = ("faults", config.seed) + ((index,) if index else ())
        self._fault_rng = random.Random(reply_seed(*parts))
        self._requests = 0
        # A fleet counts the requests its replica lost.
        self.on_lost: Callable[[], None] | None = None

    def new_store(self) -> ResponseStore:
        """An empty Responses store of the configured size."""
        cfg = self.config
        return ResponseStore(cfg.responses_store_capacity, cfg.wall_s(cfg.responses_store_ttl_s))

    def lost(self) -> ReplicaLost:
        """The error for a request this replica lost (counted)."""
        if self.on_lost is not None:
            self.on_lost()
        return ReplicaLost(self.name)

    def lookup(self, response_id: str) -> str | None:
        """The transcript a previous_response_id continues, or None (store_evict included)."""
        stored = self.store.get(response_id)
        if stored is not None and self.fault("store_evict", self.config.faults.store_evict):
            self.store.evict(response_id)
            stored = None
        (self.metrics.lookups_found if stored else self.metrics.lookups_not_found).inc()
        return None if stored is None else stored.transcript

    def fault(self, kind: str, rate: float) -> bool:
        """Roll the dice for one fault; count it when it fires."""
        if rate <= 0.0 or self._fault_rng.random() >= rate:
            return False
        self.metrics.fault(kind)
        return True

    def check_model(self, model: str) -> None:
        """404 for a model this server does not serve, with vLLM's message."""
        if model != self.config.served_model_name:
            raise ApiError(404, f"The model `{model}` does not exist.", param="model")

    async def admission_faults(self) -> None:
        """Faults that strike before any work: 5xx, 429, and a latency spike."""
        faults = self.config.faults
        if self.fault("http_5xx", faults.http_5xx):
            raise ApiError(500, "Internal server error (injected by agentload sim).")
        if self.fault("rate_limit", faults.rate_limit):
            raise ApiError(
                429, "Too many requests (injected by agentload sim).", headers={"Retry-After": "1"}
            )
        if self.fault("latency_spike", faults.latency_spike):
            await asyncio.sleep(self.config.wall_s(faults.latency_spike_ms / 1000.0))

    async def start(
        self,
        prompt_text: str,
        reply: ReplyRequest,
        requested_max_tokens: int | None,
        *,
        temperature: float | None,
        seed: int | None,
        stream: bool,
        prompt: PromptInfo | None = None,
    ) -> Generation:
        """Check the prompt, plan the reply and queue it on the engine (`prompt`: the text
        already analysed, by a prefix router)."""
        cfg = self.config
        overhead_ms = cfg.perf.request_overhead_ms if isinstance(cfg.perf, AnalyticalModel) else 0
        if overhead_ms > 0:
            # The server's own time before its engine sees the request (HTTP, tokenizing,
            # scheduling): each request waits on its own, none holds up another or a step,
            # and the engine's clocks (TTFT and queue-time metrics) start after it, as
            # vLLM's start once the request is tokenized.
            await asyncio.sleep(cfg.wall_s(overhead_ms / 1000.0))
        if prompt is None:
            prompt = await analyse_long_prompt(
                prompt_text, cfg.block_size, cfg.max_model_len, stable=cfg.stable_hashes
            )
        if not self.up:
            raise self.lost()
        if prompt.length >= cfg.max_model_len:
            raise ApiError(
                400,
                f"This model's maximum context length is {cfg.max_model_len} tokens. "
                f"However, your prompt contains {prompt.length} input tokens, which leaves no "
                "room for output. Please reduce the length of the input messages.",
                param="messages",
            )
        # vLLM clamps max_tokens silently to the room left in the context window.
        room = cfg.max_model_len - prompt.length
        reply.max_tokens = min(requested_max_tokens or room, room)
        reply.min_tokens = min(reply.min_tokens, reply.max_tokens)
        self._requests += 1
        # Greedy or seeded requests repeat exactly; sampled ones differ per request.
        nonce = 0 if (temperature == 0 or seed is not None) else self._requests
        tail = prompt_text[-256:]
        plan_seed = reply_seed(cfg.seed, seed, prompt.length, tail, nonce)
        rng = random.Random(plan_seed)
        # Thinking has dice of its own, so the answer is the same whatever the effort.
        thinking_rng = random.Random(reply_seed(plan_seed, "reasoning"))
        thinking = 0
        if reply.reasoning_effort is not None:
            thinking = reasoning_length(
                cfg.reasoning, reply.reasoning_effort, reply.thinking_budget, thinking_rng
            )
        malformed = bool(reply.tools) and self.fault_pending("malformed_tool_args")
        plan = plan_reply(
            reply,
            rng,
            median_tokens=cfg.output_tokens_median,
            sigma=cfg.output_tokens_sigma,
            tool_call_probability=cfg.tool_call_probability,
            malformed_tool_args=malformed,
            reasoning_tokens=thinking,
            reasoning_rng=thinking_rng,
        )
        if plan.tool_calls and plan.tool_calls[0].malformed:
            self.metrics.fault("malformed_tool_args")
        loop_now = asyncio.get_running_loop().time()
        seq = EngineSequence(prompt.length, prompt.block_hashes, prompt.tail, plan.tokens, loop_now)
        seq.on_token = self.metrics.on_token
        generation = Generation(
            self, prompt, plan, seq, created=int(time.time()), epoch=self.engine.epoch
        )
        if stream and self.fault("stream_cut", cfg.faults.stream_cut):
            generation.cut_after = rng.randrange(max(1, len(plan.tokens)))
        self.engine.submit(seq)
        return generation

    def fault_pending(self, kind: str) -> bool:
        """Roll for a fault that is counted later, only if it really takes effect."""
        rate: float = getattr(self.config.faults, kind)
        return rate > 0.0 and self._fault_rng.random() < rate

    def record_finish(self, generation: Generation) -> None:
        """Metrics for a request that ran to its end."""
        seq = generation.seq
        m = self.metrics
        m.finished(generation.plan.finish_reason)
        m.prompt_tokens.inc(seq.prompt_len)
        m.generation_tokens.inc(seq.output_count)
        m.reasoning_tokens.inc(generation.reasoning_tokens)
        m.e2e.observe(max(0.0, seq.last_token_time - seq.arrival))
