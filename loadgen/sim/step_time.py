"""How long one engine step takes, from what the step computes (a roofline or an exact model)."""

from __future__ import annotations

from dataclasses import dataclass

from loadgen.sim.config import AnalyticalModel, RooflineModel

__all__ = ["StepWork", "step_seconds", "token_pairs"]


def token_pairs(new_tokens: float, context_before: float) -> float:
    """Pairs of a new token and a token it attends to: each of `new_tokens` attends over the
    `context_before` and the new ones before it."""
    return new_tokens * (context_before + new_tokens / 2)


@dataclass(slots=True)
class StepWork:
    """What one continuous-batching step computes, aggregated over its sequences."""

    decode_seqs: int = 0
    prefill_tokens: int = 0
    # Sum over scheduled tokens of the context each attends to, for attention FLOPs.
    attention_token_pairs: float = 0.0
    # KV bytes are read once per sequence per step: sum of contexts of scheduled sequences.
    kv_tokens_read: int = 0
    # The prefill chunks' share of attention_token_pairs (the analytical model's attention).
    prefill_token_pairs: float = 0.0

    @property
    def new_tokens(self) -> int:
        """Tokens pushed through the weights this step (decodes plus prefill chunk tokens)."""
        return self.decode_seqs + self.prefill_tokens

    def add(self, new_tokens: int, context_before: int, *, prefill: bool) -> None:
        """Account one sequence's share of the step."""
        pairs = token_pairs(new_tokens, context_before)
        if prefill:
            self.prefill_tokens += new_tokens
            self.prefill_token_pairs += pairs
        else:
            self.decode_seqs += 1
        self.attention_token_pairs += pairs
        self.kv_tokens_read += context_before + new_tokens


def step_seconds(model: RooflineModel | AnalyticalModel, work: StepWork) -> float:
    """Seconds the step would take on the modelled hardware."""
    if work.new_tokens == 0:
        return 0.0
    if isinstance(model, AnalyticalModel):
        return (
            model.decode_step_s(work.decode_seqs)
            + work.prefill_tokens / model.prefill_tokens_per_s
            + work.prefill_token_pairs * model.prefill_attention_ns_per_pair * 1e-9
        )
    tp = model.tensor_parallel
    # Dense matmuls: 2 FLOPs per parameter per token; attention: 4 * layers * hidden per pair.
    flops = 2.0 * model.params * work.new_tokens
    flops += 4.0 * model.num_layers * model.hidden_size * work.attention_token_pairs
    compute_s = flops / tp / (model.peak_flops_per_gpu * model.flops_efficiency)
    bytes_read = model.weight_bytes_per_gpu + model.kv_bytes_per_token_per_gpu * work.kv_tokens_read
    memory_s = bytes_read / (model.memory_bandwidth_per_gpu * model.bandwidth_efficiency)
    return model.step_overhead_s + model.tp_overhead_s + max(compute_s, memory_s)
