"""The offline runtime hands a request to a warm environment at once, and replaces a dead one.

A pool of stand-in workers: a live idle one must be reused without being waited on (waiting
for a live process to exit is what ``exit_status`` does, up to 5 s, once per invocation), a
dead idle one must be replaced by a fresh one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from devstack.awslambda.packages import Package
from devstack.awslambda.runtime import FunctionSpec
from devstack.awslambda.workers import _Pool


class StandInWorker:
    def __init__(self, name: str, *, alive: bool = True) -> None:
        self.name = name
        self._alive = alive
        self.sent: list[dict[str, Any]] = []
        self.killed = False

    def alive(self) -> bool:
        return self._alive

    def exit_status(self) -> int | None:
        raise AssertionError(f"{self.name} was waited on")

    def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)

    def receive(self, timeout: float) -> dict[str, Any]:
        return {"result": self.name}

    def kill(self) -> None:
        self.killed = True


def pool(tmp_path: Path) -> _Pool:
    function = FunctionSpec(
        logical_id="Probe",
        name="probe",
        arn="arn:aws:lambda:us-east-1:123456789012:function:probe",
        handler="probe.handler",
        code_uri=tmp_path,
        timeout=3,
    )
    return _Pool(
        function,
        Package("Probe", tmp_path, tmp_path),
        env={},
        log_path=tmp_path / "Probe.log",
        concurrency=1,
        warn=lambda _message: None,
        python="python3",
    )


def test_a_warm_worker_is_reused_without_being_waited_on(tmp_path: Path) -> None:
    runtime = pool(tmp_path)
    warm = StandInWorker("warm")
    runtime._idle.append(warm)  # type: ignore[arg-type]
    try:
        assert runtime.invoke({}) == "warm"
        assert runtime.invoke({}) == "warm"
        assert len(warm.sent) == 2
    finally:
        runtime.close()


def test_a_worker_that_died_while_idle_is_replaced(tmp_path: Path) -> None:
    runtime = pool(tmp_path)
    dead, fresh = StandInWorker("dead", alive=False), StandInWorker("fresh")
    runtime._idle.append(dead)  # type: ignore[arg-type]
    runtime._start = lambda: fresh  # type: ignore[method-assign,assignment,return-value]
    try:
        assert runtime.invoke({}) == "fresh"
        assert dead.killed and not dead.sent
    finally:
        runtime.close()


def test_prewarm_never_starts_more_than_the_concurrency_with_busy_ones_counted(
    tmp_path: Path,
) -> None:
    runtime = pool(tmp_path)  # concurrency 1
    started: list[StandInWorker] = []

    def start() -> StandInWorker:
        started.append(StandInWorker(f"w{len(started)}"))
        return started[-1]

    runtime._start = start  # type: ignore[method-assign,assignment]
    try:
        # WHILE an invocation holds the only slot, prewarm adds nothing
        with runtime._slots:
            assert runtime.prewarm(5) == 0
        assert started == []
        # ... once it is free, prewarm fills the concurrency and no more
        assert runtime.prewarm(5) == 1
        assert runtime.prewarm(5) == 1 and len(started) == 1
    finally:
        runtime.close()


def test_prewarm_of_a_function_reserving_nothing_starts_nothing(tmp_path: Path) -> None:
    runtime = pool(tmp_path)
    runtime.concurrency = 0
    runtime._start = lambda: (_ for _ in ()).throw(AssertionError("started"))  # type: ignore[method-assign,assignment,return-value]
    try:
        assert runtime.prewarm(3) == 0
    finally:
        runtime.close()
