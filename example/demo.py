"""``make demo``: one device onboarded end to end through the offline stack.

    .venv/bin/python example/demo.py [--http-only] [--dir .local/demo] [deploy options]

from the repository's root (``make venv`` installs devstack, which it imports). The flow is a
list of steps over a shared ``DemoContext``; each prints its title, a one-line result and its
time. By default (``BLE_STEPS``) the device and the phone app are the example's own processes: a
virtual radio, the offline stack's mTLS MQTT broker standing in for IoT Core, device.py and
provisioning_app.py, started and stopped through ``onboarding_ble.processes`` and followed
through their event lines (``onboarding_ble.events``); what the API answered is read from the
gateway's observers, its access log. ``HTTP_STEPS`` (``--http-only``) plays device and app
in-process over HTTP, with no radio and no MQTT; the device's checks are the example's own
(``onboarding_ble.credentials``).

The demo drives both the offline stack (devstack) and the example; devstack imports nothing of
the example.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import functools
import json
import math
import re
import secrets
import signal
import stat
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import x25519

from devstack.apigateway.gateway import GatewayResponse
from devstack.cli import deploy_options, stack_parameters
from devstack.errors import DevstackError
from devstack.stack import DEFAULT_TEMPLATE, RunningStack, start_stack
from devstack.users import add_user, login
from onboarding_ble import attestation as device_attestation
from onboarding_ble import credentials, events, protocol, rules, trust
from onboarding_ble import processes as ble
from tools import params

Print = Callable[[str], None]
# The demo's device refuses fernet-x25519: the app must read DEVICE_INFO_V2 and ask for the
# stronger scheme, or the device says ERR_FORMAT.
DEMO_MINIMUM_SCHEME = rules.HKDF_AES_GCM


@dataclass
class DemoContext:
    """What the steps share. Steps read what earlier steps stored and add their own."""

    template: Path = DEFAULT_TEMPLATE
    parameters: dict[str, str] = field(default_factory=dict)
    workdir: Path = Path(".local/demo")
    out: Print = print
    stack: RunningStack | None = None
    lambda_logs: Path | None = None  # one <LogicalId>.log per function; None: .local/logs
    values: dict[str, Any] = field(default_factory=dict)
    # What the steps started besides the stack (child processes); undone before the stack stops.
    cleanup: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)

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


def http_json(
    method: str, url: str, body: dict[str, Any] | None, token: str | None
) -> tuple[int, Any]:
    """A JSON request as the phone app makes it; return (status, decoded JSON body)."""
    status, answer, _retry_after = http_exchange(method, url, body, token)
    return status, answer


def http_exchange(
    method: str, url: str, body: dict[str, Any] | None, token: str | None
) -> tuple[int, Any, str | None]:
    """`http_json`, with the answer's Retry-After header (None when it has none)."""
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = token
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(  # noqa: S310 - http://127.0.0.1 of the local gateway
        url, data=data, headers=headers, method=method
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            return response.status, json.loads(response.read() or b"null"), None
    except urllib.error.HTTPError as error:
        raw = error.read()
        retry_after = error.headers.get("Retry-After")
        try:
            return error.code, json.loads(raw or b"null"), retry_after
        except ValueError:
            return error.code, raw.decode(errors="replace"), retry_after


def http_post_json(url: str, body: dict[str, Any], token: str | None) -> tuple[int, Any]:
    return http_json("POST", url, body, token)


def check_device_material(
    private_key_pem: bytes,
    certificate_pem: str,
    ca_certificate_pem: str,
    dsn: str,
    chain_pem: str | None = None,
) -> x509.Certificate:
    """The device's own checks on stored credentials (the example's trust module): a client
    certificate on a path (through the issuing CA in ``chain_pem``) to the pinned root CA,
    naming this DSN, matching the stored key."""
    key = serialization.load_pem_private_key(private_key_pem, password=None)
    try:
        trusted = trust.verify_device_certificate(
            certificate_pem, ca_certificate_pem, dsn, key, chain_pem=chain_pem
        )
    except trust.TrustError as error:
        raise DemoFailure(f"the device would refuse its stored credentials: {error}") from error
    return trusted.certificate


# -- the steps ------------------------------------------------------------------------------


def step_stack_up(ctx: DemoContext) -> str:
    ctx.stack = start_stack(
        template=ctx.template, parameters=ctx.parameters, lambda_log_dir=ctx.lambda_logs
    )
    return f"moto at {ctx.running.endpoint_url}, API at {ctx.running.api_url}"


def step_stack_up_with_state(ctx: DemoContext) -> str:
    """The stack, with a state file the example's processes read (like `devstack up`)."""
    state_path = ctx.workdir / "stack.json"
    ctx.stack = start_stack(
        template=ctx.template,
        parameters=ctx.parameters,
        state_path=state_path,
        lambda_log_dir=ctx.lambda_logs,
    )
    ctx.values.update(state_path=state_path, gateway_calls=_gateway_calls(ctx.stack))
    stack = ctx.running
    mqtt = f", MQTT at {stack.mqtt.host}:{stack.mqtt.port}" if stack.mqtt else ""
    return (
        f"moto at {stack.endpoint_url}, API at {stack.api_url}{mqtt}, state in {_shown(state_path)}"
    )


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


def _id_token(ctx: DemoContext) -> str:
    """A fresh ID token for the demo's owner, signed in as the app does."""
    stack = ctx.running
    tokens = login(
        stack.client("cognito-idp"),
        stack.outputs["UserPoolClientId"],
        ctx.values["username"],
        ctx.values["password"],
    )
    return tokens.id_token


def step_sign_in(ctx: DemoContext) -> str:
    ctx.values["id_token"] = _id_token(ctx)
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
    pinned = credentials.load_ca(_private_ca_pem(ctx.running).encode())
    try:
        verified = credentials.verify_answer(
            json.dumps(ctx.values["answer"]).encode(),
            ctx.values["device_key"],
            ctx.values["dsn"],
            pinned,
        )
    except protocol.ProtocolError as exc:
        raise DemoFailure(f"the device rejects the answer: {exc.status.name} {exc}") from exc
    certificate = verified.certificate
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


HTTP_STEPS: tuple[Step, ...] = (
    Step("start moto, deploy template.yaml, start the API gateway", step_stack_up),
    Step("an owner gets an account (group Members)", step_add_member),
    Step("the phone app signs in with Cognito", step_sign_in),
    Step("the device makes its key pair", step_device_key),
    Step("the app requests a certificate for the device over HTTP", step_provision),
    Step("the device decrypts its key and checks the certificate chain", step_device_checks),
    Step("the certificate is registered and active in AWS IoT", step_registry),
)


# -- the BLE steps: radio, broker, device and app as processes -------------------------------


@dataclass(frozen=True)
class GatewayCall:
    method: str
    path: str
    status: int
    body: bytes


def _gateway_calls(stack: RunningStack) -> list[GatewayCall]:
    """What the local API Gateway answers from now on, as its access log would show."""
    calls: list[GatewayCall] = []

    def observe(method: str, path: str, response: GatewayResponse) -> None:
        calls.append(GatewayCall(method, path, response.status, response.body))

    stack.gateway.observers.append(observe)
    return calls


def _children(ctx: DemoContext) -> ble.Children:
    children: ble.Children = ctx.values["children"]
    return children


def step_radio(ctx: DemoContext) -> str:
    ctx.workdir.mkdir(parents=True, exist_ok=True)
    children = ble.Children(ctx.workdir)
    ctx.values["children"] = children

    def stop_children() -> None:
        if stopped := children.stop_all():
            ctx.out(f"stopped {', '.join(reversed(stopped))} (their process groups)")

    ctx.cleanup.callback(stop_children)
    device_radio, app_radio = ble.start_radio(children)
    ctx.values.update(device_radio=device_radio, app_radio=app_radio)
    return f"two bumble controllers on one link: device {device_radio}, app {app_radio}"


def step_broker(ctx: DemoContext) -> str:
    broker = ble.BrokerInfo.from_state(ctx.running.state())
    ctx.values["broker"] = broker
    return (
        f"listening on {broker.endpoint} with mutual TLS: client certificate from the Private CA, "
        "ACTIVE in IoT and attached to the thing named by the client id"
    )


def step_device_advertises(ctx: DemoContext) -> str:
    dsn = f"DEMO-{secrets.token_hex(4).upper()}"
    stack = ctx.running
    pinned = ctx.workdir / "device-ca.pem"
    pinned.write_text(_private_ca_pem(stack), encoding="utf-8")
    state_dir = ctx.workdir / "devices" / dsn
    device = ble.start_device(
        _children(ctx),
        ctx.values["device_radio"],
        dsn,
        state_dir,
        pinned,
        ctx.values["broker"],
        thing_prefix=stack.outputs.get("ThingPrefix"),
        minimum_scheme=DEMO_MINIMUM_SCHEME,
        extra=("--attestation",),  # its factory key, made on this first run
    )
    ctx.values.update(dsn=dsn, pinned=pinned, state_dir=state_dir, device=device)
    advertising = device.wait_for(events.Advertising, 30)
    return f"device.py advertises the onboarding service, DSN {dsn}, address {advertising.address}"


def _admin_token(ctx: DemoContext) -> str:
    """An ID token for the stack's administrator (the AdminUser the template creates)."""
    stack = ctx.running
    admin = stack.state()["admin"]
    tokens = login(
        stack.client("cognito-idp"),
        stack.outputs["UserPoolClientId"],
        admin["username"],
        admin["password"],
    )
    return tokens.id_token


def step_allow_device(ctx: DemoContext) -> str:
    """The manufacturer's record of the device: its DSN and factory attestation public key,
    which device.py made on its first run, loaded by an administrator."""
    dsn = ctx.values["dsn"]
    public = (ctx.values["state_dir"] / device_attestation.PUBLIC_FILE).read_text("ascii")
    url = f"{ctx.running.api_url}/allowlist"
    rows = {"devices": [{"DSN": dsn, "attestationPublicKey": public}]}
    status, answer = http_json("POST", url, rows, _admin_token(ctx))
    results = answer.get("results", [{}]) if isinstance(answer, dict) else [{}]
    if status != 200 or results[0].get("result") not in ("ADDED", "UNCHANGED"):
        raise DemoFailure(f"POST {url} answered {status}: {answer}")
    required = ctx.parameters.get("RequireAttestation", "false")
    return (
        f"POST /allowlist as the administrator -> {results[0]['result']} {dsn} with its "
        f"factory attestation key (RequireAttestation={required})"
    )


def step_unlisted_device_refused(ctx: DemoContext) -> str:
    """A second device, genuine-looking but not in the allowlist, on a radio of its own: the
    owner's app relays its attestation and the API refuses it, creating nothing."""
    children = _children(ctx)
    device_radio, app_radio = ble.start_radio(children, name="radio-unlisted")
    dsn = f"DEMO-{secrets.token_hex(4).upper()}"
    stack = ctx.running
    ble.start_device(
        children,
        device_radio,
        dsn,
        ctx.workdir / "devices" / dsn,
        ctx.values["pinned"],
        ctx.values["broker"],
        name="device-unlisted",
        thing_prefix=stack.outputs.get("ThingPrefix"),
        minimum_scheme=DEMO_MINIMUM_SCHEME,
        extra=("--attestation",),
    ).wait_for(events.Advertising, 30)
    app = ble.start_app(
        children,
        app_radio,
        ctx.values["state_path"],
        dsn,
        login=(ctx.values["username"], ctx.values["password"]),
        name="app-unlisted",
    )
    code = app.wait(60)
    refused = app.event(events.ApiRefused)
    if refused is None or (refused.status, refused.code) != (403, "DEVICE_NOT_ALLOWED"):
        raise DemoFailure(f"the unlisted device was not refused (exit {code}); see {app.log_path}")
    things = stack.client("iot").list_things()["things"]
    if any(thing["thingName"].endswith(f"_{dsn}") for thing in things):
        raise DemoFailure(f"a thing was created for the refused device {dsn}")
    return f"device {dsn}: POST /certificate -> 403 {refused.code}; no thing, no certificate"


def step_app_signs_in(ctx: DemoContext) -> str:
    login_pair = (ctx.values["username"], ctx.values["password"])
    app = ble.start_app(
        _children(ctx),
        ctx.values["app_radio"],
        ctx.values["state_path"],
        ctx.values["dsn"],
        login=login_pair,  # in the child's environment, never its command line
    )
    ctx.values["app"] = app
    signed_in = app.wait_for(events.SignedIn, 30)
    return f"provisioning_app.py signed in as {signed_in.user} (Members): got an ID token"


def step_app_finds_device(ctx: DemoContext) -> str:
    app = ctx.values["app"]
    found = app.wait_for(events.Found, 30)
    read = app.wait_for(events.DeviceRead, 30)
    ctx.values["mtu"] = read.mtu
    return (
        f"found {found.address} advertising {found.dsn}..., connected "
        f"(ATT MTU {read.mtu}), read DSN {read.dsn} and its X25519 key"
    )


def step_app_calls_api(ctx: DemoContext) -> str:
    app = ctx.values["app"]
    answered = _wait_for_api(app, 60)
    calls = [
        call
        for call in ctx.values["gateway_calls"]
        if call.method == "POST" and call.path.endswith("/certificate")
    ]
    if not isinstance(answered, events.ApiAnswered) or not calls or calls[-1].status != 200:
        raise DemoFailure(f"the API refused the app: {events.format_line(answered)}")
    ctx.values["answer_size"] = len(json.dumps(json.loads(calls[-1].body)).encode())
    return f"POST /certificate -> {calls[-1].status} with the ID token, thing {answered.thing}"


def _wait_for_api(app: ble.Child, timeout: float) -> events.Event:
    """The app's ApiAnswered or ApiRefused, whichever it prints first."""
    deadline = time.monotonic() + timeout
    while True:
        said = [e for e in app.events() if isinstance(e, events.ApiAnswered | events.ApiRefused)]
        if said:
            return said[0]
        if time.monotonic() > deadline or app.popen.poll() is not None:
            raise DemoFailure(f"the app did not call the API; see {app.log_path}")
        time.sleep(0.05)


def step_app_relays(ctx: DemoContext) -> str:
    app = ctx.values["app"]
    code = app.wait(60)
    status = app.event(events.StatusChanged)
    if code != 0 or status is None or status.status != protocol.Status.PROVISIONED.name:
        said = f"{status.status} {status.detail}" if status else "no device status"
        raise DemoFailure(f"the app exited {code} ({said}); see {app.log_path}")
    chunk = protocol.chunk_size_for_mtu(ctx.values["mtu"])
    chunks = math.ceil(ctx.values["answer_size"] / chunk)
    retries = "" if app.event(events.Retry) is None else " (after a reconnect)"
    return (
        f"relayed the {ctx.values['answer_size']}-byte answer in {chunks} chunks{retries}; "
        "the device reports PROVISIONED"
    )


def step_device_stores(ctx: DemoContext) -> str:
    device = ctx.values["device"]
    provisioned = device.wait_for(events.Provisioned, 30)
    ctx.values.update(thing=provisioned.thing, certificate_id=provisioned.cert)
    state_dir: Path = ctx.values["state_dir"]
    files = sorted(p.name for p in state_dir.iterdir() if not p.name.startswith("."))
    modes = {oct(stat.S_IMODE((state_dir / name).stat().st_mode)) for name in files}
    if modes != {"0o600"} or stat.S_IMODE(state_dir.stat().st_mode) != 0o700:
        raise DemoFailure(f"credentials in {state_dir} are readable by others: {modes}")
    return (
        f"key decrypted ({DEMO_MINIMUM_SCHEME}, the device's minimum), matches the "
        "certificate, a client certificate with a path to the pinned CA that names this DSN; "
        f"stored {', '.join(files)} (0600) in {_shown(state_dir)} (0700)"
    )


def step_device_hello(ctx: DemoContext) -> str:
    device = ctx.values["device"]
    hello = device.wait_for(events.HelloPublished, 30)
    code = device.wait(15)
    thing = ctx.values["thing"]
    admitted = ctx.values["broker"].wait_for(f"ADMIT client={thing}", 5)
    if code != 0:
        raise DemoFailure(f"the device exited {code}; see {device.log_path}")
    return (
        f"broker admitted client id {thing} (= thing name; {_reason(admitted)}); "
        f"device published on {hello.topic}"
    )


def _reason(broker_line: str) -> str:
    """The broker's ADMIT/REFUSE reason, its certificate id shortened for the demo's line."""
    found = re.search(r"client=\S+ (.*)$", broker_line)
    reason = found.group(1) if found else broker_line
    return re.sub(r"certificate ([0-9a-f]{12})[0-9a-f]{52}", r"certificate \1…", reason)


def step_broker_received(ctx: DemoContext) -> str:
    thing = ctx.values["thing"]
    topic = f"things/{thing}/hello"
    hellos = [m for m in ble.received_messages(ctx.values["broker"]) if m["topic"] == topic]
    if len(hellos) != 1 or hellos[0]["client_id"] != thing:
        raise DemoFailure(f"the broker did not receive one hello from {thing}: {hellos}")
    payload = json.loads(hellos[0]["payload"])
    if payload.get("dsn") != ctx.values["dsn"]:
        raise DemoFailure(f"the hello names DSN {payload.get('dsn')}, not {ctx.values['dsn']}")
    return f"hello received on {topic}: {hellos[0]['payload']}"


def _private_ca_pem(stack: RunningStack) -> str:
    pem: str = stack.client("acm-pca").get_certificate_authority_certificate(
        CertificateAuthorityArn=stack.outputs["CertificateAuthorityArn"]
    )["Certificate"]
    return pem.strip() + "\n"


def step_check_stored(ctx: DemoContext) -> str:
    state_dir: Path = ctx.values["state_dir"]
    certificate = check_device_material(
        (state_dir / "private_key.pem").read_bytes(),
        (state_dir / "certificate.pem").read_text(encoding="utf-8"),
        _private_ca_pem(ctx.running),
        ctx.values["dsn"],
        (state_dir / "chain.pem").read_text(encoding="utf-8"),
    )
    return (
        f"the stored certificate ({certificate.subject.rfc4514_string()}) is a client "
        "certificate of the stack's issuing CA, on a path to the pinned root CA, naming this "
        "DSN, and the stored key matches it"
    )


def step_check_registry(ctx: DemoContext) -> str:
    iot = ctx.running.client("iot")
    thing = ctx.values["thing"]
    principals = iot.list_thing_principals(thingName=thing)["principals"]
    certificate_id = ctx.values["certificate_id"]
    attached = [arn for arn in principals if arn.endswith(f"/{certificate_id}")]
    if not attached:
        raise DemoFailure(f"certificate {certificate_id[:12]} is not attached to {thing}")
    status = iot.describe_certificate(certificateId=certificate_id)["certificateDescription"][
        "status"
    ]
    if status != "ACTIVE":
        raise DemoFailure(f"IoT has the certificate as {status}, not ACTIVE")
    return f"IoT has certificate {certificate_id[:12]}... ACTIVE and attached to thing {thing}"


DEMO_RENEW_AFTER = "1"  # seconds after connecting; a real device waits 60-70 % of the lifetime


def step_device_renews(ctx: DemoContext) -> str:
    renewing = ble.start_device(
        _children(ctx),
        "none",  # stored credentials: no BLE
        ctx.values["dsn"],
        ctx.values["state_dir"],
        ctx.values["pinned"],
        ctx.values["broker"],
        name="device-renews",
        thing_prefix=ctx.running.outputs.get("ThingPrefix"),
        minimum_scheme=DEMO_MINIMUM_SCHEME,
        extra=("--renewals", "1", "--renew-after", DEMO_RENEW_AFTER),
    )
    code = renewing.wait(90)
    renewed = renewing.event(events.Renewed)
    if code != 0 or renewed is None:
        failed = renewing.event(events.RenewalFailed)
        why = events.format_line(failed) if failed else f"exit {code}"
        raise DemoFailure(f"the device did not renew ({why}); see {renewing.log_path}")
    old = ctx.values["certificate_id"]
    if renewed.old != old or renewed.cert == old:
        raise DemoFailure(f"the renewal did not replace certificate {old[:12]}: {renewed}")
    iot = ctx.running.client("iot")
    status = iot.describe_certificate(certificateId=renewed.cert)["certificateDescription"][
        "status"
    ]
    if status != "ACTIVE":
        raise DemoFailure(f"IoT has the renewed certificate as {status}, not ACTIVE")
    state_dir: Path = ctx.values["state_dir"]
    stored = trust.certificate_id_of(
        x509.load_pem_x509_certificate((state_dir / "certificate.pem").read_bytes())
    )
    if stored != renewed.cert or (state_dir / "next").exists():
        raise DemoFailure(f"the device did not keep the renewed certificate in {state_dir}")
    ctx.values["certificate_id"] = renewed.cert
    return (
        f"new P-256 key and CSR on things/{ctx.values['thing']}/certificate/renew, the renewal "
        f"function answered: certificate {old[:12]}... -> {renewed.cert[:12]}... (ACTIVE, "
        f"until {renewed.not_after}), checked, stored, reconnected and confirmed"
    )


# How long the revoke step keeps asking while another request holds the device.
REVOKE_RETRY_SECONDS = 30.0


def step_revoke(ctx: DemoContext) -> str:
    stack = ctx.running
    url = f"{stack.api_url}/devices/{ctx.values['dsn']}/certificate"
    # The renewal's confirmation may still hold the device (the cloud retires the old certificate
    # after the device confirms the new one): the API then answers 409 REQUEST_IN_FLIGHT with a
    # Retry-After, and a client waits that long and asks again, as the phone app does.
    waited, deadline = 0.0, time.monotonic() + REVOKE_RETRY_SECONDS
    while True:
        status, answer, retry_after = http_exchange("DELETE", url, None, _id_token(ctx))
        busy = (
            status == 409 and isinstance(answer, dict) and answer.get("code") == "REQUEST_IN_FLIGHT"
        )
        if not busy or time.monotonic() >= deadline:
            break
        pause = min(_seconds(retry_after), max(0.0, deadline - time.monotonic()))
        time.sleep(pause)
        waited += pause
    if status != 200:
        raise DemoFailure(f"DELETE {url} answered {status}: {answer}")
    certificate_id = ctx.values["certificate_id"]
    now = stack.client("iot").describe_certificate(certificateId=certificate_id)[
        "certificateDescription"
    ]["status"]
    if now == "ACTIVE":
        raise DemoFailure("the certificate is still ACTIVE after DELETE")
    after = (
        f" (after {waited:.0f} s of REQUEST_IN_FLIGHT while the renewal finished)" if waited else ""
    )
    return (
        f"DELETE /devices/{ctx.values['dsn']}/certificate -> 200 as the owner{after}; "
        f"IoT now has it {now}"
    )


def _seconds(retry_after: str | None) -> float:
    """A Retry-After in seconds, 1 when it is missing or not a number."""
    try:
        return max(0.5, float(retry_after or "1"))
    except ValueError:
        return 1.0


def step_reconnect_refused(ctx: DemoContext) -> str:
    again = ble.start_device(
        _children(ctx),
        "none",  # stored credentials: no BLE
        ctx.values["dsn"],
        ctx.values["state_dir"],
        ctx.values["pinned"],
        ctx.values["broker"],
        name="device-again",
        thing_prefix=ctx.running.outputs.get("ThingPrefix"),
        minimum_scheme=DEMO_MINIMUM_SCHEME,
    )
    code = again.wait(60)
    thing = ctx.values["thing"]
    if again.event(events.HasCredentials) is None:
        raise DemoFailure(f"the device did not use its stored credentials; see {again.log_path}")
    failed = again.event(events.MqttFailed)
    if code != 4 or failed is None or again.event(events.HelloPublished):
        raise DemoFailure(f"the revoked device was not refused (exit {code}); see {again.log_path}")
    refused = ctx.values["broker"].wait_for(f"REFUSE client={thing}", 5)
    return (
        f"device.py restarted with its stored credentials; broker refused it: {_reason(refused)}; "
        f"device exit {code} ({events.format_line(failed)})"
    )


BLE_STEPS: tuple[Step, ...] = (
    Step(
        "start moto, deploy template.yaml, start the API gateway and the MQTT broker",
        step_stack_up_with_state,
    ),
    Step("an owner gets an account (group Members)", step_add_member),
    Step("start the virtual BLE radio", step_radio),
    Step("the stack's MQTT broker stands in for AWS IoT Core", step_broker),
    Step("the device boots unprovisioned", step_device_advertises),
    Step("the administrator loads the device into the allowlist", step_allow_device),
    Step("the owner's phone app signs in with Cognito", step_app_signs_in),
    Step("the app finds the device over BLE", step_app_finds_device),
    Step("the app requests a certificate for the device", step_app_calls_api),
    Step("the app relays the answer to the device over GATT", step_app_relays),
    Step("the device verifies the answer and stores its credentials", step_device_stores),
    Step("the device connects over MQTT with mutual TLS and says hello", step_device_hello),
    Step("the broker received the hello", step_broker_received),
    Step("check: the stored certificate chains to the pinned root CA", step_check_stored),
    Step("check: AWS IoT has the certificate ACTIVE on the thing", step_check_registry),
    Step("the device renews its certificate over MQTT (due after 1 s here)", step_device_renews),
    Step("the owner revokes the device", step_revoke),
    Step("the revoked device reconnects with its stored credentials", step_reconnect_refused),
    Step("a device not in the allowlist is refused", step_unlisted_device_refused),
)
DEFAULT_STEPS = BLE_STEPS
# What the steps that load the allowlist need to mean anything: attestation on.
ATTESTATION_PARAMETERS = {"RequireAttestation": "true"}
# What the renewal step needs: the device renews a second after it got its certificate, which
# the template's default minimum renewal interval would refuse (RENEWAL_TOO_SOON).
RENEWAL_PARAMETERS = {"RenewalMinIntervalSeconds": "0"}


def run_steps(ctx: DemoContext, steps: Sequence[Step], out: Print = print) -> None:
    """Run ``steps`` in order, printing each; always stop what they started, then the stack."""
    started = time.monotonic()
    number = 0
    try:
        for number, step in enumerate(steps, start=1):
            out(f"[{number}/{len(steps)}] {step.title}")
            began = time.monotonic()
            result = step.run(ctx)
            out(f"      {result} ({time.monotonic() - began:.2f} s)")
    except BaseException as exc:
        reason = "interrupted" if isinstance(exc, KeyboardInterrupt) else f"FAILED: {exc}"
        out(f"      step {number} {reason}")
        raise
    finally:
        try:
            ctx.cleanup.close()
        finally:
            if ctx.stack is not None:
                ctx.stack.stop()
                out("stack stopped")
    out(f"demo finished in {time.monotonic() - started:.1f} s")


def _lambda_logs_for(workdir: Path) -> Path:
    """.local/demo -> .local/demo-lambda/: next to the work directory, not in it."""
    return workdir.with_name(f"{workdir.name}-lambda")


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C, so the children and the stack are stopped either way."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(_signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_demo(
    template: Path = DEFAULT_TEMPLATE,
    parameters: dict[str, str] | None = None,
    out: Print = print,
    steps: Sequence[Step] = DEFAULT_STEPS,
    workdir: Path = Path(".local/demo"),
    lambda_logs: Path | None = None,
) -> None:
    """Run the demo in ``workdir`` (state file, child logs, device state).

    The Lambda functions' own log lines go to ``<lambda_logs>/<LogicalId>.log`` (default
    ``<workdir>-lambda/``), written by their worker processes.
    """
    if out is print:
        out = functools.partial(print, file=sys.stdout, flush=True)
    workdir = workdir.resolve()
    lambda_logs = lambda_logs or _lambda_logs_for(workdir)
    if any(step.run is step_allow_device for step in steps):
        parameters = {**ATTESTATION_PARAMETERS, **(parameters or {})}
    if any(step.run is step_device_renews for step in steps):
        parameters = {**RENEWAL_PARAMETERS, **(parameters or {})}
    ctx = DemoContext(
        template=template,
        parameters=dict(parameters or {}),
        workdir=workdir,
        out=out,
        lambda_logs=lambda_logs,
    )
    with _sigterm_as_interrupt():
        try:
            run_steps(ctx, steps, out)
        except ble.ChildError as exc:  # a process did not do what the step waited for
            raise DemoFailure(str(exc)) from None
        finally:
            out(f"Lambda logs (what CloudWatch would hold): {_shown(lambda_logs)}")
            if steps is not HTTP_STEPS:
                out(f"process logs, device state and stack.json: {_shown(workdir)}")


