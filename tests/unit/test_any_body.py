"""POST /certificate answers any body it can receive with a 4xx or a 200, never a 500.

API Gateway validates a body against the model only for the content types the model maps;
any other content type (and any body, once someone adds binary media types) reaches the
function unvalidated. These tests drive the real handler with an API Gateway proxy event:
a table of bodies known to break naive parsers, then a bounded random generator with a fixed
seed. Errors must be the API's `{"msg", "code"}`; bad input must never reach the domain.
"""

from __future__ import annotations

import base64
import json
import random
import re
import string
from collections.abc import Iterator
from typing import Any

import pytest

from provisioning.adapters.composition import get_services
from provisioning.domain.models import ENCRYPTION_SCHEMES, ProvisionRequest, ProvisionResult
from provisioning.handlers import api as handler
from tests.support.lambda_support import FakeLambdaContext, api_event

SEED = 20261129
RANDOM_BODIES = 400
KEY = base64.b64encode(bytes(range(32))).decode()
VALID = {"DSN": "SN-0001", "publicKey": KEY}
CODE = re.compile(r"[A-Z][A-Z0-9_]*")
CONTENT_TYPES = [
    "application/json",
    "text/plain",
    "application/x-www-form-urlencoded",
    "application/octet-stream",
    "multipart/form-data; boundary=x",
    "application/json; charset=latin-1",
    "",
]
PROVISIONING_ENV = {
    "DEVICES_TABLE": "devices",
    "AUDIT_TABLE": "audit",
    "CA_ARN": "arn:aws:acm-pca:us-east-1:123456789012:certificate-authority/test",
    "CA_SIGNING_ALGORITHM": "SHA256WITHECDSA",
    "CA_CERTIFICATE_MODE": "DEFAULT",
    "THING_PREFIX": "device",
    "THING_GROUP": "provisioned-devices",
    "IOT_POLICY_NAME": "device-policy",
    "DEVICE_CERT_VALIDITY_DAYS": "365",
    "DEVICE_KEY_ALGORITHM": "EC_prime256v1",
    "AWS_DEFAULT_REGION": "us-east-1",
}


class Domain:
    """Stands in for the domain call: records what reached it, answers like a success."""

    def __init__(self) -> None:
        self.requests: list[ProvisionRequest] = []

    def __call__(self, request: ProvisionRequest, *_: Any, **__: Any) -> ProvisionResult:
        self.requests.append(request)
        return ProvisionResult(
            certificate_pem="-----BEGIN CERTIFICATE-----\n...",
            encrypted_private_key="gAAAA...",
            server_public_key=KEY,
            thing_name=f"device_{request.dsn}",
            certificate_id="0" * 64,
            not_after="2027-11-29T00:00:00Z",
            iot_endpoint="example-ats.iot.us-east-1.amazonaws.com",
            encryption=request.encryption,
        )


@pytest.fixture(scope="module")
def domain() -> Iterator[Domain]:
    # Module-wide, like one warm container: the clients are built once (and never called).
    with pytest.MonkeyPatch.context() as patch:
        for name, value in PROVISIONING_ENV.items():
            patch.setenv(name, value)
        patch.delenv("AWS_ENDPOINT_URL", raising=False)
        get_services.cache_clear()
        fake = Domain()
        patch.setattr(handler, "provision_device", fake)
        yield fake
    get_services.cache_clear()


def post(body: Any, content_type: str = "application/json", base64_encoded: bool = False) -> Any:
    event = api_event(body, sub="fuzz-user")
    event["headers"]["Content-Type"] = content_type
    event["isBase64Encoded"] = base64_encoded
    return handler.lambda_handler(event, FakeLambdaContext())


def assert_answered(response: dict[str, Any], domain: Domain, calls_before: int) -> None:
    status = response["statusCode"]
    assert status == 200 or 400 <= status < 500, (status, response["body"][:200])
    if status == 200:
        assert len(domain.requests) == calls_before + 1
        request = domain.requests[-1]
        assert re.fullmatch(r"[A-Za-z0-9_-]{1,115}", request.dsn, re.ASCII)
        assert len(request.device_public_key) == 32
        assert request.encryption in ENCRYPTION_SCHEMES
        return
    assert len(domain.requests) == calls_before, "bad input reached the domain"
    error = json.loads(response["body"])
    assert set(error) == {"msg", "code"}
    assert isinstance(error["msg"], str) and error["msg"]
    assert CODE.fullmatch(error["code"])


