"""The offline stack as its users meet it: HTTP, real Cognito tokens, real handlers."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import boto3
import pytest
from cryptography import x509

from devstack.apigateway.gateway import GatewayServer, LocalApi
from devstack.cloudformation.template import load_yaml
from devstack.stack import RunningStack
from onboarding_ble import credentials, trust
from tests.e2e.conftest import TEMPLATE
from tests.support.offline import (
    device_key,
    forged_token,
    gateway_error,
    new_member,
    post_certificate,
    unique_dsn,
)

pytestmark = pytest.mark.e2e

UNAUTHORIZED = gateway_error("UNAUTHORIZED")


@pytest.fixture
def later_gateway(offline_stack: RunningStack) -> Iterator[GatewayServer]:
    """A second gateway on the same stack whose clock is two hours ahead."""
    api = LocalApi(
        offline_stack.deployment,
        endpoint_url=offline_stack.endpoint_url,
        clock=lambda: time.time() + 7200,
        invoker=offline_stack.invoker,
    )
    server = GatewayServer(api).start()
    try:
        yield server
    finally:
        server.stop()


def _count_certificates(stack: RunningStack) -> int:
    return len(stack.client("iot").list_certificates(pageSize=250)["certificates"])


def test_a_member_provisions_a_device_over_http(offline_stack: RunningStack) -> None:
    # GIVEN a member signed in through the app client and a device with a fresh X25519 key
    member = new_member(offline_stack)
    key, public = device_key()
    dsn = unique_dsn()

    # WHEN the app posts the device's DSN and key with the member's ID token
    status, answer = post_certificate(
        offline_stack.api_url, {"DSN": dsn, "publicKey": public}, member.id_token
    )

    # THEN the device can decrypt its key, the key fits the certificate, and the certificate
    # was issued by the stack's Private CA and is ACTIVE in IoT for the device's thing
    assert status == 200, answer
    ca_pem = offline_stack.client("acm-pca").get_certificate_authority_certificate(
        CertificateAuthorityArn=offline_stack.outputs["CertificateAuthorityArn"]
    )["Certificate"]
    pinned = credentials.load_ca(ca_pem.encode())
    verified = credentials.verify_answer(json.dumps(answer).encode(), key, dsn, pinned)
    certificate = verified.certificate
    thing = answer["thingName"]
    assert thing == f"{offline_stack.outputs['ThingPrefix']}_{dsn}"
    assert certificate.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == thing
    iot = offline_stack.client("iot")
    described = iot.describe_certificate(certificateId=answer["certificateId"])
    assert described["certificateDescription"]["status"] == "ACTIVE"
    principals = iot.list_thing_principals(thingName=thing)["principals"]
    assert principals == [described["certificateDescription"]["certificateArn"]]


def test_no_token_is_401(offline_stack: RunningStack) -> None:
    _, public = device_key()
    status, answer = post_certificate(
        offline_stack.api_url, {"DSN": unique_dsn(), "publicKey": public}, None
    )
    assert (status, answer) == (401, UNAUTHORIZED)


def test_gateway_observers_see_each_answer_as_the_client_got_it(
    offline_stack: RunningStack,
) -> None:
    # GIVEN an observer on the gateway (what `make demo` uses as its access log)
    seen: list[tuple[str, str, int, bytes]] = []
    offline_stack.gateway.observers.append(
        lambda method, path, response: seen.append((method, path, response.status, response.body))
    )
    try:
        # WHEN a client posts without a token
        _, public = device_key()
        status, answer = post_certificate(
            offline_stack.api_url, {"DSN": unique_dsn(), "publicKey": public}, None
        )
    finally:
        offline_stack.gateway.observers.clear()

    # THEN the observer saw that request and the very answer the client got
    assert len(seen) == 1
    method, path, seen_status, body = seen[0]
    assert (method, path) == ("POST", f"/{offline_stack.gateway.api.api.stage}/certificate")
    assert (seen_status, json.loads(body)) == (status, answer) == (401, UNAUTHORIZED)


@pytest.mark.parametrize("token", ["not-a-jwt", "Bearer ", "a.b.c", "Bearer x.y.z"])
def test_malformed_token_is_401(offline_stack: RunningStack, token: str) -> None:
    _, public = device_key()
    status, answer = post_certificate(
        offline_stack.api_url, {"DSN": unique_dsn(), "publicKey": public}, token
    )
    assert (status, answer) == (401, UNAUTHORIZED)


def test_token_signed_by_another_key_is_401(offline_stack: RunningStack) -> None:
    # GIVEN a real member's claims re-signed with a key moto does not know, same kid
    member = new_member(offline_stack)
    forged = forged_token(member.id_token)
    _, public = device_key()
    body = {"DSN": unique_dsn(), "publicKey": public}

    # THEN the forgery is refused while the genuine token (same claims) is accepted
    assert post_certificate(offline_stack.api_url, body, forged) == (401, UNAUTHORIZED)
    assert post_certificate(offline_stack.api_url, body, f"Bearer {member.id_token}")[0] == 200


def test_expired_token_is_401(offline_stack: RunningStack, later_gateway: GatewayServer) -> None:
    # GIVEN a genuine ID token (signature, issuer, audience and token_use all right)
    member = new_member(offline_stack)
    bad_body = {"DSN": "not valid!", "publicKey": "x"}

    # WHEN it reaches a gateway whose clock is past the token's exp
    status, answer = post_certificate(later_gateway.api_url, bad_body, member.id_token)

    # THEN the authorizer refuses it as expired, while the same request on time gets past the
    # authorizer (and stops at the validator): only the expiry failed
    assert (status, answer) == (401, UNAUTHORIZED)
    assert post_certificate(offline_stack.api_url, bad_body, member.id_token)[0] == 400


def test_access_token_is_401(offline_stack: RunningStack) -> None:
    # No OAuth scopes are configured on the method: API Gateway wants an ID token.
    member = new_member(offline_stack)
    _, public = device_key()
    status, answer = post_certificate(
        offline_stack.api_url, {"DSN": unique_dsn(), "publicKey": public}, member.access_token
    )
    assert (status, answer) == (401, UNAUTHORIZED)


def test_token_for_another_app_client_is_401(offline_stack: RunningStack) -> None:
    # GIVEN a genuine ID token of the pool, issued to an app client the template does not define
    member = new_member(offline_stack)
    cognito = offline_stack.client("cognito-idp")
    other_client = cognito.create_user_pool_client(
        UserPoolId=offline_stack.outputs["UserPoolId"],
        ClientName="not-in-the-template",
        ExplicitAuthFlows=["ALLOW_USER_PASSWORD_AUTH", "ALLOW_REFRESH_TOKEN_AUTH"],
    )["UserPoolClient"]["ClientId"]
    token = cognito.initiate_auth(
        ClientId=other_client,
        AuthFlow="USER_PASSWORD_AUTH",
        AuthParameters={"USERNAME": member.username, "PASSWORD": member.password},
    )["AuthenticationResult"]["IdToken"]
    _, public = device_key()

    # THEN the gateway refuses it: aud must be one of the template's app clients
    status, answer = post_certificate(
        offline_stack.api_url, {"DSN": unique_dsn(), "publicKey": public}, token
    )
    assert (status, answer) == (401, UNAUTHORIZED)


@pytest.mark.parametrize(
    "body",
    [
        {"DSN": "bad dsn with spaces", "publicKey": "A" * 43 + "="},
        {"DSN": "X" * 116, "publicKey": "A" * 43 + "="},
        {"DSN": "GOOD-1", "publicKey": "too-short"},
        {"publicKey": "A" * 43 + "="},
        {"DSN": "GOOD-1"},
        [],
        "just a string",
    ],
)
def test_bad_body_is_400_and_creates_nothing(offline_stack: RunningStack, body: object) -> None:
    # GIVEN a signed-in member and the IoT registry as it is
    member = new_member(offline_stack)
    before = _count_certificates(offline_stack)

    # WHEN the app sends a body the model does not accept
    status, answer = post_certificate(offline_stack.api_url, body, member.id_token)  # type: ignore[arg-type]

    # THEN the validator answers like API Gateway and nothing reached IoT
    assert (status, answer) == (400, gateway_error("BAD_REQUEST_BODY"))
    assert _count_certificates(offline_stack) == before
    if isinstance(body, dict) and isinstance(body.get("DSN"), str):
        things = offline_stack.client("iot").list_things()["things"]
        assert f"device_{body['DSN']}" not in {t["thingName"] for t in things}


def test_unknown_route_is_403_missing_authentication_token(offline_stack: RunningStack) -> None:
    import urllib.error
    import urllib.request

    url = f"{offline_stack.api_url}/nothing-here"
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(url, timeout=10)  # noqa: S310 - http://127.0.0.1
    assert error.value.code == 403
    assert json.loads(error.value.read()) == gateway_error("MISSING_AUTHENTICATION_TOKEN")


def test_the_custom_resource_registered_the_issuing_ca_under_the_root_with_iot(
    offline_stack: RunningStack,
) -> None:
    # The deployment ran the real CA-registration handler: IoT knows the CA that signs devices,
    # the issuing CA, and no other CA of the hierarchy.
    outputs = offline_stack.outputs
    iot, pca = offline_stack.client("iot"), offline_stack.client("acm-pca")
    description = iot.describe_ca_certificate(certificateId=outputs["IotCaCertificateId"])[
        "certificateDescription"
    ]
    issuing = pca.get_certificate_authority_certificate(
        CertificateAuthorityArn=outputs["IssuingCertificateAuthorityArn"]
    )
    root_pem = pca.get_certificate_authority_certificate(
        CertificateAuthorityArn=outputs["CertificateAuthorityArn"]
    )["Certificate"]
    assert description["status"] == "ACTIVE"
    assert description["certificateArn"] == outputs["IotCaCertificateArn"]
    registered = x509.load_pem_x509_certificate(description["certificatePem"].encode())
    assert registered == x509.load_pem_x509_certificate(issuing["Certificate"].encode())
    root = x509.load_pem_x509_certificate(root_pem.encode())
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        iot.describe_ca_certificate(certificateId=trust.certificate_id_of(root))
    # ... a CA that may sign end entities only, signed by the root, which the chain ends at
    constraints = registered.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca and constraints.value.path_length == 0
    usage = registered.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign and usage.crl_sign
    registered.verify_directly_issued_by(root)
    assert x509.load_pem_x509_certificates(issuing["CertificateChain"].encode()) == [root]
    # ... and the root's own certificate is self-signed, a CA with no path length limit
    root.verify_directly_issued_by(root)
    assert root.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length is None


def test_state_file_matches_the_template_outputs(offline_stack: RunningStack) -> None:
    assert offline_stack.state_path is not None
    state = json.loads(offline_stack.state_path.read_text())
    template_outputs = set(load_yaml(TEMPLATE)["Outputs"])

    assert set(state["outputs"]) == template_outputs
    assert state["outputs"]["ApiUrl"] == state["api_url"] == offline_stack.api_url
    assert state["api_url"].startswith("http://127.0.0.1:")
    assert state["endpoint_url"] == offline_stack.endpoint_url
    assert state["region"] == "us-east-1"
    # every output names something that exists in the emulated AWS account
    dynamodb = offline_stack.client("dynamodb")
    dynamodb.describe_table(TableName=state["outputs"]["DevicesTableName"])
    dynamodb.describe_table(TableName=state["outputs"]["AuditTableName"])
    offline_stack.client("iot").get_policy(policyName=state["outputs"]["DevicePolicyName"])
    # and the administrator's credentials in it sign in (USER_PASSWORD_AUTH)
    cognito = boto3.client(
        "cognito-idp", region_name=state["region"], endpoint_url=state["endpoint_url"]
    )
    answer = cognito.initiate_auth(
        ClientId=state["outputs"]["UserPoolClientId"],
        AuthFlow="USER_PASSWORD_AUTH",
        AuthParameters={
            "USERNAME": state["admin"]["username"],
            "PASSWORD": state["admin"]["password"],
        },
    )
    assert answer["AuthenticationResult"]["IdToken"]
