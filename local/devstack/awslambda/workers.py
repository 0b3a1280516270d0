"""Run each Lambda function in worker processes, as Lambda runs execution environments.

``ProcessInvoker`` is the offline stack's ``Invoker``. For each function it keeps a pool of
workers (``lambda_worker.py`` in a ``python -I -S`` subprocess each):

- a worker sees only the function's package (``devstack.awslambda.packages``), the runtime's boto3
  folder and the standard library, and only the function's environment: its template
  variables, what the Lambda runtime sets (AWS_LAMBDA_FUNCTION_NAME, LAMBDA_TASK_ROOT...),
  the region, fake credentials, AWS_ENDPOINT_URL pointing at moto and the stack's other
  endpoints (``endpoints``: iot-data's, devstack.iot.iot_data). Nothing from the dev
  virtualenv: a module the package lacks fails to import offline as it does in AWS;
- the first invocation of a worker imports the handler (Lambda's INIT phase, allowed 10 s
  plus the function's Timeout); an init failure answers that invocation with Lambda's error
  (``Runtime.ImportModuleError``...) and the next invocation tries a fresh worker;
- workers stay warm and are reused, so module-level caches survive across invocations;
- at most the function's concurrency run at once (ReservedConcurrentExecutions, else
  ``DEFAULT_CONCURRENCY``). Beyond a reservation, a synchronous invocation (``synchronous``:
  API Gateway's, the Invoke API's) is throttled at once with ``TooManyRequestsException``, as
  Lambda throttles it, while an asynchronous one (``__call__``: IoT rules, schedules) waits
  for a free worker, as Lambda's queue holds it. A function without a reservation draws on
  the account's pool (1,000 by default) in AWS: offline its invocations wait for one of
  ``DEFAULT_CONCURRENCY`` workers instead, the machine's limit rather than AWS's. Reserved
  concurrency 0 throttles every invocation, as in Lambda;
- an invocation still running at the function's Timeout is answered ``Sandbox.Timedout`` and
  its worker (its whole process group) is killed; a worker that dies is replaced;
- the handler's stdout and stderr, START/END/REPORT lines and timeouts go to
  ``<log_dir>/<LogicalId>.log`` (CloudWatch's place), never to the terminal.

Why subprocesses speaking JSON lines over two private pipes, not ``multiprocessing``: the
worker must not import anything from this process (multiprocessing's spawn re-imports the
parent's main module and needs the pickling machinery on both sides), and a pipe per direction
keeps the handler's own prints out of the protocol. See ``lambda_worker.py`` for the protocol.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any

from devstack.awslambda.packages import Package
from devstack.awslambda.runtime import FunctionError, FunctionSpec, lambda_environment
from devstack.errors import DevstackError

DEFAULT_CONCURRENCY = 4  # environments per function when the template reserves none
INIT_LIMIT = 10.0  # seconds Lambda gives the INIT phase before counting the invocation's
_WORKER = Path(__file__).with_name("lambda_worker.py")
_PATH = "/usr/local/bin:/usr/bin:/bin"


class _WorkerExited(Exception):
    pass


class _Worker:
    """One execution environment: a worker process and its two pipes."""

    def __init__(self, command: list[str], env: dict[str, str], cwd: Path, log: IO[bytes]) -> None:
        request_read, request_write = os.pipe()
        result_read, result_write = os.pipe()
        try:
            self.process = subprocess.Popen(  # noqa: S603 - our worker, fixed arguments
                [*command, str(request_read), str(result_write)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=env,
                cwd=cwd,
                pass_fds=(request_read, result_write),
                start_new_session=True,  # Ctrl-C in a terminal is for the stack, not for it
            )
        except BaseException:
            for descriptor in (request_write, result_read):
                os.close(descriptor)
            raise
        finally:
            os.close(request_read)
            os.close(result_write)
        self._requests = os.fdopen(request_write, "wb")
        self._results: queue.Queue[bytes | None] = queue.Queue()
        reader = os.fdopen(result_read, "rb")
        threading.Thread(
            target=self._read, args=(reader,), name="lambda-results", daemon=True
        ).start()

    def _read(self, stream: IO[bytes]) -> None:
        with stream:
            for line in stream:
                self._results.put(line)
        self._results.put(None)

    def send(self, message: dict[str, Any]) -> None:
        try:
            self._requests.write(json.dumps(message).encode() + b"\n")
            self._requests.flush()
        except OSError as exc:  # the worker is gone
            raise _WorkerExited from exc

    def receive(self, timeout: float) -> dict[str, Any] | None:
        """The worker's next message; None when ``timeout`` passes first."""
        try:
            line = self._results.get(timeout=max(0.0, timeout))
        except queue.Empty:
            return None
        if line is None:
            raise _WorkerExited
        message: dict[str, Any] = json.loads(line)
        return message

    def alive(self) -> bool:
        """Whether the process still runs; answers at once (``exit_status`` waits up to 5 s)."""
        return self.process.poll() is None

    def exit_status(self) -> int | None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            return self.process.wait(timeout=5)
        return None

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(OSError):
            self._requests.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=5)


