"""Cognito user pools, app clients, groups, users and memberships.

CloudFormation would e-mail a created user a temporary password; offline there is no mail,
so each user gets a generated permanent password (``generate_password``), recorded in the
state for the stack to print.
"""

from __future__ import annotations

import secrets
import string
import uuid
from typing import Any

from devstack.cloudformation.resources.base import (
    URL_SUFFIX,
    Creator,
    DeployState,
    filter_params,
    flag,
    generated_name,
    numbers_deep,
)


def generate_password(min_length: int = 12) -> str:
    """A password that satisfies any Cognito password policy up to ``min_length``."""
    length = max(20, min_length)
    symbols = "!#%+-=_"
    pools = [string.ascii_uppercase, string.ascii_lowercase, string.digits, symbols]
    chars = [secrets.choice(pool) for pool in pools]
    everything = "".join(pools)
    chars += [secrets.choice(everything) for _ in range(length - len(chars))]
    secrets.SystemRandom().shuffle(chars)
    return "".join(chars)


def create_user_pool(state: DeployState, logical_id: str, kind: str, props: dict[str, Any]) -> None:
    client = state.client("cognito-idp")
    params = dict(props)
    params["PoolName"] = params.pop("UserPoolName", None) or generated_name(
        state.stack_name, logical_id
    )
    admin_config = params.get("AdminCreateUserConfig")
    if admin_config:
        admin_config.pop("UnusedAccountValidityDays", None)  # CloudFormation-only, legacy
    numbers_deep(params.get("Policies"))
    pool = client.create_user_pool(**filter_params(client, "CreateUserPool", params))
    pool_id = pool["UserPool"]["Id"]
    provider = f"cognito-idp.{state.region}.{URL_SUFFIX}/{pool_id}"
    state.done(
        logical_id,
        kind,
        pool_id,
        Arn=pool["UserPool"]["Arn"],
        ProviderName=provider,
        ProviderURL=f"https://{provider}",
        UserPoolId=pool_id,
    )
    state.attributes[logical_id]["_MinimumLength"] = int(
        (props.get("Policies") or {}).get("PasswordPolicy", {}).get("MinimumLength", 8)
    )


def create_user_pool_client(
    state: DeployState, logical_id: str, kind: str, props: dict[str, Any]
) -> None:
    client = state.client("cognito-idp")
    params = dict(props)
    params.setdefault("ClientName", generated_name(state.stack_name, logical_id))
    for key in ("GenerateSecret", "AllowedOAuthFlowsUserPoolClient"):
        if key in params:
            params[key] = flag(params[key])
    for key in ("RefreshTokenValidity", "AccessTokenValidity", "IdTokenValidity"):
        if key in params:
            params[key] = int(params[key])
    created = client.create_user_pool_client(
        **filter_params(client, "CreateUserPoolClient", params)
    )["UserPoolClient"]
    state.done(
        logical_id,
        kind,
        created["ClientId"],
        ClientId=created["ClientId"],
        ClientSecret=created.get("ClientSecret", ""),
        Name=created["ClientName"],
        _UserPoolId=props["UserPoolId"],
    )


def create_group(state: DeployState, logical_id: str, kind: str, props: dict[str, Any]) -> None:
    client = state.client("cognito-idp")
    params = dict(props)
    params.setdefault("GroupName", generated_name(state.stack_name, logical_id))
    if "Precedence" in params:
        params["Precedence"] = int(params["Precedence"])
    client.create_group(**filter_params(client, "CreateGroup", params))
    state.done(logical_id, kind, params["GroupName"])


def create_user(state: DeployState, logical_id: str, kind: str, props: dict[str, Any]) -> None:
    client = state.client("cognito-idp")
    params = dict(props)
    username = params.get("Username") or str(uuid.uuid4())
    params["Username"] = username
    if "ForceAliasCreation" in params:
        params["ForceAliasCreation"] = flag(params["ForceAliasCreation"])
    client.admin_create_user(**filter_params(client, "AdminCreateUser", params))
    # CloudFormation would e-mail a temporary password; offline there is no mail, so the
    # user gets a generated permanent password that the stack prints and records.
    pool_logical = state.logical_id_of(props["UserPoolId"])
    min_length = state.attributes.get(pool_logical or "", {}).get("_MinimumLength", 8)
    password = generate_password(min_length)
    client.admin_set_user_password(
        UserPoolId=props["UserPoolId"], Username=username, Password=password, Permanent=True
    )
    state.user_passwords[username] = password
    state.done(logical_id, kind, username)


def add_user_to_group(
    state: DeployState, logical_id: str, kind: str, props: dict[str, Any]
) -> None:
    client = state.client("cognito-idp")
    client.admin_add_user_to_group(
        UserPoolId=props["UserPoolId"], Username=props["Username"], GroupName=props["GroupName"]
    )
    state.group_members.append((props["GroupName"], props["Username"]))
    state.done(logical_id, kind, f"{props['GroupName']}/{props['Username']}")


CREATORS: dict[str, Creator] = {
    "AWS::Cognito::UserPool": create_user_pool,
    "AWS::Cognito::UserPoolClient": create_user_pool_client,
    "AWS::Cognito::UserPoolGroup": create_group,
    "AWS::Cognito::UserPoolUser": create_user,
    "AWS::Cognito::UserPoolUserToGroupAttachment": add_user_to_group,
}
