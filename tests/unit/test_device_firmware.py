"""device.py's firmware configuration: what the relay cannot change (issue 11, items 2 and 4).

The endpoint, the thing prefix, the pinned CA and the minimum scheme come from the command line
or ``firmware.json`` in the state folder, and reach the answer check and the MQTT connection.
"""

from __future__ import annotations

import json
import socket
import threading

import device
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from onboarding_ble import protocol, rules
from onboarding_ble.gatt import ProvisioningSession
from onboarding_ble.protocol import Status
from tests.support.device_answers import answer, issue

DSN = "SN-fw-1"
PINNED = "abc123-ats.iot.eu-west-1.amazonaws.com:8883"
EVIL = "evil-ats.iot.eu-west-1.amazonaws.com"


def deliver(session, payload, connection="phone"):
    session.write_control(protocol.encode_begin(payload), connection)
    for chunk in protocol.split_chunks(payload, 185):
        session.write_data(chunk, connection)
    session.write_control(protocol.encode_commit(), connection)
    return session.status


def answer_with_endpoint(session, ca, endpoint, thing_prefix="device"):
    key = ec.generate_private_key(ec.SECP256R1())
    cert = issue(ca, key, dsn=session.dsn, thing_prefix=thing_prefix)
    body = json.loads(answer(session.public_key, session.dsn, cert, key))
    body["iotEndpoint"] = endpoint
    return json.dumps(body).encode()


def test_an_answer_that_changes_only_the_endpoint_does_not_redirect_the_device(tmp_path, ca):
    # GIVEN a device whose firmware pins its IoT endpoint
    session = ProvisioningSession(DSN, [ca[1]], tmp_path / "state", iot_endpoint=PINNED)

    # WHEN a relay delivers a genuine answer with only iotEndpoint changed (issue 11, attack 2)
    final = deliver(session, answer_with_endpoint(session, ca, EVIL))

    # THEN the device is provisioned and keeps the endpoint it was built with
    assert final.status is Status.PROVISIONED
    assert session.credentials is not None and session.credentials.iot_endpoint == PINNED
    stored = json.loads((tmp_path / "state" / "device.json").read_text())
    assert stored["iotEndpoint"] == PINNED


def test_without_a_configured_endpoint_the_answers_is_not_stored_either(tmp_path, ca):
    session = ProvisioningSession(DSN, [ca[1]], tmp_path / "state")

    assert deliver(session, answer_with_endpoint(session, ca, EVIL)).status is Status.PROVISIONED
    assert EVIL not in (tmp_path / "state" / "device.json").read_text()


def test_the_configured_thing_prefix_is_checked_against_the_certificate(tmp_path, ca):
    # GIVEN a device of the "device" fleet, and a genuine certificate for its DSN in a thing
    # of another prefix (another stack sharing the CA)
    session = ProvisioningSession(DSN, [ca[1]], tmp_path / "state", thing_prefix="device")
    payload = answer_with_endpoint(session, ca, PINNED, thing_prefix="other")

    # THEN the device refuses it, and stores nothing
    assert deliver(session, payload).status is Status.ERR_DSN_MISMATCH
    assert not (tmp_path / "state").exists()


def test_the_configured_minimum_scheme_refuses_an_old_apps_answer(tmp_path, ca):
    # GIVEN a device whose firmware accepts only the stronger scheme, and the answer an old app
    # relays (fernet-x25519, the API's default)
    strict = ProvisioningSession(
        DSN, [ca[1]], tmp_path / "strict", minimum_scheme=rules.HKDF_AES_GCM
    )
    lenient = ProvisioningSession(DSN, [ca[1]], tmp_path / "lenient")

    # THEN only the device whose minimum allows it takes the answer (issue 11, attack 4)
    assert deliver(strict, answer_with_endpoint(strict, ca, PINNED)).status is Status.ERR_FORMAT
    payload = answer_with_endpoint(lenient, ca, PINNED)
    assert deliver(lenient, payload).status is Status.PROVISIONED


def argv(tmp_path, *extra):
    return ["--transport", "none", "--dsn", DSN, "--state-dir", str(tmp_path / "state"), *extra]


def test_the_device_will_not_start_without_a_configured_endpoint(tmp_path, ca, capsys):
    pinned = tmp_path / "ca.pem"
    pinned.write_bytes(ca[1].public_bytes(serialization.Encoding.PEM))

    assert device.main(argv(tmp_path, "--ca", str(pinned))) == 2
    assert "no IoT endpoint" in capsys.readouterr().err


