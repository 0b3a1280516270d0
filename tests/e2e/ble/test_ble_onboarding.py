"""A device onboarded over (virtual) BLE, then talking MQTT with mutual TLS, as a user sees it."""

from __future__ import annotations

import asyncio
import base64
import json
import stat
import uuid
from pathlib import Path

import provisioning_app as app
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from onboarding_ble import credentials, events
from onboarding_ble.protocol import Status

from .procs import aws, messages, run_app, said, start_device, start_radio

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]


def new_dsn() -> str:
    return f"ble-{uuid.uuid4().hex[:10]}"


def assert_provisioned(state_dir: Path, pinned_ca: Path) -> x509.Certificate:
    assert stat.S_IMODE(state_dir.stat().st_mode) == 0o700
    for name in ("certificate.pem", "chain.pem", "private_key.pem", "device.json"):
        assert stat.S_IMODE((state_dir / name).stat().st_mode) == 0o600
    cert = x509.load_pem_x509_certificate((state_dir / "certificate.pem").read_bytes())
    key = serialization.load_pem_private_key((state_dir / "private_key.pem").read_bytes(), None)
    root = x509.load_pem_x509_certificate(pinned_ca.read_bytes())
    # signed by the issuing CA the device stored beside it, which the pinned root signed
    (issuing,) = x509.load_pem_x509_certificates((state_dir / "chain.pem").read_bytes())
    cert.verify_directly_issued_by(issuing)
    issuing.verify_directly_issued_by(root)
    assert credentials.public_keys_match(cert, key)
    return cert


def nothing_stored(state_dir: Path) -> bool:
    return not any(state_dir.iterdir()) if state_dir.exists() else True


def test_device_is_provisioned_over_ble_and_says_hello_over_mqtt(
    stack, broker, pinned_ca, procs, tmp_path
):
    # GIVEN a factory-fresh device advertising on the virtual radio
    dsn = new_dsn()
    device_radio, app_radio = start_radio(procs)
    state_dir = tmp_path / dsn
    device = start_device(procs, device_radio, dsn, state_dir, pinned_ca, broker)
    device.wait_for(events.Advertising)

    # WHEN its owner runs the app
    code, output = run_app(procs, app_radio, stack, "--dsn", dsn)

    # THEN the app reports success, the device stores a certificate from the pinned CA ...
    assert code == 0, output
    assert events.first(said(output), events.Provisioned) is not None, output
    assert device.wait(60) == 0, device.output()
    cert = assert_provisioned(state_dir, pinned_ca)
    meta = json.loads((state_dir / "device.json").read_text())
    thing = meta["thingName"]
    assert thing.endswith(dsn)
    # ... that IoT has ACTIVE and attached to the device's thing ...
    iot = aws(stack, "iot")
    principals = iot.list_thing_principals(thingName=thing)["principals"]
    assert [arn.rsplit("/", 1)[-1] for arn in principals] == [meta["certificateId"]]
    registered = iot.describe_certificate(certificateId=meta["certificateId"])
    assert registered["certificateDescription"]["status"] == "ACTIVE"
    stored_in_iot = x509.load_pem_x509_certificate(
        registered["certificateDescription"]["certificatePem"].encode()
    )
    assert stored_in_iot == cert  # the very certificate the device stored
    # ... and the broker delivered the device's hello, sent as the thing.
    hellos = [m for m in messages(broker) if m["topic"] == f"things/{thing}/hello"]
    assert len(hellos) == 1 and hellos[0]["client_id"] == thing
    assert json.loads(hellos[0]["payload"])["dsn"] == dsn
    # The private key never appears in what the device or app print.
    key_line = (state_dir / "private_key.pem").read_text().splitlines()[1]
    assert key_line not in device.output() and key_line not in output

    # WHEN the device restarts with its stored credentials (no radio needed)
    again = start_device(procs, "none", dsn, state_dir, pinned_ca, broker)

    # THEN it skips provisioning and connects straight away
    assert again.wait(60) == 0, again.output()
    assert events.first(again.events(), events.HasCredentials) is not None, again.output()
    assert events.first(again.events(), events.Advertising) is None
    assert len([m for m in messages(broker) if m["topic"] == f"things/{thing}/hello"]) == 2


