"""App users of the offline stack: add, list, sign in (real Cognito calls against moto)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from devstack.cloudformation.deployer import generate_password
from devstack.errors import DevstackError

GROUPS = ("Members", "Administrators")


@dataclass(frozen=True)
class Tokens:
    id_token: str
    access_token: str
    refresh_token: str | None


def _error(exc: ClientError) -> str:
    error = exc.response.get("Error", {})
    return f"{error.get('Code')}: {error.get('Message')}"


def add_user(
    cognito: Any,
    user_pool_id: str,
    username: str,
    *,
    email: str,
    group: str,
    password: str | None = None,
) -> str:
    """Create a confirmed user with a permanent password in ``group``; return the password."""
    if group not in GROUPS:
        raise DevstackError(f"group must be one of {', '.join(GROUPS)}, not {group!r}")
    password = password or generate_password()
    created = False
    try:
        cognito.admin_create_user(
            UserPoolId=user_pool_id,
            Username=username,
            MessageAction="SUPPRESS",  # no mail offline; the password is printed instead
            UserAttributes=[
                {"Name": "email", "Value": email},
                {"Name": "email_verified", "Value": "true"},
            ],
        )
        created = True
        cognito.admin_set_user_password(
            UserPoolId=user_pool_id, Username=username, Password=password, Permanent=True
        )
        cognito.admin_add_user_to_group(UserPoolId=user_pool_id, Username=username, GroupName=group)
    except ClientError as exc:
        if created:  # a bad password or group: nothing half-made stays behind to block a retry
            with contextlib.suppress(ClientError):
                cognito.admin_delete_user(UserPoolId=user_pool_id, Username=username)
        code = exc.response.get("Error", {}).get("Code")
        if code == "UsernameExistsException":
            raise DevstackError(f"user {username!r} already exists") from exc
        raise DevstackError(f"cannot add user {username!r}: {_error(exc)}") from exc
    return password


def list_users(cognito: Any, user_pool_id: str) -> list[dict[str, str]]:
    users: list[dict[str, str]] = []
    for page in cognito.get_paginator("list_users").paginate(UserPoolId=user_pool_id):
        for user in page["Users"]:
            attributes = {a["Name"]: a["Value"] for a in user.get("Attributes", [])}
            groups = cognito.admin_list_groups_for_user(
                UserPoolId=user_pool_id, Username=user["Username"]
            )["Groups"]
            users.append(
                {
                    "username": user["Username"],
                    "email": attributes.get("email", ""),
                    "groups": ",".join(sorted(g["GroupName"] for g in groups)),
                    "status": user.get("UserStatus", ""),
                }
            )
    return users


def login(cognito: Any, client_id: str, username: str, password: str) -> Tokens:
    """USER_PASSWORD_AUTH against the public app client, as the phone app could."""
    try:
        answer = cognito.initiate_auth(
            ClientId=client_id,
            AuthFlow="USER_PASSWORD_AUTH",
            AuthParameters={"USERNAME": username, "PASSWORD": password},
        )
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code")
        if code in ("NotAuthorizedException", "UserNotFoundException"):
            raise DevstackError(f"wrong username or password for {username!r}") from exc
        raise DevstackError(f"sign-in failed: {_error(exc)}") from exc
    if "AuthenticationResult" not in answer:
        challenge = answer.get("ChallengeName", "unknown")
        raise DevstackError(f"sign-in needs the {challenge} challenge, which the CLI cannot do")
    result = answer["AuthenticationResult"]
    return Tokens(result["IdToken"], result["AccessToken"], result.get("RefreshToken"))
