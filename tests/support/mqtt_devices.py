"""Devices on the offline stack's MQTT broker, as the device SDK connects them: provisioned in
CSR mode through the API, connected with awsiotsdk, their interruptions recorded.

Used by the end-to-end revocation tests and by ``bench.disconnect``.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devstack.stack import RunningStack
from onboarding_ble import renewal
from tests.support.offline import AppUser, new_member, post_certificate, unique_dsn


def http(method: str, url: str, token: str | None) -> tuple[int, Any]:
    """One API call as the app makes it; (status, JSON body)."""
    headers = {"Authorization": token} if token else {}
    request = urllib.request.Request(url, headers=headers, method=method)  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


@dataclass(frozen=True)
class Provisioned:
    """A device provisioned through the API: its DSN, thing, certificate and key files, owner."""

    dsn: str
    thing_name: str
    certificate_id: str
    cert_path: Path
    key_path: Path
    owner: AppUser


def provision(stack: RunningStack, directory: Path, owner: AppUser | None = None) -> Provisioned:
    """A fresh device provisioned in CSR mode by ``owner`` (a new member by default)."""
    owner = owner or new_member(stack)
    dsn = unique_dsn("MQTT")
    key, csr = renewal.new_key_and_csr(dsn)
    status, answer = post_certificate(stack.api_url, {"DSN": dsn, "csr": csr}, owner.id_token)
    assert status == 200, answer
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / f"{dsn}.pem", directory / f"{dsn}.key"
    cert_path.write_text(answer["certificatePem"], encoding="utf-8")
    key_path.write_bytes(renewal.private_pem(key))
    key_path.chmod(0o600)
    return Provisioned(
        dsn, answer["thingName"], answer["certificateId"], cert_path, key_path, owner
    )


class MqttDevice:
    """An awsiotsdk MQTT connection as the device makes it (client id = thing name, clean
    session); ``interrupted_at`` is when the SDK reported the connection interrupted."""

    def __init__(
        self,
        stack: RunningStack,
        device: Provisioned,
        timeout: float = 15.0,
        *,
        clean_session: bool = True,
    ) -> None:
        from awsiot import mqtt_connection_builder

        assert stack.mqtt is not None
        self.interrupted = threading.Event()
        self.interrupted_at: float | None = None
        self.resumed = threading.Event()
        self.session_present: bool | None = None  # on the last automatic reconnect
        self.connection = mqtt_connection_builder.mtls_from_path(
            endpoint=stack.mqtt.host,
            port=stack.mqtt.port,
            cert_filepath=str(device.cert_path),
            pri_key_filepath=str(device.key_path),
            ca_filepath=str(stack.mqtt.ca_file),
            client_id=device.thing_name,
            clean_session=clean_session,
            keep_alive_secs=30,
            reconnect_min_timeout_secs=1,
            on_connection_interrupted=self._on_interrupted,
            on_connection_resumed=self._on_resumed,
        )
        self.connection.connect().result(timeout)

    def _on_interrupted(self, **_: Any) -> None:
        if self.interrupted_at is None:
            self.interrupted_at = time.monotonic()
        self.interrupted.set()

    def _on_resumed(self, session_present: bool = False, **_: Any) -> None:
        self.session_present = session_present
        self.resumed.set()

    def subscribe(self, topic: str, timeout: float = 15.0) -> None:
        from awscrt import mqtt

        future, _ = self.connection.subscribe(topic, mqtt.QoS.AT_LEAST_ONCE, lambda **_: None)
        future.result(timeout)

    def close(self) -> None:
        with contextlib.suppress(Exception):  # already dropped by the broker
            self.connection.disconnect().result(15)