def _b64(text: str) -> str:
    return base64.b64encode(text.encode("utf-8", "surrogatepass")).decode()


NASTY_BODIES: list[tuple[str, Any, bool]] = [
    # (name, body as API Gateway hands it over, isBase64Encoded)
    ("no body", None, False),
    ("empty", "", False),
    ("the JSON null", "null", False),
    ("a JSON string", '"DSN"', False),
    ("a JSON number", "1e999", False),
    ("nested 990 deep", "[" * 990 + "]" * 990, False),
    ("nested past the recursion limit", "[" * 2000 + "]" * 2000, False),
    ("objects nested past the recursion limit", '{"a":' * 800 + "1" + "}" * 800, False),
    ("megabytes", "x" * 6_000_000, False),
    ("just too large", json.dumps({**VALID, "DSN": "A" * 4100}), False),
    ("NaN", '{"DSN": NaN, "publicKey": "x"}', False),
    ("Infinity", '{"DSN": "A", "publicKey": -Infinity}', False),
    ("a 4000-digit number", '{"DSN": 1' + "0" * 4000 + "}", False),
    ("a 4091-digit number", "1" + "0" * 4090, False),
    ("duplicate DSN", f'{{"DSN": "A", "DSN": "B", "publicKey": "{KEY}"}}', False),
    ("a DSN of Arabic-Indic digits", json.dumps({**VALID, "DSN": "\u0661\u0662\u0663"}), False),
    ("a DSN of full-width letters", json.dumps({**VALID, "DSN": "\uff21\uff22"}), False),
    ("a DSN with a trailing newline", json.dumps({**VALID, "DSN": "A\n"}), False),
    ("a DSN with NUL", json.dumps({**VALID, "DSN": "A\u0000"}), False),
    ("a lone surrogate", '{"DSN": "\\ud800", "publicKey": "x"}', False),
    ("a lone surrogate as a key", '{"\\udfff": 1}', False),
    ("a byte-order mark", "\ufeff" + json.dumps(VALID), False),
    ("form encoded", "DSN=A&publicKey=x", False),
    ("XML", "<DSN>A</DSN>", False),
    ("encryption null", json.dumps({**VALID, "encryption": None}), False),
    ("encryption a list", json.dumps({**VALID, "encryption": ["fernet-x25519"]}), False),
    ("encryption an object", json.dumps({**VALID, "encryption": {}}), False),
    ("a public key of 31 bytes", json.dumps({**VALID, "publicKey": KEY[:40] + "="}), False),
    (
        "a public key with newlines",
        json.dumps({**VALID, "publicKey": KEY[:20] + "\n" + KEY[20:]}),
        False,
    ),
    ("an unknown field", json.dumps({**VALID, "csr": "x"}), False),
    ("base64, valid", _b64(json.dumps(VALID)), True),
    ("base64, null", _b64("null"), True),
    ("base64, not base64", "%%%not-base64%%%", True),
    ("base64 of Latin-1 bytes", base64.b64encode(b'{"DSN": "\xe9"}').decode(), True),
    ("base64 of random bytes", base64.b64encode(bytes(range(256))).decode(), True),
    ("base64 of an empty body", "", True),
    ("base64 of a huge body", "QUFB" * 2_000_000, True),
    ("base64 of deep nesting", _b64("[" * 2000 + "]" * 2000), True),
    ("a JSON object instead of a string", {"DSN": "A"}, False),
]


@pytest.mark.parametrize(
    ("body", "base64_encoded"),
    [pytest.param(body, b64, id=name) for name, body, b64 in NASTY_BODIES],
)
@pytest.mark.filterwarnings("ignore:No application metrics")
def test_a_nasty_body_is_refused_or_served_never_a_500(
    domain: Domain, body: Any, base64_encoded: bool
) -> None:
    for content_type in ("application/json", "text/plain"):
        before = len(domain.requests)
        assert_answered(post(body, content_type, base64_encoded), domain, before)


@pytest.mark.filterwarnings("ignore:No application metrics")
def test_the_valid_body_is_served_however_it_arrives(domain: Domain) -> None:
    # The two ways the same request may reach the function: as text, or base64-encoded.
    before = len(domain.requests)
    for body, base64_encoded in ((json.dumps(VALID), False), (_b64(json.dumps(VALID)), True)):
        response = post(body, "text/plain", base64_encoded)
        assert response["statusCode"] == 200
    assert [r.dsn for r in domain.requests[before:]] == ["SN-0001", "SN-0001"]


