"""Every shipped profile through the LiteLLM proxy, in front of the simulator and of
llama-server: a gateway's framing and errors are read right, and no failure is invented."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from real_servers import LiteLLMProxy, LlamaServer, SimProcess, write_tiny_gguf
from shipped_profiles import (
    PROFILES,
    assert_only_server_caused,
    finish_run,
    run_profile,
    start_run,
)

pytestmark = pytest.mark.slow


# LiteLLM refuses reasoning_effort for a model it does not know to reason (an openai/
# deployment of ours) unless the deployment allows it, as one would configure a real one.
REASONING_ALLOWED = {"allowed_openai_params": ["reasoning_effort"]}


@pytest.fixture(scope="module")
def proxy_to_sim() -> Iterator[LiteLLMProxy]:
    with (
        SimProcess() as sim,
        LiteLLMProxy([(sim.base_url, sim.model)], deployment_params=REASONING_ALLOWED) as proxy,
    ):
        yield proxy


@pytest.fixture(scope="module")
def proxy_to_llama(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[LiteLLMProxy, LlamaServer]]:
    model = write_tiny_gguf(tmp_path_factory.mktemp("model") / "tiny.gguf")
    with (
        LlamaServer(model, ctx=4 * 32768, parallel=4) as llama,
        LiteLLMProxy([(llama.base_url, llama.model)], deployment_params=REASONING_ALLOWED) as proxy,
    ):
        yield proxy, llama


def wait_until_idle(llama: LlamaServer, timeout_s: float = 180.0) -> None:
    """Until llama-server processes no request: LiteLLM does not cancel a stream upstream when
    its client leaves, so the previous profile's streams go on holding its slots."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"{llama.root_url}/metrics", timeout=10) as response:
            text = response.read().decode()
        busy = [
            line for line in text.splitlines() if line.startswith("llamacpp:requests_processing")
        ]
        if busy and float(busy[0].split()[-1]) == 0:
            return
        time.sleep(0.5)


@pytest.mark.parametrize("profile", PROFILES)
def test_shipped_profile_through_litellm_to_the_sim_has_only_failures_the_server_caused(
    proxy_to_sim: LiteLLMProxy, profile: str, tmp_path: Path
) -> None:
    run = run_profile(profile, proxy_to_sim.base_url, proxy_to_sim.model, tmp_path / profile)
    assert_only_server_caused(run)


@pytest.mark.parametrize("profile", PROFILES)
def test_shipped_profile_through_litellm_to_llama_server_has_only_failures_the_server_caused(
    proxy_to_llama: tuple[LiteLLMProxy, LlamaServer], profile: str, tmp_path: Path
) -> None:
    proxy, llama = proxy_to_llama
    run = run_profile(
        profile, proxy.base_url, proxy.model, tmp_path / profile,
        before_attempt=lambda: wait_until_idle(llama),
    )  # fmt: skip
    assert_only_server_caused(run)


def test_a_wrong_model_name_exits_3_with_the_gateways_words(
    proxy_to_sim: LiteLLMProxy, tmp_path: Path
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "loadgen", "run", "ci-smoke", "--target", proxy_to_sim.base_url,
         "--model", "no-such-model", "--duration", "5s", "--quiet", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 3, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "no-such-model" in lines[0]  # LiteLLM's own message names the model it refused
    assert "check --model" in lines[0]
    assert (
        not (tmp_path / "summary.json").exists()
        or json.loads((tmp_path / "summary.json").read_text())["requests"]["total"] == 0
    )


def test_agents_pausing_about_1s_at_a_1s_idle_timeout_see_no_connection_error(
    tmp_path: Path,
) -> None:
    # uvicorn (LiteLLM's server, as vLLM's and SGLang's) closes idle connections silently;
    # here after 1 s, while agents pause 0.8-1.2 s between requests: every reuse races the
    # close. Both transports, side by side.
    profile = tmp_path / "pauses.yaml"
    profile.write_text(
        "name: pauses\nduration: 20s\nseed: 5\ntime_scale: 1\n"
        "arrival: {mode: closed, agents: 4}\n"
        "agents:\n  - kind: support\n    params:\n"
        "      output_tokens: 12\n      turns: 6\n"
        "      think_time_s: {uniform: [0.8, 1.2]}\n"
        "      idle_between_sessions_s: {uniform: [0.8, 1.2]}\n"
    )
    with (
        SimProcess() as sim,
        LiteLLMProxy([(sim.base_url, sim.model)], extra_args=["--keepalive_timeout", "1"]) as proxy,
    ):
        runs = {
            name: start_run(
                profile, proxy.base_url, tmp_path / name, "--model", proxy.model, *flags
            )
            for name, flags in (("kernel", []), ("aiohttp", ["--no-kernel-timestamps"]))
        }
        for name, proc in runs.items():
            summary = finish_run(proc, tmp_path / name, codes=(0,))
            assert summary["requests"]["total"] >= 30, (name, summary["requests"])
            assert summary["state_failures"]["connection_error"] == 0, (name, summary)
            assert summary["requests"]["failed"] == 0, (name, summary["failure_reasons"])