def test_the_firmware_file_in_the_state_folder_configures_the_device(tmp_path):
    # GIVEN the factory's firmware.json, with the pinned CA beside it
    state = tmp_path / "state"
    state.mkdir()
    settings = {
        "ca": "device-ca.pem",
        "iotEndpoint": PINNED,
        "thingPrefix": "fleet",
        "minimumScheme": rules.HKDF_AES_GCM,
    }
    (state / "firmware.json").write_text(json.dumps(settings))

    options = device.options_from(device.build_parser().parse_args(argv(tmp_path)))

    assert options.ca == state / "device-ca.pem"
    assert (options.iot_endpoint, options.thing_prefix) == (PINNED, "fleet")
    assert options.minimum_scheme == rules.HKDF_AES_GCM
    # the command line wins over the file
    flags = argv(tmp_path, "--iot-endpoint", "other:8883", "--minimum-scheme", "fernet-x25519")
    options = device.options_from(device.build_parser().parse_args(flags))
    assert (options.iot_endpoint, options.minimum_scheme) == ("other:8883", "fernet-x25519")


@pytest.mark.parametrize(
    ("settings", "complaint"),
    [
        ({"ca": "c.pem", "iotEndpoint": PINNED, "minimumScheme": "rot13"}, "unknown minimum"),
        ({"ca": "c.pem", "iotEndpoint": PINNED, "thingPrefix": "a_b"}, "ThingPrefix rule"),
        ({"ca": "c.pem", "iotEndpiont": PINNED}, "unknown settings iotEndpiont"),
        ({"iotEndpoint": PINNED}, "no pinned CA"),
    ],
)
def test_a_firmware_file_the_device_cannot_trust_is_refused(tmp_path, capsys, settings, complaint):
    state = tmp_path / "state"
    state.mkdir()
    (state / "firmware.json").write_text(json.dumps(settings))

    assert device.main(argv(tmp_path)) == 2
    assert complaint in capsys.readouterr().err


class Listener:
    """A TCP port that counts connections and closes each at once."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self.sock.close()


def test_stored_credentials_connect_to_the_configured_endpoint_not_the_stored_one(tmp_path, ca):
    # GIVEN a provisioned device whose device.json names another endpoint (a relay's, stored by
    # an older firmware), and a firmware that pins its own
    configured, stored = Listener(), Listener()
    try:
        session = ProvisioningSession(DSN, [ca[1]], tmp_path / "state")
        assert deliver(session, answer_with_endpoint(session, ca, "x")).status is (
            Status.PROVISIONED
        )
        meta_path = tmp_path / "state" / "device.json"
        meta = json.loads(meta_path.read_text())
        meta["iotEndpoint"] = f"127.0.0.1:{stored.port}"
        meta_path.write_text(json.dumps(meta))
        pinned = tmp_path / "ca.pem"
        pinned.write_bytes(ca[1].public_bytes(serialization.Encoding.PEM))

        # WHEN it boots
        code = device.main(
            argv(tmp_path, "--ca", str(pinned), "--iot-endpoint", f"127.0.0.1:{configured.port}")
        )

        # THEN it tries only the configured endpoint (which refuses it: not an MQTT broker)
        assert code == device.EXIT_MQTT
        assert configured.connections >= 1
        assert stored.connections == 0
    finally:
        configured.close()
        stored.close()


def test_a_pinned_ca_that_is_not_a_certificate_is_one_line_not_a_traceback(tmp_path, capsys):
    not_pem = tmp_path / "ca.pem"
    not_pem.write_text("not a certificate\n")

    assert device.main(argv(tmp_path, "--ca", str(not_pem), "--no-mqtt")) == 2
    assert (
        capsys.readouterr().err.strip() == f"error: the pinned CA {not_pem}: not a PEM certificate"
    )
    assert device.main(argv(tmp_path, "--ca", str(tmp_path / "missing.pem"), "--no-mqtt")) == 2
    assert "No such file or directory" in capsys.readouterr().err


def test_no_credentials_and_no_radio_says_so_instead_of_failing_in_bumble(tmp_path, ca, caplog):
    pinned = tmp_path / "ca.pem"
    pinned.write_bytes(ca[1].public_bytes(serialization.Encoding.PEM))

    assert device.main(argv(tmp_path, "--ca", str(pinned), "--no-mqtt")) == 2
    assert "no BLE transport to be provisioned over" in caplog.text
