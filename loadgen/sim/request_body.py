"""Reading and validating JSON request bodies; every failure is a vLLM-shaped 400 or 413."""

from __future__ import annotations

from typing import Any, TypeVar

import orjson
from aiohttp import web
from pydantic import BaseModel, ValidationError

from loadgen.sim.api_errors import ApiError
from loadgen.sim.fleet import sim_fleet
from loadgen.sim.requests import describe_validation_error

__all__ = ["json_reply", "parse_body"]

Model = TypeVar("Model", bound=BaseModel)


async def parse_body(request: web.Request, model: type[Model]) -> Model:
    """The request body validated as `model`."""
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge as exc:
        limit = sim_fleet(request).config.max_body_bytes
        raise ApiError(
            413,
            f"Request body is larger than the server's limit of {limit} bytes "
            "(raise it with --max-body-bytes).",
        ) from exc
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, f"Request body is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ApiError(400, "Request body must be a JSON object.")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ApiError(400, describe_validation_error(exc)) from exc


def json_reply(body: Any, status: int = 200) -> web.Response:
    """A JSON reply serialized with orjson."""
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")
