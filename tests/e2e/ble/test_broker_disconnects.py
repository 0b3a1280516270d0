"""Like IoT Core, the broker drops a client whose certificate leaves ACTIVE, and keeps the rest."""

from __future__ import annotations

import contextlib
import json
import threading
import uuid
from pathlib import Path
from typing import Any

import provisioning_app as app
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import x25519

from onboarding_ble import credentials
from onboarding_ble.credentials import Credentials

from .procs import aws

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]


def provision_over_http(stack: dict[str, Any], pinned_ca: Path, state_dir: Path) -> Credentials:
    """Onboard a fresh device as the app would, without the radio, and store what it keeps."""
    dsn = f"mqtt-{uuid.uuid4().hex[:10]}"
    key = x25519.X25519PrivateKey.generate()
    public = key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    backend = app.backend_from_state(stack["path"])
    assert backend.default_username and backend.default_password
    token = app.login(backend, backend.default_username, backend.default_password)
    result = app.request_certificate(backend.api_url, token, dsn, public)
    assert result.ok, result.body
    answer = credentials.verify_answer(
        json.dumps(result.body).encode(), key, dsn, credentials.load_ca(pinned_ca.read_bytes())
    )
    credentials.ensure_state_dir(state_dir)
    return credentials.store(state_dir, answer)


class Connection:
    """An awsiotsdk MQTT connection as the device makes it; records interruptions."""

    def __init__(self, creds: Credentials, broker: dict[str, Any]) -> None:
        from awsiot import mqtt_connection_builder

        self.interrupted = threading.Event()
        self.connection = mqtt_connection_builder.mtls_from_path(
            endpoint=broker["host"],
            port=broker["port"],
            cert_filepath=str(creds.cert_path),
            pri_key_filepath=str(creds.key_path),
            ca_filepath=broker["ca"],
            client_id=creds.thing_name,
            clean_session=True,
            keep_alive_secs=30,
            on_connection_interrupted=lambda **_: self.interrupted.set(),
        )
        self.connection.connect().result(15)

    def close(self) -> None:
        with contextlib.suppress(Exception):  # already dropped by the broker
            self.connection.disconnect().result(15)


@pytest.mark.parametrize("status", ["INACTIVE", "REVOKED"])
def test_client_is_disconnected_when_its_certificate_leaves_active(
    stack, broker, pinned_ca, tmp_path, status
):
    # GIVEN two provisioned devices, both connected over MQTT with their own certificates
    leaving = provision_over_http(stack, pinned_ca, tmp_path / "leaving")
    staying = provision_over_http(stack, pinned_ca, tmp_path / "staying")
    dropped, kept = Connection(leaving, broker), Connection(staying, broker)
    try:
        # WHEN an operator sets the first one's certificate INACTIVE or REVOKED in IoT
        aws(stack, "iot").update_certificate(certificateId=leaving.certificate_id, newStatus=status)

        # THEN the broker drops that client within seconds, naming the API's certificate id
        assert dropped.interrupted.wait(30), broker["log"].output
        broker["log"].wait_line(
            f"DISCONNECT client={leaving.thing_name} certificate {leaving.certificate_id}"
        )
        # ... the device cannot connect again
        with pytest.raises(Exception):  # noqa: B017 - awscrt raises its own error types
            Connection(leaving, broker)
        # ... and the other device, still ACTIVE, was never interrupted and can still publish
        assert not kept.interrupted.is_set()
        from awscrt import mqtt

        future, _ = kept.connection.publish(
            f"things/{staying.thing_name}/hello", b"still here", mqtt.QoS.AT_LEAST_ONCE
        )
        future.result(15)
        assert f"DISCONNECT client={staying.thing_name}" not in broker["log"].output
    finally:
        dropped.close()
        kept.close()
