"""The bootstrap of one offline Lambda execution environment (started by
devstack.awslambda.workers).

Run as ``python -I -S -u lambda_worker.py REQUEST_FD RESULT_FD``: isolated mode and no
``site``, so neither PYTHONPATH nor the dev virtualenv's site-packages is importable. sys.path
is the function's package (LAMBDA_TASK_ROOT), the runtime's folder (LAMBDA_RUNTIME_DIR: boto3
and its dependencies), then the standard library. This file uses the standard library only.

Protocol, one JSON object per line; requests and results have pipes of their own, so what the
handler prints (stdout and stderr are the function's log file) cannot corrupt them:

1. init (Lambda's INIT phase): the worker imports the handler named by ``_HANDLER`` and sends
   ``{"ready": true}``, or ``{"error": {...}}`` and exits, as Lambda reports a failed init
   (``Runtime.ImportModuleError``, ``Runtime.HandlerNotFound``, ...);
2. each invocation: the parent sends ``{"requestId", "deadlineMs", "invokedFunctionArn",
   "event"}``; the worker answers ``{"result": <value>}`` or ``{"error": {"errorType",
   "errorMessage", "stackTrace"}}`` and logs START, END and REPORT lines like Lambda.

The worker serves one invocation at a time and lives until its request pipe closes, so a
parent that dies takes its workers with it. Timeouts are the parent's job: it kills the
worker, as Lambda discards an environment whose invocation timed out.
"""

from __future__ import annotations

import importlib
import json
import os
import resource
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any, BinaryIO, TextIO

_MAX_RESPONSE = 6 * 1024 * 1024  # Lambda's synchronous response payload limit


class _Fault(Exception):
    def __init__(self, error_type: str, message: str, trace: list[str] | None = None) -> None:
        super().__init__(message)
        self.error = {"errorType": error_type, "errorMessage": message, "stackTrace": trace or []}


class _Context:
    """The Lambda context object, as the Python runtime builds it for each invocation."""

    def __init__(self, request: dict[str, Any]) -> None:
        self.function_name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "")
        self.function_version = os.environ.get("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        self.invoked_function_arn = str(request.get("invokedFunctionArn", ""))
        self.memory_limit_in_mb = os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
        self.aws_request_id = str(request["requestId"])
        self.log_group_name = os.environ.get("AWS_LAMBDA_LOG_GROUP_NAME", "")
        self.log_stream_name = os.environ.get("AWS_LAMBDA_LOG_STREAM_NAME", "")
        self.identity = None
        self.client_context = None
        self._deadline_ms = int(request["deadlineMs"])

    def get_remaining_time_in_millis(self) -> int:
        return max(0, self._deadline_ms - int(time.time() * 1000))


def _load(spec: str) -> Callable[[Any, Any], Any]:
    """Import the handler the way the Lambda Python runtime does, with its error types."""
    module_name, _, function_name = spec.rpartition(".")
    if not module_name:
        raise _Fault("Runtime.MalformedHandlerName", f"Bad handler '{spec}'")
    try:
        module = importlib.import_module(module_name.replace("/", "."))
    except ImportError as exc:
        raise _Fault(
            "Runtime.ImportModuleError", f"Unable to import module '{module_name}': {exc}"
        ) from exc
    except SyntaxError as exc:
        raise _Fault(
            "Runtime.UserCodeSyntaxError", f"Syntax error in module '{module_name}': {exc}"
        ) from exc
    except Exception as exc:
        raise _Fault(type(exc).__name__, str(exc), traceback.format_tb(exc.__traceback__)) from exc
    handler = getattr(module, function_name, None)
    if not callable(handler):
        raise _Fault(
            "Runtime.HandlerNotFound",
            f"Handler '{function_name}' missing on module '{module_name}'",
        )
    return handler  # type: ignore[no-any-return]


def _log_error(error: dict[str, Any], exc: BaseException | None) -> None:
    print(f"[ERROR] {error['errorType']}: {error['errorMessage']}", file=sys.stderr)
    if exc is not None:
        traceback.print_exception(exc, file=sys.stderr)
    sys.stderr.flush()


def _send(results: TextIO, message: str) -> None:
    results.write(message + "\n")
    results.flush()


def _answer(handler: Callable[[Any, Any], Any], request: dict[str, Any]) -> str:
    try:
        result = handler(request["event"], _Context(request))
    except Exception as exc:
        error = {
            "errorType": type(exc).__name__,
            "errorMessage": str(exc),
            "stackTrace": traceback.format_tb(exc.__traceback__),
        }
        _log_error(error, exc)
        return json.dumps({"error": error})
    try:
        answer = json.dumps({"result": result})
    except (TypeError, ValueError) as exc:
        error = {
            "errorType": "Runtime.MarshalError",
            "errorMessage": f"Unable to marshal response: {exc}",
            "stackTrace": [],
        }
        _log_error(error, None)
        return json.dumps({"error": error})
    if len(answer) > _MAX_RESPONSE:
        error = {
            "errorType": "Function.ResponseSizeTooLarge",
            "errorMessage": "Response payload size exceeded maximum allowed payload size "
            f"({_MAX_RESPONSE} bytes).",
            "stackTrace": [],
        }
        _log_error(error, None)
        return json.dumps({"error": error})
    return answer


def _serve(requests: BinaryIO, results: TextIO) -> int:
    started = time.monotonic()
    try:
        handler = _load(os.environ.get("_HANDLER", ""))
    except _Fault as fault:
        _log_error(fault.error, fault.__cause__)
        _send(results, json.dumps({"error": fault.error}))
        return 1
    init_ms: float | None = (time.monotonic() - started) * 1000
    _send(results, json.dumps({"ready": True}))
    memory = os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
    for line in requests:
        request = json.loads(line)
        request_id = request["requestId"]
        print(f"START RequestId: {request_id} Version: $LATEST", flush=True)
        began = time.monotonic()
        answer = _answer(handler, request)
        duration = (time.monotonic() - began) * 1000
        used = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
        report = (
            f"REPORT RequestId: {request_id}\tDuration: {duration:.2f} ms\t"
            f"Memory Size: {memory} MB\tMax Memory Used: {used} MB"
        )
        if init_ms is not None:
            report += f"\tInit Duration: {init_ms:.2f} ms"
            init_ms = None
        print(f"END RequestId: {request_id}\n{report}", flush=True)
        _send(results, answer)
    return 0


def main(argv: list[str]) -> int:
    request_fd, result_fd = int(argv[1]), int(argv[2])
    sys.path[:0] = [os.environ["LAMBDA_TASK_ROOT"], os.environ["LAMBDA_RUNTIME_DIR"]]
    with (
        os.fdopen(request_fd, "rb") as requests,
        os.fdopen(result_fd, "w", encoding="utf-8") as results,
    ):
        return _serve(requests, results)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