def test_device_of_another_user_is_refused_and_stays_unprovisioned(
    stack, pinned_ca, procs, tmp_path
):
    # GIVEN a device the administrator already provisioned
    dsn = new_dsn()
    device_radio, app_radio = start_radio(procs)
    first = start_device(procs, device_radio, dsn, tmp_path / "first", pinned_ca, None)
    first.wait_for(events.Advertising)
    code, output = run_app(procs, app_radio, stack, "--dsn", dsn)
    assert code == 0, output
    assert first.wait(60) == 0

    # AND a member who does not own it, next to a (reset) device with that DSN
    username, password = create_member(stack)
    state_dir = tmp_path / "second"
    second = start_device(procs, device_radio, dsn, state_dir, pinned_ca, None)
    second.wait_for(events.Advertising)

    # WHEN the member tries to provision it
    code, output = run_app(
        procs, app_radio, stack, "--dsn", dsn, "--username", username, "--password", password
    )

    # THEN the app shows the API's refusal, the device says why, and stores nothing
    assert code == app.EXIT_API, output
    refused = events.first(said(output), events.ApiRefused)
    assert refused is not None and refused.status in (403, 409), output
    told = events.first(said(output), events.StatusChanged)
    assert told is not None and told.status == "ERR_APP", output
    second.wait_for(events.StatusChanged, where=lambda e: e.status == "ERR_APP")
    assert second.popen.poll() is None  # still waiting to be provisioned
    assert nothing_stored(state_dir)


def create_member(stack) -> tuple[str, str]:
    idp = aws(stack, "cognito-idp")
    pool = stack["outputs"]["UserPoolId"]
    username, password = f"member-{uuid.uuid4().hex[:8]}", "Member-Passw0rd!"
    idp.admin_create_user(UserPoolId=pool, Username=username, MessageAction="SUPPRESS")
    idp.admin_set_user_password(
        UserPoolId=pool, Username=username, Password=password, Permanent=True
    )
    idp.admin_add_user_to_group(UserPoolId=pool, Username=username, GroupName="Members")
    return username, password


def test_transfer_cut_mid_way_is_resent_after_reconnecting(stack, pinned_ca, procs, tmp_path):
    # GIVEN a device, and a link that drops after the first chunk
    dsn = new_dsn()
    device_radio, app_radio = start_radio(procs)
    state_dir = tmp_path / dsn
    device = start_device(procs, device_radio, dsn, state_dir, pinned_ca, None)
    advertising = device.wait_for(events.Advertising)

    # WHEN the app provisions it
    code, output = run_app(
        procs,
        app_radio,
        stack,
        "--dsn",
        dsn,
        "--drop-after-chunks",
        "1",
        "--address",
        advertising.bare_address,
    )

    # THEN the app reconnects, resends, and the device ends up provisioned
    assert code == 0, output
    app_said = said(output)
    assert [e.attempt for e in app_said if isinstance(e, events.Retry)] == [1], output
    answered = [e for e in app_said if isinstance(e, events.ApiAnswered)]
    assert len(answered) == 1, output  # the answer is reused, not re-issued
    assert device.wait(60) == 0, device.output()
    # the cut reset the session
    assert events.StatusChanged("IDLE") in device.events(), device.output()
    assert_provisioned(state_dir, pinned_ca)


def test_two_devices_with_the_same_dsn_are_not_guessed_between(stack, pinned_ca, procs, tmp_path):
    # GIVEN two devices advertising the same DSN
    dsn = new_dsn()
    radio_a, radio_b, app_radio = start_radio(procs, 3)
    a = start_device(procs, radio_a, dsn, tmp_path / "a", pinned_ca, None)
    b = start_device(procs, radio_b, dsn, tmp_path / "b", pinned_ca, None)
    address_a = a.wait_for(events.Advertising).bare_address
    b.wait_for(events.Advertising)

    # WHEN the app looks for that DSN
    code, output = run_app(procs, app_radio, stack, "--dsn", dsn)

    # THEN it refuses to pick one, and neither is provisioned
    assert code == app.EXIT_NO_DEVICE, output
    ambiguous = events.first(said(output), events.Ambiguous)
    assert ambiguous is not None and ambiguous.count == 2, output
    assert nothing_stored(tmp_path / "a") and nothing_stored(tmp_path / "b")

    # WHEN the user picks one by address, THEN only that one is provisioned
    code, output = run_app(procs, app_radio, stack, "--dsn", dsn, "--address", address_a)
    assert code == 0, output
    assert a.wait(60) == 0
    assert_provisioned(tmp_path / "a", pinned_ca)
    assert nothing_stored(tmp_path / "b") and b.popen.poll() is None


def relay(transport: str, address: str, payload: bytes) -> Status:
    """Play a malicious app: deliver `payload` as if it came from the API."""

    async def go() -> Status:
        hci, device = await app.open_device(transport)
        try:
            options = app.AppOptions(transport, retries=0, retry_delay=0.1, status_timeout=10.0)
            report = await app.provision(
                device, address, options, "http://127.0.0.1:9", lambda: "", payload
            )
            return report.status
        finally:
            await hci.close()

    return asyncio.run(go())


