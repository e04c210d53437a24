"""Every shipped profile against llama.cpp's llama-server: no failure the server did not cause."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from real_servers import LlamaServer, write_tiny_gguf
from shipped_profiles import PROFILES, assert_only_server_caused, run_profile

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    model = write_tiny_gguf(tmp_path_factory.mktemp("model") / "tiny.gguf")
    # Four slots of 32K tokens: the shipped profiles' histories fit for a while, then
    # overflow (a failure the server causes, and says so).
    with LlamaServer(model, ctx=4 * 32768, parallel=4) as server:
        yield server


@pytest.mark.parametrize("profile", PROFILES)
def test_shipped_profile_runs_on_llama_server_with_only_failures_the_server_caused(
    llama_server: LlamaServer, profile: str, tmp_path: Path
) -> None:
    run = run_profile(profile, llama_server.base_url, llama_server.model, tmp_path / profile)
    assert_only_server_caused(run)


def test_a_server_without_previous_response_id_is_reported_once_not_failed_per_step(
    llama_server: LlamaServer, tmp_path: Path
) -> None:
    run = run_profile(
        "assistant-memory", llama_server.base_url, llama_server.model, tmp_path / "am"
    )
    assert run.summary["target"]["server_state"] == "unsupported"
    assert "does not support 'previous_response_id'" in run.summary["target"]["server_state_note"]
    assert run.summary["requests"]["failed"] == 0
    assert "keeps no server-side state" in run.stdout