class _Pool:
    """The execution environments of one function."""

    def __init__(
        self,
        function: FunctionSpec,
        package: Package,
        env: dict[str, str],
        log_path: Path,
        concurrency: int,
        warn: Callable[[str], None],
        python: str,
    ) -> None:
        self.function = function
        self.package = package
        self.env = env
        self.log_path = log_path
        self.concurrency = concurrency
        self._warn = warn
        self._command = [python, "-I", "-S", "-u", str(_WORKER)]
        self._log = log_path.open("ab")
        self._slots = threading.BoundedSemaphore(max(1, concurrency))
        self._lock = threading.Lock()
        self._idle: list[_Worker] = []
        self._all: set[_Worker] = set()
        self._closed = False

    def _log_line(self, text: str) -> None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
        with self._lock:
            if not self._log.closed:  # closed: the runtime was stopped mid-invocation
                self._log.write(f"{stamp}Z {text}\n".encode())
                self._log.flush()

    def _start(self) -> _Worker:
        """A new environment, through its INIT phase; FunctionError if init fails."""
        env = {
            **self.env,
            "AWS_LAMBDA_LOG_STREAM_NAME": time.strftime("%Y/%m/%d/[$LATEST]") + uuid.uuid4().hex,
        }
        with self._lock:
            if self._closed:
                raise DevstackError("the offline Lambda runtime is stopped")
            worker = _Worker(self._command, env, self.package.root, self._log)
            self._all.add(worker)
        try:
            message = worker.receive(INIT_LIMIT + self.function.timeout)
        except _WorkerExited:
            message = {"error": {"errorType": "Runtime.ExitError", "errorMessage": "exited"}}
        if message is None:
            message = {"error": {"errorType": "Sandbox.Timedout", "errorMessage": "INIT timed out"}}
        if "ready" in message:
            return worker
        self._discard(worker)
        error = message.get("error") or {}
        failure = FunctionError(str(error.get("errorType")), str(error.get("errorMessage")))
        self._warn(f"{self.function.logical_id}: {failure} (log: {self.log_path})")
        raise failure

    def _discard(self, worker: _Worker) -> None:
        worker.kill()
        with self._lock:
            self._all.discard(worker)

    def invoke(
        self,
        event: dict[str, Any],
        *,
        throttle_when_busy: bool = False,
        expires_at: float | None = None,
    ) -> Any:
        """Run ``event`` in a free worker; with ``throttle_when_busy``, throttled at once when
        every worker of the function's reservation is busy, instead of waiting for one; an
        event that gets a worker only after ``expires_at`` (time.monotonic) is not run."""
        if self.concurrency == 0:
            raise FunctionError("TooManyRequestsException", "Rate Exceeded.")
        if throttle_when_busy and self.function.reserved_concurrency is not None:
            if not self._slots.acquire(blocking=False):
                raise FunctionError("TooManyRequestsException", "Rate Exceeded.")
        else:
            self._slots.acquire()
        try:
            if expires_at is not None and time.monotonic() > expires_at:
                raise FunctionError(
                    "EventAgeExceeded", "the event waited past MaximumEventAgeInSeconds"
                )
            return self._run(event)
        finally:
            self._slots.release()

    def prewarm(self, count: int) -> int:
        """Start environments through INIT, a few at a time, so that ``count`` (at most the
        concurrency) are idle and warm; the number idle after.

        It holds a slot for each environment it may add, so invocations meanwhile hold only
        the others: idle environments plus busy ones never pass the concurrency."""
        if self.concurrency == 0:
            return 0
        held = 0
        while held < min(count, self.concurrency) and self._slots.acquire(blocking=False):
            held += 1
        try:
            with self._lock:
                missing = max(0, held - len(self._idle))

            def start(_: int) -> None:
                worker = self._start()
                with self._lock:
                    self._idle.append(worker)

            with ThreadPoolExecutor(max(1, os.cpu_count() or 1)) as pool:
                list(pool.map(start, range(missing)))
        finally:
            for _ in range(held):
                self._slots.release()
        with self._lock:
            return len(self._idle)

    def _run(self, event: dict[str, Any]) -> Any:
        """One invocation in an idle worker, or a new one (the caller holds a slot)."""
        with self._lock:
            worker = self._idle.pop() if self._idle else None
        if worker is not None and not worker.alive():
            # An environment that died while idle (killed, out of memory) is replaced, as
            # Lambda never hands a request to a dead one.
            self._discard(worker)
            worker = None
        if worker is None:
            worker = self._start()
        healthy = False
        try:
            answer = self._call(worker, event)
            healthy = True
        finally:
            if healthy:
                with self._lock:
                    self._idle.append(worker)
            else:
                self._discard(worker)
        if "error" in answer:
            error = answer["error"]
            raise FunctionError(str(error.get("errorType")), str(error.get("errorMessage")))
        return answer.get("result")

    def _call(self, worker: _Worker, event: dict[str, Any]) -> dict[str, Any]:
        request_id = str(uuid.uuid4())
        timeout = float(self.function.timeout)
        deadline = time.monotonic() + timeout
        try:
            worker.send(
                {
                    "requestId": request_id,
                    "deadlineMs": int((time.time() + timeout) * 1000),
                    "invokedFunctionArn": self.function.arn,
                    "event": event,
                }
            )
            answer = worker.receive(deadline - time.monotonic())
        except _WorkerExited:
            status = worker.exit_status()
            message = (
                f"RequestId: {request_id} Error: Runtime exited with error: exit status {status}"
            )
            self._log_line(message)
            raise FunctionError("Runtime.ExitError", message) from None
        if answer is None:
            message = f"{request_id} Task timed out after {timeout:.2f} seconds"
            self._log_line(message)
            raise FunctionError("Sandbox.Timedout", message)
        return answer

    def close(self) -> None:
        with self._lock:
            self._closed = True
            workers = list(self._all)
            self._all.clear()
            self._idle.clear()
        for worker in workers:
            worker.kill()
        self._log.close()