def tampered(stack, device_public: bytes, dsn: str, how: str) -> bytes:
    """A real API answer, then altered the way an attacker in the middle might."""
    from tests.support.device_answers import answer, issue, make_ca

    if how == "other-ca":
        key = ec.generate_private_key(ec.SECP256R1())
        return answer(device_public, dsn, issue(make_ca("Stand-in Device CA"), key), key)
    # a certificate from the real CA, with a private key that is not its own
    backend = app.backend_from_state(stack["path"])
    token = app.login(backend, backend.default_username, backend.default_password)
    real = app.request_certificate(backend.api_url, token, dsn, device_public)
    assert real.ok, real.body
    cert = x509.load_pem_x509_certificate(real.body["certificatePem"].encode())
    other = ec.generate_private_key(ec.SECP256R1())
    return answer(device_public, dsn, cert, other, real.body["certificateChainPem"])


@pytest.mark.parametrize(
    ("how", "status"),
    [("other-ca", Status.ERR_UNTRUSTED_CA), ("wrong-key", Status.ERR_KEY_MISMATCH)],
)
def test_tampered_answer_is_rejected_and_nothing_stored(
    stack, pinned_ca, procs, tmp_path, how, status
):
    # GIVEN a device waiting to be provisioned
    dsn = new_dsn()
    device_radio, app_radio = start_radio(procs)
    state_dir = tmp_path / dsn
    device = start_device(procs, device_radio, dsn, state_dir, pinned_ca, None)
    address = device.wait_for(events.Advertising).bare_address
    public = read_public_key(app_radio, address)

    # WHEN it receives a tampered answer
    result = relay(app_radio, address, tampered(stack, public, dsn, how))

    # THEN it reports the precise error, stores nothing, and keeps waiting
    assert result is status
    device.wait_for(events.StatusChanged, where=lambda e: e.status == status.name)
    assert nothing_stored(state_dir)
    assert device.popen.poll() is None


def read_public_key(transport: str, address: str) -> bytes:
    async def go() -> bytes:
        hci, device = await app.open_device(transport)
        try:
            link = await app.connect(device, address)
            info = await link.device_info()
            await link.close()
            return info.public_key
        finally:
            await hci.close()

    return asyncio.run(go())


def test_broker_admits_only_active_certificates_of_the_right_thing(
    stack, broker, pinned_ca, procs, tmp_path
):
    # GIVEN a provisioned device
    dsn = new_dsn()
    device_radio, app_radio = start_radio(procs)
    state_dir = tmp_path / dsn
    device = start_device(procs, device_radio, dsn, state_dir, pinned_ca, None)
    device.wait_for(events.Advertising)
    code, output = run_app(procs, app_radio, stack, "--dsn", dsn)
    assert code == 0, output
    assert device.wait(60) == 0
    creds = credentials.load_valid(state_dir, credentials.load_ca(pinned_ca.read_bytes()))
    assert creds is not None
    endpoint = f"{broker['host']}:{broker['port']}"
    broker_ca = Path(broker["ca"])

    import device as device_module

    # WHEN it connects with a client id that is not its thing, THEN it is refused
    with pytest.raises(Exception):  # noqa: B017 - awscrt raises its own error types
        device_module.publish_hello(creds, endpoint, broker_ca, dsn, client_id="device_other")

    # WHEN its certificate is INACTIVE, then REVOKED, THEN it is refused
    iot = aws(stack, "iot")
    arn = next(p for p in iot.list_thing_principals(thingName=creds.thing_name)["principals"])
    cert_id = arn.rsplit("/", 1)[-1]
    for status in ("INACTIVE", "REVOKED"):
        iot.update_certificate(certificateId=cert_id, newStatus=status)
        again = start_device(procs, "none", dsn, state_dir, pinned_ca, broker)
        assert again.wait(60) == 4, again.output()
        assert events.first(again.events(), events.MqttFailed) is not None, again.output()
    # ... and nothing from this thing ever reached a subscriber.
    assert not [m for m in messages(broker) if m["client_id"] in (creds.thing_name, "device_other")]
    refusals = broker["log"].output
    assert "REFUSE client=device_other" in refusals
    assert "is INACTIVE" in refusals and "is REVOKED" in refusals


