"""A topic rule's Lambda action is an asynchronous invocation that honours the function's
EventInvokeConfig: a failed event is retried as often as MaximumRetryAttempts says (and not at
all with 0, as the renewal function asks), never past MaximumEventAgeInSeconds, and an event
that waited too long for an environment is dropped rather than run late."""

from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from devstack.awslambda.packages import Package
from devstack.awslambda.runtime import FunctionError, FunctionSpec
from devstack.awslambda.workers import _Pool
from devstack.iot import topic_rules
from devstack.iot.topic_rules import Permission, RuleEngine, parse_rule

ACCOUNT = "123456789012"
FUNCTION = FunctionSpec(
    logical_id="Renewal",
    name="renewal",
    arn=f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:renewal",
    handler="renewal.handler",
    code_uri=Path("."),
)
RULE = parse_rule(
    "Renew",
    f"arn:aws:iot:us-east-1:{ACCOUNT}:rule/Renew",
    {
        "AwsIotSqlVersion": "2016-03-23",
        "Sql": "SELECT * FROM 'things/+/renew'",
        "Actions": [{"Lambda": {"FunctionArn": FUNCTION.arn}}],
    },
)
ALLOWED = Permission(FUNCTION.name, "lambda:InvokeFunction", "iot.amazonaws.com", RULE.arn)


class ScriptedFunction:
    """Fails the first ``failures`` invocations, then succeeds; records each one."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls: list[float] = []  # expires_at of each invocation

    def __call__(
        self, _function: FunctionSpec, _event: dict[str, Any], *, expires_at: float
    ) -> Any:
        self.calls.append(expires_at)
        if len(self.calls) <= self.failures:
            raise FunctionError("Runtime.ExitError", "exited")
        return None


def run(function: FunctionSpec, invoker: ScriptedFunction, settle: int) -> list[Any]:
    """Publish once; wait for ``settle`` outcomes to be reported; every outcome reported."""
    reported: list[Any] = []
    done = threading.Semaphore(0)

    def on_done(_rule: str, _function: str, error: BaseException | None) -> None:
        reported.append(error)
        done.release()

    engine = RuleEngine(
        rules=[RULE],
        permissions=[ALLOWED],
        functions={function.logical_id: function},
        invoker=invoker,
        account_id=ACCOUNT,
        on_done=on_done,
    )
    try:
        assert engine.on_publish("things/t/renew", b"{}", principal="p", client_id="t") == 1
        for _ in range(settle):
            assert done.acquire(timeout=10)
        time.sleep(0.1)  # nothing more is reported
        return reported
    finally:
        engine.close()


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(topic_rules, "RETRY_DELAYS", (0.05, 0.1))


def test_a_failed_event_is_retried_and_then_succeeds() -> None:
    invoker = ScriptedFunction(failures=2)
    reported = run(FUNCTION, invoker, settle=1)
    assert len(invoker.calls) == 3 and reported == [None]
    # every attempt carries the same expiry, from the first arrival
    assert len(set(invoker.calls)) == 1


def test_no_retry_when_the_function_asks_for_none() -> None:
    invoker = ScriptedFunction(failures=1)
    function = dataclasses.replace(FUNCTION, maximum_retry_attempts=0)
    reported = run(function, invoker, settle=1)
    assert len(invoker.calls) == 1
    assert isinstance(reported[0], FunctionError)


def test_retries_stop_after_the_maximum() -> None:
    invoker = ScriptedFunction(failures=10)
    function = dataclasses.replace(FUNCTION, maximum_retry_attempts=1)
    reported = run(function, invoker, settle=1)
    assert len(invoker.calls) == 2 and isinstance(reported[0], FunctionError)


def test_no_retry_that_would_run_past_the_event_age(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(topic_rules, "RETRY_DELAYS", (61.0, 120.0))
    invoker = ScriptedFunction(failures=1)
    function = dataclasses.replace(FUNCTION, maximum_event_age=60)
    reported = run(function, invoker, settle=1)
    assert len(invoker.calls) == 1 and isinstance(reported[0], FunctionError)


def test_the_event_expires_its_maximum_age_after_it_arrived() -> None:
    invoker = ScriptedFunction(failures=0)
    function = dataclasses.replace(FUNCTION, maximum_event_age=60)
    before = time.monotonic()
    run(function, invoker, settle=1)
    assert before + 60 <= invoker.calls[0] <= time.monotonic() + 60


class IdleWorker:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def alive(self) -> bool:
        return True

    def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)

    def receive(self, timeout: float) -> dict[str, Any]:
        return {"result": "ran"}

    def kill(self) -> None:
        pass


def test_an_event_that_gets_an_environment_too_late_is_dropped_not_run(tmp_path: Path) -> None:
    pool = _Pool(
        FUNCTION,
        Package("Renewal", tmp_path, tmp_path),
        env={},
        log_path=tmp_path / "Renewal.log",
        concurrency=1,
        warn=lambda _message: None,
        python="python3",
    )
    worker = IdleWorker()
    pool._idle.append(worker)  # type: ignore[arg-type]
    try:
        with pytest.raises(FunctionError) as error:
            pool.invoke({}, expires_at=time.monotonic() - 1)
        assert error.value.error_type == "EventAgeExceeded" and worker.sent == []
        # ... and the slot it waited for is free again: a young event runs
        assert pool.invoke({}, expires_at=time.monotonic() + 60) == "ran"
    finally:
        pool.close()
