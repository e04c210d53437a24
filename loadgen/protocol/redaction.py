"""Keeping credentials out of what agentload writes: error bodies may echo the key they got."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

__all__ = ["REDACTED", "redact", "secrets_of"]

REDACTED = "[redacted]"

# Whatever follows a bearer scheme is a credential, ours or not (a gateway may echo its own).
_BEARER = re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=-]{4,}")
# Key shapes vendors use (OpenAI sk-..., Anthropic sk-ant-..., Hugging Face hf_...), so a
# server that echoes a different key than ours (a gateway's upstream key) is masked too.
_KEY_SHAPES = re.compile(r"\b(?:sk-[A-Za-z0-9_-]{8,}|hf_[A-Za-z0-9]{16,})")
# Request headers whose values are credentials.
_SECRET_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "api-key", "x-api-key", "cookie"}
)


def secrets_of(api_key: str | None, headers: Mapping[str, str]) -> tuple[str, ...]:
    """The credential strings a target's configuration carries (key, secret header values)."""
    found = [api_key] if api_key else []
    for name, value in headers.items():
        if name.lower() in _SECRET_HEADERS and value:
            found.append(value)
            scheme, _, token = value.partition(" ")
            if token and scheme.lower() in ("bearer", "basic", "token"):
                found.append(token)
    # Longest first, so a value is masked whole before any part of it.
    return tuple(sorted({s for s in found if len(s) >= 4}, key=len, reverse=True))


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with the given secrets, bearer tokens and API-key-shaped strings masked."""
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    text = _BEARER.sub(rf"\1 {REDACTED}", text)
    return _KEY_SHAPES.sub(REDACTED, text)
