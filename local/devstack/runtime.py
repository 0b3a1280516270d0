"""Run a Lambda handler in this process, as the Lambda runtime would.

The handler is imported from its CodeUri directory, runs with the function's resolved
environment, and gets a context whose remaining time counts down from the function's timeout.
Invocations are serialised: the environment is process-wide.
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
from typing import Any, TextIO

from devstack.errors import DevstackError

_INVOKE_LOCK = threading.RLock()
_OUTPUT: TextIO | None = None  # where Lambda stdout goes (CloudWatch's place); None: stdout
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
        # The one switch between AWS and the offline stack (DESIGN.md section 3).
        env["AWS_ENDPOINT_URL"] = endpoint_url
    return env


def set_output(stream: TextIO | None) -> None:
    """Send what handlers print (logs, EMF metrics) to ``stream`` instead of stdout.

    Powertools binds its log handler to sys.stdout at import, so set this before the first
    invocation and keep the stream open for the life of the process.
    """
    global _OUTPUT
    _OUTPUT = stream


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
        if _OUTPUT is not None:
            scope.enter_context(contextlib.redirect_stdout(_OUTPUT))
        handler = load_handler(function)
        return handler(event, context or LambdaContext(function))
