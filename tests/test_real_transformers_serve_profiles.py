"""Every shipped profile against `transformers serve` (CPU torch): its streams end without
[DONE], and none of that may be counted as a truncated stream."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from real_servers import TransformersServe, write_tiny_hf_llama
from shipped_profiles import PROFILES, assert_only_server_caused, run_profile

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def transformers_serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TransformersServe]:
    model = write_tiny_hf_llama(tmp_path_factory.mktemp("hf-model"))
    with TransformersServe(model) as server:
        yield server


@pytest.mark.parametrize("profile", PROFILES)
def test_shipped_profile_runs_on_transformers_serve_with_only_failures_the_server_caused(
    transformers_serve: TransformersServe, profile: str, tmp_path: Path
) -> None:
    run = run_profile(
        profile, transformers_serve.base_url, transformers_serve.model, tmp_path / profile
    )
    assert_only_server_caused(run)
    # Its streams end with finish_reason and usage, then a close: complete replies.
    assert run.summary["state_failures"]["stream_truncated"] == 0


def test_a_server_that_ignores_previous_response_id_is_found_out_at_start(
    transformers_serve: TransformersServe, tmp_path: Path
) -> None:
    # transformers serve accepts previous_response_id and answers from the new input alone:
    # chaining on it would silently drop every session's history (context_truncated on
    # every step). The start-up probe sees it once; sessions resend their history instead.
    run = run_profile(
        "assistant-memory", transformers_serve.base_url, transformers_serve.model, tmp_path / "am"
    )
    assert run.summary["target"]["server_state"] == "unsupported"
    assert "accepted but ignored" in run.summary["target"]["server_state_note"]
    assert run.summary["state_failures"]["context_truncated"] == 0
    assert run.summary["requests"]["ok"] > 0
