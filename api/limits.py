"""Request size caps, checked before a body is read into memory: 413 in OpenAI's shape.

The per-input caps (inputs per request, characters per input) are the workers' own
(``EMBEDDING_MAX_TEXTS_PER_REQUEST``, ``EMBEDDING_MAX_CHARS_PER_TEXT``) and are checked in
the request models; this caps the raw bytes: ``EMBEDDING_API_MAX_UPLOAD_BYTES`` for file
uploads, ``EMBEDDING_API_MAX_BODY_BYTES`` for every other body.
"""

from __future__ import annotations

from typing import Any

from api.errors import APIError, error_body
from core.config import get_settings

UPLOAD_PATH = "/v1/files"


def body_cap(path: str) -> int:
    settings = get_settings()
    # A multipart upload carries a little framing around the file itself.
    return (
        settings.api_max_upload_bytes + 64 * 1024
        if path == UPLOAD_PATH
        else settings.api_max_body_bytes
    )


def too_large(cap: int) -> APIError:
    return APIError(
        413, f"Request body larger than the cap of {cap} bytes.", code="request_too_large"
    )


class BodyCapMiddleware:
    """Refuse a declared Content-Length over the cap at once; count streamed bytes too."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cap = body_cap(scope.get("path", ""))
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > cap):
            await _send_413(send, cap)
            return
        seen = [0]

        async def counted() -> dict:
            message = await receive()
            if message["type"] == "http.request":
                seen[0] += len(message.get("body", b""))
                if seen[0] > cap:
                    raise too_large(cap)
            return message

        await self.app(scope, counted, send)


async def _send_413(send: Any, cap: int) -> None:
    import json

    err = too_large(cap)
    body = json.dumps(error_body(err.message, err.type, err.param, err.code)).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", b"application/json"), (b"connection", b"close")],
        }
    )
    await send({"type": "http.response.body", "body": body})
