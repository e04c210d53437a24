"""Errors shaped like vLLM's OpenAI-compatible server: {"error": {message, type, param, code}}."""

from __future__ import annotations

from collections.abc import Mapping

import orjson
from aiohttp import web

__all__ = ["ApiError", "error_body", "error_response"]

_TYPES = {
    400: "BadRequestError",
    404: "NotFoundError",
    413: "BadRequestError",
    429: "RateLimitError",
    500: "InternalServerError",
    503: "ServiceUnavailableError",
}


class ApiError(Exception):
    """Raised inside a handler; the error middleware turns it into the JSON error reply."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.headers = dict(headers or {})


def error_body(status: int, message: str, param: str | None = None) -> bytes:
    """The JSON bytes of an error reply."""
    err = {
        "message": message,
        "type": _TYPES.get(status, "APIError"),
        "param": param,
        "code": status,
    }
    return orjson.dumps({"error": err})


def error_response(error: ApiError) -> web.Response:
    """The HTTP reply for `error`."""
    return web.Response(
        status=error.status,
        body=error_body(error.status, error.message, error.param),
        content_type="application/json",
        headers=error.headers,
    )