def attackers_answer_for(stack, victim_public: bytes, victim_dsn: str, scheme: str) -> dict:
    """Issue 11, attack 1, through the real stack: a member provisions the fake DSN
    ``x_<victim>`` with a key pair of their own, opens the answer, and seals its private key to
    the victim's public key under an ephemeral key of their own (the API's own sealing code)."""
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    from provisioning.domain.crypto import seal_private_key

    username, password = create_member(stack)
    backend = app.backend_from_state(stack["path"])
    token = app.login(backend, username, password)
    attacker = X25519PrivateKey.generate()
    raw = serialization.Encoding.Raw, serialization.PublicFormat.Raw
    fake_dsn = f"x_{victim_dsn}"
    issued = app.request_certificate(
        backend.api_url, token, fake_dsn, attacker.public_key().public_bytes(*raw), scheme
    )
    assert issued.ok, issued.body  # the API has no reason to refuse: the DSN is new
    body = issued.body
    key_pem = credentials.decrypt_private_key(
        scheme,
        attacker,
        base64.b64decode(body["publicKey"]),
        body["encryptedPrivateKey"].encode(),
        fake_dsn,
    )
    key = serialization.load_pem_private_key(key_pem, None)
    resealed = seal_private_key(key, victim_public, scheme, victim_dsn)  # type: ignore[arg-type]
    body["encryptedPrivateKey"] = resealed.encrypted_private_key
    body["publicKey"] = base64.b64encode(resealed.server_public_key).decode()
    return body


def advertised(transport: str, dsn: str) -> bool:
    """Whether a scan finds a device advertising the onboarding service with this DSN."""

    async def go() -> bool:
        hci, device = await app.open_device(transport)
        try:
            return bool(await app.scan(device, dsn, 2.0))
        finally:
            await hci.close()

    return asyncio.run(go())


@pytest.mark.parametrize(
    ("scheme", "claim"),
    [("fernet-x25519", True), ("x25519-hkdf-sha256-aes256gcm", False)],
    ids=["fernet, thingName claims the victim", "hkdf-gcm, no thingName"],
)
def test_a_genuine_certificate_for_another_dsn_is_refused_by_the_victim(
    stack, pinned_ca, procs, tmp_path, scheme, claim
):
    # GIVEN a victim device waiting to be provisioned, whose firmware pins the fleet's prefix
    victim = new_dsn()
    prefix = stack["outputs"]["ThingPrefix"]
    device_radio, app_radio = start_radio(procs)
    state_dir = tmp_path / victim
    device = start_device(
        procs, device_radio, victim, state_dir, pinned_ca, None, "--thing-prefix", prefix
    )
    address = device.wait_for(events.Advertising).bare_address
    victim_public = read_public_key(app_radio, address)

    # AND a member's genuine certificate and key for the fake DSN x_<victim>, the key
    # re-encrypted to the victim, with the JSON's thingName naming the victim's thing or left out
    body = attackers_answer_for(stack, victim_public, victim, scheme)
    if claim:
        body["thingName"] = f"{prefix}_{victim}"
    else:
        body.pop("thingName", None)

    # WHEN the member relays it to the victim
    result = relay(app_radio, address, json.dumps(body).encode())

    # THEN the victim refuses it, stores nothing, and keeps advertising for its owner
    assert result is Status.ERR_DSN_MISMATCH
    device.wait_for(events.StatusChanged, where=lambda e: e.status == "ERR_DSN_MISMATCH")
    assert nothing_stored(state_dir)
    assert device.popen.poll() is None
    assert advertised(app_radio, victim)


def test_an_answer_that_changes_only_the_endpoint_does_not_redirect_the_device(
    stack, broker, pinned_ca, procs, tmp_path
):
    # GIVEN a device whose firmware pins the stack's broker as its IoT endpoint
    dsn = new_dsn()
    device_radio, app_radio = start_radio(procs)
    state_dir = tmp_path / dsn
    device = start_device(procs, device_radio, dsn, state_dir, pinned_ca, broker)
    address = device.wait_for(events.Advertising).bare_address
    public = read_public_key(app_radio, address)

    # WHEN a relay delivers the API's genuine answer with only iotEndpoint changed
    # (issue 11, attack 2: the relay's own account, here a port nobody serves)
    backend = app.backend_from_state(stack["path"])
    token = app.login(backend, backend.default_username, backend.default_password)
    real = app.request_certificate(backend.api_url, token, dsn, public)
    assert real.ok, real.body
    body = {**real.body, "iotEndpoint": "127.0.0.1:1"}
    result = relay(app_radio, address, json.dumps(body).encode())

    # THEN the device is provisioned and says hello through its own endpoint
    assert result is Status.PROVISIONED
    assert device.wait(60) == 0, device.output()
    thing = json.loads((state_dir / "device.json").read_text())["thingName"]
    assert [m for m in messages(broker) if m["topic"] == f"things/{thing}/hello"]
    assert "127.0.0.1:1" not in (state_dir / "device.json").read_text()
