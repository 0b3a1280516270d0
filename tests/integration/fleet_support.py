"""Calling the fleet routes as API Gateway would, for the fleet tests."""

from __future__ import annotations

import json
from typing import Any

from tests.support.lambda_support import FakeLambdaContext, api_event

ALICE, BOB, CAROL, ADMIN, NOBODY = "sub-alice", "sub-bob", "sub-carol", "sub-admin", "sub-nobody"
GROUPS = {ALICE: "Members", BOB: "Members", CAROL: "Members", ADMIN: "Administrators", NOBODY: ""}

_RESOURCES = {
    ("devices",): "/devices",
    ("devices", "*"): "/devices/{dsn}",
    ("devices", "*", "certificate"): "/devices/{dsn}/certificate",
    ("devices", "*", "transfer"): "/devices/{dsn}/transfer",
    ("devices", "*", "claim"): "/devices/{dsn}/claim",
}


def fleet_event(
    method: str,
    path: str,
    sub: str,
    body: str | None = None,
    query: dict[str, str | list[str]] | None = None,
) -> dict[str, Any]:
    event = api_event(body, sub, GROUPS[sub], method=method, path=path)
    parts = path.strip("/").split("/")
    shape = tuple("*" if i == 1 else p for i, p in enumerate(parts))
    if shape in _RESOURCES:
        event["resource"] = event["requestContext"]["resourcePath"] = _RESOURCES[shape]
        event["pathParameters"] = {"dsn": parts[1]} if len(parts) > 1 else None
    if query:
        multi = {k: v if isinstance(v, list) else [v] for k, v in query.items()}
        event["multiValueQueryStringParameters"] = multi
        event["queryStringParameters"] = {k: v[-1] for k, v in multi.items()}
    return event


def fleet_call(
    method: str,
    path: str,
    sub: str,
    body: dict[str, Any] | str | None = None,
    query: dict[str, str | list[str]] | None = None,
) -> tuple[int, dict[str, Any]]:
    from provisioning.handlers.api import lambda_handler

    raw = json.dumps(body) if isinstance(body, dict) else body
    response = lambda_handler(fleet_event(method, path, sub, raw, query), FakeLambdaContext())
    return response["statusCode"], json.loads(response["body"])
