"""AWS IoT Core's data plane: publish a JSON message to a device's topic, as the cloud, and end a
client's live session (DeleteConnection)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from provisioning.adapters.aws import BudgetSource, aws_step, error_code, make_client

SERVICE = "iot-data"
QOS = 1


def configured_endpoint(session: boto3.session.Session, service: str = SERVICE) -> str | None:
    """The endpoint boto3's standard configuration names for the service, or None when it would
    use its built-in default. For iot-data, boto3 reads AWS_ENDPOINT_URL_IOT_DATA_PLANE (from the
    service id "IoT Data Plane"), then AWS_ENDPOINT_URL, then the config file.

    Building a client makes no call: compare one that honours the configuration with one that
    ignores it.
    """
    honoured = session.client(service).meta.endpoint_url
    default = session.client(
        service, config=Config(ignore_configured_endpoint_urls=True)
    ).meta.endpoint_url
    return None if honoured == default else str(honoured)


class IotPublisher:
    """Publishes JSON at QoS 1 through ``iot-data``, and disconnects clients.

    The endpoint, first found of: the one boto3's standard configuration names (offline, the
    stack's iot-data endpoint); the account's ``iot:Data-ATS`` endpoint, looked up once per
    container by ``data_endpoint`` (``IotRegistry.data_endpoint``) on the first publish.
    """

    def __init__(
        self,
        session: boto3.session.Session,
        data_endpoint: Callable[[], str],
        budget: BudgetSource = lambda: None,
    ) -> None:
        self._session = session
        self._data_endpoint = data_endpoint
        self._budget = budget
        self._client: Any = None
        self._lock = threading.Lock()

    def client(self) -> Any:
        with self._lock:
            if self._client is None:
                endpoint = configured_endpoint(self._session)
                if endpoint is None:
                    endpoint = f"https://{self._data_endpoint()}"
                self._client = make_client(
                    SERVICE, self._session, self._budget, endpoint_url=endpoint
                )
            return self._client

    def publish(self, topic: str, payload: Mapping[str, Any]) -> None:
        body = json.dumps(dict(payload), separators=(",", ":")).encode()
        client = self.client()
        with aws_step("PUBLISH"):
            client.publish(topic=topic, qos=QOS, payload=body)

    def disconnect(self, client_id: str) -> None:
        """End the client's session at once, its persistent session state dropped (a device
        whose access ended keeps no queued messages or subscriptions). A client not connected
        (ResourceNotFoundException) is what was wanted."""
        client = self.client()
        with aws_step("DISCONNECT_DEVICE"):
            try:
                client.delete_connection(clientId=client_id, cleanSession=True)
            except ClientError as error:
                if error_code(error) != "ResourceNotFoundException":
                    raise
