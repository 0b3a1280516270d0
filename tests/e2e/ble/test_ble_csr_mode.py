"""CSR mode end to end over the virtual radio: the device's own key never leaves it."""

from __future__ import annotations

import uuid

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from onboarding_ble import credentials, events

from .procs import messages, run_app, said, start_device, start_radio

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]


def test_a_csr_mode_device_is_provisioned_with_its_own_key_and_says_hello(
    stack, broker, pinned_ca, procs, tmp_path
):
    # GIVEN a device whose firmware selects CSR mode
    device_radio, app_radio = start_radio(procs)
    dsn = f"csr-{uuid.uuid4().hex[:10]}"
    state_dir = tmp_path / "device"
    device = start_device(
        procs, device_radio, dsn, state_dir, pinned_ca, broker, "--key-mode", "csr"
    )
    device.wait_for(events.Advertising)

    # WHEN the owner's app provisions it
    code, output = run_app(procs, app_radio, stack, "--dsn", dsn)

    # THEN the app relayed a CSR-mode answer and the device stored it and said hello over MQTT
    assert code == 0, output
    assert device.wait(60) == 0, device.output()
    assert events.first(said(device.output()), events.HelloPublished) is not None
    creds = credentials.load_valid(state_dir, credentials.load_ca(pinned_ca.read_bytes()), dsn=dsn)
    assert creds is not None
    hello = [m for m in messages(broker) if m["topic"] == f"things/{creds.thing_name}/hello"]
    assert hello and hello[0]["client_id"] == creds.thing_name
    # ... with the key it made itself: the stored key is an EC P-256 key matching the certificate
    key = serialization.load_pem_private_key(creds.key_path.read_bytes(), None)
    cert = x509.load_pem_x509_certificate(creds.cert_path.read_bytes())
    assert key.public_key() == cert.public_key()
    assert key.curve.name == "secp256r1"
    # ... and no key ever travelled: the answer the API gave the app had none
    assert "encryptedPrivateKey" not in output
