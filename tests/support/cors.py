"""What a browser does with CORS answers, and plain HTTP requests that show the headers."""

from __future__ import annotations

import urllib.error
import urllib.request


def request(
    url: str, *, method: str = "GET", headers: dict[str, str] | None = None, body: bytes = b""
) -> tuple[int, dict[str, str], bytes]:
    """Status, headers (lower-case names) and body of one request, errors included."""
    prepared = urllib.request.Request(  # noqa: S310 - the local stack
        url, data=body or None, method=method, headers=headers or {}
    )
    try:
        with urllib.request.urlopen(prepared, timeout=10) as response:  # noqa: S310
            answer = response.status, dict(response.headers.items()), response.read()
    except urllib.error.HTTPError as error:
        answer = error.code, dict(error.headers.items()), error.read()
    status, raw_headers, data = answer
    return status, {name.lower(): value for name, value in raw_headers.items()}, data


def _names(value: str | None) -> set[str]:
    return {part.strip().lower() for part in (value or "").split(",") if part.strip()}


def page_may_read(headers: dict[str, str], origin: str) -> bool:
    """Whether a page of ``origin`` may read an answer with these headers (no credentials)."""
    allowed = headers.get("access-control-allow-origin")
    return allowed is not None and allowed.strip() in (origin, "*")


def preflight_allows(
    status: int, headers: dict[str, str], origin: str, method: str, request_headers: list[str]
) -> bool:
    """Whether a browser lets a page of ``origin`` send ``method`` with ``request_headers``
    after this preflight answer (the Fetch standard's CORS-preflight check, no credentials)."""
    if not 200 <= status < 300 or not page_may_read(headers, origin):
        return False
    methods = _names(headers.get("access-control-allow-methods"))
    simple = method.upper() in ("GET", "HEAD", "POST")
    if not simple and method.lower() not in methods and "*" not in methods:
        return False
    allowed = _names(headers.get("access-control-allow-headers"))
    return "*" in allowed or {name.lower() for name in request_headers} <= allowed
