"""AWS IoT's data plane for the offline stack (``Publish``, ``DeleteConnection``): the cloud
side's way into the broker.

``POST /topics/{topic}?qos=N`` (the iot-data API; the body is the payload) publishes into the
broker as AWS IoT itself does: not subject to any device policy, delivered to every client
subscribed to a matching filter that may receive it. Any SigV4 signature is accepted (as moto
accepts any). What AWS refuses is refused with its error shape (``x-amzn-ErrorType`` and
``{"message"}``): an empty topic, a topic with a wildcard (+ #), more than 7 slashes or over
256 bytes, a QoS other than 0 or 1, a payload over 128 KB.

``DELETE /connections/{clientId}?cleanSession=&preventWillMessage=`` (DeleteConnection)
disconnects that client from the broker at once and answers 200 with an empty body once its
connection is closed; ``cleanSession=true`` also drops its session state (subscriptions, queued
messages), ``preventWillMessage=true`` its Last Will. A client id that is empty, longer than
128 characters or starts with ``$`` is ``InvalidRequestException`` (400), as is a parameter
other than ``true``/``false``; a client id with no live connection is
``ResourceNotFoundException`` (404).

Every Lambda worker is given ``AWS_ENDPOINT_URL_IOT_DATA_PLANE`` pointing here (the variable
boto3 reads for ``iot-data``, whose service id is "IoT Data Plane"), so a function's
``boto3.client("iot-data").publish`` lands in the broker while its other clients go to moto.
The state file names it as ``iot_data_url``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from http import HTTPStatus
from urllib.parse import parse_qs, unquote, urlsplit

from devstack.errors import DevstackError
from devstack.http_limits import CONTENT_LENGTH, BoundedHTTPServer, BoundedRequestHandler

MAX_PAYLOAD = 128 * 1024  # IoT Core's message size limit
MAX_TOPIC_BYTES = 256
MAX_SLASHES = 7
# What boto3 reads for iot-data (service id "IoT Data Plane").
ENDPOINT_VARIABLES = ("AWS_ENDPOINT_URL_IOT_DATA_PLANE",)

MAX_CLIENT_ID = 128  # DeleteConnection's clientId: 1 to 128 characters, not starting with $

Publish = Callable[[str, bytes, int], None]  # topic, payload, qos
# client id, clean session, prevent will -> whether the client was connected
Disconnect = Callable[[str, bool, bool], bool]


def topic_problem(topic: str) -> str | None:
    """Why AWS IoT refuses to publish on ``topic``, or None."""
    if not topic:
        return "topic must not be empty"
    if "+" in topic or "#" in topic:
        return "topic must not contain wildcards (+ or #)"
    if len(topic.encode("utf-8")) > MAX_TOPIC_BYTES:
        return f"topic is longer than {MAX_TOPIC_BYTES} bytes"
    if topic.removeprefix("$aws/").count("/") > MAX_SLASHES:
        return f"topic has more than {MAX_SLASHES} forward slashes"
    if "\x00" in topic:
        return "topic must not contain NUL"
    return None


def client_id_problem(client_id: str) -> str | None:
    """Why DeleteConnection refuses ``client_id``, or None."""
    if not client_id or len(client_id) > MAX_CLIENT_ID:
        return f"clientId must be 1 to {MAX_CLIENT_ID} characters"
    if client_id.startswith("$"):
        return "clientId must not start with $"
    return None


def _flag(query: dict[str, list[str]], name: str) -> bool | None:
    """A boolean query parameter: False when absent (AWS's default), None when not a boolean."""
    values = query.get(name, ["false"])
    if len(values) != 1 or values[0].lower() not in ("true", "false"):
        return None
    return values[0].lower() == "true"


class _Handler(BoundedRequestHandler):
    server: IotDataServer
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        parts = urlsplit(self.path)
        if not parts.path.startswith("/topics/"):
            self._error(HTTPStatus.NOT_FOUND, "ResourceNotFoundException", "Not found")
            return
        declared = (self.headers.get("Content-Length") or "0").strip()
        if self.headers.get("Transfer-Encoding") or not CONTENT_LENGTH.fullmatch(declared):
            self.close_connection = True
            self._error(HTTPStatus.BAD_REQUEST, "InvalidRequestException", "Bad Content-Length")
            return
        length = int(declared)
        if length > MAX_PAYLOAD:
            self.close_connection = True
            self._error(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                "RequestEntityTooLargeException",
                "Payload exceeds the maximum size",
            )
            return
        try:
            payload = self.rfile.read(length)
        except TimeoutError:
            self.close_connection = True
            return
        if len(payload) < length:
            self.close_connection = True
            return
        self.request_read()
        try:
            topic = unquote(parts.path[len("/topics/") :], errors="strict")
        except UnicodeDecodeError:
            topic = ""
        problem = topic_problem(topic)
        if problem is not None:
            self._error(HTTPStatus.BAD_REQUEST, "InvalidRequestException", problem)
            return
        qos_values = parse_qs(parts.query).get("qos", ["0"])
        if len(qos_values) != 1 or qos_values[0] not in ("0", "1"):
            self._error(HTTPStatus.BAD_REQUEST, "InvalidRequestException", "qos must be 0 or 1")
            return
        publish = self.server.publish
        if publish is None:
            self._error(HTTPStatus.SERVICE_UNAVAILABLE, "ServiceUnavailableException", "no broker")
            return
        try:
            publish(topic, payload, int(qos_values[0]))
        except Exception:
            self._error(
                HTTPStatus.SERVICE_UNAVAILABLE, "ServiceUnavailableException", "publish failed"
            )
            return
        self._answer(HTTPStatus.OK, b"")

    def do_DELETE(self) -> None:
        parts = urlsplit(self.path)
        if not parts.path.startswith("/connections/"):
            self._error(HTTPStatus.NOT_FOUND, "ResourceNotFoundException", "Not found")
            return
        declared = (self.headers.get("Content-Length") or "0").strip()
        if self.headers.get("Transfer-Encoding") or declared != "0":
            self.close_connection = True  # DeleteConnection has no body
            self._error(HTTPStatus.BAD_REQUEST, "InvalidRequestException", "Unexpected body")
            return
        self.request_read()
        try:
            client_id = unquote(parts.path[len("/connections/") :], errors="strict")
        except UnicodeDecodeError:
            client_id = ""
        problem = client_id_problem(client_id)
        flags = parse_qs(parts.query, keep_blank_values=True)
        clean, prevent = _flag(flags, "cleanSession"), _flag(flags, "preventWillMessage")
        if problem is None and (clean is None or prevent is None):
            problem = "cleanSession and preventWillMessage must be true or false"
        if problem is not None:
            self._error(HTTPStatus.BAD_REQUEST, "InvalidRequestException", problem)
            return
        assert clean is not None and prevent is not None
        disconnect = self.server.disconnect
        if disconnect is None:
            self._error(HTTPStatus.INTERNAL_SERVER_ERROR, "InternalFailureException", "no broker")
            return
        try:
            connected = disconnect(client_id, clean, prevent)
        except Exception:
            self._error(
                HTTPStatus.INTERNAL_SERVER_ERROR, "InternalFailureException", "disconnect failed"
            )
            return
        if not connected:
            self._error(
                HTTPStatus.NOT_FOUND,
                "ResourceNotFoundException",
                f"No connection for client id {client_id!r}",
            )
            return
        self._answer(HTTPStatus.OK, b"")

    def _error(self, status: int, error_type: str, message: str) -> None:
        body = json.dumps({"message": message}).encode()
        self._answer(status, body, {"x-amzn-ErrorType": error_type})

    def _answer(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_json(status, body, headers)


class IotDataServer(BoundedHTTPServer):
    """``start()``, ``url``, ``stop()``; ``publish`` and ``disconnect`` are attached once the
    broker runs."""

    thread_name = "iot-data"

    def __init__(
        self,
        host: str = "127.0.0.1",
        publish: Publish | None = None,
        disconnect: Disconnect | None = None,
    ) -> None:
        try:
            super().__init__((host, 0), _Handler)
        except OSError as exc:
            raise DevstackError(f"cannot listen on {host}: {exc.strerror}") from exc
        self.publish = publish
        self.disconnect = disconnect

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"

    def environment(self) -> dict[str, str]:
        """What a Lambda worker needs for its iot-data client to land here."""
        return dict.fromkeys(ENDPOINT_VARIABLES, self.url)
