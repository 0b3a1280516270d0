"""Lambda's Invoke API for the offline stack, so functions can be run by hand as in AWS.

``POST /2015-03-31/functions/{FunctionName}/invocations`` (RequestResponse) runs the function
in its worker processes, exactly as the gateway does, and answers as Lambda does: 200 with the
function's result, or 200 with ``X-Amz-Function-Error: Unhandled`` and the error as payload, or
429 ``TooManyRequestsException`` when the function's reserved concurrency is busy.
A boto3 ``lambda`` client pointed at it works unchanged, so an operator's
``aws lambda invoke --function-name <SweeperFunctionName>`` has the same offline form
(``devstack sweep``). FunctionName may be the function's name, ARN or logical id.

Not emulated: other invocation types (Event and DryRun are refused with
``InvalidParameterValueException``), qualifiers, the Lambda control plane.
"""

from __future__ import annotations

import json
import re
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote

from devstack.awslambda.runtime import FunctionError, FunctionSpec
from devstack.errors import DevstackError
from devstack.http_limits import CONTENT_LENGTH, BoundedHTTPServer, BoundedRequestHandler

_INVOKE = re.compile(r"^/2015-03-31/functions/(?P<name>[^/]+)/invocations$")
_MAX_PAYLOAD = 6 * 1024 * 1024  # Lambda's synchronous payload limit


class _Handler(BoundedRequestHandler):
    server: LambdaApiServer
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        found = _INVOKE.match(self.path.split("?", 1)[0])
        function = self.server.find(unquote(found["name"])) if found else None
        if function is None:
            self._answer(
                HTTPStatus.NOT_FOUND,
                {"Type": "User", "Message": "Function not found"},
                {"x-amzn-ErrorType": "ResourceNotFoundException"},
            )
            return
        kind = self.headers.get("X-Amz-Invocation-Type") or "RequestResponse"
        if kind != "RequestResponse":
            # Lambda would queue an Event (202) or only check a DryRun (204); answering either
            # as a synchronous call would throttle or wait where Lambda does not, so refuse
            self._answer(
                HTTPStatus.BAD_REQUEST,
                {"Type": "User", "message": f"offline, only RequestResponse runs (not {kind})"},
                {"x-amzn-ErrorType": "InvalidParameterValueException"},
            )
            return
        declared = (self.headers.get("Content-Length") or "0").strip()
        if self.headers.get("Transfer-Encoding") or not CONTENT_LENGTH.fullmatch(declared):
            # boto3 always sends a Content-Length; anything else is refused, never guessed at
            self.close_connection = True
            self._answer(HTTPStatus.BAD_REQUEST, {"Type": "User", "Message": "Bad Content-Length"})
            return
        length = int(declared)
        if length > _MAX_PAYLOAD:
            self._answer(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"Message": "Request too large"})
            return
        try:
            payload = self.rfile.read(length)
        except TimeoutError:  # a Content-Length longer than what was sent
            self.close_connection = True
            return
        if len(payload) < length:  # the client closed early, or was cut off
            self.close_connection = True
            return
        self.request_read()
        try:
            event = json.loads(payload or b"{}")
        except (ValueError, RecursionError):
            self._answer(HTTPStatus.BAD_REQUEST, {"Type": "User", "Message": "Invalid JSON"})
            return
        try:
            result = self.server.invoker(function, event)
        except FunctionError as error:
            if error.error_type == "TooManyRequestsException":  # the reservation is busy
                self._answer(
                    HTTPStatus.TOO_MANY_REQUESTS,
                    {
                        "Type": "User",
                        "message": error.message,
                        "Reason": "ReservedFunctionConcurrentInvocationLimitExceeded",
                    },
                    {"x-amzn-ErrorType": "TooManyRequestsException"},
                )
                return
            failure = {"errorType": error.error_type, "errorMessage": error.message}
            self._answer(HTTPStatus.OK, failure, {"X-Amz-Function-Error": "Unhandled"})
            return
        self._answer(HTTPStatus.OK, result)

    def _answer(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        self.send_json(status, json.dumps(payload).encode(), headers)


class LambdaApiServer(BoundedHTTPServer):
    """``start()``, ``url``, ``stop()``; ``invoker(function, event)`` runs a function."""

    thread_name = "lambda-api"

    def __init__(
        self, functions: dict[str, FunctionSpec], invoker: Any, host: str = "127.0.0.1"
    ) -> None:
        try:
            super().__init__((host, 0), _Handler)
        except OSError as exc:
            raise DevstackError(f"cannot listen on {host}: {exc.strerror}") from exc
        self.functions = functions
        self.invoker = invoker

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"

    def find(self, name: str) -> FunctionSpec | None:
        for logical_id, function in self.functions.items():
            if name in (logical_id, function.name, function.arn):
                return function
        return None
