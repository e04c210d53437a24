"""`agentload calibrate` against llama.cpp's llama-server: what it reads from a server that
exports no vllm:cache_config_info and counts a word of agentload's as about two tokens.

What holds on a shared 2-core machine is asserted: calibration succeeds, the batch limit is
the server's --parallel, the window its context per slot, the dialect llamacpp, prefix
caching on, the prefill rate is counted in the twin's tokens, and the request overhead is
measured on short turns after a cached conversation. How close the twin's output tokens/s
and TTFT come to llama-server's under load is measured, not asserted (the machine's noise
is as large as the claim): bench/twin_vs_llama_server.py measures it, and the figures, with
the noise, are in docs/twin.md ("Against llama-server on this machine's CPU")."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from real_servers import LlamaServer, write_tiny_gguf

from loadgen.sim.config import sim_config_from_file
from loadgen.twin.prefill_probe import PrefillPoint, fit_prefill
from loadgen.twin.server_facts import tokens_per_word

AGENTLOAD = [sys.executable, "-m", "loadgen"]
PARALLEL = 4
CTX_PER_SLOT = 4096


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Larger than the default tiny model (~20M parameters, F32): a decode step of several
    # milliseconds and a prefill of ~1,500 tokens/s on one core, so that the engine, not
    # HTTP, sets the timings the calibration fits (the tiny model's 0.2 ms step is noise).
    path = tmp_path_factory.mktemp("model") / "small.gguf"
    return write_tiny_gguf(path, n_embd=512, n_layer=6, n_ff=1536)


@pytest.fixture(scope="module")
def llama_server(model: Path) -> Iterator[LlamaServer]:
    with LlamaServer(model, ctx=PARALLEL * CTX_PER_SLOT, parallel=PARALLEL) as server:
        yield server


@pytest.mark.slow
def test_calibrate_reads_slots_window_and_tokenizer_of_llama_server(
    llama_server: LlamaServer, tmp_path: Path
) -> None:
    twin = tmp_path / "twin.yaml"
    # --max-noise 1: this test is about what is read from llama-server, not about the noise
    # of a machine the rest of the suite shares (that refusal is tests/test_twin_calibrate's).
    done = subprocess.run(
        [*AGENTLOAD, "calibrate", "--target", llama_server.base_url, "--out", str(twin),
         "--max-prompt-tokens", "2048", "--max-concurrency", "16", "--repeats", "2",
         "--max-noise", "1", "--max-duration", "3m"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr + llama_server.log_text()[-2000:]
    document = yaml.safe_load(twin.read_text())
    fitted = document["calibration"]["fitted"]
    # Slots are the batch limit: 4 streams decode at once, the 5th..8th wait.
    assert document["max_num_seqs"] == PARALLEL, document["calibration"]["sweep"]
    assert fitted["max_num_seqs"]["lower_bound"] is False
    # The window is /props n_ctx: one slot's share of --ctx-size.
    assert document["max_model_len"] == CTX_PER_SLOT
    assert "/props" in fitted["max_model_len"]["method"]
    assert document["metrics_dialect"] == "llamacpp"
    # llama-server caches a repeated prompt but its last token: every token but one.
    assert fitted["prefix_caching"]["value"] is True
    assert document["block_size"] == 1
    # Its KV capacity is not in its metrics, and is no shared paged cache: the slots' own
    # (GET /slots), their sum assumed and said so, and no eviction probe run against them.
    assert fitted["num_kv_blocks"]["value"] is None
    assert "not measured as one cache" in fitted["num_kv_blocks"]["method"]
    assert document["num_kv_blocks"] == PARALLEL * CTX_PER_SLOT
    assert "eviction onset" not in done.stderr
    # The tiny vocabulary reads an agentload word as about two tokens: prefill probes are
    # sized in the server's tokens (the longest within half the window) and the rate is
    # written in the twin's (one token per word).
    lengths = [int(n) for n in document["calibration"]["prefill_ttft_ms"]]
    assert max(lengths) <= CTX_PER_SLOT // 2 + 64, lengths
    rate = fitted["perf.prefill_tokens_per_s"]
    assert "the server's /" in rate["method"], rate
    perf = document["perf"]
    assert perf["decode_step_ms"] > 0.5, perf  # milliseconds, as on a CPU
    assert 50 < perf["prefill_tokens_per_s"] < 50_000, perf
    # The request overhead is measured on short turns after cached conversations (llama.cpp
    # reports cached tokens), and written as a key the simulator simulates.
    overhead = fitted["perf.request_overhead_ms"]
    assert overhead["method"].startswith("median over "), overhead
    assert perf["request_overhead_ms"] == overhead["value"] >= 0
    assert any("cached" in row["probe"] for row in document["calibration"]["accuracy"])
    # The simulator takes it as `agentload sim --config` does.
    config = sim_config_from_file(twin)
    assert config.max_num_seqs == PARALLEL
    assert config.max_model_len == CTX_PER_SLOT


# What the calibration above relies on, without a server (fast).


def test_tokens_per_word_is_the_slope_so_the_chat_template_does_not_count() -> None:
    # llama-server's tiny vocabulary: ~2 tokens a word, plus ~10 of template per request.
    sent = [(203, 2 * 203 + 10), (457, 2 * 457 + 10), (823, 2 * 823 + 10)]
    assert tokens_per_word(sent) == pytest.approx(2.0)
    # vLLM and the simulator: one token a word, plus the template.
    assert tokens_per_word([(203, 211), (823, 831)]) == pytest.approx(1.0)
    assert tokens_per_word([(203, 211)]) == 1.0


def test_a_prefill_that_grows_faster_than_the_prompt_is_fitted_by_its_short_prompt_rate() -> None:
    # TTFT = 10 ms + n / 2000 + 1e-7 n^2 (attention over the prompt, as on a CPU), in server
    # tokens at 2 a word: the twin's rate is 1000 words/s, the curve's slope at no prompt.
    def ttft(n: int) -> float:
        return 0.010 + n / 2000 + 1e-7 * n * n

    points = [
        PrefillPoint(n, (ttft(n) * 0.99, ttft(n), ttft(n) * 1.01)) for n in (284, 541, 1056, 2074)
    ]
    fit = fit_prefill(points, tokens_per_word=2.0)
    assert fit.quadratic_s is not None
    assert fit.rate.value == pytest.approx(1000, rel=0.05)
    assert fit.overhead_s.value == pytest.approx(0.010, abs=0.005)
    for n in (284, 2074):
        assert fit.predict_s(n) == pytest.approx(ttft(n), rel=0.03)
    # A straight line stays a line (the simulator's prefill).
    line = [PrefillPoint(n, (0.002 + n / 20000,) * 2) for n in (256, 512, 1024, 2048)]
    straight = fit_prefill(line)
    assert straight.quadratic_s is None
    assert straight.rate.value == pytest.approx(20000, rel=0.01)
