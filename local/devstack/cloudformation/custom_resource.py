"""Run a CloudFormation custom resource's real handler with a CloudFormation-shaped event.

``ResponseURL`` points at a listener on 127.0.0.1 that records the handler's PUT and checks it
the way CloudFormation does: a SUCCESS or FAILED status, a PhysicalResourceId, the event's
StackId/RequestId/LogicalResourceId echoed back, and a body under 4096 bytes.
"""

from __future__ import annotations

import json
import threading
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from devstack.awslambda.runtime import FunctionSpec, Invoker
from devstack.errors import DeployError

_MAX_RESPONSE_BYTES = 4096  # CloudFormation's limit on a custom resource response


@dataclass(frozen=True)
class CustomResourceResult:
    physical_id: str
    data: dict[str, Any]


class _ResponseListener(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _ResponseHandler)
        self.responses: dict[str, bytes] = {}
        self.lock = threading.Lock()

    @property
    def base_url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"


class _ResponseHandler(BaseHTTPRequestHandler):
    server: _ResponseListener

    def do_PUT(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        with self.server.lock:
            self.server.responses[self.path] = body
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the deployer reports progress itself."""


def _check_response(event: dict[str, Any], raw: bytes | None) -> CustomResourceResult:
    logical_id = event["LogicalResourceId"]
    if raw is None:
        raise DeployError(
            f"{logical_id}: the custom resource handler returned without sending a response "
            "to ResponseURL (CloudFormation would wait for an hour, then fail)"
        )
    if len(raw) > _MAX_RESPONSE_BYTES:
        raise DeployError(f"{logical_id}: response is {len(raw)} bytes, over 4096")
    try:
        answer = json.loads(raw)
    except ValueError as exc:
        raise DeployError(f"{logical_id}: response is not JSON: {raw[:200]!r}") from exc
    if not isinstance(answer, dict):
        raise DeployError(f"{logical_id}: response is not a JSON object")
    status = answer.get("Status")
    if status == "FAILED":
        reason = answer.get("Reason") or "no Reason given"
        raise DeployError(f"{logical_id}: custom resource FAILED: {reason}")
    if status != "SUCCESS":
        raise DeployError(f"{logical_id}: response Status must be SUCCESS or FAILED: {status!r}")
    for key in ("StackId", "RequestId", "LogicalResourceId"):
        if answer.get(key) != event[key]:
            raise DeployError(f"{logical_id}: response {key} {answer.get(key)!r} != event's")
    physical_id = answer.get("PhysicalResourceId")
    if not isinstance(physical_id, str) or not physical_id:
        raise DeployError(f"{logical_id}: response has no PhysicalResourceId")
    data = answer.get("Data") or {}
    if not isinstance(data, dict):
        raise DeployError(f"{logical_id}: response Data is not an object")
    return CustomResourceResult(physical_id=physical_id, data=data)


def run_create(
    function: FunctionSpec,
    *,
    logical_id: str,
    resource_type: str,
    properties: dict[str, Any],
    stack_id: str,
    invoker: Invoker,
) -> CustomResourceResult:
    """Send a Create event to the handler and return what it answered on ResponseURL."""
    listener = _ResponseListener()
    # A short poll: shutdown() waits for the loop to notice, half a second by default.
    thread = threading.Thread(
        target=listener.serve_forever,
        kwargs={"poll_interval": 0.05},
        name="cfn-response",
        daemon=True,
    )
    thread.start()
    try:
        request_id = str(uuid.uuid4())
        path = f"/cloudformation-custom-resource-response/{logical_id}/{request_id}"
        event = {
            "RequestType": "Create",
            "ServiceToken": properties["ServiceToken"],
            "ResponseURL": listener.base_url + path,
            "StackId": stack_id,
            "RequestId": request_id,
            "LogicalResourceId": logical_id,
            "ResourceType": resource_type,
            "ResourceProperties": properties,
        }
        failure: Exception | None = None
        try:
            invoker(function, event)
        except Exception as exc:  # CloudFormation only ever sees the PUT; so do we, first
            failure = exc
        with listener.lock:
            raw = listener.responses.get(path)
        if raw is None and failure is not None:
            raise DeployError(
                f"{logical_id}: handler {function.handler} raised "
                f"{type(failure).__name__}: {failure} and sent no response"
            ) from failure
        return _check_response(event, raw)
    finally:
        listener.shutdown()
        listener.server_close()
        thread.join(timeout=5)
