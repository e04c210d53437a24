"""Naming the replica that served a request from the response headers a router sets."""

from __future__ import annotations

from loadgen.profile.schema import REPLICA_HEADERS
from loadgen.protocol.send import replica_name

BASE, MODEL_ID = "x-litellm-model-api-base", "x-litellm-model-id"


def test_the_first_header_present_names_the_replica() -> None:
    headers = {MODEL_ID: "id-first", BASE: "http://a-first/v1"}
    assert replica_name(headers, REPLICA_HEADERS) == "http://a-first/v1"


def test_no_replica_header_names_none() -> None:
    assert replica_name({"content-type": "text/event-stream"}, REPLICA_HEADERS) is None


def test_an_error_naming_the_deployment_by_its_id_only_keeps_the_name_a_reply_gave_it() -> None:
    # LiteLLM: a reply carries the API base and the id, an error only the id.
    assert replica_name({BASE: "http://b/v1", MODEL_ID: "id-b"}, REPLICA_HEADERS) == "http://b/v1"
    assert replica_name({MODEL_ID: "id-b"}, REPLICA_HEADERS) == "http://b/v1"


def test_an_id_never_seen_beside_a_better_name_is_its_own_name() -> None:
    assert replica_name({MODEL_ID: "id-unpaired"}, REPLICA_HEADERS) == "id-unpaired"
