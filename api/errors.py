"""Every error in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``.

Clients written for OpenAI read ``error.message`` and the status code; a 422 with FastAPI's
own ``detail`` list, an HTML 404 or a stack trace would break them (and the last one leaks
internals). So: request validation errors are 400, unknown routes 404, and anything
unexpected a 500 with a generic message, its traceback only in the server log.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)

_TYPES = {401: "authentication_error", 403: "permission_error", 429: "rate_limit_error"}


class APIError(Exception):
    """An error to answer with; ``status`` is the HTTP status code."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        type: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.type = type or _TYPES.get(
            status, "server_error" if status >= 500 else "invalid_request_error"
        )
        self.headers = headers


def not_found(what: str, ident: str, param: str | None = None) -> APIError:
    return APIError(404, f"No {what} with id {ident!r}.", param=param, code="not_found")


def error_body(
    message: str, type: str, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def error_response(exc: APIError) -> JSONResponse:
    return JSONResponse(
        error_body(exc.message, exc.type, exc.param, exc.code),
        status_code=exc.status,
        headers=exc.headers,
    )


async def _api_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, APIError)
    return error_response(exc)


_TYPE_TAGS = {"str", "int", "float", "bool", "list", "dict", "body", "query", "path", "header"}


def _is_field(part: object) -> bool:
    """A field name in an error location, not an index or a union member's type tag."""
    return isinstance(part, str) and part not in _TYPE_TAGS and not any(c in part for c in "[-'")


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        return error_response(
            APIError(400, "The request body is not valid JSON.", code="invalid_json")
        )
    first = errors[0] if errors else {}
    loc = [str(p) for p in first.get("loc", ()) if _is_field(p)]
    problems = "; ".join(
        f"{'.'.join(str(p) for p in e.get('loc', ())[1:]) or 'body'}: {e.get('msg', 'invalid')}"
        for e in errors[:10]
    )
    return error_response(
        APIError(
            400, f"Invalid request: {problems}", param=".".join(loc) or None, code="invalid_value"
        )
    )


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    message = {404: "Unknown route.", 405: "Method not allowed for this route."}.get(
        exc.status_code, str(exc.detail)
    )
    code = {404: "unknown_url", 405: "method_not_allowed"}.get(exc.status_code)
    return error_response(
        APIError(exc.status_code, message, code=code, headers=getattr(exc, "headers", None))
    )


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(
        APIError(500, "The server had an error while processing your request.", code="internal")
    )


def install(app: FastAPI) -> None:
    app.add_exception_handler(APIError, _api_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
