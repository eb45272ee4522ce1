"""How a request presents a key, the legacy keys of ``EMBEDDING_API_KEYS``, and the bind rule.

With keys configured (issued ones, ``api/auth.py``, or legacy ones) every ``/v1`` route,
``/metrics`` and the jobs page need one, as ``Authorization: Bearer KEY`` (what every
OpenAI SDK sends). Browsers cannot add that header to a page load, so the jobs page's login
form sets the key as an HttpOnly cookie, accepted on GET requests only (a cookie on a POST
would let any site forge requests). With no keys configured, nothing is checked, and
``embedctl serve`` refuses to bind to anything but loopback: an open service is only ever
reachable from the same machine.
"""

from __future__ import annotations

import hmac
import ipaddress

from fastapi import Request

from core.config import Settings, get_settings

COOKIE = "embedding_api_key"


def configured_keys(settings: Settings | None = None) -> list[str]:
    raw = (settings or get_settings()).api_keys
    return [k.strip() for k in raw.split(",") if k.strip()]


def key_is_valid(candidate: str, keys: list[str]) -> bool:
    # Compare against every key, in constant time each: no early exit to time.
    found = False
    for key in keys:
        found |= hmac.compare_digest(candidate.encode(), key.encode())
    return found


def presented_key(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    if request.method in ("GET", "HEAD"):
        return request.cookies.get(COOKIE)
    return None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, settings: Settings | None = None, keys_issued: bool = False) -> None:
    """Refuse to serve beyond loopback without API keys (legacy ones, or ``keys_issued``:
    any key ever issued in the database, ``embedctl keys create``)."""
    if not configured_keys(settings) and not keys_issued and not is_loopback(host):
        raise PermissionError(
            f"refusing to bind to {host}: no API keys configured. Issue one (embedctl "
            "projects create NAME; embedctl keys create --project NAME --name N), set "
            "EMBEDDING_API_KEYS (comma-separated), or bind to 127.0.0.1"
        )