def _shown(path: Path) -> str:
    """``path`` relative to the current directory when it is under it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=".venv/bin/python example/demo.py",
        description=(
            "Onboard one device end to end offline: start the stack on free ports, then the "
            "virtual BLE radio, the mTLS MQTT broker, the device and the phone app as processes; "
            "provision the device over BLE, see its hello reach the broker, renew and revoke it "
            "and see its reconnect refused; stop everything. `make demo` runs it."
        ),
    )
    deploy_options(parser)
    parser.add_argument(
        "--http-only",
        action="store_true",
        help="play device and app in-process over HTTP: no radio, no MQTT (faster)",
    )
    parser.add_argument(
        "--dir",
        default=".local/demo",
        help="state file, process logs and device state (default %(default)s); "
        "Lambda logs go to DIR-lambda/<LogicalId>.log",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """0 when every step passed; 1 when the product misbehaved; 2 for a usage error."""
    args = build_parser().parse_args(argv)
    steps = HTTP_STEPS if args.http_only else BLE_STEPS
    try:
        run_demo(Path(args.template), stack_parameters(args), steps=steps, workdir=Path(args.dir))
    except DemoFailure as exc:  # the product misbehaved: not a usage error
        print(f"demo: {exc}", file=sys.stderr)
        return 1
    except (DevstackError, params.ConfigError) as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
