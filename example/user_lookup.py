"""Who is an owner? The user behind a Cognito ``sub``, or the sub of a user name or email.

The API names owners by their Cognito ``sub`` (``list --owner``, a device's ``owner``); an
administrator asks the user pool who that is, with ListUsers and an exact filter:

    .venv/bin/python example/provisioning_app.py user --state .local/stack.json 1b6d1f9e-...
    .venv/bin/python example/provisioning_app.py user --stack NAME alice
    .venv/bin/python example/provisioning_app.py user --stack NAME alice@example.com

(a sub, a user name, an email).

This is a call to Cognito's administration API, not to the project's API: it needs AWS
credentials allowed ``cognito-idp:ListUsers`` on the pool (offline: the emulator's). The
client is built by the caller; ``find_users`` takes plain values so tests call it directly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

# Cognito subs are UUIDs; a query of that shape is looked up as a sub.
SUB_PATTERN = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
MAX_QUERY = 254  # the longest email address; user names are at most 128 characters
PAGE = 10  # an exact match: one user (a sub, a user name), a few at most (an unverified email)

# What a filter value may hold: no quote or backslash (they would end or escape the filter's
# string), no blanks or control characters (no user name or email has them).
_SAFE = re.compile(r"[^\s\"\\\x00-\x1f\x7f]+")


class QueryError(Exception):
    """The query is not one a filter can carry (a usage error)."""


@dataclass(frozen=True)
class PoolUser:
    username: str
    sub: str
    email: str
    status: str  # Cognito's UserStatus: CONFIRMED, FORCE_CHANGE_PASSWORD, ...
    enabled: bool

    def line(self) -> str:
        state = "enabled" if self.enabled else "disabled"
        return f"{self.username}\tsub={self.sub}\temail={self.email or '-'}\t{self.status}\t{state}"


def filters_for(query: str) -> list[str]:
    """The ListUsers filters to try, in order, for a sub, a user name or an email."""
    if not 1 <= len(query) <= MAX_QUERY or not _SAFE.fullmatch(query):
        raise QueryError(
            "give a sub, a user name or an email (no quotes, backslashes or blanks, "
            f"at most {MAX_QUERY} characters)"
        )
    if SUB_PATTERN.fullmatch(query):
        return [f'sub = "{query}"']
    wanted = [f'username = "{query}"']
    if "@" in query:  # an email is an alias of the user name in this pool (AliasAttributes)
        wanted.append(f'email = "{query}"')
    return wanted


def cognito_client(region: str | None, endpoint_url: str | None = None) -> Any:
    """A Cognito client with a bounded retry (3 attempts) and timeouts. ``endpoint_url`` is
    the offline stack's emulator, which gets its fake credentials, never real ones."""
    import boto3
    from botocore.config import Config

    config = Config(
        retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=5, read_timeout=10
    )
    fake = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
    return boto3.client(
        "cognito-idp",
        region_name=region,
        endpoint_url=endpoint_url,
        config=config,
        **(fake if endpoint_url else {}),
    )


def find_users(cognito: Any, user_pool_id: str, query: str) -> list[PoolUser]:
    """The users matching ``query`` exactly (empty: none). The client's own retry and
    timeouts bound each call; at most one call per filter."""
    for expression in filters_for(query):
        answer = cognito.list_users(UserPoolId=user_pool_id, Filter=expression, Limit=PAGE)
        users = [_user(raw) for raw in answer.get("Users", [])]
        if users:
            return users
    return []


def _user(raw: dict[str, Any]) -> PoolUser:
    attributes = {a["Name"]: a.get("Value", "") for a in raw.get("Attributes", [])}
    return PoolUser(
        username=str(raw.get("Username", "")),
        sub=attributes.get("sub", ""),
        email=attributes.get("email", ""),
        status=str(raw.get("UserStatus", "")),
        enabled=bool(raw.get("Enabled", True)),
    )
