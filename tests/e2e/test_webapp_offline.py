"""The phone app served by the offline stack, and the Cognito it signs in with (moto).

What a browser on the app's page sees: the page's origin recorded in the state file, its
config.json naming the running stack, a CSP that lets it reach exactly the API and Cognito, and
Cognito's InitiateAuth callable cross-origin, refusing a wrong password.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from devstack.stack import RunningStack
from devstack.webapp_server import origin_of
from tests.support.cors import page_may_read, preflight_allows, request
from tests.support.offline import new_member

pytestmark = pytest.mark.e2e


def test_the_app_is_served_with_the_stacks_config(offline_stack: RunningStack) -> None:
    # GIVEN the running stack, WHEN its state file and the app's config.json are read
    assert offline_stack.state_path is not None
    state = json.loads(offline_stack.state_path.read_text(encoding="utf-8"))
    status, headers, body = request(offline_stack.app_url + "config.json")
    # THEN the app is at a 127.0.0.1 origin (a secure context) recorded in the state file
    assert state["app_url"] == offline_stack.app_url
    assert offline_stack.app_url.startswith("http://127.0.0.1:")
    # ... and config.json names this stack's API, pool, client and Cognito endpoint
    assert status == 200 and headers["content-type"] == "application/json"
    assert json.loads(body) == {
        "apiUrl": offline_stack.api_url,
        "region": offline_stack.deployment.region,
        "userPoolId": offline_stack.outputs["UserPoolId"],
        "clientId": offline_stack.outputs["UserPoolClientId"],
        "cognitoEndpoint": offline_stack.endpoint_url,
    }
    # ... and the page may connect to exactly the API's and Cognito's origins
    policy = dict(
        part.partition(" ")[::2] for part in headers["content-security-policy"].split("; ")
    )
    api_origin, cognito_origin = origin_of(offline_stack.api_url), offline_stack.endpoint_url
    assert policy["connect-src"] == f"'self' {api_origin} {cognito_origin}"
    assert policy["script-src"] == "'self'"
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "no-referrer"
    # ... and the template was deployed for that origin
    function = offline_stack.deployment.functions["ProvisioningFunction"]
    assert function.environment["APP_ORIGIN"] == origin_of(offline_stack.app_url)


def _initiate_auth(
    stack: RunningStack, username: str, password: str
) -> tuple[int, dict[str, str], Any]:
    status, headers, body = request(
        stack.endpoint_url + "/",
        method="POST",
        headers={
            "Origin": origin_of(stack.app_url),
            "Content-Type": "application/x-amz-json-1.1",
            "X-Amz-Target": "AWSCognitoIdentityProviderService.InitiateAuth",
        },
        body=json.dumps(
            {
                "AuthFlow": "USER_PASSWORD_AUTH",
                "ClientId": stack.outputs["UserPoolClientId"],
                "AuthParameters": {"USERNAME": username, "PASSWORD": password},
            }
        ).encode(),
    )
    return status, headers, json.loads(body)


def test_the_page_can_sign_in_with_cognito_cross_origin(offline_stack: RunningStack) -> None:
    origin = origin_of(offline_stack.app_url)
    # GIVEN the page's origin, WHEN the browser asks Cognito (moto) whether it may POST
    # InitiateAuth with the headers the app sends
    status, headers, _body = request(
        offline_stack.endpoint_url + "/",
        method="OPTIONS",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type,x-amz-target",
        },
    )
    # THEN the preflight succeeds for that origin, method and those headers
    assert preflight_allows(status, headers, origin, "POST", ["content-type", "x-amz-target"])

    # GIVEN a member, WHEN the page signs in with the right password
    user = new_member(offline_stack)
    status, headers, answer = _initiate_auth(offline_stack, user.username, user.password)
    # THEN it gets an ID token, readable cross-origin
    assert status == 200, answer
    assert answer["AuthenticationResult"]["IdToken"].count(".") == 2
    assert page_may_read(headers, origin)

    # WHEN it signs in with a wrong password THEN Cognito refuses, as in AWS
    status, headers, answer = _initiate_auth(offline_stack, user.username, user.password + "x")
    assert status == 400
    assert answer["__type"].endswith("NotAuthorizedException")
    assert "AuthenticationResult" not in answer
    assert page_may_read(headers, origin)


def test_a_member_signs_in_with_her_verified_email_as_in_aws(offline_stack: RunningStack) -> None:
    # GIVEN a member (the pool's AliasAttributes is email; `devstack user add` verifies it)
    user = new_member(offline_stack)
    # WHEN the page signs in with her email and her password
    status, _headers, answer = _initiate_auth(offline_stack, user.email, user.password)
    # THEN Cognito signs in the same user as with her username
    assert status == 200, answer
    token = answer["AuthenticationResult"]["IdToken"]
    claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    assert claims["cognito:username"] == user.username
    # ... and her email with a wrong password is refused like her username
    status, _headers, answer = _initiate_auth(offline_stack, user.email, user.password + "x")
    assert (status, answer["__type"].split("#")[-1]) == (400, "NotAuthorizedException")


def test_an_unverified_email_is_no_alias(offline_stack: RunningStack) -> None:
    # GIVEN a member whose email is changed and no longer verified
    user = new_member(offline_stack)
    cognito = offline_stack.client("cognito-idp")
    other = f"other-{user.username}@example.com"
    cognito.admin_update_user_attributes(
        UserPoolId=offline_stack.outputs["UserPoolId"],
        Username=user.username,
        UserAttributes=[
            {"Name": "email", "Value": other},
            {"Name": "email_verified", "Value": "false"},
        ],
    )
    # WHEN the page signs in with that email THEN Cognito does not find her by it
    status, _headers, answer = _initiate_auth(offline_stack, other, user.password)
    assert status == 400, answer
    assert "AuthenticationResult" not in answer
    # ... while her username still works
    status, _headers, answer = _initiate_auth(offline_stack, user.username, user.password)
    assert status == 200, answer
