"""A device whose certificate has expired goes back to onboarding, without a factory reset
(device.expired_credentials, and device.async_main's choice at boot and after a refusal)."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from typing import Any

import device
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from onboarding_ble import attestation, credentials, events
from onboarding_ble.credentials import Answer, Credentials
from onboarding_ble.gatt import ProvisioningSession
from onboarding_ble.protocol import Status
from tests.support.device_answers import NOW, answer, issue, make_ca, pem_key
from tests.unit.test_device_firmware import deliver

DSN = "SN-recover-1"


def certificate_for(ca: Any, life: dt.timedelta, dsn: str = DSN) -> tuple[Any, Any]:
    """A device certificate of the pinned CA ending ``life`` from now (negative: ended)."""
    key = ec.generate_private_key(ec.SECP256R1())
    days = (dt.datetime.now(dt.UTC) + life - NOW) / dt.timedelta(days=1)
    return issue(ca, key, days=days, dsn=dsn), key


def stored(state: Path, ca: Any, life: dt.timedelta, dsn: str = DSN) -> Credentials:
    """Credentials as the device stored them when it was onboarded."""
    cert, key = certificate_for(ca, life, dsn)
    found = Answer(cert, pem_key(key), f"device_{dsn}", cert.fingerprint(hashes.SHA256()).hex(), "")
    return credentials.store(state, found)


def options_for(tmp_path: Path, ca: Any, **extra: Any) -> device.DeviceOptions:
    pinned = tmp_path / "ca.pem"
    pinned.write_bytes(ca[1].public_bytes(serialization.Encoding.PEM))
    settings: dict[str, Any] = {
        "transport": "tcp-client:127.0.0.1:1",
        "dsn": DSN,
        "state_dir": tmp_path / "state",
        "ca": pinned,
        "iot_endpoint": "127.0.0.1:1",
    }
    return device.DeviceOptions(**(settings | extra))


def test_only_an_expired_certificate_of_this_device_sends_it_back_to_onboarding(tmp_path, ca):
    options = options_for(tmp_path, ca)
    creds = stored(options.state_dir, ca, dt.timedelta(days=1))
    end = dt.datetime.fromisoformat(creds.not_after)
    now = dt.datetime.now(dt.UTC)

    # Valid: the device connects as usual
    assert device.expired_credentials(options, [ca[1]], now) is None
    # Run out: onboard again, as the same thing
    expired = device.expired_credentials(options, [ca[1]], end + dt.timedelta(seconds=1))
    assert expired is not None
    assert (expired.thing_name, expired.certificate_id) == (creds.thing_name, creds.certificate_id)
    # A refusal a minute before the end is taken for expiry (a clock behind the broker's) ...
    minute_before = end - dt.timedelta(minutes=1)
    assert device.expired_credentials(options, [ca[1]], minute_before, refused=True) is not None
    # ... but not a refusal long before it (a revoked device stops, as before)
    hour_before = end - dt.timedelta(hours=1)
    assert device.expired_credentials(options, [ca[1]], hour_before, refused=True) is None
    # Another device's expired credentials, or another CA's, are not a recovery
    other = options_for(tmp_path, ca, dsn="SN-recover-2")
    assert device.expired_credentials(other, [ca[1]], end + dt.timedelta(days=1)) is None
    stranger = make_ca("Another CA")[1]
    assert device.expired_credentials(options, [stranger], end + dt.timedelta(days=1)) is None


class Radio:
    """Stands in for provision_over_ble: the app onboards the device with a fresh certificate
    of ``ca`` for the same DSN, through the device's own ProvisioningSession."""

    def __init__(self, ca: Any) -> None:
        self.ca = ca
        self.sessions: list[ProvisioningSession] = []

    async def __call__(
        self, transport: str, session: ProvisioningSession, address: str | None
    ) -> Credentials:
        self.sessions.append(session)
        cert, key = certificate_for(self.ca, dt.timedelta(days=30))
        final = deliver(session, answer(session.public_key, DSN, cert, key))
        assert final.status is Status.PROVISIONED, final
        assert session.credentials is not None
        return session.credentials