# ---------------------------------------------------------------- random bodies


def _random_text(rng: random.Random, size: int) -> str:
    alphabet = rng.choice(
        [
            string.ascii_letters + string.digits + "_-",
            string.printable,
            '{}[]":,' + "0123456789.eE+-nulltruefalse ",
            "".join(chr(c) for c in range(0x20, 0x7F)) + "\u00e9\u0661\uff21\u200b\U0001f600",
        ]
    )
    text = "".join(rng.choice(alphabet) for _ in range(size))
    if rng.random() < 0.1:
        text += rng.choice(["\ud800", "\x00", "\ufeff", "\r\n"])
    return text


def _random_value(rng: random.Random, depth: int) -> Any:
    kinds = ["str", "int", "float", "bool", "null"]
    if depth > 0:
        kinds += ["list", "object"]
    kind = rng.choice(kinds)
    if kind == "str":
        return _random_text(rng, rng.randint(0, 130))
    if kind == "int":
        return rng.choice([0, -1, 2**63, -(2**64), rng.randint(-(10**30), 10**30)])
    if kind == "float":
        return rng.choice([0.5, -0.0, 1e308, 5e-324])
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "null":
        return None
    if kind == "list":
        return [_random_value(rng, depth - 1) for _ in range(rng.randint(0, 4))]
    return _random_object(rng, depth - 1)


def _random_object(rng: random.Random, depth: int) -> dict[str, Any]:
    fields = ["DSN", "publicKey", "encryption", "dsn", "PublicKey", "", "csr"]
    result: dict[str, Any] = {}
    for _ in range(rng.randint(0, 5)):
        name = rng.choice(fields) if rng.random() < 0.8 else _random_text(rng, 8)
        result[name] = _random_value(rng, depth)
    return result


def _mutated_valid_body(rng: random.Random) -> str:
    fields: dict[str, Any] = dict(VALID)
    if rng.random() < 0.5:
        fields["encryption"] = rng.choice([*ENCRYPTION_SCHEMES, "FERNET-X25519", ""])
    if rng.random() < 0.5:
        fields["DSN"] = rng.choice(["A" * rng.randint(100, 130), _random_text(rng, 10)])
    text = json.dumps(fields, ensure_ascii=rng.random() < 0.5)
    for _ in range(rng.randint(0, 3)):  # byte-level damage: drop, duplicate or swap a char
        position = rng.randrange(len(text))
        text = rng.choice(
            [
                text[:position] + text[position + 1 :],
                text[:position] + text[position] + text[position:],
                text[:position] + rng.choice('{}[]":,\\') + text[position + 1 :],
            ]
        )
    return text


def random_bodies(seed: int, count: int) -> Iterator[tuple[Any, str, bool]]:
    rng = random.Random(seed)
    for _ in range(count):
        kind = rng.random()
        if kind < 0.35:
            text = _mutated_valid_body(rng)
        elif kind < 0.7:
            text = json.dumps(_random_object(rng, rng.randint(0, 4)), ensure_ascii=False)
        elif kind < 0.85:
            text = json.dumps(_random_value(rng, 3), ensure_ascii=rng.random() < 0.5)
        elif kind < 0.95:
            text = _random_text(rng, rng.randint(0, 200))
        else:
            opener = rng.choice(["[", '{"a":', '{"DSN":['])
            text = opener * (rng.randint(950, 4000) // len(opener))
        base64_encoded = rng.random() < 0.15
        body: Any = _b64(text) if base64_encoded else text
        if base64_encoded and rng.random() < 0.2:
            body = base64.b64encode(rng.randbytes(rng.randint(0, 64))).decode()
        yield body, rng.choice(CONTENT_TYPES), base64_encoded


@pytest.mark.filterwarnings("ignore:No application metrics")
def test_random_bodies_are_refused_or_served_never_a_500(domain: Domain) -> None:
    served = 0
    for body, content_type, base64_encoded in random_bodies(SEED, RANDOM_BODIES):
        before = len(domain.requests)
        assert_answered(post(body, content_type, base64_encoded), domain, before)
        served += len(domain.requests) - before
    # The generator must reach both outcomes, or it tests only one side.
    assert 0 < served < RANDOM_BODIES
