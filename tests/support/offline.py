"""Helpers for tests that go through the offline stack: users, tokens, HTTP calls."""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
import re
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa, x25519

from demo import http_post_json
from devstack.cloudformation.template import load_yaml
from devstack.stack import RunningStack
from devstack.users import add_user, login

TEMPLATE = Path(__file__).resolve().parents[2] / "template.yaml"


@dataclass(frozen=True)
class AppUser:
    username: str
    password: str
    id_token: str
    access_token: str

    @property
    def email(self) -> str:
        """Her verified email (new_member's), which signs in as her username does."""
        return f"{self.username}@example.com"


def new_member(stack: RunningStack, group: str = "Members") -> AppUser:
    """A fresh user in ``group``, signed in through the public app client."""
    cognito = stack.client("cognito-idp")
    username = f"user-{secrets.token_hex(4)}"
    password = add_user(
        cognito,
        stack.outputs["UserPoolId"],
        username,
        email=f"{username}@example.com",
        group=group,
    )
    tokens = login(cognito, stack.outputs["UserPoolClientId"], username, password)
    return AppUser(username, password, tokens.id_token, tokens.access_token)


def unique_dsn(prefix: str = "E2E") -> str:
    return f"{prefix}-{secrets.token_hex(6).upper()}"


def device_key() -> tuple[x25519.X25519PrivateKey, str]:
    key = x25519.X25519PrivateKey.generate()
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return key, base64.b64encode(raw).decode()


def post_certificate(api_url: str, body: dict[str, Any], token: str | None) -> tuple[int, Any]:
    return http_post_json(f"{api_url}/certificate", body, token)


def forged_token(like: str, *, kid: str = "dummy", **changes: Any) -> str:
    """The claims of a real token, re-signed with a key moto never saw (optionally changed)."""
    claims = jwt.decode(like, options={"verify_signature": False})
    claims.update(changes)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": kid})


def now() -> float:
    return time.time()


class RenderedText(str):
    """A template's text with ``$context`` variables: equal to any text it renders to (each
    variable standing for any text), so a test can compare a whole error body with it."""

    def __new__(cls, template: str) -> RenderedText:
        return super().__new__(cls, template)

    def __init__(self, template: str) -> None:
        parts = _CONTEXT_VARIABLE.split(template)
        self.pattern = re.compile(".*".join(re.escape(part) for part in parts), re.DOTALL)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, str) and self.pattern.fullmatch(other) is not None

    def __ne__(self, other: object) -> bool:
        return not self == other

    __hash__ = str.__hash__


_CONTEXT_VARIABLE = re.compile(r"\$context\.[A-Za-z.]+")


def gateway_error(response_type: str) -> dict[str, Any]:
    """The body template.yaml's GatewayResponses give API Gateway's own error of this type
    (a ``$context`` variable in a value matches whatever it renders to)."""
    api = load_yaml(TEMPLATE)["Resources"]["ProvisioningApi"]["Properties"]
    template = api["GatewayResponses"][response_type]["ResponseTemplates"]["application/json"]
    body: dict[str, Any] = json.loads(template)
    return {
        key: RenderedText(value) if isinstance(value, str) and "$context." in value else value
        for key, value in body.items()
    }


def _refs(value: Any, name: str) -> int:
    if isinstance(value, dict):
        return int(value == {"Ref": name}) + sum(_refs(item, name) for item in value.values())
    if isinstance(value, list):
        return sum(_refs(item, name) for item in value)
    return 0


@contextlib.contextmanager
def parameter_updated(stack: RunningStack, name: str, value: str) -> Iterator[RunningStack]:
    """The stack as an update of its parameter ``name`` to ``value`` leaves it, then as before.

    Only for a parameter that template.yaml passes to functions' environments and nowhere
    else: such an update changes those variables, and Lambda starts the functions' next
    invocations in new environments (``reconfigure``). Tests of other modules must not run on
    the stack meanwhile (one test at a time per process, as pytest runs them).
    """
    template = load_yaml(TEMPLATE)
    allowed = template["Parameters"][name].get("AllowedValues")
    assert allowed is None or value in allowed, f"{name}={value} is not one of {allowed}"
    targets = [
        (logical_id, variable)
        for logical_id, resource in template["Resources"].items()
        if resource.get("Type") == "AWS::Serverless::Function"
        for variable, given in resource.get("Properties", {})
        .get("Environment", {})
        .get("Variables", {})
        .items()
        if given == {"Ref": name}
    ]
    assert targets and len(targets) == _refs(template, name), (
        f"{name} is used beyond functions' environments: a stack update would change more"
    )
    functions = stack.deployment.functions
    before = {logical_id: functions[logical_id] for logical_id, _ in targets}
    try:
        for logical_id, variable in targets:
            spec = functions[logical_id]
            functions[logical_id] = dataclasses.replace(
                spec, environment={**spec.environment, variable: value}
            )
            stack.invoker.reconfigure(functions[logical_id])
        yield stack
    finally:
        for logical_id, spec in before.items():
            functions[logical_id] = spec
            stack.invoker.reconfigure(spec)