def lines(capsys: pytest.CaptureFixture[str]) -> list[events.Event]:
    return [e for line in capsys.readouterr().out.splitlines() if (e := events.parse(line))]


def test_an_expired_device_advertises_again_keeping_its_state(
    tmp_path, ca, monkeypatch, capsys
) -> None:
    # GIVEN a device with an attestation key, whose stored certificate ended an hour ago
    options = options_for(tmp_path, ca, attestation=True)
    old = stored(options.state_dir, ca, dt.timedelta(hours=-1))
    factory_key = attestation.load_or_create(options.state_dir)
    radio, connected = Radio(ca), []
    monkeypatch.setattr(device, "provision_over_ble", radio)
    monkeypatch.setattr(device, "run_connected", lambda _o, found, *_: connected.append(found))

    # WHEN it boots
    assert asyncio.run(device.async_main(options)) == device.EXIT_OK

    # THEN it says its certificate expired and advertises the onboarding service ...
    said = lines(capsys)
    assert said[0] == events.CredentialsExpired(old.thing_name, old.certificate_id, old.not_after)
    assert len(radio.sessions) == 1
    # ... with the factory attestation key it already had (no factory reset)
    session_key = radio.sessions[0].attestation_key
    assert session_key is not None
    assert session_key.private_numbers() == factory_key.private_numbers()
    # ... and takes the new certificate for the same thing, then connects with it
    ((new,),) = connected
    assert new.thing_name == old.thing_name and new.certificate_id != old.certificate_id
    assert events.Provisioned(new.thing_name, new.certificate_id) in said
    reloaded = credentials.load_valid(options.state_dir, [ca[1]], dsn=DSN)
    assert reloaded is not None and reloaded.certificate_id == new.certificate_id


def test_a_refusal_as_the_certificate_ends_is_treated_as_expiry(
    tmp_path, ca, monkeypatch, capsys
) -> None:
    # GIVEN a device whose certificate ends in two minutes, refused by the broker
    options = options_for(tmp_path, ca)
    old = stored(options.state_dir, ca, dt.timedelta(minutes=2))
    radio, connected = Radio(ca), []

    def broker(_options: Any, found: list[Credentials], *_: Any) -> None:
        connected.append(found[0].certificate_id)
        if found[0].certificate_id == old.certificate_id:
            raise ConnectionError("TLS handshake refused")

    monkeypatch.setattr(device, "provision_over_ble", radio)
    monkeypatch.setattr(device, "run_connected", broker)

    # WHEN it boots
    code = asyncio.run(device.async_main(options))

    # THEN it goes back to onboarding, and connects again with the new certificate
    assert code == device.EXIT_OK
    said = [e.NAME for e in lines(capsys)]
    assert said[:3] == ["CREDENTIALS", "MQTT_FAILED", "CREDENTIALS_EXPIRED"], said
    assert len(radio.sessions) == 1 and len(connected) == 2
    assert connected[0] == old.certificate_id != connected[1]


def test_a_refusal_long_before_the_end_stops_the_device_as_before(
    tmp_path, ca, monkeypatch, capsys
) -> None:
    options = options_for(tmp_path, ca)
    stored(options.state_dir, ca, dt.timedelta(days=30))
    radio = Radio(ca)

    def broker(*_: Any) -> None:
        raise ConnectionError("refused: revoked")

    monkeypatch.setattr(device, "provision_over_ble", radio)
    monkeypatch.setattr(device, "run_connected", broker)

    assert asyncio.run(device.async_main(options)) == device.EXIT_MQTT
    assert radio.sessions == []
    assert "CREDENTIALS_EXPIRED" not in capsys.readouterr().out
