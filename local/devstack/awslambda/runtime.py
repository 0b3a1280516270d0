"""How the offline stack runs a Lambda function: the interface, and the in-process runner.

An ``Invoker`` takes a function (as the template defines it) and an event and returns what
the handler returned, or raises: ``FunctionError`` when the function failed as Lambda reports
a failure (error type and message, no result). Two implementations:

- ``devstack.awslambda.workers.ProcessInvoker``: each function from its own package, in worker
  processes reused like execution environments, several at once, killed at the function's
  Timeout. The offline stack (``up``, ``demo``, the end-to-end tests) uses it.
- ``InProcessInvoker`` (this module): the handler imported from its CodeUri into this process
  and called with the function's environment. For tests that deploy inside moto's in-process
  ``mock_aws()``, which a subprocess cannot see. Invocations are serialised (the environment
  is process-wide); each deployment gets its own copy of the function's modules.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

from devstack.errors import DevstackError

_INVOKE_LOCK = threading.RLock()
# function identity -> the modules of its code directory, as that "container" imported them
_CONTAINERS: dict[tuple[object, ...], dict[str, ModuleType]] = {}


@dataclass(frozen=True)
class FunctionSpec:
    """A Lambda function as the template defines it (after intrinsics are resolved)."""

    logical_id: str
    name: str
    arn: str
    handler: str
    code_uri: Path
    environment: dict[str, str] = field(default_factory=dict)
    timeout: int = 3
    memory_size: int = 128
    reserved_concurrency: int | None = None  # ReservedConcurrentExecutions
    # AWS::Lambda::EventInvokeConfig (SAM's EventInvokeConfig), for asynchronous invocations;
    # Lambda's defaults: events kept 6 hours, two retries
    maximum_event_age: int = 21600
    maximum_retry_attempts: int = 2


class FunctionError(DevstackError):
    """An invocation failed the way Lambda reports it: an error type and a message."""

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(f"{error_type}: {message}")
        self.error_type = error_type
        self.message = message


class Invoker(Protocol):
    """Runs one invocation of ``function`` with ``event``; returns the handler's result."""

    def __call__(self, function: FunctionSpec, event: dict[str, Any]) -> Any: ...


class LambdaContext:
    """The parts of the Lambda context object handlers and Powertools use."""

    def __init__(self, function: FunctionSpec, *, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._deadline = clock() + function.timeout
        self.function_name = function.name
        self.function_version = "$LATEST"
        self.invoked_function_arn = function.arn
        self.memory_limit_in_mb = function.memory_size
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{function.name}"
        self.log_stream_name = time.strftime("%Y/%m/%d/[$LATEST]") + uuid.uuid4().hex
        self.identity = None
        self.client_context = None

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - self._clock()) * 1000))


@contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """Set ``values`` in os.environ for the duration, then restore what was there."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, old in saved.items():
            if old is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = old


def _container_identity(function: FunctionSpec) -> tuple[object, ...]:
    return (function.arn, function.code_uri, tuple(sorted(function.environment.items())))


def _modules_under(root: str) -> dict[str, ModuleType]:
    return {
        name: module
        for name, module in sys.modules.items()
        if (getattr(module, "__file__", None) or "").startswith(root)
    }


@contextlib.contextmanager
def _container(function: FunctionSpec) -> Iterator[None]:
    """Give each deployed function its own copy of its code's modules, like a Lambda container.

    Lambda code caches configuration and clients at import time, which is right within one
    container; a second local deployment in the same process (new table names...) must not
    see the first one's. The modules loaded from the function's code directory are swapped
    in for the invocation and out again after it, so the process's own imports of the same
    packages (tests importing the handler directly) are left exactly as they were.
    """
    root = str(function.code_uri) + os.sep
    outer = _modules_under(root)
    for name in outer:
        del sys.modules[name]
    inner = _CONTAINERS.setdefault(_container_identity(function), {})
    sys.modules.update(inner)
    try:
        yield
    finally:
        loaded = _modules_under(root)
        inner.clear()
        inner.update(loaded)
        for name in loaded:
            del sys.modules[name]
        sys.modules.update(outer)


def load_handler(function: FunctionSpec) -> Callable[[Any, Any], Any]:
    """Import the handler (call inside ``_container`` and the function's environment)."""
    module_name, _, attribute = function.handler.rpartition(".")
    if not module_name:
        raise DevstackError(f"{function.logical_id}: malformed Handler {function.handler!r}")
    code_dir = str(function.code_uri)
    if code_dir not in sys.path:
        sys.path.insert(0, code_dir)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise DevstackError(
            f"{function.logical_id}: cannot import {module_name} from {code_dir}: {exc}"
        ) from exc
    handler = getattr(module, attribute, None)
    if not callable(handler):
        raise DevstackError(f"{function.logical_id}: {function.handler} is not a function")
    return handler  # type: ignore[no-any-return]


def lambda_environment(
    function: FunctionSpec, region: str, endpoint_url: str | None
) -> dict[str, str]:
    """What the Lambda runtime sets, plus the function's own variables."""
    env = {
        "AWS_REGION": region,
        "AWS_DEFAULT_REGION": region,
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(function.memory_size),
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "POWERTOOLS_TRACE_DISABLED": "true",  # no X-Ray daemon here
    }
    env.update(function.environment)
    if endpoint_url:
        # The one switch between AWS and the offline stack: no `if local:` in Lambda code.
        env["AWS_ENDPOINT_URL"] = endpoint_url
    return env


def invoke(
    function: FunctionSpec,
    event: dict[str, Any],
    *,
    region: str,
    endpoint_url: str | None = None,
    context: LambdaContext | None = None,
) -> Any:
    """Import and call the handler with ``event`` under the function's environment."""
    with contextlib.ExitStack() as scope:
        scope.enter_context(_INVOKE_LOCK)
        scope.enter_context(environment(lambda_environment(function, region, endpoint_url)))
        scope.enter_context(_container(function))
        handler = load_handler(function)
        return handler(event, context or LambdaContext(function))


class InProcessInvoker:
    """``invoke`` as an ``Invoker``: for deployments inside moto's in-process ``mock_aws``."""

    def __init__(self, *, region: str, endpoint_url: str | None = None) -> None:
        self.region = region
        self.endpoint_url = endpoint_url

    def __call__(self, function: FunctionSpec, event: dict[str, Any]) -> Any:
        return invoke(function, event, region=self.region, endpoint_url=self.endpoint_url)