class ProcessInvoker:
    """The offline stack's Lambda service: ``invoker(function, event)``; ``close()`` at the end."""

    def __init__(
        self,
        packages: Mapping[str, Package],
        *,
        region: str,
        endpoint_url: str,
        credentials: Mapping[str, str],
        log_dir: Path,
        default_concurrency: int = DEFAULT_CONCURRENCY,
        warn: Callable[[str], None] | None = None,
        python: str = sys.executable,
        endpoints: Mapping[str, str] | None = None,
    ) -> None:
        self.packages = dict(packages)
        # more AWS_ENDPOINT_URL_<SERVICE> variables (the stack's iot-data endpoint)
        self.endpoints = dict(endpoints or {})
        self.region = region
        self.endpoint_url = endpoint_url
        self.credentials = dict(credentials)
        self.log_dir = log_dir
        self.default_concurrency = default_concurrency
        self._warn = warn or (lambda _message: None)
        self._python = python
        self._pools: dict[str, _Pool] = {}
        self._lock = threading.Lock()
        self._closed = False

    def log_path(self, logical_id: str) -> Path:
        return self.log_dir / f"{logical_id}.log"

    def environment(self, function: FunctionSpec, package: Package) -> dict[str, str]:
        """What a worker of ``function`` sees in os.environ, and nothing else."""
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        return {
            "PATH": _PATH,
            "LANG": "en_US.UTF-8",
            "TZ": ":UTC",
            "LAMBDA_TASK_ROOT": str(package.root),
            "LAMBDA_RUNTIME_DIR": str(package.runtime),
            "_HANDLER": function.handler,
            "AWS_EXECUTION_ENV": f"AWS_Lambda_python{version}",
            "AWS_LAMBDA_FUNCTION_NAME": function.name,
            "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{function.name}",
            "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
            **lambda_environment(function, self.region, self.endpoint_url),
            **self.endpoints,
            **self.credentials,
            # No shared config or credentials files: a developer's ~/.aws stays out of it.
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        }

    def _pool(self, function: FunctionSpec) -> _Pool:
        with self._lock:
            if self._closed:
                raise DevstackError("the offline Lambda runtime is stopped")
            key = function.arn
            pool = self._pools.get(key)
            if pool is None:
                package = self.packages.get(function.logical_id)
                if package is None:
                    raise DevstackError(f"{function.logical_id}: no package was built for it")
                self.log_dir.mkdir(parents=True, exist_ok=True)
                concurrency = function.reserved_concurrency
                pool = _Pool(
                    function,
                    package,
                    self.environment(function, package),
                    self.log_path(function.logical_id),
                    self.default_concurrency if concurrency is None else concurrency,
                    self._warn,
                    self._python,
                )
                self._pools[key] = pool
            return pool

    def __call__(
        self, function: FunctionSpec, event: dict[str, Any], *, expires_at: float | None = None
    ) -> Any:
        """An asynchronous invocation: it waits for a free worker, as in Lambda's queue, and is
        dropped (``EventAgeExceeded``) if it gets one only after ``expires_at``."""
        return self._pool(function).invoke(event, expires_at=expires_at)

    def prewarm(self, function: FunctionSpec, count: int) -> int:
        """Initialise ``count`` environments of ``function`` ahead of traffic (see _Pool)."""
        return self._pool(function).prewarm(count)

    def synchronous(self, function: FunctionSpec, event: dict[str, Any]) -> Any:
        """A synchronous invocation: throttled at once past the function's reservation."""
        return self._pool(function).invoke(event, throttle_when_busy=True)

    def reconfigure(self, function: FunctionSpec) -> None:
        """As Lambda after UpdateFunctionConfiguration: ``function``'s environments go (call it
        between invocations), and its next invocation starts one with the configuration given."""
        with self._lock:
            pool = self._pools.pop(function.arn, None)
        if pool is not None:
            pool.close()

    def close(self) -> None:
        """Kill every worker; invocations still running fail with Runtime.ExitError."""
        with self._lock:
            self._closed = True
            pools = list(self._pools.values())
            self._pools.clear()
        for pool in pools:
            pool.close()
