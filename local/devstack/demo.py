"""``python -m devstack demo``: one device provisioned end to end through the offline stack.

The flow is a list of steps over a shared ``DemoContext``; each prints its title, result and
time. The phone-app and device steps here talk HTTP directly; the BLE example swaps them for
its device and app processes by building its own step list (``run_steps``).
"""

from __future__ import annotations

import base64
import json
import secrets
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import x25519

from devstack import runtime
from devstack.errors import DevstackError
from devstack.stack import DEFAULT_TEMPLATE, RunningStack, start_stack
from devstack.users import add_user, login

Print = Callable[[str], None]


@dataclass
class DemoContext:
    """What the steps share. Steps read what earlier steps stored and add their own."""

    template: Path = DEFAULT_TEMPLATE
    parameters: dict[str, str] = field(default_factory=dict)
    stack: RunningStack | None = None
    values: dict[str, Any] = field(default_factory=dict)

    @property
    def running(self) -> RunningStack:
        if self.stack is None:
            raise DevstackError("the stack is not up yet")
        return self.stack


@dataclass(frozen=True)
class Step:
    title: str
    run: Callable[[DemoContext], str]  # returns a one-line result to print


class DemoFailure(DevstackError):
    """A step's check failed: the product does not do what it should."""


def http_post_json(url: str, body: dict[str, Any], token: str | None) -> tuple[int, Any]:
    """POST JSON as the phone app does; return (status, decoded JSON body)."""
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = token
    request = urllib.request.Request(  # noqa: S310 - http://127.0.0.1 of the local gateway
        url, data=json.dumps(body).encode(), headers=headers, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        raw = error.read()
        try:
            return error.code, json.loads(raw or b"null")
        except ValueError:
            return error.code, raw.decode(errors="replace")


def decrypt_private_key(
    device_key: x25519.X25519PrivateKey, server_public_b64: str, token: str
) -> bytes:
    """fernet-x25519: Fernet(urlsafe_b64(X25519(device, server ephemeral))) over a PEM key."""
    server_public = x25519.X25519PublicKey.from_public_bytes(base64.b64decode(server_public_b64))
    shared = device_key.exchange(server_public)
    return Fernet(base64.urlsafe_b64encode(shared)).decrypt(token.encode())


def check_device_material(
    private_key_pem: bytes, certificate_pem: str, ca_certificate_pem: str
) -> x509.Certificate:
    """The device's checks: key matches certificate; certificate issued by the pinned CA."""
    key = serialization.load_pem_private_key(private_key_pem, password=None)
    certificate = x509.load_pem_x509_certificate(certificate_pem.encode())
    ca = x509.load_pem_x509_certificate(ca_certificate_pem.encode())
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    encoding = serialization.Encoding.DER
    if key.public_key().public_bytes(encoding, public) != certificate.public_key().public_bytes(
        encoding, public
    ):
        raise DemoFailure("the private key does not match the certificate")
    try:
        certificate.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise DemoFailure(f"the certificate does not chain to the CA: {exc}") from exc
    return certificate


# -- the steps ------------------------------------------------------------------------------


def step_stack_up(ctx: DemoContext) -> str:
    ctx.stack = start_stack(template=ctx.template, parameters=ctx.parameters)
    return f"moto at {ctx.running.endpoint_url}, API at {ctx.running.api_url}"


def step_add_member(ctx: DemoContext) -> str:
    stack = ctx.running
    username = f"demo-{secrets.token_hex(3)}"
    password = add_user(
        stack.client("cognito-idp"),
        stack.outputs["UserPoolId"],
        username,
        email=f"{username}@example.com",
        group="Members",
    )
    ctx.values.update(username=username, password=password)
    return f"user {username} in group Members"


def step_sign_in(ctx: DemoContext) -> str:
    stack = ctx.running
    tokens = login(
        stack.client("cognito-idp"),
        stack.outputs["UserPoolClientId"],
        ctx.values["username"],
        ctx.values["password"],
    )
    ctx.values["id_token"] = tokens.id_token
    return "USER_PASSWORD_AUTH on the public app client: got an ID token"


def step_device_key(ctx: DemoContext) -> str:
    device_key = x25519.X25519PrivateKey.generate()
    public = device_key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    ctx.values.update(
        device_key=device_key,
        dsn=f"DEMO-{secrets.token_hex(4).upper()}",
        device_public=base64.b64encode(public).decode(),
    )
    return f"device {ctx.values['dsn']} made a fresh X25519 key"


def step_provision(ctx: DemoContext) -> str:
    url = f"{ctx.running.api_url}/certificate"
    body = {"DSN": ctx.values["dsn"], "publicKey": ctx.values["device_public"]}
    status, answer = http_post_json(url, body, ctx.values["id_token"])
    if status != 200 or not isinstance(answer, dict):
        raise DemoFailure(f"POST /certificate answered {status}: {answer}")
    ctx.values["answer"] = answer
    return f"POST {url} -> 200, thing {answer.get('thingName', '?')}"


def step_device_checks(ctx: DemoContext) -> str:
    answer = ctx.values["answer"]
    try:
        key_pem = decrypt_private_key(
            ctx.values["device_key"], answer["publicKey"], answer["encryptedPrivateKey"]
        )
    except (InvalidToken, ValueError, KeyError) as exc:
        raise DemoFailure(f"the device cannot decrypt its key: {exc!r}") from exc
    stack = ctx.running
    ca_pem = stack.client("acm-pca").get_certificate_authority_certificate(
        CertificateAuthorityArn=stack.outputs["CertificateAuthorityArn"]
    )["Certificate"]
    certificate = check_device_material(key_pem, answer["certificatePem"], ca_pem)
    return (
        f"key decrypted and matches the certificate ({certificate.subject.rfc4514_string()}), "
        f"issued by the Private CA, valid until {certificate.not_valid_after_utc:%Y-%m-%d}"
    )


def step_registry(ctx: DemoContext) -> str:
    iot = ctx.running.client("iot")
    certificate_id = ctx.values["answer"].get("certificateId")
    if not certificate_id:
        return "no certificateId in the answer; registry not checked"
    status = iot.describe_certificate(certificateId=certificate_id)["certificateDescription"][
        "status"
    ]
    if status != "ACTIVE":
        raise DemoFailure(f"IoT has the certificate as {status}, not ACTIVE")
    return f"AWS IoT (moto) has certificate {certificate_id[:12]}... ACTIVE"


DEFAULT_STEPS: tuple[Step, ...] = (
    Step("start moto, deploy template.yaml, start the API gateway", step_stack_up),
    Step("an owner gets an account (group Members)", step_add_member),
    Step("the phone app signs in with Cognito", step_sign_in),
    Step("the device makes its key pair", step_device_key),
    Step("the app requests a certificate for the device over HTTP", step_provision),
    Step("the device decrypts its key and checks the certificate chain", step_device_checks),
    Step("the certificate is registered and active in AWS IoT", step_registry),
)


def run_steps(ctx: DemoContext, steps: Sequence[Step], out: Print = print) -> None:
    """Run ``steps`` in order, printing each; always stop the stack at the end."""
    started = time.monotonic()
    try:
        for number, step in enumerate(steps, start=1):
            out(f"[{number}/{len(steps)}] {step.title}")
            began = time.monotonic()
            result = step.run(ctx)
            out(f"      {result} ({time.monotonic() - began:.2f} s)")
    finally:
        if ctx.stack is not None:
            ctx.stack.stop()
            out("stack stopped")
    out(f"demo finished in {time.monotonic() - started:.1f} s")


DEFAULT_LAMBDA_LOG = Path(".local/demo-lambda.log")


def run_demo(
    template: Path = DEFAULT_TEMPLATE,
    parameters: dict[str, str] | None = None,
    out: Print = print,
    steps: Sequence[Step] = DEFAULT_STEPS,
    lambda_log: Path | None = DEFAULT_LAMBDA_LOG,
) -> None:
    """Run the demo; the Lambda functions' own log lines go to ``lambda_log`` (None: stdout)."""
    ctx = DemoContext(template=template, parameters=dict(parameters or {}))
    if lambda_log is None:
        run_steps(ctx, steps, out)
        return
    lambda_log.parent.mkdir(parents=True, exist_ok=True)
    with lambda_log.open("w", encoding="utf-8") as log:
        runtime.set_output(log)
        try:
            run_steps(ctx, steps, out)
        finally:
            runtime.set_output(None)
            out(f"Lambda logs (what CloudWatch would hold): {lambda_log}")
